//! External agents over the JSON-lines protocol, with real `moat runner`
//! processes and real child processes: the shipped echo agent end to end, and
//! misbehaving agents — garbage, a 10 MB line, never exiting, ignoring
//! SIGTERM, forking children that outlive it, leaking secrets, snooping on
//! the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::http::{get_json, login_at, post_json, wait_run_status};
use crate::harness::{self, Env, Role as DbRole, TestDb};

const PYTHON: &str = "/usr/bin/python3";

/// Misbehaving agents, each a few lines of Python.
const AGENTS: &[(&str, &str)] = &[
    ("garbage", "import sys; sys.stdin.readline(); print('this is not json', flush=True)\nimport time; time.sleep(30)"),
    (
        "hugeline",
        "import sys; sys.stdin.readline(); sys.stdout.write('{\"type\":\"delta\",\"text\":\"' + 'x' * 10_000_000 + '\"}\\n'); sys.stdout.flush()",
    ),
    ("forever", "import sys, time; sys.stdin.readline(); time.sleep(3600)"),
    (
        "stubborn",
        "import os, signal, sys, time, json\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsys.stdin.readline()\n\
         open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n\
         print(json.dumps({'type': 'delta', 'text': 'started'}), flush=True)\ntime.sleep(3600)",
    ),
    (
        "forker",
        "import os, subprocess, sys, json\nsys.stdin.readline()\n\
         child = subprocess.Popen(['/bin/sleep', '3600'])\nopen(os.environ['PIDFILE'], 'w').write(str(child.pid))\n\
         print(json.dumps({'type': 'delta', 'text': 'forked'}), flush=True)\nprint(json.dumps({'type': 'done'}), flush=True)",
    ),
    (
        "leaky",
        "import sys, json\nsys.stdin.readline()\n\
         print(json.dumps({'type': 'delta', 'text': 'key AKIAIOSFODNN7EXAMPLE and ghp_1234567890abcdefghijABCDEFGHIJ123456'}), flush=True)\n\
         print(json.dumps({'type': 'tool', 'name': 'env', 'status': 'completed', 'data': {'password': 'hunter2-hunter2'}}), flush=True)\n\
         sys.stderr.write('stderr has sk-proj-4fT9kQ2mX8vL1nB7cR3pW6yZ0aE5hJ too\\n')\n\
         print(json.dumps({'type': 'done'}), flush=True)",
    ),
    (
        "snoop",
        "import os, sys, json\nsys.stdin.readline()\n\
         print(json.dumps({'type': 'delta', 'text': json.dumps(sorted(os.environ))}), flush=True)\n\
         print(json.dumps({'type': 'done'}), flush=True)",
    ),
];

