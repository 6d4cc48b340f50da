//! The database contract: every SQL statement prepares against the migrated
//! schema, and the runtime role holds only what the server needs.

use crate::harness::{Role, TestDb};

async fn connect(db: &TestDb, role: Role) -> tokio_postgres::Client {
    let (client, connection) =
        db.url(role).parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn every_statement_prepares_as_the_runtime_role() {
    let db = TestDb::migrated().await;
    let client = connect(&db, Role::App).await;
    let statements = moat::statements();
    assert!(statements.len() > 30, "statements missing from moat::statements()");
    for (name, sql) in statements {
        if let Err(e) = client.prepare(sql).await {
            panic!("sql/{name}.sql does not prepare: {e:?}");
        }
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_clear_the_dev_taint_or_rewrite_history() {
    let db = TestDb::migrated().await;
    let client = connect(&db, Role::App).await;
    moat::db::checks::mark_dev_taint(&client).await.expect("the runtime role may mark");
    moat::db::checks::mark_dev_taint(&client).await.expect("marking twice is harmless");
    for sql in [
        "DELETE FROM moat_dev_taint",
        "UPDATE moat_dev_taint SET marked_by = 'x'",
        "TRUNCATE moat_dev_taint",
        "DELETE FROM refinery_schema_history",
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (2, 'x', 'now', '1')",
        "DROP TABLE moat_dev_taint",
    ] {
        let error = client.batch_execute(sql).await.expect_err(sql);
        let code = error.as_db_error().map(|e| e.code().code().to_owned());
        assert!(matches!(code.as_deref(), Some("42501")), "{sql}: expected permission denied, got {error:?}");
    }
}
