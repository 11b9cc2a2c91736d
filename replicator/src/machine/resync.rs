//! Bitmap-driven resync, pushed by the SyncSource: read a run of out-of-sync blocks, send it, clear the
//! bits when the target acknowledges that it is on its disk. Runs in disk order from a cursor, holds the
//! blocks it is moving against application writes (and waits for application writes already in
//! flight), honours the configured rate with a token bucket, and keeps as much in flight as the
//! dynamic resync controller allows (`resync_controller.rs`: the application's write latency decides),
//! or, with the controller off, shrinks a static window while the application writes.
//!
//! Before the first block goes out the source flushes its own disk. What it sends is what its disk
//! *shows*, and the target writes it stably (FUA) and both clear the bits; if that data were only in
//! the source's volatile cache — written by a previous incarnation that crashed, or received from the
//! peer while Secondary, neither tracked by anything here — a power loss of the source would leave the
//! two disks different with no bit set to say so. Writes made after the flush are the application's,
//! held in the activity log until a flush covers them (`barrier.rs`).
//!
//! The end: the source retires its bitmap UUID (the target is about to hold its current generation),
//! sends its generation tuple and `ResyncFinished`; the target adopts the tuple, becomes UpToDate and
//! answers `ResyncFinished`. A target that crashes before adopting comes back Inconsistent and syncs
//! from the source again.

use super::datapath::block_span;
use super::node::{Action, Node, Purpose, BLOCK, RESYNC_CHUNK};
use super::state::{DiskState, ReplState};
use super::uuids::Uuids;
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::flags;
use crate::wire::frame::Frame;
use bytes::Bytes;

/// Requests in flight when the application is idle / busy.
const WINDOW_IDLE: usize = 16;
const WINDOW_BUSY: usize = 2;
/// The application counts as busy for this long after its last write.
const BUSY_MS: u64 = 100;
/// The resync's own rate (for `c-min-rate`) is measured over windows of at least this long.
const RATE_WINDOW_MS: u64 = 1_000;
/// With the controller, requests in flight are bounded by count too: a sparse bitmap makes 4 KiB
/// requests, and thousands of them would flood the disk queues whatever their bytes.
const CONTROLLED_MAX_REQUESTS: usize = 64;

impl Node {
    /// Feed the dynamic resync controller the resync's state once per tick (`resync_controller.rs`).
    pub(crate) fn tick_resync_controller(&mut self) {
        let active = self.repl == ReplState::SyncSource && !self.sync_paused();
        let now = self.now_ms;
        // The resync's own rate is known once a rate window has passed since it started (before,
        // `recent_rate` is 0 and would hold the controller's budget up for that first second).
        let (in_flight, rate) = self.resync.as_ref().map_or((0, None), |r| {
            let known = now.saturating_sub(r.started_ms) >= RATE_WINDOW_MS;
            (r.inflight.values().sum(), known.then_some(r.recent_rate))
        });
        let below_min_rate = active && self.p.c_min_rate.zip(rate).is_some_and(|(min, rate)| rate < min);
        self.rs_ctl.tick(self.now_ms, active, in_flight, below_min_rate);
    }

