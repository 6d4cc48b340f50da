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
