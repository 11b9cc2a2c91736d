//! Protocol A (issue 18): asynchronous replication for a DR peer on a slow link.
//!
//! **Primary.** An application write is acknowledged once the local disk completed it and its Data
//! frames are queued to the peer (the `Send` actions were emitted before the disk write could
//! complete), without waiting for the peer's WriteAck. The write stays in `Node::writes` until that
//! WriteAck: it keeps its activity-log references, the link's ko-count timer watches it, and if the link
//! drops first its blocks are marked out of sync exactly like protocol C's writes in flight
//! (`peer_lost_for_inflight`). Only then does it join `unflushed` (`barrier.rs`). Overlapping writes still
//! wait for the peer's WriteAck of the earlier one (the conflict rule of `datapath.rs` is unchanged), so
//! the peer applies them in our order too.
//!
//! What stays synchronous, on purpose: FUA writes and application flushes. A FUA write completes on the
//! peer's WriteAck; a flush waits until every early-acknowledged write is acknowledged by the peer, then
//! flushes both disks as under protocol C. So the flush contract holds on an A link too: a completed flush
//! (or FUA write) is stable on both disks, and a forced failover to the A peer loses at most writes
//! acknowledged since the last completed flush.
//!
//! **Ordering at the peer (epochs).** Data frames of writes issued concurrently may complete on the
//! peer's disk in any order; that is fine while none of them was acknowledged before another was
//! issued. Once a write is acknowledged early, the next Data frame we send carries [`DATA_EPOCH`]: the
//! peer issues it (and everything received after it) only when every earlier write for the peer has
//! completed on its disk — DRBD's epochs with a barrier between them. So the peer's disk always holds a
//! past state of ours that respects what the application could observe: if it holds a write, it holds
//! every write acknowledged before that write was issued (prefix-consistent).
//! Before issuing the first write of a new epoch the peer also flushes its disk if a write for the
//! peer completed since its last such flush (DRBD's write-ordering `flush`): a volatile write cache
//! (the page cache is one) may write back in any order, so without it a power loss *of the peer* could
//! keep a later epoch and lose an earlier one. With it the peer's media after a power loss hold every
//! epoch before the newest completely (the newest may be partial or torn, as any unflushed write): still
//! a prefix (`replicator/tests/protocol_a_sim.rs` cuts the peer's power with a volatile cache). The
//! Primary marks the writes no flush covered for resync when the link drops, as under protocol C.
//!
//! **Lag bound** (`net.max-lag`, `net.max-lag-time`, `net.on-lag`): the bytes of writes sent and not yet
//! acknowledged by the peer, and the age of the oldest. A write that would complete beyond the bound is
//! not acknowledged early: it completes on the peer's WriteAck (C-like backpressure; `on-lag: wait`). With
//! `on-lag: disconnect` the next tick beyond the bound drops the link (its writes complete locally,
//! marked out of sync, and the resync after the reconnect sends them — DRBD's `on-congestion disconnect`).
//!
//! **Negotiation.** The protocol travels in the Params frame's protocol byte (present since version 1):
//! both sides must use the same one, or the handshake is refused naming both. A release that knows only C
//! refuses `A` itself, so [`DATA_EPOCH`] never reaches a peer that does not understand it, and no new
//! protocol version is needed (recorded fixtures unchanged).
//!
//! **Failover.** A Secondary of an A resource may miss the last writes its Primary acknowledged: it is
//! promoted while the peer is not connected only with `--force` or `net.allow-async-failover: on`
//! ([`Node::async_promotion_guard`]).

use super::node::{Action, Node, Purpose};
use super::state::Role;
use crate::meta::superblock::flags;
use crate::wire::frame::DATA_FUA;
use bytes::Bytes;
use std::collections::VecDeque;

/// Data flag: the first write of a new epoch (the peer completes every earlier write first). Sent only
/// on protocol-A links, which a release without it refuses in the handshake.
pub const DATA_EPOCH: u32 = 2;

/// What to do when the lag reaches the bound (`net.on-lag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLag {
    /// Writes beyond the bound complete on the peer's acknowledgement (backpressure, like protocol C).
    #[default]
    Wait,
    /// Drop the link and go on alone; the writes are marked out of sync and resynced at reconnect.
    Disconnect,
}

