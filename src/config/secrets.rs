//! The two keys as configured: read from `NAME` or `NAME_FILE`, judged by
//! [`super::keys`], and either accepted, relaxed in development (loudly), or
//! turned into a [`Problem`] with the command that fixes it.

use super::keys::{self, EncryptionKey, KeyFlaw, SigningKey};
use super::vars::Vars;
use crate::devmode::DevMode;
use crate::problem::Problem;

/// Reads a secret from `NAME` or the file named by `NAME_FILE` (only one may be set).
/// `Err` means a problem was recorded; `Ok(None)` that neither is set.
pub(super) fn secret(vars: &Vars, name: &str, problems: &mut Vec<Problem>) -> Result<Option<String>, ()> {
    let file_var = format!("{name}_FILE");
    match (vars.get(name), vars.get(&file_var)) {
        (Some(_), Some(_)) => {
            problems.push(
                Problem::new(
                    name,
                    format!("is set both directly and through {file_var}"),
                    "Moat will not guess which of two values you meant.",
                )
                .fix(format!("unset {name}   # or unset {file_var}")),
            );
            Err(())
        }
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(content) => Ok(Some(content.trim().to_owned()).filter(|c| !c.is_empty())),
            Err(e) => {
                problems.push(
                    Problem::new(
                        file_var.as_str(),
                        format!("names a file Moat cannot read ({})", e.kind()),
                        "The key it should hold is unavailable.",
                    )
                    .fix(format!("check that {file_var} points at a readable file")),
                );
                Err(())
            }
        },
        (None, None) => Ok(None),
    }
}

pub(super) fn signing_key(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Option<SigningKey> {
    let (flaw, usable) = match secret(vars, "MOAT_SIGNING_KEY", problems).ok()? {
        None => (KeyFlaw::Missing, None),
        Some(raw) => match SigningKey::parse(&raw) {
            Ok(key) => return Some(key),
            Err(rejected) => rejected,
        },
    };
    relax_key("MOAT_SIGNING_KEY", flaw, usable, SigningKey::ephemeral, dev, problems)
}

pub(super) fn encryption_key(
    vars: &Vars,
    signing: Option<&SigningKey>,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<EncryptionKey> {
    let (flaw, usable) = match secret(vars, "MOAT_ENCRYPTION_KEY", problems).ok()? {
        None => (KeyFlaw::Missing, None),
        Some(raw) => match EncryptionKey::parse(&raw, signing) {
            Ok(key) => return Some(key),
            Err(rejected) => rejected,
        },
    };
    relax_key("MOAT_ENCRYPTION_KEY", flaw, usable, EncryptionKey::ephemeral, dev, problems)
}

/// In development a flawed key is used anyway (or replaced by an ephemeral one), loudly;
/// in production it is a problem with its fix.
fn relax_key<K>(
    name: &str,
    flaw: KeyFlaw,
    usable: Option<K>,
    ephemeral: fn() -> K,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<K> {
    if let Some(dev) = dev {
        return Some(match usable {
            Some(key) => {
                dev.bypass("startup", format!("{name} {flaw}; using it anyway"));
                key
            }
            None => {
                dev.bypass("startup", format!("{name} {flaw}; using an ephemeral key"));
                ephemeral()
            }
        });
    }
    problems.push(key_problem(name, &flaw));
    None
}

fn key_problem(name: &str, flaw: &KeyFlaw) -> Problem {
    let (why, kind, bytes) = if name == "MOAT_SIGNING_KEY" {
        (
            "Every access and WebSocket token is signed with this key: whoever knows or guesses it can forge a token for any user, organization and scope.",
            "signing",
            keys::SIGNING_KEY_GENERATED_BYTES,
        )
    } else if *flaw == KeyFlaw::SameAsSigningKey {
        (
            "One leaked key would then both forge tokens and decrypt every stored credential; each key must be independent.",
            "encryption",
            keys::ENCRYPTION_KEY_BYTES,
        )
    } else {
        (
            "OAuth tokens and other secrets are encrypted at rest with this key: without a strong key of its own, a database leak exposes every integration credential.",
            "encryption",
            keys::ENCRYPTION_KEY_BYTES,
        )
    };
    Problem::new(name, flaw.to_string(), why)
        .fix(format!("export {name}=\"$(moat keygen {kind})\""))
        .fix(format!("or: export {name}=\"$(openssl rand -base64 {bytes})\""))
}

/// `MOAT_SIGNING_KEYS_PREVIOUS`: comma-separated keys still accepted for
/// verification during a rotation, each judged like the current key.
pub(super) fn previous_signing_keys(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Vec<SigningKey> {
    previous_keys(vars, "MOAT_SIGNING_KEYS_PREVIOUS", SigningKey::parse, dev, problems)
}

/// `MOAT_ENCRYPTION_KEYS_PREVIOUS`: keys that still open values sealed before a
/// rotation (never used to seal), each judged like the current key.
pub(super) fn previous_encryption_keys(
    vars: &Vars,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Vec<EncryptionKey> {
    previous_keys(vars, "MOAT_ENCRYPTION_KEYS_PREVIOUS", |raw| EncryptionKey::parse(raw, None), dev, problems)
}

fn previous_keys<K>(
    vars: &Vars,
    name: &str,
    parse: impl Fn(&str) -> Result<K, (KeyFlaw, Option<K>)>,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Vec<K> {
    let Ok(Some(raw)) = secret(vars, name, problems) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (i, item) in raw.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        match parse(item) {
            Ok(key) => keys.push(key),
            Err((flaw, usable)) => {
                let label = format!("{name} (entry {})", i + 1);
                match (dev, usable) {
                    (Some(dev), Some(key)) => {
                        dev.bypass("startup", format!("{label} {flaw}; accepting it anyway"));
                        keys.push(key);
                    }
                    _ => problems.push(
                        Problem::new(
                            label,
                            flaw.to_string(),
                            "A previous key is still trusted: a weak one undermines everything it protects until it is removed.",
                        )
                        .fix(format!("remove that entry from {name}")),
                    ),
                }
            }
        }
    }
    keys
}
