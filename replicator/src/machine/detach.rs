//! `on-io-error detach` (DRBD's default): after a local disk error the node drops its disk and becomes
//! Diskless. A Primary with an established, UpToDate peer goes on serving: every read and write goes to
//! the peer, and the request that failed is retried there (DRBD's "masking I/O errors"). Any other node
//! stops replicating (StandAlone) and fails the requests that would need its disk.
//!
//! Invariants:
//! - A Diskless node issues no data I/O and no metadata writes (the disk is not trusted any more;
//!   [`Node::step`] drops persist actions) except one, issued as it detaches when the peer goes on
//!   without this disk: a best-effort superblock write marking the disk Outdated, so that if the
//!   metadata still takes writes (external meta-disk, or an error confined to the data area) a restart
//!   on the stale disk cannot promote it.
//! - A Diskless Primary acknowledges a write only when the peer acknowledged it stable; without the
//!   peer every request fails (there is no copy it could be served from).
//! - The peer, told that the Primary's disk is gone, starts a new data generation and marks every block
//!   out of sync, bitmap written before the superblock: the old disk, if it ever returns, can only be
//!   the target of a full resync, never a source.
//! - A Diskless node refuses new replication connections (`down` + `up` with a repaired or replaced
//!   disk, then `connect`, brings it back).

use super::node::{Action, Node};
use super::state::{ConnState, DiskState, ReplState, Role};
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;

impl Node {
    pub(crate) fn diskless(&self) -> bool {
        self.disk == DiskState::Diskless
    }

    /// A local disk request (`what`) failed with `error`. With `detach` configured the disk is dropped;
    /// returns whether the node is Diskless now (the caller then masks or fails the request).
    pub(crate) fn local_io_failed(&mut self, what: &str, error: &str) -> bool {
        if !self.p.detach_on_io_error {
            return false;
        }
        if self.diskless() {
            return true;
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

    /// The peer's State frame says its disk is gone. If this node is the UpToDate Secondary of a
    /// Primary that detached, it now holds the only copy: start a new generation and mark everything,
    /// so the peer's old disk can only come back as the target of a full resync.
    pub(crate) fn on_peer_detached(&mut self) {
        self.log(true, format!("{}: the peer's disk detached; this node holds the only up-to-date copy", self.p.resource));
        if self.role == Role::Primary || self.disk != DiskState::UpToDate {
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