/// The settings of an asynchronous (protocol A) resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncOptions {
    /// Bytes sent and not yet acknowledged by the peer (`net.max-lag`).
    pub max_lag_bytes: u64,
    /// Age of the oldest write the peer has not acknowledged (`net.max-lag-time`); `None` = no bound.
    pub max_lag_ms: Option<u64>,
    pub on_lag: OnLag,
    /// `net.allow-async-failover`: promote without `--force` while the peer is not connected.
    pub allow_failover: bool,
    /// `net.epoch-flush` (the peer's own setting): flush the disk at an epoch boundary when writes
    /// completed since the last such flush. `false` only for a disk without a volatile write cache.
    pub epoch_flush: bool,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        AsyncOptions { max_lag_bytes: 64 << 20, max_lag_ms: None, on_lag: OnLag::Wait, allow_failover: false, epoch_flush: true }
    }
}

/// The replication protocol of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplProtocol {
    /// Synchronous: a write completes when both disks have it.
    #[default]
    C,
    /// Asynchronous: a write completes when the local disk has it and it is queued to the peer.
    A(AsyncOptions),
}

impl ReplProtocol {
    /// The Params frame's protocol byte.
    pub fn wire_byte(self) -> u8 {
        match self {
            ReplProtocol::C => b'C',
            ReplProtocol::A(_) => b'A',
        }
    }

    pub fn name(self) -> char {
        self.wire_byte() as char
    }

    pub fn is_async(self) -> bool {
        matches!(self, ReplProtocol::A(_))
    }
}

/// A Data frame the peer holds back until the writes of the epochs before it completed.
#[derive(Debug, Clone)]
pub(crate) struct HeldPeerWrite {
    pub conn: u64,
    pub seq: u64,
    pub offset: u64,
    pub flags: u32,
    pub data: Bytes,
}

/// Per-node protocol-A state (both roles).
#[derive(Debug, Default)]
pub(crate) struct AsyncState {
    /// Primary: a write was acknowledged early since the last Data frame sent (the next one opens an
    /// epoch).
    pub epoch_due: bool,
    /// Primary: application flushes waiting until no early-acknowledged write is pending at the peer.
    pub flushes_waiting: VecDeque<u64>,
    /// Peer side: writes for the peer on the disk now.
    pub peer_writes_on_disk: usize,
    /// Peer side: received Data frames waiting for an earlier epoch to complete, in arrival order.
    pub held: VecDeque<HeldPeerWrite>,
    /// Peer side: a write for the peer completed since the last epoch flush (it may sit in a cache).
    pub unflushed: bool,
    /// Peer side: an epoch flush is on the disk; the next epoch waits for it.
    pub flushing: bool,
}

impl Node {
    fn async_opts(&self) -> Option<AsyncOptions> {
        match self.p.protocol {
            ReplProtocol::A(o) => Some(o),
            ReplProtocol::C => None,
        }
    }

    /// Bytes sent to the peer and not yet acknowledged, and when the oldest of them was sent.
    pub(crate) fn async_lag(&self) -> (u64, Option<u64>) {
        let pending = self.writes.values().filter(|w| w.peer_pending > 0);
        let bytes = pending.clone().map(|w| w.len).sum();
        (bytes, pending.map(|w| w.sent_ms).min())
    }

    /// Status (issue 18): the early-acknowledged writes the peer has not acknowledged yet — what a
    /// failover to it would lose now. Not [`Self::async_lag`], which bounds the lag and also counts
    /// the writes still waiting for the peer before completing (nothing acknowledged is at stake there).
    pub(crate) fn async_lag_status(&self) -> Option<super::snapshot::AsyncLag> {
        self.async_opts()?;
        let exposed = self.writes.values().filter(|w| w.early_acked && w.peer_pending > 0);
        let mut lag = super::snapshot::AsyncLag::default();
        let mut oldest: Option<u64> = None;
        for w in exposed {
            lag.bytes += w.len;
            lag.writes += 1;
            oldest = Some(oldest.map_or(w.sent_ms, |o| o.min(w.sent_ms)));
        }
        lag.oldest_age_ms = oldest.map_or(0, |t| self.now_ms.saturating_sub(t));
        Some(lag)
    }

