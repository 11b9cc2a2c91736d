//! What a split brain leaves behind, and its resolution over the replication link (issue 15).
//!
//! When a handshake finds a split brain, both sides keep what they compared ([`SplitBrainFacts`]):
//! their own and the peer's generation tuple, role, and count of blocks changed (set in the bitmap).
//! `haadm split-brain` shows them and recommends a victim.
//!
//! Resolution from either side: the victim demotes and runs `connect --discard-my-data`, or the
//! survivor connects with the Uuids flag `keep-me` (what `haadm split-brain RES --keep SURVIVOR` does
//! on either node). The other node needs no verb: while StandAlone after a split brain it stays
//! *reachable for resolution* — it accepts the replication link (or, as the side that dials, dials
//! it at `connect-int`), authenticated as always, but lets a handshake past the generation exchange
//! only when
//! - the peer offers a resolution (`discard-my-data`, or `keep-me` and this node is not Primary), and
//! - both tuples are still the ones recorded when the split brain was found (ignoring the role bit):
//!   a resolution decided on a stale view (either side resynced or started a generation since) is
//!   refused, loudly.
//!
//! Every other handshake on such a link ends after the Uuids frame (no bitmap is sent, the node stays
//! StandAlone): quietly when the peer is probing too (Uuids flag `resolve-probe`), so two unresolved
//! nodes cost one small handshake per `connect-int`; with a split-brain abort when the peer connects
//! in earnest without discarding (an operator's `connect`, or a node that missed the handshake that
//! found the split brain), so it is flagged and records both sides too. `disconnect` stops it all
//! (and forgets the facts).

use super::link::{ABORT_FATAL, ABORT_RETRY, ABORT_SPLIT_BRAIN};

/// Uuids flag: the sender is itself a split-brain node probing for a resolution (ends quietly).
pub(crate) const UF_RESOLVE_PROBE: u64 = 16;
/// Uuids flag: the sender resolves a split brain as its survivor and asks the peer to discard.
pub(crate) const UF_KEEP_ME: u64 = 32;
use super::node::{Action, Node, Stage};
use super::state::{ConnState, Role};
use super::uuids::Uuids;
use crate::wire::frame::{Frame, UuidsMsg};

/// One side of a split brain as the handshake saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitBrainSide {
    pub uuids: Uuids,
    pub role: Role,
    /// Blocks set in that side's bitmap: what it changed since the common generation (and anything
    /// that was already out of sync then).
    pub changed_blocks: u64,
}

/// Both sides of the last split brain this node found (kept until a handshake succeeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitBrainFacts {
    pub me: SplitBrainSide,
    pub peer: SplitBrainSide,
}

impl SplitBrainFacts {
    /// The generation both sides started from: the newest UUID one side's tuple shares with the
    /// other's (bitmap UUIDs first: after a plain fork both bitmap UUIDs are the old current).
    pub fn common_ancestor(&self) -> Option<u64> {
        let strip = |u: u64| u & !1;
        let mine = [self.me.uuids.bitmap, self.me.uuids.history[0], self.me.uuids.history[1]];
        let theirs = [self.peer.uuids.current, self.peer.uuids.bitmap, self.peer.uuids.history[0], self.peer.uuids.history[1]];
        mine.iter().copied().filter(|u| *u != 0).find(|u| theirs.iter().any(|t| *t != 0 && strip(*t) == strip(*u)))
    }
}

fn same_generation(a: &Uuids, b: &Uuids) -> bool {
    a.current & !1 == b.current & !1 && a.bitmap & !1 == b.bitmap & !1
}

impl Node {
    /// Called where the handshake decided on a split brain, before the link is torn down.
    pub(crate) fn record_split_brain(&mut self, peer: &UuidsMsg, peer_role: Role) {
        self.split_brain_facts = Some(SplitBrainFacts {
            me: SplitBrainSide { uuids: self.persisted.uuids, role: self.role, changed_blocks: self.bitmap.count() },
            peer: SplitBrainSide {
                uuids: Uuids { current: peer.current, bitmap: peer.bitmap, history: peer.history },
                role: peer_role,
                changed_blocks: peer.dirty_bits,
            },
        });
    }

    /// After the link went StandAlone on a split brain: stay reachable for a resolution.
    pub(crate) fn stay_reachable_for_resolution(&mut self) {
        if self.split_brain_facts.is_some() {
            self.out.push(Action::SetConnecting(true));
        }
    }

    /// A StandAlone node accepts a transport only to be resolved.
    pub(crate) fn reachable_for_resolution(&self) -> bool {
        self.conn == ConnState::StandAlone && self.split_brain_facts.is_some() && !self.diskless()
    }

