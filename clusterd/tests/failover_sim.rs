//! Seeded two-node simulation of the failover sequencer (`clusterd::failover`).
//!
//! Each seed draws a configuration (guard kind, unguarded split allowed, auto_failback, preferred node,
//! portblock, packet loss/duplication/delay spikes, step failure rate) and runs 120 s of virtual time in
//! alternating 10 s windows: stormy windows inject faults (heartbeat links one way / both ways, replication
//! link one way / both ways, full partitions, flapping through repeated toggles, uplink loss, crashes with
//! restarts), quiet windows issue admin standby/takeover. Then every fault stops and the world runs
//! 90 s more. Checked after every 10 ms step (see `failover_sim/world.rs`):
//! 1. never two Primaries, except without a guard, with `allow_unguarded_split`, and with a split-brain
//!    warning in a status;
//! 2. no Primary with an Inconsistent/Outdated disk or older data than its peer;
//! 3. after the faults stop, exactly one node holds the group;
//! 4. an accepted standby/takeover moves the group unless a fault intervened; refusals carry a reason.
//!
//! `FAILOVER_SEEDS=N` sets the number of seeds (default 300); `FAILOVER_SEED=S cargo test -p clusterd
//! --test failover_sim replay_one_seed -- --nocapture` replays one seed with its trace.

// Two nodes indexed 0/1 across parallel arrays read clearer as index loops.
#[allow(clippy::needless_range_loop)]
#[path = "failover_sim/world.rs"]
mod world;

use world::{Stats, TICK_MS, World};

const FAULT_MS: u64 = 120_000;
const SETTLE_MS: u64 = 90_000;

fn run_seed(seed: u64) -> Result<Stats, (String, Vec<String>)> {
    let mut w = World::new(seed);
    while w.now < FAULT_MS + SETTLE_MS {
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
        if let Err(e) = w.advance() {
            return Err((e, std::mem::take(&mut w.trace)));
        }
    }
    w.check_liveness().map_err(|e| (e, std::mem::take(&mut w.trace)))?;
    Ok(w.stats)
}

fn report(seed: u64, e: &str, trace: &[String]) -> String {
    let tail: Vec<_> = trace.iter().rev().take(80).rev().cloned().collect();
    format!(
        "seed {seed} FAILED: {e}\n--- config and last trace lines ---\n{}\n{}\nreplay: FAILOVER_SEED={seed} cargo test \
         -p clusterd --test failover_sim replay_one_seed -- --nocapture",
        trace.first().cloned().unwrap_or_default(),
        tail.join("\n")
    )
}

#[test]
fn many_seeds_keep_one_safe_holder() {
    let n: u64 = std::env::var("FAILOVER_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    for seed in 0..n {
        match run_seed(seed) {
            Ok(s) => total.add(&s),
            Err((e, trace)) => panic!("{}", report(seed, &e, &trace)),
        }
    }
    eprintln!("simulated {n} seeds ({} ms ticks) in {:.1?}: {total:?}", TICK_MS, started.elapsed());
    if n >= 50 {
        assert!(total.crashes > 0 && total.partitions > 0 && total.fences > 0, "no faults injected: {total:?}");
        assert!(total.failovers > 0 && total.handoffs > 0 && total.refusals > 0, "nothing exercised: {total:?}");
        assert!(total.split_warnings > 0 && total.escalations > 0, "no split/escalation exercised: {total:?}");
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
