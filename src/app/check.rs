//! Startup checks: everything that must be true before Moat opens a socket
//! or claims a run — one pipeline for both processes.
//!
//! [`run`] (`serve`) and [`runner`] load their configuration and verify the
//! database the same way ([`database`]: schema, role, development taint, the
//! LISTEN connection), collecting **every** [`Problem`] instead of stopping
//! at the first, so an operator fixes them in one round. `moat check` prints
//! the report; `moat serve` and `moat runner` print it and exit before
//! binding or claiming. Each problem says what is wrong, why it matters and
//! the exact command that fixes it.

use crate::config::runner::RunnerConfig;
use crate::config::{self, Config, Vars};
use crate::db::listen::Listen;
use crate::db::{self, DatabaseSettings};
use crate::devmode::DevMode;
pub use crate::problem::Problem;

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
    match (&config, database) {
        (Some(config), _) => {
            problems.extend(database_checks(&config.database, &config.listen, environment.dev_mode()).await)
        }
        (None, Some(database)) => problems.extend(db::checks::verify(&database, environment.dev_mode()).await),
        (None, None) => {}
    }
    let config = config.filter(|_| problems.is_empty());
    Outcome { config, problems, checks_run }
}

/// `moat runner`'s checks: its configuration, the same database checks as
/// `serve`, and its role's membership of `moat_runner`.
pub async fn runner(vars: &Vars) -> Result<RunnerConfig, Outcome> {
    let refused = |problems| Outcome { config: None, problems, checks_run: 0 };
    let config = config::runner::load(vars).map_err(refused)?;
    let mut problems = database_checks(&config.database, &config.listen, config.environment.dev_mode()).await;
    if problems.is_empty()
        && let Err(problem) = runner_role(&config.database).await
    {
        problems.push(problem);
    }
    if problems.is_empty() { Ok(config) } else { Err(refused(problems)) }
}

/// The database checks both processes run: schema, role, development taint,
/// the LISTEN connection.
async fn database_checks(database: &DatabaseSettings, listen: &Listen, dev: Option<DevMode>) -> Vec<Problem> {
    let mut problems = db::checks::verify(database, dev).await;
    problems.extend(config::database::listen_problem(listen).await);
    problems
}

/// The runner's login role must be a member of `moat_runner` (claiming runs
/// across organizations is not the API's business; docs/deployment.md).
async fn runner_role(database: &DatabaseSettings) -> Result<(), Problem> {
    let problem = |what: String| {
        Problem::new(
            "database role",
            what,
            "Only runners may claim runs of every organization; the API's role deliberately cannot.",
        )
        .fix("GRANT moat_runner TO <the runner's login role>;   -- as the owner or an administrator")
    };
    let client = database.connect().await.map_err(|e| problem(format!("cannot connect: {e}")))?;
    // An unnamed statement: safe through a transaction pooler (one round trip, nothing left behind).
    let row = client
        .query_typed_one(
            "SELECT current_user::text AS name, pg_has_role(current_user, 'moat_runner', 'USAGE') AS member",
            &[],
        )
        .await
        .map_err(|e| problem(db::describe_error(&e)))?;
    if row.get::<_, bool>("member") {
        Ok(())
    } else {
        Err(problem(format!("role {} is not a member of moat_runner", row.get::<_, String>("name"))))
    }
}
