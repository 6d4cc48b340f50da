//! HTTPS with rustls: TLS 1.2 and 1.3 accepted, 1.0 and 1.1 refused at the
//! handshake. The certificate is generated at test time (no key is committed).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Env, Options, TestApp, TestDb, assert_security_headers, run, spawn_app};

struct Certificate {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    pem: String,
}

fn certificate() -> Certificate {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    Certificate { _dir: dir, cert: cert_path, key: key_path, der: cert.der().clone(), pem: cert.pem() }
}

fn tls_env(db: &TestDb, c: &Certificate) -> Env {
    Env::production(db).set("MOAT_TLS_CERT", c.cert.to_str().unwrap()).set("MOAT_TLS_KEY", c.key.to_str().unwrap())
}

async fn https_app(c: &Certificate) -> TestApp {
    let db = TestDb::migrated().await;
    spawn_app(Options { env: Some(tls_env(&db, c)), db: Some(db), ..Options::default() }).await
}

/// Handshakes with a rustls client limited to `version`; returns the negotiated version.
async fn handshake(
    app: &TestApp,
    c: &Certificate,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<rustls::ProtocolVersion, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(app.addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let negotiated = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    Ok(negotiated)
}

/// `openssl s_client` offering only `flag`'s protocol, ciphers unrestricted so the
/// client really offers it. Returns its combined output.
fn openssl_client(port: u16, flag: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), flag, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl (apt-get install -y openssl)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Whether `openssl s_client` completed a handshake (it prints the session either way).
fn negotiated(output: &str) -> bool {
    output.contains("Cipher is ") && !output.contains("Cipher is (NONE)")
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_accepted() {
    let c = certificate();
    let app = https_app(&c).await;
    assert_eq!(handshake(&app, &c, &rustls::version::TLS12).await.unwrap(), rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(handshake(&app, &c, &rustls::version::TLS13).await.unwrap(), rustls::ProtocolVersion::TLSv1_3);

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(c.pem.as_bytes()).unwrap())
        .resolve("localhost", app.addr)
        .build()
        .unwrap();
    let response = client.get(format!("https://localhost:{}/healthz", app.addr.port())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers(), "https healthz");
    let missing = client.get(format!("https://localhost:{}/nope", app.addr.port())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_security_headers(missing.headers(), "https 404");
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused() {
    let c = certificate();
    // Control: the same client command does speak TLS 1.1 to a server that allows it,
    // so a refusal below is Moat's doing, not the client's.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut control = Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-www"])
        .arg("-cert")
        .arg(&c.cert)
        .arg("-key")
        .arg(&c.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut control_output = String::new();
    for _ in 0..50 {
        control_output = openssl_client(port, "-tls1_1");
        if negotiated(&control_output) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    control.kill().ok();
    control.wait().ok();
    assert!(
        negotiated(&control_output) && control_output.contains("Protocol  : TLSv1.1"),
        "control handshake failed:\n{control_output}"
    );

    let app = https_app(&c).await;
    for flag in ["-tls1", "-tls1_1"] {
        let output = tokio::task::spawn_blocking({
            let port = app.addr.port();
            move || openssl_client(port, flag)
        })
        .await
        .unwrap();
        assert!(!negotiated(&output), "{flag} negotiated a session:\n{output}");
        // Refused by the server with a TLS alert (not merely a dropped connection).
        assert!(output.contains("alert"), "{flag} was not refused with an alert:\n{output}");
    }
    // And the refused handshakes did not disturb the server.
    assert_eq!(handshake(&app, &c, &rustls::version::TLS13).await.unwrap(), rustls::ProtocolVersion::TLSv1_3);
}

#[tokio::test]
async fn non_loopback_bind_is_allowed_with_tls_or_a_declared_upstream_proxy() {
    let c = certificate();
    let db = TestDb::migrated().await;
    let with_tls = run(&["check"], &tls_env(&db, &c).set("MOAT_BIND", "0.0.0.0:0")).await;
    assert_eq!(with_tls.status.code(), Some(0), "{}", with_tls.all_output());
    let upstream = run(
        &["check"],
        &Env::production(&db).set("MOAT_BIND", "0.0.0.0:0").set("MOAT_TLS_TERMINATED_UPSTREAM", "true"),
    )
    .await;
    assert_eq!(upstream.status.code(), Some(0), "{}", upstream.all_output());
}

#[tokio::test]
async fn a_certificate_and_key_that_do_not_match_are_refused() {
    let (a, b) = (certificate(), certificate());
    let db = TestDb::migrated().await;
    let env = Env::production(&db)
        .set("MOAT_TLS_CERT", a.cert.to_str().unwrap())
        .set("MOAT_TLS_KEY", b.key.to_str().unwrap());
    let out = run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(out.stderr.contains("[MOAT_TLS_CERT] cannot be used"), "{}", out.stderr);
    let garbage = run(&["check"], &env.clone().set("MOAT_TLS_KEY", a.cert.to_str().unwrap())).await;
    assert!(garbage.stderr.contains("MOAT_TLS_KEY is not a readable PEM private key"), "{}", garbage.stderr);
}
