//! What a hostile client can hold at the HTTP edge, attacked on a production
//! `moat serve` over real sockets: made-up methods (no new metric labels),
//! headers trickled one line at a time (slowloris), idle keep-alive, too many
//! connections, and an oversized body that must still get its 413 JSON — over
//! HTTP/1.1, over HTTP/2 and from a browser that sends the whole body.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::browser::Browser;
use crate::harness::http::{admin_in, login_at};
use crate::harness::process::Serving;
use crate::harness::{self, Env, TestDb};

async fn serve_with(db: &TestDb, settings: &[(&str, &str)]) -> (Serving, String) {
    let port = harness::free_port();
    let mut env = Env::production(db).set("MOAT_METRICS_BIND", &format!("127.0.0.1:{port}"));
    for (name, value) in settings {
        env = env.set(name, value);
    }
    (harness::serve(&env).await, format!("http://127.0.0.1:{port}/metrics"))
}

/// Reads until the peer closes the connection (EOF or reset); returns what was read, or `None` after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Observation 2 of issue 17: a made-up method became a label of its own, forever.
#[tokio::test]
async fn made_up_methods_are_one_label_and_never_logged_raw() {
    let db = TestDb::migrated().await;
    let (serving, metrics) = serve_with(&db, &[]).await;
    for method in ["QWERTYUIOPASDF", "ZXCVBNMLKJHGFD", "PROPFIND"] {
        let mut stream = TcpStream::connect(serving.addr).await.unwrap();
        let request = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("an answer");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 405"), "{}", String::from_utf8_lossy(&answer));
    }
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for raw in ["QWERTYUIOPASDF", "ZXCVBNMLKJHGFD", "PROPFIND"] {
        assert!(!text.contains(raw), "{raw} became a label:\n{text}");
    }
    let other = r#"moat_http_requests_total{route="/healthz",method="other",status="405"} 3"#;
    assert!(text.contains(other), "{text}");
    let log = serving.terminate().await.all_output();
    assert!(!log.contains("QWERTYUIOPASDF"), "the access log printed a raw method:\n{log}");
}

/// Observation 3 of issue 17: headers trickled one line at a time kept a
/// connection open past 75 s. Now: closed within the header timeout; so is a
/// connection that sends nothing, and an idle keep-alive connection.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_within_the_header_timeout() {
    let db = TestDb::migrated().await;
    let (serving, _) = serve_with(&db, &[("MOAT_HTTP_HEADER_TIMEOUT", "3s")]).await;

    // Slowloris: one header line every second, never the blank line.
    let mut slow = TcpStream::connect(serving.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(10), slow.read(&mut probe)).await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), trickle).await.expect("the slow connection was never closed");
    let closed_after = started.elapsed();
    assert!(closed_after < Duration::from_secs(6), "closed only after {closed_after:?}");

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(serving.addr).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut silent, Duration::from_secs(10)).await.expect("a silent connection stays open");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // An idle keep-alive connection, after a complete request and response.
    let mut idle = TcpStream::connect(serving.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 2048];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    read_until_closed(&mut idle, Duration::from_secs(10)).await.expect("an idle connection stays open");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // An idle HTTP/2 connection (hyper has no idle timeout of its own; pings are answered).
    let tcp = TcpStream::connect(serving.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let (response, _) =
        client.send_request(http::Request::get(serving.url("/healthz")).body(()).unwrap(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection).await.expect("an idle HTTP/2 connection stays open").ok();
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // A client that sends its request promptly is unaffected.
    assert_eq!(reqwest::get(serving.url("/healthz")).await.unwrap().status(), 200);
    serving.terminate().await;
}

/// A WebSocket is a connection with nothing in progress at the HTTP level:
/// it is not closed as idle (it has its own pings and bounds).
#[tokio::test]
async fn a_quiet_websocket_outlives_the_idle_timeout() {
    let db = TestDb::migrated().await;
    let (serving, _) = serve_with(&db, &[("MOAT_HTTP_HEADER_TIMEOUT", "2s")]).await;
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    let token = login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let conv = crate::harness::http::post_json(
        &http,
        &serving.url("/v1/conversations"),
        Some(&token),
        serde_json::json!({"title": "quiet", "agent": "demo"}),
    )
    .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let mut socket = crate::harness::ws::open(&http, &serving, &token, &conv, None).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Still open: a ping command is answered.
    futures_util::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"ping","id":1}"#.into()),
    )
    .await
    .unwrap();
    let reply = crate::harness::ws::next_json(&mut socket).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    serving.terminate().await;
}

