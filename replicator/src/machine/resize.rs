//! Online resize (`haadm resize`, DRBD's `drbdadm resize`), protocol 3.
//!
//! The node where the verb runs drives it over an established link: it asks the peer to grow to its
//! own backing capacity (or to the explicit `--size`); the peer grows to the smaller of that and its
//! own capacity, persists (`PersistResize`: crash-safe, see `meta/store_resize.rs`) and answers with
//! the size it now has; the driver then grows to the same size. The peer goes first so that a
//! Primary never accepts writes beyond an end its peer does not have. Unless `--assume-clean`, both
//! sides mark the new area out of sync, and the link is renegotiated so the marked blocks move from
//! the Primary (`resync_marked_from_primary`).
//!
//! A crash or a lost link between the two persists leaves the nodes with different sizes: at the
//! next handshake (protocol 3) the smaller side adopts the larger size if its backing device has
//! room, marking the new area (`adopt_peer_size`), so the resize completes by itself; otherwise the
//! handshake is refused naming both sizes, as before.

use super::node::{Action, Node, Stage, BLOCK};
use super::state::{ReplState, Role};
use crate::wire::frame::{Frame, PROTOCOL_RESIZE};

/// The driver's request in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingResize {
    pub size: u64,
    pub explicit: bool,
    pub assume_clean: bool,
}

/// Resize bookkeeping of a node.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResizeState {
    /// Largest data size the local backing device gives (refreshed by the I/O layer before a resize
    /// request or a handshake's sizes are looked at; the device may grow while the volume runs).
    pub capacity: u64,
    pub pending: Option<PendingResize>,
}

impl Node {
    /// Tell the machine how much data the local backing device can hold now.
    pub fn set_capacity(&mut self, data_size: u64) {
        self.resize.capacity = data_size;
    }

    /// The current size of the volume.
    pub fn data_size(&self) -> u64 {
        self.p.data_size
    }

    /// Whether a resize may start now (`size`: the explicit `--size`), and why not.
    pub fn check_resize(&self, size: Option<u64>) -> Result<(), String> {
        let node = &self.p.node;
        if self.diskless() {
            return Err("this node has no disk (detached)".into());
        }
        let Some(link) = self.link.as_ref().filter(|l| l.stage == Stage::Up) else {
            return Err(format!(
                "not connected (connection {}): both nodes grow together, so resize needs the peer connected",
                self.conn
            ));
        };
        if link.proto < PROTOCOL_RESIZE {
            return Err(format!(
                "the peer speaks replication protocol {} and online resize needs protocol {PROTOCOL_RESIZE}: upgrade the peer first",
                link.proto
            ));
        }
        if self.repl != ReplState::Established || self.verify.is_some() || self.peer_verifying {
            return Err(format!("replication is {}: wait until no resync or verify runs", self.snapshot().repl));
        }
        if self.resize.pending.is_some() {
            return Err("a resize is already in progress".into());
        }
        if self.peer_role == Role::Primary {
            // The driver grows last: run on the Primary, it never writes beyond an end its peer lacks.
            let peer = self.p.peer.as_deref().unwrap_or("the peer");
            return Err(format!("{peer} is Primary: run resize there"));
        }
        if let Some(s) = size {
            if s == 0 || !s.is_multiple_of(BLOCK) {
                return Err(format!("--size {s} is not a positive multiple of 4096 bytes"));
            }
            if s < self.p.data_size && (self.role != Role::Secondary || self.peer_role != Role::Secondary) {
                return Err(format!(
                    "shrinking from {} to {s} bytes needs the resource Secondary on both nodes (this node {}, peer {}): nothing may be using the end of the volume",
                    self.p.data_size, self.role, self.peer_role
                ));
            }
        }
        let target = size.unwrap_or(self.resize.capacity);
        if target > self.resize.capacity {
            return Err(format!("--size {target} is more than the {} bytes the backing device of {node} gives", self.resize.capacity));
        }
        Ok(())
    }

