//! [`Problem`]: one failed startup check, written for the operator who has
//! to fix it (what, why, the exact fix). A leaf: configuration, database
//! checks and the startup pipeline all produce them, and it depends on nothing.

use std::fmt;

/// One failed check, written for the operator who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What the problem is about, e.g. `MOAT_SIGNING_KEY` or `database schema`.
    pub subject: String,
    /// What is wrong, in one sentence.
    pub what: String,
    /// Why it matters.
    pub why: String,
    /// Exact commands or steps that fix it.
    pub fix: Vec<String>,
}

impl Problem {
    pub fn new(subject: impl Into<String>, what: impl Into<String>, why: impl Into<String>) -> Self {
        Self { subject: subject.into(), what: what.into(), why: why.into(), fix: Vec::new() }
    }

    pub fn fix(mut self, step: impl Into<String>) -> Self {
        self.fix.push(step.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] {}", self.subject, self.what)?;
        writeln!(f, "  why: {}", self.why)?;
        for (i, step) in self.fix.iter().enumerate() {
            let label = if i == 0 { "fix:" } else { "    " };
            writeln!(f, "  {label} {step}")?;
        }
        Ok(())
    }
}
