//! Configuration of `moat runner`: the database (and a direct one for
//! LISTEN), concurrency, leases and per-run bounds.

use std::time::Duration;

use super::auth::duration;
use super::vars::Vars;
use super::{Environment, environment, unknown_vars};
use crate::db::DatabaseSettings;
use crate::problem::Problem;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub environment: Environment,
    pub database: DatabaseSettings,
    /// Where the LISTEN connection goes, or poll only.
    pub listen: super::database::Listen,
    /// `MOAT_METRICS_BIND`: a loopback address serving unauthenticated `/metrics`.
    pub metrics_bind: Option<std::net::SocketAddr>,
    pub concurrency: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// Fallback poll for queued runs and unapplied commands.
    pub poll: Duration,
    pub max_duration: Duration,
    pub max_output_bytes: u64,
    pub max_events: u64,
    pub shutdown_grace: Duration,
    /// External agents declared in `MOAT_AGENTS_FILE`, by name.
    pub agents: std::collections::BTreeMap<String, super::agents::ExecAgent>,
    /// What serving integration tokens to agents needs; present when an agent declares `providers`.
    pub agent_tokens: Option<AgentTokens>,
}

/// The broker's configuration, for agents' token requests.
#[derive(Debug, Clone)]
pub struct AgentTokens {
    pub encryption_key: super::keys::EncryptionKey,
    pub previous_encryption_keys: Vec<super::keys::EncryptionKey>,
    pub providers: std::collections::BTreeMap<String, super::Provider>,
    pub egress: crate::egress::Egress,
    pub min_validity: Duration,
    pub provider_timeout: Duration,
}

fn agent_tokens(
    vars: &Vars,
    dev: Option<crate::devmode::DevMode>,
    agents: &std::collections::BTreeMap<String, super::agents::ExecAgent>,
    problems: &mut Vec<Problem>,
) -> Option<AgentTokens> {
    if agents.values().all(|a| a.providers.is_empty()) {
        return None;
    }
    let keys = super::encryption_keys(vars).map_err(|p| problems.extend(p)).ok();
    let providers = super::providers::load(vars, dev, problems).providers;
    for (agent, name) in agents.values().flat_map(|a| a.providers.iter().map(move |p| (&a.name, p))) {
        if !providers.contains_key(name) {
            problems.push(
                Problem::new(
                    "MOAT_AGENTS_FILE",
                    format!("agent `{agent}` lists provider `{name}`, which MOAT_PROVIDERS_FILE does not configure"),
                    "An agent can only be given tokens of configured providers.",
                )
                .fix("configure the provider, or remove it from the agent's `providers`"),
            );
        }
    }
    let egress = super::egress(vars, dev, &providers, problems)?;
    let min_validity = super::auth::duration(vars, "MOAT_TOKEN_MIN_VALIDITY", "60s", (0, 3600), problems);
    let provider_timeout = super::auth::duration(vars, "MOAT_PROVIDER_TIMEOUT", "10s", (1, 20), problems);
    let (encryption_key, previous_encryption_keys) = keys?;
    Some(AgentTokens { encryption_key, previous_encryption_keys, providers, egress, min_validity, provider_timeout })
}

fn number(vars: &Vars, name: &str, default: u64, range: (u64, u64), problems: &mut Vec<Problem>) -> u64 {
    match vars.get(name).map(str::parse::<u64>) {
        None => default,
        Some(Ok(n)) if (range.0..=range.1).contains(&n) => n,
        Some(_) => {
            problems.push(
                Problem::new(
                    name,
                    format!("must be a whole number from {} to {}", range.0, range.1),
                    "It bounds what a runner does.",
                )
                .fix(format!("export {name}={default}   # the default")),
            );
            default
        }
    }
}

pub fn load(vars: &Vars) -> Result<RunnerConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let environment = environment(vars, &mut problems);
    unknown_vars(vars, &[], &mut problems);
    let database = super::database::database(vars, &mut problems);
    let listen = super::database::listen(vars, database.as_ref(), &mut problems);
    let concurrency = number(vars, "MOAT_RUNNER_CONCURRENCY", 16, (1, 10_000), &mut problems);
    let lease = duration(vars, "MOAT_RUN_LEASE", "30s", (1, 3600), &mut problems);
    let heartbeat = duration(vars, "MOAT_RUN_HEARTBEAT", "10s", (0, 1200), &mut problems);
    if heartbeat.is_zero() || heartbeat * 2 > lease {
        problems.push(
            Problem::new(
                "MOAT_RUN_HEARTBEAT",
                "must be more than zero and at most half of MOAT_RUN_LEASE",
                "A lease must survive one missed heartbeat, or healthy runs would be declared lost.",
            )
            .fix("export MOAT_RUN_LEASE=30s MOAT_RUN_HEARTBEAT=10s"),
        );
    }
    let config = RunnerConfig {
        environment,
        metrics_bind: super::metrics_bind(vars, &mut problems),
        concurrency: usize::try_from(concurrency).unwrap_or(16),
        lease,
        heartbeat,
        poll: duration(vars, "MOAT_RUNNER_POLL", "2s", (1, 60), &mut problems),
        max_duration: duration(vars, "MOAT_RUN_MAX_DURATION", "15m", (1, 24 * 3600), &mut problems),
        max_output_bytes: number(vars, "MOAT_RUN_MAX_OUTPUT_BYTES", 5 * 1024 * 1024, (1, 1 << 30), &mut problems),
        max_events: number(vars, "MOAT_RUN_MAX_EVENTS", 10_000, (4, 10_000_000), &mut problems),
        shutdown_grace: duration(vars, "MOAT_RUNNER_SHUTDOWN_GRACE", "20s", (0, 600), &mut problems),
        agent_tokens: None,
        agents: super::agents::load(vars, true, &mut problems),
        database: match database {
            Some(d) => d,
            None => return Err(problems),
        },
        listen: match listen {
            Some(listen) => listen,
            None => return Err(problems),
        },
    };
    let mut config = config;
    config.agent_tokens = agent_tokens(vars, environment.dev_mode(), &config.agents, &mut problems);
    if problems.is_empty() { Ok(config) } else { Err(problems) }
}
