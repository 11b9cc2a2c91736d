//! The Pacemaker drill: a real two-node Corosync 3 + Pacemaker 2.1 cluster ([`PmLab`]) running the
//! README's crm configuration (deploy/pacemaker/ha-iscsi.crm) with the OCF agents under test, clusterd
//! in `cluster.manager: pacemaker` with `fencing resource-and-stonith`, and a writer in the client
//! namespace writing self-checking blocks through the VIP. Then PM_KILLS times (default 1): kill -9 of
//! everything the holder runs (corosync, Pacemaker, clusterd), Pacemaker fences it (test fence agent),
//! promotes the survivor and starts the group there; measured kill -> first acknowledged write exactly as
//! tests/bench/failover.sh measures the embedded manager. The killed node is restarted and must rejoin,
//! resync and lose the fence constraint. Then `pcs resource move` moves the group back and the writer
//! goes on, and finally the Secondary's node is killed: the Primary suspends I/O until clusterd's
//! fence-peer handler (crm-fence-peer) has constrained or fenced it, and writes go on. Every acknowledged write is checked on the final holder's disk and through the VIP; 0 lost.
//!
//! Needs root, Debian's pacemaker, corosync, crmsh, pcs and resource-agents. Every wait is bounded; the
//! namespaces and processes are removed when the lab is dropped (also on error).

