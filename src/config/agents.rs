//! External agents, from the TOML file named by `MOAT_AGENTS_FILE`: the only
//! programs a run can start. A run names a declared agent; its input is data
//! sent on the agent's stdin, never part of a command line.
//!
//! ```toml
//! [agents.echo]
//! command = "/usr/bin/python3"          # absolute path
//! args = ["/srv/moat/agents/echo.py"]
//! env = ["LANG", "PATH"]                # copied from the runner's environment; nothing else is
//!                                       # (never MOAT_*, DATABASE_URL*, PG* or a provider's client secret)
//! working_dir = "/srv/moat/agents"      # optional (default /)
//! cancel_grace = "5s"                   # optional: SIGTERM → SIGKILL delay
//! providers = ["calendar"]              # optional: integrations whose tokens it may request
//! user = "moat-agent"                   # optional: run as this OS user (the runner must be root)
//! ```
//!
//! Without `user` the agent runs as the runner's user and could read what
//! that user can (the runner marks itself non-dumpable, so its own
//! `/proc/<pid>/environ` is closed to same-user processes unless they are root).
//!
//! Every agent is started through `setpriv --pdeathsig KILL`: if the runner
//! dies (even SIGKILLed), the kernel kills the agent, so no agent outlives the
//! runner that supervises it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::vars::Vars;
use crate::problem::Problem;

/// Switches users for agents declared with `user`.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// One declared agent, ready to start.
#[derive(Debug, Clone)]
pub struct ExecAgent {
    pub name: String,
    pub command: PathBuf,
    pub args: Vec<String>,
    /// `(name, value)` pairs copied from the runner's environment at startup.
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub cancel_grace: Duration,
    pub providers: Vec<String>,
    /// `(uid, gid)` to run as, through `setpriv` (supplementary groups cleared).
    pub run_as: Option<(u32, u32)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agents: BTreeMap<String, Raw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    command: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    working_dir: Option<PathBuf>,
    cancel_grace: Option<String>,
    #[serde(default)]
    providers: Vec<String>,
    user: Option<String>,
}

/// Whether an agent may be given the variable `name`: never Moat's own
/// configuration (`MOAT_*`, `DATABASE_URL*`), PostgreSQL's (`PG*`: a password,
/// a passfile, a service file), or a provider's client secret (`secret_vars`).
fn forbidden(name: &str, secret_vars: &[String]) -> bool {
    name.starts_with("MOAT_")
        || name.starts_with("DATABASE_URL")
        || name.starts_with("PG")
        || secret_vars.iter().any(|s| s == name)
}

/// Reads `MOAT_AGENTS_FILE` (none: no external agents). With `check_programs`
/// (the runner, which starts them) commands and working directories must exist,
/// and so must `setpriv` (every agent starts through it).
pub fn load(vars: &Vars, check_programs: bool, problems: &mut Vec<Problem>) -> BTreeMap<String, ExecAgent> {
    let secret_vars = super::providers::secret_var_names(vars);
    let Some(path) = vars.get("MOAT_AGENTS_FILE") else {
        return BTreeMap::new();
    };
    let problem = |what: String| {
        Problem::new(
            "MOAT_AGENTS_FILE",
            what,
            "Agents are the only programs a run can start; each must be declared exactly.",
        )
        .fix(format!("edit {path} (docs/agents.md)"))
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(problem(format!("cannot be read: {e}")));
            return BTreeMap::new();
        }
    };
    let file: File = match toml::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            problems.push(problem(format!("is not valid: {}", e.message())));
            return BTreeMap::new();
        }
    };
    let mut agents = BTreeMap::new();
    for (name, raw) in file.agents {
        let mut bad = |what: String| problems.push(problem(format!("agent `{name}`: {what}")));
        if name == "demo"
            || name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            bad("names are 1–64 of a-z 0-9 - _, and `demo` is built in".into());
            continue;
        }
        if !raw.command.is_absolute() {
            bad(format!("command {} must be an absolute path", raw.command.display()));
            continue;
        }
        if check_programs && !raw.command.is_file() {
            bad(format!("command {} does not exist", raw.command.display()));
            continue;
        }
        let working_dir = raw.working_dir.unwrap_or_else(|| PathBuf::from("/"));
        if check_programs && !working_dir.is_dir() {
            bad(format!("working_dir {} is not a directory", working_dir.display()));
            continue;
        }
        if let Some(secret) = raw.env.iter().find(|n| forbidden(n.trim(), &secret_vars)) {
            bad(format!(
                "env may not pass {secret} (Moat's configuration, PostgreSQL's and providers' client secrets never reach an agent)"
            ));
            continue;
        }
        if check_programs && !std::path::Path::new(SETPRIV).is_file() {
            bad(format!("{SETPRIV} (util-linux) is needed: agents start through it so they die with the runner"));
            continue;
        }
        let cancel_grace = match raw.cancel_grace.as_deref().map(humantime::parse_duration) {
            None => Duration::from_secs(5),
            Some(Ok(d)) if d <= Duration::from_secs(300) => d,
            Some(_) => {
                bad("cancel_grace must be a duration up to 5m".into());
                continue;
            }
        };
        let run_as = match &raw.user {
            None => None,
            Some(_) if !check_programs => None, // serve only needs the names
            Some(user) => match nix::unistd::User::from_name(user) {
                Ok(Some(found)) if found.uid.is_root() => {
                    bad("user may not be root".into());
                    continue;
                }
                Ok(Some(found))
                    if nix::unistd::Uid::effective().is_root() && std::path::Path::new(SETPRIV).is_file() =>
                {
                    Some((found.uid.as_raw(), found.gid.as_raw()))
                }
                Ok(Some(_)) => {
                    bad(format!("user {user}: switching users needs the runner to run as root, and {SETPRIV}"));
                    continue;
                }
                _ => {
                    bad(format!("user {user} does not exist"));
                    continue;
                }
            },
        };
        let env = raw.env.iter().filter_map(|n| vars.get(n).map(|v| (n.clone(), v.to_owned()))).collect();
        agents.insert(
            name.clone(),
            ExecAgent {
                name,
                command: raw.command,
                args: raw.args,
                env,
                working_dir,
                cancel_grace,
                providers: raw.providers,
                run_as,
            },
        );
    }
    agents
}
