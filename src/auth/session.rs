//! Browser sessions: `POST /v1/auth/login`, `/refresh`, `/logout`.
//!
//! Login answers an access token in the body and a refresh token in a cookie
//! (HttpOnly, SameSite=Strict, and `__Host-` + Secure when the public URL is
//! https). Unknown email, wrong password and disabled user get the same
//! status, body and — through a dummy argon2 verification — time. Refresh and
//! logout are authenticated by that cookie alone, so they also refuse any
//! request whose `Origin` is not Moat's own.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::error::AuthError;
use super::jwt::PrincipalKind;
use super::refresh::{self, Policy, Rotation};
use super::scope::Role;
use super::{password, store};
use crate::AppState;
use crate::audit::{self, Event};
use crate::db::tenant::{self, Lookup};
use crate::http::{ApiJson, ClientIp};
use crate::limits::{self, LOGIN_PER_EMAIL, LOGIN_PER_IP, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    email: String,
    password: String,
}

/// Lower-cased and trimmed; `None` if it cannot be an email address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    plausible.then_some(email)
}

fn policy(state: &AppState) -> Policy {
    Policy { token_ttl: state.config.refresh_token_ttl, reuse_grace: state.config.refresh_reuse_grace }
}

pub(super) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, AuthError> {
    if body.password.len() > password::MAX_LEN || body.email.len() > 1024 {
        return Err(AuthError::Invalid("the email or password is too long"));
    }
    let email = normalize_email(&body.email).unwrap_or_else(|| body.email.trim().to_lowercase());
    let ip_key = ip.to_string();
    if let Verdict::Limited { retry_after } =
        limits::hit(&state.db, &[(LOGIN_PER_EMAIL, &email), (LOGIN_PER_IP, &ip_key)]).await?
    {
        return Err(AuthError::RateLimited(retry_after));
    }

    // Look up, then verify with no transaction open: argon2 takes tens of milliseconds.
    let mut client = state.db.get().await?;
    let user = {
        let tx = client.transaction().await?;
        tenant::set_lookup(&tx, Lookup::Email(&email)).await?;
        let statement = tx.prepare_cached(store::FIND_USER_BY_EMAIL).await?;
        let row = tx.query_opt(&statement, &[&email]).await?;
        tx.commit().await?;
        row
    };
    let stored = user.as_ref().map_or_else(|| state.hasher.dummy().to_owned(), |u| u.get("password_hash"));
    let matches = password::verify(body.password, stored).await?;

    let tx = client.transaction().await?;
    let outcome = match &user {
        Some(row) if matches && !row.get::<_, bool>("disabled") => {
            let (id, org): (Uuid, Uuid) = (row.get("id"), row.get("org_id"));
            let role = Role::parse(row.get("role")).ok_or_else(|| anyhow::anyhow!("unknown role in users"))?;
            tenant::set_org(&tx, org).await?;
            let token = refresh::start(&tx, &state.sealer, org, id, policy(&state)).await?;
            let event = Event::new(Some(org), "login_succeeded", format!("user:{id}")).subject(&email).ip(ip);
            audit::record(&tx, &event).await?;
            Some((id, org, role, token))
        }
        _ => {
            let (org, reason) = match &user {
                None => (None, "unknown_email"),
                Some(row) if row.get::<_, bool>("disabled") => (Some(row.get::<_, Uuid>("org_id")), "user_disabled"),
                Some(row) => (Some(row.get::<_, Uuid>("org_id")), "wrong_password"),
            };
            if let Some(org) = org {
                tenant::set_org(&tx, org).await?;
            }
            let event =
                Event::new(org, "login_failed", "anonymous").subject(&email).ip(ip).detail(json!({ "reason": reason }));
            audit::record(&tx, &event).await?;
            None
        }
    };
    tx.commit().await?;
    drop(client);

    let Some((id, org, role, token)) = outcome else {
        limits::fail(&state.db, LOGIN_PER_EMAIL, &email).await?;
        return Err(AuthError::InvalidCredentials);
    };
    limits::succeed(&state.db, LOGIN_PER_EMAIL, &email).await?;
    session_response(&state, id, org, role, &token)
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    check_origin(&state, &headers)?;
    let Some(presented) = refresh_cookie(&state, &headers) else {
        return Ok(cleared(AuthError::NoSession.into_response(), &state));
    };
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    let rotation = refresh::rotate(&tx, &state.sealer, &presented, policy(&state)).await?;
    if let Rotation::Reused { user, org } = &rotation {
        let event = Event::new(Some(*org), "refresh_reuse_detected", format!("user:{user}"))
            .ip(ip)
            .detail(json!({ "action": "session revoked" }));
        audit::record(&tx, &event).await?;
        tracing::warn!(%user, %org, "refresh token reuse detected; the session was revoked");
    }
    tx.commit().await?;
    match rotation {
        Rotation::Rotated { user, org, role, token } => session_response(&state, user, org, role, &token),
        Rotation::Refused | Rotation::Reused { .. } => Ok(cleared(AuthError::NoSession.into_response(), &state)),
    }
}

pub(super) async fn logout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    check_origin(&state, &headers)?;
    if let Some(presented) = refresh_cookie(&state, &headers) {
        let mut client = state.db.get().await?;
        let tx = client.transaction().await?;
        if let Some((org, user)) = refresh::revoke(&tx, &presented).await? {
            audit::record(&tx, &Event::new(Some(org), "logout", format!("user:{user}")).ip(ip)).await?;
        }
        tx.commit().await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cookies\", \"storage\""));
    Ok(cleared(response, &state))
}

/// 200 with a fresh access token, and the refresh token in the cookie.
fn session_response(state: &AppState, user: Uuid, org: Uuid, role: Role, token: &str) -> Result<Response, AuthError> {
    let access = state
        .tokens
        .mint_access(state.config.access_token_ttl, PrincipalKind::User, user, org, &role.scopes())
        .map_err(anyhow::Error::from)?;
    let max_age = state.config.refresh_token_ttl.min(refresh::SESSION_MAX_AGE);
    let cookie =
        build_cookie(state, token, cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(0)));
    let mut response = Json(access).into_response();
    set_cookie(&mut response, &cookie);
    Ok(response)
}

/// The cookie's name: `__Host-` prefixed (which browsers only accept with Secure, Path=/
/// and no Domain) whenever the public URL is https.
fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) { "__Host-moat_refresh" } else { "moat_refresh" }
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.scheme() == "https"
}

fn build_cookie(state: &AppState, value: &str, max_age: cookie::time::Duration) -> Cookie<'static> {
    Cookie::build((cookie_name(state), value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(state))
        .max_age(max_age)
        .build()
}

fn set_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Adds a cookie that deletes the refresh cookie.
fn cleared(mut response: Response, state: &AppState) -> Response {
    set_cookie(&mut response, &build_cookie(state, "", cookie::time::Duration::ZERO));
    response
}

fn refresh_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(state);
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

/// Cookie-authenticated requests must not come from another origin (CSRF):
/// SameSite=Strict already withholds the cookie; this is the second lock.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let ours = state.config.public_url.origin().ascii_serialization();
    match origin.to_str() {
        Ok(origin) if origin == ours => Ok(()),
        _ => Err(AuthError::ForbiddenOrigin),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_normalize_case_insensitively() {
        assert_eq!(normalize_email("  Alice@Example.COM "), Some("alice@example.com".into()));
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b@c"), None);
        assert_eq!(normalize_email("a b@c"), None);
    }
}
