//! The dynamic resync controller (`syncer.c-plan-ahead`, `c-fill-target`, `c-max-rate`; issue 18):
//! gives the resync what the application leaves while keeping the application's write latency near
//! what it is without a resync. Pure: the machine feeds it the application's write latencies and the
//! resync's state, and obeys the [`Budget`] it answers (bytes in flight, request size).
//!
//! How (compare DRBD's `drbd_rs_controller`, which steers the resync's data in flight towards a fill
//! target over a plan-ahead horizon but does not look at the application): the controller decides
//! every [`STEP_MS`].
//! - Baseline: the 99th percentile of application write latency over steps in which no resync request
//!   was in flight (before a resync, between resyncs, and in short *probes* during one: with no
//!   baseline, or one older than [`PROBE_EVERY_MS`], the budget drops to zero until a quiet step has
//!   been measured; a probe costs the resync about 1 % of its time).
//! - During a resync, each step's p99 (smoothed over steps) is compared with
//!   `baseline × BOUND + SLACK_US`: above it the in-flight budget shrinks in proportion (at most to
//!   half per step: multiplicative decrease); at or below it, it grows by `c-fill-target / steps`
//!   where `steps = c-plan-ahead / STEP_MS` (additive increase: from the floor to the fill target in
//!   one plan-ahead horizon); an idle application (no write in the step) lets it grow four times as
//!   fast. `c-min-rate`: while the resync's own rate is below it, the budget only grows. A resync
//!   that starts while the application writes starts from the floor ([`MIN_BUDGET`]), else from a
//!   quarter of the fill target.
//! - `c-fill-target` is the most the resync keeps in flight (what it gets with an idle application);
//!   `c-max-rate` caps its rate (the machine's token bucket, with `rate`).
//!
//! WHY the latencies come from the I/O layer: the machine's clock is in milliseconds (ticks every
//! 20 ms in the engine), while a replicated 4 KiB write takes a few hundred microseconds on a fast
//! link. The engine timestamps each application write when it enters the actor and when its
//! completion leaves it, and feeds the microseconds as [`super::Input::AppWriteLatencies`]. An I/O
//! layer that feeds none (the simulator) gets a controller that sees an idle application.

/// The controller decides this often.
pub const STEP_MS: u64 = 100;
/// The application's p99 during a resync is kept within `baseline × BOUND + SLACK_US`.
pub const BOUND: f64 = 1.1;
/// Absolute slack (µs): below ~50 µs differences are scheduling noise, not the resync.
pub const SLACK_US: f64 = 50.0;
/// A baseline older than this is measured again (a probe).
pub const PROBE_EVERY_MS: u64 = 30_000;
/// A probe that finds no quiet step with enough samples within this gives up (and retries later).
const PROBE_MAX_MS: u64 = 1_000;
/// A step's percentile is trusted from this many samples; fewer are kept for the next step (up to
/// [`MAX_STEP_MS`]), so a slow application is judged on all its writes.
const MIN_SAMPLES: usize = 16;
const MAX_STEP_MS: u64 = 1_000;
/// Smallest budget, and the request size bounds.
pub const MIN_BUDGET: u64 = 64 << 10;
pub const MIN_CHUNK: u64 = 64 << 10;
pub const MAX_CHUNK: u64 = 1 << 20;

/// The controller's options (live with `adjust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerOptions {
    /// `c-plan-ahead` in ms; 0 = controller off (the static window and `c-min-rate` of `resync.rs`).
    pub plan_ahead_ms: u64,
    /// `c-fill-target`: most bytes of resync in flight.
    pub fill_target: u64,
    /// `c-max-rate`: ceiling of the resync rate while the controller runs; `None` = none.
    pub max_rate: Option<u64>,
}

impl Default for ControllerOptions {
    /// 2 s plan-ahead as DRBD; 16 MiB in flight = the static window of 16 × 1 MiB requests, so an
    /// idle application gets the same resync speed as without the controller; no rate ceiling: the
    /// latency bound is what protects the application, a fixed ceiling would be the tuning the
    /// controller exists to avoid (`rate` still caps for those who want it).
    fn default() -> Self {
        ControllerOptions { plan_ahead_ms: 2_000, fill_target: 16 << 20, max_rate: None }
    }
}

impl ControllerOptions {
    pub fn enabled(&self) -> bool {
        self.plan_ahead_ms > 0
    }
}

/// What the resync may have in flight now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub in_flight_bytes: u64,
    /// Largest request (a multiple of 4 KiB): a small budget moves in smaller requests, so that an
    /// application write never queues behind a whole 1 MiB resync request.
    pub chunk_bytes: u64,
}

/// What the controller saw at its last step (status, logs, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControllerView {
    pub baseline_p99_us: Option<f64>,
    pub last_p99_us: Option<f64>,
    pub budget_bytes: u64,
    pub probing: bool,
    /// The latest step shrank the budget because the application's p99 was beyond the bound.
    pub shrinking: bool,
}

