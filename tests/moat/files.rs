//! Each organization's shared files, attacked: traversal names, hostile
//! bytes in names, oversized uploads, another organization's ids, a symlink
//! planted in the storage folder, and a server killed mid-upload.

use std::time::Duration;

use moat::identity::Role;
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use crate::harness::{self, Env, Options, TestApp, TestDb, error_code, spawn_app};

const BOUNDARY: &str = "moat-test-boundary-7f3a";

/// A multipart body with one field (raw header value for the filename, so tests control its bytes).
fn multipart(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload_raw(app: &TestApp, token: &str, body: Vec<u8>) -> reqwest::Response {
    app.http
        .post(app.url("/v1/files"))
        .bearer_auth(token)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn upload(app: &TestApp, token: &str, filename: &str, content_type: &str, bytes: &[u8]) -> reqwest::Response {
    upload_raw(app, token, multipart("file", filename, content_type, bytes)).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).bearer_auth(token).send().await.unwrap()
}

fn org_dir(app: &TestApp, org: Uuid) -> std::path::PathBuf {
    app.state.config.files.dir.join(org.to_string())
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn upload_list_download_delete_with_traversal_names_defused() {
    let app = spawn_app(Options::default()).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;

    let response = upload(&app, &token, "../../etc/passwd", "text/plain", b"root:x:0:0").await;
    assert_eq!(response.status(), 201);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["name"], "passwd");
    assert_eq!(first["size"], 10);
    let digest: String = sha2::Sha256::digest(b"root:x:0:0").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first["sha256"], digest.as_str());
    // Nothing was written outside the organization's folder, and the bytes sit under the id.
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(entries(&org_dir(&app, org)), vec![id.clone()]);
    // The same name again: a second file; the first is untouched.
    let second: Value = upload(&app, &token, "..\\..\\etc\\passwd", "text/html", b"<script>alert(1)</script>")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["name"], "passwd");
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["content_type"], "application/octet-stream", "HTML must never be served as HTML");
    let content = get(&app, &token, &format!("/v1/files/{id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "text/plain");
    assert_eq!(content.headers()["x-content-type-options"], "nosniff");
    let disposition = content.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"passwd\""), "{disposition}");
    assert_eq!(content.bytes().await.unwrap().as_ref(), b"root:x:0:0");
    // Percent-encoded traversal, decoded once: still just a base name.
    let third: Value =
        upload(&app, &token, "%2e%2e%2f%2e%2e%2fboot.ini", "text/plain", b"x").await.json().await.unwrap();
    assert_eq!(third["name"], "boot.ini");

    let list: Value = get(&app, &token, "/v1/files?limit=2").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let cursor = list["next_cursor"].as_str().unwrap();
    let rest: Value = get(&app, &token, &format!("/v1/files?limit=2&cursor={cursor}")).await.json().await.unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    let deleted = app.http.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(get(&app, &token, &format!("/v1/files/{id}")).await.status(), 404);
    assert!(!entries(&org_dir(&app, org)).contains(&id));
}

#[tokio::test]
async fn hostile_names_and_malformed_uploads_are_refused_with_nothing_stored() {
    let app = spawn_app(Options::default()).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    for name in ["..", ".", "", "a/..", "../", "%2e%2e", "a%00b", "bad%0aname", "tab%09", "x/"] {
        let response = upload(&app, &token, name, "text/plain", b"data").await;
        assert_eq!(response.status(), 400, "{name:?}");
        assert_eq!(error_code(response).await, "invalid_filename", "{name:?}");
    }
    for (body, why) in [
        (multipart("other", "a.txt", "text/plain", b"x"), "wrong field"),
        (b"not multipart at all".to_vec(), "garbage"),
        (
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno filename\r\n--{BOUNDARY}--\r\n"
            )
            .into_bytes(),
            "no filename",
        ),
    ] {
        let response = upload_raw(&app, &token, body).await;
        assert_eq!(response.status(), 400, "{why}");
        assert_eq!(error_code(response).await, "invalid_upload", "{why}");
    }
    assert!(entries(&org_dir(&app, org)).is_empty(), "a refused upload left {:?}", entries(&org_dir(&app, org)));
}

