//! External agents: a declared program speaking JSON lines on stdin/stdout
//! (docs/agents.md).
//!
//! The child gets a clean environment (only its declared pass-through
//! variables), its own process group, a parent-death signal (started through
//! `setpriv --pdeathsig KILL`: it is killed if the runner dies, even by
//! SIGKILL), the run input as data on stdin, and nothing else. Everything it prints passes the credential sanitizer (via
//! the run context) before it is stored or streamed; stdout is capped (5 MB,
//! 1 MiB per line), stderr is capped, sanitized and logged. However the run
//! ends — done, cancel, timeout, lease loss, an error — the process group is
//! ended: `cancel` on stdin, stdin closed, SIGTERM, then SIGKILL after the
//! grace period, so children it forked do not outlive it.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc;

use super::agents::Agent;
use super::context::{AgentError, RunContext};
use crate::config::agents::ExecAgent;
use crate::runs::events::Kind;

/// Total bytes an agent may write to stdout.
pub const MAX_STDOUT_BYTES: u64 = 5 * 1024 * 1024;
/// Longest single protocol line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// stderr kept (then discarded) for the log.
const MAX_STDERR_BYTES: u64 = 64 * 1024;

pub struct Exec(pub ExecAgent);

/// Process groups of this runner's live agents, so a runner that exits
/// (after its shutdown grace) kills whatever is left of them — including
/// group members that ignore SIGTERM. Per-instance state (docs/caches.md).
#[derive(Clone, Default)]
pub struct ProcessGroups {
    live: Arc<Mutex<HashSet<i32>>>,
}

impl ProcessGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, group: Pid) {
        self.lock().insert(group.as_raw());
    }

    fn remove(&self, group: Pid) {
        self.lock().remove(&group.as_raw());
    }

    /// SIGKILL to every group still registered (the runner is exiting).
    pub fn kill_all(&self) {
        for group in self.lock().drain() {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
    }
}

/// What an agent may say (anything else is a protocol error).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum FromAgent {
    Delta {
        text: String,
    },
    Tool {
        name: String,
        status: String,
        #[serde(default)]
        data: Value,
    },
    Ask {
        question: String,
    },
    Token {
        integration_id: String,
    },
    Done {},
    Error {
        message: String,
    },
}

impl Agent for Exec {
    fn run<'a>(&'a self, ctx: &'a mut RunContext) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            let spec = &self.0;
            // setpriv sets the parent-death signal (after switching user, with `user`:
            // supplementary groups cleared), then execs the agent in place.
            let mut command = tokio::process::Command::new(crate::config::agents::SETPRIV);
            command.arg("--pdeathsig").arg("KILL");
            if let Some((uid, gid)) = spec.run_as {
                command.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups");
            }
            command.arg("--").arg(&spec.command);
            let mut child = command
                .args(&spec.args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.working_dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| AgentError::Internal(anyhow::anyhow!("cannot start agent {}: {e}", spec.name)))?;
            let stdout = child.stdout.take().ok_or(AgentError::Failed("agent_start_failed"))?;
            let stderr = child.stderr.take().ok_or(AgentError::Failed("agent_start_failed"))?;
            let stdin = child.stdin.take().ok_or(AgentError::Failed("agent_start_failed"))?;
            let (to_agent, outbox) = mpsc::channel::<Value>(16);
            tokio::spawn(feed(stdin, outbox));
            tokio::spawn(log_stderr(spec.name.clone(), stderr));
            // From here on, however this future ends (even dropped on cancel), the group is ended.
            let groups = ctx.process_groups();
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                groups.add(Pid::from_raw(pid));
            }
            let mut guard = Guard {
                child: Some(child),
                to_agent: Some(to_agent),
                grace: spec.cancel_grace,
                finished: false,
                groups,
            };
            guard.send(json!({ "type": "start", "input": ctx.input() })).await;
            let result = converse(ctx, &mut guard, stdout, &spec.providers).await;
            guard.finished = result.is_ok();
            result
        })
    }
}