    fn lag_beyond(&self, o: &AsyncOptions) -> bool {
        let (bytes, oldest) = self.async_lag();
        bytes > o.max_lag_bytes || o.max_lag_ms.zip(oldest).is_some_and(|(max, t)| self.now_ms.saturating_sub(t) > max)
    }

    /// May this write (local part done, OK) be acknowledged before the peer's WriteAck?
    pub(crate) fn may_ack_early(&mut self, id: u64) -> bool {
        let Some(o) = self.async_opts() else { return false };
        let Some(w) = self.writes.get(&id) else { return false };
        if w.early_acked || w.fua || w.peer_pending == 0 || !w.replicated || w.local_error.is_some() || self.diskless() {
            return false;
        }
        if self.lag_beyond(&o) {
            self.stats.async_lag_waits += 1;
            return false;
        }
        true
    }

    /// Flags of the first Data frame of a write: opens an epoch after an early acknowledgement.
    pub(crate) fn epoch_flag(&mut self) -> u32 {
        if std::mem::take(&mut self.proto_a.epoch_due) { DATA_EPOCH } else { 0 }
    }

    /// An application flush: under protocol A, first wait for every early-acknowledged write to reach
    /// the peer, so the flush covers it on both disks.
    pub(crate) fn app_flush_or_wait(&mut self, id: u64) {
        if self.writes.values().any(|w| w.early_acked && w.peer_pending > 0) {
            self.proto_a.flushes_waiting.push_back(id);
        } else {
            self.start_flush(Some(id));
        }
    }

    /// Start the flushes that waited for early-acknowledged writes, once none is pending at the peer.
    pub(crate) fn start_waiting_flushes(&mut self) {
        if self.proto_a.flushes_waiting.is_empty() || self.writes.values().any(|w| w.early_acked && w.peer_pending > 0) {
            return;
        }
        while let Some(id) = self.proto_a.flushes_waiting.pop_front() {
            self.start_flush(Some(id));
        }
    }

    /// Tick: with `on-lag: disconnect`, a lag beyond the bound drops the link.
    pub(crate) fn lag_on_tick(&mut self) {
        let Some(o) = self.async_opts() else { return };
        if o.on_lag != OnLag::Disconnect || self.role != Role::Primary || !self.peer_receiving() || !self.lag_beyond(&o) {
            return;
        }
        let (bytes, _) = self.async_lag();
        self.drop_link(&format!("protocol A lag beyond the bound ({bytes} bytes unacknowledged; on-lag disconnect): going on alone, the writes are marked out of sync"), true);
    }

    /// Promotion of a Secondary of a protocol-A resource while its peer is not connected: it may miss
    /// writes the old Primary acknowledged. Allowed with `force`, with `net.allow-async-failover`, or
    /// if this node itself was the Primary when it went down (it has what it acknowledged).
    pub(crate) fn async_promotion_guard(&self, force: bool) -> Result<(), String> {
        let Some(o) = self.async_opts() else { return Ok(()) };
        let peer_connected = self.link.as_ref().is_some_and(|l| l.stage == super::node::Stage::Up);
        if force || o.allow_failover || peer_connected || self.persisted.flags & flags::PRIMARY_IND != 0 || self.crashed_primary {
            return Ok(());
        }
        Err("protocol A (asynchronous): this Secondary may miss the last writes its Primary acknowledged and the peer is not connected; \
             promote with --force to accept that, or set net.allow-async-failover: on"
            .into())
    }

    // ---- the receiving side ------------------------------------------------------------------------

    /// A Data frame from the peer: issue it, or hold it until the earlier epochs completed (and, if
    /// any of their writes completed since the last epoch flush, until a flush made them stable).
    pub(crate) fn peer_data_ordered(&mut self, w: HeldPeerWrite) {
        self.proto_a.held.push_back(w);
        self.issue_held_peer_writes();
    }

