//! A TCP relay in front of the test PostgreSQL that a test can cut: `down()`
//! drops every connection through it and refuses new ones until `up()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Notify;

use super::pg::Upstream;

/// Relays 127.0.0.1:port to the real server; `down()` cuts every connection and
/// refuses new ones until `up()`.
pub struct Relay {
    /// The local port that reaches the database while the relay is up.
    pub port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Relay {
    pub async fn start(upstream: Upstream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, cut) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        let (is_down, cut_all) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close at once
                }
                let (upstream, cut) = (upstream.clone(), cut_all.clone());
                tokio::spawn(async move {
                    match upstream {
                        Upstream::Unix(path) => relay(client, UnixStream::connect(path).await.unwrap(), cut).await,
                        Upstream::Tcp(addr) => relay(client, TcpStream::connect(addr).await.unwrap(), cut).await,
                    }
                });
            }
        });
        Self { port, down, cut }
    }

    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, mut server: impl AsyncRead + AsyncWrite + Unpin, cut: Arc<Notify>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.notified() => {}
    }
}
