//! ALUA multipath access (issue 17) with two real clusterd daemons on loopback: the group's target is
//! served by each node on its own portal (`access: alua`, node1 on 127.0.0.1, node2 on 127.0.0.2),
//! and a libiscsi client (`tests/alua/alua-probe.c`) logs in to both. Checked: REPORT TARGET PORT
//! GROUPS through either port shows node1's group active/optimized and node2's standby; VPD 0x83
//! gives the same LU with each port's own relative port and group; TEST UNIT READY, reads and writes
//! through the standby port get NOT READY 04/0B (READ CAPACITY answers); SendTargets lists both portals. After `kill -9` of
//! node1 the session kept open on node2's port sees UA 2A/06, RTPG reports node2 active/optimized
//! (node1 unavailable), and the block written through node1 reads back through node2. Then libiscsi's
//! conformance suite runs on the now active port with no failure.

use anyhow::{Context, Result, ensure};
use ha_tests::alua_probe::{AluaState, Probe, Sense};
use ha_tests::{Cluster, free_port, poll_until, write_secret};
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.org.example:alua";
/// A floor a few below what the suite passes on the replicated LUN (see conformance_vip.rs).
const MIN_PASSED: u32 = 185;

fn group_state(c: &Cluster, i: usize) -> (String, String, String) {
    let Ok(s) = c.status(i) else { return Default::default() };
    let g = s["cluster"]["groups"].get(0).cloned().unwrap_or_default();
    let get = |k: &str| g[k].as_str().unwrap_or_default().to_string();
    (get("holder"), get("phase"), get("ports"))
}

/// The probe's argv from one command per string (`"write 0 0xab"` → `write`, `0`, `0xab`).
fn argv<'a>(cmds: &[&'a str]) -> Vec<&'a str> {
    cmds.iter().flat_map(|c| c.split_whitespace()).collect()
}

