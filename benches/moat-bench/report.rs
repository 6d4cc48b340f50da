//! The figures every section reports: each beside a baseline measured in the
//! same run and its ratio, with the target it is judged against. Printed as a
//! table and as one JSON document (also written to `target/moat-bench.json`).

use serde::Serialize;

/// How a figure is judged.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The ratio to the baseline must be at most this.
    RatioAtMost(f64),
    /// The value must be at most this (in the figure's unit).
    AtMost(f64),
    /// The value must be at least this (in the figure's unit).
    AtLeast(f64),
    /// Reported, not judged.
    None,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub section: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline_name: Option<String>,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub target: Target,
    pub met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned()))
            .unwrap_or_default();
        Self { machine: format!("{cpus} CPUs, {memory} kB memory, {}", std::env::consts::ARCH), figures: Vec::new() }
    }

    /// A figure with its same-run baseline.
    #[allow(clippy::too_many_arguments)]
    pub fn versus(
        &mut self,
        section: &str,
        name: &str,
        value: f64,
        baseline_name: &str,
        baseline: f64,
        unit: &str,
        target: Target,
    ) {
        let ratio = value / baseline;
        let met = match target {
            Target::RatioAtMost(max) => Some(ratio <= max),
            Target::AtMost(max) => Some(value <= max),
            Target::AtLeast(min) => Some(value >= min),
            Target::None => None,
        };
        self.figures.push(Figure {
            section: section.into(),
            name: name.into(),
            value,
            unit: unit.into(),
            baseline_name: Some(baseline_name.into()),
            baseline: Some(baseline),
            ratio: Some(ratio),
            target,
            met,
        });
    }

    /// A figure without a baseline (counts, or absolute limits such as memory per socket).
    pub fn figure(&mut self, section: &str, name: &str, value: f64, unit: &str, target: Target) {
        let met = match target {
            Target::AtMost(max) => Some(value <= max),
            Target::AtLeast(min) => Some(value >= min),
            Target::RatioAtMost(_) | Target::None => None,
        };
        self.figures.push(Figure {
            section: section.into(),
            name: name.into(),
            value,
            unit: unit.into(),
            baseline_name: None,
            baseline: None,
            ratio: None,
            target,
            met,
        });
    }

    pub fn print(&self) {
        println!("\n# moat-bench summary ({})\n", self.machine);
        println!("| section | figure | value | baseline (same run) | ratio | target | met |");
        println!("|---|---|---|---|---|---|---|");
        for f in &self.figures {
            let baseline = match (&f.baseline_name, f.baseline) {
                (Some(name), Some(value)) => format!("{name}: {} {}", number(value), f.unit),
                _ => "—".into(),
            };
            let ratio = f.ratio.map_or("—".into(), |r| format!("{r:.2}×"));
            let target = match f.target {
                Target::RatioAtMost(max) => format!("≤ {max}×"),
                Target::AtMost(max) => format!("≤ {} {}", number(max), f.unit),
                Target::AtLeast(min) => format!("≥ {} {}", number(min), f.unit),
                Target::None => "—".into(),
            };
            let met = f.met.map_or("—", |m| if m { "yes" } else { "**no**" });
            println!(
                "| {} | {} | {} {} | {baseline} | {ratio} | {target} | {met} |",
                f.section,
                f.name,
                number(f.value),
                f.unit
            );
        }
        let json = serde_json::to_string_pretty(self).unwrap_or_default();
        println!("\n```json\n{json}\n```");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/moat-bench.json");
        if std::fs::write(path, &json).is_ok() {
            println!("\n(also written to {path})");
        }
    }
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.3}") }
}
