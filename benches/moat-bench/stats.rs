//! Percentiles and formatting shared by the sections.

use std::time::Duration;

/// The `p` quantile of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
