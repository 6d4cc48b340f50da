//! Abuse limits, kept in PostgreSQL so every instance enforces the same limit.
//!
//! Each [`Limit`] counts attempts per bucket (an account, a client, an IP,
//! or a pair of them) in a fixed window with one atomic upsert, and may lock a
//! bucket out after consecutive unsuccessful attempts, for a time that doubles
//! with each further one. An attempt is counted against a caller's limits in
//! order, the address first ([`Limiter::hit_in_order`]): an address over its
//! limit adds no row for whatever account it names, and an address locked out
//! of one account does not count against that account's ceiling. An attempt counts as unsuccessful from the moment it starts
//! until [`Limiter::succeed`] clears it, so concurrent attempts cannot slip
//! past a lockout. Bucket names are HMACs under a key derived from
//! `MOAT_ENCRYPTION_KEY`: the table holds no email or address, not even a
//! reversible hash of one. Counting runs outside the caller's transaction, so
//! a request that rolls back still counts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use tokio_postgres::types::{ToSql, Type};

use crate::config::EncryptionKey;
use crate::db::{DbError, Pool};

crate::db::statements! { "limits":
    HIT => "hit",
    SUCCEED => "succeed",
    REFUND => "refund",
}

/// One kind of limit (docs/security.md lists them).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    /// Attempts allowed per window.
    pub max_hits: i64,
    pub window: Duration,
    /// Consecutive unsuccessful attempts that start a lockout (0: never locks).
    pub lockout_after: i32,
    /// First lockout; doubles with each further unsuccessful attempt, up to `lockout_max`.
    pub lockout_base: Duration,
    pub lockout_max: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const NO_LOCKOUT: (i32, Duration, Duration) = (0, Duration::ZERO, Duration::ZERO);
const PROGRESSIVE: (i32, Duration, Duration) = (5, Duration::from_secs(1), Duration::from_secs(15 * 60));

impl Limit {
    const fn new(name: &'static str, max_hits: i64, lockout: (i32, Duration, Duration)) -> Self {
        Self::per(name, max_hits, MINUTE, lockout)
    }

    const fn per(name: &'static str, max_hits: i64, window: Duration, lockout: (i32, Duration, Duration)) -> Self {
        Self { name, max_hits, window, lockout_after: lockout.0, lockout_base: lockout.1, lockout_max: lockout.2 }
    }

    /// How long a row must outlive its last use for the window and lockout to hold.
    fn retention(&self) -> f64 {
        self.window.max(self.lockout_max).as_secs_f64() + 60.0
    }
}

/// `POST /v1/auth/login`, per client IP (IPv6: per /64), whatever the account: 30 a minute. Counted first.
pub const LOGIN_PER_IP: Limit = Limit::new("login_ip", 30, NO_LOCKOUT);
/// `POST /v1/auth/login`, per account (normalized email) **and** client IP: 10 a
/// minute; locks after 5 failures in a row (1 s, doubling, at most 15 min).
/// Keyed on both, so guessing from one address cannot lock the owner out from another.
pub const LOGIN_PER_ACCOUNT_IP: Limit = Limit::new("login_account_ip", 10, PROGRESSIVE);
/// `POST /v1/auth/login`, per account from every address together: 200 an
/// hour — a ceiling on distributed guessing. One address's lockout lets it try
/// about 17 times an hour, so it takes a dozen addresses or more to reach.
pub const LOGIN_PER_ACCOUNT: Limit = Limit::per("login_account", 200, HOUR, NO_LOCKOUT);
/// `POST /v1/oauth/token`, per client id *and* client IP: 30 a minute; locks after 5
/// failures in a row. Keyed on both so that a stranger who knows a client id (it is
/// not a secret) cannot lock the real client out from elsewhere.
pub const TOKEN_PER_CLIENT: Limit = Limit::new("token_client", 30, PROGRESSIVE);
/// `POST /v1/oauth/token`, per client IP (IPv6: per /64): 60 a minute.
pub const TOKEN_PER_IP: Limit = Limit::new("token_ip", 60, NO_LOCKOUT);

/// The outcome of counting an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; retry after this many seconds (at least 1).
    Limited {
        retry_after: u64,
    },
}