struct World {
    base: String,
    token: String,
    http: reqwest::Client,
    pidfile: PathBuf,
    _serving: harness::process::Serving,
    runner: harness::process::Serving,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

fn agents_file(dir: &Path) -> PathBuf {
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/echo.py");
    let mut toml = format!("[agents.echo]\ncommand = \"{PYTHON}\"\nargs = [\"{}\"]\n", echo.display());
    for (name, code) in AGENTS {
        let script = dir.join(format!("{name}.py"));
        std::fs::write(&script, code).unwrap();
        toml.push_str(&format!(
            "[agents.{name}]\ncommand = \"{PYTHON}\"\nargs = [\"{}\"]\nenv = [\"PIDFILE\", \"LANG\"]\ncancel_grace = \"1s\"\n",
            script.display()
        ));
    }
    // One agent runs as another OS user: it must not be able to read the runner's secrets.
    let jailed = dir.join("jailed.py");
    std::fs::write(
        &jailed,
        "import os, sys, json\nsys.stdin.readline()\n\
         try:\n    seen = open('/proc/%d/environ' % os.getppid(), 'rb').read().decode('latin-1')\nexcept OSError as e:\n    seen = 'denied: %s' % e.strerror\n\
         print(json.dumps({'type': 'delta', 'text': 'uid=%d %s' % (os.getuid(), seen)}), flush=True)\n\
         print(json.dumps({'type': 'done'}), flush=True)",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&jailed, std::fs::Permissions::from_mode(0o644)).unwrap();
    toml.push_str(&format!(
        "[agents.jailed]\ncommand = \"{PYTHON}\"\nargs = [\"{}\"]\nuser = \"nobody\"\n",
        jailed.display()
    ));
    // A family that ignores SIGTERM, with a long grace: only the runner's exit can end it.
    let family = dir.join("family.py");
    std::fs::write(
        &family,
        "import os, signal, subprocess, sys, time, json\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsys.stdin.readline()\n\
         child = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)'])\n\
         open(os.environ['PIDFILE'], 'w').write(str(child.pid))\n\
         print(json.dumps({'type': 'delta', 'text': 'started'}), flush=True)\ntime.sleep(3600)",
    )
    .unwrap();
    toml.push_str(&format!(
        "[agents.family]\ncommand = \"{PYTHON}\"\nargs = [\"{}\"]\nenv = [\"PIDFILE\"]\ncancel_grace = \"60s\"\n",
        family.display()
    ));
    let path = dir.join("agents.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let file = agents_file(dir.path());
    let pidfile = dir.path().join("pid");
    let db = TestDb::migrated().await;
    let env = Env::production(&db).set("MOAT_AGENTS_FILE", file.to_str().unwrap());
    let serving = harness::serve(&env).await;
    let runner_env = Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_AGENTS_FILE", file.to_str().unwrap())
        .set("MOAT_RUN_MAX_DURATION", "4s")
        .set("MOAT_RUNNER_SHUTDOWN_GRACE", "1s")
        .set("PIDFILE", pidfile.to_str().unwrap())
        .set("LANG", "C.UTF-8")
        .set("SECRET_NOT_PASSED", "do-not-leak");
    let runner = harness::runner(&runner_env).await;
    let admin = harness::http::admin_in(&db).await;
    let http = reqwest::Client::new();
    let base = serving.url("");
    let token = login_at(&http, &base, admin.email, &admin.password).await;
    World { base, token, http, pidfile, _serving: serving, runner, _dir: dir, _db: db }
}

impl World {
    /// Starts a run of `agent`; returns (conversation id, run id).
    async fn start(&self, agent: &str, input: Value) -> (String, String) {
        let conv = post_json(
            &self.http,
            &format!("{}/v1/conversations", self.base),
            Some(&self.token),
            json!({"title": agent, "agent": agent}),
        )
        .await;
        let conv = conv["id"].as_str().unwrap_or_else(|| panic!("{conv}")).to_owned();
        let run = post_json(
            &self.http,
            &format!("{}/v1/conversations/{conv}/runs", self.base),
            Some(&self.token),
            json!({"input": input}),
        )
        .await;
        (conv, run["id"].as_str().unwrap().to_owned())
    }

    async fn events(&self, conv: &str) -> Vec<Value> {
        let page =
            get_json(&self.http, &format!("{}/v1/conversations/{conv}/events?limit=200", self.base), &self.token).await;
        page["items"].as_array().unwrap().clone()
    }

    async fn run(&self, run: &str) -> Value {
        get_json(&self.http, &format!("{}/v1/runs/{run}", self.base), &self.token).await
    }

    async fn finished(&self, run: &str, status: &str, error: Option<&str>) {
        wait_run_status(&self.http, &self.base, &self.token, run, status).await;
        assert_eq!(self.run(run).await["error_code"].as_str(), error);
    }

    /// The run's assembled text: its `message.delta`s in order.
    async fn text(&self, conv: &str) -> String {
        let events = self.events(conv).await;
        events.iter().filter(|e| e["kind"] == "message.delta").map(|e| e["data"]["text"].as_str().unwrap()).collect()
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pidfile).unwrap().trim().parse().unwrap()
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose; /proc/<pid>/stat's state field says which.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

async fn gone(pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "process {pid} outlived its run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_echo_agent_streams_asks_and_is_refused_a_token_it_cannot_have() {
    let w = world().await;
    let (conv, run) = w
        .start(
            "echo",
            json!({"text": "one two three", "ask": "Go on?", "integration_id": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    wait_run_status(&w.http, &w.base, &w.token, &run, "waiting_input").await;
    let input = w.run(&run).await["pending_input"]["id"].as_str().unwrap().to_owned();
    let answered =
        post_json(&w.http, &format!("{}/v1/inputs/{input}", w.base), Some(&w.token), json!({"value": "yes"})).await;
    assert_eq!(answered["status"], "answered", "{answered}");
    w.finished(&run, "succeeded", None).await;
    let events = w.events(&conv).await;
    assert_eq!(w.text(&conv).await, "one two three You said: yes [no token (tokens_unavailable)]");
    assert!(events.iter().any(|e| e["kind"] == "tool.completed" && e["data"]["data"]["words"] == 3), "{events:?}");
}

#[tokio::test]
async fn a_garbage_line_or_a_10_mb_line_fails_the_run() {
    let w = world().await;
    let (_, garbage) = w.start("garbage", json!({})).await;
    let (_, huge) = w.start("hugeline", json!({})).await;
    w.finished(&garbage, "failed", Some("agent_protocol_error")).await;
    w.finished(&huge, "failed", Some("agent_protocol_error")).await;
}

#[tokio::test]
async fn an_agent_that_never_exits_is_killed_at_the_max_duration() {
    let w = world().await;
    let (_, run) = w.start("forever", json!({})).await;
    w.finished(&run, "failed", Some("run_timeout")).await;
}

#[tokio::test]
async fn cancel_ends_an_agent_that_ignores_sigterm() {
    let w = world().await;
    let (conv, run) = w.start("stubborn", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !w.events(&conv).await.iter().any(|e| e["kind"] == "message.delta") {
        assert!(tokio::time::Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = w.pid();
    assert!(alive(pid));
    let cancelled = w.http.post(format!("{}/v1/runs/{run}/cancel", w.base)).bearer_auth(&w.token).send().await.unwrap();
    assert_eq!(cancelled.status(), 202);
    w.finished(&run, "cancelled", None).await;
    gone(pid).await; // SIGTERM ignored: SIGKILL after the 1 s grace
    assert!(w.runner.output().contains("agent ignored SIGTERM"), "{}", w.runner.output());
}

/// A runner that shuts down while an agent's family ignores SIGTERM (and its
/// cancel grace is long) still leaves no process behind.
#[tokio::test]
async fn nothing_an_agent_started_outlives_its_runner() {
    let w = world().await;
    let (conv, _run) = w.start("family", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !w.events(&conv).await.iter().any(|e| e["kind"] == "message.delta") {
        assert!(tokio::time::Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let child = w.pid();
    assert!(alive(child));
    let World { runner, .. } = w;
    let finished = runner.terminate().await;
    assert!(finished.status.success(), "{}", finished.stderr);
    gone(child).await;
}

/// A runner killed outright (SIGKILL: no shutdown, no cleanup) takes its
/// agents with it: they start with a parent-death signal.
#[tokio::test]
async fn an_agent_dies_with_a_killed_runner() {
    let w = world().await;
    let (conv, _run) = w.start("stubborn", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !w.events(&conv).await.iter().any(|e| e["kind"] == "message.delta") {
        assert!(tokio::time::Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = w.pid();
    assert!(alive(agent));
    let World { runner, .. } = w;
    runner.kill().await;
    gone(agent).await;
}

#[tokio::test]
async fn children_an_agent_forks_do_not_outlive_it() {
    let w = world().await;
    let (_, run) = w.start("forker", json!({})).await;
    w.finished(&run, "succeeded", None).await;
    gone(w.pid()).await;
}

#[tokio::test]
async fn secrets_an_agent_prints_are_redacted_and_its_environment_is_clean() {
    let w = world().await;
    let (conv, run) = w.start("leaky", json!({})).await;
    w.finished(&run, "succeeded", None).await;
    let stored = serde_json::to_string(&w.events(&conv).await).unwrap();
    for secret in ["AKIAIOSFODNN7EXAMPLE", "ghp_1234567890abcdefghij", "hunter2-hunter2"] {
        assert!(!stored.contains(secret), "{secret} was stored: {stored}");
    }
    assert!(stored.contains("[REDACTED:aws_access_key]"), "{stored}");
    let logged = w.runner.output();
    assert!(logged.contains("agent stderr"), "{logged}");
    assert!(!logged.contains("4fT9kQ2mX8vL1nB7cR3pW6yZ"), "stderr logged unsanitized: {logged}");

    let (conv, run) = w.start("snoop", json!({})).await;
    w.finished(&run, "succeeded", None).await;
    let events = w.events(&conv).await;
    let seen =
        events.iter().find(|e| e["kind"] == "message.delta").unwrap()["data"]["text"].as_str().unwrap().to_owned();
    let names: Vec<String> = serde_json::from_str(&seen).unwrap();
    let extra: Vec<&String> = names.iter().filter(|n| !["PIDFILE", "LANG", "LC_CTYPE"].contains(&n.as_str())).collect();
    assert!(extra.is_empty(), "the agent saw more than its allowlist: {names:?}");
    assert!(names.contains(&"PIDFILE".to_owned()));
}

/// An agent declared with `user` runs as that user and cannot read the
/// runner's environment (DATABASE_URL) through /proc.
#[tokio::test]
async fn an_agent_running_as_another_user_cannot_read_the_runners_secrets() {
    let w = world().await;
    let (conv, run) = w.start("jailed", json!({})).await;
    w.finished(&run, "succeeded", None).await;
    let events = w.events(&conv).await;
    let seen =
        events.iter().find(|e| e["kind"] == "message.delta").unwrap()["data"]["text"].as_str().unwrap().to_owned();
    assert!(!seen.starts_with("uid=0 "), "the agent ran as root: {seen}");
    assert!(seen.contains("denied"), "the agent read the runner's environment: {seen}");
    assert!(!seen.contains("DATABASE_URL"), "{seen}");
}

#[tokio::test]
async fn only_declared_agents_exist_and_secret_variables_cannot_be_passed() {
    let w = world().await;
    let refused = w
        .http
        .post(format!("{}/v1/conversations", w.base))
        .bearer_auth(&w.token)
        .json(&json!({"title": "x", "agent": "/bin/sh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(crate::harness::error_code(refused).await, "unknown_agent");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    for (toml, expected) in [
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"DATABASE_URL\"]\n"), "env may not pass DATABASE_URL"),
        (
            format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"MOAT_SIGNING_KEY\"]\n"),
            "env may not pass MOAT_SIGNING_KEY",
        ),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"PGPASSWORD\"]\n"), "env may not pass PGPASSWORD"),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"PGPASSFILE\"]\n"), "env may not pass PGPASSFILE"),
        (
            format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"DATABASE_URL_FILE\"]\n"),
            "env may not pass DATABASE_URL_FILE",
        ),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nenv = [\"CAL_SECRET\"]\n"), "env may not pass CAL_SECRET"),
        ("[agents.x]\ncommand = \"python3\"\n".to_owned(), "must be an absolute path"),
        ("[agents.x]\ncommand = \"/nonexistent/agent\"\n".to_owned(), "does not exist"),
        (format!("[agents.demo]\ncommand = \"{PYTHON}\"\n"), "`demo` is built in"),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nshell = true\n"), "unknown field"),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nuser = \"root\"\n"), "user may not be root"),
        (format!("[agents.x]\ncommand = \"{PYTHON}\"\nuser = \"no-such-user-here\"\n"), "does not exist"),
    ] {
        std::fs::write(&bad, toml).unwrap();
        // A provider's client secret is named by the providers file: it must not reach an agent either.
        let providers = dir.path().join("providers.toml");
        std::fs::write(
            &providers,
            "[providers.cal]\nauthorize_url = \"https://cal.example.com/a\"\ntoken_url = \"https://cal.example.com/t\"\n\
             client_id = \"x\"\nclient_secret_env = \"CAL_SECRET\"\n",
        )
        .unwrap();
        let env = Env::default()
            .set("DATABASE_URL", "host=/nonexistent user=x dbname=x")
            .set("MOAT_AGENTS_FILE", bad.to_str().unwrap())
            .set("MOAT_PROVIDERS_FILE", providers.to_str().unwrap());
        let out = harness::run(&["runner"], &env).await;
        assert_eq!(out.status.code(), Some(1), "{expected}");
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
    }
}

/// Agents get integration tokens through the broker: three agents asking at
/// once for an expired integration cause exactly one provider refresh, and an
/// agent whose declaration does not list the provider gets none.
#[tokio::test]
async fn agents_get_broker_tokens_refreshed_once_and_only_for_declared_providers() {
    use crate::harness::provider::{CLIENT_SECRET, FakeProvider};
    let provider = FakeProvider::start().await;
    provider.set_latency(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/echo.py");
    let agents = dir.path().join("agents.toml");
    std::fs::write(
        &agents,
        format!(
            "[agents.tokened]\ncommand = \"{PYTHON}\"\nargs = [\"{e}\"]\nproviders = [\"fake\"]\n\
             [agents.echo]\ncommand = \"{PYTHON}\"\nargs = [\"{e}\"]\n",
            e = echo.display()
        ),
    )
    .unwrap();
    let providers = provider.providers_file(dir.path());
    let db = TestDb::migrated().await;
    let env = Env::production(&db)
        .set("MOAT_AGENTS_FILE", agents.to_str().unwrap())
        .set("MOAT_PROVIDERS_FILE", providers.to_str().unwrap())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow());
    let serving = harness::serve(&env).await;
    let runner_env = Env::default()
        .set("DATABASE_URL", &db.url(DbRole::Runner))
        .set("MOAT_AGENTS_FILE", agents.to_str().unwrap())
        .set("MOAT_PROVIDERS_FILE", providers.to_str().unwrap())
        .set("FAKE_PROVIDER_SECRET", CLIENT_SECRET)
        .set("MOAT_EGRESS_ALLOW", &provider.egress_allow())
        .set("MOAT_ENCRYPTION_KEY", env.get("MOAT_ENCRYPTION_KEY").unwrap());
    let runner = harness::runner(&runner_env).await;
    let admin = harness::http::admin_in(&db).await;
    let http = reqwest::Client::new();
    let base = serving.url("");
    let token = login_at(&http, &base, admin.email, &admin.password).await;
    let import = json!({"provider": "fake", "account": "cal", "access_token": "stale",
        "refresh_token": provider.issue_refresh_token(), "expires_in": 0});
    let integration = post_json(&http, &format!("{base}/v1/integrations"), Some(&token), import).await;
    let integration = integration["id"].as_str().unwrap().to_owned();
    let w = World {
        base: base.clone(),
        token: token.clone(),
        http: http.clone(),
        pidfile: dir.path().join("unused"),
        _serving: serving,
        runner,
        _dir: dir,
        _db: db,
    };
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(w.start("tokened", json!({"text": "t", "integration_id": integration})).await);
    }
    for (conv, run) in &runs {
        w.finished(run, "succeeded", None).await;
        assert_eq!(w.text(conv).await, "t  [a token]");
    }
    assert_eq!(provider.refreshes(), 1, "three agents, one refresh");
    let (conv, run) = w.start("echo", json!({"text": "t", "integration_id": integration})).await;
    w.finished(&run, "succeeded", None).await;
    assert_eq!(w.text(&conv).await, "t  [no token (provider_not_allowed)]");
}
