//! Issue 15: a split brain's facts and its resolution over the replication link, on the seeded
//! two-node simulation (real state machines, simulated disks and link). After a forced split brain
//! both nodes record both sides; two unresolved nodes keep probing each other without a state change;
//! the victim's `connect --discard-my-data` alone resolves it (the survivor accepts by itself) and the
//! survivor's data wins; an offer made on a stale view (the victim started a new generation since)
//! is refused and moves nothing.

use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, Role};
use replicator::machine::Input;
use replicator::sim::world::World;

const SIZE: u64 = 16 << 20;
const BLOCK: u64 = 4096;

fn run(w: &mut World, ms: u64) {
    let until = w.now + ms;
    while w.now < until {
        let now = w.now;
        w.run_until(now + 10);
    }
}

fn run_until(w: &mut World, budget: u64, what: &str, done: impl Fn(&World) -> bool) {
    let deadline = w.now + budget;
    while w.now < deadline {
        if done(w) {
            return;
        }
        let now = w.now;
        w.run_until(now + 10);
    }
    panic!("{what}: not reached in {budget} ms: {:#?} {:#?}\n{}", w.snapshot(0), w.snapshot(1), w.trace.join("\n"));
}

fn write(w: &mut World, node: usize, id: u64, block: u64, byte: u8) {
    w.input(node, Input::Write { id, offset: block * BLOCK, data: bytes::Bytes::from(vec![byte; BLOCK as usize]), fua: true });
}

fn block(w: &World, node: usize, b: u64) -> u8 {
    w.durable(node)[(b * BLOCK) as usize]
}

/// Connected and in sync, then a partition with both Primary, writes on both, and the heal.
fn split(seed: u64) -> World {
    let mut w = World::new(seed, SIZE, 7, Policies::default());
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    run_until(&mut w, 60_000, "initial sync", World::converged);
    w.set_path(0, false);
    w.set_path(1, false);
    run_until(&mut w, 5_000, "both lost the link", |w| (0..2).all(|i| w.snapshot(i).is_some_and(|s| s.conn != ConnState::Connected)));
    w.input(1, Input::Primary { force: false });
    assert_eq!(w.role(1), Some(Role::Primary));
    for (i, b) in [3u64, 10, 11].into_iter().enumerate() {
        write(&mut w, 0, 100 + i as u64, b, 0xAA);
    }
    for (i, b) in [10u64, 20, 21, 22, 23].into_iter().enumerate() {
        write(&mut w, 1, 200 + i as u64, b, 0xBB);
    }
    run(&mut w, 1_000);
    w.set_path(0, true);
    w.set_path(1, true);
    run_until(&mut w, 10_000, "split brain on both", |w| (0..2).all(|i| w.snapshot(i).is_some_and(|s| s.split_brain && s.split_brain_facts.is_some())));
    w
}

#[test]
fn both_sides_are_recorded_and_probes_change_nothing() {
    let mut w = split(7);
    let f0 = w.snapshot(0).and_then(|s| s.split_brain_facts).expect("facts on node 0");
    let f1 = w.snapshot(1).and_then(|s| s.split_brain_facts).expect("facts on node 1");
    assert_eq!((f0.me.changed_blocks, f0.peer.changed_blocks), (3, 5), "{f0:?}");
    assert_eq!((f1.me.changed_blocks, f1.peer.changed_blocks), (5, 3), "{f1:?}");
    assert_eq!((f0.me.role, f0.peer.role), (Role::Primary, Role::Primary));
    assert_eq!(f0.me.uuids, f1.peer.uuids);
    let ancestor = f0.common_ancestor().expect("a common generation");
    assert_eq!(Some(ancestor), f1.common_ancestor());
    // Several seconds of probing between the two unresolved nodes: still StandAlone, flagged, and
    // nothing moved.
    run(&mut w, 5_000);
    for i in 0..2 {
        let s = w.snapshot(i).expect("up");
        assert!(s.conn == ConnState::StandAlone && s.split_brain, "node {i}: {s:?}");
    }
    assert_eq!((block(&w, 0, 10), block(&w, 1, 10)), (0xAA, 0xBB));
}

#[test]
fn the_victims_discard_alone_resolves_it_and_the_survivor_wins() {
    let mut w = split(11);
    w.input(0, Input::Secondary);
    w.input(0, Input::Connect { discard_my_data: true });
    run_until(&mut w, 30_000, "resolved and converged", World::converged);
    for b in [3u64, 10, 11, 20, 21, 22, 23] {
        let want = if [10, 20, 21, 22, 23].contains(&b) { 0xBB } else { 0 };
        assert_eq!((block(&w, 0, b), block(&w, 1, b)), (want, want), "block {b}");
    }
    for i in 0..2 {
        let s = w.snapshot(i).expect("up");
        assert!(!s.split_brain && s.split_brain_facts.is_none(), "node {i}: {s:?}");
    }
    assert_eq!(w.role(1), Some(Role::Primary));
}

#[test]
fn an_offer_on_a_stale_view_is_refused() {
    let mut w = split(13);
    // The victim starts a full-sync generation after the split brain was recorded (outdated, then
    // forced Primary): the survivor's record no longer describes it.
    w.input(0, Input::Secondary);
    w.input(0, Input::Outdate);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Secondary);
    w.input(0, Input::Connect { discard_my_data: true });
    run_until(&mut w, 10_000, "the survivor refused", |w| {
        w.snapshot(0).is_some_and(|s| s.conn == ConnState::StandAlone && s.last_error.as_deref().is_some_and(|e| e.contains("stale")))
    });
    let s1 = w.snapshot(1).expect("up");
    assert!(s1.conn == ConnState::StandAlone && s1.split_brain, "{s1:?}");
    assert_eq!((block(&w, 0, 10), block(&w, 1, 10)), (0xAA, 0xBB), "nothing may move");
}
