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
use cookie::SameSite;
use serde::Deserialize;
use serde_json::json;

use super::error::AuthError;
use super::refresh::{self, Policy, Rotation};
use super::store::{self, FamilyId};
use crate::identity::password;
use crate::identity::{PrincipalKind, Role, SessionRef, normalize_email};
use crate::ids::{OrgId, UserId};

use super::AuthState;
use crate::audit::{self, Event};
use crate::db::tenant::{self, Lookup};
use crate::http::{ApiJson, ClientIp, cookies};
use crate::limits::{self, LOGIN_PER_ACCOUNT, LOGIN_PER_ACCOUNT_IP, LOGIN_PER_IP, Verdict};

/// What the audit log and the limiter record instead of an input that is not
/// a plausible email or client id (it may be a mistyped secret).
pub(super) const MALFORMED: &str = "malformed";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    email: String,
    password: String,
}

fn policy(state: &AuthState) -> Policy {
    Policy { token_ttl: state.config.refresh_token_ttl, reuse_grace: state.config.refresh_reuse_grace }
}

/// Signs a user in: an access token, and the refresh token as an HttpOnly cookie.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginBody, responses(
    (status = 200, description = "Signed in; `Set-Cookie` carries the refresh token", body = crate::identity::jwt::AccessToken),
    (status = 401, description = "Wrong email or password", body = crate::http::openapi::ErrorBody),
    (status = 429, description = "Too many attempts (`Retry-After`)", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn login(
    State(state): State<AuthState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, AuthError> {
    if body.password.len() > password::MAX_LEN || body.email.len() > 1024 {
        return Err(AuthError::Invalid("the email or password is too long"));
    }
    // A malformed email (control characters, no @…) is never looked up, and is
    // recorded as "malformed" — never as typed: it may be a password.
    let email = normalize_email(&body.email);
    let subject = email.as_deref().unwrap_or(MALFORMED);
    let ip_key = limits::ip_key(ip);
    let account_ip = format!("{subject} {ip_key}");
    let stages = [(LOGIN_PER_IP, ip_key.as_str()), (LOGIN_PER_ACCOUNT_IP, &account_ip), (LOGIN_PER_ACCOUNT, subject)];
    if let Verdict::Limited { retry_after } = state.limiter.hit_in_order(&state.db, &stages).await? {
        state.metrics.rate_limited();
        return Err(AuthError::RateLimited(retry_after));
    }

    // No connection is held while argon2 runs (tens of milliseconds).
    let user = match &email {
        Some(email) => {
            let mut client = state.db.get().await?;
            let tx = client.transaction().await?;
            tenant::set_lookup(&tx, Lookup::Email(email)).await?;
            let user = store::find_user_by_email(&tx, email).await?;
            tx.commit().await?;
            user
        }
        None => None,
    };
    let stored = user.as_ref().map_or_else(|| state.hasher.dummy().to_owned(), |u| u.password_hash.clone());
    let matches = state.hasher.verify(body.password, stored).await?;

    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    // Every failure takes the same round trips, whether or not the account exists.
    let org = user.as_ref().map(|u| u.org);
    tenant::set_org(&tx, org.unwrap_or(OrgId::NIL)).await?;
    let outcome = match &user {
        Some(found) if matches && !found.disabled => {
            let (id, org) = (found.id, found.org);
            let role = Role::parse(&found.role).ok_or_else(|| anyhow::anyhow!("unknown role in users"))?;
            let (family, token) = refresh::start(&tx, &state.sealer, org, id, policy(&state)).await?;
            let event = Event::new(Some(org), "login_succeeded", format!("user:{id}")).subject(subject).ip(ip);
            audit::record(&tx, &event).await?;
            Some((id, org, role, family, token))
        }
        _ => {
            let reason = match &user {
                None => "unknown_email",
                Some(found) if found.disabled => "user_disabled",
                Some(_) => "wrong_password",
            };
            let event = Event::new(org, "login_failed", "anonymous")
                .subject(subject)
                .ip(ip)
                .detail(json!({ "reason": reason }));
            audit::record(&tx, &event).await?;
            None
        }
    };
    tx.commit().await?;
    drop(client);

    // A failure was already counted when the attempt started.
    let Some((id, org, role, family, token)) = outcome else {
        return Err(AuthError::InvalidCredentials);
    };
    state.limiter.succeed(&state.db, LOGIN_PER_ACCOUNT_IP, &account_ip).await?;
    session_response(&state, Session { user: id, org, role, family }, &token)
}

/// A new access token for the refresh cookie (rotated; reuse revokes the session).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", responses(
    (status = 200, description = "Rotated; `Set-Cookie` carries the new refresh token", body = crate::identity::jwt::AccessToken),
    (status = 401, description = "No valid session", body = crate::http::openapi::ErrorBody),
    (status = 403, description = "A cross-site request", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn refresh(
    State(state): State<AuthState>,
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
        Rotation::Rotated { user, org, family, role, token } => {
            session_response(&state, Session { user, org, role, family }, &token)
        }
        Rotation::Refused | Rotation::Reused { .. } => Ok(cleared(AuthError::NoSession.into_response(), &state)),
    }
}

/// Ends the session of the refresh cookie (if any) and clears it.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses(
    (status = 204, description = "Signed out"),
    (status = 403, description = "A cross-site request", body = crate::http::openapi::ErrorBody),
))]
pub(super) async fn logout(
    State(state): State<AuthState>,
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

/// A signed-in user's session, as its access tokens name it.
struct Session {
    user: UserId,
    org: OrgId,
    role: Role,
    /// The refresh family: ending it (logout, reuse, password reset) ends the access tokens too.
    family: FamilyId,
}

/// 200 with a fresh access token, and the refresh token in the cookie.
fn session_response(state: &AuthState, session: Session, token: &str) -> Result<Response, AuthError> {
    let Session { user, org, role, family } = session;
    let sid = SessionRef { sid: Some(family), generation: None };
    let access = state
        .tokens
        .mint_access(state.config.access_token_ttl, PrincipalKind::User, user.0, org, &role.scopes(), sid)
        .map_err(anyhow::Error::from)?;
    let max_age = state.config.refresh_token_ttl.min(refresh::SESSION_MAX_AGE);
    let mut response = Json(access).into_response();
    set_cookie(&mut response, state, token, i64::try_from(max_age.as_secs()).unwrap_or(0));
    Ok(response)
}

/// The cookie's name: `__Host-` prefixed (which browsers only accept with Secure, Path=/
/// and no Domain) whenever the public URL is https.
fn cookie_name(state: &AuthState) -> &'static str {
    if secure(state) { "__Host-moat_refresh" } else { "moat_refresh" }
}

