//! Where and how Moat listens: the bind address, HTTPS or a declared upstream
//! TLS proxy, and the public origin browsers use.

use std::net::SocketAddr;

use super::vars::Vars;
use crate::devmode::DevMode;
use crate::problem::Problem;

const DEFAULT_BIND: &str = "127.0.0.1:8080";

pub(super) struct Transport {
    pub bind: SocketAddr,
    pub tls: Option<crate::tls::ServerTls>,
    pub upstream: bool,
    pub public_url: url::Url,
}

pub(super) fn transport(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Option<Transport> {
    let before = problems.len();
    let bind = vars.get("MOAT_BIND").unwrap_or(DEFAULT_BIND).parse::<SocketAddr>().map_err(|_| {
        problems.push(
            Problem::new(
                "MOAT_BIND",
                "is not an IP:port address",
                "Moat must know exactly which interface it listens on.",
            )
            .fix(format!("export MOAT_BIND={DEFAULT_BIND}   # loopback, the default")),
        )
    });
    let upstream = match vars.get("MOAT_TLS_TERMINATED_UPSTREAM") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_TLS_TERMINATED_UPSTREAM",
                    "must be `true` or `false`",
                    "It decides whether plain HTTP may leave this host.",
                )
                .fix("export MOAT_TLS_TERMINATED_UPSTREAM=true   # only when a proxy in front terminates TLS"),
            );
            false
        }
    };
    let tls = match (vars.get("MOAT_TLS_CERT"), vars.get("MOAT_TLS_KEY")) {
        (None, None) => None,
        (Some(cert), Some(key)) => crate::tls::server_config(cert.as_ref(), key.as_ref())
            .map_err(|e| {
                problems.push(
                    Problem::new(
                        "MOAT_TLS_CERT",
                        format!("cannot be used: {e}"),
                        "Moat cannot serve HTTPS without a matching certificate and key.",
                    )
                    .fix("point MOAT_TLS_CERT and MOAT_TLS_KEY at a PEM certificate chain and its PEM private key"),
                )
            })
            .ok(),
        (cert, _) => {
            let missing = if cert.is_none() { "MOAT_TLS_CERT" } else { "MOAT_TLS_KEY" };
            problems.push(
                Problem::new(
                    missing,
                    "is not set while its partner is",
                    "HTTPS needs both a certificate and its private key.",
                )
                .fix("set both MOAT_TLS_CERT and MOAT_TLS_KEY, or neither"),
            );
            None
        }
    };
    let public_url = public_url(vars, bind.as_ref().ok(), dev, problems);
    if let Ok(addr) = bind
        && !addr.ip().is_loopback()
        && tls.is_none()
        && !upstream
    {
        let what = format!("is {addr}, a non-loopback address, but nothing encrypts the traffic");
        match dev {
            Some(dev) => dev.bypass("startup", format!("MOAT_BIND {what}; serving plain HTTP")),
            None => problems.push(
                Problem::new("MOAT_BIND", what, "Tokens and credentials would cross the network in plain text.")
                    .fix("export MOAT_TLS_CERT=/path/fullchain.pem MOAT_TLS_KEY=/path/key.pem   # Moat terminates TLS")
                    .fix("export MOAT_TLS_TERMINATED_UPSTREAM=true   # a proxy in front terminates TLS")
                    .fix(format!("export MOAT_BIND={DEFAULT_BIND}   # or listen on loopback only")),
            ),
        }
    }
    match (bind, public_url) {
        (Ok(bind), Some(public_url)) if problems.len() == before => Some(Transport { bind, tls, upstream, public_url }),
        _ => None,
    }
}

fn public_url(
    vars: &Vars,
    bind: Option<&SocketAddr>,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<url::Url> {
    let fix = "export MOAT_PUBLIC_URL=https://moat.example.com   # the origin your users' browsers use";
    let why = "Browsers must reach Moat over HTTPS; WebSocket origin checks and links are built from this URL.";
    let Some(raw) = vars.get("MOAT_PUBLIC_URL") else {
        let Some(dev) = dev else {
            problems.push(Problem::new("MOAT_PUBLIC_URL", "is not set", why).fix(fix));
            return None;
        };
        let assumed = format!("http://{}", bind.map_or_else(|| DEFAULT_BIND.to_owned(), ToString::to_string));
        dev.bypass("startup", format!("MOAT_PUBLIC_URL is not set; assuming {assumed}"));
        return url::Url::parse(&assumed).ok();
    };
    let url = match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        _ => {
            problems.push(Problem::new("MOAT_PUBLIC_URL", "is not an http(s) URL with a host", why).fix(fix));
            return None;
        }
    };
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        problems.push(
            Problem::new("MOAT_PUBLIC_URL", "must be an origin only (scheme, host, optional port)", why).fix(fix),
        );
        return None;
    }
    if url.scheme() != "https" {
        match dev {
            Some(dev) => dev.bypass("startup", "MOAT_PUBLIC_URL is not https; browsers will send tokens in plain text"),
            None => {
                problems.push(Problem::new("MOAT_PUBLIC_URL", "is not https", why).fix(fix));
                return None;
            }
        }
    }
    Some(url)
}
