//! Several failover groups (issue 17), root only, in network namespaces: two groups, `web` preferred
//! on node1 and `db` preferred on node2, each with its own replicated resource, VIP and target, so
//! both servers are Primary for one resource and serve initiators at once. A writer per VIP keeps
//! writing; `kill -9` of node1 moves `web` to node2 (one fence for the failure), no acknowledged write
//! of either group is lost; node1 back takes `web` back (its auto-failback is on) while `db` stays;
//! `standby db` moves only `db` (its auto-failback is off, so it stays moved); node1, now holding both,
//! killed again: node2 takes both groups after one fence.

use anyhow::{Result, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{NetLab, VIP};
use ha_tests::writer::{WriterConfig, WriterHandle, verify_file};
use ha_tests::{field, resource, sample};
use std::time::{Duration, Instant};

const VIP2: &str = "10.66.1.101";
const IQN_WEB: &str = "iqn.2026-11.org.example:web";
const IQN_DB: &str = "iqn.2026-11.org.example:db";
const DISK_SIZE: u64 = 64 << 20;
const REGION_BLOCKS: u64 = 4096;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `(holder, phase)` of group `name` in a `status --json` document.
fn group(s: &serde_json::Value, name: &str) -> (String, String) {
    let groups = s["cluster"]["groups"].as_array().cloned().unwrap_or_default();
    let g = groups.iter().find(|g| g["name"] == name).cloned().unwrap_or_default();
    (g["holder"].as_str().unwrap_or_default().to_string(), g["phase"].as_str().unwrap_or_default().to_string())
}

/// `node` holds group `name` as the node whose status this is sees it: holding there, idle (and the
/// peer named holder) on the other node.
fn holds(s: &serde_json::Value, name: &str, node: &str) -> bool {
    let here = if s["node"] == node { "holding" } else { "idle" };
    group(s, name) == (node.to_string(), here.to_string())
}

fn in_sync(s: &serde_json::Value, r: &str) -> bool {
    let r = resource(s, r).unwrap_or_default();
    field(&r, "connection") == "Connected" && field(&r, "disk") == "UpToDate" && field(&r, "peer_disk") == "UpToDate"
}

/// The lab's config with two resources and two groups (the lab's single-group file is replaced).
fn two_group_yaml(lab: &NetLab) -> Result<String> {
    let base = std::fs::read_to_string(&lab.config)?;
    for n in ["node1", "node2"] {
        std::fs::File::create(lab.path(&format!("{n}-data1.img")))?.set_len(DISK_SIZE)?;
        std::fs::File::create(lab.path(&format!("{n}-meta1.img")))?.set_len(64 << 20)?;
    }
    ha_tests::write_secret(&lab.path("r1.secret"), "replication-secret-2")?;
    let cut = base.find("group:\n").ok_or_else(|| anyhow::anyhow!("no group section in the lab config"))?;
    let metrics = base.find("metrics:\n").ok_or_else(|| anyhow::anyhow!("no metrics section in the lab config"))?;
    let r1 = r#"  r1:
    protocol: C
    device: ha1
    startup: { degr-wfc-timeout: 2s }
    net: { cram-hmac-alg: sha1, shared-secret-file: r1.secret, timeout: 800ms, ping-int: 1s, ping-timeout: 500ms, connect-int: 200ms }
    syncer: { rate: unlimited, al-extents: 257 }
    on:
      node1: { disk: node1-data1.img, address: "10.66.2.1:7789", meta-disk: node1-meta1.img }
      node2: { disk: node2-data1.img, address: "10.66.2.2:7789", meta-disk: node2-meta1.img }
cluster:
"#;
    let head = base[..cut].replacen("cluster:\n", r1, 1);
    let groups = format!(
        r#"groups:
  web:
    preferred: node1
    auto-failback: on
    resources: [r0]
    vip: {{ address: {VIP}/24, interface: pub0, garp-count: 3, garp-interval: 100ms, garp-repeat-after: 1s }}
    start-timeout: 20s
    stop-timeout: 20s
  db:
    preferred: node2
    auto-failback: off
    resources: [r1]
    vip: {{ address: {VIP2}/24, interface: pub0, garp-count: 3, garp-interval: 100ms, garp-repeat-after: 1s }}
    start-timeout: 20s
    stop-timeout: 20s
targets:
  {IQN_WEB}:
    luns:
      0: {{ resource: r0 }}
  {IQN_DB}:
    luns:
      0: {{ resource: r1 }}
"#
    );
    Ok(format!("{head}{groups}{}", &base[metrics..]))
}

fn writer(lab: &NetLab, vip: &str, iqn: &str) -> Result<WriterHandle> {
    let mut c = InitiatorConfig::new(&format!("{vip}:3260"), iqn);
    c.connect_timeout = Duration::from_millis(200);
    let mut cfg = WriterConfig::new(Some(&lab.ns("client")), c, REGION_BLOCKS);
    cfg.backoff = Duration::from_millis(50);
    let w = WriterHandle::spawn(cfg)?;
    w.wait_acked(200, Duration::from_secs(20))?;
    Ok(w)
}

#[test]
fn two_groups_both_nodes_primary_kill9_and_failback() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let fence = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";
    let mut lab = NetLab::new("g", DISK_SIZE, fence)?;
    let yaml = two_group_yaml(&lab)?;
    std::fs::write(&lab.config, yaml)?;
    for i in 0..2 {
        lab.haadm_ok(i, &["create-md", "all"])?;
    }
    lab.start(0)?;
    lab.start(1)?;
    for r in ["r0", "r1"] {
        lab.wait_status(0, "connected", Duration::from_secs(20), |s| field(&resource(s, r).unwrap_or_default(), "connection") == "Connected")?;
    }
    // Initial syncs: r0 from node1, r1 from node2 (each from its group's preferred node).
    lab.haadm_ok(0, &["primary", "--overwrite-data-of-peer", "r0"])?;
    lab.haadm_ok(1, &["primary", "--overwrite-data-of-peer", "r1"])?;
    lab.wait_status(0, "both in sync", Duration::from_secs(60), |s| in_sync(s, "r0") && in_sync(s, "r1"))?;

    // Both servers work: node1 holds web (r0 Primary there), node2 holds db (r1 Primary there). db has
    // no auto-failback, so whichever node claimed it first keeps it: pull it to node2 if node1 won.
    let held = |s: &serde_json::Value, g: &str| ["node1", "node2"].iter().any(|n| holds(s, g, n));
    let s = lab.wait_status(1, "both groups held", Duration::from_secs(30), |s| held(s, "web") && held(s, "db"))?;
    if holds(&s, "db", "node1") {
        lab.haadm_ok(1, &["takeover", "db"])?;
    }
    let both = |s: &serde_json::Value| holds(s, "web", "node1") && holds(s, "db", "node2");
    lab.wait_status(0, "web on node1, db on node2", Duration::from_secs(30), both)?;
    lab.wait_status(1, "the same seen from node2", Duration::from_secs(10), both)?;
    let s1 = lab.status(0)?;
    ensure!(field(&resource(&s1, "r0").unwrap_or_default(), "role") == "Primary", "r0 not Primary on node1: {s1}");
    let s2 = lab.status(1)?;
    ensure!(field(&resource(&s2, "r1").unwrap_or_default(), "role") == "Primary", "r1 not Primary on node2: {s2}");
    ensure!(lab.has_address("node1", VIP) && lab.has_address("node2", VIP2), "each node should hold its group's VIP\n{}", lab.logs());
    ensure!(!lab.has_address("node2", VIP) && !lab.has_address("node1", VIP2), "a VIP on both nodes\n{}", lab.logs());
    let text = lab.haadm_ok(0, &["status"])?;
    ensure!(text.contains("group web holder:node1") && text.contains("group db holder:node2"), "status shows no groups:\n{text}");

    let w_web = writer(&lab, VIP, IQN_WEB)?;
    let w_db = writer(&lab, VIP2, IQN_DB)?;

    // kill -9 node1: node2 fences it once and takes web; db does not move.
    let killed = Instant::now();
    lab.kill9(0);
    lab.wait_status(1, "node2 holds both", Duration::from_secs(20), |s| holds(s, "web", "node2") && holds(s, "db", "node2"))?;
    let took = killed.elapsed();
    w_web.wait_ack_after(Instant::now(), Duration::from_secs(15))?;
    w_web.wait_acked(w_web.acked_count() + 200, Duration::from_secs(15))?;
    w_db.wait_acked(w_db.acked_count() + 200, Duration::from_secs(15))?;
    let (web_log, db_log) = (w_web.stop()?, w_db.stop()?);
    let web_ok = verify_file(&lab.path("node2-data.img"), &web_log.latest_acked())?;
    web_ok.ensure_ok("web after kill -9 of node1 (node2's r0)")?;
    let db_ok = verify_file(&lab.path("node2-data1.img"), &db_log.latest_acked())?;
    db_ok.ensure_ok("db across the kill (node2's r1)")?;
    let fences = std::fs::read_to_string(lab.path("fence.log")).unwrap_or_default();
    ensure!(fences.matches("fenced node1").count() == 1, "node1 fenced other than once: {fences:?}");
    let db_errors = db_log.errors_since(killed).count();
    let m = lab.metrics(1)?;
    ensure!(sample(&m, "clusterd_group_holder", &[r#"group="web""#, r#"node="node2""#]) == Some(1.0), "{m}");
    ensure!(sample(&m, "clusterd_group_holder", &[r#"group="db""#, r#"node="node2""#]) == Some(1.0), "{m}");
    eprintln!(
        "two groups: node2 held both {took:?} after the kill; web: {} acknowledged blocks verified, db: {} verified, db writer errors {db_errors}",
        web_ok.checked, db_ok.checked
    );

    // node1 returns: after the resync web moves back (auto-failback), db stays on node2.
    lab.start(0)?;
    lab.wait_status(1, "web back on node1", Duration::from_secs(60), |s| holds(s, "web", "node1") && holds(s, "db", "node2"))?;
    lab.wait_status(0, "node1 agrees", Duration::from_secs(10), |s| holds(s, "web", "node1") && holds(s, "db", "node2"))?;
    ensure!(lab.has_address("node1", VIP) && !lab.has_address("node2", VIP) && lab.has_address("node2", VIP2), "VIPs after the failback\n{}", lab.logs());

    // standby of one group by name moves only that group (once node1's copy of db is in sync again).
    lab.wait_status(0, "r1 resynced on node1", Duration::from_secs(60), |s| in_sync(s, "r1"))?;
    let out = lab.haadm_ok(1, &["standby", "db"])?;
    ensure!(out.contains("group db: done"), "{out}");
    lab.wait_status(0, "node1 holds both after standby db", Duration::from_secs(30), |s| holds(s, "web", "node1") && holds(s, "db", "node1"))?;
    ensure!(lab.has_address("node1", VIP2) && !lab.has_address("node2", VIP2), "db's VIP did not move\n{}", lab.logs());

    // node1 now holds both groups: its death is one failure, fenced once, and node2 takes both.
    lab.kill9(0);
    lab.wait_status(1, "node2 holds both again", Duration::from_secs(20), |s| holds(s, "web", "node2") && holds(s, "db", "node2"))?;
    let fences = std::fs::read_to_string(lab.path("fence.log")).unwrap_or_default();
    ensure!(fences.matches("fenced node1").count() == 2, "two failures, two fences expected: {fences:?}\n{}", lab.logs());
    let guards = sample(&lab.metrics(1)?, "clusterd_fence_commands_total", &[r#"result="fenced""#]).unwrap_or(0.0);
    ensure!(guards == 2.0, "fence commands on node2: {guards}");
    let bad = lab.haadm(1, &["standby", "nosuch"])?;
    let said = format!("{}{}", String::from_utf8_lossy(&bad.stdout), String::from_utf8_lossy(&bad.stderr));
    ensure!(!bad.status.success() && said.contains("no failover group `nosuch`"), "{bad:?}");
    Ok(())
}
