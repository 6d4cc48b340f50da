//! Development mode: the one switch (`MOAT_ENV`) and the one way to relax a check.
//!
//! A [`DevMode`] value can only be obtained from a configuration whose
//! `MOAT_ENV` is `development` ([`crate::config::Environment::dev_mode`]), and
//! [`DevMode::bypass`] is the only function that writes a `DEV_BYPASS` line.
//! So every development-only relaxation must hold a `DevMode` (a production
//! process can never construct one) and is logged loudly, with the same
//! prefix, at the same level: a search of production logs for `DEV_BYPASS`
//! must return nothing. A leaf: it depends on nothing in Moat.

/// How many `DEV_BYPASS` lines this process has logged (exported as a metric:
/// a production process reads 0 — it cannot construct a [`DevMode`]). A
/// counter of log lines, not state any request depends on.
static BYPASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn bypass_count() -> u64 {
    BYPASSES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Proof that this process runs in development mode. Not constructible outside `config`.
#[derive(Debug, Clone, Copy)]
pub struct DevMode {
    _private: (),
}

impl DevMode {
    /// Only `config::Environment::dev_mode` calls this.
    pub(crate) const fn new() -> Self {
        Self { _private: () }
    }

    /// Logs one relaxed security check: `DEV_BYPASS <component>: <message>` at WARN.
    pub fn bypass(self, component: &str, message: impl std::fmt::Display) {
        BYPASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(target: "moat::dev_bypass", "DEV_BYPASS {component}: {message}");
    }
}
