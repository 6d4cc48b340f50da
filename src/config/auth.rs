//! Token lifetimes, provider timeouts, and the proxies whose `X-Forwarded-For` Moat believes.

use std::time::Duration;

use ipnet::IpNet;

use super::vars::Vars;
use crate::devmode::DevMode;
use crate::problem::Problem;

pub(super) struct AuthSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub token_min_validity: Duration,
    pub provider_timeout: Duration,
}

/// Shortest access-token lifetime development mode accepts (for exercising
/// expiry and refresh quickly, e.g. the browser tests); production's is 1 minute.
const DEV_MIN_ACCESS_TOKEN_TTL_SECS: u64 = 5;

pub(super) fn auth(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> AuthSettings {
    let access_min = if dev.is_some() { DEV_MIN_ACCESS_TOKEN_TTL_SECS } else { 60 };
    let access_token_ttl = duration(vars, "MOAT_ACCESS_TOKEN_TTL", "15m", (access_min, 24 * 3600), problems);
    if let Some(dev) = dev
        && access_token_ttl.as_secs() < 60
    {
        dev.bypass(
            "startup",
            format!("MOAT_ACCESS_TOKEN_TTL is {}s, below production's 1m minimum", access_token_ttl.as_secs()),
        );
    }
    AuthSettings {
        access_token_ttl,
        refresh_token_ttl: duration(vars, "MOAT_REFRESH_TOKEN_TTL", "14d", (300, 90 * 24 * 3600), problems),
        refresh_reuse_grace: duration(vars, "MOAT_REFRESH_REUSE_GRACE", "10s", (0, 120), problems),
        trusted_proxies: trusted_proxies(vars, problems),
        token_min_validity: duration(vars, "MOAT_TOKEN_MIN_VALIDITY", "60s", (0, 3600), problems),
        // At most 20 s: with the 5 s lock margin a waiting request still ends within the 30 s request timeout.
        provider_timeout: duration(vars, "MOAT_PROVIDER_TIMEOUT", "10s", (1, 20), problems),
    }
}

/// A duration like `15m`, `900s` or `14d`, bounded to `range` seconds.
pub(super) fn duration(
    vars: &Vars,
    name: &str,
    default: &str,
    range: (u64, u64),
    problems: &mut Vec<Problem>,
) -> Duration {
    super::duration(
        vars,
        name,
        default,
        range,
        "Token lifetimes and timeouts bound how long a stolen token or a stuck call lasts.",
        problems,
    )
}

fn trusted_proxies(vars: &Vars, problems: &mut Vec<Problem>) -> Vec<IpNet> {
    let Some(raw) = vars.get("MOAT_TRUSTED_PROXIES") else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<IpNet>().or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(net) if net.prefix_len() == 0 => problems.push(
                Problem::new(
                    "MOAT_TRUSTED_PROXIES",
                    format!("contains {item}, which trusts every address"),
                    "Any client could then choose its own IP address with X-Forwarded-For and escape the per-IP abuse limits.",
                )
                .fix("list only your proxies' addresses, e.g. export MOAT_TRUSTED_PROXIES=10.0.0.5,10.0.1.0/24"),
            ),
            Ok(net) => nets.push(net),
            Err(_) => problems.push(
                Problem::new(
                    "MOAT_TRUSTED_PROXIES",
                    format!("contains {item:?}, which is neither an IP address nor a CIDR block"),
                    "X-Forwarded-For is believed only from these peers; a typo would silently trust no one or the wrong host.",
                )
                .fix("export MOAT_TRUSTED_PROXIES=10.0.0.5,10.0.1.0/24"),
            ),
        }
    }
    nets
}
