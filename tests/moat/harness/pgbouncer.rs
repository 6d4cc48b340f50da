//! Debian's PgBouncer (1.18: no prepared-statement support) in transaction
//! mode in front of a test database, as a managed-Postgres deployment has it.
//!
//! Its server pool is deliberately small, so consecutive transactions of one
//! client land on different server connections and anything that relies on
//! session state across transactions fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pg::{Role, TestDb, is_root, postgres_command};

const BINARY: &str = "/usr/sbin/pgbouncer";

pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    database: String,
}

impl PgBouncer {
    /// Starts PgBouncer for `db` with `pool_size` server connections per user.
    pub async fn start(db: &TestDb, pool_size: u32) -> Self {
        assert!(
            Path::new(BINARY).is_file(),
            "PgBouncer is not installed: apt-get install -y pgbouncer   (.ci/run installs it)"
        );
        let dir = tempfile::Builder::new().prefix("moat-pgb-").tempdir_in("/tmp").unwrap();
        let as_postgres = is_root();
        let port = super::free_port();
        let (host, server_port, password) = db.server();
        let password = password.unwrap_or_default();
        let users: String = ["moat_app", "moat_runner_app", "moat_owner"]
            .iter()
            .map(|user| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.path().join("userlist.txt"), users).unwrap();
        let config = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 1000\n\
             server_reset_query =\n\
             server_round_robin = 1\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.path().display(),
        );
        let config_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&config_path, config).unwrap();
        if as_postgres {
            let status = Command::new("chown").arg("-R").arg("postgres:").arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let mut command = postgres_command(Path::new(BINARY), as_postgres);
        let child = command
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self { port, child, dir, database: db.name.clone() };
        bouncer.wait_ready().await;
        bouncer
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `role`'s connection string through PgBouncer.
    pub fn url(&self, role: Role) -> String {
        let user = match role {
            Role::App => "moat_app",
            Role::Runner => "moat_runner_app",
            Role::Owner => "moat_owner",
            other => panic!("pgbouncer has no user for {other:?}"),
        };
        format!("host=127.0.0.1 port={} user={user} dbname={} sslmode=disable", self.port, self.database)
    }

    /// PgBouncer's own log (errors, and the servers it used).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