    /// The peer's Uuids on a resolve-only link: go on as an ordinary handshake (this node is the
    /// survivor) or end it.
    pub(crate) fn on_resolve_uuids(&mut self, conn: u64, u: UuidsMsg) {
        let Some(facts) = self.split_brain_facts else {
            self.quiet_teardown(conn, "no split brain to resolve");
            return;
        };
        let peer_keeps = u.flags & UF_KEEP_ME != 0;
        if u.flags & super::link::UF_DISCARD_MY_DATA == 0 && !peer_keeps {
            let why = "split brain unresolved: neither side discards its data (run `haadm split-brain RES --keep NODE` on the victim)";
            if u.flags & UF_RESOLVE_PROBE != 0 {
                self.quiet_teardown(conn, why);
            } else {
                // An ordinary connect (an operator's, or a node that missed the handshake that found
                // the split brain): it must learn of it, as if it had decided itself.
                self.send(conn, Frame::Abort { code: ABORT_SPLIT_BRAIN, reason: why.to_string() });
                self.link = None;
                self.out.push(Action::Close { conn });
            }
            return;
        }
        let peer_now = Uuids { current: u.current, bitmap: u.bitmap, history: u.history };
        let stale = if !same_generation(&peer_now, &facts.peer.uuids) {
            Some(format!("the peer's generations are {peer_now}, not {} as when the split brain was found", facts.peer.uuids))
        } else if !same_generation(&self.persisted.uuids, &facts.me.uuids) {
            Some(format!("this node's generations are {}, not {} as when the split brain was found", self.persisted.uuids, facts.me.uuids))
        } else {
            None
        };
        if let Some(why) = stale {
            let msg = format!("split-brain resolution refused (stale): {why}; reconnect both sides to see the split brain again");
            self.send(conn, Frame::Abort { code: ABORT_FATAL, reason: msg.clone() });
            self.log(true, format!("{}: {msg}", self.p.resource));
            self.last_error = Some(msg);
            self.link = None;
            self.out.push(Action::Close { conn });
            return;
        }
        if peer_keeps && self.role == Role::Primary {
            let msg = format!(
                "split-brain resolution refused: the victim {} is Primary (its writes are being served); demote it there first (haadm secondary {}), or run the resolution on it",
                self.p.node, self.p.resource
            );
            self.send(conn, Frame::Abort { code: ABORT_FATAL, reason: msg.clone() });
            self.log(true, format!("{}: {msg}", self.p.resource));
            self.link = None;
            self.out.push(Action::Close { conn });
            return;
        }
        if peer_keeps {
            self.log(true, format!("{}: split brain: the peer keeps its data; this node is the victim, discards its changes and becomes SyncTarget", self.p.resource));
            self.discard_my_data = true;
        } else {
            self.log(true, format!("{}: split brain: the peer discards its data; this node is the survivor and becomes SyncSource", self.p.resource));
        }
        self.split_brain = false;
        self.last_error = None;
        self.set_conn(ConnState::Connecting);
        if let Some(l) = self.link.as_mut() {
            l.resolve_only = false;
            l.peer_discard = !peer_keeps;
            l.peer_uuids = Some(u);
            l.stage = Stage::Bitmap;
        }
        self.send_bitmap(conn);
    }

    /// Whether this node may resolve as the survivor (`connect` asking the peer to discard).
    pub fn check_resolve_keep_me(&self) -> Result<(), String> {
        if self.split_brain_facts.is_none() || !self.split_brain || self.conn != ConnState::StandAlone {
            return Err(format!("no unresolved split brain here (connection {})", self.conn));
        }
        self.check_connect()
    }

    /// Connect as the survivor: the peer, still reachable for resolution, discards its changes.
    pub(crate) fn on_resolve_keep_me(&mut self) {
        if let Err(e) = self.check_resolve_keep_me() {
            self.log(true, format!("{}: split-brain resolution refused: {e}", self.p.resource));
            return;
        }
        self.on_connect_verb(false);
        self.resolve_keep_me = true;
    }

    /// End a resolve-only link without a state change or a warning.
    pub(crate) fn quiet_teardown(&mut self, conn: u64, reason: &str) {
        self.send(conn, Frame::Abort { code: ABORT_RETRY, reason: reason.to_string() });
        self.link = None;
        self.out.push(Action::Close { conn });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_ancestor_is_the_shared_bitmap_uuid() {
        let side = |c, b, h0| SplitBrainSide { uuids: Uuids { current: c, bitmap: b, history: [h0, 0] }, role: Role::Primary, changed_blocks: 1 };
        let f = SplitBrainFacts { me: side(0xA1, 0x50, 0x40), peer: side(0xB1, 0x51, 0x40) };
        assert_eq!(f.common_ancestor(), Some(0x50));
        let f = SplitBrainFacts { me: side(0xA1, 0x60, 0x40), peer: side(0xB1, 0x70, 0x40) };
        assert_eq!(f.common_ancestor(), Some(0x40));
        let f = SplitBrainFacts { me: side(0xA1, 0x60, 0), peer: side(0xB1, 0x70, 0) };
        assert_eq!(f.common_ancestor(), None);
    }
}
