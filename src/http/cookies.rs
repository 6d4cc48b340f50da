//! Reading and building the few cookies Moat sets (refresh session, connect binding).

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// The value of cookie `name` from the request's `Cookie` headers (empty counts as absent).
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, Path=/, the given SameSite, Secure when `secure`.
/// `max_age` 0 deletes the cookie.
pub fn set(name: &str, value: &str, same_site: SameSite, secure: bool, max_age_secs: i64) -> Option<HeaderValue> {
    let cookie = Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}
