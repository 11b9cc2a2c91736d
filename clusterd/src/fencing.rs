//! Powering the peer off before its group is taken over: the `fence-command` hook (a shell command,
//! exit 0 = the peer is down) or a standard fence agent from fence-agents, called the way Pacemaker's
//! fencer calls it: `key=value` lines on stdin, `action=off` (retried), then `action=status` until the
//! agent reports the power off (exit 2). fence-agents' exit codes: 0 success (for status: on),
//! 1 failure, 2 (status) off.

use crate::config::{ConfigError, FenceAgentConfig, GuardConfig, read_secret_file};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Pause between two `status` polls, and between two `off` attempts.
const POLL: Duration = Duration::from_millis(500);
/// How much of an agent's output goes into a log line or an error.
const OUTPUT_LIMIT: usize = 400;

/// One way to fence the peer.
#[derive(Debug, Clone)]
pub enum Fencer {
    Command(String),
    Agent(FenceAgentConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("fence agent {}: not installed or not executable (install fence-agents, or fix cluster.guard.fence-agent.agent)", .0.display())]
    AgentMissing(PathBuf),
    #[error("fence agent password: {0}")]
    Password(#[from] ConfigError),
    #[error("fence agent {agent}: cannot run it: {source}", agent = .agent.display())]
    Spawn { agent: PathBuf, source: std::io::Error },
    #[error("fence agent {agent} action={action}: no answer within {after:?}", agent = .agent.display())]
    Timeout { agent: PathBuf, action: &'static str, after: Duration },
    #[error("fence agent {agent} action={action} failed (exit {code}): {output}", agent = .agent.display())]
    Failed { agent: PathBuf, action: &'static str, code: i32, output: String },
    #[error("fence agent {agent}: the power was not reported off within {after:?} after action=off", agent = .agent.display())]
    NotConfirmed { agent: PathBuf, after: Duration },
}

impl Fencer {
    /// The guard's way to fence, if any (loading refuses both at once).
    pub fn from_guard(guard: &GuardConfig) -> Option<Fencer> {
        match (&guard.fence_command, &guard.fence_agent) {
            (Some(cmd), _) => Some(Fencer::Command(cmd.clone())),
            (None, Some(agent)) => Some(Fencer::Agent(agent.clone())),
            (None, None) => None,
        }
    }

    /// Fences `peer`; true when it is confirmed down, with a line saying what happened.
    pub async fn fence(&self, me: &str, peer: &str) -> (bool, String) {
        match self {
            Fencer::Command(cmd) => run_fence_command(cmd, me, peer).await,
            Fencer::Agent(cfg) => match fence_with_agent(cfg, peer).await {
                Ok(how) => (true, how),
                Err(e) => (false, e.to_string()),
            },
        }
    }
}

/// Runs the fence command against `peer`; true when it confirmed the peer down. Like DRBD's fence-peer
/// handler, the command learns whom to fence from the environment (HA_NODE, HA_PEER).
pub async fn run_fence_command(cmd: &str, me: &str, peer: &str) -> (bool, String) {
    let st = tokio::process::Command::new("/bin/sh").arg("-c").arg(cmd).env("HA_NODE", me).env("HA_PEER", peer).status().await;
    let fenced = matches!(&st, Ok(s) if s.success());
    let outcome = match st {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    };
    (fenced, format!("fence command `{cmd}`: {outcome}"))
}

/// `action=off` (up to `retries` attempts), then `action=status` until it answers "off" (exit 2).
pub async fn fence_with_agent(cfg: &FenceAgentConfig, peer: &str) -> Result<String, FenceError> {
    if std::fs::metadata(&cfg.agent).map(|m| !m.is_file()).unwrap_or(true) {
        return Err(FenceError::AgentMissing(cfg.agent.clone()));
    }
    // Read at each fence: a rotated password needs no restart, and it is held only while fencing.
    let password = cfg.password_file.as_deref().map(read_secret_file).transpose()?;
    let params = cfg.params_for(peer);
    let mut last = None;
    for attempt in 1..=cfg.retries {
        if attempt > 1 {
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(target: "failover", "fencing {peer} with {} (action=off, attempt {attempt} of {})", cfg.agent.display(), cfg.retries);
        match call(cfg, "off", &params, password.as_deref()).await {
            Ok((0, _)) => match confirm_off(cfg, &params, password.as_deref()).await {
                Ok(()) => return Ok(format!("fence agent {}: {peer} is off (action=off, status confirmed)", cfg.agent.display())),
                Err(e) => last = Some(e),
            },
            Ok((code, output)) => last = Some(FenceError::Failed { agent: cfg.agent.clone(), action: "off", code, output }),
            Err(e) => last = Some(e),
        }
        if let Some(e) = &last {
            tracing::error!(target: "failover", "fencing {peer}: {e}");
        }
    }
    Err(last.unwrap_or(FenceError::NotConfirmed { agent: cfg.agent.clone(), after: Duration::ZERO }))
}

/// Polls `action=status` until the agent says off (2), within `confirm_timeout`.
async fn confirm_off(cfg: &FenceAgentConfig, params: &std::collections::BTreeMap<String, String>, password: Option<&[u8]>) -> Result<(), FenceError> {
    let deadline = Instant::now() + cfg.confirm_timeout;
    loop {
        match call(cfg, "status", params, password).await? {
            (2, _) => return Ok(()),
            (0, _) => {}
            (code, output) => return Err(FenceError::Failed { agent: cfg.agent.clone(), action: "status", code, output }),
        }
        if Instant::now() + POLL > deadline {
            return Err(FenceError::NotConfirmed { agent: cfg.agent.clone(), after: cfg.confirm_timeout });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One call of the agent: parameters on stdin, bounded by `timeout` (the agent is killed after it).
/// Returns the exit code and its output with the password blanked out.
async fn call(
    cfg: &FenceAgentConfig,
    action: &'static str,
    params: &std::collections::BTreeMap<String, String>,
    password: Option<&[u8]>,
) -> Result<(i32, String), FenceError> {
    let spawn_err = |source| FenceError::Spawn { agent: cfg.agent.clone(), source };
    let mut child = tokio::process::Command::new(&cfg.agent)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let mut input = format!("action={action}\n").into_bytes();
    for (k, v) in params {
        input.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    if let Some(pw) = password {
        input.extend_from_slice(b"password=");
        input.extend_from_slice(pw);
        input.push(b'\n');
    }
    let timeout = cfg.timeout;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // An agent that exits without reading its stdin is judged by its exit code alone.
            let _ = stdin.write_all(&input).await;
        }
        child.wait_with_output().await
    };
    let result = tokio::time::timeout(timeout, run).await;
    input.fill(0);
    let output = match result {
        Err(_) => return Err(FenceError::Timeout { agent: cfg.agent.clone(), action, after: timeout }),
        Ok(r) => r.map_err(spawn_err)?,
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if let Some(pw) = password.and_then(|p| std::str::from_utf8(p).ok()).filter(|p| !p.is_empty()) {
        text = text.replace(pw, "[password]");
    }
    let mut text = text.trim().replace('\n', " | ");
    if text.len() > OUTPUT_LIMIT {
        let mut cut = OUTPUT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    // A signal (no code) counts as a failure.
    Ok((output.status.code().unwrap_or(-1), text))
}
