//! One throwaway PostgreSQL cluster per test run, one fresh database per test.
//!
//! The cluster is started from the system's binaries (initdb + postgres, 14+)
//! in a short temp dir, listening on a unix socket only (no port races). As
//! root it runs as the `postgres` OS user (initdb refuses root). A supervisor
//! shell stops it and removes the directory when this test process exits,
//! however it exits. With `MOAT_TEST_DATABASE_URL` set (an admin connection),
//! that server is used instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The roles every test database knows (created once per cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Owns the schema; runs `moat migrate`.
    Owner,
    /// Plain runtime role, member of `moat_runtime`: what `serve` uses.
    App,
    /// A BYPASSRLS role (member of `moat_runtime`): `serve` must refuse it.
    Bypass,
    /// The cluster superuser: `serve` must refuse it.
    Superuser,
    /// A runner's login role: member of `moat_runtime` and `moat_runner`.
    Runner,
}

impl Role {
    fn name(self, cluster: &Cluster) -> &str {
        match self {
            Self::Owner => "moat_owner",
            Self::App => "moat_app",
            Self::Bypass => "moat_bypass",
            Self::Runner => "moat_runner_app",
            Self::Superuser => &cluster.superuser,
        }
    }
}

pub struct Cluster {
    /// Host (socket dir or name) and port of the server.
    host: String,
    port: u16,
    superuser: String,
    superuser_password: Option<String>,
    /// Password of the test roles (external servers may not trust local connections).
    role_password: Option<String>,
    template: String,
    /// Local clusters also listen on 127.0.0.1 with TLS (external servers: unknown).
    tls: Option<DbTls>,
    /// A local cluster's directory (its supervisor watches `down` in it).
    dir: Option<PathBuf>,
}

/// The local cluster's TLS: a server certificate for `localhost` only, signed by
/// a test CA, and a second CA that signed nothing (to be refused).
#[derive(Debug, Clone)]
pub struct DbTls {
    pub port: u16,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
}

impl DbTls {
    fn create(dir: &Path, as_postgres: bool, port: u16) -> Self {
        let ca = test_ca("moat test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &ca).expect("sign");
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod key");
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&cert_path).arg(&key_path));
        }
        let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        std::fs::write(&other_path, test_ca("an unrelated CA").pem()).expect("write other ca");
        Self { port, ca: ca_path, other_ca: other_path }
    }
}

fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key")).expect("ca")
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster for this test run, started on first use (and tried only once).
pub fn cluster() -> &'static Cluster {
    let cluster = CLUSTER.get_or_init(|| {
        // Initialisation runs its own runtime, so do it off any test's runtime thread.
        std::thread::spawn(Cluster::start).join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
    });
    match cluster {
        Ok(cluster) => cluster,
        Err(e) => panic!("the test PostgreSQL could not be started: {e}"),
    }
}

impl Cluster {
    fn start() -> Self {
        let mut cluster = match std::env::var("MOAT_TEST_DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Self::external(&url),
            _ => Self::local(),
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(cluster.prepare());
        cluster
    }

    fn external(url: &str) -> Self {
        let config: tokio_postgres::Config = url.parse().expect("MOAT_TEST_DATABASE_URL is not a connection string");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        Self {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            superuser: config.get_user().unwrap_or("postgres").to_owned(),
            superuser_password: config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
            role_password: Some(moat::config::keys::generate_encryption().replace(['+', '/', '='], "x")),
            template: format!("{TEMPLATE_PREFIX}{}_{}", now_secs(), unique()),
            tls: None,
            dir: None,
        }
    }

    fn local() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("moat-pg-").tempdir_in("/tmp").expect("temp dir").keep();
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let data = dir.join("data");
        let mut initdb = postgres_command(&bin.join("initdb"), as_postgres);
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb);

        // The supervisor: starts postgres, and when this test process is gone
        // stops it (fast shutdown) and deletes the directory.
        let postgres = postgres_command(&bin.join("postgres"), as_postgres);
        let mut argv: Vec<String> = std::iter::once(postgres.get_program())
            .chain(postgres.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // TCP on loopback too, with TLS, so the database TLS checks can be attacked.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let tls = DbTls::create(&dir, as_postgres, port);
        let settings = format!(
            "listen_addresses=127.0.0.1 port={port} ssl=on ssl_cert_file={cert} ssl_key_file={key} \
             fsync=off synchronous_commit=off full_page_writes=off max_connections=300",
            cert = dir.join("server.crt").display(),
            key = dir.join("server.key").display(),
        );
        argv.extend(["-D".into(), data.display().to_string(), "-k".into(), dir.display().to_string()]);
        for setting in settings.split_whitespace() {
            argv.extend(["-c".into(), setting.to_owned()]);
        }
        // While "$dir/down" exists the server is stopped (fast shutdown) and
        // not restarted: that is how fault tests restart PostgreSQL.
        let script = r#"
            parent=$1; dir=$2; shift 2
            while kill -0 "$parent" 2>/dev/null; do
                if [ -e "$dir/down" ]; then sleep 0.05; continue; fi
                "$@" >>"$dir/postgres.log" 2>&1 &
                pg=$!
                while kill -0 "$parent" 2>/dev/null && kill -0 "$pg" 2>/dev/null && [ ! -e "$dir/down" ]; do
                    sleep 0.05
                done
                kill -INT "$pg" 2>/dev/null; wait "$pg"
                sleep 0.2
            done
            rm -rf "$dir"
        "#;
        // Deliberately never waited for: it must outlive this process to clean up.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("moat-test-pg")
            .arg(std::process::id().to_string())
            .arg(&dir)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the postgres supervisor");
        Self {
            host: dir.display().to_string(),
            port,
            superuser: "postgres".into(),
            superuser_password: None,
            role_password: None,
            template: "moat_template".into(),
            tls: Some(tls),
            dir: Some(dir),
        }
    }