#[derive(Debug, Clone)]
pub struct ResyncController {
    opts: ControllerOptions,
    samples: Vec<u32>,
    step_start_ms: u64,
    /// A resync request was in flight at some point of this step (the step is not quiet).
    step_busy: bool,
    baseline_us: Option<f64>,
    baseline_at_ms: u64,
    smoothed_p99_us: Option<f64>,
    budget: f64,
    probe_since_ms: Option<u64>,
    was_active: bool,
    /// The application wrote in the last step: a resync starting now starts from the floor.
    app_recent: bool,
    /// The latest decision shrank the budget for the application's latency (status).
    shrank: bool,
}

impl ResyncController {
    pub fn new(opts: ControllerOptions) -> ResyncController {
        ResyncController {
            opts,
            samples: Vec::new(),
            step_start_ms: 0,
            step_busy: false,
            baseline_us: None,
            baseline_at_ms: 0,
            smoothed_p99_us: None,
            budget: Self::initial(opts),
            probe_since_ms: None,
            was_active: false,
            app_recent: false,
            shrank: false,
        }
    }

    fn initial(o: ControllerOptions) -> f64 {
        (o.fill_target as f64 / 4.0).max(MIN_BUDGET as f64)
    }

    pub fn set_options(&mut self, opts: ControllerOptions) {
        self.opts = opts;
        self.budget = self.budget.min(self.ceiling());
    }

    pub fn options(&self) -> ControllerOptions {
        self.opts
    }

    fn ceiling(&self) -> f64 {
        self.opts.fill_target.max(MIN_BUDGET) as f64
    }

    fn steps(&self) -> f64 {
        (self.opts.plan_ahead_ms / STEP_MS).max(1) as f64
    }

    /// An application write completed after `latency_us` (entered → acknowledged, both disks).
    pub fn on_app_write_done(&mut self, latency_us: u32) {
        // Bounded memory: an I/O layer that feeds faster than steps close keeps the latest.
        if self.samples.len() >= 1 << 16 {
            self.samples.clear();
        }
        self.samples.push(latency_us);
    }

    /// The machine issued resync requests (or has some in flight): the current step is not quiet.
    pub fn on_resync_busy(&mut self) {
        self.step_busy = true;
    }

    /// Called on every machine tick. `active`: a resync runs from this node (SyncSource, not
    /// paused); `in_flight`: its bytes in flight; `below_min_rate`: its own rate is under `c-min-rate`.
    pub fn tick(&mut self, now_ms: u64, active: bool, in_flight: u64, below_min_rate: bool) {
        if in_flight > 0 {
            self.step_busy = true;
        }
        if active && !self.was_active {
            // Slow start under a busy application (grow from the floor while the latency allows);
            // an idle one gets a quarter of the fill target at once.
            self.budget = if self.app_recent { MIN_BUDGET as f64 } else { Self::initial(self.opts).min(self.ceiling()) };
            self.smoothed_p99_us = None;
        }
        self.was_active = active;
        if self.step_start_ms == 0 {
            self.step_start_ms = now_ms.max(1);
        }
        let age = now_ms.saturating_sub(self.step_start_ms);
        if age < STEP_MS {
            return;
        }
        let enough = self.samples.len() >= MIN_SAMPLES;
        if !self.samples.is_empty() && !enough && age < MAX_STEP_MS {
            return; // a slow application: keep collecting
        }
        let p99 = percentile(&mut self.samples, 0.99);
        let quiet = !self.step_busy;
        let app_idle = self.samples.is_empty();
        self.app_recent = !app_idle;
        self.samples.clear();
        self.step_start_ms = now_ms;
        self.step_busy = in_flight > 0;
        self.decide(now_ms, active, quiet, app_idle, p99, below_min_rate);
    }

