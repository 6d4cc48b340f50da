//! The SQL the `integrations` capability runs, loaded from `sql/integrations/`.

macro_rules! statements {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(pub const $name: &str = include_str!(concat!("../../sql/integrations/", $file, ".sql"));)*
        /// Every statement, so one test can `prepare` them all against a migrated database.
        pub const STATEMENTS: &[(&str, &str)] = &[$((concat!("integrations/", $file), $name)),*];
    };
}

statements! {
    READ_FAST => "read_fast",
    SET_LOCK_TIMEOUT => "set_lock_timeout",
    LOCK_INTEGRATION => "lock_integration",
    TRY_LOCK_INTEGRATION => "try_lock_integration",
    READ_FOR_REFRESH => "read_for_refresh",
    STORE_REFRESHED => "store_refreshed",
    MARK_NEEDS_REAUTH => "mark_needs_reauth",
    SET_COOLDOWN => "set_cooldown",
    INSERT_INTEGRATION => "insert_integration",
    FIND_ACCOUNT => "find_account",
    RECONNECT => "reconnect",
    LIST_INTEGRATIONS => "list_integrations",
    GET_INTEGRATION => "get_integration",
    DELETE_INTEGRATION => "delete_integration",
    INSERT_STATE => "insert_state",
    CONSUME_STATE => "consume_state",
    ORG_IDS => "org_ids",
    STALE_IDS => "stale_ids",
    COUNT_STALE => "count_stale",
    READ_FOR_REKEY => "read_for_rekey",
    STORE_REKEYED => "store_rekeyed",
}
