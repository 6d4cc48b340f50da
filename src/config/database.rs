//! The database settings `serve` and `runner` share: `DATABASE_URL`, what sits
//! in front of it (`MOAT_DATABASE_POOLER`), and where LISTEN goes
//! (`MOAT_LISTEN_DATABASE_URL`, `MOAT_LISTEN`).

use super::vars::Vars;
use super::{Problem, database_url_problem};
use crate::db::{DatabaseSettings, Pooler};

pub use crate::db::listen::Listen;

/// `DATABASE_URL` (or the file `DATABASE_URL_FILE` names: the URL holds a
/// password), parsed and marked with `MOAT_DATABASE_POOLER`.
pub fn database(vars: &Vars, problems: &mut Vec<Problem>) -> Option<DatabaseSettings> {
    let pooler = pooler(vars, problems);
    let Some(raw) = super::secrets::secret(vars, "DATABASE_URL", problems).ok()? else {
        problems.push(database_url_problem("is not set (nor DATABASE_URL_FILE)"));
        return None;
    };
    DatabaseSettings::parse(&raw)
        .map(|settings| settings.with_pooler(pooler))
        .map_err(|e| problems.push(database_url_problem(&format!("is invalid: {e}"))))
        .ok()
}

/// `MOAT_LISTEN` and `MOAT_LISTEN_DATABASE_URL`. LISTEN through a transaction
/// pooler would attach to whichever server connection the pooler picked and
/// miss every notification after it, so that combination is refused.
pub fn listen(vars: &Vars, database: Option<&DatabaseSettings>, problems: &mut Vec<Problem>) -> Option<Listen> {
    let enabled = match vars.get("MOAT_LISTEN") {
        None | Some("on") => true,
        Some("off") => false,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_LISTEN",
                    "must be `on` or `off`",
                    "It decides whether Moat waits for NOTIFY wake-ups or only polls.",
                )
                .fix("export MOAT_LISTEN=on"),
            );
            true
        }
    };
    let direct = match vars.get("MOAT_LISTEN_DATABASE_URL") {
        Some(raw) => match DatabaseSettings::parse(raw) {
            Ok(settings) => Some(settings),
            Err(e) => {
                problems.push(database_url_problem(&format!("(MOAT_LISTEN_DATABASE_URL) is invalid: {e}")));
                return None;
            }
        },
        None => None,
    };
    let database = database?;
    if enabled && direct.is_none() && database.pooler().per_transaction() {
        problems.push(
            Problem::new(
                "MOAT_LISTEN_DATABASE_URL",
                format!(
                    "is not set, but DATABASE_URL goes through a transaction pooler (MOAT_DATABASE_POOLER={})",
                    database.pooler().as_str()
                ),
                "LISTEN needs one long-lived server connection; through a transaction pooler wake-ups would be lost.",
            )
            .fix("export MOAT_LISTEN_DATABASE_URL='postgresql://moat_app:PASSWORD@DB-HOST:5432/moat?sslmode=verify-full'   # direct, not through the pooler")
            .fix("export MOAT_LISTEN=off   # or poll only"),
        );
    }
    let separate = direct.is_some();
    Some(Listen { database: direct.unwrap_or_else(|| database.clone()), enabled, separate })
}

/// With LISTEN on a separate URL, that URL must work now: otherwise live
/// events would silently degrade to the fallback poll.
pub async fn listen_problem(listen: &Listen) -> Option<Problem> {
    if !listen.enabled || !listen.separate {
        return None;
    }
    let reached = match listen.database.connect().await {
        Ok(client) => client.batch_execute("SELECT 1").await.map_err(|e| crate::db::describe_error(&e)),
        Err(e) => Err(e.to_string()),
    };
    reached.err().map(|e| {
        Problem::new(
            "MOAT_LISTEN_DATABASE_URL",
            format!("cannot connect to {}: {e}", listen.database.describe()),
            "The LISTEN connection wakes runners and carries live WebSocket events; it must reach PostgreSQL directly.",
        )
        .fix("point MOAT_LISTEN_DATABASE_URL at the database itself (not the pooler), with sslmode=verify-full")
        .fix("export MOAT_LISTEN=off   # or poll only")
    })
}

fn pooler(vars: &Vars, problems: &mut Vec<Problem>) -> Pooler {
    match vars.get("MOAT_DATABASE_POOLER") {
        None | Some("none") => Pooler::None,
        Some("transaction") => Pooler::Transaction,
        Some("transaction-prepared") => Pooler::TransactionPrepared,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_DATABASE_POOLER",
                    "must be `none`, `transaction` or `transaction-prepared`",
                    "Behind a transaction-mode pooler without prepared-statement support, Moat must not keep prepared statements between transactions.",
                )
                .fix("export MOAT_DATABASE_POOLER=transaction   # PgBouncer pool_mode=transaction before 1.21")
                .fix("export MOAT_DATABASE_POOLER=transaction-prepared   # PgBouncer >= 1.21 with max_prepared_statements")
                .fix("export MOAT_DATABASE_POOLER=none   # direct, or session mode"),
            );
            Pooler::None
        }
    }
}
