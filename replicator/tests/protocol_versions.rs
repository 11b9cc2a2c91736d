//! Rolling upgrade on the seeded two-node world: a node capped at the previous release's replication
//! protocol (1) next to one of this release connects at version 1, resyncs, replicates writes, fails
//! over, and never sees a frame of version 2 (PR state stays with the Primary, marked stale); nodes
//! whose ranges do not overlap refuse each other once, stay StandAlone with both ranges in
//! `last_error`, and do not retry.

use bytes::Bytes;
use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, Role};
use replicator::machine::Input;
use replicator::sim::world::{params, AppDone, World};
use replicator::wire::frame::PROTOCOLS;
use replicator::wire::version::VersionRange;

const SIZE: u64 = 4 << 20;

fn world(seed: u64, ranges: [VersionRange; 2]) -> World {
    let mut p = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
    for (q, r) in p.iter_mut().zip(ranges) {
        q.protocols = r;
    }
    let mut w = World::with_params(seed, SIZE, 7, p);
    w.start(0);
    w.start(1);
    w
}

fn settle(w: &mut World) {
    for _ in 0..3000 {
        let t = w.now + 10;
        w.run_until(t);
        if w.converged() {
            return;
        }
    }
    panic!("no convergence: {:?} / {:?}\n{}", w.snapshot(0), w.snapshot(1), w.trace.join("\n"));
}

fn write(w: &mut World, node: usize, id: u64, offset: u64, byte: u8) {
    w.done.clear();
    w.input(node, Input::Write { id, offset, data: Bytes::from(vec![byte; 4096]), fua: false });
    let t = w.now + 500;
    w.run_until(t);
    assert!(w.done.iter().any(|d| matches!(d, AppDone::Write { id: i, ok: true } if *i == id)), "write {id} did not complete");
}

#[test]
fn a_node_of_the_previous_release_interoperates_at_version_1() {
    let old = PROTOCOLS.capped(1);
    let mut w = world(11, [PROTOCOLS, old]);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    settle(&mut w);
    for i in 0..2 {
        let s = w.snapshot(i).unwrap();
        assert_eq!(s.agreed_protocol, Some(1), "node{i}: {s:?}");
    }
    assert_eq!(w.snapshot(0).unwrap().peer_protocols, Some(old));
    assert_eq!(w.snapshot(1).unwrap().peer_protocols, Some(PROTOCOLS));

    write(&mut w, 0, 1, 0, 0xA1);
    settle(&mut w);
    assert_eq!(&w.durable(1)[..4096], &[0xA1; 4096][..], "the old node holds the write");

    // PR state is a version-2 frame: it stays here, the peer is marked as owed it.
    w.done.clear();
    w.input(0, Input::PrUpdate { id: 2, blob: Bytes::from_static(b"pr") });
    let t = w.now + 500;
    w.run_until(t);
    assert!(w.done.iter().any(|d| matches!(d, AppDone::Write { id: 2, ok: true })));
    assert!(w.snapshot(0).unwrap().peer_pr_stale);
    assert!(w.machine(1).unwrap().pr_state().is_empty(), "a version-1 peer received PR state");

    // Hand-over to the old node and back (standby/takeover at the replicator level).
    w.input(0, Input::Secondary);
    let t = w.now + 200;
    w.run_until(t);
    w.input(1, Input::Primary { force: false });
    let t = w.now + 200;
    w.run_until(t);
    assert_eq!(w.role(1), Some(Role::Primary));
    write(&mut w, 1, 3, 8192, 0xB2);
    settle(&mut w);
    assert_eq!(&w.durable(0)[8192..12288], &[0xB2; 4096][..], "this release's node holds the old Primary's write");
}

#[test]
fn disjoint_ranges_are_refused_once_and_stay_standalone() {
    let mut w = world(12, [VersionRange::new(2, 2), VersionRange::new(1, 1)]);
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    let t = w.now + 5_000;
    w.run_until(t);
    for (i, (ours, peer)) in [("2..=2", "1..=1"), ("1..=1", "2..=2")].iter().enumerate() {
        let s = w.snapshot(i).unwrap();
        assert_eq!(s.conn, ConnState::StandAlone, "node{i}: {s:?}");
        let err = s.last_error.clone().unwrap_or_default();
        assert!(
            err.contains(&format!("this node speaks {ours}")) && err.contains(&format!("peer speaks {peer}")),
            "node{i}: {err}"
        );
    }
    let refusals = w.trace.iter().filter(|l| l.contains("incompatible replication protocol versions")).count();
    assert!(refusals <= 4, "refused {refusals} times in 5 s: a retry loop\n{}", w.trace.join("\n"));
}
