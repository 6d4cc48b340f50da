//! Refresh-token families: random tokens, stored as SHA-256, single-use.
//!
//! A login starts a family. Each refresh marks the presented token used and
//! issues the next one. Presenting a used token again means it was copied:
//! the whole family is revoked (reuse detection) — except within the grace
//! window right after a rotation, when the duplicate (a second browser tab
//! racing the first) is answered with the family's current token, which is
//! kept sealed (AES-256-GCM-SIV) for exactly that window. Concurrent
//! refreshes of one token serialize on its row lock.
//!
//! A token is `base64url(tag ‖ 32 random bytes)`, where the 16-byte tag is
//! the family's (random, and found nowhere but in its refresh tokens; the
//! database keeps its SHA-256). Used tokens are purged once past the longest
//! grace window, so a family keeps one or two rows however often it
//! refreshes; a token whose row is gone still names its family by the tag,
//! so reusing any earlier token of a session still revokes it. (Tokens
//! issued before tags existed keep their rows until they expire.)

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Transaction;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, FamilyId};
use crate::crypto::Sealer;
use crate::db::tenant::{self, Lookup};
use crate::identity::Role;
use crate::ids::{OrgId, UserId};

/// A session ends this long after login, however often it is refreshed.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest refresh token accepted (Moat's are 43 characters).
const MAX_TOKEN_LEN: usize = 256;

/// Lifetimes that govern rotation.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub token_ttl: Duration,
    pub reuse_grace: Duration,
}

/// What a presented refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// A valid token: here is the user and the token to send back.
    Rotated { user: UserId, org: OrgId, family: FamilyId, role: Role, token: String },
    /// Unknown, expired, revoked, or its user is disabled.
    Refused,
    /// A rotated token presented again outside the grace window: the family is now revoked.
    Reused { user: UserId, org: OrgId },
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Bytes of a family's tag.
const TAG_LEN: usize = 16;

fn new_tag() -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    crate::identity::password::fill_random(&mut tag);
    tag
}

/// What the database keeps of a tag: its SHA-256 (a reader of the table or a
/// backup cannot build a token of the family from it).
fn tag_hash(tag: &[u8; TAG_LEN]) -> Vec<u8> {
    Sha256::digest(tag).to_vec()
}

/// A new token of the family tagged `tag`.
fn new_token(tag: &[u8; TAG_LEN]) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; TAG_LEN + 32];
    bytes[..TAG_LEN].copy_from_slice(tag);
    crate::identity::password::fill_random(&mut bytes[TAG_LEN..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The family tag a presented token begins with (`None` for tokens issued before tags, or garbage).
fn tag_of(presented: &str) -> Option<[u8; TAG_LEN]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented).ok()?;
    (bytes.len() == TAG_LEN + 32).then(|| bytes[..TAG_LEN].try_into().ok()).flatten()
}

fn aad(id: Uuid) -> Vec<u8> {
    format!("refresh_tokens.sealed_token:{id}").into_bytes()
}

/// Starts a family for `user` (within a transaction set to `org`); returns its id and first token.
pub async fn start(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    org: OrgId,
    user: UserId,
    policy: Policy,
) -> anyhow::Result<(FamilyId, String)> {
    let tag = new_tag();
    let (id, expires_at) = store::insert_family(tx, org, user, SESSION_MAX_AGE.as_secs_f64(), &tag_hash(&tag)).await?;
    Ok((id, issue(tx, sealer, Family { id, org, tag }, expires_at, policy).await?))
}

/// A family, as a new token needs it.
struct Family {
    id: FamilyId,
    org: OrgId,
    tag: [u8; TAG_LEN],
}

async fn issue(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    family: Family,
    family_expires: OffsetDateTime,
    policy: Policy,
) -> anyhow::Result<String> {
    let Family { id: family, org, tag } = family;
    let (id, token) = (Uuid::new_v4(), new_token(&tag));
    let sealed = sealer.seal(token.as_bytes(), &aad(id)).context("sealing the refresh token")?;
    let hashed = hash(&token);
    let ttl_secs = policy.token_ttl.as_secs_f64();
    let new = store::NewToken { id, family, org, token_hash: &hashed, ttl_secs, family_expires, sealed: &sealed };
    store::insert_refresh_token(tx, &new).await?;
    Ok(token)
}