    /// A cluster of the calling test's own (always local, never shared), for
    /// tests that stop and restart PostgreSQL. It lives until the process exits.
    pub fn private() -> &'static Cluster {
        let started = std::thread::spawn(|| {
            let mut cluster = Self::local();
            tokio::runtime::Runtime::new().expect("runtime").block_on(cluster.prepare());
            cluster
        });
        Box::leak(Box::new(started.join().expect("a private PostgreSQL")))
    }

    /// Stops the server (fast shutdown: sessions are cut) until [`Cluster::start_server`].
    pub async fn stop_server(&self) {
        let dir = self.dir.as_ref().expect("only a local cluster can be stopped");
        std::fs::write(dir.join("down"), b"").expect("write the down file");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connect_as(Role::Superuser, "postgres").await.is_ok() {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the server again and waits until it accepts connections.
    pub async fn start_server(&self) {
        let dir = self.dir.as_ref().expect("only a local cluster can be started");
        std::fs::remove_file(dir.join("down")).expect("remove the down file");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connect_as(Role::Superuser, "postgres").await.is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the server, creates the roles and a migrated template database.
    async fn prepare(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            match self.connect_as(Role::Superuser, "postgres").await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => {
                    panic!("test PostgreSQL did not start: {e} (log: {}/postgres.log)", self.host)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let version: i32 =
            admin.query_one("SELECT current_setting('server_version_num')::int", &[]).await.expect("version").get(0);
        assert!(version >= 140000, "PostgreSQL 14 or newer is required (found {version})");
        let password = match &self.role_password {
            Some(p) => format!("PASSWORD '{p}'"),
            None => String::new(),
        };
        for (role, attributes) in
            [("moat_owner", "CREATEROLE"), ("moat_app", ""), ("moat_bypass", "BYPASSRLS"), ("moat_runner_app", "")]
        {
            let exists = admin
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
                .await
                .expect("role lookup")
                .is_some();
            let verb = if exists { "ALTER" } else { "CREATE" };
            admin
                .batch_execute(&format!("{verb} ROLE {role} LOGIN {attributes} {password}"))
                .await
                .expect("create role");
        }
        let templates = admin
            .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&TEMPLATE_PREFIX])
            .await
            .expect("list templates");
        for name in templates.iter().map(|row| row.get::<_, String>(0)) {
            let created = name.trim_start_matches(TEMPLATE_PREFIX).split('_').next().and_then(|s| s.parse().ok());
            if name == self.template || now_secs().saturating_sub(created.unwrap_or(0)) > 3600 {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                admin.batch_execute(&sql).await.expect("drop stale template");
            }
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {} OWNER moat_owner", self.template))
            .await
            .expect("create template");
        let owner_url = self.url(Role::Owner, &self.template);
        let settings = moat::db::DatabaseSettings::parse(&owner_url).expect("owner url");
        moat::db::migrate::migrate(&settings).await.expect("migrate the template database");
        admin
            .batch_execute(
                "GRANT moat_runtime TO moat_app, moat_bypass, moat_runner_app; GRANT moat_runner TO moat_runner_app",
            )
            .await
            .expect("grant runtime roles");
    }

    async fn connect_as(&self, role: Role, dbname: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.url(role, dbname).parse::<tokio_postgres::Config>()?.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A key=value connection string for `role` on `dbname`.
    pub fn url(&self, role: Role, dbname: &str) -> String {
        let password = match role {
            Role::Superuser => self.superuser_password.clone(),
            _ => self.role_password.clone(),
        };
        let password = password.map(|p| format!(" password={p}")).unwrap_or_default();
        format!(
            "host={} port={} user={} dbname={dbname}{password} sslmode=disable",
            self.host,
            self.port,
            role.name(self)
        )
    }

    /// A superuser connection to the cluster's maintenance database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.connect_as(Role::Superuser, "postgres").await.expect("admin connection")
    }
}

#[derive(Debug, Clone)]
pub enum Upstream {
    Unix(String),
    Tcp(String),
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    cluster: &'static Cluster,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> Self {
        Self::create("migrated").await
    }

    /// As [`TestDb::migrated`], on `cluster` (e.g. a [`Cluster::private`] one).
    pub async fn migrated_in(cluster: &'static Cluster) -> Self {
        Self::create_in(cluster, "migrated").await
    }

    /// A fresh database with nothing in it (owned by the owner role).
    pub async fn empty() -> Self {
        Self::create("empty").await
    }

    async fn create(kind: &str) -> Self {
        Self::create_in(cluster(), kind).await
    }

    async fn create_in(cluster: &'static Cluster, kind: &str) -> Self {
        let name = format!("moat_test_{}_{}", std::process::id(), unique());
        let admin = cluster.admin().await;
        let sql = match kind {
            "migrated" => format!("CREATE DATABASE {name} TEMPLATE {} OWNER moat_owner", cluster.template),
            _ => format!("CREATE DATABASE {name} TEMPLATE template0 OWNER moat_owner"),
        };
        // Cloning fails while another session is still leaving the template: retry briefly.
        let mut attempts = 0;
        while let Err(e) = admin.batch_execute(&sql).await {
            attempts += 1;
            assert!(attempts < 50, "cannot create test database: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { name, cluster }
    }

    pub fn url(&self, role: Role) -> String {
        self.cluster.url(role, &self.name)
    }

    /// As [`TestDb::url`], but reaching the server through `127.0.0.1:port` (a proxy).
    pub fn url_via(&self, role: Role, port: u16) -> String {
        let url = self.url(role);
        let prefix = format!("host={} port={} ", self.cluster.host, self.cluster.port);
        format!("host=127.0.0.1 port={port} {}", url.trim_start_matches(&prefix))
    }

    /// Where the server really listens: a unix socket path, or host:port.
    pub fn upstream(&self) -> Upstream {
        match self.cluster.host.starts_with('/') {
            true => Upstream::Unix(format!("{}/.s.PGSQL.{}", self.cluster.host, self.cluster.port)),
            false => Upstream::Tcp(format!("{}:{}", self.cluster.host, self.cluster.port)),
        }
    }

    /// Creates an extra login role (dropped by the caller) and returns its connection string.
    pub async fn create_login_role(&self, role: &str) -> String {
        let password = self.cluster.role_password.as_ref().map(|p| format!(" PASSWORD '{p}'")).unwrap_or_default();
        self.admin().await.batch_execute(&format!("CREATE ROLE {role} LOGIN{password}")).await.expect("create role");
        self.url(Role::App).replace("user=moat_app", &format!("user={role}"))
    }

    /// The server's host (socket directory or name), port, and the test roles' password if any.
    pub fn server(&self) -> (String, u16, Option<String>) {
        (self.cluster.host.clone(), self.cluster.port, self.cluster.role_password.clone())
    }

    /// The cluster's TLS endpoint, when this run started the cluster itself.
    pub fn tls(&self) -> Option<&DbTls> {
        self.cluster.tls.as_ref()
    }

    /// A superuser connection to this database (to inspect or break things).
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.cluster.connect_as(Role::Superuser, &self.name).await.expect("admin connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (cluster, name) = (self.cluster, self.name.clone());
        // Drop cannot be async: use a short-lived runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(admin) = cluster.connect_as(Role::Superuser, "postgres").await {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// External servers keep no per-run cluster to delete, so templates carry their
/// creation time and runs drop those older than an hour.
const TEMPLATE_PREFIX: &str = "moat_tpl_";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unique() -> String {
    moat::config::keys::generate_encryption()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect::<String>()
        .to_lowercase()
}

pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

pub(crate) fn postgres_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where `initdb` and `postgres` live: PATH, then the usual package locations.
fn bin_dir() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    let mut candidates: Vec<PathBuf> = ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"]
        .iter()
        .flat_map(|root| std::fs::read_dir(root).into_iter().flatten().flatten())
        .map(|entry| entry.path().join("bin"))
        .filter(|dir| dir.join("initdb").is_file())
        .collect();
    // Highest version last (numeric suffix order), e.g. /usr/lib/postgresql/16/bin.
    candidates.sort_by_key(|dir| {
        dir.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.trim_start_matches("postgresql@").parse::<u32>().ok())
            .unwrap_or(0)
    });
    from_path.or_else(|| candidates.pop()).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres; version 14+) were not found on PATH or in /usr/lib/postgresql/*/bin.\n\
             Install them:\n  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y postgresql\n  macOS: brew install postgresql@16\n\
             or point the tests at an existing server: export MOAT_TEST_DATABASE_URL='postgresql://postgres:PASSWORD@localhost:5432/postgres'"
        )
    })
}