fn secure(state: &AuthState) -> bool {
    state.config.public_url.scheme() == "https"
}

fn set_cookie(response: &mut Response, state: &AuthState, value: &str, max_age_secs: i64) {
    if let Some(value) = cookies::set(cookie_name(state), value, SameSite::Strict, secure(state), max_age_secs) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Adds a cookie that deletes the refresh cookie.
fn cleared(mut response: Response, state: &AuthState) -> Response {
    set_cookie(&mut response, state, "", 0);
    response
}

fn refresh_cookie(state: &AuthState, headers: &HeaderMap) -> Option<String> {
    cookies::read(headers, cookie_name(state))
}

/// Cookie-authenticated requests must come from Moat's own origin (CSRF).
/// SameSite=Strict already withholds the cookie from cross-site requests; this
/// is the second lock: an `Origin` other than `MOAT_PUBLIC_URL`'s, or a
/// `Sec-Fetch-Site` other than `same-origin` or `none`, is refused. (Clients
/// that send neither header — not browsers — pass.)
fn check_origin(state: &AuthState, headers: &HeaderMap) -> Result<(), AuthError> {
    let ours = state.config.public_url.origin().ascii_serialization();
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.to_str().ok() != Some(ours.as_str())
    {
        return Err(AuthError::ForbiddenOrigin);
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return Err(AuthError::ForbiddenOrigin);
    }
    Ok(())
}
