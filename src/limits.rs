//! Abuse limits, kept in PostgreSQL so every instance enforces the same limit.
//!
//! Each [`Limit`] counts attempts per bucket (an email, a client id, an IP) in
//! a fixed window with one atomic upsert, and may lock a bucket out after
//! consecutive failures, for a time that doubles with each further failure.
//! Bucket keys are hashed: the table never holds an email or an address.
//! Counting runs outside the caller's transaction, so a failed request that
//! rolls back still counts.

use std::time::Duration;

use deadpool_postgres::Pool;
use sha2::{Digest as _, Sha256};

pub const HIT: &str = include_str!("../sql/limits/hit.sql");
pub const FAIL: &str = include_str!("../sql/limits/fail.sql");
pub const SUCCEED: &str = include_str!("../sql/limits/succeed.sql");
pub const STATEMENTS: &[(&str, &str)] = &[("limits/hit", HIT), ("limits/fail", FAIL), ("limits/succeed", SUCCEED)];

/// One kind of limit (docs/security.md lists them).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    /// Attempts allowed per window.
    pub max_hits: i64,
    pub window: Duration,
    /// Consecutive failures before a lockout (0: never locks).
    pub lockout_after: i32,
    /// First lockout; doubles with each further failure, up to `lockout_max`.
    pub lockout_base: Duration,
    pub lockout_max: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const NO_LOCKOUT: (i32, Duration, Duration) = (0, Duration::ZERO, Duration::ZERO);

impl Limit {
    const fn new(name: &'static str, max_hits: i64, lockout: (i32, Duration, Duration)) -> Self {
        Self {
            name,
            max_hits,
            window: MINUTE,
            lockout_after: lockout.0,
            lockout_base: lockout.1,
            lockout_max: lockout.2,
        }
    }

    /// How long a row must outlive its last use for the window and lockout to hold.
    fn retention(&self) -> f64 {
        self.window.max(self.lockout_max).as_secs_f64() + 60.0
    }

    fn bucket(&self, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", self.name)
    }
}

/// `POST /v1/auth/login`, per normalized email: 10 a minute; locks after 5 failures in a row.
pub const LOGIN_PER_EMAIL: Limit =
    Limit::new("login_email", 10, (5, Duration::from_secs(1), Duration::from_secs(15 * 60)));
/// `POST /v1/auth/login`, per client IP: 30 a minute.
pub const LOGIN_PER_IP: Limit = Limit::new("login_ip", 30, NO_LOCKOUT);
/// `POST /v1/oauth/token`, per client id: 30 a minute; locks after 5 failures in a row.
pub const TOKEN_PER_CLIENT: Limit =
    Limit::new("token_client", 30, (5, Duration::from_secs(1), Duration::from_secs(15 * 60)));
/// `POST /v1/oauth/token`, per client IP: 60 a minute.
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

/// Counts one attempt against every `(limit, key)` pair; limited if any is over.
pub async fn hit(pool: &Pool, attempts: &[(Limit, &str)]) -> Result<Verdict, LimitError> {
    let client = pool.get().await?;
    let buckets: Vec<String> = attempts.iter().map(|(l, k)| l.bucket(k)).collect();
    let windows: Vec<f64> = attempts.iter().map(|(l, _)| l.window.as_secs_f64()).collect();
    let retention: Vec<f64> = attempts.iter().map(|(l, _)| l.retention()).collect();
    let statement = client.prepare_cached(HIT).await?;
    let rows = client.query(&statement, &[&buckets, &windows, &retention]).await?;
    let mut retry_after = 0i64;
    for row in rows {
        let bucket: String = row.get("bucket");
        let Some((limit, _)) = attempts.iter().find(|(l, k)| l.bucket(k) == bucket) else {
            continue;
        };
        let (hits, window_retry, lock_retry): (i32, i64, i64) =
            (row.get("hits"), row.get("window_retry"), row.get("lock_retry"));
        if lock_retry > 0 {
            retry_after = retry_after.max(lock_retry);
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

/// Records a failed attempt (may start or extend a lockout).
pub async fn fail(pool: &Pool, limit: Limit, key: &str) -> Result<(), LimitError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(FAIL).await?;
    let params: (&str, i32, f64, f64, f64) = (
        &limit.bucket(key),
        limit.lockout_after,
        limit.lockout_base.as_secs_f64(),
        limit.lockout_max.as_secs_f64(),
        limit.retention(),
    );
    client.execute(&statement, &[&params.0, &params.1, &params.2, &params.3, &params.4]).await?;
    Ok(())
}

/// Clears the failure count after a success.
pub async fn succeed(pool: &Pool, limit: Limit, key: &str) -> Result<(), LimitError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(SUCCEED).await?;
    client.execute(&statement, &[&limit.bucket(key)]).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("no database connection for the rate limiter: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the rate limiter's query failed: {}", crate::db::describe_error(.0))]
    Db(#[from] tokio_postgres::Error),
}
