//! `moat runner`: the shared startup checks, then the runner loop
//! ([`crate::runner::run`]) until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Vars;

pub async fn main(vars: &Vars) -> ExitCode {
    // Agents run as children: keep this process's memory and /proc/<pid>/environ
    // (DATABASE_URL) closed to same-user processes that are not root.
    crate::os::non_dumpable("runner");
    let config = match super::check::runner(vars).await {
        Ok(config) => config,
        Err(outcome) => {
            eprint!("{}", outcome.report());
            return ExitCode::FAILURE;
        }
    };
    crate::db::warn_if_plaintext(&config.database, &config.listen);
    match crate::runner::run(config, super::shutdown_signal()).await.context("runner failed") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "runner failed");
            ExitCode::FAILURE
        }
    }
}
