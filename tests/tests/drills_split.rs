//! Both heartbeat links and the replication link cut with NO guard configured (the explicit unsafe
//! choice `unsafe-promote-without-guard: true`): both nodes end up serving, status warns of the split
//! brain, and each side takes writes. On heal the replication link detects the split brain (both
//! StandAlone, nothing merged), the heartbeat layer has the lower (epoch, node) release the group, and
//! `haadm connect --discard-my-data` on that node resolves it: its changes are discarded and the files
//! become identical.

use anyhow::{Result, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{IQN, NetLab, VIP, holder, phase};
use ha_tests::writer::{WriterConfig, WriterHandle};
use ha_tests::{field, resource, sha1_file};
use std::time::Duration;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn r0(s: &serde_json::Value) -> serde_json::Value {
    resource(s, "r0").unwrap_or_default()
}

fn holding(s: &serde_json::Value, node: &str) -> bool {
    holder(s) == node && phase(s) == "holding"
}

fn set_repl_link(lab: &NetLab, up: bool) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.ns("node1"), "link", "set", "repl0", if up { "up" } else { "down" }])
        .output()?;
    ensure!(out.status.success(), "ip link set repl0: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// 40 acknowledged writes from inside `node`'s namespace to the VIP, which is local there.
fn write_on(lab: &NetLab, node: &str, seed: u64) -> Result<()> {
    let mut c = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    c.connect_timeout = Duration::from_millis(500);
    let mut cfg = WriterConfig::new(Some(&lab.ns(node)), c, 1024);
    cfg.seed = seed;
    let w = WriterHandle::spawn(cfg)?;
    w.wait_acked(40, Duration::from_secs(15))?;
    w.stop()?;
    Ok(())
}

#[test]
fn split_brain_without_guard_is_detected_and_resolved_by_hand() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = NetLab::new("sb", 32 << 20, "")?;
    let cfg = std::fs::read_to_string(&lab.config)?;
    std::fs::write(&lab.config, cfg.replace("  stop-timeout: 20s\n", "  stop-timeout: 20s\n  unsafe-promote-without-guard: true\n"))?;
    lab.bring_up_group()?;

    // Full partition between the nodes: replication link down (it carries heartbeat link 2), link 1 dropped.
    set_repl_link(&lab, false)?;
    lab.cut_udp_port(694, true)?;
    let s2 = lab.wait_status(1, "node2 taking over without a guard", Duration::from_secs(20), |s| holding(s, "node2"))?;
    ensure!(
        !s2["cluster"]["split_brain_warning"].as_str().unwrap_or("").is_empty(),
        "an unguarded takeover must warn of a possible split brain: {s2:#}"
    );
    ensure!(lab.has_vip("node1") && lab.has_vip("node2"), "both nodes should serve during the split");
    write_on(&lab, "node1", 11)?;
    write_on(&lab, "node2", 22)?;

    // Heal: the replication link must refuse to merge; the group ends on one node.
    set_repl_link(&lab, true)?;
    lab.cut_udp_port(694, false)?;
    for i in 0..2 {
        lab.wait_status(i, "split brain detected, StandAlone", Duration::from_secs(20), |s| {
            let r = r0(s);
            r["split_brain"] == true && field(&r, "connection") == "StandAlone"
        })?;
    }
    let one_holder = |s: &serde_json::Value| !holder(s).is_empty() && phase(s) != "stopping";
    let s1 = lab.wait_status(0, "one node keeps the group", Duration::from_secs(20), |s| {
        one_holder(s) && !(holding(s, "node1") && lab.has_vip("node2"))
    })?;
    let winner = holder(&s1);
    let (victim, survivor) = if winner == "node1" { (1, 0) } else { (0, 1) };
    lab.wait_status(victim, "the victim released the group and is Secondary", Duration::from_secs(20), |s| {
        phase(s) != "holding" && field(&r0(s), "role") == "Secondary"
    })?;
    ensure!(!lab.has_vip(["node1", "node2"][victim]), "the releasing node still has the VIP");

    // Resolve by hand, as with DRBD: discard the victim's changes.
    lab.haadm_ok(victim, &["connect", "--discard-my-data", "r0"])?;
    lab.haadm_ok(survivor, &["connect", "r0"])?;
    lab.wait_status(victim, "resync from the survivor done", Duration::from_secs(60), |s| {
        let r = r0(s);
        field(&r, "connection") == "Connected" && field(&r, "disk") == "UpToDate" && field(&r, "replication") == "Established"
    })?;
    let a = sha1_file(&lab.path("node1-data.img"))?;
    let b = sha1_file(&lab.path("node2-data.img"))?;
    ensure!(a == b, "backing files differ after resolving the split brain ({a} vs {b})");
    eprintln!("split brain: {winner} kept the group; victim's changes discarded; files identical ({a})");
    Ok(())
}
