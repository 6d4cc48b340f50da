//! Agents: what a run executes. New kinds implement [`Agent`] and are added
//! to [`get`]. Moat ships `demo`, deterministic and driven by the run input:
//!
//! ```json
//! {"steps": 5, "delay_ms": 200, "burst": 1, "text": "working", "ask": "Proceed?", "fail": false, "tool": "lookup"}
//! ```
//!
//! It emits `steps` × `burst` `message.delta`s, `burst` at a time `delay_ms`
//! apart (a burst paces load generators finer than the ~1 ms timer; optionally around a
//! `tool.started`/`tool.completed` pair), then, if `ask` is set, asks it and
//! echoes the answer, then succeeds (or fails with `demo_failure`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::context::{AgentError, RunContext};
use crate::config::agents::ExecAgent;
use crate::runs::events::Kind;

/// An agent: runs to completion, emitting events through the context. It is
/// stopped by being dropped (cancel, lease loss, timeout), so it must keep no
/// state outside the context that needs cleaning up.
pub trait Agent: Send + Sync {
    fn run<'a>(&'a self, ctx: &'a mut RunContext) -> BoxFuture<'a, Result<(), AgentError>>;
}

/// The agent named `name`: the built-in `demo`, or one declared in `MOAT_AGENTS_FILE`.
pub fn get(name: &str, declared: &BTreeMap<String, ExecAgent>) -> Option<Box<dyn Agent>> {
    match name {
        "demo" => Some(Box::new(Demo)),
        _ => declared.get(name).map(|spec| Box::new(super::exec::Exec(spec.clone())) as Box<dyn Agent>),
    }
}

struct Demo;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoInput {
    #[serde(default = "default_steps")]
    steps: u64,
    #[serde(default = "default_delay")]
    delay_ms: u64,
    #[serde(default = "default_burst")]
    burst: u64,
    #[serde(default = "default_text")]
    text: String,
    ask: Option<String>,
    #[serde(default)]
    fail: bool,
    tool: Option<String>,
}

fn default_steps() -> u64 {
    3
}

fn default_delay() -> u64 {
    100
}

fn default_burst() -> u64 {
    1
}

fn default_text() -> String {
    "step".into()
}

impl Agent for Demo {
    fn run<'a>(&'a self, ctx: &'a mut RunContext) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            let input: DemoInput =
                serde_json::from_value(ctx.input().clone()).map_err(|_| AgentError::Failed("invalid_input"))?;
            if input.delay_ms > 3_600_000 || input.burst == 0 || input.burst > 1_000 {
                return Err(AgentError::Failed("invalid_input"));
            }
            let delay = Duration::from_millis(input.delay_ms);
            for i in 1..=input.steps {
                if i == 2
                    && let Some(tool) = &input.tool
                {
                    ctx.emit(Kind::ToolStarted, json!({ "tool": tool })).await?;
                    ctx.emit(Kind::ToolCompleted, json!({ "tool": tool, "result": format!("{tool} result") })).await?;
                }
                if delay.is_zero() {
                    // `sleep(0)` would still wait for the next timer tick (~1 ms).
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(delay).await;
                }
                for _ in 0..input.burst {
                    ctx.emit(Kind::MessageDelta, json!({ "text": format!("{} {i}", input.text) })).await?;
                }
            }
            if let Some(question) = &input.ask {
                let answer = ctx.ask(question).await?;
                let echoed = match &answer {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                ctx.emit(Kind::MessageDelta, json!({ "text": format!("You said: {echoed}") })).await?;
            }
            if input.fail { Err(AgentError::Failed("demo_failure")) } else { Ok(()) }
        })
    }
}
