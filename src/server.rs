//! The running application: shared state, the listener and graceful shutdown.
//!
//! [`App::build`] is what `moat serve` runs *after* every startup check has
//! passed; tests build the very same thing on port 0. The listener is bound
//! here and nowhere earlier, so a refused configuration never opens a port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;

use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::auth::password::Hasher;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Pool;
use crate::http::Routes;
use crate::http::conn::Capped;
use crate::integrations::Providers;
use crate::integrations::broker::Broker;
use crate::limits::Limiter;
use crate::ws::Sockets;
use crate::ws::hub::Hub;

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
}

impl AppState {
    /// Everything but the listener: what `serve` and the tests share.
    pub async fn new(config: Arc<Config>) -> anyhow::Result<Self> {
        let environment = if config.environment.dev_mode().is_some() { "development" } else { "production" };
        let metrics = Arc::new(crate::metrics::Metrics::new(environment));
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
        })))
    }
}

pub struct App {
    listener: std::net::TcpListener,
    router: Router,
    state: AppState,
}

impl App {
    /// Builds the pool, marks a development database, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Routes::new()).await
    }

    /// As [`App::build`], with extra routes merged in before the layers.
    pub async fn build_with(config: Config, extra: Routes) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let state = AppState::new(config.clone()).await?;
        if config.environment.dev_mode().is_some() {
            let mut client = state.db.get().await.context("cannot reach the database")?;
            let tx = client.transaction().await.context("cannot reach the database")?;
            crate::db::checks::mark_dev_taint(&*tx).await.context("cannot mark the database as development-tainted")?;
            tx.commit().await.context("cannot mark the database as development-tainted")?;
            tracing::info!("database marked as used by development mode; production will refuse it");
        }
        let listener =
            std::net::TcpListener::bind(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
        let router = crate::http::router(state.clone(), extra);
        Ok(Self { listener, router, state })
    }

    /// The state the handlers share (tests reach the pool through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight
    /// requests `shutdown_grace` to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let handle: Handle<SocketAddr> = Handle::new();
        let trigger = handle.clone();
        let config = self.state.config.clone();
        let grace = config.shutdown_grace;
        let background = CancellationToken::new();
        tokio::spawn(crate::maintenance::run(
            self.state.db.clone(),
            self.state.metrics.clone(),
            config.purge_interval,
            background.clone(),
        ));
        tokio::spawn(crate::runs::recovery::run(self.state.db.clone(), background.clone()));
        tokio::spawn(self.state.hub.clone().run(config.listen.clone(), background.clone()));
        tokio::spawn(sweep_files(self.state.clone(), background.clone()));
        if let Some(addr) = config.metrics_bind {
            let listener = crate::metrics::bind_loopback(addr).await?;
            crate::metrics::serve_loopback(
                listener,
                self.state.metrics.clone(),
                self.state.db.clone(),
                background.clone(),
            );
        }
        let stop_background = background.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop_background.cancel();
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: no new connections, finishing in-flight requests"
            );
            trigger.graceful_shutdown(Some(grace));
        });
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        // TCP_NODELAY: WebSocket events and small responses go out at once
        // instead of waiting for the peer's delayed ACK (~40 ms, measured).
        // Connection limits (src/http/conn.rs): the cap is checked before the TLS handshake.
        let (max, metrics) = (config.max_connections, self.state.metrics.clone());
        let served = match &config.tls {
            Some(tls) => {
                let mut server = axum_server::from_tcp_rustls(self.listener, RustlsConfig::from_config(tls.config()))?
                    .map(|acceptor| {
                        Capped::new(acceptor.acceptor(NoDelayAcceptor::new()), max, config.header_timeout, metrics)
                    })
                    .first_request_timeout(config.header_timeout);
                crate::http::conn::configure(server.http_builder(), config.header_timeout);
                server.handle(handle).serve(service).await
            }
            None => {
                let mut server = axum_server::from_tcp(self.listener)?
                    .acceptor(Capped::new(NoDelayAcceptor::new(), max, config.header_timeout, metrics))
                    .first_request_timeout(config.header_timeout);
                crate::http::conn::configure(server.http_builder(), config.header_timeout);
                server.handle(handle).serve(service).await
            }
        };
        background.cancel();
        served
    }
}

/// Resolves on SIGTERM or SIGINT.
/// Sweeps orphaned uploads (crash leftovers) at start and every 10 minutes;
/// only entries older than an hour, so uploads in progress are never touched.
async fn sweep_files(state: AppState, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match crate::files::sweep(&state.disk, &state.db, std::time::Duration::from_secs(3600)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "swept orphaned files"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "file sweep failed; retrying later"),
        }
    }
}

pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