    fn issue_peer_write(&mut self, w: HeldPeerWrite) {
        let len = w.data.len() as u64;
        let fua = w.flags & DATA_FUA != 0;
        self.proto_a.peer_writes_on_disk += 1;
        let token = self.token(Purpose::PeerWrite { conn: w.conn, seq: w.seq, offset: w.offset, len, fua });
        self.out.push(Action::DiskWrite { token, offset: w.offset, data: w.data, fua });
    }

    /// Issue held writes in arrival order up to the next epoch boundary that cannot be crossed yet:
    /// writes of the epoch before it still on the disk, or an epoch flush needed or running.
    fn issue_held_peer_writes(&mut self) {
        while let Some(front) = self.proto_a.held.front() {
            if front.flags & DATA_EPOCH != 0 {
                if self.proto_a.peer_writes_on_disk > 0 || self.proto_a.flushing {
                    return;
                }
                if self.proto_a.unflushed && !self.diskless() && self.async_opts().is_none_or(|o| o.epoch_flush) {
                    // Nothing for the peer is on the disk now, so this flush covers every write of
                    // the earlier epochs.
                    self.proto_a.unflushed = false;
                    self.proto_a.flushing = true;
                    let token = self.token(Purpose::EpochFlush);
                    self.out.push(Action::DiskFlush { token });
                    return;
                }
            }
            let Some(w) = self.proto_a.held.pop_front() else { return };
            if self.up_conn() != Some(w.conn) {
                continue; // its connection is gone: the Primary marked it out of sync
            }
            self.issue_peer_write(w);
        }
    }

    /// A write for the peer left the disk (whatever the result): issue what waited for it.
    pub(crate) fn peer_write_left_disk(&mut self) {
        self.proto_a.peer_writes_on_disk = self.proto_a.peer_writes_on_disk.saturating_sub(1);
        self.proto_a.unflushed = true;
        self.issue_held_peer_writes();
    }

    /// The flush at an epoch boundary finished. A failed one is reported (the disk is failing; the
    /// write-ordering after a power loss is then not assured) and the next epoch goes on: holding it
    /// for good would stall the link, and the local error policy deals with the disk.
    pub(crate) fn epoch_flush_done(&mut self, result: Result<(), String>) {
        self.proto_a.flushing = false;
        if let Err(e) = result {
            self.log(true, format!("{}: flush at a protocol-A epoch boundary failed: {e}", self.p.resource));
        }
        self.issue_held_peer_writes();
    }

    /// The link dropped: held writes of it will never be acknowledged (the Primary marks them). A
    /// Secondary that lost an established link says at once whether it may be promoted without its
    /// peer, so an operator reading the log after a failed-over-or-not Primary knows why.
    pub(crate) fn async_link_lost(&mut self, was_up: bool) {
        self.proto_a.held.clear();
        let Some(o) = self.async_opts() else { return };
        if !was_up || self.role == Role::Primary {
            return;
        }
        let msg = match self.async_promotion_guard(false) {
            Err(_) => format!(
                "{}: protocol A: the peer is gone; this Secondary may miss the last writes it acknowledged, so it is not promoted without `haadm primary --force` (net.allow-async-failover: off)",
                self.p.resource
            ),
            Ok(()) if o.allow_failover => format!(
                "{}: protocol A: the peer is gone; this Secondary may be promoted (net.allow-async-failover: on) although it may miss the last writes the peer acknowledged",
                self.p.resource
            ),
            Ok(()) => return,
        };
        self.log(true, msg);
    }

    /// Both sides must replicate with the same protocol.
    pub(crate) fn check_peer_protocol(&self, byte: u8) -> Result<(), String> {
        if byte == self.p.protocol.wire_byte() {
            return Ok(());
        }
        let theirs = if byte.is_ascii_graphic() { (byte as char).to_string() } else { format!("code {byte}") };
        Err(format!(
            "replication protocol mismatch: this node uses protocol {}, the peer uses protocol {theirs}; set the same `protocol` on both nodes",
            self.p.protocol.name()
        ))
    }
}

#[cfg(test)]
#[path = "protocol_a_tests.rs"]
mod tests;
