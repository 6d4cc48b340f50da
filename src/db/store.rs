//! The SQL the `db` module runs, loaded from `sql/db/`.

super::statements! { "db":
    PING => "ping",
    HISTORY_EXISTS => "history_exists",
    APPLIED_MIGRATIONS => "applied_migrations",
    CURRENT_ROLE => "current_role",
    OWNED_TABLES => "owned_tables",
    DEV_TAINT_READ => "dev_taint_read",
    DEV_TAINT_MARK => "dev_taint_mark",
    BEGIN_TENANT => "begin_tenant",
    SET_LOCAL => "set_local",
}
