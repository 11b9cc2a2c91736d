//! The resource's SCSI persistent-reservation state, replicated exactly like its data.
//!
//! The state is one opaque blob (the iSCSI target encodes it; each update replaces it whole), stored in
//! this node's superblock ([`Action::PersistPr`]). An update on the Primary follows the protocol-C rules
//! of a write:
//! - it is stored locally, sent to the peer (PrState) and completes on the peer's PrAck, which the peer
//!   sends only after storing it;
//! - with no peer taking it (disconnected, handshaking peer excepted: updates wait like writes), or when
//!   the peer is lost before acknowledging, it completes on the local copy alone, after two things are on
//!   disk: the flag [`flags::PEER_PR_STALE`] ("the peer's copy is behind") and, as for a write without
//!   the peer, a new data generation — so the next handshake makes this node the source, and two nodes
//!   that both changed it apart see a split brain;
//! - `fencing resource-and-stonith` holds its completion like a write's (`Node::complete`).
//!
//! After a handshake the state travels with the data: a SyncSource sends its copy (so a SyncTarget —
//! a split-brain victim included — ends with the survivor's state), and on an in-sync link the side whose
//! flag says the peer is behind sends it. Because blobs are whole states, any PrAck of our current blob
//! means the peer is current and the flag is cleared.
//!
//! Only peers that agreed on protocol [`PROTOCOL_PR`] see these frames; with an older peer the state
//! stays owed (flag set) until an upgraded peer connects.

use super::node::{Action, IoFailure, Node};
use super::state::{DiskState, ReplState, Role};
use crate::meta::superblock::{flags, PR_MAX};
use crate::wire::frame::{Frame, PROTOCOL_PR};
use bytes::Bytes;

/// A PrState sent and not yet acknowledged: its frame seq and the update it completes (None for the
/// handshake's catch-up send).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrInflight {
    pub seq: u64,
    pub id: Option<u64>,
}

impl Node {
    /// The persistent-reservation state read from this node's metadata at attach.
    pub fn load_pr(&mut self, blob: Bytes) {
        self.pr = blob;
    }

    /// The persistent-reservation state as stored on this node.
    pub fn pr_state(&self) -> &Bytes {
        &self.pr
    }

    fn peer_takes_pr(&self) -> bool {
        self.peer_receiving() && self.link.as_ref().is_some_and(|l| l.proto >= PROTOCOL_PR)
    }

    pub(crate) fn on_pr_update(&mut self, id: u64, blob: Bytes) {
        if self.role != Role::Primary {
            self.out.push(Action::Complete { id, result: Err(IoFailure::NotPrimary) });
            return;
        }
        if blob.len() > PR_MAX {
            let e = IoFailure::Io(format!("persistent-reservation state of {} bytes exceeds {PR_MAX}", blob.len()));
            self.out.push(Action::Complete { id, result: Err(e) });
            return;
        }
        self.pr_queue.push_back((id, blob));
        self.pump_pr();
    }

    /// Start queued updates, one at a time (each completes before the next goes out, so the peer's
    /// acknowledgement of our current blob always means it holds our current state).
    pub(crate) fn pump_pr(&mut self) {
        let handshaking = self.link.as_ref().is_some_and(|l| l.stage != super::node::Stage::Up);
        while !handshaking && self.pr_inflight.is_none() {
            let Some((id, blob)) = self.pr_queue.pop_front() else { return };
            if self.role != Role::Primary {
                self.out.push(Action::Complete { id, result: Err(IoFailure::NotPrimary) });
                continue;
            }
            let to_peer = self.peer_takes_pr();
            if self.diskless() && !to_peer {
                self.out.push(Action::Complete { id, result: Err(IoFailure::NoData(DiskState::Diskless)) });
                continue;
            }
            if !self.diskless() {
                self.out.push(Action::PersistPr(blob.clone()));
            }
            self.pr = blob.clone();
            if to_peer {
                self.send_pr(Some(id));
            } else {
                self.pr_owed("persistent reservations changed without the peer");
                self.complete(id, Ok(()));
            }
        }
    }

    fn send_pr(&mut self, id: Option<u64>) {
        let Some(conn) = self.up_conn() else { return };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pr_inflight = Some(PrInflight { seq, id });
        self.send(conn, Frame::PrState { seq, blob: self.pr.clone() });
    }

