//! A dedicated `LISTEN` connection.
//!
//! `tokio::spawn(connection)` would silently drop notifications, so the
//! connection is driven here with `poll_message`, forwarding each
//! notification. Notifications are only wake-ups: callers re-read their
//! tables on (re)connect and on a slow poll, so one lost while the connection
//! was down delays work but never drops it. This connection must not go
//! through a transaction pooler (`MOAT_LISTEN_DATABASE_URL` can point past it).

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use super::{ConnectError, DatabaseSettings};

/// Where the LISTEN connection goes, if anywhere.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The connection string for LISTEN (never through a transaction pooler).
    pub database: DatabaseSettings,
    /// `false` (`MOAT_LISTEN=off`): poll only.
    pub enabled: bool,
    /// Whether `database` came from `MOAT_LISTEN_DATABASE_URL` (not `DATABASE_URL`).
    pub separate: bool,
}

/// One notification: `(channel, payload)`.
pub type Notification = (String, String);

/// A live LISTEN connection; `closed` resolves when it ends.
pub struct Listener {
    pub closed: oneshot::Receiver<()>,
    _client: tokio_postgres::Client,
}

/// Connects, subscribes to `channels` and forwards notifications to `sink`.
pub async fn listen(
    settings: &DatabaseSettings,
    channels: &[&str],
    sink: mpsc::UnboundedSender<Notification>,
) -> Result<Listener, ConnectError> {
    let connector = settings.connector().map_err(ConnectError::Tls)?;
    let mut config = settings.pg.clone();
    config.application_name("moat-listen");
    let (client, mut connection) = config.connect(connector).await.map_err(ConnectError::Postgres)?;
    let (done, closed) = oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if sink.send((n.channel().to_owned(), n.payload().to_owned())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %super::describe_error(&e), "LISTEN connection failed");
                    break;
                }
            }
        }
        let _ = done.send(());
    });
    for channel in channels {
        client.batch_execute(&format!("LISTEN {channel}")).await.map_err(ConnectError::Postgres)?;
    }
    Ok(Listener { closed, _client: client })
}
