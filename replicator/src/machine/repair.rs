//! `verify --repair` (issue 18): the blocks an online verify found different are resynced at once over
//! the established link, without a disconnect and a new handshake.
//!
//! Direction: from the verifying node (VerifyS) — which is the Primary if there is one (verify refuses
//! to run on a Secondary whose peer is Primary), otherwise the node where verify was started, as DRBD
//! resyncs from the verify source. Both sides already hold the same marks: every differing block was
//! sent to the peer as `OutOfSync` before this starts, on the same ordered connection.
//!
//! Start: the source persists its bitmap (done by `finish_verify`), becomes SyncSource and sends one
//! `State` frame carrying [`STATE_REPAIR_START`]; then it flushes its own disk and runs the ordinary
//! bitmap resync (`resync.rs`). The target, on that frame, persists its bitmap, then its Inconsistent
//! flag, becomes SyncTarget and sends back any block it has marked that the source may not know of
//! (as `OutOfSync`, before its first resync acknowledgement, so the source never finishes without
//! them). The end is the ordinary one (`ResyncFinished` both ways): same generation, both UpToDate.
//!
//! A target that cannot take it (it was promoted meanwhile, its disk is no longer UpToDate) drops the
//! link: the handshake then decides, as after any renegotiation. A peer of an older release does not
//! advertise [`STATE_CAN_REPAIR`]: the source falls back to renegotiating the link, which resyncs the
//! marked blocks from the Primary (with no Primary they stay marked until one node is promoted).

use super::node::{Action, Node, Purpose, Resync, BLOCK};
use super::snapshot::SyncProgress;
use super::state::{DiskState, ReplState, Role};
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;

/// State-frame flag: the sender takes an in-place repair resync (set in every State frame it sends on
/// a link of version 3 or later). Older peers ignore it.
pub const STATE_CAN_REPAIR: u32 = 1 << 10;
/// State-frame flag: the sender starts an in-place resync of the marked blocks now, as SyncSource.
/// Sent once, only to a peer that advertised [`STATE_CAN_REPAIR`].
pub const STATE_REPAIR_START: u32 = 1 << 11;

/// Largest range one `OutOfSync` frame names when the target reports its own marks.
const MAX_OOS_RANGE: u64 = 1 << 30;

impl Node {
    /// [`STATE_CAN_REPAIR`] for the State frames of this link: not on links of versions 1–2, whose
    /// frames are pinned byte for byte by recorded fixtures (`tests/fixtures/proto-v2`); a version-3
    /// peer that predates it ignores State bits it does not know (as every release does).
    pub(crate) fn repair_capability(&self) -> u32 {
        if self.link.as_ref().is_some_and(|l| l.proto >= crate::wire::frame::PROTOCOL_RESIZE) { STATE_CAN_REPAIR } else { 0 }
    }

    /// The source side: resync the marked blocks from here over the established link.
    pub(crate) fn start_repair(&mut self) {
        let Some(conn) = self.up_conn() else { return };
        let n = self.bitmap.count();
        if self.repl != ReplState::Established || n == 0 {
            return;
        }
        if self.peer_role == Role::Primary || self.disk != DiskState::UpToDate || self.peer_disk != DiskState::UpToDate {
            self.log(true, format!("{}: repair not started (role {}, peer {}, disk {}, peer disk {}); the marked blocks resync at the next connection", self.p.resource, self.role, self.peer_role, self.disk, self.peer_disk));
            return;
        }
        if !self.verify_keeping.peer_can_repair {
            self.log(true, format!("{}: the peer's release cannot resync in place: renegotiating the link to resync {} KiB", self.p.resource, n * BLOCK / 1024));
            self.resync_marked_from_primary();
            return;
        }
        self.repl = ReplState::SyncSource;
        self.peer_disk = DiskState::Inconsistent;
        self.resync = Some(Resync { total_blocks: n, started_ms: self.now_ms, last_refill_ms: self.now_ms, ..Default::default() });
        let fl = self.state_flags() | STATE_REPAIR_START;
        self.send(conn, Frame::State { role: self.role.code(), disk: self.disk.code(), flags: fl });
        // As at a handshake: our own disk is flushed before the first block leaves (`resync.rs`).
        let token = self.token(Purpose::ResyncFlush { conn });
        self.out.push(Action::DiskFlush { token });
        self.log(false, format!("{}: repair: resync started as SyncSource over the established link, {} KiB to sync", self.p.resource, n * BLOCK / 1024));
        self.changed();
    }

