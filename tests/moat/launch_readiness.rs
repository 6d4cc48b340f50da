//! The launch-readiness checklist as CI guards (after seed 001): no plaintext
//! secrets in migrations or SQL, no hard-coded key fallbacks, no all-interfaces
//! default bind, no unclassified in-process cross-request cache. Each rule is
//! proven to fire on a planted example, then run on this repository.

use std::path::{Path, PathBuf};

use regex::Regex;
use walkdir::WalkDir;

#[derive(Debug)]
struct Finding {
    rule: &'static str,
    file: String,
    detail: String,
}

/// Runs every rule over the tree at `root`.
fn scan(root: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let caches = classified_caches(root);
    for entry in WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some("target" | ".git" | ".moat" | "node_modules")))
    {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut found = |rule, detail: String| findings.push(Finding { rule, file: relative.clone(), detail });
        if (relative.starts_with("migrations/") || relative.starts_with("sql/")) && relative.ends_with(".sql") {
            seed_secrets(&text, &mut found);
        }
        if relative.starts_with("src/") && relative.ends_with(".rs") {
            let code = without_comment_lines(&text);
            key_fallbacks(&code, &mut found);
            all_interfaces(&code, &mut found);
            for (name, detail) in caches_in(&code) {
                match caches.iter().find(|(n, f, _)| *n == name && *f == relative) {
                    Some((_, _, class)) if class == "per-instance" => {}
                    Some((_, _, class)) => found(
                        "unclassified-cache",
                        format!("{name}: classified {class}: move it to Postgres or remove it"),
                    ),
                    None => found("unclassified-cache", format!("{name} ({detail}) is not listed in docs/caches.md")),
                }
            }
        }
        if relative == ".env.example" {
            all_interfaces(&text, &mut found);
        }
    }
    findings
}

