//! Seeded two-node simulation of failover: the real sequencer (`clusterd::failover`), the real heartbeat
//! membership core and packet codec (`clusterd::heartbeat`) and the real replicator state machines
//! (`replicator::machine`, in the replication world of `replicator::sim`) run together.
//!
//! Real: each node's `Sequencer`, its `Membership` fed datagrams built and checked by the real codec,
//! and its replicator `Node` for the group's one resource, with metadata through the real `MetaStore`.
//! The sequencer's volume input is the daemon's own mapping (`failover::volumes_view`); promote/demote
//! are the replicator's `Primary`/`Secondary` verbs with the engine's checks. `fencing
//! resource-and-stonith` (see below) is the replicator's real I/O freeze plus the daemon's io fencing
//! (`daemon/io_fencing.rs`, restated in `failover_sim/io_fencing.rs`): a Secondary outdates its own disk
//! when it hears the holder but lost its replication link; the holder thaws when the peer publishes an
//! Outdated disk or its fence command confirmed a silent peer down; a guard fencing a peer last seen
//! holding waits one deadtime.
//! Modelled (they are I/O): the heartbeat and replication networks (loss, delay spikes, duplicates,
//! corruption, one-way and both-way cuts, flapping), data disks (random completion order, torn writes at
//! a crash), the step executor (latency, timeouts, injected failures), the iSCSI target (writes while it
//! serves the holder; stopping waits for them), guards (ping = uplink flag, fence = crash the peer,
//! sometimes failing) and escalation (= crash).
//!
//! Each seed draws a configuration (guard kind, unguarded split allowed, auto_failback, preferred node,
//! portblock, link faults, step failure rate, `fencing dont-care` or not, write rate; `resource-and-stonith`
//! = not dont-care with a fence guard, about 15% of the seeds), boots the nodes
//! staggered after an initial sync, and runs 120 s of virtual time in alternating 10 s windows: stormy
//! windows inject faults (heartbeat links one way / both ways, replication link one way / both ways,
//! full partitions, flapping, uplink loss, crashes, some inside a replicator step tearing a metadata
//! write), quiet windows issue admin standby/takeover. Then every fault stops and the world runs 90 s
//! more (writes stop 15 s before the end). Checked (see `failover_sim/checks.rs`):
//! 1. never two Primaries, except without a guard, with `allow_unguarded_split`, and with a split-brain
//!    warning in a status (the run is then a "split run");
//! 2. never a Primary whose disk is Inconsistent/Outdated; never a promote step for a disk reported so;
//! 3. every promoted node holds every acknowledged write (latest per sector), except in split runs and
//!    the known gap below;
//! 4. after the faults stop exactly one node holds the group; it holds every acknowledged write, the
//!    replication converged and both replicas are byte-identical; in a split run where both sides wrote,
//!    the replicator reported the split brain and merged nothing;
//! 5. an accepted standby/takeover moves the group unless a fault intervened; refusals carry a reason.
//!
//! Known gap without `fencing resource-and-stonith`: nothing freezes a Primary's I/O or outdates its peer
//! when the replication link drops, so the holder keeps acknowledging writes locally, and a guarded
//! takeover after the partition (fence or ping proves the old holder down, not that it has no newer data)
//! loses them. Such a promotion is counted as `known_gap_losses` (seeds printed) when the node has every
//! write acknowledged while replication was connected, and the run continues as a split run; anything
//! else is a failure. `FAILOVER_STRICT=1` fails on the gap too. In `resource-and-stonith` seeds the gap
//! is closed and any acknowledged write missing at a promotion fails the seed, strict or not (and a
//! suspended volume that is connected again must have thawed). A split run ends either with one holder
//! or, after a split brain the replicator reported (StandAlone), with none until an operator resolves it.
//!
//! `FAILOVER_SEEDS=N` sets the number of seeds (default 400), `FAILOVER_ONLY_FENCING=1` runs only the
//! resource-and-stonith ones among them, `FAILOVER_KEEP_GOING=1` lists every failing seed instead of
//! stopping at the first; `FAILOVER_SEED=S cargo test -p clusterd
//! --test failover_sim replay_one_seed -- --nocapture` replays one seed with its trace.

// Two nodes indexed 0/1 across parallel arrays read clearer as index loops.
#![allow(clippy::needless_range_loop)]

#[path = "common/sim_report.rs"]
mod sim_report;
#[path = "failover_sim/world.rs"]
mod world;
#[path = "failover_sim/checks.rs"]
mod checks;
#[path = "failover_sim/faults.rs"]
mod faults;
#[path = "failover_sim/heartbeat.rs"]
mod heartbeat;
#[path = "failover_sim/storage.rs"]
mod storage;
#[path = "failover_sim/io_fencing.rs"]
mod io_fencing;

use world::{Stats, TICK_MS, World};

const FAULT_MS: u64 = 120_000;
const SETTLE_MS: u64 = 90_000;
/// The target stops writing this long before the end, so every write is answered and resynced.
const DRAIN_MS: u64 = 15_000;
/// Extra time granted after the settle phase for a final resync still running.
const RESYNC_GRACE_MS: u64 = 30_000;

