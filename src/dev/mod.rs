//! `moat dev`, the one-command local setup: [`command`] runs it (a private
//! PostgreSQL, migrations, an administrator, `serve` and `runner` in one
//! process), [`cluster`] manages its private PostgreSQL. The development-mode
//! token and the `DEV_BYPASS` logger are [`crate::devmode`]'s.

pub mod cluster;
pub mod command;
