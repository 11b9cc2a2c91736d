//! Detaching the local disk: `on-io-error detach` (DRBD's default) after a local disk error, or the
//! administrator's `detach` (a disk to be replaced or repaired). Either way the node drops its disk
//! and becomes Diskless. A Primary with an established, UpToDate peer goes on serving: every read and
//! write goes to the peer, and a request that failed locally is retried there (DRBD's "masking I/O
//! errors"). After an error, any other node stops replicating (StandAlone) and fails the requests that
//! would need its disk.
//!
//! A requested detach ([`Input::Detach`](super::node::Input::Detach)) differs: the disk is good. It is
//! refused where it would leave no copy of the data (a Primary without an established UpToDate peer,
//! a resync or verify running). The last metadata this disk gets is the current bitmap and a
//! superblock marked Outdated when the peer goes on without it; then the engine closes the data and
//! metadata files once the disk requests issued before are done ([`Action::ReleaseDisk`]). A Secondary
//! stays connected: its Primary sees the peer disk Diskless and records every write in its bitmap as
//! for a disconnected peer (a new generation on the first one), so `attach` (down + up on the same
//! disk) resyncs only what was written meanwhile; a freshly created disk gets a full sync.
//!
//! Invariants:
//! - A Diskless node issues no data I/O and no metadata writes (the disk is not trusted any more, or is
//!   being taken away; [`Node::step`] drops persist actions) except those issued as it detaches: after
//!   an error a best-effort superblock write marking the disk Outdated where the peer goes on without
//!   it (so that a restart on the stale disk cannot promote it), on request the bitmap and superblock.
//! - A Diskless Primary acknowledges a write only when the peer acknowledged it stable; without the
//!   peer every request fails (there is no copy it could be served from).
//! - The peer, told that the Primary's disk is gone, starts a new data generation and marks every block
//!   out of sync, bitmap written before the superblock: the old disk, if it ever returns, can only be
//!   the target of a full resync, never a source.
//! - The Primary of a detached Secondary answers nothing from it any more: data it refuses (NegAck)
//!   or flushes it cannot do are marked out of sync, never failed upward, and the link stays.
//! - A Diskless node refuses new replication connections (`down` + `up` with a repaired or replaced
//!   disk — `attach` — brings it back).

use super::node::{Action, Node};
use super::state::{ConnState, DiskState, ReplState, Role};
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;
use std::fmt;

/// Why a disk is Diskless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachCause {
    /// `haadm detach`: the disk is good, its files are closed.
    Requested,
    /// `on-io-error detach` after a local disk error.
    IoError,
}

impl fmt::Display for DetachCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DetachCause::Requested => "detached on request",
            DetachCause::IoError => "detached after an I/O error",
        })
    }
}

impl Node {
    pub(crate) fn diskless(&self) -> bool {
        self.disk == DiskState::Diskless
    }

    /// A local disk request (`what`) failed with `error`. With `detach` configured the disk is dropped;
    /// returns whether the node is Diskless now (the caller then masks or fails the request).
    pub(crate) fn local_io_failed(&mut self, what: &str, error: &str) -> bool {
        if self.diskless() {
            return true;
        }
        if !self.p.detach_on_io_error {
            return false;
        }
        let serve = self.role == Role::Primary
            && self.peer_receiving()
            && self.repl == ReplState::Established
            && self.peer_disk == DiskState::UpToDate;
        // The last metadata write this disk gets (kept by `step`, see `detach_mark`): Outdated where the
        // peer goes on without it. Not on a Primary that stops serving: its disk holds the newest data
        // (what it acknowledged while disconnected), and a restart on it must be able to promote it.
        if serve || self.role != Role::Primary {
            self.persist_flags(self.persisted.flags | flags::OUTDATED);
        }
        self.detach_mark = Some(self.out.len());
        self.disk = DiskState::Diskless;
        self.detached = Some(DetachCause::IoError);
        self.last_error = Some(format!("local disk detached after an I/O error ({what}: {error})"));
        if let Some(v) = self.verify.take() {
            self.log(true, format!("{}: online verify aborted at {} KiB (local disk detached)", self.p.resource, v.cursor / 1024));
        }
        let res = self.p.resource.clone();
        if serve {
            self.log(true, format!("{res}: local disk I/O error ({what}: {error}): disk detached (on-io-error detach); reads and writes are served by the peer"));
            self.broadcast_state();
        } else {
            self.log(true, format!("{res}: local disk I/O error ({what}: {error}): disk detached (on-io-error detach); no up-to-date peer serves this node, so its requests fail"));
            if let Some(conn) = self.link.as_ref().map(|l| l.conn) {
                // The peer keeps trying to connect: once this node is back with a working disk they
                // resync without an operator on the other side.
                self.send(conn, Frame::Abort { code: super::link::ABORT_RETRY, reason: "the peer's disk detached after an I/O error".into() });
                self.drop_link("local disk detached after an I/O error", false);
            }
            self.out.push(Action::SetConnecting(false));
            self.set_conn(ConnState::StandAlone);
            self.start_waiting_writes();
        }
        self.changed();
        true
    }