/// A request on an open keep-alive connection; returns the status line.
async fn ask(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

/// `MOAT_MAX_CONNECTIONS`: the next connection is refused at once, while the
/// open ones keep working; a freed place is taken again.
#[tokio::test]
async fn the_connection_cap_refuses_the_next_connection_and_spares_the_open_ones() {
    let db = TestDb::migrated().await;
    let (serving, metrics) =
        serve_with(&db, &[("MOAT_MAX_CONNECTIONS", "3"), ("MOAT_HTTP_HEADER_TIMEOUT", "60s")]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(serving.addr).await.unwrap();
        assert_eq!(ask(&mut stream).await, "HTTP/1.1 200 OK");
        open.push(stream);
    }
    // The fourth: accepted by the kernel, closed by Moat before it reads anything.
    let mut refused = TcpStream::connect(serving.addr).await.unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut refused, Duration::from_secs(5)).await.expect("closed at once");
    assert!(answer.is_empty(), "the refused connection got {}", String::from_utf8_lossy(&answer));
    for stream in &mut open {
        assert_eq!(ask(stream).await, "HTTP/1.1 200 OK", "an open connection stopped working");
    }
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(text.contains("moat_http_connections_refused_total 1"), "{text}");
    assert!(text.contains("moat_http_connections_open 3"), "{text}");
    assert!(text.contains("moat_http_connections_max 3"), "{text}");
    // A place freed is a place taken.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = TcpStream::connect(serving.addr).await.unwrap();
        let _ = again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let answer = read_until_closed(&mut again, Duration::from_secs(5)).await.unwrap_or_default();
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never given again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serving.terminate().await;
}

/// `curl` POSTing `body_file` to `url` with `flags`: (exit code, status, body).
async fn curl(flags: &[&str], url: &str, body_file: &std::path::Path) -> (i32, u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(flags)
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body_file.display()))
        .arg(url)
        .output()
        .await
        .expect("curl (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let failure = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), status.trim().parse().unwrap_or(0), format!("{body}{failure}"))
}

/// An oversized JSON body gets its 413 JSON over HTTP/1.1 and HTTP/2 (where
/// curl used to get a bare stream reset: the body was dropped unread before
/// the response went out), and so does a body refused before it was read
/// (401 on a protected route). curl is the client of record: it treats a
/// `CANCEL` reset as an error, as browsers may.
#[tokio::test]
async fn an_oversized_body_gets_its_413_over_http1_and_http2() {
    let db = TestDb::migrated().await;
    let (serving, _) = serve_with(&db, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("{{\"email\":\"{}\",\"password\":\"x\"}}", "a".repeat(2 * 1024 * 1024))).unwrap();
    for flags in [&["--http1.1"][..], &["--http1.1", "-H", "Expect:"], &["--http2-prior-knowledge"]] {
        let (code, status, body) = curl(flags, &serving.url("/v1/auth/login"), &big).await;
        assert_eq!((code, status), (0, 413), "{flags:?}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{flags:?}: {body}"));
        assert_eq!(body["error"]["code"], "payload_too_large", "{flags:?}: {body}");
        let (code, status, body) = curl(flags, &serving.url("/v1/conversations"), &big).await;
        assert_eq!((code, status), (0, 401), "{flags:?}: {body}");
        assert!(body.contains("\"unauthorized\""), "{flags:?}: {body}");
    }
    // The server is none the worse.
    let http = reqwest::Client::new();
    let admin = admin_in(&db).await;
    assert!(!login_at(&http, &serving.url(""), admin.email, &admin.password).await.is_empty());
    serving.terminate().await;
}