#[tokio::test]
async fn an_oversized_upload_is_413_and_leaves_nothing_on_disk() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_MAX_UPLOAD_BYTES", "1000");
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    assert_eq!(upload(&app, &token, "ok.bin", "application/octet-stream", &[7; 1000]).await.status(), 201);
    let response = upload(&app, &token, "big.bin", "application/octet-stream", &vec![7; 200_000]).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "file_too_large");
    assert_eq!(entries(&org_dir(&app, org)).len(), 1, "{:?}", entries(&org_dir(&app, org)));
    let list: Value = get(&app, &token, "/v1/files").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // A body with no boundary at all (the parser would buffer it looking for one): bounded too.
    let response = upload_raw(&app, &token, vec![b'x'; 5_000_000]).await;
    assert_eq!(response.status(), 413);
    // Oversized part headers likewise.
    let mut body = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"h\"\r\nX-Pad: ")
        .into_bytes();
    body.extend(vec![b'a'; 5_000_000]);
    let response = upload_raw(&app, &token, body).await;
    assert!(matches!(response.status().as_u16(), 400 | 413), "{}", response.status());
    assert_eq!(entries(&org_dir(&app, org)).len(), 1);
}

#[tokio::test]
async fn another_organizations_file_is_not_found_and_a_planted_symlink_is_refused() {
    let app = spawn_app(Options::default()).await;
    let (org, _, token) = app.signed_in(Role::Admin).await;
    let (_, _, stranger) = app.signed_in(Role::Admin).await;
    let file: Value = upload(&app, &token, "secret.txt", "text/plain", b"ours").await.json().await.unwrap();
    let id = file["id"].as_str().unwrap();
    for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
        assert_eq!(get(&app, &stranger, &path).await.status(), 404, "{path}");
    }
    let deleted = app.http.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(deleted.status(), 404);
    assert_eq!(get(&app, &token, &format!("/v1/files/{id}/content")).await.status(), 200);
    // Someone with access to the disk swaps the file for a symlink to a system file.
    let stored = org_dir(&app, org).join(id);
    std::fs::remove_file(&stored).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &stored).unwrap();
    let response = get(&app, &token, &format!("/v1/files/{id}/content")).await;
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(hostname.trim().is_empty() || !body.contains(hostname.trim()), "the symlink was followed: {body}");
}

/// A `moat serve` killed mid-upload leaves a temporary file; a file whose row
/// was never written is an orphan too. The sweep removes both and nothing else.
#[tokio::test]
async fn a_crash_mid_upload_leaves_nothing_the_sweep_does_not_remove() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let serving = harness::serve(&env).await;
    let admin = harness::http::admin_in(&db).await;
    let http = reqwest::Client::new();
    let token = harness::http::login_at(&http, &serving.url(""), admin.email, &admin.password).await;
    let files_dir = std::path::PathBuf::from(env.get("MOAT_FILES_DIR").unwrap());
    let dir = std::fs::canonicalize(&files_dir).unwrap().join(admin.org.to_string());
    // A complete upload, whose file must survive the sweep.
    let kept: Value = {
        let body = multipart("file", "kept.txt", "text/plain", b"keep me");
        http.post(serving.url("/v1/files"))
            .bearer_auth(&token)
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    // Half an upload over a raw socket, then SIGKILL.
    let mut socket = tokio::net::TcpStream::connect(serving.addr).await.unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: moat\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000\r\n\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"half.bin\"\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![b'x'; 200_000]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !entries(&dir).iter().any(|e| e.starts_with(".upload-")) {
        assert!(tokio::time::Instant::now() < deadline, "no temporary file appeared: {:?}", entries(&dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serving.kill().await;
    // And a file that made it to disk without its row (a crash between rename and insert).
    let orphan = Uuid::new_v4().to_string();
    std::fs::write(dir.join(&orphan), b"orphan").unwrap();
    assert_eq!(entries(&dir).len(), 3, "{:?}", entries(&dir));

    let disk = moat::files::disk::Disk::new(std::fs::canonicalize(&files_dir).unwrap());
    let removed = moat::files::sweep(&disk, &admin.pool, Duration::ZERO).await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(entries(&dir), vec![kept["id"].as_str().unwrap().to_owned()]);
    // A young orphan is left alone (it may be an upload between rename and insert).
    std::fs::write(dir.join(Uuid::new_v4().to_string()), b"young").unwrap();
    assert_eq!(moat::files::sweep(&disk, &admin.pool, Duration::from_secs(3600)).await.unwrap(), 0);
}
