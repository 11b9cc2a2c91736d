//! issue 18 verify: the scheduled online verify (`syncer.verify-interval`) and the record of the last
//! verify of each resource (when it ended, by the wall clock, and whether the schedule started it).
//!
//! The decision is a pure type, [`VerifySchedule`]: fed `tick(now, settings, view)` once a second, it
//! answers whether to start a verify now. The daemon's task ([`run`]) only gathers the views, runs
//! the verb and keeps the [`VerifyBook`] that status and the metrics read.
//!
//! Rules: a verify is due an interval after the last one ended (one run from either node counts, a
//! manual one too) or, after clusterd starts or the interval changes, an interval from then (the time
//! of the last verify is not persisted across restarts). When due it starts only on the designated
//! node — the Primary, or the lower-named node when neither is Primary (the peer, running the same
//! schedule, stays put) — and only while the link is established with both disks UpToDate and no
//! resync or verify running; until then it stays due and is retried every tick. Its speed is capped
//! by `syncer.verify-rate` (in the replicator), so a scheduled verify leaves room to applications.

use super::resources::Resources;
use replicator::engine::Verb;
use replicator::machine::state::{ConnState, DiskState, ReplState, Role};
use replicator::machine::{Snapshot, VerifyOutcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the schedule needs to know about a resource at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// Connected, replication Established (no resync, no verify), both disks UpToDate.
    pub ready: bool,
    /// A verify runs, from this node (VerifyS) or from the peer (VerifyT).
    pub verifying: bool,
    /// This node is where the scheduled verify runs (the Primary, or the lower name with no Primary).
    pub designated: bool,
    /// The end of the last verify run from here (machine clock), to notice one that came and went
    /// between two ticks.
    pub last_finished_ms: Option<u64>,
}

impl View {
    /// The view of a resource whose snapshot is `s`, on node `me` with peer `peer`.
    pub fn of(s: &Snapshot, me: &str, peer: Option<&str>) -> View {
        View {
            ready: s.conn == ConnState::Connected
                && s.repl == ReplState::Established
                && s.disk == DiskState::UpToDate
                && s.peer_disk == DiskState::UpToDate,
            verifying: matches!(s.repl, ReplState::VerifyS | ReplState::VerifyT),
            designated: designated(s.role, s.peer_role, me, peer),
            last_finished_ms: s.last_verify.map(|v| v.finished_ms),
        }
    }
}

/// The node a scheduled verify runs on: the Primary, or the lower name when neither is Primary.
fn designated(role: Role, peer_role: Role, me: &str, peer: Option<&str>) -> bool {
    role == Role::Primary || peer_role != Role::Primary && peer.is_some_and(|p| me < p)
}

/// What the schedule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAction {
    Verify { repair: bool },
}

/// The schedule of one resource (see the module documentation for the rules).
#[derive(Debug, Clone, Default)]
pub struct VerifySchedule {
    interval: Option<Duration>,
    next_due_ms: Option<u64>,
    seen_finished_ms: Option<u64>,
}

impl VerifySchedule {
    /// One tick at `now_ms` (any monotonic millisecond clock) with the resource's settings.
    pub fn tick(&mut self, now_ms: u64, interval: Option<Duration>, repair: bool, v: &View) -> Option<ScheduleAction> {
        let after = |i: Duration| now_ms.saturating_add(i.as_millis() as u64);
        if interval != self.interval {
            self.interval = interval;
            self.next_due_ms = interval.map(after);
        }
        let i = interval?;
        // A verify running (from either node) or one that ended since the last tick is the periodic
        // check: the next one is an interval after it.
        if v.verifying || v.last_finished_ms != self.seen_finished_ms {
            self.seen_finished_ms = v.last_finished_ms;
            self.next_due_ms = Some(after(i));
            return None;
        }
        if self.next_due_ms.is_some_and(|due| now_ms < due) || !v.ready || !v.designated {
            return None;
        }
        self.next_due_ms = Some(after(i));
        Some(ScheduleAction::Verify { repair })
    }

    /// When the next verify is due (same clock as `tick`), if scheduled.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms
    }
}

/// Per resource: its schedule and what status shows of the last verify.
#[derive(Debug, Clone, Default)]
struct Entry {
    schedule: VerifySchedule,
    /// The last outcome seen, with the wall-clock second this clusterd saw it (≤ 1 tick late).
    last: Option<(VerifyOutcome, u64)>,
    /// The schedule started the verify whose outcome comes next / the last outcome.
    scheduled_running: bool,
    last_scheduled: bool,
    designated: bool,
}

/// The last verify of each resource and the schedules, shared by the task, status and the metrics.
pub struct VerifyBook {
    started: Instant,
    entries: Mutex<HashMap<String, Entry>>,
}

/// The last verify of a resource as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastVerify {
    pub outcome: VerifyOutcome,
    pub finished_unix: u64,
    pub scheduled: bool,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Default for VerifyBook {
    fn default() -> Self {
        VerifyBook { started: Instant::now(), entries: Mutex::new(HashMap::new()) }
    }
}

impl VerifyBook {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The last verify run from this node, once seen by the task.
    pub fn last(&self, name: &str) -> Option<LastVerify> {
        let map = self.entries.lock().ok()?;
        let e = map.get(name)?;
        e.last.map(|(outcome, finished_unix)| LastVerify { outcome, finished_unix, scheduled: e.last_scheduled })
    }

    /// When the next scheduled verify is due on this node (seconds since the epoch), if this node is
    /// the one that runs it.
    pub fn next_due_unix(&self, name: &str) -> Option<u64> {
        let map = self.entries.lock().ok()?;
        let e = map.get(name).filter(|e| e.designated)?;
        let due = e.schedule.next_due_ms()?;
        Some(unix_now() + due.saturating_sub(self.now_ms()).div_ceil(1000))
    }

