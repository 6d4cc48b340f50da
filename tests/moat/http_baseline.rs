//! The HTTP baseline: security headers on every status, one JSON error shape,
//! body limit, timeout, panics, graceful shutdown, and the access log.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use moat::http::{ApiError, ApiJson, Routes};
use moat::identity::Access::Public;

use crate::harness::{self, Env, Options, TestDb, assert_security_headers, error_code, spawn_app};

/// Probe routes that produce every status the baseline promises to cover.
fn probes() -> Routes<moat::AppState> {
    Routes::new()
        .get("/test/redirect", Public, || async { Redirect::to("/healthz") })
        .post("/test/echo", Public, |ApiJson(v): ApiJson<serde_json::Value>| async move { axum::Json(v) })
        .get("/test/unauthorized", Public, || async { ApiError::unauthorized() })
        .get("/test/rate-limited", Public, || async {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
        })
        .get("/test/panic", Public, || async { panic_now() })
        .get("/test/internal", Public, || async {
            ApiError::internal(&std::io::Error::other("db at 10.0.0.7 said: relation users"))
        })
        .get("/test/slow", Public, || async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "done".into_response()
        })
}

fn panic_now() -> &'static str {
    panic!("secret panic detail at /srv/moat/src/lib.rs")
}

#[tokio::test]
async fn every_status_carries_every_security_header() {
    let app = spawn_app(Options {
        extra: Some(probes()),
        request_timeout: Some(Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        ("200", app.http.get(app.url("/healthz")), 200, None),
        ("3xx", app.http.get(app.url("/test/redirect")), 303, None),
        (
            "400",
            app.http.post(app.url("/test/echo")).header("content-type", "application/json").body("{not json"),
            400,
            Some("invalid_json"),
        ),
        ("401", app.http.get(app.url("/test/unauthorized")), 401, Some("unauthorized")),
        ("404", app.http.get(app.url("/no/such/route")), 404, Some("not_found")),
        ("405", app.http.delete(app.url("/healthz")), 405, Some("method_not_allowed")),
        (
            "413",
            app.http.post(app.url("/test/echo")).header("content-type", "application/json").body(big),
            413,
            Some("payload_too_large"),
        ),
        ("415", app.http.post(app.url("/test/echo")).body("{}"), 415, Some("unsupported_media_type")),
        ("429", app.http.get(app.url("/test/rate-limited")), 429, Some("rate_limited")),
        ("500 panic", app.http.get(app.url("/test/panic")), 500, Some("internal_error")),
        ("500 error", app.http.get(app.url("/test/internal")), 500, Some("internal_error")),
        ("timeout", app.http.get(app.url("/test/slow")), 408, Some("request_timeout")),
    ];
    for (label, request, status, code) in cases {
        let response = request.send().await.expect(label);
        assert_eq!(response.status().as_u16(), status, "{label}");
        assert_security_headers(response.headers(), label);
        if status == 401 {
            assert_eq!(
                response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{label}"
            );
        }
        match code {
            Some(code) => assert_eq!(error_code(response).await, code, "{label}"),
            None => drop(response.bytes().await),
        }
    }
    // The metrics are recorded outside the panic catcher and the timeout, so both count.
    let metrics = app.state.metrics.render(&app.state.db).await.unwrap();
    for (route, status) in [("/test/panic", 500), ("/test/slow", 408), ("/test/echo", 413)] {
        let line = format!("moat_http_requests_total{{route=\"{route}\",method=\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(&format!("status=\"{status}\"")) && l.ends_with(" 1")),
            "{route} {status} not counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn errors_never_leak_internals() {
    let app = spawn_app(Options { extra: Some(probes()), ..Options::default() }).await;
    for path in ["/test/panic", "/test/internal"] {
        let body = app.get(path).await.text().await.unwrap();
        for leak in ["secret panic", "/srv/moat", "10.0.0.7", "relation", "panicked", "src/"] {
            assert!(!body.contains(leak), "{path} leaked {leak:?}: {body}");
        }
        assert_eq!(
            crate::harness::http::without_request_id(&body),
            serde_json::json!({"error": {"code": "internal_error", "message": "an internal error occurred"}})
        );
    }
    // A panic answered 500 and the server is still serving.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn json_body_limit_is_one_mebibyte() {
    let app = spawn_app(Options { extra: Some(probes()), ..Options::default() }).await;
    let post = |body: String| {
        app.http.post(app.url("/test/echo")).header("content-type", "application/json").body(body).send()
    };
    // Just under the limit (quotes included) is accepted and echoed intact.
    let fits = format!("\"{}\"", "y".repeat(1024 * 1024 - 2));
    let response = post(fits.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), fits);
    // One byte more is refused with 413; an empty body is malformed JSON.
    let over = format!("\"{}\"", "y".repeat(1024 * 1024 - 1));
    assert_eq!(post(over).await.unwrap().status(), 413);
    let wrong =
        app.http.post(app.url("/test/echo")).header("content-type", "application/json").body("").send().await.unwrap();
    assert_eq!(wrong.status(), 400);
}

#[tokio::test]
async fn health_endpoints_reveal_nothing() {
    let app = spawn_app(Options::default()).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_security_headers(health.headers(), "healthz");
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let app = spawn_app(Options {
        extra: Some(probes()),
        shutdown_grace: Some(Duration::from_secs(10)),
        ..Options::default()
    })
    .await;
    let (url, addr) = (app.url("/test/slow"), app.addr);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not accepting any more, while the slow request is still running.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a new connection was accepted during shutdown");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the in-flight request was cut off");
    stopped.await.unwrap().expect("server returned cleanly");
}

#[tokio::test]
async fn the_binary_exits_zero_on_sigterm_and_logs_paths_without_query_strings() {
    let db = TestDb::migrated().await;
    let serving = harness::serve(&Env::production(&db)).await;
    let client = reqwest::Client::new();
    let response =
        client.get(serving.url("/healthz?token=eyJhbGciOiJIUzI1NiJ9.SECRET-TOKEN-MATERIAL")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers(), "binary healthz");
    let finished = serving.terminate().await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all_output());
    let log = finished.all_output();
    assert!(
        log.contains("path=/healthz") && log.contains("status=200") && log.contains("latency_ms="),
        "no access line:\n{log}"
    );
    assert!(!log.contains("SECRET-TOKEN-MATERIAL") && !log.contains("token="), "query string logged:\n{log}");
}