    pub(crate) fn on_resize_verb(&mut self, size: Option<u64>, assume_clean: bool) {
        if let Err(e) = self.check_resize(size) {
            self.out.push(Action::ResizeDone(Err(e)));
            return;
        }
        let Some(conn) = self.link.as_ref().map(|l| l.conn) else { return };
        let pending = PendingResize { size: size.unwrap_or(self.resize.capacity), explicit: size.is_some(), assume_clean };
        self.resize.pending = Some(pending);
        self.log(false, format!("{}: resize to {} bytes requested (peer first)", self.p.resource, pending.size));
        self.send(conn, Frame::ResizeRequest { size: pending.size, explicit: pending.explicit, assume_clean });
    }

    /// The peer drives a resize: grow (or set, `explicit`) to `size` within our capacity.
    pub(crate) fn on_resize_request(&mut self, conn: u64, size: u64, explicit: bool, assume_clean: bool) {
        let capacity = self.resize.capacity;
        let current = self.p.data_size;
        let new = if explicit { size } else { size.min(capacity) };
        let refusal = if self.link.as_ref().is_none_or(|l| l.proto < PROTOCOL_RESIZE) {
            Some("protocol error: resize request below protocol 3".to_string())
        } else if self.diskless() {
            Some("no disk (detached)".into())
        } else if self.repl != ReplState::Established {
            Some(format!("replication is {}", self.repl))
        } else if new > capacity {
            Some(format!("--size {size} is more than the {capacity} bytes its backing device gives"))
        } else if new == current {
            Some(format!("its backing device did not grow (it gives {capacity} bytes, the volume has {current})"))
        } else if new < current && (!explicit || self.role != Role::Secondary) {
            Some(format!("shrinking from {current} to {new} bytes needs --size and the resource Secondary there (it is {})", self.role))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.send(conn, Frame::ResizeReply { ok: false, size: current, capacity, reason });
            return;
        }
        self.apply_resize(new, !assume_clean);
        self.send(conn, Frame::ResizeReply { ok: true, size: new, capacity, reason: String::new() });
    }

    pub(crate) fn on_resize_reply(&mut self, ok: bool, size: u64, capacity: u64, reason: String) {
        let Some(p) = self.resize.pending.take() else { return };
        let (me, peer) = (self.p.node.clone(), self.p.peer.clone().unwrap_or_else(|| "the peer".into()));
        if !ok {
            let msg = if self.resize.capacity == self.p.data_size && !p.explicit {
                format!(
                    "the backing device of {me} did not grow: {me} gives {} bytes, {peer} gives {capacity} bytes; the volume stays {} bytes",
                    self.resize.capacity, self.p.data_size
                )
            } else {
                format!("{peer} refused: {reason} ({me} gives {} bytes, {peer} gives {capacity} bytes)", self.resize.capacity)
            };
            self.out.push(Action::ResizeDone(Err(msg)));
            return;
        }
        if size > self.resize.capacity {
            // Never happens (the peer grows to at most what we asked); refuse rather than overrun.
            self.out.push(Action::ResizeDone(Err(format!("{peer} grew to {size} bytes, more than {me} can hold"))));
            return;
        }
        if size != self.p.data_size {
            self.apply_resize(size, !p.assume_clean);
        }
        self.out.push(Action::ResizeDone(Ok(size)));
        if !p.assume_clean {
            self.resync_marked_from_primary();
        }
    }

    /// The link went away while our request was out: the peer may or may not have grown; the next
    /// handshake reconciles the sizes.
    pub(crate) fn resize_link_lost(&mut self) {
        if self.resize.pending.take().is_some() {
            self.out.push(Action::ResizeDone(Err(
                "the connection was lost during the resize; the sizes are reconciled when the nodes reconnect (check `haadm status`, run resize again)".into(),
            )));
        }
    }

    /// Handshake of protocol 3 with a larger peer: adopt its size if the backing device has room
    /// (a resize cut short by a crash or a lost link). Err: the refusal to send.
    pub(crate) fn adopt_peer_size(&mut self, peer_size: u64) -> Result<(), String> {
        let (me, cap) = (&self.p.node, self.resize.capacity);
        if peer_size > cap {
            return Err(format!(
                "size mismatch: the peer's volume is {peer_size} bytes, {me}'s is {} and its backing device gives only {cap}: grow it",
                self.p.data_size
            ));
        }
        self.log(true, format!("{}: the peer's volume is larger ({peer_size} > {} bytes): finishing an interrupted resize here", self.p.resource, self.p.data_size));
        self.apply_resize(peer_size, true);
        Ok(())
    }