fn tool(name: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(name).args(args).output().with_context(|| format!("run {name}"))?;
    ensure!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn alua_paths_standby_sense_and_failover() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "alua-secret", None)?;
    let (hb, port) = (free_port(), free_port());
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 alua-heartbeat-key\n")?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str(&ha_tests::alua_cluster_yaml(hb, port, IQN));
    std::fs::write(&c.config, &yaml)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    c.wait_r0(0, "connected", Duration::from_secs(20), |r| r["connection"] == "Connected")?;
    // Two fresh zeroed disks: no initial sync needed.
    c.haadm_ok(0, &["new-current-uuid", "--clear-bitmap", "r0"])?;
    let settled = poll_until(Duration::from_secs(30), || {
        let (h1, p1, ports1) = group_state(&c, 0);
        let (_, _, ports2) = group_state(&c, 1);
        let agreed = |p: &str| p.contains("2:active/optimized") && p.contains("3:standby");
        (h1 == "node1" && p1 == "holding" && agreed(&ports1) && agreed(&ports2)).then_some(())
    });
    ensure!(settled.is_some(), "node1 never held the group with ALUA ports set: {:?} / {:?}\n{}", group_state(&c, 0), group_state(&c, 1), c.log(0));

    let url1 = format!("iscsi://127.0.0.1:{port}/{IQN}/0");
    let url2 = format!("iscsi://127.0.0.2:{port}/{IQN}/0");
    // The active path: implicit ALUA, node1's port in group 2, active/optimized; I/O works.
    let a = Probe::new(&url1).run(&argv(&["tur", "tur", "inq", "vpd83", "rtpg", "write 0 0xab", "read 0", "rtpg-len"]))?;
    a.completed()?;
    ensure!(a.step(3)?.inquiry()?.tpgs == 1, "TPGS is not implicit: {}", a.stdout);
    let id1 = a.step(4)?.device_id()?.clone();
    ensure!(id1.relative_port == Some(2) && id1.port_group == Some(2), "node1's port: {}", a.stdout);
    let rtpg = a.step(5)?.rtpg()?.clone();
    let state_of = |r: &ha_tests::alua_probe::Rtpg, id: u16| r.groups.iter().find(|g| g.id == id).map(|g| g.state);
    ensure!(state_of(&rtpg, 2) == Some(AluaState::ActiveOptimized) && state_of(&rtpg, 3) == Some(AluaState::Standby), "RTPG via node1: {}", a.stdout);
    ensure!(rtpg.group_of_port(2).map(|g| g.id) == Some(2) && rtpg.group_of_port(3).map(|g| g.id) == Some(3), "ports: {}", a.stdout);
    ensure!(a.step(6)?.is_ok() && a.step(7)?.block()?.fill == Some(0xab), "I/O on the active port: {}", a.stdout);
    ensure!(!a.step(8)?.rtpg()?.extended, "length-only RTPG: {}", a.stdout);

    // The standby path: same LU, its own port and group; RTPG agrees; no I/O reaches the disk.
    let s = Probe::new(&url2).run(&argv(&["tur", "tur", "inq", "vpd83", "rtpg", "read 0", "write 0 0x11", "readcap"]))?;
    s.completed()?;
    let id2 = s.step(4)?.device_id()?.clone();
    ensure!(id2.lu == id1.lu && id2.relative_port == Some(3) && id2.port_group == Some(3), "node2's port: {} vs {}", s.stdout, a.stdout);
    ensure!(s.step(5)?.rtpg()?.groups == rtpg.groups, "RTPG differs between the ports:\n{}\n{}", a.stdout, s.stdout);
    for (seq, what) in [(2, "TEST UNIT READY"), (6, "READ"), (7, "WRITE")] {
        ensure!(s.step(seq)?.sense() == Some(Sense::NOT_READY_STANDBY), "{what} on the standby port: {}", s.stdout);
    }
    ensure!(s.step(3)?.is_ok(), "INQUIRY must answer on the standby port: {}", s.stdout);
    // READ CAPACITY answers on a standby port (it reads no data; Linux sizes the device on every path).
    ensure!(s.step(8)?.capacity()?.0 == 131_072, "READ CAPACITY on the standby port: {}", s.stdout);
    let still = Probe::new(&url1).run(&argv(&["tur", "read 0"]))?;
    ensure!(still.step(2)?.block()?.fill == Some(0xab), "the standby port's WRITE reached the disk: {}", still.stdout);

    // Discovery through either node lists both nodes' portals.
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let ls = tool("iscsi-ls", &[&format!("iscsi://{ip}:{port}")])?;
        ensure!(ls.contains(&format!("127.0.0.1:{port}")) && ls.contains(&format!("127.0.0.2:{port}")), "SendTargets via {ip}: {ls}");
    }

    // A session on node2's port across the failover: it sees 2A/06 and then serves.
    let waiter = Probe::new(&url2)
        .limit(Duration::from_secs(60))
        .spawn(&argv(&["tur", "until-ua 2a 06 40000", "until-ok write 1 0xcd 20000", "rtpg", "read 0", "read 1"]))?;
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    c.kill9(0);
    let w = waiter.wait()?;
    w.completed()?;
    ensure!(w.step(2)?.sense() == Some(Sense::ALUA_STATE_CHANGED), "no UA 2A/06 on node2's port: {}", w.stdout);
    ensure!(w.step(3)?.is_ok(), "node2's port never served after the failover: {}", w.stdout);
    let after = w.step(4)?.rtpg()?;
    ensure!(state_of(after, 3) == Some(AluaState::ActiveOptimized) && state_of(after, 2) == Some(AluaState::Unavailable), "RTPG after the failover: {}", w.stdout);
    ensure!(w.step(5)?.block()?.fill == Some(0xab) && w.step(6)?.block()?.fill == Some(0xcd), "data after the failover: {}", w.stdout);
    eprintln!("ALUA failover: node2's port active and writing {:?} after kill -9 of node1; probe: {}", killed.elapsed(), w.stdout.replace('\n', " | "));

    // libiscsi's conformance suite on the active port (node2 now): no failures.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/iscsi/conformance.sh");
    let log = c.path("conformance.log");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&url2)
        .env("MIN_PASSED", MIN_PASSED.to_string())
        .env("TIMEOUT", "480")
        .env("LOG", &log)
        .output()?;
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("conformance on the ALUA active port:\n{summary}");
    ensure!(out.status.success(), "conformance suite on node2's active port failed:\n{summary}\n{}", std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(40).collect::<Vec<_>>().join("\n"));
    Ok(())
}