async fn converse(
    ctx: &mut RunContext,
    guard: &mut Guard,
    stdout: ChildStdout,
    allowed: &[String],
) -> Result<(), AgentError> {
    let mut reader = BufReader::new(stdout.take(MAX_STDOUT_BYTES));
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| AgentError::Internal(e.into()))?;
        if read == 0 {
            // EOF: the agent exited (or hit the output cap) without `done`.
            let capped = reader.get_ref().limit() == 0;
            return Err(AgentError::Failed(if capped { "agent_output_limit" } else { "agent_exited" }));
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(AgentError::Failed("agent_protocol_error"));
        }
        let Ok(message) = serde_json::from_slice::<FromAgent>(&line) else {
            let printable =
                crate::sanitize::sanitize(&String::from_utf8_lossy(&line)).chars().take(200).collect::<String>();
            tracing::warn!(run = %ctx.run_id(), line = %printable.trim(), "agent wrote a line outside the protocol");
            return Err(AgentError::Failed("agent_protocol_error"));
        };
        match message {
            FromAgent::Delta { text } => ctx.emit(Kind::MessageDelta, json!({ "text": text })).await?,
            FromAgent::Tool { name, status, data } => {
                let kind = if status == "started" { Kind::ToolStarted } else { Kind::ToolCompleted };
                ctx.emit(kind, json!({ "tool": name, "status": status, "data": data })).await?;
            }
            FromAgent::Ask { question } => {
                let answer = ctx.ask(&question).await?;
                guard.send(json!({ "type": "input", "value": answer })).await;
            }
            FromAgent::Token { integration_id } => {
                let reply = match ctx.integration_token(&integration_id, allowed).await {
                    Ok((access_token, expires_at)) => {
                        json!({ "type": "token", "access_token": access_token, "expires_at": expires_at })
                    }
                    Err(code) => json!({ "type": "token", "error": code }),
                };
                guard.send(reply).await;
            }
            FromAgent::Done {} => return Ok(()),
            FromAgent::Error { message } => {
                let message = crate::sanitize::sanitize(&message).chars().take(500).collect::<String>();
                tracing::info!(run = %ctx.run_id(), %message, "agent reported an error");
                return Err(AgentError::Failed("agent_error"));
            }
        }
    }
}

/// Writes protocol lines to the agent's stdin; closing the channel closes stdin.
async fn feed(mut stdin: tokio::process::ChildStdin, mut outbox: mpsc::Receiver<Value>) {
    while let Some(message) = outbox.recv().await {
        let mut line = message.to_string();
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return; // the agent closed its stdin or exited
        }
    }
}

/// Logs what the agent wrote to stderr: the first 64 KiB, sanitized, a line
/// at a time; the rest is read and discarded (never closing the pipe on the
/// agent, which would kill it with SIGPIPE).
async fn log_stderr(agent: String, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0u64;
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if logged < MAX_STDERR_BYTES {
                    logged += n as u64;
                    let text = String::from_utf8_lossy(&line);
                    let text = crate::sanitize::sanitize(text.trim_end()).chars().take(1000).collect::<String>();
                    tracing::info!(%agent, stderr = %text, "agent stderr");
                }
            }
        }
    }
}

/// Owns the child: ends its process group when dropped.
struct Guard {
    child: Option<Child>,
    to_agent: Option<mpsc::Sender<Value>>,
    grace: Duration,
    /// The agent said `done`: no `cancel`, just make sure nothing it forked lingers.
    finished: bool,
    groups: ProcessGroups,
}

impl Guard {
    async fn send(&self, message: Value) {
        if let Some(to_agent) = &self.to_agent {
            let _ = to_agent.send(message).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let to_agent = self.to_agent.take();
        let (grace, finished, groups) = (self.grace, self.finished, self.groups.clone());
        let group = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        if !finished && let Some(to_agent) = &to_agent {
            let _ = to_agent.try_send(json!({ "type": "cancel" }));
        }
        drop(to_agent); // closes stdin once the cancel line is written
        // SIGTERM now, synchronously: even if the runtime is shutting down and the
        // task below never runs, the group has been told (and the leader is
        // SIGKILLed on drop).
        if !finished && let Some(group) = group {
            let _ = killpg(group, Signal::SIGTERM);
        }
        tokio::spawn(async move {
            if let Some(group) = group {
                let waited =
                    tokio::time::timeout(if finished { Duration::from_secs(2) } else { grace }, child.wait()).await;
                if waited.is_err() {
                    tracing::warn!(pid = %group, "agent ignored SIGTERM; killing its process group");
                }
                // The leader may be gone while children it forked are not: end the whole group.
                let _ = killpg(group, Signal::SIGKILL);
                groups.remove(group);
            }
            let _ = child.wait().await;
        });
    }
}