/// A browser writes the whole body before it reads the answer: it must still
/// read the 413 JSON, over plain HTTP/1.1 and over HTTPS, where Chromium
/// speaks HTTP/2 (ALPN). (Chromium, unlike curl, also tolerated the old
/// `CANCEL` reset; this guards the browser path, the curl test above the fix.)
#[tokio::test]
async fn a_browser_that_sends_the_whole_oversized_body_reads_the_413() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    for tls in [false, true] {
        let port = harness::free_port();
        let base = format!("{}://localhost:{port}", if tls { "https" } else { "http" });
        let mut env = Env::production(&db)
            .set("MOAT_ENV", "development")
            .set("MOAT_BIND", &format!("127.0.0.1:{port}"))
            .set("MOAT_PUBLIC_URL", &base);
        if tls {
            env = env.set("MOAT_TLS_CERT", cert_path.to_str().unwrap()).set("MOAT_TLS_KEY", key_path.to_str().unwrap());
        }
        let serving = harness::serve(&env).await;
        let browser = Browser::start_with(&["--ignore-certificate-errors"]).await;
        browser.client.goto(&base).await.unwrap();
        let outcome = browser
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const body = JSON.stringify({ email: 'a'.repeat(4 * 1024 * 1024), password: 'x' });
                 fetch('/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
                   .then(async r => done({ status: r.status, body: await r.json(),
                                           protocol: performance.getEntriesByType('resource').map(e => e.nextHopProtocol) }))
                   .catch(e => done({ error: String(e) }));",
                vec![],
            )
            .await
            .unwrap();
        browser.close().await;
        assert_eq!(outcome["status"], 413, "tls {tls}: {outcome}");
        assert_eq!(outcome["body"]["error"]["code"], "payload_too_large", "tls {tls}: {outcome}");
        let protocols = outcome["protocol"].to_string();
        assert!(protocols.contains(if tls { "h2" } else { "http/1.1" }), "tls {tls}: {outcome}");
        serving.terminate().await;
    }
}

/// The request-head limits: HTTP/1.1 heads over 64 KiB, and HTTP/2 header
/// lists over 16 KiB, are refused; HTTP/2 advertises 100 concurrent streams.
#[tokio::test]
async fn oversized_request_heads_are_refused_and_http2_advertises_its_stream_limit() {
    let db = TestDb::migrated().await;
    let (serving, _) = serve_with(&db, &[]).await;
    // HTTP/1.1: a 70 KiB header.
    let mut stream = TcpStream::connect(serving.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer));

    // HTTP/2 (prior knowledge): the settings, then a 20 KiB header list.
    let tcp = TcpStream::connect(serving.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let ok = http::Request::get(serving.url("/healthz")).body(()).unwrap();
    let (response, _) = client.send_request(ok, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(client.current_max_send_streams(), 100, "the server's SETTINGS_MAX_CONCURRENT_STREAMS");
    let big = http::Request::get(serving.url("/healthz")).header("x-big", "a".repeat(20 * 1024)).body(()).unwrap();
    let refused = match client.send_request(big, true) {
        Err(_) => true,
        Ok((response, _)) => match response.await {
            Err(_) => true,
            Ok(response) => response.status() == 431,
        },
    };
    assert!(refused, "a 20 KiB header list was accepted over HTTP/2");
    serving.terminate().await;
}

/// An HTTP/2 response still being delivered to a slow reader keeps its
/// connection open past the idle timeout: hyper hands a response body over
/// (and the request stops being in progress) before it is sent, so the
/// connection counts writes of data too. The OpenAPI document (one chunk),
/// read through a 4 KiB window released every 400 ms with a 2 s timeout,
/// arrives whole.
#[tokio::test]
async fn a_slow_http2_reader_is_not_cut_by_the_idle_timeout() {
    let db = TestDb::migrated().await;
    let (serving, _) = serve_with(&db, &[("MOAT_HTTP_HEADER_TIMEOUT", "2s")]).await;
    let whole = reqwest::get(serving.url("/v1/openapi.json")).await.unwrap().bytes().await.unwrap().len();
    let tcp = TcpStream::connect(serving.addr).await.unwrap();
    let (mut client, connection) =
        h2::client::Builder::new().initial_window_size(4096).handshake::<_, axum::body::Bytes>(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(serving.url("/v1/openapi.json")).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut received, started) = (0usize, Instant::now());
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("the response broke off after {received} of {whole} bytes: {e}"));
        received += chunk.len();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert_eq!(received, whole, "the response was cut short");
    assert!(started.elapsed() > Duration::from_secs(3), "the reader was not slow: {:?}", started.elapsed());
    serving.terminate().await;
}
