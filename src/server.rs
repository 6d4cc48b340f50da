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
use axum_server::tls_rustls::RustlsConfig;
use deadpool_postgres::Pool;

use crate::config::Config;

/// What every handler can reach. Explicit, cloned per request, no globals.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Pool,
}

pub struct App {
    listener: std::net::TcpListener,
    router: Router,
    config: Arc<Config>,
}

impl App {
    /// Builds the pool, marks a development database, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Router::new()).await
    }

    /// As [`App::build`], with extra routes merged in before the layers.
    pub async fn build_with(config: Config, extra: Router<AppState>) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let db = config.database.pool(config.pool_size).map_err(anyhow::Error::msg)?;
        if config.environment.dev_mode().is_some() {
            let client = db.get().await.context("cannot reach the database")?;
            crate::db::checks::mark_dev_taint(&**client)
                .await
                .context("cannot mark the database as development-tainted")?;
            tracing::info!("database marked as used by development mode; production will refuse it");
        }
        let listener =
            std::net::TcpListener::bind(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
        let router = crate::http::router(AppState { config: config.clone(), db }, extra);
        Ok(Self { listener, router, config })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight
    /// requests `shutdown_grace` to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let handle: Handle<SocketAddr> = Handle::new();
        let trigger = handle.clone();
        let grace = self.config.shutdown_grace;
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: no new connections, finishing in-flight requests"
            );
            trigger.graceful_shutdown(Some(grace));
        });
        let service = self.router.into_make_service();
        match &self.config.tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(self.listener, RustlsConfig::from_config(tls.config()))?
                    .handle(handle)
                    .serve(service)
                    .await
            }
            None => axum_server::from_tcp(self.listener)?.handle(handle).serve(service).await,
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
