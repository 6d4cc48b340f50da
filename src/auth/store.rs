//! The SQL the `auth` capability runs, loaded from `sql/auth/`.

crate::db::statements! { "auth":
    FIND_USER_BY_EMAIL => "find_user_by_email",
    INSERT_FAMILY => "insert_family",
    INSERT_REFRESH_TOKEN => "insert_refresh_token",
    FIND_REFRESH_TOKEN => "find_refresh_token",
    LOCK_FAMILY => "lock_family",
    TAG_FAMILY => "tag_family",
    FIND_FAMILY_BY_TAG => "find_family_by_tag",
    FAMILY_HAS_LIVE_TOKEN => "family_has_live_token",
    USE_REFRESH_TOKEN => "use_refresh_token",
    CURRENT_FAMILY_TOKEN => "current_family_token",
    REVOKE_FAMILY => "revoke_family",
    FIND_CLIENT => "find_client",
    GET_USER => "get_user",
}
