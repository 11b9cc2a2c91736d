//! Checksum-based resync (`csums-alg`, issue 18) on the seeded two-node world: an `invalidate` of
//! identical data moves no block (every block found equal by digest), one of data that differs in a
//! few blocks moves exactly those blocks, and both disks end identical. A peer that speaks only
//! protocol 3 (no checksum frames) and `csums-alg: none` get the plain full resync.

use bytes::Bytes;
use replicator::machine::policy::Policies;
use replicator::machine::state::ReplState;
use replicator::machine::{CsumAlg, CsumsOptions, Input, Stats};
use replicator::sim::world::{params, AppDone, World};
use replicator::wire::frame::PROTOCOLS;
use replicator::wire::version::VersionRange;

const SIZE: u64 = 4 << 20;
const BLOCKS: u64 = SIZE / 4096;

fn world(seed: u64, csums: CsumsOptions, ranges: [VersionRange; 2]) -> World {
    let mut p = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
    for (q, r) in p.iter_mut().zip(ranges) {
        q.protocols = r;
        q.csums = csums;
    }
    let mut w = World::with_params(seed, SIZE, 7, p);
    w.start(0);
    w.start(1);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    settle(&mut w);
    // Different data in every block, through the application (so both disks have it).
    for b in 0..BLOCKS {
        let data: Vec<u8> = (0..4096u64).map(|i| (i ^ b.wrapping_mul(31)) as u8).collect();
        w.input(0, Input::Write { id: b + 1, offset: b * 4096, data: Bytes::from(data), fua: false });
    }
    let t = w.now + 2_000;
    w.run_until(t);
    let ok = w.done.iter().filter(|d| matches!(d, AppDone::Write { ok: true, .. })).count() as u64;
    assert_eq!(ok, BLOCKS, "every write completed");
    settle(&mut w);
    assert_eq!(w.data[0], w.data[1]);
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

fn stats(w: &World, i: usize) -> Stats {
    w.snapshot(i).expect("node up").stats
}

/// `invalidate` on the Secondary (node 1): it becomes the SyncTarget of a full resync. Returns the
/// source's and the target's counters accumulated by that resync.
fn invalidate(w: &mut World) -> (Stats, Stats) {
    let (s0, t0) = (stats(w, 0), stats(w, 1));
    w.input(1, Input::Invalidate { remote: false });
    let t = w.now + 50;
    w.run_until(t);
    settle(w);
    let (s1, t1) = (stats(w, 0), stats(w, 1));
    for i in 0..2 {
        assert_eq!(w.snapshot(i).unwrap().repl, ReplState::Established, "node{i}");
    }
    assert_eq!(w.data[0], w.data[1], "both disks identical after the resync");
    let d = |a: Stats, b: Stats| Stats {
        resync_blocks_sent: b.resync_blocks_sent - a.resync_blocks_sent,
        resync_blocks_received: b.resync_blocks_received - a.resync_blocks_received,
        resync_csum_equal_bytes: b.resync_csum_equal_bytes - a.resync_csum_equal_bytes,
        ..Stats::default()
    };
    (d(s0, s1), d(t0, t1))
}

#[test]
fn invalidate_of_identical_data_moves_no_block() {
    for alg in [CsumAlg::Sha1, CsumAlg::Md5, CsumAlg::Crc32c] {
        let mut w = world(3, CsumsOptions { alg: Some(alg), every_resync: false }, [PROTOCOLS; 2]);
        let (src, tgt) = invalidate(&mut w);
        assert_eq!(src.resync_blocks_sent, 0, "{alg}: {src:?}");
        assert_eq!(tgt.resync_blocks_received, 0, "{alg}: {tgt:?}");
        assert_eq!((src.resync_csum_equal_bytes, tgt.resync_csum_equal_bytes), (SIZE, SIZE), "{alg}");
        assert!(w.trace.iter().any(|l| l.contains(&format!("comparing {alg} digests first"))), "{alg}: the source logs its choice");
    }
}

#[test]
fn invalidate_of_data_differing_in_a_few_blocks_moves_exactly_those() {
    let mut w = world(5, CsumsOptions::default(), [PROTOCOLS; 2]);
    // Damage the Secondary's disk behind the machine's back: one byte in block 3, blocks 100-101, the
    // last block, and a block at the end of a 1 MiB resync request.
    let damaged = [3u64, 100, 101, 255, BLOCKS - 1];
    for b in damaged {
        w.data[1][(b * 4096 + 17) as usize] ^= 0x5A;
    }
    assert_ne!(w.data[0], w.data[1]);
    let (src, tgt) = invalidate(&mut w);
    assert_eq!(src.resync_blocks_sent, damaged.len() as u64, "{src:?}");
    assert_eq!(tgt.resync_blocks_received, damaged.len() as u64, "{tgt:?}");
    assert_eq!(src.resync_csum_equal_bytes, SIZE - damaged.len() as u64 * 4096);
}

#[test]
fn a_peer_without_protocol_4_and_csums_off_get_the_plain_full_resync() {
    for (csums, ranges) in [
        (CsumsOptions::default(), [PROTOCOLS, PROTOCOLS.capped(3)]),
        (CsumsOptions::default(), [PROTOCOLS.capped(3), PROTOCOLS]),
        (CsumsOptions { alg: None, every_resync: true }, [PROTOCOLS; 2]),
    ] {
        let mut w = world(7, csums, ranges);
        let (src, tgt) = invalidate(&mut w);
        assert_eq!(src.resync_blocks_sent, BLOCKS, "{csums:?} {ranges:?}: {src:?}");
        assert_eq!(tgt.resync_blocks_received, BLOCKS);
        assert_eq!(src.resync_csum_equal_bytes + tgt.resync_csum_equal_bytes, 0);
    }
}

#[test]
fn bitmap_resyncs_compare_digests_only_with_csums_for_all() {
    for every_resync in [false, true] {
        let mut w = world(9, CsumsOptions { alg: Some(CsumAlg::Sha1), every_resync }, [PROTOCOLS; 2]);
        // Cut the link, write 8 blocks on the Primary (marked), then rewrite 4 of them on the
        // Secondary's disk with the same contents the Primary now has: those 4 are equal.
        w.input(0, Input::Disconnect);
        let t = w.now + 100;
        w.run_until(t);
        for b in 0..8u64 {
            w.input(0, Input::Write { id: 1000 + b, offset: b * 4096, data: Bytes::from(vec![0xC0 | b as u8; 4096]), fua: false });
        }
        let t = w.now + 200;
        w.run_until(t);
        for b in 0..4u64 {
            let at = (b * 4096) as usize;
            w.data[1][at..at + 4096].fill(0xC0 | b as u8);
        }
        let before = stats(&w, 0);
        w.input(0, Input::Connect { discard_my_data: false });
        settle(&mut w);
        assert_eq!(w.data[0], w.data[1]);
        let after = stats(&w, 0);
        let (sent, equal) = (after.resync_blocks_sent - before.resync_blocks_sent, after.resync_csum_equal_bytes - before.resync_csum_equal_bytes);
        if every_resync {
            assert_eq!((sent, equal), (4, 4 * 4096), "csums-for all");
        } else {
            assert_eq!((sent, equal), (8, 0), "csums-for full: a bitmap resync moves its blocks");
        }
    }
}
