//! `haadm adjust` of what the first adjust release refused: heartbeat links, timers and keys, the
//! guard, and the metrics listener — with two real clusterd daemons heartbeating over loopback while
//! node1 holds the group. A second link is added and the first removed, the heartbeat key is rotated
//! the Heartbeat way (add the new key, then send with it), the metrics listener is started, moved and
//! stopped; through all of it the peer never looks dead and the group never moves. A link that cannot
//! be bound is refused with nothing changed.

use anyhow::{Result, ensure};
use ha_tests::{Cluster, free_port, http_get, poll_until, write_secret};
use std::process::Output;
use std::time::Duration;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Applies `f` to both nodes' copies of ha.yaml.
fn edit_both(c: &Cluster, f: impl Fn(&str) -> String) -> Result<()> {
    for path in [c.config.clone(), c.path("ha-node2.yaml")] {
        let before = std::fs::read_to_string(&path)?;
        let after = f(&before);
        ensure!(after != before, "edit changed nothing in {}", path.display());
        std::fs::write(&path, after)?;
    }
    Ok(())
}

fn adjust(c: &Cluster, i: usize) -> Result<String> {
    let out = c.haadm(i, &["adjust"])?;
    ensure!(out.status.success(), "adjust on node{} failed: {}", i + 1, text(&out));
    Ok(text(&out))
}

/// (link name, up) as node i's status shows them.
fn links(c: &Cluster, i: usize) -> Vec<(String, bool)> {
    let Ok(s) = c.status(i) else { return Vec::new() };
    s["cluster"]["links"]
        .as_array()
        .map(|a| a.iter().map(|l| (l["name"].as_str().unwrap_or("").to_string(), l["up"].as_bool().unwrap_or(false))).collect())
        .unwrap_or_default()
}

fn holder(c: &Cluster, i: usize) -> String {
    c.status(i).map(|s| s["cluster"]["group_holder"].as_str().unwrap_or("").to_string()).unwrap_or_default()
}

fn wait_links(c: &Cluster, want: &[(&str, bool)]) -> Result<()> {
    let want: Vec<(String, bool)> = want.iter().map(|(n, u)| (n.to_string(), *u)).collect();
    let ok = poll_until(Duration::from_secs(15), || (links(c, 0) == want && links(c, 1) == want).then_some(()));
    ensure!(ok.is_some(), "links never became {want:?}: node1 {:?}, node2 {:?}\n{}", links(c, 0), links(c, 1), c.log(0));
    Ok(())
}

