//! `moat admin …`: the command-line face of [`crate::admin`].
//!
//! Reads `DATABASE_URL` (the runtime role is enough: row-level security
//! applies to these commands too). Passwords come from standard input (or are
//! generated); secrets are printed once, on standard output, and never logged.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use clap::Subcommand;

use crate::admin::{self, AdminError};
use crate::config::Vars;
use crate::db;
use crate::db::Pool;
use crate::identity::Role;
use crate::ids::OrgId;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organization; prints its id.
    CreateOrg { name: String },
    /// Create a user; the password is read from standard input unless --generate-password.
    CreateUser {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value = "member")]
        role: Role,
        /// Generate a random password and print it once.
        #[arg(long)]
        generate_password: bool,
    },
    /// Create a service client; prints client_id and client_secret (shown once).
    CreateClient {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        name: String,
        /// Space-separated scopes, e.g. "conversations:read runs:write".
        #[arg(long)]
        scopes: String,
    },
    /// Replace a client's secret (the old one stops working at once); prints the new one.
    RotateClientSecret { client_id: String },
    /// Disable a user and end all their sessions.
    DisableUser { email: String },
    /// Disable a service client.
    DisableClient { client_id: String },
    /// Re-encrypt every stored credential under MOAT_ENCRYPTION_KEY, reading the old
    /// key from MOAT_ENCRYPTION_KEYS_PREVIOUS, while Moat keeps serving. Resumable.
    RotateEncryptionKey {
        /// Integrations re-encrypted per transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        batch: i64,
    },
}

pub async fn run(command: AdminCommand, vars: &Vars) -> ExitCode {
    let pool = match connect(vars).await {
        Ok(pool) => pool,
        Err(message) => {
            eprintln!("moat admin: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let AdminCommand::RotateEncryptionKey { batch } = command {
        return rotate_encryption_key(&pool, vars, batch).await;
    }
    match execute(command, &pool).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat admin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: AdminCommand, pool: &Pool) -> Result<(), AdminError> {
    match command {
        AdminCommand::CreateOrg { name } => println!("{}", admin::create_org(pool, &name).await?),
        AdminCommand::CreateUser { org, email, role, generate_password } => {
            let password = if generate_password { admin::generate_password() } else { read_password(&email)? };
            let id = admin::create_user(pool, org, &email, role, password.clone()).await?;
            println!("{id}");
            if generate_password {
                println!("password: {password}");
                eprintln!("moat admin: the password is shown once; hand it over securely");
            }
        }
        AdminCommand::CreateClient { org, name, scopes } => {
            let (id, secret) = admin::create_client(pool, org, &name, &scopes).await?;
            println!("client_id={id}\nclient_secret={secret}");
            eprintln!("moat admin: the secret is shown once; store it now");
        }
        AdminCommand::RotateClientSecret { client_id } => {
            let secret = admin::rotate_client_secret(pool, &client_id).await?;
            println!("client_secret={secret}");
            eprintln!("moat admin: the previous secret no longer works");
        }
        AdminCommand::DisableUser { email } => {
            admin::disable_user(pool, &email).await?;
            eprintln!("moat admin: disabled {email} and ended their sessions");
        }
        AdminCommand::DisableClient { client_id } => {
            admin::disable_client(pool, &client_id).await?;
            eprintln!("moat admin: disabled client {client_id}");
        }
        AdminCommand::RotateEncryptionKey { .. } => {}
    }
    Ok(())
}

/// From a terminal: prompted twice without echo. Otherwise: standard input, one trailing newline removed.
fn read_password(email: &str) -> Result<String, AdminError> {
    let io = |e: std::io::Error| AdminError::Other(anyhow::anyhow!("cannot read the password: {e}"));
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {email}: ")).map_err(io)?;
        let second = rpassword::prompt_password("Repeat it: ").map_err(io)?;
        if first != second {
            return Err(AdminError::Other(anyhow::anyhow!("the two passwords differ")));
        }
        return Ok(first);
    }
    let mut input = String::new();
    std::io::stdin().take(4096).read_to_string(&mut input).map_err(io)?;
    let trimmed = input.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&input);
    Ok(trimmed.to_owned())
}

/// A small pool on `DATABASE_URL`, after checking the schema is the binary's.
async fn connect(vars: &Vars) -> Result<Pool, String> {
    let mut problems = Vec::new();
    let Some(settings) = crate::config::database::database(vars, &mut problems) else {
        return Err(problems.iter().map(|p| format!("{}: {}", p.subject, p.what)).collect::<Vec<_>>().join("; "));
    };
    let client = settings.connect().await.map_err(|e| format!("cannot connect to {}: {e}", settings.describe()))?;
    // In a transaction, so that a transaction pooler keeps one server connection for it.
    // (and without statements another process left on the pooler's server connection)
    let begin = match settings.pooler() {
        db::Pooler::Transaction => "BEGIN READ ONLY; DEALLOCATE ALL",
        _ => "BEGIN READ ONLY",
    };
    client.batch_execute(begin).await.map_err(|e| db::describe_error(&e))?;
    let status = db::migrate::status(&client).await.map_err(|e| db::describe_error(&e))?;
    client.batch_execute("COMMIT").await.map_err(|e| db::describe_error(&e))?;
    if !status.is_current() {
        return Err(
            "the database schema is not this binary's; run: DATABASE_URL='<owner role URL>' moat migrate".into()
        );
    }
    settings.pool(2)
}

async fn rotate_encryption_key(pool: &Pool, vars: &Vars, batch: i64) -> ExitCode {
    let (current, previous) = match crate::config::encryption_keys(vars) {
        Ok(keys) => keys,
        Err(problems) => {
            for problem in problems {
                eprint!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let sealer = crate::crypto::Sealer::new(current, previous);
    println!("re-encrypting stored credentials under the current MOAT_ENCRYPTION_KEY");
    let result = crate::integrations::rekey::rotate(pool, &sealer, batch, |p| {
        println!("org {}: re-encrypted {} in this batch, {} left", p.org, p.rekeyed, p.remaining);
    })
    .await;
    match result {
        Ok(total) => {
            println!("done: {total} integration(s) re-encrypted; every credential is under the current key");
            println!(
                "keep the previous key configured for 10 more minutes (connect flows in progress), then remove it"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "moat admin: rotation stopped: {e:#}\nmoat admin: it is resumable: fix the cause and run it again"
            );
            ExitCode::FAILURE
        }
    }
}
