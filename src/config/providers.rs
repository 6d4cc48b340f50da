//! OAuth providers, from the TOML file named by `MOAT_PROVIDERS_FILE`.
//!
//! The file holds no secret: each provider names the environment variable
//! that holds its client secret. Unknown keys are refused, URLs must be https
//! in production, and a missing secret variable is a startup problem.
//!
//! ```toml
//! [providers.calendar]
//! authorize_url = "https://accounts.example.com/oauth/authorize"
//! token_url = "https://accounts.example.com/oauth/token"
//! client_id = "moat-calendar"
//! client_secret_env = "CALENDAR_CLIENT_SECRET"
//! scopes = ["calendar.read"]
//! ca_file = "/etc/moat/private-ca.pem"      # optional: trust only this CA
//! [providers.calendar.authorize_params]
//! access_type = "offline"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::vars::{VARS, Vars};
use crate::devmode::DevMode;
use crate::problem::Problem;

/// A provider's client secret: read from the environment, never printed.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(redacted)")
    }
}

/// One configured OAuth provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub authorize_url: url::Url,
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub scopes: Vec<String>,
    pub authorize_params: BTreeMap<String, String>,
    /// Trust only the CAs in this PEM file for this provider (private identity providers).
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    authorize_url: String,
    token_url: String,
    client_id: String,
    client_secret_env: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    authorize_params: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
}

/// What [`load`] found: the providers, and the secret variables they name
/// (which are therefore not "unknown" variables).
pub(super) struct Loaded {
    pub providers: BTreeMap<String, Provider>,
    pub secret_vars: Vec<String>,
}

/// Parameters Moat sets itself; a provider may not override them.
const RESERVED_PARAMS: &[&str] =
    &["response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope"];

pub(super) fn load(vars: &Vars, dev: Option<DevMode>, problems: &mut Vec<Problem>) -> Loaded {
    let mut loaded = Loaded { providers: BTreeMap::new(), secret_vars: Vec::new() };
    let Some(path) = vars.get("MOAT_PROVIDERS_FILE") else {
        return loaded;
    };
    let fix = "see docs/integrations.md for the file format";
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(
                Problem::new(
                    "MOAT_PROVIDERS_FILE",
                    format!("names a file Moat cannot read ({})", e.kind()),
                    "Integrations need their providers.",
                )
                .fix(fix),
            );
            return loaded;
        }
    };
    let file: File = match toml::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            let what = format!("is not a valid providers file: {}", e.message());
            problems
                .push(Problem::new("MOAT_PROVIDERS_FILE", what, "A typo must not silently drop a setting.").fix(fix));
            return loaded;
        }
    };
    for (name, raw) in file.providers {
        loaded.secret_vars.push(raw.client_secret_env.trim().to_owned());
        if let Some(provider) = provider(&name, raw, vars, dev, problems) {
            loaded.providers.insert(name, provider);
        }
    }
    loaded
}

/// The client-secret variables `MOAT_PROVIDERS_FILE` names, without judging
/// the rest of the file (for what must never reach an agent; [`load`] reports problems).
pub fn secret_var_names(vars: &Vars) -> Vec<String> {
    let Some(text) = vars.get("MOAT_PROVIDERS_FILE").and_then(|path| std::fs::read_to_string(path).ok()) else {
        return Vec::new();
    };
    toml::from_str::<File>(&text)
        .map(|file| file.providers.into_values().map(|p| p.client_secret_env.trim().to_owned()).collect())
        .unwrap_or_default()
}

fn provider(
    name: &str,
    raw: RawProvider,
    vars: &Vars,
    dev: Option<DevMode>,
    problems: &mut Vec<Problem>,
) -> Option<Provider> {
    let subject = format!("MOAT_PROVIDERS_FILE [providers.{name}]");
    let before = problems.len();
    let problem = |what: String, why: &str, fix: String| Problem::new(subject.clone(), what, why).fix(fix);
    if name.is_empty()
        || name.len() > 40
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        problems.push(problem(
            "has a name that is not 1-40 of a-z, 0-9, _ and -".into(),
            "The name appears in URLs.",
            "rename the table, e.g. [providers.calendar]".into(),
        ));
    }
    let mut url = |field: &str, raw: &str| -> Option<url::Url> {
        let parsed = url::Url::parse(raw).ok().filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        let Some(parsed) = parsed else {
            problems.push(problem(
                format!("{field} is not an http(s) URL"),
                "Moat must reach the provider.",
                format!("set {field} = \"https://…\""),
            ));
            return None;
        };
        if parsed.scheme() != "https" {
            match dev {
                Some(dev) => dev.bypass("providers", format!("{name}: {field} is not https")),
                None => problems.push(problem(
                    format!("{field} is not https"),
                    "Authorization codes, client secrets and tokens would cross the network in plain text.",
                    format!("use the provider's https {field}"),
                )),
            }
        }
        Some(parsed)
    };
    let authorize_url = url("authorize_url", &raw.authorize_url);
    let token_url = url("token_url", &raw.token_url);
    let secret_var = raw.client_secret_env.trim();
    let own = VARS.iter().any(|v| v.name == secret_var) || secret_var == "DATABASE_URL";
    let client_secret = if own || secret_var.is_empty() {
        problems.push(problem(
            format!("client_secret_env names {secret_var:?}, which is not a variable of its own"),
            "Each provider's secret lives in its own environment variable.",
            format!("client_secret_env = \"{}_CLIENT_SECRET\"", name.to_uppercase().replace('-', "_")),
        ));
        None
    } else {
        match vars.get(secret_var) {
            Some(secret) => Some(ClientSecret(secret.to_owned())),
            None => {
                problems.push(problem(
                    format!("client_secret_env names {secret_var}, which is not set"),
                    "Moat cannot exchange codes or refresh tokens without the provider's client secret.",
                    format!("export {secret_var}='<the client secret from the provider>'"),
                ));
                None
            }
        }
    };
    if raw.client_id.trim().is_empty() {
        problems.push(problem(
            "has an empty client_id".into(),
            "The provider identifies Moat by it.",
            "set client_id".into(),
        ));
    }
    if let Some(reserved) = raw.authorize_params.keys().find(|k| RESERVED_PARAMS.contains(&k.as_str())) {
        problems.push(problem(
            format!("authorize_params sets {reserved}, which Moat sets itself"),
            "Overriding it would break the state or PKCE protection of the connect flow.",
            format!("remove {reserved} from authorize_params"),
        ));
    }
    if let Some(ca) = &raw.ca_file
        && let Err(e) = crate::tls::client_config(Some(ca))
    {
        problems.push(problem(
            format!("ca_file cannot be used: {e}"),
            "Moat could not verify the provider.",
            "point ca_file at a PEM CA bundle".into(),
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(Provider {
        name: name.to_owned(),
        authorize_url: authorize_url?,
        token_url: token_url?,
        client_id: raw.client_id,
        client_secret: client_secret?,
        scopes: raw.scopes,
        authorize_params: raw.authorize_params,
        ca_file: raw.ca_file,
    })
}
