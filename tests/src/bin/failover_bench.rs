//! Failover benchmark: KILLS (default 20) × kill -9 of the clusterd holding the group while a writer in
//! the client namespace keeps writing through the VIP; each sample is kill → first acknowledged write.
//!
//! Runs the release binaries found next to this executable (`cargo build --release -p ha-tests -p
//! clusterd --bins`; `tests/bench/failover.sh` does that) in a [`NetLab`]: two nodes and a client in
//! network namespaces this process creates and deletes (also on error, when the lab is dropped), with the
//! lab's keepalive 200 ms / deadtime 1 s. After each kill the killed node is restarted and must come back
//! connected and UpToDate before the next kill; auto-failback is off, so the group stays on the survivor
//! and the next kill hits the other node. At the end every acknowledged write is checked on the final
//! holder's backing file and through the VIP, and both backing files must be identical.
//!
//! Env: KILLS (1..=200, default 20). Needs root.

use anyhow::{Context, Result, bail, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{IQN, NODES, NetLab, VIP, holder, phase};
use ha_tests::writer::{VerifyReport, WriterConfig, WriterHandle, verify_file, verify_through_target};
use ha_tests::{field, resource, sha1_file};
use std::time::{Duration, Instant};

/// The survivor fences the dead node as if powering it off (its VIP goes too), as in the drills.
const FENCE: &str = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";
/// 64 MiB backing files keep the initial sync short; the writer uses the first 16 MiB.
const DISK_SIZE: u64 = 64 << 20;
const REGION_BLOCKS: u64 = 4096;
/// Same initiator behaviour as drill a: a SYN sent before the gratuitous ARP is retried after 200 ms
/// instead of waiting for TCP's one-second retransmission timer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF: Duration = Duration::from_millis(50);
/// Bounds for each phase of one kill cycle.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(15);
const RESUME_LIMIT: Duration = Duration::from_secs(15);
const REJOIN_LIMIT: Duration = Duration::from_secs(60);
/// Writes acknowledged after each failover before the killed node is restarted (the writer is steady).
const STEADY_WRITES: usize = 100;
/// The goal for one failover.
const GOAL: Duration = Duration::from_millis(1500);

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn kills_from_env() -> Result<usize> {
    match std::env::var("KILLS") {
        Err(_) => Ok(20),
        Ok(v) => {
            let n: usize = v.trim().parse().with_context(|| format!("KILLS={v:?} is not a number"))?;
            ensure!((1..=200).contains(&n), "KILLS={n}: expected 1..=200");
            Ok(n)
        }
    }
}

fn r0(s: &serde_json::Value) -> serde_json::Value {
    resource(s, "r0").unwrap_or_default()
}

fn holding(s: &serde_json::Value, node: &str) -> bool {
    holder(s) == node && phase(s) == "holding"
}

/// Whether node `name` is online in this status document's view of the cluster (heartbeat heard).
fn sees_online(s: &serde_json::Value, name: &str) -> bool {
    s["cluster"]["nodes"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["name"] == name && n["online"] == true))
}

fn initiator_cfg() -> InitiatorConfig {
    let mut c = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    c.connect_timeout = CONNECT_TIMEOUT;
    c
}

/// Two nodes up, r0 in sync, node1 holding the group.
fn start_lab() -> Result<NetLab> {
    let mut lab = NetLab::new("fb", DISK_SIZE, FENCE)?;
    lab.bring_up_group()?;
    Ok(lab)
}

/// One kill: which node died, kill → first acknowledged write, and what the writer saw meanwhile.
struct Sample {
    killed: &'static str,
    first_write: Duration,
    takeover_seen: Duration,
    errors: usize,
    scsi_failures: usize,
    rejoin: Duration,
}

/// Kills the holder `victim`, measures, restarts it and waits until it is back in sync.
fn kill_cycle(lab: &mut NetLab, writer: &WriterHandle, victim: usize) -> Result<Sample> {
    let survivor = 1 - victim;
    let killed = Instant::now();
    lab.kill9(victim);
    lab.wait_status(survivor, "the survivor holding the group", TAKEOVER_LIMIT, |s| holding(s, NODES[survivor]))?;
    let takeover_seen = killed.elapsed();
    writer.wait_ack_after(Instant::now(), RESUME_LIMIT)?;
    writer.wait_acked(writer.acked_count() + STEADY_WRITES, RESUME_LIMIT)?;
    let log = writer.snapshot();
    let first_write = log.outage_after(killed).context("no write acknowledged after the kill")?;
    let (mut errors, mut scsi_failures) = (0, 0);
    for e in log.errors_since(killed) {
        errors += 1;
        scsi_failures += usize::from(e.scsi_failure);
    }

    let restarted = Instant::now();
    lab.start(victim)?;
    lab.wait_status(victim, "the restarted node connected and UpToDate", REJOIN_LIMIT, |s| {
        let r = r0(s);
        field(&r, "connection") == "Connected"
            && field(&r, "disk") == "UpToDate"
            && field(&r, "role") == "Secondary"
            && sees_online(s, NODES[survivor])
    })?;
    let s = lab.wait_status(survivor, "the peer UpToDate and online", REJOIN_LIMIT, |s| {
        let r = r0(s);
        field(&r, "peer_disk") == "UpToDate" && r["out_of_sync_bytes"].as_u64() == Some(0) && sees_online(s, NODES[victim])
    })?;
    ensure!(holding(&s, NODES[survivor]), "the group left {} after {} came back: {s:#}", NODES[survivor], NODES[victim]);
    Ok(Sample { killed: NODES[victim], first_write, takeover_seen, errors, scsi_failures, rejoin: restarted.elapsed() })
}

