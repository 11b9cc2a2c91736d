//! Flushes, and what a completed write still owes to them.
//!
//! Both data disks may have volatile write caches (the page cache of a buffered `DataDisk` is one): a
//! write that completed — on this disk, and on the peer's, which is what the peer's WriteAck says — is
//! only in a cache until a flush of that disk covers it. A power loss may take it. So an acknowledged
//! write that was not FUA is kept in `unflushed` (DRBD keeps it in its transfer log until the barrier
//! ack of its epoch) and keeps its activity-log references until a flush of *both* disks covers it:
//! - its extents stay in the activity log, so a crash or power loss of this node resyncs them (the
//!   log is what this node's restart marks out of sync, and the peer's copy may differ from ours);
//! - if the link is lost first, its blocks are marked out of sync: the peer may have lost them in a
//!   power loss we cannot see (DRBD: requests not yet barrier-acked lose RQ_NET_OK on connection loss).
//!
//! A flush covers what had completed when it was issued: an application flush (SYNCHRONIZE CACHE), or
//! a *barrier* the machine issues itself — when the activity log is full of extents held this way,
//! when the oldest unflushed write is [`BARRIER_AGE_MS`] old, when [`MAX_UNFLUSHED`] accumulate, and
//! when a Primary is demoted. Its completion retires the writes it covers.

use super::node::{Action, IoFailure, Node, Purpose};
use super::state::Role;
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;

/// A barrier is issued once the oldest unflushed write is this old: it bounds what a link loss sends
/// back through the resync, like the kernel's periodic writeback (≤ one flush per second).
pub(crate) const BARRIER_AGE_MS: u64 = 1_000;
/// ...or once this many wait (bounds the list and the marking work at a link loss).
pub(crate) const MAX_UNFLUSHED: usize = 4096;

/// An acknowledged write whose data may be only in a volatile cache (ours, or the peer's).
#[derive(Debug, Clone)]
pub(crate) struct Unflushed {
    pub seq: u64,
    pub offset: u64,
    pub len: u64,
    pub extents: (u32, u32),
    /// The peer has it (in its cache at least); cleared when its blocks are marked out of sync instead.
    pub replicated: bool,
    pub done_ms: u64,
}

/// A flush in flight: an application's, or a barrier (`app: None`).
#[derive(Debug, Clone)]
pub(crate) struct Flush {
    pub app: Option<u64>,
    pub local_done: bool,
    pub peer_pending: bool,
    pub error: Option<String>,
    /// Our own disk failed the flush (and the node kept its disk: `on-io-error pass_on`). What it
    /// covers may still be only in the disk's cache, so the activity log keeps its extents until a
    /// later barrier succeeds.
    pub local_failed: bool,
    /// Retires the unflushed writes numbered up to this one (those completed when it was issued).
    pub cover: u64,
    /// When it was issued: a peer that does not acknowledge it within `timeout` × `ko-count` is dropped
    /// like one that does not acknowledge a write (`check_link_timers`), or a hung peer disk would hold
    /// the activity log until every later write waits.
    pub issued_ms: u64,
}

impl Node {
    /// A write completed OK: FUA data is stable on both disks already; anything else keeps its
    /// activity-log references until a flush covers it.
    pub(crate) fn hold_until_flushed(&mut self, offset: u64, len: u64, extents: (u32, u32), replicated: bool, fua: bool) {
        if fua {
            self.al.end(extents.0, extents.1);
            return;
        }
        self.unflushed_seq += 1;
        let seq = self.unflushed_seq;
        self.unflushed.push_back(Unflushed { seq, offset, len, extents, replicated, done_ms: self.now_ms });
        if self.unflushed.len() >= MAX_UNFLUSHED {
            self.issue_barrier();
        }
    }

    /// Start a flush of both disks (the local one unless detached, the peer's if it takes writes).
    /// `app`: the application request to answer; `None` for a barrier.
    pub(crate) fn start_flush(&mut self, app: Option<u64>) {
        let local = !self.diskless();
        let peer = self.peer_receiving();
        if !local && !peer {
            match app {
                Some(id) => self.complete(id, Err(IoFailure::NoData(self.disk))),
                // Detached and alone: no disk holds these writes any more; nothing left to wait for.
                None => self.retire(self.unflushed_seq),
            }
            return;
        }
        let n = self.next_flush;
        self.next_flush += 1;
        if local {
            let token = self.token(Purpose::Flush { n });
            self.out.push(Action::DiskFlush { token });
        }
        if peer {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.peer_flush_seq.insert(seq, n);
            let conn = self.link.as_ref().map(|l| l.conn).unwrap_or_default();
            self.send(conn, Frame::Flush { seq });
        }
        self.flushes.insert(n, Flush { app, local_done: !local, peer_pending: peer, error: None, local_failed: false, cover: self.unflushed_seq, issued_ms: self.now_ms });
    }

