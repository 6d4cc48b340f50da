//! `/readyz` follows the database: 503 while it cannot be reached, 200 again
//! once it is back, without restarting Moat. The database "goes down" behind a
//! small TCP relay this test controls (the server itself is shared by all tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Notify;

use crate::harness::pg::Upstream;
use crate::harness::{Env, Options, Role, TestDb, assert_security_headers, spawn_app};

/// Relays 127.0.0.1:port to the real server; `down()` cuts every connection and
/// refuses new ones until `up()`.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Relay {
    async fn start(upstream: Upstream) -> Self {
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

    fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, mut server: impl AsyncRead + AsyncWrite + Unpin, cut: Arc<Notify>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.notified() => {}
    }
}

async fn ready_status(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    assert_security_headers(response.headers(), "readyz");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn readyz_is_503_while_the_database_is_down_and_200_after_it_returns() {
    let db = TestDb::migrated().await;
    let relay = Relay::start(db.upstream()).await;
    let env = Env::production(&db).set("DATABASE_URL", &db.url_via(Role::App, relay.port));
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let url = app.url("/readyz");
    assert_eq!(ready_status(&app.http, &url).await, (200, r#"{"status":"ready"}"#.into()));

    relay.down();
    let (status, body) = ready_status(&app.http, &url).await;
    assert_eq!((status, body.as_str()), (503, r#"{"status":"unavailable"}"#), "no detail may leak");
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness does not depend on the database");

    relay.up();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = ready_status(&app.http, &url).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "readyz did not recover after the database returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
