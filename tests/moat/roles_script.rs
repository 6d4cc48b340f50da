//! `sql/roles.sql`, run with psql exactly as docs/deployment.md says, gives a
//! database that `moat migrate` (owner), `moat check` (runtime) and
//! `moat runner` (runner) accept — and roles `moat check` would refuse none of.

use crate::harness::{self, Env, Role as DbRole, TestDb};

#[tokio::test]
async fn the_roles_script_sets_up_a_database_every_command_accepts() {
    let db = TestDb::empty().await; // only for the admin connection string
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let (owner, app, runner, name) =
        (format!("own_{suffix}"), format!("app_{suffix}"), format!("run_{suffix}"), format!("moat_{suffix}"));
    let password = "p4ssw0rd-for-the-roles-test";
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/roles.sql");
    let admin = db.url(DbRole::Superuser);
    let status = tokio::process::Command::new("psql")
        .arg(&admin)
        .args(["-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-v", &format!("owner={owner}"), "-v", &format!("owner_password={password}")])
        .args(["-v", &format!("app={app}"), "-v", &format!("app_password={password}")])
        .args(["-v", &format!("runner={runner}"), "-v", &format!("runner_password={password}")])
        .args(["-v", &format!("db={name}"), "-f"])
        .arg(&script)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "psql -f sql/roles.sql failed");
    // The same server, the new database, each role with its password.
    let as_role = |role: &str| {
        let base = db.url(DbRole::App);
        let base = base.replace(&format!("dbname={}", db.name), &format!("dbname={name}"));
        let base = base.replace("user=moat_app", &format!("user={role}"));
        let base = base.split(" password=").next().unwrap().to_owned();
        let rest = db.url(DbRole::App);
        let tail = rest.split(" sslmode=").nth(1).map(|s| format!(" sslmode={s}")).unwrap_or_default();
        format!("{} password={password}{tail}", base.trim_end_matches(&tail))
    };
    let migrate = harness::run(&["migrate"], &Env::default().set("DATABASE_URL", &as_role(&owner))).await;
    assert_eq!(migrate.status.code(), Some(0), "{}", migrate.all_output());
    let check = harness::run(&["check"], &Env::production(&db).set("DATABASE_URL", &as_role(&app))).await;
    assert_eq!(check.status.code(), Some(0), "{}", check.all_output());
    let mut runner_env = Env::default().set("DATABASE_URL", &as_role(&runner));
    runner_env = runner_env.set("MOAT_RUNNER_POLL", "1s");
    let started = harness::runner(&runner_env).await;
    drop(started);
    // The owner cannot serve (it owns the tables: row-level security would not bind it).
    let refused = harness::run(&["check"], &Env::production(&db).set("DATABASE_URL", &as_role(&owner))).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.all_output());
    // Clean up the cluster-wide roles and the database.
    let admin = db.admin().await;
    for statement in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("DROP OWNED BY {owner}, {app}, {runner}"),
        format!("DROP ROLE {app}, {runner}"),
        format!("REVOKE {owner} FROM CURRENT_USER"),
        format!("DROP ROLE {owner}"),
    ] {
        let _ = admin.batch_execute(&statement).await;
    }
}
