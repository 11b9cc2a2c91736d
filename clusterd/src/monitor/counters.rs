//! Counters of the cluster layer that only exist as events (a late heartbeat, a guard run, a
//! failover), kept for `/metrics`. All of them are rare (at most a few per second), so a mutex is
//! fine here; nothing on the data path touches them.

use prometheus_client::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failover duration buckets (seconds): a hand-over takes a fraction of a second, a takeover after a
/// crash deadtime plus the guard, a stuck start up to `start-timeout`.
pub const FAILOVER_BUCKETS: [f64; 12] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// What a guard run ended with (`clusterd_guard_runs_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuardResult {
    /// The guard confirmed the takeover is safe.
    Confirmed,
    /// It did not (ping nodes unreachable, the fence command failed, the peer was heard again).
    Refused,
}

/// What a fence command run ended with (`clusterd_fence_commands_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FenceResult {
    /// Exit 0: the peer is confirmed down.
    Fenced,
    /// Non-zero exit or the command could not start.
    Failed,
    /// Not run: the peer was heard again during the fence delay.
    Skipped,
}

impl GuardResult {
    pub fn name(self) -> &'static str {
        match self {
            GuardResult::Confirmed => "confirmed",
            GuardResult::Refused => "refused",
        }
    }
}

impl FenceResult {
    pub fn name(self) -> &'static str {
        match self {
            FenceResult::Fenced => "fenced",
            FenceResult::Failed => "failed",
            FenceResult::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    failovers: u64,
    late_heartbeats: BTreeMap<String, u64>,
    guard_runs: BTreeMap<GuardResult, u64>,
    fence_commands: BTreeMap<FenceResult, u64>,
}

#[derive(Debug)]
pub struct ClusterCounters {
    counts: Mutex<Counts>,
    /// Seconds from leaving `idle` (the claim) to `holding`, for acquisitions that moved the group
    /// here from the peer.
    pub failover_seconds: Histogram,
}

impl Default for ClusterCounters {
    fn default() -> Self {
        ClusterCounters { counts: Mutex::default(), failover_seconds: Histogram::new(FAILOVER_BUCKETS) }
    }
}

/// The event counts read out for a scrape.
#[derive(Debug, Clone, Default)]
pub struct ClusterCounts {
    pub failovers: u64,
    pub late_heartbeats: BTreeMap<String, u64>,
    pub guard_runs: BTreeMap<GuardResult, u64>,
    pub fence_commands: BTreeMap<FenceResult, u64>,
}

impl ClusterCounters {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn late_heartbeat(&self, link: &str) {
        *self.counts().late_heartbeats.entry(link.to_string()).or_default() += 1;
    }

    pub fn guard_run(&self, r: GuardResult) {
        *self.counts().guard_runs.entry(r).or_default() += 1;
    }

    pub fn fence_command(&self, r: FenceResult) {
        *self.counts().fence_commands.entry(r).or_default() += 1;
    }

    pub fn failover(&self, took: Duration) {
        self.counts().failovers += 1;
        self.failover_seconds.observe(took.as_secs_f64());
    }

    pub fn read(&self) -> ClusterCounts {
        let c = self.counts();
        ClusterCounts {
            failovers: c.failovers,
            late_heartbeats: c.late_heartbeats.clone(),
            guard_runs: c.guard_runs.clone(),
            fence_commands: c.fence_commands.clone(),
        }
    }
}
