//! The client's IP address, for abuse limits and the audit log.
//!
//! It is the TCP peer, unless the peer is one of `MOAT_TRUSTED_PROXIES`: then
//! `X-Forwarded-For` is read from the right, skipping trusted proxies, and the
//! first untrusted address is the client. Anything a client writes to the left
//! of that is ignored, so a client cannot choose its own address.

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

use super::ApiError;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Arc<Config>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(ApiError::internal(&std::io::Error::other("the peer address is unknown")));
        };
        let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let config = Arc::<Config>::from_ref(state);
        Ok(Self(resolve(peer.ip(), forwarded, &config.trusted_proxies)))
    }
}

/// The client address given the peer, the `X-Forwarded-For` values in order, and the trusted proxies.
pub fn resolve<'a>(peer: IpAddr, forwarded: impl Iterator<Item = &'a str>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
            // A malformed hop: stop at the last address a trusted proxy vouched for.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap_or_default()];
        let xff = ["198.51.100.7, 10.0.0.9"];
        assert_eq!(resolve(ip("203.0.113.5"), xff.into_iter(), &trusted), ip("203.0.113.5"));
        assert_eq!(resolve(ip("10.0.0.1"), xff.into_iter(), &trusted), ip("198.51.100.7"));
        // A client prepending a fake address does not move the answer.
        let spoofed = ["1.2.3.4, 198.51.100.7"];
        assert_eq!(resolve(ip("10.0.0.1"), spoofed.into_iter(), &trusted), ip("198.51.100.7"));
        assert_eq!(resolve(ip("10.0.0.1"), ["garbage"].into_iter(), &trusted), ip("10.0.0.1"));
        assert_eq!(resolve(ip("::ffff:203.0.113.5"), [].into_iter(), &[]), ip("203.0.113.5"));
    }
}
