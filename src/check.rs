//! Startup checks: everything that must be true before Moat opens a socket.
//!
//! [`run`] loads the configuration and verifies the database (schema, role,
//! development taint), collecting **every** [`Problem`] instead of stopping at
//! the first, so an operator fixes them in one round. `moat check` prints the
//! report; `moat serve` prints it and exits before binding. Each problem says
//! what is wrong, why it matters and the exact command that fixes it.

use std::fmt;

use crate::config::{self, Config, Vars};
use crate::db;

/// One failed check, written for the operator who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What the problem is about, e.g. `MOAT_SIGNING_KEY` or `database schema`.
    pub subject: String,
    /// What is wrong, in one sentence.
    pub what: String,
    /// Why it matters.
    pub why: String,
    /// Exact commands or steps that fix it.
    pub fix: Vec<String>,
}

impl Problem {
    pub fn new(subject: impl Into<String>, what: impl Into<String>, why: impl Into<String>) -> Self {
        Self { subject: subject.into(), what: what.into(), why: why.into(), fix: Vec::new() }
    }

    pub fn fix(mut self, step: impl Into<String>) -> Self {
        self.fix.push(step.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] {}", self.subject, self.what)?;
        writeln!(f, "  why: {}", self.why)?;
        for (i, step) in self.fix.iter().enumerate() {
            let label = if i == 0 { "fix:" } else { "    " };
            writeln!(f, "  {label} {step}")?;
        }
        Ok(())
    }
}

/// The outcome of every startup check.
pub struct Outcome {
    /// Present only when every check passed.
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
    /// Number of checks that ran (for the success line).
    pub checks_run: usize,
}

impl Outcome {
    /// The text `moat check` and a refused `moat serve` print.
    pub fn report(&self) -> String {
        if self.problems.is_empty() {
            return format!("moat: all {} startup checks passed\n", self.checks_run);
        }
        let mut out = format!(
            "moat: refusing to start: {} problem{} found\n\n",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        );
        for problem in &self.problems {
            out.push_str(&problem.to_string());
            out.push('\n');
        }
        out
    }
}

/// Runs every startup check and collects every failure.
pub async fn run(vars: &Vars) -> Outcome {
    let (config, mut problems, database, environment) = match config::load(vars) {
        Ok(config) => {
            let database = config.database.clone();
            let environment = config.environment;
            (Some(config), Vec::new(), Some(database), environment)
        }
        Err(rejected) => (None, rejected.problems, rejected.database, rejected.environment),
    };
    let checks_run = config::CHECK_COUNT + db::checks::CHECK_COUNT;
    // Without a usable DATABASE_URL its own problem is already reported, and it
    // says that the schema, role and taint checks could not run.
    if let Some(database) = database {
        problems.extend(db::checks::verify(&database, environment).await);
    }
    if let Some(config) = &config {
        problems.extend(config::database::listen_problem(&config.listen).await);
    }
    let config = config.filter(|_| problems.is_empty());
    Outcome { config, problems, checks_run }
}
