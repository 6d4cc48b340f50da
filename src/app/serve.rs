//! `moat serve`'s application: the listener, the background tasks and graceful shutdown.
//!
//! [`App::build`] is what `moat serve` runs *after* every startup check has
//! passed; tests build the very same thing on port 0. The listener is bound
//! here and nowhere earlier, so a refused configuration never opens a port.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;

use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::config::{Config, Vars};
use crate::http::Routes;
use crate::http::conn::Capped;

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
    pub async fn build_with(config: Config, extra: Routes<AppState>) -> anyhow::Result<Self> {
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
        let router = super::routes::router(state.clone(), extra);
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
        let background = self.state.shutdown.clone();
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
            let listener = crate::health::bind_loopback(addr).await?;
            crate::health::serve_loopback(
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

/// `moat serve`: the startup checks, then the application until SIGTERM/SIGINT.
pub async fn main(vars: &Vars) -> ExitCode {
    // Like the runner: its memory and /proc/<pid>/environ hold the keys and DATABASE_URL.
    crate::os::non_dumpable("server");
    let outcome = super::check::run(vars).await;
    if !outcome.problems.is_empty() {
        eprint!("{}", outcome.report());
        return ExitCode::FAILURE;
    }
    let Some(config) = outcome.config else {
        return ExitCode::FAILURE;
    };
    let environment = config.environment;
    crate::os::raise_fd_limit(config.max_connections);
    crate::db::warn_if_plaintext(&config.database, &config.listen);
    let tls = config.tls.is_some();
    let kid = config.signing_key.key_id();
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "moat cannot start");
            eprintln!("moat: cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let addr = app.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, tls, environment = ?environment, signing_kid = %kid, "moat listening on {addr}");
    match app.run_until(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("moat stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

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

/// Resolves on SIGTERM or SIGINT.
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
