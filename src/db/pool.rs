//! The connection pool every handler and background task uses.
//!
//! A thin wrapper over deadpool-postgres that knows one thing deadpool does
//! not: whether `DATABASE_URL` goes through a transaction-mode pooler
//! (`MOAT_DATABASE_POOLER=transaction`, e.g. Debian 12's PgBouncer 1.18).
//! Such a pooler hands each transaction whichever server connection is free,
//! so a prepared statement must not outlive the transaction that prepared it:
//!
//! - [`Client::transaction`] is the only way to run prepared statements: the
//!   wrapper does not expose the raw client, so a query outside a transaction
//!   does not compile (a statement prepared outside one would be prepared on
//!   one server connection and executed on another).
//! - In pooler mode each transaction starts by forgetting the client's cached
//!   statements and running `DEALLOCATE ALL`, which also clears statements
//!   another process left on that server connection (tokio-postgres names
//!   them `s0`, `s1`, … in every process, so leftovers would collide).
//! - The few statements that run outside a transaction (rate-limit counters,
//!   the cached broker read, …) use [`Client::query_typed`]: in pooler mode
//!   PostgreSQL's unnamed statement, parsed and executed in one round trip.
//!
//! Without a pooler (or with one that keeps prepared statements itself),
//! statements stay cached per connection.
//!
//! Latent limit: tokio-postgres looks up non-built-in types (enums, domains)
//! with statements it keeps on the client, outside this cache. Moat's schema
//! uses built-in types only (a test checks the migrations); a custom type
//! would need those lookups disabled or pre-seeded before pooler mode works.

use deadpool_postgres::{Object, PoolError, Status, Transaction};
use prometheus_client::metrics::histogram::Histogram;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

/// What sits between Moat and PostgreSQL on `DATABASE_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    /// A direct connection, or a session-mode pooler.
    #[default]
    None,
    /// A transaction-mode pooler without prepared-statement support.
    Transaction,
    /// A transaction-mode pooler that keeps prepared statements itself
    /// (PgBouncer ≥ 1.21 with `max_prepared_statements`): statements stay
    /// cached, but LISTEN still needs a direct connection.
    TransactionPrepared,
}

impl Pooler {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Transaction => "transaction",
            Self::TransactionPrepared => "transaction-prepared",
        }
    }

    /// Whether consecutive transactions may run on different server connections.
    pub fn per_transaction(self) -> bool {
        matches!(self, Self::Transaction | Self::TransactionPrepared)
    }
}

/// The shared pool.
#[derive(Clone)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    pooler: Pooler,
    /// Where the time callers wait for a connection is recorded (metrics).
    wait: Option<Histogram>,
}

impl Pool {
    pub(crate) fn new(inner: deadpool_postgres::Pool, pooler: Pooler) -> Self {
        Self { inner, pooler, wait: None }
    }

    /// Records every checkout's wait in `histogram` (set before the pool is cloned).
    #[must_use]
    pub fn with_wait_histogram(mut self, histogram: Histogram) -> Self {
        self.wait = Some(histogram);
        self
    }

    /// A connection, waiting at most the pool's wait timeout.
    pub async fn get(&self) -> Result<Client, PoolError> {
        let started = std::time::Instant::now();
        let inner = self.inner.get().await;
        if let Some(wait) = &self.wait {
            wait.observe(started.elapsed().as_secs_f64());
        }
        Ok(Client { inner: inner?, pooler: self.pooler })
    }

    pub fn status(&self) -> Status {
        self.inner.status()
    }

    pub fn pooler(&self) -> Pooler {
        self.pooler
    }
}

/// One pooled connection.
pub struct Client {
    inner: Object,
    pooler: Pooler,
}

impl Client {
    /// Begins a transaction (in pooler mode with no statement left from before).
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        if self.pooler == Pooler::Transaction {
            // Dropping the cached statements sends their Close messages now,
            // outside the transaction; closing a name that does not exist is no error.
            self.inner.statement_cache.clear();
        }
        let tx = self.inner.transaction().await?;
        if self.pooler == Pooler::Transaction {
            tx.batch_execute("DEALLOCATE ALL").await?;
        }
        Ok(tx)
    }

    /// One statement outside a transaction, its parameter types given: a cached
    /// prepared statement (prepared with exactly these types) without a pooler,
    /// PostgreSQL's unnamed statement (one round trip, nothing left behind) with one.
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match self.pooler {
            Pooler::None | Pooler::TransactionPrepared => {
                self.inner.query(&self.prepare_typed(sql, params).await?, &values(params)).await
            }
            Pooler::Transaction => self.inner.query_typed(sql, params).await,
        }
    }

    /// Like [`Client::query_typed`], for exactly one row.
    pub async fn query_typed_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, tokio_postgres::Error> {
        match self.pooler {
            Pooler::None | Pooler::TransactionPrepared => {
                self.inner.query_one(&self.prepare_typed(sql, params).await?, &values(params)).await
            }
            Pooler::Transaction => self.inner.query_typed_one(sql, params).await,
        }
    }

    async fn prepare_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Statement, tokio_postgres::Error> {
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        self.inner.prepare_typed_cached(sql, &types).await
    }

    /// Statements without parameters, through the simple query protocol (no prepared statement).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.inner.batch_execute(sql).await
    }
}

fn values<'a>(params: &[(&'a (dyn ToSql + Sync), Type)]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}