    /// The peer's copy is behind ours: persisted, with a new generation as for a write without the peer.
    fn pr_owed(&mut self, why: &str) {
        self.ensure_new_generation(why);
        if self.persisted.flags & flags::PEER_PR_STALE == 0 {
            self.persist_flags(self.persisted.flags | flags::PEER_PR_STALE);
        }
    }

    pub(crate) fn on_pr_ack(&mut self, seq: u64, ok: bool) {
        let Some(inflight) = self.pr_inflight.filter(|i| i.seq == seq) else { return };
        self.pr_inflight = None;
        if ok {
            if self.persisted.flags & flags::PEER_PR_STALE != 0 {
                self.persist_flags(self.persisted.flags & !flags::PEER_PR_STALE);
            }
            if let Some(id) = inflight.id {
                self.complete(id, Ok(()));
            }
        } else {
            self.pr_owed("the peer failed to store the persistent-reservation state");
            if let Some(id) = inflight.id {
                let r = if self.diskless() { Err(IoFailure::NoData(DiskState::Diskless)) } else { Ok(()) };
                self.complete(id, r);
            }
            // Renegotiating sends it again (a peer with a detached disk gets it when it attaches).
            if self.peer_disk != DiskState::Diskless {
                self.drop_link("the peer failed to store the persistent-reservation state", true);
            }
        }
        self.pump_pr();
    }

    /// The link dropped: an update the peer did not acknowledge completes on the local copy (which the
    /// peer gets when it is back), or fails if there is none.
    pub(crate) fn pr_peer_lost(&mut self) {
        if let Some(inflight) = self.pr_inflight.take() {
            self.pr_owed("a persistent-reservation update lost the peer");
            if let Some(id) = inflight.id {
                let r = if self.diskless() { Err(IoFailure::NoData(DiskState::Diskless)) } else { Ok(()) };
                self.complete(id, r);
            }
        }
        self.pump_pr();
    }

    /// The link is up after a handshake: send our state where it must travel (see the module doc).
    pub(crate) fn pr_link_up(&mut self) {
        let Some(link) = self.link.as_ref() else { return };
        if link.proto < PROTOCOL_PR {
            return;
        }
        let peer_stale = link.peer_uuids.is_some_and(|u| u.flags & super::link::UF_PR_STALE != 0);
        let mine_stale = self.persisted.flags & flags::PEER_PR_STALE != 0;
        let i_resolve = self.p.node.as_str() < self.p.peer.as_deref().unwrap_or("");
        let push = match (self.repl, self.role, self.peer_role) {
            (ReplState::SyncSource, _, _) => true,
            (ReplState::SyncTarget, _, _) => false,
            // In sync but one copy is marked behind: a Primary's copy is the one its LU serves, so it
            // is the one that travels; without a Primary the side that knows the peer is behind sends.
            (_, Role::Primary, _) => mine_stale || peer_stale,
            (_, _, Role::Primary) => false,
            _ => mine_stale && (!peer_stale || i_resolve),
        };
        if push {
            self.send_pr(None);
        }
        self.pump_pr();
    }

    /// The peer's state arrives: store it, then acknowledge (the Persist action completes first).
    pub(crate) fn on_peer_pr(&mut self, conn: u64, seq: u64, blob: Bytes) {
        if self.role == Role::Primary && self.repl != ReplState::SyncTarget {
            let reason = "split brain: the peer sent persistent-reservation state but this node is Primary (both Primary)";
            self.split_brain = true;
            self.out.push(Action::RunHandler("split-brain"));
            self.send(conn, Frame::Abort { code: super::link::ABORT_SPLIT_BRAIN, reason: reason.to_string() });
            self.fatal(reason, false);
            return;
        }
        if blob.len() > PR_MAX {
            self.abort(conn, &format!("protocol error: persistent-reservation state of {} bytes exceeds {PR_MAX}", blob.len()), false);
            return;
        }
        if self.diskless() {
            self.send(conn, Frame::PrAck { seq, ok: false });
            return;
        }
        if self.role == Role::Primary {
            self.log(true, format!("{}: persistent-reservation state replaced by the SyncSource's while Primary", self.p.resource));
        }
        self.out.push(Action::PersistPr(blob.clone()));
        self.pr = blob;
        // Whatever we owed the peer is superseded by its state.
        if self.persisted.flags & flags::PEER_PR_STALE != 0 {
            self.persist_flags(self.persisted.flags & !flags::PEER_PR_STALE);
        }
        self.send(conn, Frame::PrAck { seq, ok: true });
    }
}
