//! The egress policy: every outbound HTTP request Moat makes goes through a
//! client built by [`Egress::client_builder`], which enforces `MOAT_EGRESS_ALLOW`.
//!
//! - A destination's host (and port) must match an allow pattern:
//!   `api.example.com`, `*.example.com` (subdomains only), optionally `:port`;
//!   or an IP network `10.1.2.0/24[:port]`, which also *explicitly allows*
//!   those private addresses.
//! - Every address a name resolves to is checked **at connect time** — the
//!   client's DNS resolver is the policy's, so the address connected to is
//!   the address checked (no DNS-rebinding gap) — and every redirect target
//!   is checked again before it is followed.
//! - Link-local and cloud-metadata addresses are always refused; loopback,
//!   private, shared (CGNAT), unique-local, unspecified, multicast and
//!   documentation ranges are refused unless an IP-network pattern covers them.
//! - In development a refused destination is allowed, each time logged
//!   `DEV_BYPASS egress: …` — except link-local/metadata, which no mode allows.
//!
//! Refusals are errors of type [`Refused`] (found in a reqwest error's source
//! chain by [`refusal`]); callers audit them in the organization concerned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::devmode::DevMode;

/// Why a destination was refused (shown to operators; no secrets in it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("egress refused: {destination}: {reason}")]
pub struct Refused {
    pub destination: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Exact host, or `*.suffix` (stored as `.suffix`) for subdomains.
    Host {
        host: String,
        port: Option<u16>,
    },
    Net {
        net: IpNet,
        port: Option<u16>,
    },
}

/// The parsed policy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Egress {
    allow: Arc<Vec<Pattern>>,
    dev: Option<DevMode>,
}

impl Egress {
    /// Parses `MOAT_EGRESS_ALLOW` (comma-separated patterns; empty allows nothing).
    pub fn parse(raw: Option<&str>, dev: Option<DevMode>) -> Result<Self, String> {
        let mut allow = Vec::new();
        for item in raw.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            allow.push(
                parse_pattern(item)
                    .ok_or_else(|| format!("`{item}` is not host[:port], *.domain[:port] or a CIDR[:port]"))?,
            );
        }
        Ok(Self { allow: Arc::new(allow), dev })
    }

    /// Whether `host:port` is allowed by name (or, for an IP literal, by address).
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_ip(&host, ip, Some(port));
        }
        let matches = self.allow.iter().any(|p| match p {
            Pattern::Host { host: pattern, port: want } => {
                let name_ok = match pattern.strip_prefix('.') {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => *pattern == host,
                };
                name_ok && want.is_none_or(|w| w == port)
            }
            Pattern::Net { .. } => false,
        });
        if matches {
            return Ok(());
        }
        self.refuse_or_bypass(Refused { destination: format!("{host}:{port}"), reason: "not in MOAT_EGRESS_ALLOW" })
    }

    /// Whether connecting to `ip` (resolved from `host`) is allowed.
    pub fn check_ip(&self, host: &str, ip: IpAddr, port: Option<u16>) -> Result<(), Refused> {
        let ip = canonical(ip);
        let destination = match port {
            Some(port) => format!("{host} ({})", SocketAddr::new(ip, port)),
            None => format!("{host} ({ip})"),
        };
        if let Some(reason) = never(ip) {
            return Err(Refused { destination, reason }); // no mode allows these
        }
        let covered = self.allow.iter().any(|p| match p {
            Pattern::Net { net, port: want } => {
                net.contains(&ip) && (want.is_none() || port.is_none() || *want == port)
            }
            Pattern::Host { .. } => false,
        });
        if covered {
            return Ok(());
        }
        if let Some(reason) = restricted(ip) {
            return self.refuse_or_bypass(Refused { destination, reason });
        }
        // A public address reached through an allowed name; an IP literal must be allowed by a network pattern.
        if host.parse::<IpAddr>().is_ok() {
            return self.refuse_or_bypass(Refused { destination, reason: "IP address not in MOAT_EGRESS_ALLOW" });
        }
        Ok(())
    }

    /// Checks a whole URL (scheme http/https, host, port) before a request or redirect.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Refused { destination: url.scheme().to_owned(), reason: "only http(s) may leave Moat" });
        }
        let host = url.host_str().unwrap_or("");
        let port = url.port_or_known_default().unwrap_or(443);
        self.check_host(host, port)
    }

    fn refuse_or_bypass(&self, refused: Refused) -> Result<(), Refused> {
        match self.dev {
            Some(dev) => {
                dev.bypass("egress", format!("allowing {} ({})", refused.destination, refused.reason));
                Ok(())
            }
            None => {
                tracing::warn!(target: "moat::egress", destination = %refused.destination, reason = refused.reason, "egress refused");
                Err(refused)
            }
        }
    }

    /// A reqwest client builder bound to this policy: its resolver checks
    /// every address at connect time and its redirects are checked (at most 5).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let for_redirects = self.clone();
        // No proxy from HTTP(S)_PROXY: through one, the address connected to would be
        // the proxy's, and the policy could no longer check the destination.
        reqwest::Client::builder().no_proxy().dns_resolver(Arc::new(PolicyResolver(self.clone()))).redirect(
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                match for_redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }),
        )
    }
}

