//! Persistent-reservation state replicated like data (`machine/pr.rs`), scenario by scenario on the
//! seeded two-node world: what an update waits for, what a disconnected Primary records, how the state
//! travels after a handshake (resync, split brain), what fencing holds. The random interleaving with
//! crashes and partitions is in tests/simulation.rs.

use bytes::Bytes;
use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, DiskState, ReplState, Role};
use replicator::machine::Input;
use replicator::sim::world::{params, AppDone, World};

const SIZE: u64 = 4 << 20;

fn world(seed: u64, freeze: bool) -> World {
    let mut p = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
    for q in &mut p {
        q.freeze_io_on_peer_loss = freeze;
    }
    let mut w = World::with_params(seed, SIZE, 7, p);
    w.start(0);
    w.start(1);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    settle(&mut w);
    w
}

fn settle(w: &mut World) {
    for _ in 0..2000 {
        let t = w.now + 10;
        w.run_until(t);
        if w.converged() {
            return;
        }
    }
    panic!("no convergence: {:?} / {:?}", w.snapshot(0), w.snapshot(1));
}

fn run(w: &mut World, ms: u64) {
    let t = w.now + ms;
    w.run_until(t);
}

fn pr(w: &World, i: usize) -> Bytes {
    w.machine(i).expect("node up").pr_state().clone()
}

/// Issues an update and returns its completion (None while pending after `ms`).
fn update(w: &mut World, node: usize, id: u64, blob: &'static [u8], ms: u64) -> Option<bool> {
    w.done.clear();
    w.input(node, Input::PrUpdate { id, blob: Bytes::from_static(blob) });
    run(w, ms);
    completion(w, id)
}

fn completion(w: &World, id: u64) -> Option<bool> {
    w.done.iter().find_map(|d| match d {
        AppDone::Write { id: i, ok } if *i == id => Some(*ok),
        _ => None,
    })
}

#[test]
fn connected_update_completes_only_once_the_peer_stored_it() {
    let mut w = world(1, false);
    w.done.clear();
    w.input(0, Input::PrUpdate { id: 7, blob: Bytes::from_static(b"state-1") });
    // Step until the completion appears; at that moment the peer must already hold it.
    for _ in 0..1000 {
        run(&mut w, 1);
        if let Some(ok) = completion(&w, 7) {
            assert!(ok);
            assert_eq!(pr(&w, 1), Bytes::from_static(b"state-1"), "acknowledged before the peer stored it");
            assert!(!w.snapshot(0).unwrap().peer_pr_stale);
            return;
        }
        // Not acknowledged yet: fine whatever the peer holds.
    }
    panic!("the update never completed");
}

#[test]
fn a_secondary_refuses_updates() {
    let mut w = world(2, false);
    assert_eq!(update(&mut w, 1, 9, b"x", 50), Some(false));
    assert!(pr(&w, 1).is_empty() && pr(&w, 0).is_empty());
}

#[test]
fn disconnected_update_is_owed_to_the_peer_with_a_new_generation_and_sent_on_reconnect() {
    let mut w = world(3, false);
    let gen_before = w.snapshot(0).unwrap().uuids.current;
    w.set_path(0, false);
    w.set_path(1, false);
    run(&mut w, 30_000);
    assert_ne!(w.snapshot(0).unwrap().conn, ConnState::Connected);
    // No data written meanwhile: the PR change alone must make this node the newer one.
    assert_eq!(update(&mut w, 0, 11, b"while-apart", 100), Some(true));
    let s = w.snapshot(0).unwrap();
    assert!(s.peer_pr_stale, "the peer is owed the state");
    assert_ne!(s.uuids.current, gen_before, "a PR change without the peer starts a new generation");
    assert!(pr(&w, 1).is_empty());
    // The stored flag survives a crash of the Primary.
    w.crash(0);
    w.start(0);
    assert!(w.snapshot(0).unwrap().peer_pr_stale);
    assert_eq!(pr(&w, 0), Bytes::from_static(b"while-apart"));
    w.input(0, Input::Connect { discard_my_data: false });
    w.set_path(0, true);
    w.set_path(1, true);
    w.input(0, Input::Primary { force: false });
    settle(&mut w);
    assert_eq!(pr(&w, 1), Bytes::from_static(b"while-apart"));
    assert!(!w.snapshot(0).unwrap().peer_pr_stale, "flag cleared once the peer acknowledged");
}

