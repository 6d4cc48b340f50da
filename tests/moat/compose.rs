//! docker-compose.yml, run the way its containers would run it. There is no
//! Docker engine here, so each Moat service is emulated from the file itself:
//! its `command`, its `environment` (compose interpolation applied, the
//! `${…}` placeholders given generated values), its `secrets:` (files owned by
//! the image's user, at the paths the environment names) and its volumes, run
//! as the image's user (uid 10001, from the Dockerfile) in the image's working
//! directory (`/`), against a real PostgreSQL (the database URLs in the secret
//! files point at the test cluster instead of `db:5432`). `migrate` must exit
//! 0, `serve` must pass `moat check` and serve, `runner` must start, and
//! every health check the file declares must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::process::MOAT;
use crate::harness::{self, TestDb};

const IMAGE_UID: u32 = 10001;

fn repository(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

/// The compose file, parsed.
fn compose() -> Yaml {
    let text = std::fs::read_to_string(repository("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// A service's key, looking through `<<:` merges (compose's YAML merge keys).
fn key<'a>(service: &'a Yaml, name: &str) -> &'a Yaml {
    let own = &service[name];
    if !own.is_badvalue() {
        return own;
    }
    &service["<<"][name]
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec().unwrap_or_else(|| panic!("not a list: {list:?}")).iter().map(scalar).collect()
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Compose's variable interpolation: `${NAME}`, `${NAME:-default}`, `${NAME:?message}`, from `dotenv`.
fn interpolate(raw: &str, dotenv: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("an unclosed ${") + start;
        let expr = &rest[start + 2..end];
        let (name, fallback) = match (expr.split_once(":-"), expr.split_once(":?")) {
            (Some((name, default)), _) => (name, Some(default.to_owned())),
            (_, Some((name, _))) => (name, None),
            _ => (expr, None),
        };
        let value = dotenv.get(name).cloned().or(fallback);
        out.push_str(&value.unwrap_or_else(|| panic!("compose would refuse: {name} is not set ({raw})")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs `moat ARGS` as the image's user, in `/`, with exactly `env` (plus what Docker adds).
fn as_image_user(args: &[String], env: &BTreeMap<String, String>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([&format!("--reuid={IMAGE_UID}"), &format!("--regid={IMAGE_UID}"), "--clear-groups", "--", MOAT])
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(mut command: Command) -> (i32, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), command.output()).await.unwrap().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A file owned by the image's user, mode 0400 (as the compose file tells operators to make them).
fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::os::unix::fs::chown(&path, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    path
}

/// Whether the process is non-dumpable: its /proc files then belong to root, not to its own user.
fn non_dumpable(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/environ")).map(|m| m.uid() == 0).unwrap_or(false)
}

/// The environment of `service`, as the container would get it: interpolated,
/// with `/run/secrets/NAME` and volume paths mapped to where this test put them.
fn service_env(
    file: &Yaml,
    service: &str,
    dotenv: &BTreeMap<&str, String>,
    paths: &[(String, String)],
) -> BTreeMap<String, String> {
    let service = &file["services"][service];
    let mut env = BTreeMap::new();
    for (name, value) in key(service, "environment").as_hash().expect("environment is a mapping") {
        let mut value = interpolate(&scalar(value), dotenv);
        for (from, to) in paths {
            value = value.replace(from.as_str(), to);
        }
        env.insert(scalar(name), value);
    }
    env
}

#[tokio::test]
async fn the_compose_services_start_as_their_containers_would() {
    if !crate::harness::pg::is_root() {
        eprintln!("skipped: running as uid {IMAGE_UID} needs root (CI runs as root)");
        return;
    }
    let file = compose();
    let dockerfile = std::fs::read_to_string(repository("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("USER {IMAGE_UID}:{IMAGE_UID}")), "the image's user changed");
    assert!(dockerfile.contains("WORKDIR /\n"), "the image's working directory changed");
    for service in ["migrate", "moat", "runner"] {
        let anchor = &file["services"][service];
        assert_eq!(key(anchor, "read_only").as_bool(), Some(true), "{service}: root filesystem not read-only");
        assert_eq!(strings(key(anchor, "cap_drop")), ["ALL"], "{service}");
    }

    // Where compose would mount things, and what the operator would have created.
    let db = TestDb::empty().await;
    let port = db.tls().expect("a local cluster with TCP").port;
    let secrets = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(files.path(), Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // The volume's mount point is made by the image, owned by its user, mode 0700.
        assert!(dockerfile.contains("install -d -o 10001 -g 10001 -m 0700 /var/lib/moat/files"), "{dockerfile}");
    }
    let url = |role: &str| {
        let password = moat::config::keys::generate_encryption().replace(['+', '/', '='], "0");
        format!("postgresql://{role}:{password}@127.0.0.1:{port}/{}?sslmode=disable", db.name)
    };
    let generated: BTreeMap<&str, String> = BTreeMap::from([
        ("signing_key", moat::config::keys::generate_signing()),
        ("encryption_key", moat::config::keys::generate_encryption()),
        ("postgres_password", "unused-here".to_owned()),
        ("owner_database_url", url("moat_owner")),
        ("app_database_url", url("moat_app")),
        ("runner_database_url", url("moat_runner_app")),
    ]);
    let declared = file["secrets"].as_hash().expect("top-level secrets");
    let mut paths = Vec::new();
    for (name, spec) in declared {
        let name = scalar(name);
        assert!(scalar(&spec["file"]).starts_with("./secrets/"), "{name}: {spec:?}");
        let value = generated.get(name.as_str()).unwrap_or_else(|| panic!("an unexpected secret {name}"));
        let path = secret_file(secrets.path(), &name, value);
        paths.push((format!("/run/secrets/{name}"), path.display().to_string()));
    }
    let volume = strings(key(&file["services"]["moat"], "volumes"));
    assert_eq!(volume, ["moat-files:/var/lib/moat/files"]);
    paths.push(("/var/lib/moat/files".to_owned(), files.path().display().to_string()));
    // The published port and the metrics port, moved to free ones (several tests share this host).
    let (http_port, metrics_port) = (harness::free_port(), harness::free_port());
    paths.push(("0.0.0.0:8080".to_owned(), format!("0.0.0.0:{http_port}")));
    paths.push(("127.0.0.1:9464".to_owned(), format!("127.0.0.1:{metrics_port}")));
    let dotenv = BTreeMap::from([("MOAT_PUBLIC_URL", "https://moat.example.com".to_owned())]);
    for service in ["migrate", "moat", "runner"] {
        let service_secrets = strings(key(&file["services"][service], "secrets"));
        // Every secret file a service's environment names is one of its own secrets.
        for value in service_env(&file, service, &dotenv, &[]).values() {
            if let Some(name) = value.strip_prefix("/run/secrets/") {
                assert!(
                    service_secrets.iter().any(|s| s == name),
                    "{service}: {value} is not among {service_secrets:?}"
                );
            }
        }
        let env = service_env(&file, service, &dotenv, &paths);
        // No secret travels as a plain environment value (docker inspect shows those).
        for (name, value) in &env {
            assert!(
                !generated.values().any(|secret| value.contains(secret.as_str())),
                "{service}: {name} holds a secret"
            );
        }
    }
    let env = |service: &str| service_env(&file, service, &dotenv, &paths);
    let command = |service: &str| strings(key(&file["services"][service], "command"));

    // migrate: exits 0 (and a second time too).
    let (code, out) = finish(as_image_user(&command("migrate"), &env("migrate"))).await;
    assert_eq!(code, 0, "migrate failed:\n{out}");
    assert!(out.contains("applied V1__foundation"), "{out}");
    // The runtime roles' memberships the compose db-init grants (the test cluster has the roles).
    // serve: every startup check passes, then it serves and its health check passes.
    let (code, out) = finish(as_image_user(&["check".to_owned()], &env("moat"))).await;
    assert_eq!(code, 0, "moat check refused the compose configuration:\n{out}");
    let mut serve = as_image_user(&command("moat"), &env("moat")).spawn().unwrap();
    let probe = |service: &str| {
        let test = strings(&file["services"][service]["healthcheck"]["test"]);
        assert_eq!(test[..2], ["CMD".to_owned(), "moat".to_owned()], "{service}: {test:?}");
        let mut args: Vec<String> = test[2..].to_vec();
        for arg in &mut args {
            *arg = arg.replace(":8080/", &format!(":{http_port}/")).replace(":9464/", &format!(":{metrics_port}/"));
        }
        args
    };
    let healthy = |service: &'static str| {
        let (args, env) = (probe(service), env(service));
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (code, out) = finish(as_image_user(&args, &env)).await;
                if code == 0 {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{service}'s health check kept failing: {out}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    healthy("moat").await;
    assert!(non_dumpable(serve.id().unwrap()), "serve is dumpable: its environment is readable by its own user");

    // runner: starts, and its health check passes.
    let mut runner = as_image_user(&command("runner"), &env("runner")).spawn().unwrap();
    healthy("runner").await;
    assert!(non_dumpable(runner.id().unwrap()), "runner is dumpable");

    // The files volume really is where uploads go: an admin made with the CLI uploads one.
    let admin_env = env("moat");
    let (code, org) = finish(as_image_user(&["admin".into(), "create-org".into(), "Acme".into()], &admin_env)).await;
    assert_eq!(code, 0, "{org}");
    let org = org.lines().find(|l| uuid::Uuid::parse_str(l.trim()).is_ok()).expect("an org id").trim().to_owned();
    let args: Vec<String> =
        ["admin", "create-user", "--org", &org, "--email", "ada@example.com", "--generate-password"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    let (code, out) = finish(as_image_user(&args, &admin_env)).await;
    assert_eq!(code, 0, "{out}");
    let password = out.lines().find_map(|l| l.strip_prefix("password: ")).expect("a generated password").to_owned();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    let token = crate::harness::http::login_at(&http, &base, "ada@example.com", &password).await;
    let boundary = "compose-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let uploaded = http
        .post(format!("{base}/v1/files"))
        .bearer_auth(&token)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201, "{}", uploaded.text().await.unwrap());
    let stored: Vec<_> =
        walkdir::WalkDir::new(files.path()).into_iter().flatten().filter(|e| e.file_type().is_file()).collect();
    assert_eq!(stored.len(), 1, "the upload is not on the files volume");

    let _ = serve.start_kill();
    let _ = runner.start_kill();
    let _ = (serve.wait().await, runner.wait().await);
}
