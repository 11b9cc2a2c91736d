//! systemd readiness without systemd: the test owns the NOTIFY_SOCKET datagram socket and starts a
//! real clusterd (with a heartbeat link and a failover group on loopback) the way a `Type=notify`
//! unit would. READY=1 must not come while the resource cannot attach; STATUS= says why; WATCHDOG=1
//! keeps coming; READY=1 follows once `haadm up` attached it; STOPPING=1 at SIGTERM. The same daemon
//! runs with `--log-format json`: every log line is a JSON object and each state change is one event
//! with `node` and `resource` (or `link`) fields.

use anyhow::{Context, Result, ensure};
use ha_tests::{Cluster, field, free_port, write_secret};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Every datagram received within `limit`, or until `stop` matches one.
fn collect(sock: &UnixDatagram, limit: Duration, stop: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = sock.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = stop(&m);
                got.push(m);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

fn lines<'a>(msgs: &'a [String], key: &str) -> Vec<&'a str> {
    msgs.iter().flat_map(|m| m.lines()).filter(|l| l.starts_with(key)).collect()
}

#[test]
fn ready_only_when_attached_status_watchdog_stopping_and_json_logs() -> Result<()> {
    let mut c = Cluster::new(32 << 20, "s3cret-notify", None)?;
    let hb = free_port();
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 notify-heartbeat-key\n")?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str(&format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 500ms\n  deadtime: 1s\n  initdead: 2s\n  authkeys-file: authkeys\n  links:\n    - name: lo\n      mode: ucast\n      port: {hb}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:\n  preferred: node1\n  resources: [r0]\n  portblock: false\n"
    ));
    std::fs::write(&c.config, yaml)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    // node1's data disk is missing at start: r0 cannot attach.
    std::fs::rename(c.path("node1-data.img"), c.path("node1-data.away"))?;
    let sock_path = c.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    let notify = sock_path.display().to_string();
    c.start_with(0, &[], &["--log-format", "json"], &[("NOTIFY_SOCKET", notify.as_str()), ("WATCHDOG_USEC", "600000")])?;

    let before = collect(&sock, Duration::from_secs(3), |_| false);
    ensure!(lines(&before, "READY=1").is_empty(), "READY=1 while r0 cannot attach: {before:?}");
    let status = lines(&before, "STATUS=");
    ensure!(status.iter().any(|s| s.contains("0/1 resources attached") && s.contains("waiting for r0")), "{before:?}");
    ensure!(status.iter().any(|s| s.contains("group ")), "STATUS= names the group phase: {before:?}");
    // 600 ms watchdog: a ping at least every 200 ms, so ≥ 8 in 3 s even on a loaded machine.
    let pings = lines(&before, "WATCHDOG=1").len();
    ensure!(pings >= 8, "only {pings} WATCHDOG=1 in 3 s: {before:?}");

    std::fs::rename(c.path("node1-data.away"), c.path("node1-data.img"))?;
    c.haadm_ok(0, &["up", "r0"])?;
    let after = collect(&sock, Duration::from_secs(10), |m| m.lines().any(|l| l == "READY=1"));
    ensure!(lines(&after, "READY=1").len() == 1, "no READY=1 after `haadm up r0`: {after:?}");
    ensure!(lines(&after, "STATUS=").iter().any(|s| s.contains("1/1 resources attached")), "{after:?}");

    c.start(1)?;
    c.wait_r0(0, "connected", Duration::from_secs(20), |r| field(r, "connection") == "Connected")?;
    std::thread::sleep(Duration::from_millis(500)); // the state-change event reaches the log
    c.stop(0);
    let end = collect(&sock, Duration::from_secs(5), |m| m.contains("STOPPING=1"));
    ensure!(lines(&end, "STOPPING=1").len() == 1, "no STOPPING=1 at SIGTERM: {end:?}");

    // The log: one JSON object per line; state changes carry node and resource (or link).
    let log = c.log(0);
    let mut events = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        if v["target"] == "state" {
            events.push(v);
        }
    }
    let connected = events.iter().find(|e| e["resource"] == "r0" && e["connection"] == "Connected");
    let connected = connected.with_context(|| format!("no state event for r0 Connected in {events:#?}"))?;
    ensure!(connected["node"] == "node1" && connected["level"] == "INFO" && connected["role"].is_string(), "{connected:#}");
    ensure!(events.iter().any(|e| e["resource"] == "r0" && e["disk"] == "Inconsistent" && e["node"] == "node1"), "{events:#?}");
    ensure!(events.iter().any(|e| e["phase"].is_string() && e["node"] == "node1" && e["epoch"].is_number()), "no group event: {events:#?}");
    ensure!(events.iter().any(|e| e["link"] == "lo" && e["up"] == true), "no link event: {events:#?}");
    // One event per change: two consecutive resource events never carry the same state.
    let r0: Vec<&serde_json::Value> = events.iter().filter(|e| e["resource"] == "r0").collect();
    for w in r0.windows(2) {
        let strip = |e: &serde_json::Value| {
            let mut e = e.clone();
            e.as_object_mut().map(|o| o.remove("timestamp"));
            e
        };
        ensure!(strip(w[0]) != strip(w[1]), "a repeated state event: {:#}", w[1]);
    }
    Ok(())
}

/// Under Pacemaker (`cluster.manager: pacemaker`) the resource agents attach the resources through
/// this daemon's control socket, after systemd's start of the unit has returned: READY=1 must come
/// with nothing attached, or `systemctl start clusterd` would wait for agents that cannot run yet.
#[test]
fn pacemaker_mode_is_ready_before_the_agents_attach_anything() -> Result<()> {
    let mut c = Cluster::new(32 << 20, "s3cret-notify-pm", None)?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str("cluster:\n  manager: pacemaker\n");
    std::fs::write(&c.config, yaml)?;
    c.haadm_ok(0, &["create-md", "r0"])?;
    let sock_path = c.path("notify-pm.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    let notify = sock_path.display().to_string();
    c.start_with(0, &[], &[], &[("NOTIFY_SOCKET", notify.as_str())])?;
    let got = collect(&sock, Duration::from_secs(10), |m| m.lines().any(|l| l == "READY=1"));
    ensure!(lines(&got, "READY=1").len() == 1, "no READY=1 under Pacemaker: {got:?}");
    ensure!(lines(&got, "STATUS=").iter().any(|s| s.contains("0/1 resources attached") && s.contains("Pacemaker")), "{got:?}");
    c.stop(0);
    Ok(())
}