#[test]
fn a_stale_peer_is_not_promotable_as_the_same_generation() {
    // The failover guard's view: after a PR-only change on the isolated Primary, the peer's generation
    // is older, so a manager that promotes only the same generation never loses the acknowledged PR.
    let mut w = world(4, false);
    w.set_path(0, false);
    w.set_path(1, false);
    run(&mut w, 30_000);
    assert_eq!(update(&mut w, 0, 12, b"fence-victim-removed", 100), Some(true));
    let (a, b) = (w.snapshot(0).unwrap().uuids.current, w.snapshot(1).unwrap().uuids.current);
    assert_ne!(a & !1, b & !1);
}

#[test]
fn split_brain_victim_ends_with_the_survivors_state() {
    let mut w = world(5, false);
    assert_eq!(update(&mut w, 0, 20, b"common", 100), Some(true));
    w.set_path(0, false);
    w.set_path(1, false);
    run(&mut w, 30_000);
    w.input(1, Input::Primary { force: false });
    assert_eq!(w.role(1), Some(Role::Primary));
    assert_eq!(update(&mut w, 0, 21, b"survivor", 100), Some(true));
    assert_eq!(update(&mut w, 1, 22, b"rogue", 100), Some(true));
    w.set_path(0, true);
    w.set_path(1, true);
    run(&mut w, 10_000);
    for i in 0..2 {
        let s = w.snapshot(i).unwrap();
        assert!(s.split_brain && s.conn == ConnState::StandAlone, "node{i}: {s:?}");
    }
    w.input(1, Input::Secondary);
    w.input(1, Input::Connect { discard_my_data: true });
    w.input(0, Input::Connect { discard_my_data: false });
    settle(&mut w);
    assert_eq!(pr(&w, 0), Bytes::from_static(b"survivor"));
    assert_eq!(pr(&w, 1), Bytes::from_static(b"survivor"), "the victim kept its own PR state");
}

#[test]
fn fencing_holds_the_completion_until_the_peer_is_outdated() {
    let mut w = world(6, true);
    w.set_path(0, false);
    w.set_path(1, false);
    run(&mut w, 30_000);
    assert!(w.snapshot(0).unwrap().suspended.is_some(), "I/O suspended after losing the UpToDate peer");
    assert_eq!(update(&mut w, 0, 30, b"held", 200), None, "completed while I/O is suspended");
    w.input(0, Input::Thaw { reason: "peer fenced".into() });
    run(&mut w, 10);
    assert_eq!(completion(&w, 30), Some(true));
    assert!(w.snapshot(0).unwrap().peer_pr_stale);
}

#[test]
fn updates_queue_in_order_behind_the_one_in_flight() {
    let mut w = world(7, false);
    w.done.clear();
    for (id, blob) in [(40u64, &b"one"[..]), (41, b"two"), (42, b"three")] {
        w.input(0, Input::PrUpdate { id, blob: Bytes::from_static(blob) });
    }
    run(&mut w, 500);
    let order: Vec<u64> = w
        .done
        .iter()
        .filter_map(|d| match d {
            AppDone::Write { id, ok: true } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec![40, 41, 42]);
    assert_eq!(pr(&w, 1), Bytes::from_static(b"three"));
    assert_eq!(w.snapshot(1).unwrap().repl, ReplState::Established);
    assert_eq!(w.snapshot(1).unwrap().disk, DiskState::UpToDate);
}
