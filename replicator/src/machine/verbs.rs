//! Administrative verbs on the state machine: primary (also forced, the source of a full sync),
//! secondary, connect/disconnect, outdate, invalidate/invalidate-remote, down.

use super::node::{Action, IoFailure, Node, Stage};
use super::state::{ConnState, DiskState, ReplState, Role};
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;

impl Node {
    /// Result of a verb, for the control API (checked before the verb is fed as an input).
    pub fn check_primary(&self, force: bool) -> Result<(), String> {
        if self.role == Role::Primary {
            return Ok(());
        }
        if self.peer_role == Role::Primary {
            return Err("the peer is Primary; demote it first (single-primary mode)".into());
        }
        self.async_promotion_guard(force)?;
        if self.disk == DiskState::UpToDate || force {
            if self.disk == DiskState::Diskless {
                return Err("no local disk".into());
            }
            if force && self.repl == ReplState::SyncTarget {
                return Err("a resync into this disk is running; it is Inconsistent until the resync ends".into());
            }
            return Ok(());
        }
        Err(match self.disk {
            DiskState::Inconsistent => "local disk is Inconsistent: refusing to promote (use --force only to make this node's data the source of an initial sync)".into(),
            DiskState::Outdated => "local disk is Outdated: the peer has newer data; connect to it, or use --force to override".into(),
            d => format!("local disk is {d}, not UpToDate: the peer may have newer data; connect to it first, or use --force"),
        })
    }

    /// Whether `connect` may run now, and why not.
    pub fn check_connect(&self) -> Result<(), String> {
        if self.p.peer.is_none() {
            return Err("this resource has no peer configured".into());
        }
        if self.diskless() {
            return Err("the local disk is detached; bring the resource down and up with a working disk".into());
        }
        Ok(())
    }

    pub(crate) fn on_connect_verb(&mut self, discard_my_data: bool) {
        if let Err(e) = self.check_connect() {
            self.log(true, format!("{}: connect refused: {e}", self.p.resource));
            return;
        }
        self.discard_my_data = discard_my_data;
        self.split_brain = false;
        // A link open only to be resolved (`split_brain.rs`) would hold this node to its old role in
        // it: start afresh so the handshake carries this connect's intent.
        if let Some(l) = self.link.take_if(|l| l.resolve_only) {
            self.out.push(Action::Close { conn: l.conn });
        }
        self.last_error = None;
        if self.conn == ConnState::StandAlone {
            self.set_conn(ConnState::Connecting);
            self.out.push(Action::SetConnecting(true));
        }
    }

    pub(crate) fn on_disconnect_verb(&mut self) {
        // Also ends the split-brain resolution probing (`split_brain.rs`).
        self.split_brain_facts = None;
        self.resolve_keep_me = false;
        self.out.push(Action::SetConnecting(false));
        if let Some(l) = self.link.as_ref() {
            let conn = l.conn;
            self.send(conn, Frame::Abort { code: super::link::ABORT_RETRY, reason: "peer disconnected by administrator".into() });
            self.drop_link("disconnected by administrator", false);
        }
        self.set_conn(ConnState::StandAlone);
    }

    pub(crate) fn on_primary(&mut self, force: bool) {
        if let Err(e) = self.check_primary(force) {
            self.log(true, format!("primary refused: {e}"));
            return;
        }
        if self.role == Role::Primary {
            return;
        }
        if self.disk != DiskState::UpToDate {
            // Forced: this node's data becomes the reference; the peer gets everything.
            self.log(true, format!("primary --force: local disk was {}; it becomes the sync source for a full sync", self.disk));
            let fresh = self.fresh_uuid();
            let mut u = self.persisted.uuids;
            u.new_current_for_full_sync(fresh, true);
            self.bitmap.set_all();
            self.bitmap.mark_all_pages_dirty();
            self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
            self.disk = DiskState::UpToDate;
            self.role = Role::Primary;
            let fl = (self.persisted.flags | flags::CONSISTENT | flags::WAS_UP_TO_DATE | flags::PRIMARY_IND)
                & !(flags::OUTDATED | flags::AL_CLEAN);
            self.persisted.uuids = u;
            self.persist_flags(fl);
            // Renegotiate so that the handshake makes us the full-sync source.
            if self.link.is_some() {
                self.drop_link("renegotiating after a forced promotion", true);
            }
        } else {
            self.role = Role::Primary;
            self.persisted.uuids.set_role_bit(true);
            // From here on the activity log is live: a crash must replay it.
            self.persist_flags((self.persisted.flags | flags::PRIMARY_IND) & !flags::AL_CLEAN);
        }
        self.broadcast_state();
        self.changed();
        self.resync_marked_from_primary();
    }

