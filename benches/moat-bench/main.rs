//! `moat-bench` (`cargo bench --bench moat-bench [-- SECTION…]`): the whole
//! benchmark suite on loopback against a real PostgreSQL and real `moat
//! serve`/`moat runner` processes (release builds) it starts itself. Every
//! figure is reported beside a baseline measured in the same run, as a ratio
//! (these machines are noisy), then as one table and one JSON document.
//!
//! Sections: `http` (middleware overhead), `broker`, `runs` (commands, events,
//! claims), `ws` (connect, memory, fan-out). With no argument, all of them.
//! docs/performance.md holds the latest figures and what limits each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, unused_imports)]

#[path = "../../tests/moat/harness/mod.rs"]
mod harness;

mod broker;
mod http;
mod report;
mod runs;
mod stats;
mod ws;

const SECTIONS: &[&str] = &["http", "broker", "runs", "ws"];

fn main() {
    // `cargo bench` passes `--bench`; anything else not starting with `-` names a section.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if let Some(unknown) = wanted.iter().find(|w| !SECTIONS.contains(&w.as_str())) {
        eprintln!("moat-bench: unknown section {unknown:?}; sections: {}", SECTIONS.join(", "));
        std::process::exit(2);
    }
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut report = report::Report::new();
        if run("http") {
            http::run(&mut report).await;
        }
        if run("broker") {
            broker::run(&mut report).await;
        }
        if run("runs") {
            runs::run(&mut report).await;
        }
        if run("ws") {
            ws::run(&mut report).await;
        }
        report.print();
    });
}