    /// A barrier, unless one is in flight already or nothing waits for one.
    pub(crate) fn issue_barrier(&mut self) {
        if !self.unflushed.is_empty() && !self.flushes.values().any(|f| f.app.is_none()) {
            self.start_flush(None);
        }
    }

    pub(crate) fn barrier_on_tick(&mut self) {
        if self.unflushed.front().is_some_and(|u| self.now_ms.saturating_sub(u.done_ms) >= BARRIER_AGE_MS) {
            self.issue_barrier();
        }
    }

    pub(crate) fn flush_local_done(&mut self, n: u64, result: Result<(), String>) {
        if let Some(f) = self.flushes.get_mut(&n) {
            f.local_done = true;
            if let Err(e) = result {
                f.error = Some(format!("local flush failed: {e}"));
                f.local_failed = true;
            }
        }
        self.maybe_complete_flush(n);
    }

    pub(crate) fn on_flush_ack(&mut self, seq: u64, ok: bool) {
        let Some(n) = self.peer_flush_seq.remove(&seq) else { return };
        if let Some(f) = self.flushes.get_mut(&n) {
            f.peer_pending = false;
            // A peer whose disk was detached (on request) flushes nothing: what it may hold only in
            // a cache is marked out of sync, and this disk alone answers the flush.
            if !ok && self.peer_disk == super::state::DiskState::Diskless {
                let cover = f.cover;
                self.mark_unflushed_out_of_sync(|u| u.seq <= cover);
            } else if !ok {
                f.error = Some("the peer failed to flush its disk".into());
                // What the peer may not hold stably must be resynced to it.
                let cover = f.cover;
                self.mark_unflushed_out_of_sync(|u| u.seq <= cover);
            }
        }
        self.maybe_complete_flush(n);
    }

    pub(crate) fn maybe_complete_flush(&mut self, n: u64) {
        if !self.flushes.get(&n).is_some_and(|f| f.local_done && !f.peer_pending) {
            return;
        }
        let Some(f) = self.flushes.remove(&n) else { return };
        // Retired after a peer's error (its part is marked out of sync by then), but not after our own
        // disk's: the writes it covers may be only in its cache, and only the activity log makes a
        // crash of this node resync them from the peer. The entries stay, the barrier is retried at
        // the next tick (`barrier_on_tick`: they are old by then) and a success retires them. A disk
        // whose flushes keep failing fills the log and stalls writes: better than a silent divergence
        // (`on-io-error detach`, the default, drops such a disk instead: `local_io_failed`).
        if f.local_failed && !self.diskless() {
            self.log(true, format!("{}: local flush failed; the activity log keeps the extents it covers until a flush succeeds", self.p.resource));
        } else {
            self.retire(f.cover);
        }
        if let Some(id) = f.app {
            let result = match f.error {
                Some(e) => Err(IoFailure::Io(e)),
                None => Ok(()),
            };
            // Acknowledging a flush promises what it covers, and with blocks marked for a peer that
            // is not taking writes (acknowledged writes it may hold only in its cache, or not at all)
            // only our disk keeps that promise: the peer is behind from now on, and its generation
            // must say so before the acknowledgement goes out — else, after a power loss of both, the
            // peer looks like a replica of the same generation and can be promoted without them.
            if result.is_ok() && !self.peer_receiving() && self.bitmap.count() > 0 {
                self.ensure_new_generation("a flush was acknowledged while the peer misses marked blocks");
            }
            self.complete(id, result);
        } else if let Some(e) = f.error {
            self.log(true, format!("{}: barrier flush: {e}", self.p.resource));
        }
    }

    /// The writes up to `cover` are on stable storage (or marked out of sync): release their extents.
    fn retire(&mut self, cover: u64) {
        let mut any = false;
        while let Some(u) = self.unflushed.front().filter(|u| u.seq <= cover) {
            let (a, b) = u.extents;
            self.al.end(a, b);
            self.unflushed.pop_front();
            any = true;
        }
        if !any {
            return;
        }
        // A demoted Primary marks its activity log clean only now (see `on_secondary`): bits first.
        if self.unflushed.is_empty()
            && self.role != Role::Primary
            && self.writes.is_empty()
            && !self.diskless()
            && self.persisted.flags & (flags::AL_CLEAN | flags::PRIMARY_IND) == 0
        {
            let pages = self.bitmap.take_dirty_pages();
            self.out.push(Action::PersistBitmap(pages));
            self.persist_flags(self.persisted.flags | flags::AL_CLEAN);
        }
        self.start_waiting_writes();
    }

    /// Mark the blocks of unflushed writes that the peer took (and may have lost) out of sync.
    pub(crate) fn mark_unflushed_out_of_sync(&mut self, which: impl Fn(&Unflushed) -> bool) {
        let mut marked = Vec::new();
        for u in self.unflushed.iter_mut().filter(|u| u.replicated && which(u)) {
            u.replicated = false;
            marked.push((u.offset, u.len));
        }
        for (o, l) in marked {
            self.bitmap.set_range(o, l);
        }
    }
}
