//! `cluster.guard.fence-agent` against Debian's real `fence_dummy` (fence-agents): off then status
//! until off, failures retried and reported, the password from a 0600 file only and never in any
//! message, timeouts. tests/run installs fence-agents; without it these tests fail (they cannot pass
//! without exercising the agent).

use clusterd::config::{ConfigError, FenceAgentConfig};
use clusterd::fencing::{FenceError, Fencer, fence_with_agent};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FENCE_DUMMY: &str = "/usr/sbin/fence_dummy";
const PASSWORD: &str = "s3cret-do-not-log";

fn dummy(dir: &Path, params: &[(&str, &str)]) -> FenceAgentConfig {
    assert!(Path::new(FENCE_DUMMY).exists(), "{FENCE_DUMMY} missing: apt-get install fence-agents (tests/run does)");
    let mut on = BTreeMap::new();
    // Per-node parameters: node2's power state lives in its own status file.
    on.insert("node2".to_string(), BTreeMap::from([("status_file".to_string(), dir.join("node2.status").display().to_string())]));
    FenceAgentConfig {
        agent: PathBuf::from(FENCE_DUMMY),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        on,
        password_file: None,
        timeout: Duration::from_secs(20),
        retries: 2,
        confirm_timeout: Duration::from_secs(10),
    }
}

fn password_file(dir: &Path, mode: u32) -> PathBuf {
    let p = dir.join("fence.secret");
    std::fs::write(&p, format!("{PASSWORD}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn off_then_status_confirms_the_peer_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    // fence_dummy's "power": the status file holds `on` (no newline) until the agent switches it off.
    std::fs::write(dir.path().join("node2.status"), "on").expect("status");
    let mut cfg = dummy(dir.path(), &[]);
    cfg.password_file = Some(password_file(dir.path(), 0o600));
    let how = runtime().block_on(fence_with_agent(&cfg, "node2")).expect("fenced");
    assert!(how.contains("node2 is off"), "{how}");
    assert_eq!(std::fs::read_to_string(dir.path().join("node2.status")).expect("read"), "off");
    // The same through the guard's entry point.
    std::fs::write(dir.path().join("node2.status"), "on").expect("status");
    let (ok, line) = runtime().block_on(Fencer::Agent(cfg).fence("node1", "node2"));
    assert!(ok, "{line}");
    assert!(!line.contains(PASSWORD));
}

#[test]
fn a_failing_agent_is_retried_and_reported_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    // type=fail: fence_dummy never sees the power go off and fails after power_timeout (exit 1); it echoes unknown options,
    // the password among them, to stderr: the error must show it blanked.
    let mut cfg = dummy(dir.path(), &[("type", "fail"), ("power_timeout", "1")]);
    cfg.password_file = Some(password_file(dir.path(), 0o600));
    let started = Instant::now();
    let err = runtime().block_on(fence_with_agent(&cfg, "node2")).expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, FenceError::Failed { action: "off", code: 1, .. }), "{msg}");
    assert!(!msg.contains(PASSWORD), "the password leaked into: {msg}");
    assert!(msg.contains("[password]"), "fence_dummy's echo of the option should show it blanked: {msg}");
    assert!(started.elapsed() < Duration::from_secs(15), "two quick failures took {:?}", started.elapsed());
}

#[test]
fn an_agent_that_never_reports_off_is_not_a_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An agent whose `off` succeeds but whose status stays on: the fence is not confirmed.
    let agent = dir.path().join("fence_stuck");
    std::fs::write(&agent, "#!/bin/sh\ncat >/dev/null\nexit 0\n").expect("write");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = dummy(dir.path(), &[]);
    cfg.agent = agent;
    cfg.retries = 1;
    cfg.confirm_timeout = Duration::from_secs(2);
    let err = runtime().block_on(fence_with_agent(&cfg, "node2")).expect_err("not confirmed");
    assert!(matches!(err, FenceError::NotConfirmed { .. }), "{err}");
}

#[test]
fn a_hung_agent_is_killed_after_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("fence_hung");
    std::fs::write(&agent, "#!/bin/sh\nexec sleep 60\n").expect("write");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = dummy(dir.path(), &[]);
    cfg.agent = agent;
    cfg.retries = 2;
    cfg.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = runtime().block_on(fence_with_agent(&cfg, "node2")).expect_err("timed out");
    assert!(matches!(err, FenceError::Timeout { action: "off", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn the_password_file_must_be_0600_and_the_agent_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("node2.status"), "on").expect("status");
    let mut cfg = dummy(dir.path(), &[]);
    cfg.password_file = Some(password_file(dir.path(), 0o644));
    let err = runtime().block_on(fence_with_agent(&cfg, "node2")).expect_err("refused");
    assert!(matches!(err, FenceError::Password(ConfigError::SecretMode { .. })), "{err}");
    assert!(err.to_string().contains("fence.secret"), "{err}");
    // Refused before anything ran: the peer was not switched off.
    assert_eq!(std::fs::read_to_string(dir.path().join("node2.status")).expect("read"), "on");
    cfg.password_file = None;
    cfg.agent = PathBuf::from("/usr/sbin/fence_no_such_agent");
    let err = runtime().block_on(fence_with_agent(&cfg, "node2")).expect_err("missing");
    assert!(matches!(err, FenceError::AgentMissing(_)) && err.to_string().contains("fence_no_such_agent"), "{err}");
}