/// Rotates `presented`, detecting reuse. Commit `tx` whatever the outcome: a
/// detected reuse revokes the family in it.
pub async fn rotate(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    presented: &str,
    policy: Policy,
) -> anyhow::Result<Rotation> {
    if presented.is_empty() || presented.len() > MAX_TOKEN_LEN {
        return Ok(Rotation::Refused);
    }
    let hashed = hash(presented);
    tenant::set_lookup(tx, Lookup::Refresh(&hashed)).await?;
    let grace = policy.reuse_grace.as_secs_f64();
    let Some(token) = store::find_refresh_token(tx, &hashed, grace).await? else {
        return reused_by_tag(tx, presented).await;
    };
    let (family, org) = (token.family, token.org);
    tenant::set_org(tx, org).await?;
    let Some(fam) = store::lock_family(tx, org, family).await? else {
        return Ok(Rotation::Refused);
    };
    let user = fam.user;
    if fam.user_disabled {
        store::revoke_family(tx, org, family, "user_disabled").await?;
        return Ok(Rotation::Refused);
    }
    let role = Role::parse(&fam.role).context("unknown role in users")?;
    if fam.revoked || fam.expired || token.expired {
        return Ok(Rotation::Refused);
    }
    if !token.used {
        store::use_refresh_token(tx, org, token.id).await?;
        let tag = family_tag(tx, family, org, presented, fam.tag_hash).await?;
        let token = issue(tx, sealer, Family { id: family, org, tag }, fam.expires_at, policy).await?;
        return Ok(Rotation::Rotated { user, org, family, role, token });
    }
    if token.in_grace
        && let Some(current) = current_token(tx, sealer, family, org, grace).await?
    {
        return Ok(Rotation::Rotated { user, org, family, role, token: current });
    }
    store::revoke_family(tx, org, family, "reuse").await?;
    Ok(Rotation::Reused { user, org })
}

/// The family's tag, which the presented (current) token begins with. A
/// current token without one (issued before tags existed, or by an instance
/// of the previous release during a rolling upgrade) gets the family a new
/// tag, and the family's older rows are kept for reuse detection.
async fn family_tag(
    tx: &Transaction<'_>,
    family: FamilyId,
    org: OrgId,
    presented: &str,
    stored: Option<Vec<u8>>,
) -> anyhow::Result<[u8; TAG_LEN]> {
    match (tag_of(presented), stored) {
        (Some(tag), Some(stored)) if tag_hash(&tag) == stored => Ok(tag),
        (Some(_), Some(_)) => anyhow::bail!("a family's current refresh token carries another family's tag"),
        (_, _) => {
            let tag = new_tag();
            store::tag_family(tx, org, family, &tag_hash(&tag)).await?;
            Ok(tag)
        }
    }
}

/// A presented token with no row: if its tag names a family that still has a
/// live session, it is an earlier token of that session presented again —
/// reuse, so the family is revoked. Otherwise (garbage, a session that ended
/// by itself) it is simply refused.
async fn reused_by_tag(tx: &Transaction<'_>, presented: &str) -> anyhow::Result<Rotation> {
    let Some((family, org)) = family_by_tag(tx, presented).await? else {
        return Ok(Rotation::Refused);
    };
    let Some(fam) = store::lock_family(tx, org, family).await? else {
        return Ok(Rotation::Refused);
    };
    if fam.revoked || fam.expired {
        return Ok(Rotation::Refused);
    }
    if !store::family_has_live_token(tx, org, family).await? {
        return Ok(Rotation::Refused);
    }
    store::revoke_family(tx, org, family, "reuse").await?;
    Ok(Rotation::Reused { user: fam.user, org })
}

/// The family (and organization, now set on `tx`) a presented token's tag names.
async fn family_by_tag(tx: &Transaction<'_>, presented: &str) -> anyhow::Result<Option<(FamilyId, OrgId)>> {
    let Some(tag) = tag_of(presented) else {
        return Ok(None);
    };
    let hashed: [u8; 32] = Sha256::digest(tag).into();
    tenant::set_lookup(tx, Lookup::FamilyTag(&hashed)).await?;
    let Some((family, org)) = store::find_family_by_tag(tx, &hashed).await? else {
        return Ok(None);
    };
    tenant::set_org(tx, org).await?;
    Ok(Some((family, org)))
}

/// The family's current token, if it was issued within the grace window.
async fn current_token(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    family: FamilyId,
    org: OrgId,
    grace: f64,
) -> anyhow::Result<Option<String>> {
    let Some((id, sealed)) = store::current_family_token(tx, org, family, grace).await? else {
        return Ok(None);
    };
    let plain = sealer.open(&sealed, &aad(id)).context("opening the sealed refresh token")?;
    Ok(Some(String::from_utf8(plain).context("sealed refresh token is not text")?))
}

/// Revokes the family of `presented` (logout). Returns its org and user, if the token was known.
pub async fn revoke(tx: &Transaction<'_>, presented: &str) -> anyhow::Result<Option<(OrgId, UserId)>> {
    if presented.is_empty() || presented.len() > MAX_TOKEN_LEN {
        return Ok(None);
    }
    let hashed = hash(presented);
    tenant::set_lookup(tx, Lookup::Refresh(&hashed)).await?;
    let (family, org) = match store::find_refresh_token(tx, &hashed, 0.0).await? {
        Some(token) => {
            tenant::set_org(tx, token.org).await?;
            (token.family, token.org)
        }
        // An earlier token of the session (its row purged): still ends the session.
        None => match family_by_tag(tx, presented).await? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let user = store::lock_family(tx, org, family).await?.map(|fam| fam.user);
    store::revoke_family(tx, org, family, "logout").await?;
    Ok(user.map(|user| (org, user)))
}