    fn decide(&mut self, now_ms: u64, active: bool, quiet: bool, app_idle: bool, p99: Option<f64>, below_min_rate: bool) {
        if quiet && let Some(p) = p99 {
            // The application alone: the reference the resync is held to.
            self.baseline_us = Some(self.baseline_us.map_or(p, |b| 0.7 * b + 0.3 * p));
            self.baseline_at_ms = now_ms;
            self.probe_since_ms = None;
        }
        self.shrank = false;
        if !active {
            self.probe_since_ms = None;
            return;
        }
        let step = self.ceiling() / self.steps();
        if app_idle {
            self.smoothed_p99_us = None;
            self.budget = (self.budget + 4.0 * step).min(self.ceiling());
            return;
        }
        if let Some(since) = self.probe_since_ms {
            if now_ms.saturating_sub(since) < PROBE_MAX_MS {
                return; // still draining or measuring
            }
            // No quiet step came (the application slowed down?): try again later.
            self.probe_since_ms = None;
            self.baseline_at_ms = now_ms;
        }
        let stale = self.baseline_us.is_none() || now_ms.saturating_sub(self.baseline_at_ms) >= PROBE_EVERY_MS;
        if stale && !below_min_rate {
            self.probe_since_ms = Some(now_ms);
            return;
        }
        let (Some(p), Some(base)) = (p99, self.baseline_us) else {
            self.budget = (self.budget + step).min(self.ceiling());
            return;
        };
        let smoothed = self.smoothed_p99_us.map_or(p, |s| 0.5 * s + 0.5 * p);
        self.smoothed_p99_us = Some(smoothed);
        let bound = base * BOUND + SLACK_US;
        if smoothed > bound && !below_min_rate {
            self.budget = (self.budget * (bound / smoothed).max(0.5)).max(MIN_BUDGET as f64);
            self.shrank = true;
        } else {
            self.budget = (self.budget + step).min(self.ceiling());
        }
    }

    /// What the resync may have in flight now (zero during a probe).
    pub fn budget(&self) -> Budget {
        if self.probe_since_ms.is_some() {
            return Budget { in_flight_bytes: 0, chunk_bytes: MIN_CHUNK };
        }
        let b = self.budget.max(MIN_BUDGET as f64) as u64;
        // At least four requests in flight when the budget allows (the pipeline stays full).
        let chunk = (b / 4).clamp(MIN_CHUNK, MAX_CHUNK) / 4096 * 4096;
        Budget { in_flight_bytes: b, chunk_bytes: chunk }
    }

    pub fn view(&self) -> ControllerView {
        ControllerView {
            baseline_p99_us: self.baseline_us,
            last_p99_us: self.smoothed_p99_us,
            budget_bytes: self.budget().in_flight_bytes,
            probing: self.probe_since_ms.is_some(),
            shrinking: self.shrank,
        }
    }

    /// The view in whole units for the machine's snapshot (issue 18 status).
    pub fn status(&self) -> super::snapshot::ControllerStatus {
        let v = self.view();
        super::snapshot::ControllerStatus {
            budget_bytes: v.budget_bytes,
            fill_target_bytes: self.opts.fill_target,
            baseline_p99_us: v.baseline_p99_us.map(|p| p.round() as u64),
            last_p99_us: v.last_p99_us.map(|p| p.round() as u64),
            throttling: v.shrinking || v.probing,
            probing: v.probing,
        }
    }
}