/// The policy's refusal inside a reqwest error, if that is what it was.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

/// Resolves names with the system resolver, then keeps only allowed addresses.
struct PolicyResolver(Egress);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::new();
            let mut last_refusal = None;
            for addr in resolved {
                match policy.check_ip(&host, addr.ip(), None) {
                    Ok(()) => allowed.push(addr),
                    Err(refused) => last_refusal = Some(refused),
                }
            }
            if allowed.is_empty() {
                let refused =
                    last_refusal.unwrap_or(Refused { destination: host, reason: "the name resolved to nothing" });
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn parse_pattern(item: &str) -> Option<Pattern> {
    let item = item.to_ascii_lowercase();
    // CIDR or IP, with an optional `:port` (IPv6 in brackets: `[fd00::/8]:443`).
    let (body, port) = split_port(&item)?;
    let body = body.trim_start_matches('[').trim_end_matches(']');
    if let Ok(net) = body.parse::<IpNet>() {
        return Some(Pattern::Net { net, port });
    }
    if let Ok(ip) = body.parse::<IpAddr>() {
        return Some(Pattern::Net { net: IpNet::from(ip), port });
    }
    let (wildcard, name) = match body.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    valid.then(|| Pattern::Host { host: if wildcard { format!(".{name}") } else { name.to_owned() }, port })
}

fn split_port(item: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = item.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((inside, port));
    }
    match item.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address or network.
        Some((head, _)) if head.contains(':') => Some((item, None)),
        Some((head, port)) => Some((head, Some(port.parse().ok()?))),
        None => Some((item, None)),
    }
}

/// IPv6 forms that carry an IPv4 address are judged as that IPv4 address:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded_low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return IpAddr::V4(embedded_low()); // IPv4-compatible (deprecated)
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return IpAddr::V4(embedded_low()); // NAT64 (well-known and local-use prefixes)
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8)); // 6to4
    }
    ip
}

/// Addresses no configuration may reach.
fn never(ip: IpAddr) -> Option<&'static str> {
    // AWS/GCP/Azure IMDS (link-local anyway), Alibaba, Azure WireServer; AWS and GCP IPv6 IMDS.
    const METADATA_V4: [Ipv4Addr; 3] =
        [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(100, 100, 100, 200), Ipv4Addr::new(168, 63, 129, 16)];
    const METADATA_V6: [Ipv6Addr; 2] =
        [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254)];
    match ip {
        IpAddr::V4(v4) if METADATA_V4.contains(&v4) => Some("cloud metadata address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local address"),
        IpAddr::V6(v6) if METADATA_V6.contains(&v6) => Some("cloud metadata address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local address"),
        _ => None,
    }
}

