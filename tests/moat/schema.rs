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
    let statements = moat::app::statements();
    assert!(statements.len() > 30, "statements missing from moat::app::statements()");
    for (name, sql) in statements {
        if let Err(e) = client.prepare(sql).await {
            panic!("sql/{name}.sql does not prepare: {e:?}");
        }
    }
}

/// Every file under `sql/<dir>/` is registered (so the test above prepares it),
/// exactly once, under its own name and with its own text; `sql/roles.sql` is
/// the operator's script, not a statement.
#[test]
fn every_sql_file_is_registered() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<(String, String)> = walkdir::WalkDir::new(&root)
        .min_depth(2)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .map(|e| {
            let name = e.path().strip_prefix(&root).unwrap().with_extension("").to_string_lossy().replace('\\', "/");
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    files.sort();
    let mut registered: Vec<(String, String)> =
        moat::app::statements().into_iter().map(|(name, sql)| (name.to_owned(), sql.to_owned())).collect();
    registered.sort();
    let names = |list: &[(String, String)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&registered), names(&files), "sql/ files and registered statements differ");
    assert_eq!(registered, files, "a registered statement is not its file's text");
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

/// Every table of the schema is listed, with its bound or purge, in
/// docs/operations.md ("Bounded tables and the purge"): a new table cannot
/// grow unnoticed.
#[tokio::test]
async fn every_table_has_a_documented_bound_or_purge() {
    let db = TestDb::migrated().await;
    let admin = db.admin().await;
    let rows = admin.query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'", &[]).await.unwrap();
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).unwrap();
    let section = doc.split("## Bounded tables and the purge").nth(1).expect("the section");
    let listed: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let missing: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|table| {
            !listed.iter().any(|line| line.split('|').nth(1).is_some_and(|c| c.contains(&format!("`{table}`"))))
        })
        .collect();
    assert!(missing.is_empty(), "tables without a documented bound or purge: {missing:?}");
    // Every purge step has its table's row.
    for (step, _) in moat::maintenance::steps() {
        assert!(section.contains(&format!("(`{step}`)")), "purge step {step} is not documented");
    }
}