    pub(crate) fn pump_resync(&mut self) {
        if self.repl != ReplState::SyncSource || self.sync_paused() {
            return;
        }
        let Some(conn) = self.up_conn() else { return };
        let now = self.now_ms;
        let busy = now.saturating_sub(self.last_app_write_ms) < BUSY_MS && self.last_app_write_ms != 0;
        let c_min_rate = self.p.c_min_rate;
        let control = self.p.resync_control.enabled();
        // With the controller, `c-max-rate` caps the rate too (the lower of the two caps holds).
        let rate = match (self.p.resync_rate, self.p.resync_control.max_rate.filter(|_| control)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The controller's budget (bytes in flight, request size), or the static window.
        let budget = self.rs_ctl.budget();
        let Some(rs) = self.resync.as_mut() else { return };
        // `c-min-rate`: the resync yields to the application only while it gets at least that much
        // itself, so a busy application slows it down but never starves it.
        let window = if busy && c_min_rate.is_some_and(|min| rs.recent_rate >= min) { WINDOW_BUSY } else { WINDOW_IDLE };
        let (max_in_flight, chunk) = if control {
            (budget.in_flight_bytes, budget.chunk_bytes)
        } else {
            (window as u64 * RESYNC_CHUNK, RESYNC_CHUNK)
        };
        if rs.finishing || !rs.stable {
            return;
        }
        if let Some(r) = rate {
            let elapsed = now.saturating_sub(rs.last_refill_ms) as f64 / 1000.0;
            // Up to half a second of unused budget carries over (at least two requests, so slow caps
            // still move): a late tick must not cost the resync its share of the rate.
            let cap = (r as f64 / 2.0).max(2.0 * RESYNC_CHUNK as f64);
            rs.budget_bytes = (rs.budget_bytes + r as f64 * elapsed).min(cap);
            rs.last_refill_ms = now;
        }
        let mut in_flight: u64 = rs.inflight.values().sum();
        // Checksum requests are charged only for the data that then differs (`csums.rs`).
        let csums = self.csums_now();
        let mut wrapped = false;
        let mut issued = Vec::new();
        // Bounded: every iteration either issues a request, skips past a busy block, or stops.
        for _ in 0..4096 {
            let Some(rs) = self.resync.as_ref() else { return };
            // `inflight` already holds what this call issued. The controller bounds bytes (each
            // request is cut to what is left of the budget) and, loosely, the request count.
            let full = if control { in_flight >= max_in_flight || rs.inflight.len() >= CONTROLLED_MAX_REQUESTS } else { rs.inflight.len() >= window };
            if full {
                break;
            }
            let Some(b) = self.bitmap.next_set(rs.cursor) else {
                if wrapped || rs.cursor == 0 {
                    break;
                }
                wrapped = true;
                if let Some(rs) = self.resync.as_mut() {
                    rs.cursor = 0;
                }
                continue;
            };
            let max_blocks = (chunk.min(max_in_flight.saturating_sub(in_flight)).max(BLOCK) / BLOCK).max(1);
            let mut n = 1;
            while n < max_blocks && self.bitmap.test(b + n) {
                n += 1;
            }
            let (offset, mut len) = (b * BLOCK, n * BLOCK);
            len = len.min(self.p.data_size.saturating_sub(offset));
            // Blocks under an application write or already being resynced wait for a later pass.
            if self.conflicts(offset, len, 0) {
                if let Some(rs) = self.resync.as_mut() {
                    rs.cursor = b + n;
                }
                continue;
            }
            if rate.is_some() && rs.budget_bytes < if csums { 0.0 } else { len as f64 } {
                break;
            }
            if let Some(rs) = self.resync.as_mut() {
                rs.cursor = b + n;
                rs.inflight.insert(offset, len);
                in_flight += len;
                if rate.is_some() && !csums {
                    rs.budget_bytes -= len as f64;
                }
            }
            issued.push((offset, len));
        }
        if !issued.is_empty() {
            self.rs_ctl.on_resync_busy();
        }
        for (offset, len) in issued {
            if csums {
                self.issue_csum_chunk(conn, offset, len);
                continue;
            }
            let token = self.token(Purpose::ResyncRead { conn, offset });
            self.out.push(Action::DiskRead { token, offset, len });
        }
        let done = self.resync.as_ref().is_some_and(|r| r.inflight.is_empty()) && self.bitmap.count() == 0;
        if done {
            if let Some(rs) = self.resync.as_mut() {
                rs.finishing = true;
            }
            // The target is about to hold our current generation: retire the bitmap UUID now (as DRBD
            // does), so that any write we make without the peer from here on starts a new generation.
            // If the target crashes before adopting, it is Inconsistent and syncs fully from us.
            self.persisted.uuids.finish_resync_as_source();
            self.persist_flags(self.persisted.flags);
            let msg = self.uuids_msg();
            self.send(conn, Frame::Uuids(msg));
            self.send(conn, Frame::ResyncFinished);
        }
    }

    pub(crate) fn resync_flush_done(&mut self, conn: u64, result: Result<(), String>) {
        let current = self.link.as_ref().is_some_and(|l| l.conn == conn);
        let Some(rs) = self.resync.as_mut().filter(|_| current) else { return };
        match result {
            Ok(()) => {
                rs.stable = true;
                self.pump_resync();
            }
            Err(e) => self.abort(conn, &format!("resync source could not flush its disk: {e}"), true),
        }
    }

    pub(crate) fn resync_read_done(&mut self, conn: u64, offset: u64, result: Result<Option<Bytes>, String>) {
        let current = self.link.as_ref().is_some_and(|l| l.conn == conn) && self.resync.is_some();
        if !current {
            return;
        }
        match result {
            Ok(Some(data)) => {
                self.stats.resync_blocks_sent += data.len() as u64 / BLOCK;
                self.send(conn, Frame::RsData { offset, data });
            }
            Ok(None) | Err(_) => {
                let e = result.err().unwrap_or_else(|| "no data".into());
                if let Some(rs) = self.resync.as_mut() {
                    rs.inflight.remove(&offset);
                }
                self.abort(conn, &format!("resync source could not read its disk at {offset}: {e}"), true);
            }
        }
    }

    pub(crate) fn on_rs_ack(&mut self, offset: u64, len: u64, ok: bool) {
        let Some(rs) = self.resync.as_mut() else { return };
        if rs.inflight.remove(&offset).is_none() {
            return;
        }
        if ok {
            let now = self.now_ms;
            rs.rate_window_bytes += len;
            let elapsed = now.saturating_sub(rs.rate_window_ms);
            if elapsed >= RATE_WINDOW_MS {
                rs.recent_rate = rs.rate_window_bytes * 1000 / elapsed;
                (rs.rate_window_ms, rs.rate_window_bytes) = (now, 0);
            }
            let (b0, b1) = block_span(offset, len.max(1));
            for b in b0..=b1 {
                self.bitmap.clear_block(b);
            }
        } else {
            self.log(true, format!("{}: the SyncTarget failed to write [{offset}, +{len}); will retry", self.p.resource));
        }
        self.start_waiting_writes();
        self.pump_resync();
    }

    pub(crate) fn on_rs_data(&mut self, conn: u64, offset: u64, data: Bytes) {
        let len = data.len() as u64;
        if self.repl != ReplState::SyncTarget || len == 0 || self.in_range(offset, len).is_err() {
            self.abort(conn, &format!("protocol error: unexpected resync data [{offset}, +{len}) in state {}", self.repl), true);
            return;
        }
        self.stats.received_bytes += len;
        let token = self.token(Purpose::ResyncWrite { conn, offset, len });
        // FUA: the RsAck clears the source's bits and the completion clears ours (persisted lazily,
        // and the end of the resync makes this disk UpToDate), so "written" must mean "stable": a
        // resync write left in a volatile cache and lost in a power loss would be in sync for both
        // bitmaps and never sent again. One flush per chunk (≤ 1 MiB) is cheap for a background copy.
        self.out.push(Action::DiskWrite { token, offset, data, fua: true });
    }

    pub(crate) fn resync_write_done(&mut self, conn: u64, offset: u64, len: u64, result: Result<(), String>) {
        let ok = result.is_ok();
        if ok {
            let (b0, b1) = block_span(offset, len);
            for b in b0..=b1 {
                self.bitmap.clear_block(b);
            }
            self.stats.resync_blocks_received += len / BLOCK;
        } else if let Err(e) = result {
            self.log(true, format!("{}: resync write at {offset} failed: {e}", self.p.resource));
        }
        self.send(conn, Frame::RsAck { offset, len: len as u32, ok });
    }

    pub(crate) fn on_resync_finished(&mut self, conn: u64) {
        match self.repl {
            ReplState::SyncTarget => {
                let Some(pu) = self.link.as_ref().and_then(|l| l.peer_uuids) else {
                    self.abort(conn, "protocol error: resync finished without the source's generations", true);
                    return;
                };
                let history = if pu.bitmap != 0 { [pu.bitmap & !1, pu.history[0]] } else { pu.history };
                let mut u = Uuids { current: pu.current, bitmap: 0, history };
                u.set_role_bit(self.role == super::state::Role::Primary);
                self.persisted.uuids = u;
                self.bitmap = Bitmap::new(self.p.data_size);
                self.bitmap.mark_all_pages_dirty();
                self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
                self.disk = DiskState::UpToDate;
                self.peer_disk = DiskState::UpToDate;
                self.persist_flags((self.persisted.flags | flags::CONSISTENT | flags::WAS_UP_TO_DATE) & !flags::OUTDATED);
                self.repl = ReplState::Established;
                self.target_progress = None;
                self.csum_target = None;
                self.send(conn, Frame::ResyncFinished);
                self.out.push(Action::RunHandler("after-resync-target"));
                self.log(false, format!("{}: resync finished, this disk is UpToDate", self.p.resource));
                self.broadcast_state();
                self.changed();
            }
            ReplState::SyncSource if self.resync.as_ref().is_some_and(|r| r.finishing) => {
                let (total, started) = self.resync.as_ref().map(|r| (r.total_blocks, r.started_ms)).unwrap_or_default();
                self.repl = ReplState::Established;
                self.peer_disk = DiskState::UpToDate;
                self.resync = None;
                let secs = self.now_ms.saturating_sub(started) as f64 / 1000.0;
                let equal = self.stats.resync_csum_equal_bytes;
                self.log(false, format!(
                    "{}: resync done: {} KiB in {secs:.1} s ({:.1} MiB/s){}",
                    self.p.resource,
                    total * 4,
                    if secs > 0.0 { total as f64 * 4.0 / 1024.0 / secs } else { 0.0 },
                    if equal > 0 { format!(", {} KiB found equal by digest since start", equal / 1024) } else { String::new() }
                ));
                self.changed();
                self.start_waiting_writes();
            }
            _ => self.abort(conn, &format!("protocol error: ResyncFinished in state {}", self.repl), true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::node::Resync;
    use super::super::node::Input;
    use super::super::state::Role;
    use super::*;

    const SIZE: u64 = 64 << 20;

    /// A SyncSource Primary on an established link with every block marked, its disk flushed, the
    /// application writing a moment ago.
    fn source(c_min_rate: Option<u64>, recent_rate: u64) -> Node {
        source_with(c_min_rate, recent_rate, super::super::ControllerOptions { plan_ahead_ms: 0, ..Default::default() })
    }

    fn source_with(c_min_rate: Option<u64>, recent_rate: u64, control: super::super::ControllerOptions) -> Node {
        let mut bitmap = Bitmap::new(SIZE);
        bitmap.set_all();
        let mut n = super::super::test_support::established_node("node1", "node2", SIZE, Some(bitmap), crate::wire::frame::PROTOCOLS.max, |p| {
            p.c_min_rate = c_min_rate;
            p.resync_control = control;
            p.csums = super::super::csums::CsumsOptions { alg: None, every_resync: false };
        });
        n.role = Role::Primary;
        n.disk = DiskState::UpToDate;
        n.repl = ReplState::SyncSource;
        n.now_ms = 10_000;
        n.last_app_write_ms = 9_990;
        n.resync = Some(Resync { stable: true, recent_rate, rate_window_ms: 9_000, started_ms: 9_000, last_refill_ms: 9_000, ..Default::default() });
        n
    }

    fn reads_issued(n: &mut Node) -> usize {
        read_lens(n).len()
    }

    fn read_lens(n: &mut Node) -> Vec<u64> {
        n.out.clear();
        n.pump_resync();
        n.out.iter().filter_map(|a| if let Action::DiskRead { len, .. } = a { Some(*len) } else { None }).collect()
    }

    #[test]
    fn the_controller_s_budget_bounds_the_bytes_in_flight_and_the_request_size() {
        let control = super::super::ControllerOptions::default();
        let mut n = source_with(Some(250 << 10), 0, control);
        // A fresh controller: a quarter of the fill target, in requests of a quarter of that.
        let b = n.rs_ctl.budget();
        assert_eq!((b.in_flight_bytes, b.chunk_bytes), (4 << 20, 1 << 20));
        assert_eq!(read_lens(&mut n), vec![1 << 20; 4]);
        // A small fill target (1 MiB: a fresh budget of 256 KiB): small requests, the total within it.
        let mut small = source_with(Some(250 << 10), 0, super::super::ControllerOptions { fill_target: 1 << 20, ..control });
        let lens = read_lens(&mut small);
        assert_eq!(lens, vec![64 << 10; 4]);
        // Acknowledgements make room for the next requests, never more than the budget.
        small.on_rs_ack(0, 64 << 10, true);
        let in_flight: u64 = small.resync.as_ref().map_or(0, |r| r.inflight.values().sum());
        assert_eq!(in_flight, 256 << 10);
    }

    #[test]
    fn a_controller_probe_holds_the_resync_and_the_application_s_latency_steers_it() {
        let mut n = source_with(Some(0), 0, super::super::ControllerOptions::default());
        let step = |n: &mut Node| {
            n.now_ms += 100;
            n.step(Input::AppWriteLatencies(vec![300; 100]));
            n.tick_resync_controller();
        };
        n.tick_resync_controller();
        assert_eq!(reads_issued(&mut n), 4);
        // No baseline yet and the application writes: a probe; nothing more goes out.
        step(&mut n);
        assert!(n.rs_ctl.view().probing);
        let in_flight: Vec<(u64, u64)> = n.resync.as_ref().map(|r| r.inflight.iter().map(|(o, l)| (*o, *l)).collect()).unwrap_or_default();
        n.out.clear();
        for (offset, len) in in_flight {
            n.on_rs_ack(offset, len, true);
        }
        assert!(!n.out.iter().any(|a| matches!(a, Action::DiskRead { .. })));
        // The step that saw the resync drain is not quiet; the next one gives the baseline, and the
        // resync goes on.
        step(&mut n);
        assert!(n.rs_ctl.view().probing);
        step(&mut n);
        assert_eq!(n.rs_ctl.view().baseline_p99_us, Some(300.0));
        assert!(reads_issued(&mut n) > 0);
    }

    #[test]
    fn status_shows_the_controller_while_it_runs_a_resync() {
        let mut n = source_with(Some(0), 0, super::super::ControllerOptions::default());
        n.tick_resync_controller();
        let c = n.snapshot().resync_controller.expect("a resync with the controller on");
        assert_eq!((c.budget_bytes, c.fill_target_bytes, c.baseline_p99_us, c.throttling), (4 << 20, 16 << 20, None, false));
        assert!(reads_issued(&mut n) > 0);
        // The application writes and no baseline is known: a probe holds the resync back.
        n.now_ms += 100;
        n.step(Input::AppWriteLatencies(vec![300; 100]));
        n.tick_resync_controller();
        let c = n.snapshot().resync_controller.expect("running");
        assert!(c.throttling && c.probing && c.budget_bytes == 0, "{c:?}");
        // Controller off: nothing to show.
        let off = source_with(Some(0), 0, super::super::ControllerOptions { plan_ahead_ms: 0, ..Default::default() });
        assert_eq!(off.snapshot().resync_controller, None);
    }

    #[test]
    fn c_min_rate_decides_whether_the_resync_yields_to_a_busy_application() {
        // At or above its floor the resync yields: the small window.
        assert_eq!(reads_issued(&mut source(Some(250 << 10), 300 << 10)), WINDOW_BUSY);
        assert_eq!(reads_issued(&mut source(Some(0), 0)), WINDOW_BUSY);
        // Below the floor it keeps its full window although the application writes.
        assert_eq!(reads_issued(&mut source(Some(250 << 10), 100 << 10)), WINDOW_IDLE);
        // c-min-rate 0 (None): it never yields.
        assert_eq!(reads_issued(&mut source(None, 900 << 20)), WINDOW_IDLE);
        // An idle application gets the full window whatever the floor.
        let mut idle = source(Some(0), 0);
        idle.last_app_write_ms = 1;
        assert_eq!(reads_issued(&mut idle), WINDOW_IDLE);
    }

    #[test]
    fn the_resync_measures_its_own_rate_per_second_of_acknowledgements() {
        let mut n = source(Some(250 << 10), 0);
        // 1 MiB acknowledged over the window that began at 9 000: 1 MiB/s once a second has passed.
        n.resync.as_mut().map(|r| r.inflight.insert(0, 1 << 20));
        n.on_rs_ack(0, 1 << 20, true);
        assert_eq!(n.resync.as_ref().map(|r| r.recent_rate), Some(1 << 20));
    }
}