fn run_seed(seed: u64) -> Result<Stats, (String, Vec<String>)> {
    let mut w = World::new(seed).map_err(|e| (e, Vec::new()))?;
    if !w.cfg.resource_and_stonith && std::env::var("FAILOVER_ONLY_FENCING").is_ok_and(|v| v == "1") {
        return Ok(Stats::default());
    }
    let end = FAULT_MS + SETTLE_MS;
    while w.now < end || (w.now < end + RESYNC_GRACE_MS && !w.store.converged()) {
        if w.now < FAULT_MS {
            let stormy = (w.now / 10_000).is_multiple_of(2);
            if w.now.is_multiple_of(1000) {
                if stormy {
                    w.inject_faults();
                } else if w.rng.chance(0.2) {
                    w.admin();
                }
            }
        } else if w.faults_on {
            w.heal();
        }
        if w.writes_on && w.now >= end - DRAIN_MS {
            w.writes_on = false;
            w.log("writes stop".into());
        }
        if let Err(e) = w.advance() {
            return Err((e, std::mem::take(&mut w.trace)));
        }
    }
    w.check_final().map_err(|e| (e, std::mem::take(&mut w.trace)))?;
    Ok(w.stats)
}

fn report(seed: u64, e: &str, trace: &[String]) -> String {
    let replay = format!("FAILOVER_SEED={seed} cargo test -p clusterd --test failover_sim replay_one_seed -- --nocapture");
    sim_report::failure_report(seed, e, trace, 80, &replay)
}

#[test]
fn many_seeds_keep_one_safe_holder_and_every_acknowledged_write() {
    let n: u64 = std::env::var("FAILOVER_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    let mut gap_seeds = Vec::new();
    let mut fenced_split_seeds = Vec::new();
    let keep_going = std::env::var("FAILOVER_KEEP_GOING").is_ok_and(|v| v == "1");
    let mut failed = Vec::new();
    for seed in 0..n {
        match run_seed(seed) {
            Ok(s) => {
                if s.known_gap_losses > 0 {
                    gap_seeds.push(seed);
                }
                if s.fenced_holder_split_brains > 0 {
                    fenced_split_seeds.push(seed);
                }
                total.add(&s);
            }
            Err((e, _)) if keep_going => {
                eprintln!("seed {seed} FAILED: {}", e.chars().take(300).collect::<String>());
                failed.push(seed);
            }
            Err((e, trace)) => panic!("{}", report(seed, &e, &trace)),
        }
    }
    assert!(failed.is_empty(), "{} seeds failed: {failed:?}", failed.len());
    let secs = started.elapsed().as_secs_f64();
    eprintln!("simulated {n} seeds ({TICK_MS} ms ticks) in {secs:.1} s ({:.1} seeds/s): {total:?}", n as f64 / secs);
    eprintln!(
        "fencing resource-and-stonith: {} seeds, {} promotions checked (no loss tolerated); {} suspensions, thaws: \
         {} reconnect / {} peer outdated / {} peer fenced, {} ended unthawed (held writes failed or lost); {} held \
         acks released; {} self-outdates; {} fence runs by a suspended holder; {} guard fences delayed",
        total.fencing_seeds,
        total.fencing_promotions_checked,
        total.suspensions,
        total.thaws_reconnect,
        total.thaws_outdated,
        total.thaws_fenced,
        total.suspensions_ended_unthawed,
        total.held_acks_released,
        total.self_outdates,
        total.io_fence_runs,
        total.delayed_guard_fences
    );
    if !gap_seeds.is_empty() {
        eprintln!(
            "KNOWN GAP in {} seeds (writes acknowledged with replication down lost by a guarded takeover; \
             FAILOVER_STRICT=1 fails on them): {gap_seeds:?}",
            gap_seeds.len()
        );
    }
    if !fenced_split_seeds.is_empty() {
        eprintln!(
            "FENCED-HOLDER SPLIT BRAIN in {} resource-and-stonith seeds (a fenced suspended holder's never-acknowledged \
             writes diverged the replicas; no acknowledged write lost; FAILOVER_STRICT=1 fails on them): {fenced_split_seeds:?}",
            fenced_split_seeds.len()
        );
    }
    let only_fencing = std::env::var("FAILOVER_ONLY_FENCING").is_ok_and(|v| v == "1");
    if n >= 50 && !only_fencing {
        assert!(total.crashes > 0 && total.torn_crashes > 0 && total.partitions > 0 && total.fences > 0, "no faults injected: {total:?}");
        assert!(total.failovers > 0 && total.handoffs > 0 && total.refusals > 0, "nothing exercised: {total:?}");
        assert!(total.split_warnings > 0 && total.escalations > 0, "no split/escalation exercised: {total:?}");
        assert!(total.writes_acked > 0 && total.promotions_checked > 0 && total.final_resyncs_checked > 0, "no data checked: {total:?}");
        assert!(total.pr_updates_acked > 0, "no persistent-reservation update acknowledged: {total:?}");
    }
    if n >= 50 {
        assert!(
            total.fencing_seeds > 0 && total.fencing_promotions_checked > 0 && total.suspensions > 0 && total.self_outdates > 0,
            "fencing resource-and-stonith not exercised: {total:?}"
        );
    }
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("FAILOVER_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    match run_seed(seed) {
        Ok(s) => eprintln!("seed {seed} passed: {s:?}"),
        Err((e, trace)) => {
            for line in &trace {
                eprintln!("{line}");
            }
            panic!("seed {seed}: {e}");
        }
    }
}