/// Addresses refused unless a network pattern explicitly allows them.
fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback address")
            } else if v4.is_private() {
                Some("private address")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT) address")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified address")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast, broadcast or reserved address")
            } else if v4.is_documentation() || (a == 198 && (18..20).contains(&b)) {
                Some("documentation or benchmarking address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback address")
            } else if v6.is_unspecified() {
                Some("unspecified address")
            } else if (first & 0xfe00) == 0xfc00 {
                Some("unique-local (private) address")
            } else if v6.is_multicast() {
                Some("multicast address")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation address")
            } else if first == 0x2001 && v6.segments()[1] == 0 {
                Some("Teredo address (an IPv4 destination in disguise)")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn ip(raw: &str) -> std::result::Result<IpAddr, Box<dyn std::error::Error>> {
        Ok(raw.parse()?)
    }

    #[test]
    fn names_must_match_a_pattern() -> Result {
        let p = Egress::parse(Some("api.example.com, *.corp.example:8443"), None)?;
        assert!(p.check_host("api.example.com", 443).is_ok());
        assert!(p.check_host("API.Example.com", 80).is_ok());
        assert!(p.check_host("evil.example.com", 443).is_err());
        assert!(p.check_host("api.example.com.evil.net", 443).is_err());
        assert!(p.check_host("x.corp.example", 8443).is_ok());
        assert!(p.check_host("x.corp.example", 443).is_err(), "port pinned");
        assert!(p.check_host("corp.example", 8443).is_err(), "*. means subdomains only");
        assert!(p.check_host("evilcorp.example", 8443).is_err());
        Ok(())
    }

    #[test]
    fn metadata_link_local_and_private_addresses_are_refused() -> Result {
        let p = Egress::parse(Some("*.example.com, 10.1.0.0/16"), None)?;
        for raw in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "168.63.129.16",
            "fe80::1",
            "fd00:ec2::254",
            "fd20:ce::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(p.check_ip("x.example.com", ip(raw)?, None).is_err(), "{raw}");
        }
        for raw in [
            "127.0.0.1",
            "10.2.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.1.2.3",
            "::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(p.check_ip("x.example.com", ip(raw)?, None).is_err(), "{raw}");
        }
        // Explicitly allowed private range; public addresses behind allowed names.
        assert!(p.check_ip("x.example.com", ip("10.1.2.3")?, None).is_ok());
        assert!(p.check_ip("x.example.com", ip("93.184.216.34")?, None).is_ok());
        // An IP literal needs a network pattern even when public.
        assert!(p.check_host("93.184.216.34", 443).is_err());
        assert!(p.check_host("10.1.0.9", 443).is_ok());
        // Metadata stays refused even if a pattern covers it, and in development.
        // Even a pattern that names the link-local range explicitly does not open it.
        let wide = Egress::parse(Some("169.254.0.0/16, fe80::/10"), None)?;
        assert!(wide.check_host("169.254.169.254", 80).is_err());
        let dev = Egress::parse(Some(""), crate::config::Environment::Development.dev_mode())?;
        assert!(dev.check_host("169.254.169.254", 80).is_err());
        assert!(dev.check_host("anything.example", 443).is_ok(), "development allows (loudly)");
        Ok(())
    }

    #[test]
    fn patterns_parse_strictly() {
        for bad in ["http://x", "*", "*.", "a..b", "x:notaport", "[::1", "ex ample.com"] {
            assert!(Egress::parse(Some(bad), None).is_err(), "{bad}");
        }
        for good in
            ["example.com", "example.com:443", "*.example.com", "10.0.0.0/8", "[fd00::/8]:443", "::1", "127.0.0.1:8080"]
        {
            assert!(Egress::parse(Some(good), None).is_ok(), "{good}");
        }
    }
}