/// The `q` quantile of `samples` (reordered), `None` when empty.
fn percentile(samples: &mut [u32], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    let (_, v, _) = samples.select_nth_unstable(i);
    Some(*v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 100 ms step at `now` with `n` application writes of `lat` µs.
    fn step(c: &mut ResyncController, now: &mut u64, active: bool, in_flight: u64, n: usize, lat: u32) {
        for _ in 0..n {
            c.on_app_write_done(lat);
        }
        *now += STEP_MS;
        c.tick(*now, active, in_flight, false);
    }

    #[test]
    fn a_resync_under_a_busy_application_starts_from_the_floor() {
        let (mut c, mut now) = with_baseline(200);
        c.tick(now, true, 0, false);
        assert_eq!(c.budget().in_flight_bytes, MIN_BUDGET);
        // Within the bound it grows by fill-target / steps per step.
        step(&mut c, &mut now, true, 1 << 20, 100, 200);
        assert_eq!(c.budget().in_flight_bytes, MIN_BUDGET + (16 << 20) / 20);
    }

    fn with_baseline(lat: u32) -> (ResyncController, u64) {
        let mut c = ResyncController::new(ControllerOptions::default());
        let mut now = 1_000;
        c.tick(now, false, 0, false);
        for _ in 0..5 {
            step(&mut c, &mut now, false, 0, 100, lat);
        }
        (c, now)
    }

    #[test]
    fn percentile_picks_the_ceiling_rank() {
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut [7], 0.99), Some(7.0));
        assert_eq!(percentile(&mut [], 0.99), None);
    }

    #[test]
    fn the_baseline_is_learnt_from_quiet_steps_only() {
        let (mut c, mut now) = with_baseline(200);
        assert_eq!(c.view().baseline_p99_us, Some(200.0));
        // A step with resync I/O in flight does not move the baseline.
        step(&mut c, &mut now, false, 1 << 20, 100, 5_000);
        assert_eq!(c.view().baseline_p99_us, Some(200.0));
    }

    #[test]
    fn an_idle_application_lets_the_budget_reach_the_fill_target_within_the_plan_ahead() {
        let mut c = ResyncController::new(ControllerOptions::default());
        let mut now = 1_000;
        c.tick(now, true, 0, false);
        // 2 s plan-ahead, idle ramps 4× faster: well within 20 steps.
        for _ in 0..20 {
            step(&mut c, &mut now, true, 1 << 20, 0, 0);
        }
        assert_eq!(c.budget().in_flight_bytes, 16 << 20);
        assert_eq!(c.budget().chunk_bytes, 1 << 20);
    }

    #[test]
    fn latency_above_the_bound_shrinks_the_budget_and_latency_within_it_grows_it() {
        let (mut c, mut now) = with_baseline(200);
        step(&mut c, &mut now, true, 0, 100, 200);
        let start = c.budget().in_flight_bytes;
        // p99 at 3× the baseline: the budget falls towards the floor.
        for _ in 0..10 {
            step(&mut c, &mut now, true, 1 << 20, 100, 600);
        }
        let low = c.budget().in_flight_bytes;
        assert!(low < start / 8, "{low} vs {start}");
        assert!(low >= MIN_BUDGET);
        assert_eq!(c.budget().chunk_bytes, MIN_CHUNK);
        // Back within 1.1× + slack: it grows again, one fill-target/steps per step.
        for _ in 0..5 {
            step(&mut c, &mut now, true, 1 << 20, 100, 220);
        }
        assert!(c.budget().in_flight_bytes > low);
        assert!(c.budget().in_flight_bytes <= low + 5 * ((16 << 20) / 20) + 4096);
    }

    #[test]
    fn status_says_throttling_while_the_latency_shrinks_the_budget() {
        let (mut c, mut now) = with_baseline(200);
        step(&mut c, &mut now, true, 0, 100, 200);
        let s = c.status();
        assert_eq!((s.baseline_p99_us, s.last_p99_us, s.throttling), (Some(200), Some(200), false), "{s:?}");
        step(&mut c, &mut now, true, 1 << 20, 100, 900);
        let s = c.status();
        assert!(s.throttling && !s.probing, "{s:?}");
        assert_eq!(s.last_p99_us, Some(550), "smoothed over two steps");
        assert_eq!(s.budget_bytes, c.budget().in_flight_bytes);
        // Back within the bound: growing again, not throttling.
        for _ in 0..4 {
            step(&mut c, &mut now, true, 1 << 20, 100, 200);
        }
        assert!(!c.status().throttling, "{:?}", c.status());
    }

    #[test]
    fn below_c_min_rate_the_budget_never_shrinks() {
        let (mut c, mut now) = with_baseline(200);
        step(&mut c, &mut now, true, 0, 100, 200);
        let start = c.budget().in_flight_bytes;
        for _ in 0..5 {
            for _ in 0..100 {
                c.on_app_write_done(10_000);
            }
            now += STEP_MS;
            c.tick(now, true, 1 << 20, true);
        }
        assert!(c.budget().in_flight_bytes >= start);
    }

    #[test]
    fn without_a_baseline_a_busy_application_gets_a_probe_with_nothing_in_flight() {
        let mut c = ResyncController::new(ControllerOptions::default());
        let mut now = 1_000;
        c.tick(now, true, 0, false);
        step(&mut c, &mut now, true, 1 << 20, 100, 900);
        assert!(c.view().probing);
        assert_eq!(c.budget().in_flight_bytes, 0);
        // The resync drains (this step still saw it in flight), then a quiet step measures.
        step(&mut c, &mut now, true, 0, 100, 900);
        assert!(c.view().probing);
        step(&mut c, &mut now, true, 0, 100, 300);
        assert!(!c.view().probing);
        assert_eq!(c.view().baseline_p99_us, Some(300.0));
        assert!(c.budget().in_flight_bytes > 0);
        // Thirty seconds on, the baseline is measured again.
        for _ in 0..(PROBE_EVERY_MS / STEP_MS) {
            step(&mut c, &mut now, true, 1 << 20, 100, 310);
        }
        assert!(c.view().probing);
    }

    #[test]
    fn a_slow_application_is_judged_on_a_longer_step() {
        let (mut c, mut now) = with_baseline(200);
        step(&mut c, &mut now, true, 0, 100, 200);
        let start = c.budget().in_flight_bytes;
        // Three slow writes per step: nothing decided until a second has gathered them.
        for _ in 0..5 {
            step(&mut c, &mut now, true, 1 << 20, 3, 5_000);
        }
        assert_eq!(c.budget().in_flight_bytes, start);
        for _ in 0..5 {
            step(&mut c, &mut now, true, 1 << 20, 3, 5_000);
        }
        assert!(c.budget().in_flight_bytes < start);
    }

    #[test]
    fn a_lower_fill_target_takes_effect_at_once() {
        let mut c = ResyncController::new(ControllerOptions::default());
        c.set_options(ControllerOptions { fill_target: 1 << 20, ..ControllerOptions::default() });
        assert!(c.budget().in_flight_bytes <= 1 << 20);
        assert_eq!(c.budget().chunk_bytes, 256 << 10);
    }
}