    /// The target side: the peer starts an in-place repair resync from itself.
    pub(crate) fn on_repair_start(&mut self, conn: u64) {
        if self.repl != ReplState::Established || self.role == Role::Primary || self.disk != DiskState::UpToDate || self.verify.is_some() {
            let why = format!(
                "peer asked to repair in place but replication is {}, role {}, disk {}{}: renegotiating",
                self.repl,
                self.role,
                self.disk,
                if self.verify.is_some() { ", a verify runs here" } else { "" }
            );
            self.log(true, format!("{}: {why}", self.p.resource));
            self.drop_link(&why, true);
            return;
        }
        // Metadata first: the marks, then Inconsistent, before any resync data can land.
        self.bitmap.mark_all_pages_dirty();
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        self.disk = DiskState::Inconsistent;
        self.persist_flags(self.persisted.flags & !(flags::CONSISTENT | flags::WAS_UP_TO_DATE));
        self.repl = ReplState::SyncTarget;
        let n = self.bitmap.count();
        self.target_progress = Some(SyncProgress { total_blocks: n, remaining_blocks: n, started_ms: self.now_ms, paused: false });
        // Marks of ours the source may lack travel back before our first RsAck.
        let blocks = self.bitmap.blocks();
        let mut b = 0;
        while let Some(first) = self.bitmap.next_set(b) {
            let mut end = first + 1;
            while end < blocks && self.bitmap.test(end) && (end - first) * BLOCK < MAX_OOS_RANGE {
                end += 1;
            }
            let offset = first * BLOCK;
            let len = (end * BLOCK).min(self.p.data_size) - offset;
            self.send(conn, Frame::OutOfSync { offset, len: len as u32 });
            b = end;
        }
        self.out.push(Action::RunHandler("before-resync-target"));
        self.log(false, format!("{}: repair: resync started as SyncTarget over the established link, {} KiB to sync", self.p.resource, n * BLOCK / 1024));
        self.broadcast_state();
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use crate::machine::state::{ConnState, DiskState, ReplState, Role};
    use crate::machine::{Input, VerifyOutcome};
    use crate::sim::world::World;

    const SIZE: u64 = 4 << 20;

    /// A connected, UpToDate pair with node 0 Primary.
    fn pair(seed: u64) -> World {
        let mut w = World::new(seed, SIZE, 7, Default::default());
        w.input(0, Input::Primary { force: true });
        w.input(0, Input::Connect { discard_my_data: false });
        w.input(1, Input::Connect { discard_my_data: false });
        w.run_until(w.now + 20_000);
        let s = w.snapshot(1).expect("node 1 up");
        assert_eq!((s.conn, s.repl, s.disk), (ConnState::Connected, ReplState::Established, DiskState::UpToDate), "initial sync");
        w
    }

    fn damage(w: &mut World, i: usize, offsets: &[u64]) {
        for &o in offsets {
            w.data[i][o as usize..o as usize + 4096].fill(0xEE);
        }
    }

    fn last_verify(w: &World, i: usize) -> VerifyOutcome {
        w.snapshot(i).and_then(|s| s.last_verify).expect("a verify outcome")
    }

    #[test]
    fn repair_resyncs_exactly_the_blocks_found_different_without_reconnecting() {
        let mut w = pair(7);
        let (sent0, recv1) = (w.snapshot(0).unwrap().stats.resync_blocks_sent, w.snapshot(1).unwrap().stats.resync_blocks_received);
        // Three blocks, two of them in one verify chunk.
        let damaged = [8192u64, 8192 + 4096 * 5, 3 << 20];
        damage(&mut w, 1, &damaged);
        assert_ne!(w.data[0], w.data[1]);
        let handshakes = w.trace.iter().filter(|l| l.contains("handshake done")).count();
        w.input(0, Input::Verify { repair: true });
        w.run_until(w.now + 20_000);
        let v = last_verify(&w, 0);
        assert!(v.completed && v.repair, "{v:?}");
        assert_eq!(v.found_bytes, damaged.len() as u64 * 4096, "only the damaged blocks are found: {v:?}");
        assert_eq!(v.checked_bytes, SIZE);
        assert_eq!(w.data[0], w.data[1], "the damaged blocks were repaired");
        for i in 0..2 {
            let s = w.snapshot(i).unwrap();
            assert_eq!((s.repl, s.disk, s.peer_disk, s.out_of_sync_blocks), (ReplState::Established, DiskState::UpToDate, DiskState::UpToDate, 0), "node {i}");
        }
        // Only those blocks travelled, and over the same connection.
        assert_eq!(w.snapshot(0).unwrap().stats.resync_blocks_sent - sent0, damaged.len() as u64);
        assert_eq!(w.snapshot(1).unwrap().stats.resync_blocks_received - recv1, damaged.len() as u64);
        assert_eq!(w.trace.iter().filter(|l| l.contains("handshake done")).count(), handshakes, "no renegotiation");
        assert_eq!(w.snapshot(0).unwrap().uuids.current & !1, w.snapshot(1).unwrap().uuids.current & !1, "same generation");
    }

    #[test]
    fn without_repair_the_blocks_stay_marked_and_nothing_moves() {
        let mut w = pair(8);
        let sent0 = w.snapshot(0).unwrap().stats.resync_blocks_sent;
        damage(&mut w, 1, &[1 << 20]);
        w.input(0, Input::Verify { repair: false });
        w.run_until(w.now + 20_000);
        let v = last_verify(&w, 0);
        assert!(v.completed && !v.repair && v.found_bytes == 4096, "{v:?}");
        for i in 0..2 {
            let s = w.snapshot(i).unwrap();
            assert_eq!((s.repl, s.out_of_sync_blocks), (ReplState::Established, 1), "node {i}");
        }
        assert_eq!(w.snapshot(0).unwrap().stats.resync_blocks_sent, sent0);
        assert_ne!(w.data[0], w.data[1]);
    }

    #[test]
    fn with_no_primary_the_verify_node_is_the_source() {
        let mut w = pair(9);
        w.input(0, Input::Secondary);
        w.run_until(w.now + 2_000);
        assert_eq!(w.snapshot(1).unwrap().peer_role, Role::Secondary);
        // Node 1 verifies; node 0's copy is the damaged one, yet node 1's data is what wins.
        damage(&mut w, 0, &[2 << 20]);
        let want = w.data[1].clone();
        w.input(1, Input::Verify { repair: true });
        w.run_until(w.now + 20_000);
        assert_eq!(last_verify(&w, 1).found_bytes, 4096);
        assert_eq!(w.data[0], want);
        assert_eq!(w.data[1], want);
        assert_eq!(w.snapshot(0).unwrap().disk, DiskState::UpToDate);
    }

    #[test]
    fn a_verify_rate_caps_the_bytes_compared_per_second() {
        let mut w = pair(10);
        let mut o = w.machine(0).unwrap().live_options();
        o.verify_rate = Some(1 << 20); // 1 MiB/s: the 4 MiB volume takes about 4 s
        w.input(0, Input::SetOptions(Box::new(o)));
        let t0 = w.now;
        w.input(0, Input::Verify { repair: false });
        w.run_until(t0 + 2_000);
        assert!(w.snapshot(0).unwrap().last_verify.is_none(), "finished within 2 s at 1 MiB/s");
        w.run_until(t0 + 10_000);
        let v = last_verify(&w, 0);
        let secs = (v.finished_ms - v.started_ms) as f64 / 1000.0;
        assert!(v.completed && (3.0..6.0).contains(&secs), "took {secs} s: {v:?}");
    }

    #[test]
    fn a_peer_of_an_older_protocol_gets_a_renegotiation_that_resyncs_from_the_primary() {
        use crate::sim::world::params;
        let mut old = params(1, SIZE, Default::default());
        old.protocols = crate::wire::frame::PROTOCOLS.capped(2);
        let mut w = World::with_params(11, SIZE, 7, [params(0, SIZE, Default::default()), old]);
        w.start(0);
        w.start(1);
        w.input(0, Input::Primary { force: true });
        w.input(0, Input::Connect { discard_my_data: false });
        w.input(1, Input::Connect { discard_my_data: false });
        w.run_until(w.now + 20_000);
        assert_eq!(w.snapshot(0).unwrap().agreed_protocol, Some(2));
        damage(&mut w, 1, &[1 << 20]);
        let handshakes = w.trace.iter().filter(|l| l.contains("handshake done")).count();
        w.input(0, Input::Verify { repair: true });
        w.run_until(w.now + 20_000);
        assert!(w.trace.iter().any(|l| l.contains("cannot resync in place")), "no fallback logged");
        assert!(w.trace.iter().filter(|l| l.contains("handshake done")).count() > handshakes, "no renegotiation");
        assert_eq!(w.data[0], w.data[1]);
        assert!(w.converged());
    }
}
