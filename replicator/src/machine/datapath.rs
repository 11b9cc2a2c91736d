//! Application writes, flushes and reads on the Primary, and the peer side of them (protocol C).
//!
//! A write is issued to the local disk and, when a peer takes writes, to the peer at the same time; it
//! completes when both report it written — stable if FUA, otherwise possibly only in a volatile cache
//! until a flush (`barrier.rs`). With no peer (or when the peer is lost mid-write) its blocks are
//! recorded in the bitmap instead, and it completes on the local result alone. Every write holds
//! activity-log references on its 4 MiB extents from before its data write until a flush of both disks
//! covers it (or it fails), so a crash or a power loss can only leave differing data inside extents the
//! activity log names.

use super::node::{Action, AppWrite, IoFailure, Node, PendingWrite, Purpose, Stage, BLOCK, MAX_DATA_FRAME, SECTOR};
use super::state::{DiskState, ReplState, Role};
use super::uuids::UUID_JUST_CREATED;
use crate::meta::activity_log::AlBegin;
use crate::meta::layout::AL_EXTENT_SIZE;
use crate::wire::frame::{Frame, DATA_FUA};
use bytes::Bytes;

/// First and last 4 KiB block touched by a byte range (len > 0).
pub(crate) fn block_span(offset: u64, len: u64) -> (u64, u64) {
    (offset / BLOCK, (offset + len - 1) / BLOCK)
}

fn spans_overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

