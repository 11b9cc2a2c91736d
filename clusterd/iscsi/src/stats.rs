//! Target counters for monitoring (`/metrics` in clusterd): logins, sessions, commands by opcode, command
//! latency, data bytes, task management functions and reservation conflicts.
//!
//! WHY sharded per session: the data path must not slow down when it is counted. Every session owns
//! its own [`SessionCounters`] (plain relaxed atomics, no lock, no allocation per command), so two
//! sessions on two cores never write the same cache line; a scrape sums the live shards and the shards
//! of sessions that already ended (folded into one per target when they end). The shard list's mutex is
//! taken at login, at logout and by a scrape, never per command. With counting disabled
//! ([`TargetStats::disabled`]) a session gets no shard and its commands do no counting at all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::scsi::opcodes::op;

/// Upper bounds (seconds) of the command latency buckets: 50 µs (a page-cache hit) to 10 s (I/O
/// suspended by fencing, a peer timeout).
pub const LATENCY_BOUNDS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const LATENCY_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A fixed-bucket histogram of plain atomics (the last bucket is +Inf). Observing is a bucket search
/// over 17 constants and three relaxed increments.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram read out: per-bucket counts, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations in this bucket)`, NOT cumulative (the form
    /// prometheus-client's encoder takes; it writes the cumulative `le` series); the last bound is
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn add_to(&self, raw: &mut RawHistogram) {
        for (acc, b) in raw.buckets.iter_mut().zip(&self.buckets) {
            *acc += b.load(Ordering::Relaxed);
        }
        raw.sum_ns += self.sum_ns.load(Ordering::Relaxed);
        raw.count += self.count.load(Ordering::Relaxed);
    }

    fn absorb(&self, other: &LatencyHistogram) {
        for (b, o) in self.buckets.iter().zip(&other.buckets) {
            b.fetch_add(o.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(other.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
        self.count.fetch_add(other.count.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Per-bucket (not cumulative) sums while reading several shards.
#[derive(Debug, Default, Clone)]
struct RawHistogram {
    buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: u64,
    count: u64,
}

impl RawHistogram {
    fn snapshot(&self) -> HistogramSnapshot {
        let buckets = LATENCY_BOUNDS_SECONDS.iter().copied().chain([f64::INFINITY]).zip(self.buckets).collect();
        HistogramSnapshot { buckets, sum_seconds: self.sum_ns as f64 / 1e9, count: self.count }
    }
}

/// Which latency histogram a command lands in (the read / write / flush; others are counted
/// by opcode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandClass {
    Read,
    Write,
    Flush,
}

impl CommandClass {
    pub const ALL: [CommandClass; 3] = [CommandClass::Read, CommandClass::Write, CommandClass::Flush];

    pub fn of(opcode: u8) -> Option<CommandClass> {
        match opcode {
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => Some(CommandClass::Read),
            op::WRITE_6
            | op::WRITE_10
            | op::WRITE_12
            | op::WRITE_16
            | op::WRITE_VERIFY_10
            | op::WRITE_VERIFY_12
            | op::WRITE_VERIFY_16 => Some(CommandClass::Write),
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => Some(CommandClass::Flush),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CommandClass::Read => "read",
            CommandClass::Write => "write",
            CommandClass::Flush => "flush",
        }
    }
}

/// One session's counters (see the module comment for why per session).
#[derive(Debug)]
pub struct SessionCounters {
    commands: [AtomicU64; 256],
    latency: [LatencyHistogram; 3],
    /// Data-In (target → initiator) and Data-Out (initiator → target) payload bytes.
    data_in_bytes: AtomicU64,
    data_out_bytes: AtomicU64,
    /// Task management requests by function code (RFC 7143 §11.5.1: 1 ABORT TASK … 8 TASK REASSIGN).
    tmf: [AtomicU64; 16],
    reservation_conflicts: AtomicU64,
}

impl Default for SessionCounters {
    fn default() -> Self {
        SessionCounters {
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Default::default(),
            data_in_bytes: AtomicU64::new(0),
            data_out_bytes: AtomicU64::new(0),
            tmf: Default::default(),
            reservation_conflicts: AtomicU64::new(0),
        }
    }
}

impl SessionCounters {
    /// One finished SCSI command: its CDB opcode, how long it ran, its payload both ways and status.
    pub fn command_done(&self, opcode: u8, took: Duration, data_out: usize, data_in: usize, status: u8) {
        self.commands[usize::from(opcode)].fetch_add(1, Ordering::Relaxed);
        if let Some(class) = CommandClass::of(opcode) {
            self.latency[class as usize].observe(took);
        }
        if data_out > 0 {
            self.data_out_bytes.fetch_add(data_out as u64, Ordering::Relaxed);
        }
        if data_in > 0 {
            self.data_in_bytes.fetch_add(data_in as u64, Ordering::Relaxed);
        }
        if status == crate::scsi::STATUS_RESERVATION_CONFLICT {
            self.reservation_conflicts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn task_management(&self, function: u8) {
        self.tmf[usize::from(function & 0x0f)].fetch_add(1, Ordering::Relaxed);
    }

    fn absorb(&self, other: &SessionCounters) {
        let add = |a: &AtomicU64, b: &AtomicU64| {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        self.commands.iter().zip(&other.commands).for_each(|(a, b)| add(a, b));
        self.tmf.iter().zip(&other.tmf).for_each(|(a, b)| add(a, b));
        self.latency.iter().zip(&other.latency).for_each(|(a, b)| a.absorb(b));
        add(&self.data_in_bytes, &other.data_in_bytes);
        add(&self.data_out_bytes, &other.data_out_bytes);
        add(&self.reservation_conflicts, &other.reservation_conflicts);
    }
}

/// Why a login was refused, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoginRefusal {
    /// CHAP failed (wrong secret or user, or no CHAP offered where required): status 02/01.
    Chap,
    /// The target's ACL does not admit the initiator name or address: status 02/02.
    Acl,
    /// No such target: status 02/03.
    NotFound,
    /// Anything else (negotiation errors, reinstatement failures, target errors).
    Other,
}

impl LoginRefusal {
    pub const ALL: [LoginRefusal; 4] = [LoginRefusal::Chap, LoginRefusal::Acl, LoginRefusal::NotFound, LoginRefusal::Other];

    /// From a Login Response status class and detail.
    pub fn from_status(class: u8, detail: u8) -> LoginRefusal {
        match (class, detail) {
            (2, 1) => LoginRefusal::Chap,
            (2, 2) => LoginRefusal::Acl,
            (2, 3) => LoginRefusal::NotFound,
            _ => LoginRefusal::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LoginRefusal::Chap => "chap",
            LoginRefusal::Acl => "acl",
            LoginRefusal::NotFound => "not_found",
            LoginRefusal::Other => "other",
        }
    }
}

/// Live sessions' shards and, per target, the totals of sessions that ended.
#[derive(Debug, Default)]
struct Shards {
    live: Vec<(u64, String, Arc<SessionCounters>)>,
    ended: BTreeMap<String, SessionCounters>,
    next_id: u64,
}

/// Every counter of one target server. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct TargetStats {
    /// Switched on when a metrics listener starts (`haadm adjust`); sessions logged in before then
    /// are not counted.
    enabled: std::sync::atomic::AtomicBool,
    shards: Mutex<Shards>,
    /// Successful logins of normal sessions, per target.
    logins: Mutex<BTreeMap<String, u64>>,
    refusals: [AtomicU64; 4],
}

/// The totals of one target, summed over its sessions (live and ended).
#[derive(Debug, Clone, Default)]
pub struct TargetTotals {
    /// `(opcode, commands)` for every opcode seen at least once.
    pub commands: Vec<(u8, u64)>,
    pub latency: Vec<(CommandClass, HistogramSnapshot)>,
    pub data_in_bytes: u64,
    pub data_out_bytes: u64,
    /// `(function code, requests)` for every function seen.
    pub tmf: Vec<(u8, u64)>,
    pub reservation_conflicts: u64,
    pub logins: u64,
}

impl TargetStats {
    pub fn enabled() -> TargetStats {
        TargetStats { enabled: true.into(), shards: Mutex::default(), logins: Mutex::default(), refusals: Default::default() }
    }

    /// Counts nothing: sessions get no shard (the metrics-off configuration and the benchmark's
    /// reference).
    pub fn disabled() -> TargetStats {
        TargetStats { enabled: false.into(), ..TargetStats::enabled() }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counting from new sessions on (or, off, for no new session; live ones keep their shard).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    fn shards(&self) -> MutexGuard<'_, Shards> {
        // Every critical section leaves the lists consistent; a panic elsewhere does not poison them.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new normal session of `target` logged in: its shard (None when counting is disabled).
    pub fn session_started(self: &Arc<Self>, target: &str) -> Option<SessionShard> {
        if !self.is_enabled() {
            return None;
        }
        *self.logins.lock().unwrap_or_else(|p| p.into_inner()).entry(target.to_string()).or_default() += 1;
        let counters = Arc::new(SessionCounters::default());
        let mut s = self.shards();
        s.next_id += 1;
        let id = s.next_id;
        s.live.push((id, target.to_string(), Arc::clone(&counters)));
        Some(SessionShard { id, counters, stats: Arc::clone(self) })
    }

    pub fn login_refused(&self, why: LoginRefusal) {
        if self.is_enabled() {
            self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refusals(&self) -> Vec<(LoginRefusal, u64)> {
        LoginRefusal::ALL.iter().map(|&r| (r, self.refusals[r as usize].load(Ordering::Relaxed))).collect()
    }

    /// Totals per target (every target that had a session since start).
    pub fn totals(&self) -> BTreeMap<String, TargetTotals> {
        let s = self.shards();
        let mut sums: BTreeMap<String, RawTotals> = BTreeMap::new();
        let shards = s.ended.iter().chain(s.live.iter().map(|(_, t, c)| (t, c.as_ref())));
        for (target, c) in shards {
            sums.entry(target.clone()).or_default().add(c);
        }
        drop(s);
        let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner()).clone();
        sums.into_iter()
            .map(|(target, raw)| {
                let logins = logins.get(&target).copied().unwrap_or(0);
                (target, raw.totals(logins))
            })
            .collect()
    }
}

/// Sums over several shards while reading them.
struct RawTotals {
    commands: [u64; 256],
    tmf: [u64; 16],
    latency: [RawHistogram; 3],
    data_in: u64,
    data_out: u64,
    reservation_conflicts: u64,
}

impl Default for RawTotals {
    fn default() -> Self {
        RawTotals { commands: [0; 256], tmf: [0; 16], latency: Default::default(), data_in: 0, data_out: 0, reservation_conflicts: 0 }
    }
}

impl RawTotals {
    fn add(&mut self, c: &SessionCounters) {
        for (acc, n) in self.commands.iter_mut().zip(&c.commands) {
            *acc += n.load(Ordering::Relaxed);
        }
        for (acc, n) in self.tmf.iter_mut().zip(&c.tmf) {
            *acc += n.load(Ordering::Relaxed);
        }
        for (raw, h) in self.latency.iter_mut().zip(&c.latency) {
            h.add_to(raw);
        }
        self.data_in += c.data_in_bytes.load(Ordering::Relaxed);
        self.data_out += c.data_out_bytes.load(Ordering::Relaxed);
        self.reservation_conflicts += c.reservation_conflicts.load(Ordering::Relaxed);
    }

    fn totals(&self, logins: u64) -> TargetTotals {
        let nonzero = |v: &[u64]| v.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (i as u8, *n)).collect();
        TargetTotals {
            commands: nonzero(&self.commands),
            latency: CommandClass::ALL.iter().map(|&c| (c, self.latency[c as usize].snapshot())).collect(),
            data_in_bytes: self.data_in,
            data_out_bytes: self.data_out,
            tmf: nonzero(&self.tmf),
            reservation_conflicts: self.reservation_conflicts,
            logins,
        }
    }
}

/// A live session's shard; dropping it (the session ended) folds its counts into its target's totals.
#[derive(Debug)]
pub struct SessionShard {
    id: u64,
    counters: Arc<SessionCounters>,
    stats: Arc<TargetStats>,
}

impl SessionShard {
    pub fn counters(&self) -> &Arc<SessionCounters> {
        &self.counters
    }
}

impl Drop for SessionShard {
    fn drop(&mut self) {
        // Folded and unlisted under one lock: a scrape sees the counts exactly once.
        let mut s = self.stats.shards();
        if let Some(pos) = s.live.iter().position(|(id, _, _)| *id == self.id) {
            let (_, target, c) = s.live.swap_remove(pos);
            s.ended.entry(target).or_default().absorb(&c);
        }
    }
}

/// The SPC name of a CDB opcode, for the `opcode` label (unknown ones as `0xNN`).
pub fn opcode_name(opcode: u8) -> std::borrow::Cow<'static, str> {
    let name = match opcode {
        op::TEST_UNIT_READY => "TEST_UNIT_READY",
        op::REQUEST_SENSE => "REQUEST_SENSE",
        op::READ_6 => "READ_6",
        op::WRITE_6 => "WRITE_6",
        op::INQUIRY => "INQUIRY",
        op::MODE_SELECT_6 => "MODE_SELECT_6",
        op::RESERVE_6 => "RESERVE_6",
        op::RELEASE_6 => "RELEASE_6",
        op::MODE_SENSE_6 => "MODE_SENSE_6",
        op::START_STOP_UNIT => "START_STOP_UNIT",
        op::PREVENT_ALLOW => "PREVENT_ALLOW_MEDIUM_REMOVAL",
        op::READ_CAPACITY_10 => "READ_CAPACITY_10",
        op::READ_DEFECT_DATA_10 => "READ_DEFECT_DATA_10",
        op::READ_10 => "READ_10",
        op::WRITE_10 => "WRITE_10",
        op::WRITE_VERIFY_10 => "WRITE_AND_VERIFY_10",
        op::VERIFY_10 => "VERIFY_10",
        op::PRE_FETCH_10 => "PRE_FETCH_10",
        op::SYNCHRONIZE_CACHE_10 => "SYNCHRONIZE_CACHE_10",
        op::WRITE_SAME_10 => "WRITE_SAME_10",
        op::UNMAP => "UNMAP",
        op::MODE_SELECT_10 => "MODE_SELECT_10",
        op::RESERVE_10 => "RESERVE_10",
        op::RELEASE_10 => "RELEASE_10",
        op::MODE_SENSE_10 => "MODE_SENSE_10",
        op::PERSISTENT_RESERVE_IN => "PERSISTENT_RESERVE_IN",
        op::PERSISTENT_RESERVE_OUT => "PERSISTENT_RESERVE_OUT",
        op::EXTENDED_COPY => "EXTENDED_COPY",
        op::RECEIVE_COPY_RESULTS => "RECEIVE_COPY_RESULTS",
        op::READ_16 => "READ_16",
        op::COMPARE_AND_WRITE => "COMPARE_AND_WRITE",
        op::ORWRITE_16 => "ORWRITE_16",
        op::WRITE_16 => "WRITE_16",
        op::WRITE_VERIFY_16 => "WRITE_AND_VERIFY_16",
        op::VERIFY_16 => "VERIFY_16",
        op::PRE_FETCH_16 => "PRE_FETCH_16",
        op::SYNCHRONIZE_CACHE_16 => "SYNCHRONIZE_CACHE_16",
        op::WRITE_SAME_16 => "WRITE_SAME_16",
        op::SERVICE_ACTION_IN_16 => "SERVICE_ACTION_IN_16",
        op::REPORT_LUNS => "REPORT_LUNS",
        op::MAINTENANCE_IN => "MAINTENANCE_IN",
        op::READ_12 => "READ_12",
        op::WRITE_12 => "WRITE_12",
        op::WRITE_VERIFY_12 => "WRITE_AND_VERIFY_12",
        op::VERIFY_12 => "VERIFY_12",
        op::READ_DEFECT_DATA_12 => "READ_DEFECT_DATA_12",
        other => return format!("0x{other:02X}").into(),
    };
    name.into()
}

/// The RFC 7143 name of a task management function code, for the `function` label.
pub fn tmf_name(function: u8) -> std::borrow::Cow<'static, str> {
    let name = match function {
        1 => "abort_task",
        2 => "abort_task_set",
        3 => "clear_aca",
        4 => "clear_task_set",
        5 => "logical_unit_reset",
        6 => "target_warm_reset",
        7 => "target_cold_reset",
        8 => "task_reassign",
        other => return format!("function_{other}").into(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_with_an_infinite_last_one() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // exactly on the first bound: le="5e-05"
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60)); // only +Inf
        let mut raw = RawHistogram::default();
        h.add_to(&mut raw);
        let s = raw.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), 18);
        assert_eq!(s.buckets[0], (0.000_05, 1));
        assert_eq!(s.buckets[1], (0.000_1, 1));
        assert_eq!(s.buckets[5], (0.002_5, 0));
        assert_eq!(s.buckets[6], (0.005, 1));
        assert_eq!(s.buckets[16], (10.0, 0));
        assert_eq!(s.buckets[17], (f64::INFINITY, 1));
        assert!((s.sum_seconds - 60.003_101).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn ended_sessions_keep_their_counts_once() {
        let stats = Arc::new(TargetStats::enabled());
        let a = stats.session_started("iqn.t").expect("enabled");
        let b = stats.session_started("iqn.t").expect("enabled");
        a.counters().command_done(op::WRITE_10, Duration::from_micros(200), 4096, 0, 0);
        b.counters().command_done(op::READ_16, Duration::from_micros(80), 0, 8192, 0);
        b.counters().command_done(op::WRITE_10, Duration::from_micros(90), 512, 0, crate::scsi::STATUS_RESERVATION_CONFLICT);
        b.counters().task_management(1);
        drop(a);
        let t = &stats.totals()["iqn.t"];
        assert_eq!(t.commands, vec![(op::WRITE_10, 2), (op::READ_16, 1)]);
        assert_eq!((t.data_out_bytes, t.data_in_bytes, t.reservation_conflicts, t.logins), (4608, 8192, 1, 2));
        assert_eq!(t.tmf, vec![(1, 1)]);
        let write = &t.latency.iter().find(|(c, _)| *c == CommandClass::Write).expect("write").1;
        assert_eq!(write.count, 2);
        drop(b);
        let again = &stats.totals()["iqn.t"];
        assert_eq!(again.commands, vec![(op::WRITE_10, 2), (op::READ_16, 1)], "counted once after both ended");
    }

    /// What counting adds per command, in isolation (run in release: `cargo test --release -p
    /// iscsi-target --lib stats::tests::cost_per_command -- --ignored --nocapture`): the two clock
    /// reads of a timed command plus `command_done`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_per_command() {
        let stats = Arc::new(TargetStats::enabled());
        let shard = stats.session_started("iqn.t").expect("enabled");
        let c = shard.counters();
        let n = 20_000_000u32;
        // This thread's CPU time, so other processes on the machine do not count.
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
        };
        let t0 = cpu();
        for i in 0..n {
            let started = std::time::Instant::now();
            let op = if i % 2 == 0 { op::WRITE_10 } else { op::READ_10 };
            c.command_done(std::hint::black_box(op), started.elapsed(), 4096, 0, 0);
        }
        let per = (cpu() - t0) / f64::from(n);
        let t1 = cpu();
        for _ in 0..n {
            std::hint::black_box(std::time::Instant::now());
        }
        let clock = (cpu() - t1) / f64::from(n);
        println!("counting costs {per:.1} ns of CPU per command (two clock reads at {clock:.1} ns each, opcode, histogram, bytes)");
        assert_eq!(stats.totals()["iqn.t"].latency.iter().map(|(_, h)| h.count).sum::<u64>(), u64::from(n));
    }

    #[test]
    fn disabled_counts_nothing() {
        let stats = Arc::new(TargetStats::disabled());
        assert!(stats.session_started("iqn.t").is_none());
        stats.login_refused(LoginRefusal::Chap);
        assert!(stats.totals().is_empty());
        assert!(stats.refusals().iter().all(|(_, n)| *n == 0));
        assert_eq!(LoginRefusal::from_status(2, 1), LoginRefusal::Chap);
        assert_eq!(LoginRefusal::from_status(2, 2), LoginRefusal::Acl);
        assert_eq!(opcode_name(0x2A), "WRITE_10");
        assert_eq!(opcode_name(0xFE), "0xFE");
    }
}
