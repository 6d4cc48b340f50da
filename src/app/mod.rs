//! The composition root: the one place that knows every capability.
//!
//! It owns [`AppState`] and hands each capability only the part it needs
//! (axum `FromRef` sub-states: [`crate::auth::AuthState`],
//! [`crate::runs::RunsState`], …), merges the capabilities' routes and
//! OpenAPI parts ([`routes`]), runs the startup checks both processes share
//! ([`check`]) and builds both processes: `moat serve` ([`serve`]) and
//! `moat runner` ([`runner`]). Nothing below this layer imports it
//! (docs/architecture.md; `tests/moat/layering.rs` checks).

pub mod check;
pub mod routes;
pub mod runner;
pub mod serve;

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::FromRef;

pub use routes::{openapi_document, route_table};
pub use serve::{App, shutdown_signal};

use crate::auth::AuthState;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Pool;
use crate::files::FilesState;
use crate::health::HealthState;
use crate::http::EdgeState;
use crate::identity::TokenKeys;
use crate::identity::password::Hasher;
use crate::integrations::broker::Broker;
use crate::integrations::{IntegrationsState, Providers};
use crate::limits::Limiter;
use crate::runs::RunsState;
use crate::runs::ws::Sockets;
use crate::runs::ws::hub::Hub;

/// What every handler can reach. Explicit, no globals; cloned per request and
/// per middleware layer, so one `Arc` (a clone is one atomic increment, not
/// one per field plus the allocations a few fields need).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Pool,
    /// Signs and verifies JWTs (current and previous signing keys).
    pub tokens: Arc<TokenKeys>,
    /// argon2id hashing, with the dummy hash that equalizes login timing.
    pub hasher: Hasher,
    /// AES-256-GCM-SIV for secrets at rest.
    pub sealer: Arc<Sealer>,
    /// Abuse limits (state in PostgreSQL).
    pub limiter: Limiter,
    /// OAuth providers with their HTTP clients.
    pub providers: Arc<Providers>,
    /// Per-instance queueing and bounds for integration refreshes.
    pub broker: Broker,
    /// Fan-out of conversation events to this instance's WebSocket subscribers.
    pub hub: Hub,
    /// Open WebSockets per principal on this instance.
    pub sockets: Sockets,
    /// Uploaded files' bytes (`MOAT_FILES_DIR`).
    pub disk: crate::files::disk::Disk,
    /// Prometheus metrics of this instance.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The one shutdown signal: cancelled when `serve` starts shutting down,
    /// it stops the background tasks and closes open WebSockets (1001).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Everything but the listener: what `serve` and the tests share.
    pub async fn new(config: Arc<Config>) -> anyhow::Result<Self> {
        let environment = if config.environment.dev_mode().is_some() { "development" } else { "production" };
        let metrics = Arc::new(crate::metrics::Metrics::new(environment));
        metrics.purge_steps(crate::maintenance::steps().map(|(step, _)| step));
        let db = config.database.pool(config.pool_size).map_err(anyhow::Error::msg)?;
        let db = db.with_wait_histogram(metrics.pool_wait_histogram());
        let issuer = config.public_url.origin().ascii_serialization();
        let tokens = TokenKeys::new(config.signing_key.clone(), config.previous_signing_keys.clone(), issuer);
        let hasher = Hasher::new().await.context("preparing password hashing")?;
        let sealer = Sealer::new(config.encryption_key.clone(), config.previous_encryption_keys.clone());
        let limiter = Limiter::new(&config.encryption_key);
        let providers = Arc::new(Providers::new(&config.providers, config.provider_timeout, &config.egress)?);
        let broker = Broker::new(config.pool_size);
        let hub = Hub::new(db.clone());
        let disk = crate::files::disk::Disk::new(config.files.dir.clone());
        Ok(Self(Arc::new(Shared {
            config,
            db,
            tokens: Arc::new(tokens),
            hasher,
            sealer: Arc::new(sealer),
            limiter,
            providers,
            broker,
            hub,
            sockets: Sockets::default(),
            disk,
            metrics,
            shutdown: tokio_util::sync::CancellationToken::new(),
        })))
    }
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Self {
        state.config.clone()
    }
}

impl FromRef<AppState> for Pool {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

impl FromRef<AppState> for HealthState {
    fn from_ref(state: &AppState) -> Self {
        Self { db: state.db.clone(), metrics: state.metrics.clone() }
    }
}

impl FromRef<AppState> for AuthState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            db: state.db.clone(),
            tokens: state.tokens.clone(),
            hasher: state.hasher.clone(),
            sealer: state.sealer.clone(),
            limiter: state.limiter.clone(),
            metrics: state.metrics.clone(),
        }
    }
}

impl FromRef<AppState> for IntegrationsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            db: state.db.clone(),
            sealer: state.sealer.clone(),
            providers: state.providers.clone(),
            broker: state.broker.clone(),
            metrics: state.metrics.clone(),
        }
    }
}

impl FromRef<AppState> for RunsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            db: state.db.clone(),
            tokens: state.tokens.clone(),
            hub: state.hub.clone(),
            sockets: state.sockets.clone(),
            metrics: state.metrics.clone(),
            shutdown: state.shutdown.clone(),
        }
    }
}

impl FromRef<AppState> for FilesState {
    fn from_ref(state: &AppState) -> Self {
        Self { config: state.config.clone(), db: state.db.clone(), disk: state.disk.clone() }
    }
}

impl AppState {
    /// What the edge layer reads ([`crate::http::router`]).
    pub fn edge(&self) -> EdgeState {
        EdgeState { config: self.config.clone(), metrics: self.metrics.clone() }
    }
}

/// Every SQL statement Moat runs, by name, so one test can `prepare` them all
/// against a freshly migrated database as the runtime role.
pub fn statements() -> Vec<(&'static str, &'static str)> {
    [
        crate::db::store::STATEMENTS,
        crate::auth::STATEMENTS,
        crate::admin::STATEMENTS,
        crate::audit::STATEMENTS,
        crate::users::STATEMENTS,
        crate::limits::STATEMENTS,
        crate::maintenance::STATEMENTS,
        crate::integrations::STATEMENTS,
        crate::runs::STATEMENTS,
        crate::files::STATEMENTS,
        crate::metrics::STATEMENTS,
    ]
    .concat()
}