use anyhow::{Context, Result, bail, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{IQN, NODES, VIP};
use ha_tests::pacemaker::{CONSENSUS_MS, PmLab, TOKEN_MS};
use ha_tests::writer::{WriterConfig, WriterHandle, verify_file, verify_through_target};
use ha_tests::{field, poll_until, resource, sha1_file};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DISK_SIZE: u64 = 64 << 20;
const REGION_BLOCKS: u64 = 4096;
/// The same initiator behaviour as the embedded failover benchmark.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF: Duration = Duration::from_millis(50);
const FORM_LIMIT: Duration = Duration::from_secs(120);
const GROUP_LIMIT: Duration = Duration::from_secs(90);
const RESUME_LIMIT: Duration = Duration::from_secs(60);
const REJOIN_LIMIT: Duration = Duration::from_secs(90);
const STEADY_WRITES: usize = 100;

fn initiator_cfg() -> InitiatorConfig {
    let mut c = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    c.connect_timeout = CONNECT_TIMEOUT;
    c
}

fn writer_cfg(pm: &PmLab) -> WriterConfig {
    let mut cfg = WriterConfig::new(Some(&pm.lab.ns("client")), initiator_cfg(), REGION_BLOCKS);
    cfg.backoff = BACKOFF;
    cfg.time_limit = Duration::from_secs(300);
    cfg
}

fn r0(pm: &PmLab, i: usize) -> serde_json::Value {
    pm.lab.status(i).ok().and_then(|s| resource(&s, "r0")).unwrap_or_default()
}

/// `<node name="N" ... online="true" ...>` in crm_mon's XML.
fn node_online(xml: &str, name: &str) -> bool {
    xml.split("<node ").any(|tag| {
        let tag = tag.split('>').next().unwrap_or("");
        tag.contains(&format!("name=\"{name}\"")) && tag.contains("online=\"true\"")
    })
}

/// Node i holds the group: r0 Primary, the target serving, the VIP on its interface.
fn holds_group(pm: &PmLab, i: usize) -> bool {
    field(&r0(pm, i), "role") == "Primary"
        && pm.lab.haadm_ok(i, &["target", "state"]).is_ok_and(|s| s.trim() == "running")
        && pm.lab.has_vip(NODES[i])
}

fn wait_holder(pm: &PmLab, i: usize, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    poll_until(limit, || holds_group(pm, i).then_some(()))
        .with_context(|| format!("{} did not take the group within {limit:?}\n{}", NODES[i], pm.logs()))?;
    Ok(t.elapsed())
}

fn has_fence_constraint(pm: &PmLab, i: usize) -> bool {
    pm.node_ok(i, &["cibadmin", "-Q", "-o", "constraints"]).is_ok_and(|x| x.contains("id=\"ha-fence-r0\""))
}

/// The cluster up, r0 in sync (the initial full sync by hand, as the README says, before Pacemaker
/// manages it), the configuration loaded, node1 holding the group.
fn bring_up(pm: &PmLab) -> Result<()> {
    for i in 0..2 {
        pm.lab.haadm_ok(i, &["create-md", "all"])?;
    }
    pm.start_node(0)?;
    pm.start_node(1)?;
    let formed = Instant::now();
    pm.wait_crm(0, "both nodes online with a DC", FORM_LIMIT, |x| {
        node_online(x, "node1") && node_online(x, "node2") && x.contains("<current_dc present=\"true\"")
    })?;
    println!("cluster formed {:.1} s after the nodes started", formed.elapsed().as_secs_f64());
    for i in 0..2 {
        pm.lab.haadm_ok(i, &["up", "r0"])?;
    }
    pm.lab.haadm_ok(0, &["primary", "--force", "r0"])?;
    pm.lab.wait_status(1, "initial sync done", Duration::from_secs(60), |s| {
        resource(s, "r0").is_some_and(|r| field(&r, "disk") == "UpToDate")
    })?;
    pm.lab.haadm_ok(0, &["secondary", "r0"])?;
    for i in 0..2 {
        pm.lab.haadm_ok(i, &["down", "r0"])?;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    pm.load_crm_config(0, &repo.join("deploy/pacemaker/ha-iscsi.crm"))?;
    let t = wait_holder(pm, 0, GROUP_LIMIT)?;
    println!("configuration loaded; node1 promoted and serving after {:.1} s", t.as_secs_f64());
    Ok(())
}

struct Sample {
    killed: &'static str,
    first_write: Duration,
    fenced: Option<Duration>,
    holder_seen: Duration,
    scsi_failures: usize,
    rejoin: Duration,
}

/// kill -9 of the holder's whole node; Pacemaker fences it and moves everything to the survivor.
fn kill_cycle(pm: &PmLab, writer: &WriterHandle, victim: usize) -> Result<Sample> {
    let survivor = 1 - victim;
    let killed = Instant::now();
    pm.kill_node(victim);
    wait_holder(pm, survivor, RESUME_LIMIT)?;
    let holder_seen = killed.elapsed();
    writer.wait_ack_after(Instant::now(), RESUME_LIMIT)?;
    writer.wait_acked(writer.acked_count() + STEADY_WRITES, RESUME_LIMIT)?;
    let log = writer.snapshot();
    let first_write = log.outage_after(killed).context("no write acknowledged after the kill")?;
    let scsi_failures = log.errors_since(killed).filter(|e| e.scsi_failure).count();
    let fenced = pm.fences.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().find(|(n, at)| n == NODES[victim] && *at > killed).map(|(_, at)| *at - killed);
    ensure!(fenced.is_some(), "{} was promoted without {} being fenced", NODES[survivor], NODES[victim]);
    // Promoted with the peer unknown and fencing resource-and-stonith: the peer must be kept unpromoted.
    ensure!(has_fence_constraint(pm, survivor), "no ha-fence-r0 constraint after promoting {} without its peer", NODES[survivor]);

    let restarted = Instant::now();
    pm.start_node(victim)?;
    pm.wait_crm(survivor, "the restarted node online", REJOIN_LIMIT, |x| node_online(x, NODES[victim]))?;
    poll_until(REJOIN_LIMIT, || {
        let r = r0(pm, victim);
        (field(&r, "connection") == "Connected" && field(&r, "disk") == "UpToDate" && field(&r, "role") == "Secondary").then_some(())
    })
    .with_context(|| format!("{} did not rejoin as an UpToDate Secondary\n{}", NODES[victim], pm.logs()))?;
    // The volume agent's monitor on either node removes the constraint once both are UpToDate.
    poll_until(Duration::from_secs(40), || (!has_fence_constraint(pm, survivor)).then_some(()))
        .with_context(|| format!("ha-fence-r0 still in place after {} resynced\n{}", NODES[victim], pm.logs()))?;
    ensure!(holds_group(pm, survivor), "the group left {} when {} came back", NODES[survivor], NODES[victim]);
    Ok(Sample { killed: NODES[victim], first_write, fenced, holder_seen, scsi_failures, rejoin: restarted.elapsed() })
}

/// `pcs resource move` of the group to `to` (pcs removes its temporary constraint once moved).
fn move_group(pm: &PmLab, writer: &WriterHandle, to: usize) -> Result<Duration> {
    let from = 1 - to;
    let t = Instant::now();
    let mv = ["timeout", "120", "pcs", "resource", "move", "iscsi-group", NODES[to]];
    if let Err(e) = pm.node_ok(from, &mv) {
        // The volume agent sets a node's promotion score from its monitor (every 10 s). A resync that
        // ends just after the returning node's monitor leaves its old score until the next one, and pcs
        // refuses a move that its simulation shows would not happen. Clear the move's constraint, let
        // one monitor interval pass, and ask once more.
        println!("pcs resource move refused ({e:#}); retrying once after a monitor interval");
        pm.node_ok(from, &["timeout", "60", "pcs", "resource", "clear", "iscsi-group"])?;
        std::thread::sleep(Duration::from_secs(12));
        pm.node_ok(from, &mv)?;
    }
    wait_holder(pm, to, GROUP_LIMIT)?;
    writer.wait_ack_after(Instant::now(), RESUME_LIMIT)?;
    writer.wait_acked(writer.acked_count() + STEADY_WRITES, RESUME_LIMIT)?;
    let log = writer.snapshot();
    let (gap, _) = log.longest_gap(t, Instant::now()).context("no writes during the move")?;
    let scsi = log.errors_since(t).filter(|e| e.scsi_failure).count();
    ensure!(scsi == 0, "{scsi} writes failed with SCSI errors during the move");
    ensure!(!holds_group(pm, from), "{} still serves after the move", NODES[from]);
    println!("pcs resource move iscsi-group {}: done in {:.2} s, longest write pause {:.2} s, 0 SCSI errors", NODES[to], t.elapsed().as_secs_f64(), gap.as_secs_f64());
    Ok(gap)
}

/// What a writer that cannot reach the VIP needs to know: node1's packet filter and listeners.
fn diagnose(pm: &PmLab) -> String {
    let mut out = String::new();
    for args in [&["iptables", "-S"][..], &["ss", "-ltn"][..], &["ip", "addr"][..], &["crm_mon", "-1"][..]] {
        let o = pm.node_exec(0, args).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("--- node1: {} ---\n{o}\n", args.join(" ")));
    }
    out
}

/// kill -9 of the Secondary's node: the Primary (`fencing resource-and-stonith`) suspends its
/// acknowledgements, clusterd runs the fence-peer handler (crm-fence-peer), which places the constraint
/// and answers 4 (the peer still a member: the constraint binds it) or 7 (fenced); then I/O resumes.
/// Returns the longest write pause. Runs last: the Secondary stays down.
fn secondary_loss(pm: &PmLab, writer: &WriterHandle, primary: usize) -> Result<Duration> {
    let secondary = 1 - primary;
    let killed = Instant::now();
    pm.kill_node(secondary);
    writer.wait_acked(writer.acked_count() + STEADY_WRITES, RESUME_LIMIT)?;
    let log = writer.snapshot();
    // From a little before the kill: the pause spans the last acknowledgement before it.
    let (pause, _) = log.longest_gap(killed - Duration::from_secs(2), Instant::now()).context("no writes after the Secondary's loss")?;
    let scsi = log.errors_since(killed).filter(|e| e.scsi_failure).count();
    ensure!(scsi == 0, "{scsi} writes failed with SCSI errors after the Secondary's loss");
    ensure!(has_fence_constraint(pm, primary), "no ha-fence-r0 constraint after the Primary lost its peer");
    let log_text = std::fs::read_to_string(pm.dir().join(NODES[primary]).join("clusterd.log")).unwrap_or_default();
    ensure!(
        log_text.contains("I/O suspended after losing") && log_text.contains("I/O resumed (the fence-peer handler"),
        "clusterd on {} did not suspend I/O and resume it through the fence-peer handler\n{}",
        NODES[primary],
        pm.logs()
    );
    ensure!(holds_group(pm, primary), "{} lost the group when its Secondary died", NODES[primary]);
    println!("kill -9 of the Secondary ({}): longest write pause {:.2} s (suspended I/O until crm-fence-peer confirmed), 0 SCSI errors", NODES[secondary], pause.as_secs_f64());
    // Pacemaker fences the lost node in any case (the harness records it).
    let fenced_after = |n: &str| pm.fences.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(f, at)| f == n && *at > killed);
    poll_until(RESUME_LIMIT, || fenced_after(NODES[secondary]).then_some(()))
        .with_context(|| format!("{} was never fenced\n{}", NODES[secondary], pm.logs()))?;
    Ok(pause)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn run(kills: usize) -> Result<()> {
    let pm = PmLab::new(DISK_SIZE)?;
    bring_up(&pm)?;
    let mut cfg = writer_cfg(&pm);
    cfg.time_limit = (RESUME_LIMIT * 3 + REJOIN_LIMIT * 2 + Duration::from_secs(60)) * u32::try_from(kills + 1).context("PM_KILLS")?;
    let writer = WriterHandle::spawn(cfg)?;
    writer.wait_acked(200, Duration::from_secs(30)).with_context(|| diagnose(&pm))?;

    let mut samples = Vec::new();
    let mut holder = 0;
    for k in 1..=kills {
        let s = kill_cycle(&pm, &writer, holder).with_context(|| format!("kill {k} of {kills} ({})\n{}", NODES[holder], pm.logs()))?;
        eprintln!("kill {k}/{kills}: {} killed, first write after {}", s.killed, secs(s.first_write));
        samples.push(s);
        holder = 1 - holder;
    }
    move_group(&pm, &writer, 1 - holder).with_context(|| pm.logs())?;
    holder = 1 - holder;

    let log = writer.stop()?;
    println!(
        "corosync token {TOKEN_MS} ms, consensus {CONSENSUS_MS} ms; Pacemaker 2.1 defaults otherwise (volume monitor 9 s Promoted / 10 s Unpromoted); fence agent: the drill's (kills the node's namespaces)"
    );
    println!("{:>4}  {:<6} {:>12} {:>10} {:>12} {:>5} {:>9}", "kill", "killed", "first write", "fenced", "holder seen", "scsi", "rejoin");
    for (i, s) in samples.iter().enumerate() {
        let fenced = s.fenced.map_or("-".to_string(), secs);
        println!("{:>4}  {:<6} {:>12} {:>10} {:>12} {:>5} {:>9}", i + 1, s.killed, secs(s.first_write), fenced, secs(s.holder_seen), s.scsi_failures, secs(s.rejoin));
    }
    let mut times: Vec<Duration> = samples.iter().map(|s| s.first_write).collect();
    times.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!("pacemaker: kill -9 of the holder's node -> first acknowledged write at the VIP, {} kills: min {} / median {} / max {}", times.len(), secs(*min), secs(times[times.len() / 2]), secs(*max));
    }
    let failed: usize = samples.iter().map(|s| s.scsi_failures).sum();
    ensure!(failed == 0, "{failed} writes failed with SCSI errors during the failovers");

    // Nothing acknowledged may be missing: on the final holder's disk, through the VIP, and both
    // backing files identical once the resync is done.
    let expected = log.latest_acked();
    let final_holder = NODES[holder];
    let on_disk = verify_file(&pm.dir().join(format!("{final_holder}-data.img")), &expected)?;
    ensure!(on_disk.bad.is_empty(), "{} of {} acknowledged blocks wrong on {final_holder}: {:?}", on_disk.bad.len(), on_disk.checked, &on_disk.bad[..on_disk.bad.len().min(5)]);
    let via_vip = verify_through_target(Some(&pm.lab.ns("client")), &initiator_cfg(), &expected)?;
    ensure!(via_vip.bad.is_empty(), "{} of {} acknowledged blocks wrong through the VIP", via_vip.bad.len(), via_vip.checked);
    println!("{} writes acknowledged; {} blocks checked on {final_holder}'s disk and through the VIP: 0 acknowledged writes lost", log.acked.len(), on_disk.checked);
    poll_until(Duration::from_secs(30), || {
        let r = r0(&pm, holder);
        (field(&r, "peer_disk") == "UpToDate" && r["out_of_sync_bytes"].as_u64() == Some(0)).then_some(())
    })
    .context("the peer did not catch up at the end")?;
    let (h1, h2) = (sha1_file(&pm.dir().join("node1-data.img"))?, sha1_file(&pm.dir().join("node2-data.img"))?);
    ensure!(h1 == h2, "the backing files differ at the end ({h1} vs {h2})");
    println!("both backing files identical (sha1 {h1})");

    // Last: the Primary loses its Secondary, with a fresh writer running.
    let writer = WriterHandle::spawn(writer_cfg(&pm))?;
    writer.wait_acked(200, Duration::from_secs(30))?;
    secondary_loss(&pm, &writer, holder).context("the Secondary's loss")?;
    let log = writer.stop()?;
    let expected = log.latest_acked();
    let on_disk = verify_file(&pm.dir().join(format!("{final_holder}-data.img")), &expected)?;
    ensure!(on_disk.bad.is_empty(), "after the Secondary's loss, {} of {} acknowledged blocks wrong on {final_holder}", on_disk.bad.len(), on_disk.checked);
    let via_vip = verify_through_target(Some(&pm.lab.ns("client")), &initiator_cfg(), &expected)?;
    ensure!(via_vip.bad.is_empty(), "after the Secondary's loss, {} of {} acknowledged blocks wrong through the VIP", via_vip.bad.len(), via_vip.checked);
    println!("after the Secondary's loss: {} blocks checked on {final_holder}'s disk and through the VIP: 0 acknowledged writes lost", on_disk.checked);
    Ok(())
}

fn main() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("needs root (namespaces)");
    }
    let kills = match std::env::var("PM_KILLS") {
        Err(_) => 1,
        Ok(v) => v.trim().parse::<usize>().ok().filter(|n| (1..=10).contains(n)).with_context(|| format!("PM_KILLS={v:?}: expected 1..=10"))?,
    };
    run(kills)
}
