//! `new-current-uuid [--clear-bitmap]` (issue 15), DRBD's verb of the same name.
//!
//! `--clear-bitmap` skips the initial sync of two fresh disks that already hold the same bytes (zeroed
//! or thin): on an established link where both disks are Inconsistent and still of the just-created
//! generation (no sync ever started), this node makes a new current UUID, clears its bitmap, turns
//! UpToDate and sends its generations to the peer with [`UF_SKIP_INITIAL_SYNC`]; the peer, if it is
//! still in that state too, adopts the tuple, clears its bitmap and turns UpToDate (its State frame
//! tells us). A peer no longer in that state drops the link instead, and the handshake then runs the
//! ordinary full sync from this node (rule 30): never two UpToDate disks that were not made equal.
//! Older peers ignore the flag and stay Inconsistent; `status` shows it, and a reconnect syncs fully.
//!
//! Without `--clear-bitmap` the current UUID is rotated (the old one becomes the bitmap UUID): a
//! new data generation, e.g. before taking a backup. Refused while connected (the peer would see a
//! generation it does not share; DRBD sends it one through a resync) and while the bitmap UUID still
//! records changes the peer lacks.

use super::node::{Action, Node};
use super::state::{ConnState, DiskState, ReplState, Role};
use super::uuids::UUID_JUST_CREATED;
use crate::meta::superblock::flags;
use crate::wire::frame::{Frame, UuidsMsg};

/// Uuids flag on an established link: "adopt these generations and skip the initial sync".
pub(crate) const UF_SKIP_INITIAL_SYNC: u64 = 8;

impl Node {
    fn fresh_pair(&self) -> bool {
        self.persisted.uuids.current & !1 == UUID_JUST_CREATED && self.disk == DiskState::Inconsistent
    }

    /// Whether `new-current-uuid` may run now, and why not.
    pub fn check_new_current_uuid(&self, clear_bitmap: bool) -> Result<(), String> {
        if self.diskless() {
            return Err("no local disk".into());
        }
        if clear_bitmap {
            if self.conn != ConnState::Connected || self.repl != ReplState::Established {
                return Err(format!(
                    "--clear-bitmap needs an established connection with no sync running (connection {}, replication {})",
                    self.conn, self.repl
                ));
            }
            if !self.fresh_pair() || self.peer_disk != DiskState::Inconsistent {
                return Err(format!(
                    "--clear-bitmap is only for two fresh disks before their initial sync: both Inconsistent with just-created metadata (local {}, peer {}, current UUID {:016X})",
                    self.disk, self.peer_disk, self.persisted.uuids.current
                ));
            }
            return Ok(());
        }
        if self.conn == ConnState::Connected {
            return Err("connected: the peer would not share the new generation; disconnect first (or, for two fresh disks, use --clear-bitmap)".into());
        }
        if !self.disk.is_consistent() {
            return Err(format!("the local disk is {}: only consistent data starts a generation", self.disk));
        }
        if self.persisted.uuids.bitmap != 0 {
            return Err("the bitmap UUID still records changes the peer lacks (a resync is owed); connect and let it finish first".into());
        }
        Ok(())
    }

    pub(crate) fn on_new_current_uuid(&mut self, clear_bitmap: bool) {
        if let Err(e) = self.check_new_current_uuid(clear_bitmap) {
            self.log(true, format!("{}: new-current-uuid refused: {e}", self.p.resource));
            return;
        }
        let fresh = self.fresh_uuid();
        let primary = self.role == Role::Primary;
        if !clear_bitmap {
            self.persisted.uuids.new_current(fresh, primary);
            self.persist_flags(self.persisted.flags);
            self.log(false, format!("{}: new current UUID {}", self.p.resource, self.persisted.uuids));
            self.changed();
            return;
        }
        self.persisted.uuids.current = fresh & !1;
        self.persisted.uuids.bitmap = 0;
        self.become_clean_up_to_date();
        let mut msg: UuidsMsg = self.uuids_msg();
        msg.flags |= UF_SKIP_INITIAL_SYNC;
        if let Some(conn) = self.link.as_ref().map(|l| l.conn) {
            self.send(conn, Frame::Uuids(msg));
        }
        self.log(true, format!("{}: new-current-uuid --clear-bitmap: initial sync skipped, generation {}", self.p.resource, self.persisted.uuids));
        self.broadcast_state();
        self.changed();
    }

    /// The peer's generations on an established link: adopt them when it skips the initial sync.
    pub(crate) fn on_peer_uuids_up(&mut self, u: UuidsMsg) {
        if u.flags & UF_SKIP_INITIAL_SYNC == 0 {
            if let Some(l) = self.link.as_mut() {
                l.peer_uuids = Some(u);
            }
            return;
        }
        let ok = self.fresh_pair() && self.repl == ReplState::Established && self.role == Role::Secondary;
        if !ok {
            let why = format!(
                "peer skipped the initial sync but this disk is not fresh (disk {}, replication {}, current UUID {:016X}): renegotiating (full sync from the peer)",
                self.disk, self.repl, self.persisted.uuids.current
            );
            self.log(true, format!("{}: {why}", self.p.resource));
            self.drop_link(&why, true);
            return;
        }
        self.persisted.uuids.current = u.current & !1;
        self.persisted.uuids.bitmap = 0;
        self.persisted.uuids.history = u.history;
        self.become_clean_up_to_date();
        self.peer_disk = DiskState::UpToDate;
        if let Some(l) = self.link.as_mut() {
            l.peer_uuids = Some(u);
        }
        self.log(true, format!("{}: the peer skipped the initial sync (new-current-uuid --clear-bitmap): UpToDate, generation {}", self.p.resource, self.persisted.uuids));
        self.broadcast_state();
        self.changed();
    }

    fn become_clean_up_to_date(&mut self) {
        let size = self.p.data_size;
        self.bitmap.clear_range(0, size);
        self.bitmap.mark_all_pages_dirty();
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        self.disk = DiskState::UpToDate;
        let fl = (self.persisted.flags | flags::CONSISTENT | flags::WAS_UP_TO_DATE) & !(flags::OUTDATED | flags::FULL_SYNC);
        self.persist_flags(fl);
    }
}
