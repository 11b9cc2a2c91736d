//! `haadm adjust` on a running resource (`Input::SetOptions`, `machine/options.rs`): a resync capped at
//! 1 MiB/s speeds up as soon as the cap is raised, on the seeded two-node world; the other live
//! options are in force afterwards.

use replicator::machine::policy::Policies;
use replicator::machine::state::ReplState;
use replicator::machine::{CsumAlg, CsumsOptions, Input, LiveOptions};
use replicator::sim::world::{World, params};

const SIZE: u64 = 16 << 20;
const MIB: u64 = 1 << 20;

fn remaining(w: &World) -> u64 {
    w.snapshot(0).and_then(|s| s.sync).map_or(0, |p| p.remaining_blocks * 4096)
}

#[test]
fn a_raised_resync_rate_takes_effect_while_syncing() {
    let mut p = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
    for q in &mut p {
        q.resync_rate = Some(MIB);
        // Plain resync: the two zeroed disks are equal, so a checksum resync would finish at once.
        q.csums = CsumsOptions { alg: None, every_resync: false };
    }
    let mut w = World::with_params(7, SIZE, 7, p);
    w.start(0);
    w.start(1);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    let t = w.now + 3_000;
    w.run_until(t);
    assert_eq!(w.snapshot(0).map(|s| s.repl), Some(ReplState::SyncSource));
    let before = remaining(&w);
    let t = w.now + 2_000;
    w.run_until(t);
    let slow = before - remaining(&w);
    // 1 MiB/s (plus the carried-over half second of budget) over 2 s.
    assert!(slow <= 3 * MIB + MIB / 2, "synced {slow} bytes in 2 s at 1 MiB/s");

    let mut o: LiveOptions = w.machine(0).expect("up").live_options();
    o.resync_rate = Some(64 * MIB);
    o.verify_alg = "crc32c".into();
    let csums = CsumsOptions { alg: Some(CsumAlg::Crc32c), every_resync: true };
    o.csums = csums;
    w.input(0, Input::SetOptions(Box::new(o)));
    let now = w.machine(0).expect("up").live_options();
    assert_eq!((now.resync_rate, now.verify_alg.as_str(), now.csums), (Some(64 * MIB), "crc32c", csums));
    let left = remaining(&w);
    assert!(left > 8 * MIB, "too little left to measure: {left}");
    for _ in 0..100 {
        let t = w.now + 100;
        w.run_until(t);
        if w.snapshot(0).is_some_and(|s| s.repl == ReplState::Established) {
            break;
        }
    }
    assert_eq!(w.snapshot(0).map(|s| s.repl), Some(ReplState::Established), "not done within 10 s at 64 MiB/s: {} left", remaining(&w));
}
