//! Logging through `tracing`: text for people, JSON for collectors.
//!
//! `DEV_BYPASS` warnings cannot be filtered away by `MOAT_LOG`. Panics are
//! logged here (the response side is handled by the HTTP layer).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, filter: Option<&str>) {
    let filter = EnvFilter::try_new(filter.unwrap_or("info"))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(dev_bypass_directive());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if result.is_err() {
        // Already initialised (tests build several apps in one process).
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic (a request that panicked was answered with 500)");
    }));
}

fn dev_bypass_directive() -> tracing_subscriber::filter::Directive {
    #[allow(clippy::expect_used)] // a constant, checked by every test run
    "moat::dev_bypass=warn".parse().expect("valid directive")
}