/// The key a client IP is counted under: the address, or its /64 for IPv6
/// (one IPv6 subscriber usually holds a whole /64).
pub fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Counts attempts and clears lockouts; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter(bucket key redacted)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Limiter {
    /// Derives the bucket key from the encryption key (HMAC as a PRF, with its own label).
    pub fn new(encryption: &EncryptionKey) -> Self {
        Self { key: Arc::new(hmac(encryption.as_bytes(), b"moat/rate-limit-buckets/v1")) }
    }

    fn bucket(&self, limit: &Limit, key: &str) -> String {
        let digest = hmac(self.key.as_slice(), key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", limit.name)
    }

    /// Counts one attempt against every `(limit, key)` pair; limited if any is over.
    pub async fn hit(&self, pool: &Pool, attempts: &[(Limit, &str)]) -> Result<Verdict, DbError> {
        let buckets: Vec<String> = attempts.iter().map(|(l, k)| self.bucket(l, k)).collect();
        let column = |f: fn(&Limit) -> f64| attempts.iter().map(|(l, _)| f(l)).collect::<Vec<f64>>();
        let windows = column(|l| l.window.as_secs_f64());
        let retention = column(Limit::retention);
        let bases = column(|l| l.lockout_base.as_secs_f64());
        let maxes = column(|l| l.lockout_max.as_secs_f64());
        let after: Vec<i32> = attempts.iter().map(|(l, _)| l.lockout_after).collect();
        let client = pool.get().await?;
        let params: [(&(dyn ToSql + Sync), Type); 6] = [
            (&buckets, Type::TEXT_ARRAY),
            (&windows, Type::FLOAT8_ARRAY),
            (&retention, Type::FLOAT8_ARRAY),
            (&after, Type::INT4_ARRAY),
            (&bases, Type::FLOAT8_ARRAY),
            (&maxes, Type::FLOAT8_ARRAY),
        ];
        let rows = client.query_typed(HIT, &params).await?;
        let mut retry_after = 0i64;
        for row in rows {
            let bucket: String = row.get("bucket");
            let Some((limit, _)) = attempts.iter().zip(&buckets).find(|(_, b)| **b == bucket).map(|(a, _)| a) else {
                continue;
            };
            let (hits, window_retry, lock_retry): (i32, i64, i64) =
                (row.get("hits"), row.get("window_retry"), row.get("lock_retry"));
            if row.get::<_, bool>("last_refused") {
                retry_after = retry_after.max(lock_retry.max(1));
            }
            if i64::from(hits) > limit.max_hits {
                retry_after = retry_after.max(window_retry.max(1));
            }
        }
        Ok(match u64::try_from(retry_after) {
            Ok(0) | Err(_) => Verdict::Allowed,
            Ok(secs) => Verdict::Limited { retry_after: secs },
        })
    }

    /// Counts one attempt against each limit in turn, stopping at the first
    /// that refuses: a later limit neither counts the attempt nor gains a row,
    /// and an earlier limit with a lockout gets it back (the attempt never
    /// reached the password check, so it is no failure of that bucket's — a
    /// refusal by the account ceiling cannot lock the owner's own address out).
    pub async fn hit_in_order(&self, pool: &Pool, stages: &[(Limit, &str)]) -> Result<Verdict, DbError> {
        for (i, stage) in stages.iter().enumerate() {
            if let limited @ Verdict::Limited { .. } = self.hit(pool, std::slice::from_ref(stage)).await? {
                let client = pool.get().await?;
                for (limit, key) in stages[..i].iter().filter(|(l, _)| l.lockout_after > 0) {
                    client.query_typed(REFUND, &[(&self.bucket(limit, key), Type::TEXT)]).await?;
                }
                return Ok(limited);
            }
        }
        Ok(Verdict::Allowed)
    }

    /// Clears the unsuccessful-attempt count and any lockout after a success.
    pub async fn succeed(&self, pool: &Pool, limit: Limit, key: &str) -> Result<(), DbError> {
        let client = pool.get().await?;
        client.query_typed(SUCCEED, &[(&self.bucket(&limit, key), Type::TEXT)]).await?;
        Ok(())
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)] // HMAC accepts keys of any length
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_ipv4_per_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(ip_key(a), ip_key(b));
        assert_eq!(ip_key("::ffff:192.0.2.1".parse().unwrap_or(a)), "192.0.2.1");
    }

    #[test]
    fn buckets_are_keyed_and_do_not_reveal_the_key() {
        let limiter = Limiter::new(&EncryptionKey::ephemeral());
        let other = Limiter::new(&EncryptionKey::ephemeral());
        let bucket = limiter.bucket(&LOGIN_PER_ACCOUNT, "ada@example.com");
        assert!(bucket.starts_with("login_account:") && !bucket.contains("example.com"));
        assert_eq!(bucket, limiter.bucket(&LOGIN_PER_ACCOUNT, "ada@example.com"));
        assert_ne!(bucket, other.bucket(&LOGIN_PER_ACCOUNT, "ada@example.com"));
    }
}
