//! `/metrics`: scoped (no anonymous scrape), Prometheus text, requests
//! labelled by route template (never a raw id), runs by status across
//! organizations, and `DEV_BYPASS` at 0 in production.

use moat::auth::Role;

use crate::harness::{Options, spawn_app};

#[tokio::test]
async fn metrics_are_scoped_labelled_by_route_template_and_show_no_dev_bypass_in_production() {
    let app = spawn_app(Options::default()).await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 401);
    let (_, _, member) = app.signed_in(Role::Member).await;
    assert_eq!(app.get_as(&member, "/metrics").await.status(), 403, "members lack metrics:read");
    let (_, _, admin) = app.signed_in(Role::Admin).await;
    // Traffic with ids in the path: the label must be the template.
    let id = uuid::Uuid::new_v4();
    assert_eq!(app.get_as(&admin, &format!("/v1/runs/{id}")).await.status(), 404);
    let body = serde_json::json!({"title": "m", "agent": "demo"});
    let conv = crate::harness::http::post_json(&app.http, &app.url("/v1/conversations"), Some(&admin), body).await;
    let conv = conv["id"].as_str().unwrap();
    let run = app
        .http
        .post(app.url(&format!("/v1/conversations/{conv}/runs")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"input": {"steps": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);
    let response = app.get_as(&admin, "/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    assert!(text.contains(r#"moat_http_requests_total{route="/v1/runs/{id}",method="GET",status="404"} 1"#), "{text}");
    assert!(!text.contains(&id.to_string()), "a raw id became a label");
    assert!(text.contains(r#"moat_runs{status="queued",error=""} 1"#), "{text}");
    assert!(text.contains("moat_dev_bypass_events 0"), "{text}");
    assert!(text.contains(r#"moat_build_info{version=""#) && text.contains(r#"environment="production"} 1"#), "{text}");
    for name in [
        "moat_http_request_duration_seconds_bucket",
        "moat_db_pool_connections",
        "moat_websockets_open",
        "moat_rate_limited_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}
