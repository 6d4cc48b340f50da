//! Process-level settings `serve` and `runner` apply to themselves at start.
//!
//! - **Non-dumpable**: no core dump, no ptrace by same-user processes, and
//!   `/proc/<pid>/environ` (which holds `DATABASE_URL`, maybe keys) and
//!   `/proc/<pid>/mem` readable only by root — an agent, or anything else
//!   running as Moat's user, cannot read Moat's secrets out of it.
//! - **File descriptors**: the soft limit is raised to the hard limit, so
//!   `MOAT_MAX_CONNECTIONS` (plus the pool and files) fits; if even the hard
//!   limit is lower, the shortfall is logged at start.

/// Marks this process non-dumpable (logged if the kernel refuses).
pub fn non_dumpable(process: &str) {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot mark the {process} non-dumpable");
    }
}

/// Descriptors Moat needs besides client connections (pool, LISTEN, files, logs).
const SPARE_DESCRIPTORS: u64 = 1024;

/// Raises the soft descriptor limit to the hard one; warns when `connections` would not fit.
pub fn raise_fd_limit(connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = u64::try_from(connections).unwrap_or(u64::MAX).saturating_add(SPARE_DESCRIPTORS);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
    if soft < needed {
        tracing::warn!(
            limit = soft,
            needed,
            "the open-file limit is below MOAT_MAX_CONNECTIONS plus {SPARE_DESCRIPTORS}: connections beyond it fail to be accepted; raise the limit (e.g. LimitNOFILE= in systemd, ulimits in compose) or lower MOAT_MAX_CONNECTIONS"
        );
    }
}