    /// Blocks marked out of sync on an established link of one generation only move at a handshake,
    /// and only from a Primary (see `handshake_decide`). When a Primary appears, renegotiate so that
    /// they move now instead of staying marked until the next disconnect.
    pub(crate) fn resync_marked_from_primary(&mut self) {
        // Not with a detached disk on either side: there is nothing to resync into or from yet.
        let established = self.repl == ReplState::Established
            && self.link.as_ref().is_some_and(|l| l.stage == Stage::Up)
            && !self.diskless()
            && self.peer_disk != DiskState::Diskless;
        let someone_primary = self.role == Role::Primary || self.peer_role == Role::Primary;
        if established && someone_primary && self.bitmap.count() > 0 && self.verify.is_none() {
            let n = self.bitmap.count();
            self.drop_link(&format!("renegotiating: {n} block(s) marked out of sync and a Primary to resync them from"), true);
        }
    }

    pub(crate) fn on_secondary(&mut self) {
        if self.role != Role::Primary {
            return;
        }
        self.fail_held("demoted while write acknowledgements were held");
        if !self.writes.is_empty() || !self.waiting.is_empty() || self.pr_inflight.is_some() || !self.pr_queue.is_empty() {
            self.log(true, "secondary refused: writes are still in flight".into());
            return;
        }
        self.role = Role::Secondary;
        self.persisted.uuids.set_role_bit(false);
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        let mut fl = self.persisted.flags & !flags::PRIMARY_IND;
        if self.unflushed.is_empty() {
            fl |= flags::AL_CLEAN;
        } else {
            // Acknowledged writes may still be in a cache (here or on the peer): the log must go on
            // naming their extents until a flush retires them (`retire` marks it clean then).
            self.issue_barrier();
        }
        self.persist_flags(fl);
        self.broadcast_state();
        self.changed();
    }

    /// Whether `invalidate` (or `-remote`) may run now, and why not.
    pub fn check_invalidate(&self, remote: bool) -> Result<(), String> {
        if self.conn != ConnState::Connected || self.repl != ReplState::Established || self.verify.is_some() {
            return Err(format!("needs an established connection with no resync or verify running (connection {}, replication {})", self.conn, self.repl));
        }
        if self.disk != DiskState::UpToDate || self.peer_disk != DiskState::UpToDate {
            return Err(format!("both disks must be UpToDate (local {}, peer {})", self.disk, self.peer_disk));
        }
        match (remote, self.role) {
            (false, Role::Primary) => Err("this node is Primary: its disk cannot be made Inconsistent under the application (demote it, or run invalidate-remote here)".into()),
            (true, r) if r != Role::Primary => Err("invalidate-remote runs on the Primary (its data becomes the source)".into()),
            _ => Ok(()),
        }
    }

    /// Marks every block out of sync and reconnects. `invalidate`: this disk turns Inconsistent first, so
    /// the handshake's disk-state rule makes it the SyncTarget and the peer sends everything.
    /// `invalidate-remote` (on the Primary): same generation with every block marked, so the
    /// handshake resyncs everything from the Primary into the peer.
    pub(crate) fn on_invalidate(&mut self, remote: bool) {
        if let Err(e) = self.check_invalidate(remote) {
            self.log(true, format!("{}: invalidate refused: {e}", self.p.resource));
            return;
        }
        self.bitmap.set_all();
        self.bitmap.mark_all_pages_dirty();
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        if !remote {
            self.disk = DiskState::Inconsistent;
            self.persist_flags(self.persisted.flags & !(flags::CONSISTENT | flags::WAS_UP_TO_DATE));
        }
        let what = if remote { "the peer's disk is resynced fully from here" } else { "this disk is resynced fully from the peer" };
        self.log(true, format!("{}: invalidate: {what}", self.p.resource));
        self.drop_link(if remote { "invalidate-remote" } else { "invalidate" }, true);
    }

    pub(crate) fn on_outdate(&mut self) {
        if self.role == Role::Primary || !self.disk.is_consistent() {
            self.log(true, format!("outdate refused: role {} disk {}", self.role, self.disk));
            return;
        }
        self.disk = DiskState::Outdated;
        self.persist_flags(self.persisted.flags | flags::OUTDATED);
        self.broadcast_state();
        self.changed();
    }

    pub(crate) fn on_down(&mut self) {
        self.fail_held("going down while write acknowledgements were held");
        self.on_disconnect_verb();
        self.fail_waiting(IoFailure::Down);
        for (id, _) in std::mem::take(&mut self.pr_queue) {
            self.out.push(Action::Complete { id, result: Err(IoFailure::Down) });
        }
        if self.role == Role::Primary && self.writes.is_empty() {
            self.role = Role::Secondary;
            self.persisted.uuids.set_role_bit(false);
        }
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        let mut fl = self.persisted.flags;
        if self.role == Role::Secondary && self.writes.is_empty() {
            fl &= !flags::PRIMARY_IND;
            // Not clean while acknowledged writes may be only in a cache: a power loss after this
            // stop must still resync their extents (see `barrier.rs`).
            if self.unflushed.is_empty() {
                fl |= flags::AL_CLEAN;
            }
        }
        self.persist_flags(fl);
        self.changed();
    }
}
