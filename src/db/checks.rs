//! The database half of the startup checks: reachable, schema current, role not
//! over-privileged, and (in production) never used by a development-mode Moat.

use tokio_postgres::Client;

use super::{DatabaseSettings, describe_error, migrate, store};
use crate::devmode::DevMode;
use crate::problem::Problem;

/// Checks `verify` performs (reachable, schema, role, development taint).
pub const CHECK_COUNT: usize = 4;

const MIGRATE_FIX: &str = "DATABASE_URL='<owner role URL>' moat migrate";

/// Runs every database check and returns every problem found.
pub async fn verify(settings: &DatabaseSettings, dev: Option<DevMode>) -> Vec<Problem> {
    let client = match settings.connect().await {
        Ok(client) => client,
        Err(e) => return vec![unreachable(settings, &e.to_string())],
    };
    // One read-only transaction: behind a transaction-mode pooler every
    // statement of the checks then runs on the same server connection, and
    // `DEALLOCATE ALL` first removes statements another process left on it
    // (their names, `s0`, `s1`, …, would collide with this process's).
    // (Only in `transaction` mode: PgBouncer 1.21 with prepared statements would
    // pass it to the server and lose track of its own statements.)
    let begin = match settings.pooler() {
        super::Pooler::Transaction => "BEGIN READ ONLY; DEALLOCATE ALL",
        _ => "BEGIN READ ONLY",
    };
    let result = match client.batch_execute(begin).await {
        Ok(()) => checks(&client, dev).await,
        Err(e) => Err(e),
    };
    let _ = client.batch_execute("COMMIT").await;
    match result {
        Ok(problems) => problems,
        Err(e) => vec![
            Problem::new(
                "database",
                format!("the checks could not read the database as role {}: {}", user(settings), describe_error(&e)),
                "Moat cannot prove the schema and role are safe, so it does not start.",
            )
            .fix("check the role's privileges (docs/deployment.md), then run `moat check` again"),
        ],
    }
}

async fn checks(client: &Client, dev: Option<DevMode>) -> Result<Vec<Problem>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let status = migrate::status(client).await?;
    problems.extend(schema_problems(&status));

    let role = client.query_one(store::CURRENT_ROLE, &[]).await?;
    let name: String = role.get("name");
    let owned: Vec<String> = client.query(store::OWNED_TABLES, &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut privileges = Vec::new();
    if role.get::<_, bool>("superuser") {
        privileges.push("is a superuser".to_owned());
    } else if role.get::<_, bool>("bypass_rls") {
        privileges.push("has the BYPASSRLS attribute".to_owned());
    }
    if !owned.is_empty() && privileges.is_empty() {
        privileges.push(format!("owns Moat's tables ({})", owned.join(", ")));
    }
    if !privileges.is_empty() {
        problems.push(over_privileged(&name, &privileges.join(" and ")));
    } else if (status.unreadable || status.is_current()) && role.get::<_, Option<bool>>("in_runtime_role") != Some(true)
    {
        // Membership only matters once the first migration has created the group role.
        problems.push(
            Problem::new(
                "database role",
                format!("role {name} is not a member of moat_runtime"),
                "Moat's tables grant exactly what the server needs to the group role moat_runtime; without membership every request fails.",
            )
            .fix(format!("GRANT moat_runtime TO {name};   -- run as the owner or an administrator")),
        );
    }
    if dev.is_none()
        && status.pending.is_empty()
        && !status.unreadable
        && let Some(row) = client.query_opt(store::DEV_TAINT_READ, &[]).await?
    {
        let at: time::OffsetDateTime = row.get("marked_at");
        let by: String = row.get("marked_by");
        let at = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        problems.push(
                Problem::new(
                    "database",
                    format!("this database was used by a development-mode Moat ({by}, {at})"),
                    "Development mode accepts weak or ephemeral keys and creates demo users and keys; data written under it must never serve production.",
                )
                .fix("create a fresh database for production: createdb -O <owner role> moat_production")
                .fix(format!("then point DATABASE_URL at it and run: {MIGRATE_FIX}")),
            );
    }
    Ok(problems)
}

fn schema_problems(status: &migrate::Status) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !status.pending.is_empty() {
        problems.push(
            Problem::new(
                "database schema",
                format!("{} migration(s) not applied: {}", status.pending.len(), status.pending.join(", ")),
                "Moat would run against tables that do not exist or lack their security policies. `serve` never migrates implicitly.",
            )
            .fix(MIGRATE_FIX),
        );
    }
    if !status.diverged.is_empty() {
        problems.push(
            Problem::new(
                "database schema",
                format!("applied migration(s) differ from this binary's: {}", status.diverged.join(", ")),
                "The schema is not the one this binary was built and tested against; a landed migration was edited or a different build migrated this database.",
            )
            .fix("deploy the Moat build that migrated this database, or restore the database from a backup taken before the divergent migration"),
        );
    }
    if !status.unknown.is_empty() {
        problems.push(
            Problem::new(
                "database schema",
                format!("the database has migration(s) this binary does not know: {}", status.unknown.join(", ")),
                "A newer Moat migrated this database; this older binary does not understand its schema.",
            )
            .fix("deploy the newer Moat build (migrations are forward-only)"),
        );
    }
    problems
}

fn over_privileged(name: &str, what: &str) -> Problem {
    Problem::new(
        "database role",
        format!("role {name} {what}"),
        "Row-level security keeps tenants apart; superusers, BYPASSRLS roles and table owners skip it, so one bug would expose every organization.",
    )
    .fix("create a plain runtime role (as an administrator): CREATE ROLE moat_app LOGIN PASSWORD '<generated>'; GRANT moat_runtime TO moat_app;")
    .fix(format!("then connect `moat serve` as moat_app instead of {name}; keep the owner role for `moat migrate` (docs/deployment.md)"))
}

fn unreachable(settings: &DatabaseSettings, error: &str) -> Problem {
    Problem::new(
        "database",
        format!("cannot connect to {}: {error}", settings.describe()),
        "Moat keeps all state in PostgreSQL and cannot verify its schema or role without it.",
    )
    .fix("check DATABASE_URL and that PostgreSQL is running: pg_isready -d \"$DATABASE_URL\"")
}

fn user(settings: &DatabaseSettings) -> String {
    settings.describe().split('@').next().unwrap_or("?").to_owned()
}

/// Marks the database as used by development mode (idempotent).
pub async fn mark_dev_taint(client: &impl tokio_postgres::GenericClient) -> Result<(), tokio_postgres::Error> {
    client.execute(store::DEV_TAINT_MARK, &[&"moat serve (MOAT_ENV=development)"]).await.map(|_| ())
}
