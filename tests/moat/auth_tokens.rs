//! Access tokens: HS256 pinned, `kid` chosen among the current and previous
//! keys, `iss`/`aud`/`exp` enforced. Each attack is a token a forger could make.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moat::config::SigningKey;
use moat::identity::{AccessClaims, PrincipalKind, Role};
use uuid::Uuid;

use crate::harness::{Env, Options, TestApp, TestDb, error_code, spawn_app};

fn claims(app: &TestApp, org: Uuid, user: Uuid) -> AccessClaims {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    AccessClaims {
        iss: app.state.tokens.issuer().to_owned(),
        aud: "moat:api".into(),
        sub: user,
        org,
        scope: "users:read".into(),
        iat: now,
        exp: now + 300,
        jti: Uuid::new_v4(),
        kind: PrincipalKind::User,
        sid: None,
        secret_gen: None,
    }
}

fn sign(key: &SigningKey, alg: Algorithm, kid: Option<String>, claims: &AccessClaims) -> String {
    let mut header = Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
}

async fn status_of(app: &TestApp, token: &str) -> u16 {
    let response = app.get_as(token, "/v1/me").await;
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(error_code(response).await, "invalid_token");
    }
    status
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db);
    let current = SigningKey::parse(env.get("MOAT_SIGNING_KEY").unwrap()).unwrap();
    let app = spawn_app(Options { env: Some(env), db: Some(db), ..Options::default() }).await;
    let (org, user, issued) = app.signed_in(Role::Admin).await;
    assert_eq!(status_of(&app, &issued).await, 200, "a token Moat issued");
    let good = claims(&app, org, user);
    let kid = Some(current.key_id());
    assert_eq!(status_of(&app, &sign(&current, Algorithm::HS256, kid.clone(), &good)).await, 200, "control");

    let mut cases: Vec<(&str, String)> = Vec::new();
    let stranger = SigningKey::ephemeral();
    cases.push(("unknown key", sign(&stranger, Algorithm::HS256, Some(stranger.key_id()), &good)));
    cases.push(("unknown key claiming the current kid", sign(&stranger, Algorithm::HS256, kid.clone(), &good)));
    cases.push(("no kid", sign(&current, Algorithm::HS256, None, &good)));
    cases.push(("HS512 with the right key", sign(&current, Algorithm::HS512, kid.clone(), &good)));
    let expired = AccessClaims { iat: good.iat - 900, exp: good.iat - 60, ..good.clone() };
    cases.push(("expired", sign(&current, Algorithm::HS256, kid.clone(), &expired)));
    let ws = AccessClaims { aud: "moat:ws".into(), ..good.clone() };
    cases.push(("wrong audience", sign(&current, Algorithm::HS256, kid.clone(), &ws)));
    let foreign = AccessClaims { iss: "https://evil.example".into(), ..good.clone() };
    cases.push(("wrong issuer", sign(&current, Algorithm::HS256, kid.clone(), &foreign)));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, current.key_id()));
        cases.push(("alg none", format!("{header}.{payload}.")));
    }
    // A valid token whose payload was edited (escalated scope) keeps a now-wrong signature.
    let valid = sign(&current, Algorithm::HS256, kid.clone(), &good);
    let parts: Vec<&str> = valid.split('.').collect();
    let escalated = AccessClaims { scope: "users:read audit:read metrics:read".into(), ..good.clone() };
    let edited = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&escalated).unwrap());
    cases.push(("edited payload", format!("{}.{edited}.{}", parts[0], parts[2])));
    cases.push(("garbage", "not.a.jwt".into()));
    cases.push(("oversized", format!("{valid}{}", "A".repeat(5000))));

    for (label, token) in cases {
        assert_eq!(status_of(&app, &token).await, 401, "{label}");
    }
}

/// Zero-downtime rotation: tokens signed with a key now listed in
/// MOAT_SIGNING_KEYS_PREVIOUS still verify; new tokens use the new key.
#[tokio::test]
async fn tokens_signed_with_a_previous_key_verify_after_rotation() {
    let db = TestDb::migrated().await;
    let old_env = Env::production(&db);
    let old_key = SigningKey::parse(old_env.get("MOAT_SIGNING_KEY").unwrap()).unwrap();
    let new_raw = moat::config::keys::generate_signing();
    let new_key = SigningKey::parse(&new_raw).unwrap();
    let rotated_env = old_env
        .clone()
        .set("MOAT_SIGNING_KEY", &new_raw)
        .set("MOAT_SIGNING_KEYS_PREVIOUS", old_env.get("MOAT_SIGNING_KEY").unwrap());
    let rotated = spawn_app(Options { env: Some(rotated_env.clone()), db: Some(db), ..Options::default() }).await;
    let (org, user, fresh) = rotated.signed_in(Role::Admin).await;

    let old_token = sign(&old_key, Algorithm::HS256, Some(old_key.key_id()), &claims(&rotated, org, user));
    assert_eq!(status_of(&rotated, &old_token).await, 200, "old key, listed as previous");
    let header = jsonwebtoken::decode_header(&fresh).unwrap();
    assert_eq!(header.kid, Some(new_key.key_id()), "new tokens must be signed with the current key");
    assert_eq!(header.alg, Algorithm::HS256);

    // Once the previous key is dropped, its tokens stop verifying.
    let db = TestDb::migrated().await;
    let without =
        rotated_env.unset("MOAT_SIGNING_KEYS_PREVIOUS").set("DATABASE_URL", &db.url(crate::harness::Role::App));
    let app = spawn_app(Options { env: Some(without), db: Some(db), ..Options::default() }).await;
    let (org, user, _) = app.signed_in(Role::Admin).await;
    let old_token = sign(&old_key, Algorithm::HS256, Some(old_key.key_id()), &claims(&app, org, user));
    assert_eq!(status_of(&app, &old_token).await, 401, "old key, no longer listed");
}

#[tokio::test]
async fn a_weak_previous_key_is_refused_at_startup() {
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set(
        "MOAT_SIGNING_KEYS_PREVIOUS",
        &format!("{},change-me-in-production", moat::config::keys::generate_signing()),
    );
    let out = crate::harness::run(&["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.all_output());
    assert!(
        out.stderr.contains("[MOAT_SIGNING_KEYS_PREVIOUS (entry 2)] is a known default or placeholder value"),
        "{}",
        out.stderr
    );
}

/// Disabling a user takes effect at once, not when the access token expires.
#[tokio::test]
async fn a_disabled_users_access_token_stops_working() {
    let app = spawn_app(Options::default()).await;
    let org = app.create_org("Acme").await;
    let (_, password) = app.create_user(org, "leaver@example.com", Role::Member).await;
    let body: serde_json::Value = app.login("leaver@example.com", &password).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status_of(&app, &token).await, 200);
    moat::admin::disable_user(&app.state.db, "Leaver@Example.com").await.unwrap();
    assert_eq!(status_of(&app, &token).await, 401);
}
