//! A real headless Chromium (Debian's `chromium` + `chromium-driver`) driven
//! over WebDriver by fantoccini. No tool downloads a browser; a fresh
//! profile per test; no background networking (the machine's network is closed).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where screenshots go (`target/browser-artifacts`, kept after the run).
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`Browser::start`], with extra Chromium arguments (e.g. `--ignore-certificate-errors`).
    pub async fn start_with(extra: &[&str]) -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser tests need `apt-get install -y chromium chromium-driver`"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new().prefix("moat-chromium-").tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,900",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(str::to_owned)
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": args,
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => return Self { client, driver, _profile: profile },
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start a Chromium session: {last_error:?}");
    }

    /// Waits (up to 20 s) until `condition` holds, polling.
    pub async fn until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !condition().await {
            if tokio::time::Instant::now() >= deadline {
                let name: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
                let shot = self.screenshot(&format!("timeout-{name}.png")).await;
                let body = self.client.execute("return document.body.innerText;", vec![]).await.unwrap_or_default();
                panic!("timed out waiting for {what}; screenshot {}; page text: {body}", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        }
    }

    /// The exact `textContent` (not the rendered text) of `css`.
    pub async fn text_content(&self, css: &str) -> Option<String> {
        let value = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await
            .ok()?;
        value.as_str().map(str::to_owned)
    }

    pub async fn displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.client.find(Locator::Css(css)).await.ok()?.attr(name).await.ok().flatten()
    }

    pub async fn click(&self, css: &str) {
        self.until(&format!("{css} to be displayed"), || self.displayed(css)).await;
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    /// Replaces the value of an input.
    pub async fn fill(&self, css: &str, value: &str) {
        self.until(&format!("{css} to be displayed"), || self.displayed(css)).await;
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        element.clear().await.unwrap();
        element.send_keys(value).await.unwrap();
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}