    /// Disk requests issued and not completed: the engine closes a released disk only at zero.
    pub fn disk_requests_in_flight(&self) -> usize {
        self.tokens.len()
    }

    /// Why the disk is Diskless (None while it is attached).
    pub fn detached(&self) -> Option<DetachCause> {
        self.detached
    }

    /// Whether `detach` may run now, and why not.
    pub fn check_detach(&self) -> Result<(), String> {
        if let Some(cause) = self.detached.filter(|_| self.diskless()) {
            return Err(format!("the local disk is already {cause}; `haadm attach` attaches it again"));
        }
        if matches!(self.repl, ReplState::SyncSource | ReplState::SyncTarget | ReplState::PausedSyncS | ReplState::PausedSyncT | ReplState::WFBitMapS | ReplState::WFBitMapT) {
            return Err(format!("a resync is running (replication {}): wait for it (`haadm wait-sync`), or `haadm disconnect` first", self.repl));
        }
        if self.verify.is_some() || self.peer_verifying {
            return Err("an online verify is running: wait for it to end".into());
        }
        if self.role == Role::Primary && !self.peer_holds_everything() {
            return Err(format!(
                "this node is Primary and its peer is not connected with an UpToDate disk (connection {}, replication {}, peer disk {}): detaching would leave no copy of the data",
                self.conn, self.repl, self.peer_disk
            ));
        }
        Ok(())
    }

    /// The peer is connected, established and UpToDate: it holds every acknowledged write.
    fn peer_holds_everything(&self) -> bool {
        self.up_conn().is_some() && self.repl == ReplState::Established && self.peer_disk == DiskState::UpToDate
    }

    /// `detach` on request: see the module documentation.
    pub(crate) fn on_detach_request(&mut self) {
        let res = self.p.resource.clone();
        if let Err(e) = self.check_detach() {
            self.log(true, format!("{res}: detach refused: {e}"));
            return;
        }
        let peer_goes_on = self.peer_holds_everything();
        // The last metadata this disk gets (kept by `step` through `detach_mark`): bitmap first, then
        // the superblock, Outdated where the peer goes on without this disk (it can never be promoted
        // over the newer data; the handshake at `attach` makes it the SyncTarget).
        let pages = self.bitmap.take_dirty_pages();
        if !pages.is_empty() {
            self.out.push(Action::PersistBitmap(pages));
        }
        let fl = if peer_goes_on { self.persisted.flags | flags::OUTDATED } else { self.persisted.flags };
        self.persist_flags(fl);
        self.detach_mark = Some(self.out.len());
        self.disk = DiskState::Diskless;
        self.detached = Some(DetachCause::Requested);
        self.last_error = None;
        self.out.push(Action::ReleaseDisk);
        let how = if self.role == Role::Primary {
            "reads and writes are served by the peer"
        } else if peer_goes_on || self.up_conn().is_some() {
            "still connected; the peer records what changes meanwhile"
        } else {
            "not connected"
        };
        let outdated = if peer_goes_on { ", marked Outdated" } else { "" };
        self.log(true, format!("{res}: local disk detached on request{outdated}; {how}; its files are closed once in-flight requests are done"));
        if self.up_conn().is_some() {
            self.broadcast_state();
        } else {
            // A handshake cannot finish without a disk: stop it and stay StandAlone until `attach`.
            if self.link.is_some() {
                self.drop_link("local disk detached on request", false);
            }
            self.out.push(Action::SetConnecting(false));
            self.set_conn(ConnState::StandAlone);
        }
        self.changed();
    }

    /// The peer's State frame says its disk is gone (`requested`: by its administrator). If this node
    /// is the UpToDate Secondary of a Primary that detached, it now holds the only copy: start a new
    /// generation and mark everything, so the peer's old disk can only come back as the target of a
    /// full resync. If this node is the Primary, writes go on here alone and are recorded in the
    /// bitmap (a new generation on the first), as for a disconnected peer.
    pub(crate) fn on_peer_detached(&mut self, requested: bool) {
        let how = if requested { "on request" } else { "after an I/O error" };
        let res = self.p.resource.clone();
        if self.role == Role::Primary {
            self.log(true, format!("{res}: the peer's disk detached ({how}); writes are recorded in the bitmap until it attaches again"));
            // The peer flushes what it acknowledged before closing its disk, but nothing here proves
            // it did: what it may hold only in a cache is resynced.
            self.mark_unflushed_out_of_sync(|_| true);
            return;
        }
        self.log(true, format!("{res}: the peer's disk detached ({how}); this node holds the only up-to-date copy"));
        if self.peer_role != Role::Primary || self.disk != DiskState::UpToDate {
            return;
        }
        // Bitmap first: a crash between the two writes must not leave a new generation with an
        // incomplete bitmap.
        self.bitmap.set_all();
        self.bitmap.mark_all_pages_dirty();
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        if self.persisted.uuids.bitmap == 0 {
            let fresh = self.fresh_uuid();
            self.persisted.uuids.new_current(fresh, false);
        }
        self.persist_flags(self.persisted.flags);
        self.changed();
    }
}
