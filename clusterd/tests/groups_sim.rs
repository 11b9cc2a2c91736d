//! Seeded two-node simulation of several failover groups (issue 17): the daemon's group loop logic
//! (`daemon/cluster.rs` `Driver` + `daemon/group_run.rs` `GroupRun`) restated without I/O around the
//! real parts, deterministic per seed.
//!
//! Real: per node one `clusterd::failover::Sequencer` per group (parameters as
//! `group_run::sequencer_params` builds them, recreated at every daemon start with the group's
//! persisted epoch and a new generation); the heartbeat `Membership` core fed datagrams built and
//! checked by the real packet codec (`failover_sim/heartbeat.rs`, shared with the single-group
//! simulation: loss, delay spikes, duplicates, corruption, each direction of each link cut on its
//! own); the one `group_state` field carrying every group's state through `encode_state_set` /
//! `decode_state_set` / `PeerStates::for_group`.
//! Restated from the daemon (same rules, same order): membership events, uplink and the tick to every
//! group; a group's peer state fed only when its bytes changed; `Publish` → the set re-encoded and
//! sent at once; the shared guard (a group's `RunGuard` joins a running guard or starts one, the
//! answer goes to every waiting group, a confirmation made while the peer is silent answers later
//! requests until the peer is heard again); the epoch file written at each tick; admin `standby` /
//! `takeover` of one group or `all` as `ClusterHandle::admin` picks groups.
//! Modelled (I/O): see `groups_sim/world.rs` — step executors, volumes (no replicator: disks always
//! UpToDate, connected unless a node is down or the replication network / the group's link is cut),
//! ping (= an uplink flag), fencing (= crashing the peer, failing by seed 0/10/30% of the time),
//! escalation (= crash).
//!
//! Each seed draws 2..=4 groups (preferred node or none, auto-failback, portblock and
//! allow_unguarded_split per group), the guard kind, link faults, the step failure rate and the fence
//! failure rate; boots the nodes staggered and runs 100 s in alternating 10 s windows (stormy:
//! faults once a second — heartbeat links one way/both ways, replication cuts of the network or one
//! group, full partitions, uplink loss, crashes, clean daemon restarts; quiet: admin commands), then
//! heals everything and lets the world settle 80 s. Checked:
//! 1. per group, never Primary on both nodes, except with guard None and that group's
//!    allow_unguarded_split, and then a split-brain warning shows in a status (and never Primary on a
//!    node whose sequencer for the group is not active);
//! 2. after the settle period every group is held by exactly one node (Primary there only, idle on the
//!    other), and a group with auto-failback and a preferred node is on it (both nodes live then);
//! 3. groups are independent: during an accepted admin command issued while everything was steady
//!    (each group held by one node, no hand-over, no failback due) no other group changes the nodes it
//!    is active on until the command's groups arrived, unless a fault intervened; every accepted
//!    command moves its groups unless a fault intervened; refusals carry a reason;
//! 4. one fence per peer failure: seen from one daemon, a failure episode runs from the peer being
//!    declared dead (or the daemon starting) to the peer being heard again; at most one fence that
//!    powered the peer off by a guard run started in the episode, however many groups wanted the
//!    guard. Fence commands that failed are counted apart (`fence_failures`) and not limited: each is
//!    retried after guard_retry; so are fences landing after the episode ended (`stale_fences`: the
//!    peer was heard again while the fence ran; `run_guard` re-checks only after a fence delay);
//! 5. per node and group, every acquisition is at an epoch above every epoch that node acquired the
//!    group at before, across daemon restarts (the epoch file written at the loop's tick).
//!
//! Found by this simulation and fixed in the sequencer (seeds 47 and 772): a hand-over stop that
//! ended with the replication link down left the releasing node idle in `Handoff::Releasing` for
//! good, so check 2's failback to it never happened.
//!
//! `GROUPS_SIM_SEEDS=N` sets the number of seeds (default 200), `GROUPS_SIM_KEEP_GOING=1` lists every
//! failing seed instead of stopping at the first; `GROUPS_SIM_SEED=S cargo test -p clusterd --test
//! groups_sim replay_one_seed -- --nocapture` replays one seed with its whole trace.

// Two nodes indexed 0/1 across parallel arrays read clearer as index loops.
#![allow(clippy::needless_range_loop)]

#[path = "groups_sim/checks.rs"]
mod checks;
#[path = "groups_sim/faults.rs"]
mod faults;
#[path = "groups_sim/guard.rs"]
mod guard;
#[path = "failover_sim/heartbeat.rs"]
mod heartbeat;
#[path = "common/sim_report.rs"]
mod sim_report;
#[path = "groups_sim/world.rs"]
mod world;

use world::{Stats, World};

const FAULT_MS: u64 = 100_000;
const SETTLE_MS: u64 = 80_000;

fn run_seed(seed: u64) -> Result<Stats, (String, Vec<String>)> {
    let mut w = World::new(seed);
    while w.now < FAULT_MS + SETTLE_MS {
        if w.now < FAULT_MS {
            if w.now.is_multiple_of(1000) {
                if (w.now / 10_000).is_multiple_of(2) {
                    w.inject_faults();
                } else if w.rng.chance(0.3) {
                    w.admin();
                }
            }
        } else if w.faults_on {
            w.heal();
        }
        if let Err(e) = w.advance() {
            return Err((e, std::mem::take(&mut w.trace)));
        }
    }
    w.check_final().map_err(|e| (e, std::mem::take(&mut w.trace)))?;
    Ok(w.stats)
}

fn report(seed: u64, e: &str, trace: &[String]) -> String {
    let replay = format!("GROUPS_SIM_SEED={seed} cargo test -p clusterd --test groups_sim replay_one_seed -- --nocapture");
    sim_report::failure_report(seed, e, trace, 100, &replay)
}

#[test]
fn many_seeds_keep_each_group_on_one_node_and_independent() {
    let n: u64 = std::env::var("GROUPS_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let keep_going = std::env::var("GROUPS_SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    let mut failed = Vec::new();
    for seed in 0..n {
        match run_seed(seed) {
            Ok(s) => total.add(&s),
            Err((e, _)) if keep_going => {
                eprintln!("seed {seed} FAILED: {}", e.chars().take(300).collect::<String>());
                failed.push(seed);
            }
            Err((e, trace)) => panic!("{}", report(seed, &e, &trace)),
        }
    }
    assert!(failed.is_empty(), "{} seeds failed: {failed:?}", failed.len());
    let secs = started.elapsed().as_secs_f64();
    eprintln!("simulated {n} seeds in {secs:.1} s: {total:?}");
    if n >= 50 {
        assert!(total.crashes > 0 && total.clean_restarts > 0 && total.faults > 0 && total.step_failures > 0, "no faults: {total:?}");
        assert!(total.failovers > 0 && total.handoffs > 0 && total.refusals > 0, "nothing moved: {total:?}");
        assert!(total.independence_checked > 0, "no uncontested admin command checked: {total:?}");
        assert!(total.fences > 0 && total.fence_failures > 0, "no fencing: {total:?}");
        assert!(total.guard_joined > 0 || total.guard_cached > 0, "the shared guard was never shared: {total:?}");
        assert!(total.multi_group_fence_episodes > 0, "no fence served several groups: {total:?}");
        assert!(total.split_warnings > 0, "no unguarded split exercised: {total:?}");
        assert!(total.failbacks_checked > 0 && total.final_groups_checked > 0, "no final state checked: {total:?}");
    }
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("GROUPS_SIM_SEED").ok().and_then(|s| s.parse().ok()) else { return };
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