fn rx(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

fn seed_secrets(sql: &str, found: &mut impl FnMut(&'static str, String)) {
    let patterns = [
        (r"\$argon2(id|i|d)?\$v=\d+\$m=\d+", "an argon2 password hash"),
        (r"\$2[abxy]?\$\d{2}\$", "a bcrypt password hash"),
        (r"\$(pbkdf2|scrypt|6|5)[$-]", "a crypt-style password hash"),
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
        (r"(?i)\bPASSWORD\s+'", "a role password"),
    ];
    for (pattern, what) in patterns {
        if rx(pattern).is_match(sql) {
            found("seed-secret", what.to_owned());
        }
    }
    // A long opaque literal with digits and letters (a key, token or hash), not a
    // long identifier such as 'idle_in_transaction_session_timeout'.
    for literal in rx(r"'([A-Za-z0-9+/=_-]{32,})'").captures_iter(sql) {
        let text = &literal[1];
        if text.bytes().any(|b| b.is_ascii_digit()) && text.bytes().any(|b| b.is_ascii_alphabetic()) {
            found("seed-secret", "a long opaque literal (key, token or hash)".to_owned());
        }
    }
    // An INSERT into a secret column is a seed only when it writes a literal there;
    // parameterized values ($1, $2…) carry what the application hashed or sealed.
    let insert = rx(r"(?is)insert\s+into\s+[\w.]+\s*\(([^)]*)\)([^;]*)");
    let secret_column =
        rx(r"(?i)password|passwd|secret|api_key|private_key|_hash\b|\btoken\b|access_token|refresh_token");
    for capture in insert.captures_iter(sql) {
        let columns: Vec<&str> = capture[1].split(',').map(str::trim).collect();
        let values = values_tuple(&capture[2]);
        for (i, column) in columns.iter().enumerate() {
            if !secret_column.is_match(column) {
                continue;
            }
            // Positional when the VALUES tuple lines up; otherwise any literal counts.
            let literal = match &values {
                Some(values) if values.len() == columns.len() => values[i].contains('\''),
                _ => capture[2].contains('\''),
            };
            if literal {
                found("seed-secret", format!("an INSERT seeding secret column {column}"));
            }
        }
    }
}

/// The items of the first `VALUES (…)` tuple, split at top-level commas.
fn values_tuple(rest: &str) -> Option<Vec<String>> {
    let start = rest.to_ascii_lowercase().find("values")?;
    let open = start + rest[start..].find('(')?;
    let (mut depth, mut quoted, mut item, mut items) = (0usize, false, String::new(), Vec::new());
    for c in rest[open + 1..].chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => {
                items.push(item.trim().to_owned());
                return Some(items);
            }
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                items.push(item.trim().to_owned());
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    None
}

/// Rust source without whole-line comments (doc comments may discuss the rules).
fn without_comment_lines(code: &str) -> String {
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Statements with their whitespace collapsed, so formatting cannot hide a pattern.
fn statements(code: &str) -> Vec<String> {
    code.split([';', '{', '}']).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

fn key_fallbacks(code: &str, found: &mut impl FnMut(&'static str, String)) {
    // An environment variable name (upper case) that names a secret, then a fallback.
    let fallback = rx(
        r#""[A-Z0-9_]*(KEY|SECRET|PASSWORD|TOKEN)[A-Z0-9_]*".*\.(unwrap_or|unwrap_or_else|unwrap_or_default|or|or_else)\s*\("#,
    );
    // A constant whose name says it holds a secret (names ending in _PREFIX, _NAME,
    // _VAR, _HEADER or _COOKIE describe a secret without holding one).
    let constant = rx(
        r#"(?i)\b(const|static)\s+[A-Z0-9_]*(KEY|SECRET|PASSWORD|TOKEN)([A-Z0-9_]*[A-Z0-9])?\s*:\s*&\s*('static\s+)?(str|\[u8[^\]]*\])\s*=\s*b?""#,
    );
    let describes = rx(r"(?i)_(PREFIX|NAME|VAR|HEADER|COOKIE)\s*:");
    for statement in statements(code) {
        if fallback.is_match(&statement) {
            found("hardcoded-key-fallback", format!("a secret falls back to a default: {statement}"));
        }
        if constant.is_match(&statement) && !describes.is_match(&statement) {
            found("hardcoded-key-fallback", format!("a secret is a literal constant: {statement}"));
        }
    }
    let literal = rx(r#""([A-Za-z0-9+/_-]{40,}={0,2})""#);
    for capture in literal.captures_iter(code) {
        if moat::config::SigningKey::parse(&capture[1]).is_ok() {
            found("hardcoded-key-fallback", "a literal that is a usable key".to_owned());
        }
    }
}

fn all_interfaces(code: &str, found: &mut impl FnMut(&'static str, String)) {
    let any = rx(r#"(^|[^0-9.])0\.0\.0\.0|\[::\]|"::"|Ipv[46]Addr::UNSPECIFIED"#);
    for line in code.lines().filter(|l| any.is_match(l)) {
        found("bind-all-interfaces", line.trim().to_owned());
    }
}

/// `(name, what)` of every in-process structure that can outlive a request.
fn caches_in(code: &str) -> Vec<(String, String)> {
    let patterns = [
        r"\bstatic\s+(?:mut\s+|ref\s+)?(\w+)\s*:\s*[^=;]*\b(Mutex|RwLock|LazyLock|OnceLock|OnceCell|Lazy|DashMap|HashMap|BTreeMap|HashSet|Cache|LruCache)\b",
        r"\b(\w+)\s*:\s*Arc<\s*(?:[\w:]+::)?(Mutex|RwLock)<\s*(?:[\w:]+::)?(HashMap|BTreeMap|HashSet|BTreeSet|Vec|VecDeque|LruCache)\b",
        r"\b(\w+)\s*:\s*(?:Arc<\s*)?(?:[\w:]+::)?(DashMap|DashSet|LruCache|Cache)<",
    ]
    .map(rx);
    let mut caches = Vec::new();
    for statement in statements(code) {
        for pattern in &patterns {
            for capture in pattern.captures_iter(&statement) {
                caches.push((capture[1].to_owned(), capture[2].to_owned()));
            }
        }
    }
    caches
}

/// `(name, file, class)` rows of docs/caches.md's table.
fn classified_caches(root: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(root.join("docs/caches.md")).unwrap_or_default();
    text.lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| l.split('|').map(|c| c.trim().trim_matches('`').to_owned()).collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 4)
        .map(|cells| (cells[1].clone(), cells[2].clone(), cells[3].clone()))
        .collect()
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn this_repository_passes_the_launch_readiness_checklist() {
    let findings = scan(&repository());
    assert!(findings.is_empty(), "launch-readiness findings:\n{findings:#?}");
}

/// Plants one violation of each rule in a scratch tree; each must be reported,
/// and the look-alike safe code beside it must not.
#[test]
fn each_rule_fires_on_a_planted_example() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "migrations/V9__seed.sql",
        "INSERT INTO users (email, password_hash)\nVALUES ('demo@example.com', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA');\n",
    );
    write("migrations/V10__role.sql", "CREATE ROLE demo LOGIN PASSWORD 'demo-secret';\n");
    write(
        "sql/clients/insert_demo.sql",
        "INSERT INTO service_clients (client_id, secret) VALUES ('demo', 'demo-secret');\n",
    );
    write("sql/keys/blob.sql", "SELECT 'c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0';\n");
    write(
        "sql/safe/ok.sql",
        "-- password handling lives in src/auth\nSELECT id, email FROM users WHERE id = $1;\nINSERT INTO users (email, password_hash) VALUES ($1, $2);\nINSERT INTO states (state_hash, expires_at) VALUES ($1, now() + interval '10 minutes');\nSELECT set_config('idle_in_transaction_session_timeout', $1, true);\n",
    );
    write(
        "src/safe.rs",
        "pub const CLIENT_SECRET_PREFIX: &str = \"moat_cs_\";\nfn proxies() -> &'static str { \"10.0.0.0/24\" }\nfn t() { let s = seal(b\"token\").unwrap_or_default(); }\n",
    );
    write(
        "src/config.rs",
        "fn key() -> String {\n    std::env::var(\"MOAT_SIGNING_KEY\")\n        .unwrap_or_else(|_| \"dev-signing-key\".to_owned())\n}\nconst JWT_SECRET: &str = \"hunter2\";\nfn bind() -> String { std::env::var(\"MOAT_BIND\").unwrap_or(\"127.0.0.1:8080\".into()) }\n",
    );
    let key = moat::config::keys::generate_signing();
    write("src/embedded.rs", &format!("fn k() -> &'static str {{ \"{key}\" }}\n"));
    write(
        "src/net.rs",
        "// never 0.0.0.0 by default (comment lines are ignored)\nfn addr() -> &'static str { \"0.0.0.0:8080\" }\n",
    );
    write(".env.example", "MOAT_BIND=0.0.0.0:8080\n");
    write(
        "src/cache.rs",
        "static SESSIONS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);\npub struct Broker {\n    tokens: Arc<tokio::sync::Mutex<HashMap<String, String>>>,\n    limit: usize,\n}\n",
    );

    let rules_for = |findings: &[Finding], file: &str| {
        findings.iter().filter(|f| f.file == file).map(|f| f.rule).collect::<Vec<_>>()
    };
    let findings = scan(dir.path());
    assert!(
        rules_for(&findings, "migrations/V9__seed.sql").iter().filter(|r| **r == "seed-secret").count() >= 2,
        "{findings:#?}"
    );
    assert_eq!(rules_for(&findings, "migrations/V10__role.sql"), ["seed-secret"]);
    assert!(rules_for(&findings, "sql/clients/insert_demo.sql").contains(&"seed-secret"));
    assert_eq!(rules_for(&findings, "sql/keys/blob.sql"), ["seed-secret"]);
    assert!(rules_for(&findings, "sql/safe/ok.sql").is_empty(), "{findings:#?}");
    assert_eq!(
        rules_for(&findings, "src/config.rs"),
        ["hardcoded-key-fallback", "hardcoded-key-fallback"],
        "{findings:#?}"
    );
    assert_eq!(rules_for(&findings, "src/embedded.rs"), ["hardcoded-key-fallback"]);
    assert!(rules_for(&findings, "src/safe.rs").is_empty(), "{findings:#?}");
    assert_eq!(rules_for(&findings, "src/net.rs"), ["bind-all-interfaces"]);
    assert_eq!(rules_for(&findings, ".env.example"), ["bind-all-interfaces"]);
    assert_eq!(rules_for(&findings, "src/cache.rs"), ["unclassified-cache", "unclassified-cache"], "{findings:#?}");

    // Classified per-instance passes; classified must-be-shared still fails.
    write(
        "docs/caches.md",
        "| item | file | class | why |\n|---|---|---|---|\n| `SESSIONS` | `src/cache.rs` | per-instance | memoized |\n| `tokens` | `src/cache.rs` | must-be-shared | rotating tokens |\n",
    );
    let findings = scan(dir.path());
    let caches: Vec<_> = findings.iter().filter(|f| f.file == "src/cache.rs").collect();
    assert_eq!(caches.len(), 1, "{caches:#?}");
    assert!(caches[0].detail.starts_with("tokens: classified must-be-shared"), "{caches:#?}");
}

/// Every key placeholder in the repository (.env.example, compose, docs…) is
/// refused by the startup check; this is what keeps the denylist complete.
#[test]
fn every_key_placeholder_in_the_repository_is_refused() {
    let assignment = rx(r#"(MOAT_SIGNING_KEY|MOAT_ENCRYPTION_KEY)\s*[=:]\s*["']?([^"'\s]+)"#);
    let mut matched = 0;
    for entry in WalkDir::new(repository())
        .into_iter()
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some("target" | ".git" | ".moat" | "tests" | "src")))
    {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for capture in assignment.captures_iter(&text) {
            matched += 1;
            let value = &capture[2];
            // Shell expansions and documentation markers are not values.
            if value.starts_with('$') || value.starts_with('<') || value.starts_with('`') || value == "..." {
                continue;
            }
            let refused = match &capture[1] {
                "MOAT_SIGNING_KEY" => moat::config::SigningKey::parse(value).is_err(),
                _ => moat::config::EncryptionKey::parse(value, None).is_err(),
            };
            assert!(refused, "{}: placeholder {value:?} would be accepted", entry.path().display());
        }
    }
    // The compose setup keeps keys in secret files (no placeholder values any more);
    // the documentation's `MOAT_SIGNING_KEY=<new>` proves the scan still looks.
    assert!(matched > 0, "the scan found no key assignment at all");
}

/// The README's configuration table names every variable Moat reads.
#[test]
fn the_readme_documents_every_variable() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    for var in moat::config::VARS {
        assert!(readme.contains(&format!("`{}`", var.name)), "README.md does not document {}", var.name);
    }
}
