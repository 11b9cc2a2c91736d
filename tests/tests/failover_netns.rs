//! clusterd's failover in network namespaces (root only): two real daemons and a client namespace,
//! heartbeats over two links, a fence command as the guard. kill -9 of the active node moves the VIP
//! (seen with `ip -n`), the survivor's gratuitous ARP moves the client's neighbour entry to its MAC and
//! `iscsi-inq` at the VIP answers; one heartbeat link cut is not a failover; `haadm standby` hands the
//! group back; a node with the wrong heartbeat key is not accepted as the peer (counted, logged).

use anyhow::{Result, ensure};
use ha_tests::netlab::{NetLab, VIP, holder, phase};
use ha_tests::{field, resource, sample};
use std::time::{Duration, Instant};

const FENCE: &str = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn holding(s: &serde_json::Value, node: &str) -> bool {
    holder(s) == node && phase(s) == "holding"
}

fn r0(s: &serde_json::Value) -> serde_json::Value {
    resource(s, "r0").unwrap_or_default()
}

#[test]
fn kill9_failover_one_link_cut_and_standby() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = NetLab::new("f", 64 << 20, FENCE)?;
    for i in 0..2 {
        lab.haadm_ok(i, &["create-md", "all"])?;
    }
    lab.start(0)?;
    lab.start(1)?;
    lab.wait_status(0, "r0 connected", Duration::from_secs(20), |s| field(&r0(s), "connection") == "Connected")?;
    lab.haadm_ok(0, &["primary", "--overwrite-data-of-peer", "r0"])?;
    lab.wait_status(1, "initial sync done", Duration::from_secs(60), |s| field(&r0(s), "disk") == "UpToDate")?;

    // The sequencer takes the group on node1 (the Primary, and the preferred node).
    lab.wait_status(0, "node1 holding the group", Duration::from_secs(20), |s| holding(s, "node1"))?;
    ensure!(lab.has_vip("node1"), "node1 holds the group but has no VIP\n{}", lab.logs());
    let inq = lab.inquiry()?;
    ensure!(inq.status.success(), "iscsi-inq at the VIP on node1 failed: {}\n{}", String::from_utf8_lossy(&inq.stderr), lab.logs());
    let (mac1, mac2) = (lab.mac("node1")?, lab.mac("node2")?);
    ensure!(lab.client_neigh().as_deref() == Some(mac1.as_str()), "client neighbour for {VIP} is not node1's MAC");

    // kill -9 of the active clusterd: node2 fences node1 and takes over.
    let killed = Instant::now();
    lab.kill9(0);
    lab.wait_status(1, "node2 holding after the kill", Duration::from_secs(20), |s| holding(s, "node2"))?;
    let took = killed.elapsed();
    ensure!(lab.has_vip("node2"), "node2 holds the group but `ip -n` shows no VIP\n{}", lab.logs());
    ensure!(!lab.has_vip("node1"), "the fenced node1 still has the VIP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.client_neigh().as_deref() != Some(mac2.as_str()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        lab.client_neigh().as_deref() == Some(mac2.as_str()),
        "gratuitous ARP did not move the client's neighbour entry to node2 ({mac2}): {:?}",
        lab.client_neigh()
    );
    let inq = lab.inquiry()?;
    ensure!(inq.status.success(), "iscsi-inq at the VIP on node2 failed: {}\n{}", String::from_utf8_lossy(&inq.stderr), lab.logs());
    ensure!(std::fs::read_to_string(lab.path("fence.log"))?.contains("fenced node1 from node2"), "fence command not run");
    eprintln!("failover after kill -9: group held by node2 {took:?} after the kill");
    // The survivor counted the failover, its duration, the guard and the fence command.
    let m = lab.metrics(1)?;
    ensure!(sample(&m, "clusterd_failovers_total", &[]) == Some(1.0), "{m}");
    ensure!(sample(&m, "clusterd_failover_duration_seconds_count", &[]) == Some(1.0), "{m}");
    let secs = sample(&m, "clusterd_failover_duration_seconds_sum", &[]).unwrap_or(0.0);
    ensure!(secs > 0.0 && secs < took.as_secs_f64(), "failover duration {secs} s against {took:?} from the kill: {m}");
    ensure!(sample(&m, "clusterd_fence_commands_total", &[r#"result="fenced""#]) == Some(1.0), "{m}");
    ensure!(sample(&m, "clusterd_guard_runs_total", &[r#"result="confirmed""#]).unwrap_or(0.0) >= 1.0, "{m}");
    ensure!(sample(&m, "clusterd_group_holder", &[r#"node="node2""#]) == Some(1.0), "{m}");
    ensure!(sample(&m, "clusterd_peer_online", &[r#"peer="node1""#]) == Some(0.0), "{m}");

    // node1 comes back as the Secondary (auto-failback off) and resyncs.
    lab.reap(0);
    lab.start(0)?;
    lab.wait_status(0, "node1 back, UpToDate, Secondary", Duration::from_secs(30), |s| {
        let r = r0(s);
        field(&r, "role") == "Secondary" && field(&r, "disk") == "UpToDate" && holder(s) == "node2"
    })?;
    let epoch = lab.status(1)?["cluster"]["epoch"].as_u64().unwrap_or(0);

    // One of two heartbeat links cut for 3 × deadtime: no failover.
    lab.cut_udp_port(694, true)?;
    std::thread::sleep(Duration::from_secs(3));
    let s1 = lab.status(0)?;
    let s2 = lab.status(1)?;
    lab.cut_udp_port(694, false)?;
    ensure!(holding(&s2, "node2") && s2["cluster"]["epoch"].as_u64() == Some(epoch), "one link cut caused a failover: {s2:#}");
    ensure!(phase(&s1) != "holding" && !lab.has_vip("node1"), "node1 took the group with one link cut: {s1:#}");
    let public = s1["cluster"]["links"].as_array().and_then(|l| l.iter().find(|l| l["name"] == "public").cloned()).unwrap_or_default();
    ensure!(public["up"] == false, "the cut link is not reported down: {public}");
    let m = lab.metrics(1)?;
    ensure!(sample(&m, "clusterd_failovers_total", &[]) == Some(1.0), "a cut link is no failover: {m}");

    // standby on node2: the group moves back to node1 and the initiator finds it there.
    lab.haadm_ok(1, &["standby"])?;
    lab.wait_status(0, "node1 holding after standby", Duration::from_secs(30), |s| holding(s, "node1"))?;
    ensure!(lab.has_vip("node1") && !lab.has_vip("node2"), "the VIP did not move with standby");
    let inq = lab.inquiry()?;
    ensure!(inq.status.success(), "iscsi-inq after standby failed: {}\n{}", String::from_utf8_lossy(&inq.stderr), lab.logs());
    // A hand-over counts as the group moving to node1 (restarted since, so its first).
    let m = lab.metrics(0)?;
    ensure!(sample(&m, "clusterd_failovers_total", &[]) == Some(1.0), "{m}");
    Ok(())
}

#[test]
fn wrong_heartbeat_key_is_not_accepted() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = NetLab::new("k", 16 << 20, FENCE)?;
    ha_tests::write_secret(&lab.path("authkeys2"), "auth 1\n1 sha1 a-different-key\n")?;
    let alt = lab.path("ha-node2.yaml");
    std::fs::write(&alt, std::fs::read_to_string(&lab.config)?.replace("authkeys-file: authkeys", "authkeys-file: authkeys2"))?;
    lab.node2_config = Some(alt);
    lab.start(0)?;
    lab.start(1)?;
    let s = lab.wait_status(0, "bad-MAC drops counted", Duration::from_secs(10), |s| {
        s["cluster"]["links"].as_array().is_some_and(|l| l.iter().all(|l| l["dropped_detail"].as_str().unwrap_or("").contains("bad_mac")))
    })?;
    let peer_online = s["cluster"]["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == "node2").cloned()).unwrap_or_default();
    ensure!(peer_online["online"] == false, "node2 with the wrong key is shown online: {s:#}");
    ensure!(s["cluster"]["peer_generation"].as_u64() == Some(0), "a generation was accepted from node2: {s:#}");
    ensure!(lab.log(0).contains("heartbeat packet refused"), "the refused packets are not logged:\n{}", lab.logs());
    let m = lab.metrics(0)?;
    ensure!(sample(&m, "clusterd_heartbeat_rejected_total", &[r#"link="public""#, r#"reason="bad_mac""#]).unwrap_or(0.0) > 0.0, "{m}");
    ensure!(sample(&m, "clusterd_peer_online", &[r#"peer="node2""#]) == Some(0.0), "{m}");
    Ok(())
}