    /// One tick for one resource: record its last outcome, advance its schedule.
    fn tick(&self, name: &str, s: &Snapshot, view: &View, interval: Option<Duration>, repair: bool) -> Option<ScheduleAction> {
        let now = self.now_ms();
        let mut map = self.entries.lock().ok()?;
        let e = map.entry(name.to_string()).or_default();
        if let Some(o) = s.last_verify
            && e.last.is_none_or(|(l, _)| l != o)
        {
            e.last = Some((o, unix_now()));
            e.last_scheduled = std::mem::take(&mut e.scheduled_running);
        }
        e.designated = view.designated;
        let action = e.schedule.tick(now, interval, repair, view);
        if action.is_some() {
            e.scheduled_running = true;
        }
        action
    }

    /// The verify the schedule asked for was refused: the next outcome is not a scheduled one.
    fn not_started(&self, name: &str) {
        if let Ok(mut map) = self.entries.lock()
            && let Some(e) = map.get_mut(name)
        {
            e.scheduled_running = false;
        }
    }
}

/// The task: every second, each running resource's schedule; a due verify is started like
/// `haadm verify` (with `syncer.verify-repair`).
pub async fn run(resources: Arc<Resources>, book: Arc<VerifyBook>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cfg = resources.running_config();
        for st in resources.status().await {
            let (Some((snap, _)), Some(r)) = (st.running.as_ref(), cfg.resources.get(&st.name)) else { continue };
            let view = View::of(snap, &resources.node, st.peer_name.as_deref());
            let Some(ScheduleAction::Verify { repair }) = book.tick(&st.name, snap, &view, r.syncer.verify_interval, r.syncer.verify_repair) else { continue };
            match resources.verb(&st.name, Verb::Verify { repair }).await {
                Ok(m) => tracing::info!(resource = %st.name, "scheduled verify (syncer.verify-interval): {m}"),
                Err(e) => {
                    book.not_started(&st.name);
                    tracing::warn!(resource = %st.name, "scheduled verify not started: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const READY: View = View { ready: true, verifying: false, designated: true, last_finished_ms: None };

    #[test]
    fn off_never_starts_and_on_starts_one_interval_after_start() {
        let mut s = VerifySchedule::default();
        assert_eq!(s.tick(0, None, false, &READY), None);
        assert_eq!(s.tick(10 * DAY.as_millis() as u64, None, false, &READY), None);
        let t0 = 1_000;
        assert_eq!(s.tick(t0, Some(DAY), true, &READY), None, "not at once when switched on");
        assert_eq!(s.next_due_ms(), Some(t0 + 86_400_000));
        assert_eq!(s.tick(t0 + 86_399_999, Some(DAY), true, &READY), None);
        assert_eq!(s.tick(t0 + 86_400_000, Some(DAY), true, &READY), Some(ScheduleAction::Verify { repair: true }));
        assert_eq!(s.tick(t0 + 86_401_000, Some(DAY), true, &READY), None, "once per interval");
    }

    #[test]
    fn a_due_verify_waits_for_a_ready_pair_and_runs_only_on_the_designated_node() {
        let mut s = VerifySchedule::default();
        s.tick(0, Some(Duration::from_secs(10)), false, &READY);
        let busy = View { ready: false, ..READY };
        assert_eq!(s.tick(10_000, Some(Duration::from_secs(10)), false, &busy), None, "resync running / not connected");
        let other = View { designated: false, ..READY };
        assert_eq!(s.tick(11_000, Some(Duration::from_secs(10)), false, &other), None, "the peer's job");
        assert_eq!(s.tick(12_000, Some(Duration::from_secs(10)), false, &READY), Some(ScheduleAction::Verify { repair: false }), "still due, runs when ready");
    }

    #[test]
    fn any_verify_that_ran_pushes_the_next_one_an_interval_after_it() {
        let i = Some(Duration::from_secs(10));
        let mut s = VerifySchedule::default();
        s.tick(0, i, false, &READY);
        // A manual verify from the peer runs 5..7 s; ours would have been due at 10 s.
        s.tick(5_000, i, false, &View { verifying: true, ..READY });
        s.tick(7_000, i, false, &View { verifying: true, ..READY });
        assert_eq!(s.tick(10_000, i, false, &READY), None);
        assert_eq!(s.tick(17_000, i, false, &READY), Some(ScheduleAction::Verify { repair: false }));
        // One from here that started and ended between two ticks is noticed by its outcome.
        assert_eq!(s.tick(20_000, i, false, &View { last_finished_ms: Some(19_500), ..READY }), None);
        assert_eq!(s.next_due_ms(), Some(30_000));
    }

    #[test]
    fn changing_the_interval_restarts_the_count() {
        let mut s = VerifySchedule::default();
        s.tick(0, Some(DAY), false, &READY);
        assert_eq!(s.tick(1_000, Some(Duration::from_secs(2)), false, &READY), None);
        assert_eq!(s.tick(3_000, Some(Duration::from_secs(2)), false, &READY), Some(ScheduleAction::Verify { repair: false }));
        assert_eq!(s.tick(4_000, None, false, &READY), None);
        assert_eq!(s.next_due_ms(), None);
    }

    #[test]
    fn the_primary_or_else_the_lower_name_is_designated() {
        use Role::{Primary, Secondary, Unknown};
        assert!(designated(Primary, Secondary, "node2", Some("node1")));
        assert!(!designated(Secondary, Primary, "node1", Some("node2")));
        assert!(designated(Secondary, Secondary, "node1", Some("node2")));
        assert!(!designated(Secondary, Secondary, "node2", Some("node1")));
        assert!(!designated(Secondary, Unknown, "node1", None), "no peer, nothing to verify against");
    }
}
