//! CmdSN window and in-order delivery (RFC 7143 §4.2.2.1).
//!
//! Non-immediate commands are accepted when ExpCmdSN ≤ CmdSN ≤ MaxCmdSN (serial arithmetic), buffered
//! if they arrive early, and delivered strictly in CmdSN order. Anything outside the window is silently
//! ignored, which is what the RFC and libiscsi's iSCSIcmdsn tests demand (no reply, no drop).
//! MaxCmdSN = ExpCmdSN + depth − 1 − active: commands still executing keep their slot, so the window is
//! the bound on commands in flight, and it never shrinks on the wire (admitting one command advances
//! ExpCmdSN and `active` together; completing one grows the window).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters shared by the reader (ExpCmdSN, admission), executing tasks (completion) and the writer
/// (which stamps ExpCmdSN/MaxCmdSN on every outgoing PDU).
#[derive(Debug)]
pub struct WindowCounters {
    exp_cmd_sn: AtomicU32,
    active: AtomicU32,
    depth: u32,
}

impl WindowCounters {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> Self {
        assert!(depth >= 1, "CmdSN window depth must be at least 1");
        WindowCounters { exp_cmd_sn: AtomicU32::new(exp_cmd_sn), active: AtomicU32::new(0), depth }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.load(Ordering::Acquire)
    }

    /// Current MaxCmdSN.
    pub fn max_cmd_sn(&self) -> u32 {
        let free = self.depth.saturating_sub(self.active.load(Ordering::Acquire));
        self.exp_cmd_sn().wrapping_add(free).wrapping_sub(1)
    }

    /// Number of free slots (commands that may still be accepted beyond ExpCmdSN − 1).
    fn free(&self) -> u32 {
        self.depth.saturating_sub(self.active.load(Ordering::Acquire))
    }

    pub fn task_started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    /// Called before a task's final response is queued, so that response already reopens the window.
    pub fn task_finished(&self) {
        let prev = self.active.fetch_sub(1, Ordering::AcqRel);
        assert!(prev > 0, "task_finished without task_started");
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    fn advance(&self) {
        self.exp_cmd_sn.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether `a` is before `b` in RFC 1982 serial arithmetic (32-bit).
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// What happened to a submitted command.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted<T> {
    /// Deliverable now, in this order (the submitted one first, then any buffered successors).
    Deliver(Vec<T>),
    /// Early but inside the window: buffered until the gap is filled.
    Buffered,
    /// Outside the window or a duplicate: silently ignored.
    Ignored,
}

/// Reorders non-immediate commands by CmdSN.
#[derive(Debug)]
pub struct CmdSequencer<T> {
    pending: HashMap<u32, T>,
}

impl<T> Default for CmdSequencer<T> {
    fn default() -> Self {
        CmdSequencer { pending: HashMap::new() }
    }
}

impl<T> CmdSequencer<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Submits a non-immediate command. Delivered commands have advanced ExpCmdSN.
    pub fn submit(&mut self, counters: &WindowCounters, cmd_sn: u32, item: T) -> Submitted<T> {
        let exp = counters.exp_cmd_sn();
        let offset = cmd_sn.wrapping_sub(exp);
        if offset >= counters.free() || self.pending.contains_key(&cmd_sn) {
            return Submitted::Ignored;
        }
        if offset > 0 {
            self.pending.insert(cmd_sn, item);
            return Submitted::Buffered;
        }
        counters.advance();
        let mut out = vec![item];
        while let Some(next) = self.pending.remove(&counters.exp_cmd_sn()) {
            counters.advance();
            out.push(next);
        }
        Submitted::Deliver(out)
    }

    /// Buffered commands, for abort handling.
    pub fn pending_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pending.values_mut()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_and_window() {
        let c = WindowCounters::new(10, 4);
        assert_eq!(c.max_cmd_sn(), 13);
        let mut s = CmdSequencer::new();
        assert_eq!(s.submit(&c, 12, "c"), Submitted::Buffered);
        assert_eq!(s.submit(&c, 11, "b"), Submitted::Buffered);
        assert_eq!(s.submit(&c, 11, "dup"), Submitted::Ignored);
        assert_eq!(s.submit(&c, 14, "too high"), Submitted::Ignored);
        assert_eq!(s.submit(&c, 9, "too low"), Submitted::Ignored);
        assert_eq!(s.submit(&c, 10, "a"), Submitted::Deliver(vec!["a", "b", "c"]));
        assert_eq!(c.exp_cmd_sn(), 13);
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn active_tasks_hold_the_window() {
        let c = WindowCounters::new(0, 2);
        let mut s = CmdSequencer::new();
        assert!(matches!(s.submit(&c, 0, ()), Submitted::Deliver(_)));
        c.task_started();
        assert_eq!(c.max_cmd_sn(), 1, "admission keeps MaxCmdSN constant");
        assert!(matches!(s.submit(&c, 1, ()), Submitted::Deliver(_)));
        c.task_started();
        assert_eq!(c.max_cmd_sn(), 1, "window closed: MaxCmdSN = ExpCmdSN - 1");
        assert_eq!(s.submit(&c, 2, ()), Submitted::Ignored);
        c.task_finished();
        assert_eq!(c.max_cmd_sn(), 2);
        assert!(matches!(s.submit(&c, 2, ()), Submitted::Deliver(_)));
    }

    #[test]
    fn wraps_around_u32() {
        let c = WindowCounters::new(u32::MAX, 8);
        let mut s = CmdSequencer::new();
        assert_eq!(s.submit(&c, 0, 2), Submitted::Buffered);
        assert_eq!(s.submit(&c, u32::MAX, 1), Submitted::Deliver(vec![1, 2]));
        assert_eq!(c.exp_cmd_sn(), 1);
        assert!(serial_lt(u32::MAX, 0));
        assert!(!serial_lt(0, u32::MAX));
        assert!(!serial_lt(5, 5));
    }
}