impl Node {
    /// The peer currently takes application writes (not while its disk is detached: `detach.rs`).
    pub(crate) fn peer_receiving(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.stage == Stage::Up)
            && matches!(self.repl, ReplState::Established | ReplState::SyncSource | ReplState::SyncTarget)
            && self.peer_disk != DiskState::Diskless
    }

    fn handshaking(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.stage != Stage::Up)
    }

    pub(crate) fn on_app_write(&mut self, id: u64, offset: u64, data: Bytes, fua: bool) {
        let len = data.len() as u64;
        let check = if self.role != Role::Primary {
            Err(IoFailure::NotPrimary)
        } else if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            Err(IoFailure::Io(format!("unaligned write [{offset}, +{len}): must be 512-byte aligned")))
        } else {
            self.in_range(offset, len)
        };
        if let Err(e) = check {
            self.out.push(Action::Complete { id, result: Err(e) });
            return;
        }
        if len == 0 {
            self.out.push(Action::Complete { id, result: Ok(()) });
            return;
        }
        let w = PendingWrite { id, offset, data, fua };
        if self.handshaking() || self.conflicts(offset, len, self.waiting.len()) || !self.try_start_write(&w) {
            self.waiting.push_back(w);
        }
    }

    /// Does [offset, +len) touch an in-flight write, an in-flight resync range, or one of the first
    /// `waiting_before` queued writes (which must go first to keep their order)?
    pub(crate) fn conflicts(&self, offset: u64, len: u64, waiting_before: usize) -> bool {
        let span = block_span(offset, len);
        self.writes.values().any(|w| spans_overlap(span, block_span(w.offset, w.len)))
            || self.resync.as_ref().is_some_and(|r| {
                r.inflight.iter().any(|(&o, &l)| spans_overlap(span, block_span(o, l)))
            })
            || self.verify_holds(|o, l| spans_overlap(span, block_span(o, l)))
            || self.waiting.iter().take(waiting_before).any(|w| spans_overlap(span, block_span(w.offset, w.data.len() as u64)))
    }

    /// Issue a write; false if the activity log has no free slot right now (retry after a completion).
    fn try_start_write(&mut self, w: &PendingWrite) -> bool {
        let len = w.data.len() as u64;
        if self.diskless() && !self.peer_receiving() {
            self.complete(w.id, Err(IoFailure::NoData(DiskState::Diskless)));
            return true;
        }
        let first = (w.offset / AL_EXTENT_SIZE) as u32;
        let last = ((w.offset + len - 1) / AL_EXTENT_SIZE) as u32;
        match self.al.begin(first, last) {
            AlBegin::Ready => {}
            AlBegin::Busy => {
                // Slots may be held by acknowledged writes waiting for a flush: flush, so they free up.
                self.issue_barrier();
                return false;
            }
            AlBegin::NeedsTransaction(tx) => {
                // Bits of an extent leaving the log must be on disk before the log forgets it.
                let pages = self.bitmap.take_dirty_pages();
                if !pages.is_empty() {
                    self.stats.bm_writes += pages.len() as u64;
                    self.out.push(Action::PersistBitmap(pages));
                }
                self.out.push(Action::PersistAl(tx.clone()));
                self.al.commit(tx);
                self.stats.al_writes += 1;
            }
        }
        let replicate = self.peer_receiving();
        if !replicate {
            self.ensure_new_generation("peer not connected");
        }
        let local = !self.diskless();
        if local {
            let token = self.token(Purpose::AppWrite { id: w.id });
            self.out.push(Action::DiskWrite { token, offset: w.offset, data: w.data.clone(), fua: w.fua });
        }
        let mut pending = 0u32;
        if replicate {
            let conn = self.link.as_ref().map(|l| l.conn).unwrap_or_default();
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(MAX_DATA_FRAME);
                let seq = self.next_seq;
                self.next_seq += 1;
                let chunk = w.data.slice(at as usize..(at + n) as usize);
                self.peer_seq_insert(seq, w.id);
                // Protocol A: the first frame after an early acknowledgement opens a new epoch.
                let epoch = if at == 0 { self.epoch_flag() } else { 0 };
                let flags = if w.fua { DATA_FUA } else { 0 } | epoch;
                self.send(conn, Frame::Data { seq, offset: w.offset + at, flags, data: chunk });
                pending += 1;
                at += n;
            }
        } else {
            self.bitmap.set_range(w.offset, len);
        }
        self.writes.insert(w.id, AppWrite {
            offset: w.offset,
            len,
            extents: (first, last),
            local_done: !local,
            local_error: None,
            peer_pending: pending,
            replicated: replicate,
            sent_ms: self.now_ms,
            fua: w.fua,
            early_acked: false,
        });
        self.last_app_write_ms = self.now_ms;
        true
    }

    fn peer_seq_insert(&mut self, seq: u64, id: u64) {
        self.pending_acks.insert(seq, id);
    }

    fn peer_seq_take(&mut self, seq: u64) -> Option<u64> {
        self.pending_acks.remove(&seq)
    }

    /// Start queued writes that no longer conflict, in order.
    pub(crate) fn start_waiting_writes(&mut self) {
        if self.handshaking() {
            return;
        }
        let mut i = 0;
        while i < self.waiting.len() {
            let Some(w) = self.waiting.get(i).cloned() else { break };
            if self.conflicts(w.offset, w.data.len() as u64, i) {
                i += 1;
                continue;
            }
            if !self.try_start_write(&w) {
                break; // activity log full: wait for a completion
            }
            self.waiting.remove(i);
        }
    }

    pub(crate) fn app_write_local_done(&mut self, id: u64, result: Result<(), String>) {
        if let Some(w) = self.writes.get_mut(&id) {
            w.local_done = true;
            if let Err(e) = result {
                w.local_error = Some(e);
            }
        }
        self.maybe_complete_write(id);
    }

    pub(crate) fn on_write_ack(&mut self, seq: u64, ok: bool) {
        let Some(id) = self.peer_seq_take(seq) else { return };
        let mut failed_range = None;
        if let Some(w) = self.writes.get_mut(&id) {
            w.peer_pending = w.peer_pending.saturating_sub(1);
            if !ok {
                w.replicated = false;
                failed_range = Some((w.offset, w.len));
            }
        }
        if let Some((o, l)) = failed_range
            && self.peer_disk == DiskState::Diskless
        {
            // The peer detached its disk (its State frame came first): the write goes on here alone,
            // recorded in the bitmap, as every write does until it attaches again.
            self.bitmap.set_range(o, l);
            self.ensure_new_generation("the peer's disk is detached");
        } else if let Some((o, l)) = failed_range {
            self.bitmap.set_range(o, l);
            self.log(true, format!("{}: peer failed to write [{o}, +{l}); marked out of sync", self.p.resource));
            // The peer now misses data: start a new generation (so the next handshake makes us the
            // source, rule 70) and renegotiate, which resyncs the marked blocks.
            self.ensure_new_generation("the peer failed a write");
            self.drop_link("the peer reported a failed write", true);
        }
        self.maybe_complete_write(id);
    }

    fn maybe_complete_write(&mut self, id: u64) {
        let local_done = self.writes.get(&id).is_some_and(|w| w.local_done);
        if local_done && self.may_ack_early(id) {
            // Protocol A: on the local disk and queued to the peer; the entry stays until the
            // peer's WriteAck (activity log, conflicts, out-of-sync marking if the link drops).
            if let Some(w) = self.writes.get_mut(&id) {
                w.early_acked = true;
                let len = w.len;
                self.stats.written_bytes += len;
            }
            self.proto_a.epoch_due = true;
            self.stats.async_early_acks += 1;
            self.complete(id, Ok(()));
            return;
        }
        let ready = self.writes.get(&id).is_some_and(|w| w.local_done && w.peer_pending == 0);
        if !ready {
            return;
        }
        let Some(w) = self.writes.remove(&id) else { return };
        if w.early_acked {
            // Acknowledged already; the peer has it now (or its blocks were marked out of sync when
            // it was lost or failed it): it owes a flush like any write (`barrier.rs`).
            self.hold_until_flushed(w.offset, w.len, w.extents, w.replicated, w.fua);
            self.start_waiting_flushes();
            self.start_waiting_writes();
            self.pump_resync();
            self.pump_verify();
            return;
        }
        let result = match (self.diskless(), w.local_error) {
            // Only the peer's disk counts now (a local copy, if any, is on a detached disk).
            (true, _) if w.replicated => {
                self.stats.written_bytes += w.len;
                Ok(())
            }
            (true, _) => Err(IoFailure::NoData(DiskState::Diskless)),
            (false, Some(e)) => {
                // The local copy may now differ from the peer's: resync it later.
                self.bitmap.set_range(w.offset, w.len);
                Err(IoFailure::Io(e))
            }
            (false, None) => {
                if w.replicated && w.fua {
                    self.clear_fully_covered(w.offset, w.len);
                }
                self.stats.written_bytes += w.len;
                Ok(())
            }
        };
        if result.is_ok() {
            // Acknowledged, but maybe only in a cache on either side: see `barrier.rs`.
            self.hold_until_flushed(w.offset, w.len, w.extents, w.replicated, w.fua);
        } else {
            // Failed writes are marked out of sync (or not served at all): nothing to wait for.
            self.al.end(w.extents.0, w.extents.1);
        }
        self.complete(id, result);
        self.start_waiting_writes();
        self.pump_resync();
        self.pump_verify();
    }

    /// Blocks entirely rewritten on both disks are in sync whatever they held before — once the
    /// rewrite is stable on both: callers pass FUA writes only. A plain write may sit in the target's
    /// volatile cache while the target's media still holds the block from before the bit was set; its
    /// bit stays and the resync sends the block (FUA). (Clearing it would be covered too, as long as
    /// `barrier.rs` marks the write again when the peer is lost before a flush; keeping the bit means
    /// no cleared bit ever depends on that, at the cost of resending blocks rewritten during a resync.
    /// The power-loss simulation does not tell the two apart.)
    pub(crate) fn clear_fully_covered(&mut self, offset: u64, len: u64) {
        let first = offset.div_ceil(BLOCK);
        let end = (offset + len) / BLOCK;
        for b in first..end {
            self.bitmap.clear_block(b);
        }
    }

    /// The peer went away: writes waiting for it are recorded in the bitmap and complete locally;
    /// flushes and remote reads waiting for it finish now.
    /// The peer misses (or may miss) data we acknowledge from now on: before the first such write
    /// completes, start a new generation so the next handshake knows who is ahead (DRBD 9 does this
    /// lazily, on the first write or completion without the peer).
    pub(crate) fn ensure_new_generation(&mut self, why: &str) {
        let u = self.persisted.uuids;
        // While I/O is suspended nothing is acknowledged, so nothing yet makes us newer than the peer:
        // if the peer is promoted meanwhile, our unacknowledged writes must lose without a split brain
        // (DRBD too postpones the new generation). `thaw` makes it before releasing the acks.
        if self.role != Role::Primary || u.bitmap != 0 || u.current == UUID_JUST_CREATED || self.frozen.is_some() {
            return;
        }
        let fresh = self.fresh_uuid();
        self.persisted.uuids.new_current(fresh, true);
        self.log(false, format!("{}: new data generation {} ({why})", self.p.resource, self.persisted.uuids));
        self.persist_flags(self.persisted.flags);
    }

    pub(crate) fn peer_lost_for_inflight(&mut self) {
        let ids: Vec<u64> = self.writes.iter().filter(|(_, w)| w.peer_pending > 0).map(|(&id, _)| id).collect();
        if !ids.is_empty() {
            self.ensure_new_generation("writes in flight lost the peer");
        }
        // Acknowledged writes the peer took but never flushed: it may have lost them in a power loss
        // that ends this connection, and it would not know. No new generation: the peer acknowledged
        // them, so it is not behind as far as it can tell, and a survivor promoted with them must not
        // look like a split brain; the marks make the next handshake resync them from here.
        self.mark_unflushed_out_of_sync(|_| true);
        for id in &ids {
            if let Some(w) = self.writes.get_mut(id) {
                w.peer_pending = 0;
                w.replicated = false;
                let (o, l) = (w.offset, w.len);
                self.bitmap.set_range(o, l);
            }
        }
        self.pending_acks.clear();
        if self.diskless() {
            // The peer held the only copy: flushes waiting for it cannot succeed.
            for f in self.flushes.values_mut().filter(|f| f.peer_pending) {
                f.error = Some("the peer was lost and the local disk is detached".into());
            }
        }
        let remote_reads: Vec<u64> = self.reads.drain().map(|(_, id)| id).collect();
        for id in remote_reads {
            self.out.push(Action::ReadDone { id, result: Err(IoFailure::NoData(self.disk)) });
        }
        self.peer_flush_seq.clear();
        let mut flush_ids: Vec<u64> = self.flushes.keys().copied().collect();
        flush_ids.sort_unstable();
        for n in flush_ids {
            if let Some(f) = self.flushes.get_mut(&n) {
                f.peer_pending = false;
            }
            self.maybe_complete_flush(n);
        }
        for id in ids {
            self.maybe_complete_write(id);
        }
        self.start_waiting_writes();
    }

    pub(crate) fn on_app_flush(&mut self, id: u64) {
        // Under protocol C nothing is ever early-acknowledged: this starts the flush at once.
        self.app_flush_or_wait(id);
    }

    /// Completes an application write or flush, unless acknowledgements are held back (a success is
    /// then kept until [`Node::thaw`]; a failure is no promise and goes out at once).
    pub(crate) fn complete(&mut self, id: u64, result: Result<(), IoFailure>) {
        if self.frozen.is_some() && result.is_ok() {
            self.held.push((id, result));
        } else {
            self.out.push(Action::Complete { id, result });
        }
    }

    /// The peer is lost while it held our data: with `fencing resource-and-stonith`, hold every
    /// acknowledgement from now on until it is confirmed outdated or fenced, or the link is back.
    pub(crate) fn freeze_if_fencing(&mut self, peer_disk_was: DiskState) {
        if self.role == Role::Primary && self.p.freeze_io_on_peer_loss && peer_disk_was == DiskState::UpToDate && self.frozen.is_none() {
            self.frozen = Some("the peer was lost; waiting until it is outdated or fenced (fencing resource-and-stonith)".into());
            self.log(true, format!("{}: I/O suspended: write acknowledgements are held until the peer is outdated or fenced, or reconnects", self.p.resource));
            self.changed();
        }
    }

    pub(crate) fn thaw(&mut self, reason: &str) {
        if self.frozen.take().is_none() {
            return;
        }
        // Writes made while suspended are in the bitmap; once they are acknowledged the peer (if it is
        // not receiving them) is behind: start the generation that says so, before the acks go out.
        let pr_owed = self.persisted.flags & crate::meta::superblock::flags::PEER_PR_STALE != 0;
        if !self.peer_receiving() && (self.bitmap.count() > 0 || pr_owed) {
            self.ensure_new_generation("writes acknowledged after the peer was outdated or fenced");
        }
        let held = std::mem::take(&mut self.held);
        self.log(true, format!("{}: I/O resumed ({reason}); {} held acknowledgement(s) released", self.p.resource, held.len()));
        for (id, result) in held {
            self.out.push(Action::Complete { id, result });
        }
        self.changed();
    }

    /// Held writes are on the local disk but were never acknowledged: report them failed.
    pub(crate) fn fail_held(&mut self, why: &str) {
        if self.frozen.take().is_none() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.log(true, format!("{}: {why}: {} write(s) reported failed", self.p.resource, held.len()));
        for (id, _) in held {
            self.out.push(Action::Complete { id, result: Err(IoFailure::Down) });
        }
        self.changed();
    }

    pub(crate) fn on_app_read(&mut self, id: u64, offset: u64, len: u64) {
        if let Err(e) = self.in_range(offset, len) {
            self.out.push(Action::ReadDone { id, result: Err(e) });
            return;
        }
        let range_in_sync = len == 0 || {
            let (b0, b1) = block_span(offset, len);
            self.bitmap.next_set(b0).is_none_or(|b| b > b1)
        };
        let peer_can_serve = self.peer_receiving() && self.peer_disk.is_consistent();
        let local_ok = self.disk == DiskState::UpToDate
            || (self.disk == DiskState::Inconsistent && range_in_sync)
            || (self.disk.is_consistent() && !peer_can_serve);
        if local_ok {
            let token = self.token(Purpose::AppRead { id, offset, len });
            self.out.push(Action::DiskRead { token, offset, len });
        } else if peer_can_serve {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.reads.insert(seq, id);
            let conn = self.link.as_ref().map(|l| l.conn).unwrap_or_default();
            self.send(conn, Frame::ReadRequest { seq, offset, len: len as u32 });
        } else {
            self.out.push(Action::ReadDone { id, result: Err(IoFailure::NoData(self.disk)) });
        }
    }

    pub(crate) fn app_read_done(&mut self, id: u64, result: Result<Option<Bytes>, String>) {
        let result = match result {
            Ok(d) => Ok(d.unwrap_or_default()),
            Err(e) => Err(IoFailure::Io(e)),
        };
        self.out.push(Action::ReadDone { id, result });
    }

    pub(crate) fn on_read_reply(&mut self, seq: u64, ok: bool, data: Bytes) {
        let Some(id) = self.reads.remove(&seq) else { return };
        let result = if ok { Ok(data) } else { Err(IoFailure::Io("peer failed to read".into())) };
        self.out.push(Action::ReadDone { id, result });
    }

    // ---- the receiving side ----------------------------------------------------------------------

    pub(crate) fn on_peer_data(&mut self, conn: u64, seq: u64, offset: u64, flags: u32, data: Bytes) {
        let len = data.len() as u64;
        if self.role == Role::Primary {
            // Two Primaries wrote on one connection (they promoted at the same moment): that is a split
            // brain, and must be reported as one, not as a mere protocol error.
            let reason = "split brain: the peer sent application data but this node is Primary (both Primary)";
            self.split_brain = true;
            self.stats.split_brains += 1;
            self.out.push(Action::RunHandler("split-brain"));
            self.send(conn, Frame::Abort { code: super::link::ABORT_SPLIT_BRAIN, reason: reason.to_string() });
            self.fatal(reason, false);
            return;
        }
        if len == 0 || self.in_range(offset, len).is_err() {
            self.abort(conn, &format!("protocol error: peer write [{offset}, +{len}) outside the device"), true);
            return;
        }
        if self.diskless() {
            // Detached on request and still connected: the Primary marks the block (`detach.rs`).
            self.send(conn, Frame::NegAck { seq, code: 5 });
            return;
        }
        self.stats.received_bytes += len;
        // Issued at once, unless it opens an epoch while earlier ones are still on the disk
        // (protocol A, `protocol_a.rs`); protocol C never sets the epoch flag.
        self.peer_data_ordered(super::protocol_a::HeldPeerWrite { conn, seq, offset, flags, data });
    }

    pub(crate) fn peer_write_done(&mut self, conn: u64, seq: u64, offset: u64, len: u64, fua: bool, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.repl == ReplState::SyncTarget && fua {
                    self.clear_fully_covered(offset, len);
                }
                self.send(conn, Frame::WriteAck { seq });
            }
            Err(e) => {
                self.log(true, format!("{}: local write for the peer failed at [{offset}, +{len}): {e}", self.p.resource));
                self.send(conn, Frame::NegAck { seq, code: 5 });
            }
        }
    }

    pub(crate) fn on_peer_flush(&mut self, conn: u64, seq: u64) {
        if self.diskless() {
            self.send(conn, Frame::FlushAck { seq, ok: false });
            return;
        }
        let token = self.token(Purpose::PeerFlush { conn, seq });
        self.out.push(Action::DiskFlush { token });
    }

    pub(crate) fn on_peer_read(&mut self, conn: u64, seq: u64, offset: u64, len: u64) {
        if self.in_range(offset, len).is_err() || !self.disk.is_consistent() {
            self.send(conn, Frame::ReadReply { seq, ok: false, data: Bytes::new() });
            return;
        }
        let token = self.token(Purpose::PeerRead { conn, seq });
        self.out.push(Action::DiskRead { token, offset, len });
    }
}
