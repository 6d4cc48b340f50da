//! Test harness: real PostgreSQL, the real binary, the real app on real sockets.

pub mod app;
pub mod browser;
pub mod http;
pub mod pg;
pub mod pgbouncer;
pub mod process;
pub mod provider;
pub mod relay;
pub mod ws;

pub use app::{Options, TestApp, assert_security_headers, error_code, spawn_app};
pub use pg::{Role, TestDb};
pub use process::{Env, Finished, run, runner, serve};

/// A loopback port that was free a moment ago (for listeners a process binds itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process's resident memory in KiB (Linux `/proc`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
