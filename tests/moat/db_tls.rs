//! TLS to PostgreSQL is always verified: a trusted chain and the right host name
//! connect (encrypted); an untrusted CA or another host name is refused, even
//! with libpq's weaker `sslmode=require` or `verify-ca`.

use crate::harness::{Env, TestDb, run};

fn url(db: &TestDb, host: &str, mode: &str, ca: &std::path::Path) -> String {
    let port = db.tls().map(|t| t.port).unwrap_or_default();
    format!("postgresql://moat_app@{host}:{port}/{}?sslmode={mode}&sslrootcert={}", db.name, ca.display())
}

#[tokio::test]
async fn database_tls_is_verified() {
    let db = TestDb::migrated().await;
    let Some(tls) = db.tls().cloned() else {
        eprintln!("database_tls_is_verified: skipped, MOAT_TEST_DATABASE_URL's server certificates are unknown");
        return;
    };

    // Trusted CA and matching name: the checks pass over an encrypted session.
    let good = url(&db, "localhost", "verify-full", &tls.ca);
    let out = run(&["check"], &Env::production(&db).set("DATABASE_URL", &good)).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.all_output());
    let client = moat::db::DatabaseSettings::parse(&good).unwrap().connect().await.unwrap();
    let row = client.query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the session is not encrypted");
    assert!(matches!(row.get::<_, Option<String>>(1).as_deref(), Some("TLSv1.2" | "TLSv1.3")));

    // An untrusted CA, and a name the certificate does not carry: refused.
    for (label, url) in [
        ("untrusted CA", url(&db, "localhost", "verify-full", &tls.other_ca)),
        ("untrusted CA, sslmode=require", url(&db, "localhost", "require", &tls.other_ca)),
        ("wrong host name", url(&db, "127.0.0.1", "verify-full", &tls.ca)),
        ("wrong host name, sslmode=verify-ca", url(&db, "127.0.0.1", "verify-ca", &tls.ca)),
    ] {
        let out = run(&["check"], &Env::production(&db).set("DATABASE_URL", &url)).await;
        assert_eq!(out.status.code(), Some(1), "{label}: {}", out.all_output());
        assert!(out.stderr.contains("[database] cannot connect to moat_app@"), "{label}: {}", out.stderr);
        assert!(out.stderr.to_lowercase().contains("certificate"), "{label}: not a certificate error: {}", out.stderr);
    }
}
