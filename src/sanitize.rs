//! The credential sanitizer: every string an agent emits passes through it
//! before it is stored or streamed, so a secret an agent read (from a tool
//! result, a file, an error message) does not land in the event log.
//!
//! It redacts, as `[REDACTED:<kind>]`, at least the eleven kinds of the seed
//! (API keys, bearer tokens, database URLs with passwords, AWS access keys and
//! secrets, PEM private keys, OAuth tokens, GitHub tokens, Slack tokens,
//! `password=`-style assignments, Stripe keys, generic high-entropy secrets),
//! plus JWTs and Moat's own client secrets. Ordinary prose, UUIDs and hex
//! digests are left alone (tested).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

struct Rule {
    kind: &'static str,
    pattern: Regex,
    /// Keep capture group 1 (e.g. `password=`) and redact the rest of the match.
    keep_prefix: bool,
}

fn rule(kind: &'static str, pattern: &str, keep_prefix: bool) -> Rule {
    #[allow(clippy::expect_used)] // constant patterns, each exercised by a test
    let pattern = Regex::new(pattern).expect("sanitizer pattern");
    Rule { kind, pattern, keep_prefix }
}

/// Compiled once per process: pure, constant data (docs/caches.md: per-instance).
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule("private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----", false),
        // user:password@ in any URL (an empty user, as in redis://:pw@host, and passwords containing @ too).
        rule("database_url", r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s/]+@", true),
        rule("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}", false),
        rule("bearer_token", r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{12,}", true),
        rule("basic_auth", r"(?i)\b(basic\s+)[A-Za-z0-9+/]{8,}={0,2}", true),
        rule("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", false),
        rule(
            "aws_secret_key",
            r#"(?i)(aws[_\- ]?(?:secret[_\- ]?(?:access[_\- ]?)?key|sk)["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{40}"#,
            true,
        ),
        rule("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b", false),
        rule("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", false),
        rule("slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+", false),
        rule("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}\b", false),
        rule("oauth_token", r"\bya29\.[0-9A-Za-z_-]{20,}", false),
        rule("oauth_token", r#"(?i)("?(?:access|refresh|id)_token"?\s*[:=]\s*"?)[A-Za-z0-9._~+/=-]{8,}"#, true),
        rule("api_key", r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35})", false),
        // NAME_API_KEY=…, "api_key": "…", x-api-key: … (environment dumps have prefixes).
        rule("api_key", r#"(?i)((?:[A-Za-z0-9]+[_-])*(?:api[_-]?key|apikey)"?\s*[:=]\s*"?)[^\s"',;]{8,}"#, true),
        rule("moat_client_secret", r"\bmoat_cs_[A-Za-z0-9_-]{20,}", false),
        rule(
            "password",
            r#"(?i)((?:[A-Za-z0-9]+[_-])*(?:password|passwd|passphrase)"?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;&]+)"#,
            true,
        ),
        // NAME_SECRET=… / NAME_SECRET_KEY=… and "…secret…": "…" (not "the secret: it's…").
        rule(
            "password",
            r#"(?i)((?:[A-Za-z0-9]+[_-])*secret(?:[_-]key)?\s*=\s*|"[A-Za-z0-9_-]*secret[A-Za-z0-9_-]*"\s*:\s*)("[^"]*"|'[^']*'|[^\s,;&]+)"#,
            true,
        ),
        // Generic high-entropy strings: long, mixed-class, random-looking (checked below).
        rule("secret", r"[A-Za-z0-9+/_=-]{32,}", false),
    ]
});

/// Bits per character; random base64 is near 6, English words and hex far lower.
fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts.iter().filter(|c| **c > 0).map(|c| *c as f64 / len).map(|p| -p * p.log2()).sum()
}

fn looks_random(candidate: &str) -> bool {
    let has = |f: fn(&u8) -> bool| candidate.as_bytes().iter().any(f);
    let classes = [has(u8::is_ascii_lowercase), has(u8::is_ascii_uppercase), has(u8::is_ascii_digit)]
        .iter()
        .filter(|c| **c)
        .count();
    classes >= 3 && entropy(candidate) >= 4.2
}

/// Redacts every secret found in `text`.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for rule in RULES.iter() {
        let replaced = rule.pattern.replace_all(&out, |caps: &Captures<'_>| {
            let whole = &caps[0];
            if rule.kind == "secret" && !looks_random(whole) {
                return whole.to_owned();
            }
            let prefix = if rule.keep_prefix { caps.get(1).map_or("", |m| m.as_str()) } else { "" };
            let suffix = if rule.kind == "database_url" { "@" } else { "" };
            format!("{prefix}[REDACTED:{}]{suffix}", rule.kind)
        });
        if let Cow::Owned(changed) = replaced {
            out = Cow::Owned(changed);
        }
    }
    out
}

/// Object keys whose value is a secret whatever it looks like.
static SENSITIVE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, exercised by a test
    Regex::new(
        r"(?i)^(?:.*[_-])?(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|authorization|credentials?|private[_-]?key|access[_-]?key|client[_-]?secret|cookie)$",
    )
    .expect("sensitive key pattern")
});

/// Whether `value` can be stored as PostgreSQL `jsonb`, which refuses the
/// NUL character (`\u0000`) in any string or key.
pub fn storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(map) => map.iter().all(|(key, item)| !key.contains('\0') && storable(item)),
        _ => true,
    }
}

/// Sanitizes every string in a JSON value, in place; the value of a key that
/// names a secret (`password`, `api_key`, `access_token`…) is redacted whole.
/// NUL characters (which `jsonb` refuses) become U+FFFD, in keys too.
pub fn sanitize_value(value: &mut Value) {
    if let Value::Object(map) = value
        && map.keys().any(|key| key.contains('\0'))
    {
        *map = std::mem::take(map).into_iter().map(|(key, item)| (key.replace('\0', "\u{FFFD}"), item)).collect();
    }
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = sanitize(s) {
                *s = clean;
            }
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize_value),
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let secret_scalar = matches!(item, Value::String(s) if !s.is_empty()) || item.is_number();
                if secret_scalar && SENSITIVE_KEY.is_match(key) {
                    *item = Value::String("[REDACTED:sensitive_field]".into());
                } else {
                    sanitize_value(item);
                }
            }
        }
        _ => {}
    }
}
