//! The SQL the `db` capability runs, loaded from `sql/db/`.

pub const PING: &str = include_str!("../../sql/db/ping.sql");
pub const HISTORY_EXISTS: &str = include_str!("../../sql/db/history_exists.sql");
pub const APPLIED_MIGRATIONS: &str = include_str!("../../sql/db/applied_migrations.sql");
pub const CURRENT_ROLE: &str = include_str!("../../sql/db/current_role.sql");
pub const OWNED_TABLES: &str = include_str!("../../sql/db/owned_tables.sql");
pub const DEV_TAINT_READ: &str = include_str!("../../sql/db/dev_taint_read.sql");
pub const DEV_TAINT_MARK: &str = include_str!("../../sql/db/dev_taint_mark.sql");
pub const BEGIN_TENANT: &str = include_str!("../../sql/db/begin_tenant.sql");
pub const SET_LOCAL: &str = include_str!("../../sql/db/set_local.sql");

/// Every statement, so one test can `prepare` them all against a migrated database.
pub const ALL: &[(&str, &str)] = &[
    ("ping", PING),
    ("history_exists", HISTORY_EXISTS),
    ("applied_migrations", APPLIED_MIGRATIONS),
    ("current_role", CURRENT_ROLE),
    ("owned_tables", OWNED_TABLES),
    ("dev_taint_read", DEV_TAINT_READ),
    ("dev_taint_mark", DEV_TAINT_MARK),
    ("begin_tenant", BEGIN_TENANT),
    ("set_local", SET_LOCAL),
];