    /// New size: the bitmap follows (new blocks marked when `mark`), the metadata is rewritten before
    /// anything else happens (`PersistResize` is carried out before the next action).
    fn apply_resize(&mut self, new: u64, mark: bool) {
        let old = self.p.data_size;
        let mut bm = self.bitmap.resized(new);
        if mark && new > old {
            bm.set_range(old, new - old);
        }
        self.bitmap = bm;
        self.p.data_size = new;
        self.out.push(Action::PersistResize { data_size: new });
        let how = if mark && new > old { "new area marked out of sync" } else { "new area assumed clean" };
        self.log(true, format!("{}: resized from {old} to {new} bytes ({how})", self.p.resource));
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::super::node::Input;
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A node of `size` bytes on an established link of protocol `proto` (no I/O: the machine only).
    fn node(name: &str, peer: &str, size: u64, capacity: u64, proto: u32) -> Node {
        let mut n = super::super::test_support::established_node(name, peer, size, None, proto, |_| {});
        n.set_capacity(capacity);
        n
    }

    fn sent(actions: &[Action]) -> Vec<Frame> {
        actions.iter().filter_map(|a| if let Action::Send { frame, .. } = a { Some(frame.clone()) } else { None }).collect()
    }

    fn done(actions: &[Action]) -> Option<Result<u64, String>> {
        actions.iter().find_map(|a| if let Action::ResizeDone(r) = a { Some(r.clone()) } else { None })
    }

    /// Drive a resize from `a` to `b` and back; the actions of each step.
    fn exchange(a: &mut Node, b: &mut Node, size: Option<u64>, assume_clean: bool) -> (Vec<Action>, Vec<Action>, Vec<Action>) {
        let first = a.step(Input::Resize { size, assume_clean });
        let mut at_b = Vec::new();
        for f in sent(&first) {
            at_b.extend(b.step(Input::Frame { conn: 1, frame: f }));
        }
        let mut at_a = Vec::new();
        for f in sent(&at_b) {
            at_a.extend(a.step(Input::Frame { conn: 1, frame: f }));
        }
        (first, at_b, at_a)
    }

    #[test]
    fn grows_to_the_smaller_capacity_peer_first_and_marks_the_new_area() {
        let (mut a, mut b) = (node("node1", "node2", 64 * MIB, 96 * MIB, 3), node("node2", "node1", 64 * MIB, 80 * MIB, 3));
        let (first, at_b, at_a) = exchange(&mut a, &mut b, None, false);
        assert!(matches!(sent(&first)[..], [Frame::ResizeRequest { size, explicit: false, assume_clean: false }] if size == 96 * MIB));
        // The peer persists before it answers.
        let persist = at_b.iter().position(|a| matches!(a, Action::PersistResize { data_size } if *data_size == 80 * MIB)).expect("peer persists");
        let reply = at_b.iter().position(|a| matches!(a, Action::Send { frame: Frame::ResizeReply { ok: true, .. }, .. })).expect("peer replies");
        assert!(persist < reply);
        assert!(at_a.iter().any(|a| matches!(a, Action::PersistResize { data_size } if *data_size == 80 * MIB)));
        assert_eq!(done(&at_a), Some(Ok(80 * MIB)));
        for n in [&a, &b] {
            assert_eq!((n.data_size(), n.snapshot().size), (80 * MIB, 80 * MIB));
            assert_eq!(n.bitmap.count(), 16 * MIB / BLOCK, "the new area is marked");
        }
    }

    #[test]
    fn assume_clean_marks_nothing() {
        let (mut a, mut b) = (node("node1", "node2", 64 * MIB, 80 * MIB, 3), node("node2", "node1", 64 * MIB, 80 * MIB, 3));
        let (_, _, at_a) = exchange(&mut a, &mut b, None, true);
        assert_eq!(done(&at_a), Some(Ok(80 * MIB)));
        assert_eq!((a.bitmap.count(), b.bitmap.count()), (0, 0));
    }

    #[test]
    fn refusals_name_the_node_and_both_sizes_and_change_nothing() {
        // The peer did not grow.
        let (mut a, mut b) = (node("node1", "node2", 64 * MIB, 80 * MIB, 3), node("node2", "node1", 64 * MIB, 64 * MIB, 3));
        let (_, at_b, at_a) = exchange(&mut a, &mut b, None, false);
        assert!(!at_b.iter().any(|a| matches!(a, Action::PersistResize { .. })));
        let e = done(&at_a).unwrap().unwrap_err();
        assert!(e.contains("node2") && e.contains("did not grow") && e.contains(&(80 * MIB).to_string()) && e.contains(&(64 * MIB).to_string()), "{e}");
        assert_eq!((a.data_size(), b.data_size()), (64 * MIB, 64 * MIB));
        // This node did not grow.
        let (mut a, mut b) = (node("node1", "node2", 64 * MIB, 64 * MIB, 3), node("node2", "node1", 64 * MIB, 80 * MIB, 3));
        let e = done(&exchange(&mut a, &mut b, None, false).2).unwrap().unwrap_err();
        assert!(e.contains("backing device of node1 did not grow"), "{e}");
        // An older peer: protocol 2 has no resize frames.
        let a = node("node1", "node2", 64 * MIB, 80 * MIB, 2);
        let e = a.check_resize(None).unwrap_err();
        assert!(e.contains("protocol 2") && e.contains("upgrade"), "{e}");
        // Not connected.
        let mut a = node("node1", "node2", 64 * MIB, 80 * MIB, 3);
        a.link = None;
        assert!(a.check_resize(None).unwrap_err().contains("not connected"));
        // Shrinking with a Primary; the peer Primary drives instead.
        let mut a = node("node1", "node2", 64 * MIB, 80 * MIB, 3);
        a.role = Role::Primary;
        assert!(a.check_resize(Some(32 * MIB)).unwrap_err().contains("Secondary on both"));
        a.role = Role::Secondary;
        a.peer_role = Role::Primary;
        assert!(a.check_resize(None).unwrap_err().contains("node2 is Primary: run resize there"));
    }

    #[test]
    fn explicit_shrink_with_both_secondary() {
        let (mut a, mut b) = (node("node1", "node2", 64 * MIB, 64 * MIB, 3), node("node2", "node1", 64 * MIB, 64 * MIB, 3));
        (a.peer_role, b.peer_role) = (Role::Secondary, Role::Secondary);
        b.bitmap.set_range(40 * MIB, 4096);
        let (_, _, at_a) = exchange(&mut a, &mut b, Some(32 * MIB), false);
        assert_eq!(done(&at_a), Some(Ok(32 * MIB)));
        assert_eq!((a.data_size(), b.data_size(), b.bitmap.count()), (32 * MIB, 32 * MIB, 0));
    }

    #[test]
    fn a_lost_link_answers_the_waiting_resize() {
        let mut a = node("node1", "node2", 64 * MIB, 80 * MIB, 3);
        a.step(Input::Resize { size: None, assume_clean: false });
        let acts = a.step(Input::TransportDown { conn: 1, reason: "killed".into() });
        assert!(done(&acts).unwrap().unwrap_err().contains("connection was lost"));
        assert_eq!(a.data_size(), 64 * MIB);
    }

    #[test]
    fn the_smaller_side_adopts_a_larger_peer_at_the_handshake_if_it_has_room() {
        let mut a = node("node1", "node2", 64 * MIB, 80 * MIB, 3);
        a.adopt_peer_size(80 * MIB).unwrap();
        assert_eq!((a.data_size(), a.bitmap.count()), (80 * MIB, 16 * MIB / BLOCK));
        let mut a = node("node1", "node2", 64 * MIB, 64 * MIB, 3);
        let e = a.adopt_peer_size(80 * MIB).unwrap_err();
        assert!(e.contains("size mismatch") && e.contains("node1"), "{e}");
        assert_eq!(a.data_size(), 64 * MIB);
    }
}