fn millis(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn print_report(samples: &[Sample]) {
    println!("{:>4}  {:<6} {:>12} {:>14} {:>7} {:>5} {:>9}", "kill", "killed", "first write", "holder seen", "errors", "scsi", "rejoin");
    for (i, s) in samples.iter().enumerate() {
        println!(
            "{:>4}  {:<6} {:>12} {:>14} {:>7} {:>5} {:>9}",
            i + 1,
            s.killed,
            millis(s.first_write),
            millis(s.takeover_seen),
            s.errors,
            s.scsi_failures,
            millis(s.rejoin)
        );
    }
    let mut times: Vec<Duration> = samples.iter().map(|s| s.first_write).collect();
    times.sort();
    let (Some(min), Some(max)) = (times.first(), times.last()) else {
        println!("no samples");
        return;
    };
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2 };
    let total: Duration = times.iter().sum();
    let mean = total / u32::try_from(times.len()).unwrap_or(u32::MAX);
    let over = times.iter().filter(|t| **t > GOAL).count();
    println!(
        "kill -9 of the holder -> first acknowledged write at the VIP, {} kills: min {} / median {} / max {} / mean {} ({over} over the {} goal)",
        times.len(),
        millis(*min),
        millis(median),
        millis(*max),
        millis(mean),
        millis(GOAL)
    );
}

fn verify_ok(what: &str, r: &VerifyReport) -> Result<()> {
    println!("{what}: {} acknowledged blocks checked ({} newer than acknowledged, {} bad)", r.checked, r.newer, r.bad.len());
    ensure!(r.bad.is_empty(), "{what}: {} of {} acknowledged blocks wrong, e.g. {:?}", r.bad.len(), r.checked, &r.bad[..r.bad.len().min(5)]);
    Ok(())
}

fn run(kills: usize) -> Result<()> {
    let mut lab = start_lab()?;
    let mut cfg = WriterConfig::new(Some(&lab.ns("client")), initiator_cfg(), REGION_BLOCKS);
    cfg.backoff = BACKOFF;
    // The writer's own safety stop, generous enough for every cycle to reach its bounds.
    let per_kill = TAKEOVER_LIMIT + RESUME_LIMIT * 2 + REJOIN_LIMIT * 2 + Duration::from_secs(20);
    cfg.time_limit = per_kill * u32::try_from(kills).context("KILLS")? + Duration::from_secs(60);
    let writer = WriterHandle::spawn(cfg)?;
    writer.wait_acked(200, Duration::from_secs(20))?;

    let started = Instant::now();
    let mut samples = Vec::with_capacity(kills);
    let mut victim = 0;
    for k in 1..=kills {
        let s = match kill_cycle(&mut lab, &writer, victim) {
            Ok(s) => s,
            Err(e) => {
                print_report(&samples);
                bail!("kill {k} of {kills} ({}): {e:#}\n{}", NODES[victim], lab.logs());
            }
        };
        eprintln!("kill {k}/{kills}: {} killed, first write after {}, back in sync after {}", s.killed, millis(s.first_write), millis(s.rejoin));
        samples.push(s);
        victim = 1 - victim;
    }
    writer.wait_acked(writer.acked_count() + STEADY_WRITES, RESUME_LIMIT)?;
    let log = writer.stop()?;
    println!("{kills} kills in {}, {} writes acknowledged, {} logins", millis(started.elapsed()), log.acked.len(), log.logins);
    print_report(&samples);

    // `victim` is now the node the next kill would hit: the final holder.
    let final_holder = NODES[victim];
    let expected = log.latest_acked();
    verify_ok(&format!("{final_holder}'s backing file"), &verify_file(&lab.path(&format!("{final_holder}-data.img")), &expected)?)?;
    verify_ok("read back through the VIP", &verify_through_target(Some(&lab.ns("client")), &initiator_cfg(), &expected)?)?;
    let (h1, h2) = (sha1_file(&lab.path("node1-data.img"))?, sha1_file(&lab.path("node2-data.img"))?);
    ensure!(h1 == h2, "the backing files differ at the end ({h1} vs {h2})\n{}", lab.logs());
    println!("both backing files identical (sha1 {h1})");
    let failed: usize = samples.iter().map(|s| s.scsi_failures).sum();
    ensure!(failed == 0, "{failed} writes failed with SCSI errors (not unit attentions) during the failovers");
    Ok(())
}

fn main() -> Result<()> {
    if !is_root() {
        bail!("needs root (network namespaces)");
    }
    let kills = kills_from_env()?;
    run(kills)
}