#[test]
fn heartbeat_links_timers_keys_and_metrics_listener_change_live() -> Result<()> {
    let mut c = Cluster::new(16 << 20, "hb-live-secret", None)?;
    let (p1, p2) = (free_port(), free_port());
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 first-heartbeat-key\n")?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str(&format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 600ms\n  deadtime: 2s\n  initdead: 4s\n  authkeys-file: authkeys\n  links:\n    - name: ring0\n      mode: ucast\n      port: {p1}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:\n  preferred: node1\n  resources: [r0]\n  portblock: false\n"
    ));
    std::fs::write(&c.config, &yaml)?;
    std::fs::copy(&c.config, c.path("ha-node2.yaml"))?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    wait_links(&c, &[("ring0", true)])?;
    // Two fresh zeroed disks: skip the initial sync, so the group can start at once.
    c.wait_r0(0, "connected", Duration::from_secs(20), |r| r["connection"] == "Connected")?;
    c.haadm_ok(0, &["new-current-uuid", "--clear-bitmap", "r0"])?;
    let held = poll_until(Duration::from_secs(30), || {
        let h = holder(&c, 0);
        (!h.is_empty() && h == holder(&c, 1)).then_some(h)
    });
    let Some(held) = held else { anyhow::bail!("nobody held the group: {}", c.log(0)) };
    let epoch = c.status(0)?["cluster"]["epoch"].as_u64().unwrap_or(0);

    // 1. A second link, longer timers, the guard and node1's metrics listener, all live.
    let metrics1: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let ring1 = format!(
        "    - name: ring1\n      mode: ucast\n      port: {p2}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:"
    );
    edit_both(&c, |y| {
        y.replace("deadtime: 2s", "deadtime: 3s").replace("group:", &ring1).to_string()
            + &format!("metrics:\n  on: {{ node1: \"{metrics1}\" }}\n")
    })?;
    ensure!(http_get(metrics1, "/metrics").is_err(), "metrics answered before the adjust");
    let plan = c.haadm_ok(0, &["adjust", "--dry-run"])?;
    for line in ["cluster.deadtime 2s -> 3s", "cluster.links: add link ring1 (ucast port", "metrics.on.node1: (none) -> 127.0.0.1:"] {
        ensure!(plan.contains(line), "dry-run lacks `{line}`:\n{plan}");
    }
    ensure!(links(&c, 0).len() == 1, "--dry-run changed the links: {:?}", links(&c, 0));
    println!("node1 adjust:\n{}", adjust(&c, 0)?);
    println!("node2 adjust:\n{}", adjust(&c, 1)?);
    wait_links(&c, &[("ring0", true), ("ring1", true)])?;
    let (code, page) = http_get(metrics1, "/metrics")?;
    ensure!(code == 200 && page.contains("clusterd_"), "metrics after adjust: {code}\n{page}");

    // 2. The first link goes: ring1 alone carries the heartbeats; the peer never looked dead.
    edit_both(&c, |y| {
        let start = y.find("    - name: ring0").unwrap_or(0);
        let end = y.find("    - name: ring1").unwrap_or(0);
        format!("{}{}", &y[..start], &y[end..])
    })?;
    adjust(&c, 0)?;
    adjust(&c, 1)?;
    wait_links(&c, &[("ring1", true)])?;

    // 3. Key rotation: key 2 added on both (still sending with 1), then both send with 2.
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 first-heartbeat-key\n2 sha1 second-heartbeat-key\n")?;
    let plan = c.haadm_ok(0, &["adjust", "--dry-run"])?;
    ensure!(plan.contains("cluster.authkeys-file:") && plan.contains("keys reloaded"), "key change not planned:\n{plan}");
    ensure!(!plan.contains("heartbeat-key"), "a plan line shows a key:\n{plan}");
    adjust(&c, 0)?;
    adjust(&c, 1)?;
    write_secret(&c.path("authkeys"), "auth 2\n1 sha1 first-heartbeat-key\n2 sha1 second-heartbeat-key\n")?;
    adjust(&c, 0)?;
    adjust(&c, 1)?;
    std::thread::sleep(Duration::from_secs(4)); // longer than deadtime: a broken key would show now
    wait_links(&c, &[("ring1", true)])?;
    for i in 0..2 {
        let log = c.log(i);
        ensure!(!log.contains("peer is dead"), "node{} saw the peer dead during the changes:\n{log}", i + 1);
        ensure!(!log.contains("heartbeat-key"), "node{} logged a key", i + 1);
    }

    // 4. The metrics listener moves, then stops.
    let metrics2: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    edit_both(&c, |y| y.replace(&metrics1.to_string(), &metrics2.to_string()))?;
    ensure!(adjust(&c, 0)?.contains("listener moved"), "no move line");
    ensure!(http_get(metrics2, "/metrics").map(|(code, _)| code) .ok() == Some(200), "new metrics address does not answer");
    ensure!(http_get(metrics1, "/metrics").is_err(), "old metrics address still answers");
    edit_both(&c, |y| y.replace(&format!("metrics:\n  on: {{ node1: \"{metrics2}\" }}\n"), ""))?;
    ensure!(adjust(&c, 0)?.contains("listener stopped"), "no stop line");
    ensure!(http_get(metrics2, "/metrics").is_err(), "stopped metrics listener still answers");

    // 5. A link this node cannot bind (an address it does not have): refused, nothing changed.
    edit_both(&c, |y| {
        y.replace(
            "group:",
            &format!("    - name: bad\n      mode: ucast\n      port: {p1}\n      on: {{ node1: {{ address: 192.0.2.1 }}, node2: {{ address: 192.0.2.2 }} }}\ngroup:"),
        )
    })?;
    c.haadm_fails(0, &["adjust"], 1, "cannot bind")?;
    ensure!(links(&c, 0) == [("ring1".to_string(), true)], "a refused adjust changed the links: {:?}", links(&c, 0));
    let plan = c.haadm_ok(0, &["adjust", "--dry-run"])?;
    ensure!(plan.contains("add link bad"), "the refused change counts as applied:\n{plan}");

    // Through all of it the group stayed where it was, in the same epoch.
    ensure!(holder(&c, 0) == held && holder(&c, 1) == held, "the group moved from {held}");
    ensure!(c.status(0)?["cluster"]["epoch"].as_u64() == Some(epoch), "the group epoch changed (a failover happened)");
    Ok(())
}
