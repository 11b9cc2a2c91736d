//! CmdSN window and in-order delivery (RFC 7143 §4.2.2.1).
//!
//! Non-immediate commands are accepted when ExpCmdSN ≤ CmdSN ≤ MaxCmdSN (serial arithmetic), buffered
//! if they arrive early, and delivered strictly in CmdSN order. Anything outside the window is silently
//! ignored, which is what the RFC and libiscsi's iSCSIcmdsn tests demand (no reply, no drop).
//! MaxCmdSN = ExpCmdSN + depth − 1 − active: commands still executing keep their slot, so the window is
//! the bound on commands in flight, and it never shrinks on the wire (admitting one command advances
//! ExpCmdSN and `active` together; completing one grows the window).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the reader (ExpCmdSN, admission), executing tasks (completion) and the writer
/// (which stamps ExpCmdSN/MaxCmdSN on every outgoing PDU).
///
/// ExpCmdSN and the active count live in one atomic word so that admitting a command (ExpCmdSN + 1 and
/// active + 1 together) is never observed half done: a half-done admission would advertise a MaxCmdSN
/// one too high, the initiator would use it, and the command would then be dropped as out of window.
#[derive(Debug)]
pub struct WindowCounters {
    /// Low 32 bits: ExpCmdSN; high 32 bits: commands admitted and not finished.
    state: AtomicU64,
    depth: u32,
}

fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

fn join(exp: u32, active: u32) -> u64 {
    (u64::from(active) << 32) | u64::from(exp)
}

impl WindowCounters {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> Self {
        assert!(depth >= 1, "CmdSN window depth must be at least 1");
        WindowCounters {
            state: AtomicU64::new(join(exp_cmd_sn, 0)),
            depth,
        }
    }

    fn update(&self, f: impl Fn(u32, u32) -> (u32, u32)) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (exp, active) = split(v);
                let (exp, active) = f(exp, active);
                Some(join(exp, active))
            });
    }

    /// A consistent (ExpCmdSN, MaxCmdSN) pair.
    pub fn snapshot(&self) -> (u32, u32) {
        let (exp, active) = split(self.state.load(Ordering::Acquire));
        let free = self.depth.saturating_sub(active);
        (exp, exp.wrapping_add(free).wrapping_sub(1))
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.snapshot().0
    }

    /// Current MaxCmdSN.
    pub fn max_cmd_sn(&self) -> u32 {
        self.snapshot().1
    }

    /// Number of free slots (commands that may still be accepted beyond ExpCmdSN − 1).
    fn free(&self) -> u32 {
        self.depth.saturating_sub(self.active())
    }

    /// Called before a task's final response is queued, so that response already reopens the window.
    pub fn task_finished(&self) {
        let (_, active) = split(self.state.load(Ordering::Acquire));
        assert!(active > 0, "task_finished without an admitted task");
        self.update(|exp, active| (exp, active.saturating_sub(1)));
    }

    pub fn active(&self) -> u32 {
        split(self.state.load(Ordering::Acquire)).1
    }

    /// Advances ExpCmdSN; `counted` admits a command that holds a slot until `task_finished`.
    fn advance(&self, counted: bool) {
        self.update(|exp, active| (exp.wrapping_add(1), active + u32::from(counted)));
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
    pending: HashMap<u32, (T, bool)>,
}

impl<T> Default for CmdSequencer<T> {
    fn default() -> Self {
        CmdSequencer {
            pending: HashMap::new(),
        }
    }
}

impl<T> CmdSequencer<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Submits a non-immediate command. Delivered commands have advanced ExpCmdSN, and `counted` ones
    /// (SCSI commands) hold a window slot until [`WindowCounters::task_finished`].
    pub fn submit(
        &mut self,
        counters: &WindowCounters,
        cmd_sn: u32,
        item: T,
        counted: bool,
    ) -> Submitted<T> {
        let exp = counters.exp_cmd_sn();
        let offset = cmd_sn.wrapping_sub(exp);
        if offset >= counters.free() || self.pending.contains_key(&cmd_sn) {
            return Submitted::Ignored;
        }
        if offset > 0 {
            self.pending.insert(cmd_sn, (item, counted));
            return Submitted::Buffered;
        }
        counters.advance(counted);
        let mut out = vec![item];
        while let Some((next, counted)) = self.pending.remove(&counters.exp_cmd_sn()) {
            counters.advance(counted);
            out.push(next);
        }
        Submitted::Deliver(out)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing is waiting for a CmdSN gap to close.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
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
        assert_eq!(s.submit(&c, 12, "c", false), Submitted::Buffered);
        assert_eq!(s.submit(&c, 11, "b", false), Submitted::Buffered);
        assert_eq!(s.submit(&c, 11, "dup", false), Submitted::Ignored);
        assert_eq!(s.submit(&c, 14, "too high", false), Submitted::Ignored);
        assert_eq!(s.submit(&c, 9, "too low", false), Submitted::Ignored);
        assert_eq!(
            s.submit(&c, 10, "a", false),
            Submitted::Deliver(vec!["a", "b", "c"])
        );
        assert_eq!(c.exp_cmd_sn(), 13);
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn active_tasks_hold_the_window() {
        let c = WindowCounters::new(0, 2);
        let mut s = CmdSequencer::new();
        assert!(matches!(s.submit(&c, 0, (), true), Submitted::Deliver(_)));
        assert_eq!(c.snapshot(), (1, 1), "admission keeps MaxCmdSN constant");
        assert!(matches!(s.submit(&c, 1, (), true), Submitted::Deliver(_)));
        assert_eq!(
            c.snapshot(),
            (2, 1),
            "window closed: MaxCmdSN = ExpCmdSN - 1"
        );
        assert_eq!(s.submit(&c, 2, (), true), Submitted::Ignored);
        c.task_finished();
        assert_eq!(c.max_cmd_sn(), 2);
        assert!(matches!(s.submit(&c, 2, (), false), Submitted::Deliver(_)));
        assert_eq!(
            c.snapshot(),
            (3, 3),
            "uncounted PDUs (NOP-Out, Text) only advance ExpCmdSN"
        );
        assert_eq!(c.active(), 1);
    }

    #[test]
    fn wraps_around_u32() {
        let c = WindowCounters::new(u32::MAX, 8);
        let mut s = CmdSequencer::new();
        assert_eq!(s.submit(&c, 0, 2, true), Submitted::Buffered);
        assert_eq!(
            s.submit(&c, u32::MAX, 1, true),
            Submitted::Deliver(vec![1, 2])
        );
        assert_eq!(c.active(), 2);
        assert_eq!(c.exp_cmd_sn(), 1);
        assert!(serial_lt(u32::MAX, 0));
        assert!(!serial_lt(0, u32::MAX));
        assert!(!serial_lt(5, 5));
    }
}
