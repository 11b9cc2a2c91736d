//! A deterministic two-node world: per node the real heartbeat `Membership`, the real failover
//! `Sequencer` and the real replicator state machine of the group's resource (see `storage.rs`), with
//! the sequencer's actions carried out the way the daemon (`daemon/cluster.rs`, `group_steps.rs`) does.
//!
//! Modelled, because they are I/O the simulation cannot run: the step executor (one step at a time,
//! random latency, sometimes slower than the start timeout, random failures while faults are on); the
//! iSCSI target (writes only while started and the node holds the group; stopping waits for the writes
//! in flight); guards (ping = this node's uplink; fence = crash the peer, fails sometimes; both = ping
//! then fence; with `fencing resource-and-stonith` the fence waits a deadtime when the peer was last seen
//! holding, as `run_guard` does); `Escalate` = self-fence = crash. The daemon's io fencing is in
//! `io_fencing.rs`.

use super::heartbeat::{CLUSTER, HeartbeatNet, KEEPALIVE_MS, LinkFaults, membership_params};
use super::io_fencing::IoFencingState;
use super::storage::Storage;
use clusterd::failover::{
    Action, AdminCmd, DiskView, GuardKind, Input, Level, LocalVolumes, Phase, Sequencer, SequencerParams, Step,
};
use clusterd::heartbeat::{Membership, MembershipEvent};
use replicator::machine::state::Role;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The replication simulation's SplitMix64, salted so this simulation's seeds keep their schedules.
pub use replicator::sim::world::Rng;
const RNG_SALT: u64 = 0x5DEE_CE66_D1CE_4E5B;

pub const TICK_MS: u64 = 10;
/// The daemon's loop period: volumes and the peer's state are polled, the sequencer ticks.
const POLL_MS: u64 = 50;
pub const NAMES: [&str; 2] = ["alpha", "beta"];

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub failovers: u64,
    pub handoffs: u64,
    pub handoffs_interrupted: u64,
    pub refusals: u64,
    pub split_warnings: u64,
    pub crashes: u64,
    pub torn_crashes: u64,
    pub fences: u64,
    pub partitions: u64,
    pub flaps: u64,
    pub step_failures: u64,
    pub promote_refused: u64,
    pub writes_acked: u64,
    pub pr_updates_acked: u64,
    pub promotions_checked: u64,
    pub final_resyncs_checked: u64,
    /// Takeovers from a silent peer that lost writes the peer acknowledged with its replication link
    /// down (the replicator has no resource-level fencing; see the module docs).
    pub known_gap_losses: u64,
    pub split_runs: u64,
    pub split_brains_reported: u64,
    pub escalations: u64,
    pub corrupt_heartbeats: u64,
    /// Seeds run with `fencing resource-and-stonith` (see [`Config::resource_and_stonith`]).
    pub fencing_seeds: u64,
    /// Promotions checked in those seeds (any acknowledged write missing fails the seed).
    pub fencing_promotions_checked: u64,
    /// Primaries that suspended I/O (held acknowledgements) after losing an UpToDate peer.
    pub suspensions: u64,
    pub thaws_reconnect: u64,
    pub thaws_outdated: u64,
    pub thaws_fenced: u64,
    /// Suspensions that ended with the held writes failed (demote, shutdown) or lost in a crash.
    pub suspensions_ended_unthawed: u64,
    pub held_acks_released: u64,
    /// Secondaries that outdated their own disk (dopd's part).
    pub self_outdates: u64,
    /// Fence commands run by a suspended holder.
    pub io_fence_runs: u64,
    /// Guard fences delayed by a deadtime because the peer was last seen holding.
    pub delayed_guard_fences: u64,
    /// Fencing seeds ending in a split brain made of never-acknowledged writes (see `checks.rs`).
    pub fenced_holder_split_brains: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.failovers += o.failovers;
        self.handoffs += o.handoffs;
        self.handoffs_interrupted += o.handoffs_interrupted;
        self.refusals += o.refusals;
        self.split_warnings += o.split_warnings;
        self.crashes += o.crashes;
        self.torn_crashes += o.torn_crashes;
        self.fences += o.fences;
        self.partitions += o.partitions;
        self.flaps += o.flaps;
        self.step_failures += o.step_failures;
        self.promote_refused += o.promote_refused;
        self.writes_acked += o.writes_acked;
        self.pr_updates_acked += o.pr_updates_acked;
        self.promotions_checked += o.promotions_checked;
        self.final_resyncs_checked += o.final_resyncs_checked;
        self.known_gap_losses += o.known_gap_losses;
        self.split_runs += o.split_runs;
        self.split_brains_reported += o.split_brains_reported;
        self.escalations += o.escalations;
        self.corrupt_heartbeats += o.corrupt_heartbeats;
        self.fencing_seeds += o.fencing_seeds;
        self.fencing_promotions_checked += o.fencing_promotions_checked;
        self.suspensions += o.suspensions;
        self.thaws_reconnect += o.thaws_reconnect;
        self.thaws_outdated += o.thaws_outdated;
        self.thaws_fenced += o.thaws_fenced;
        self.suspensions_ended_unthawed += o.suspensions_ended_unthawed;
        self.held_acks_released += o.held_acks_released;
        self.self_outdates += o.self_outdates;
        self.io_fence_runs += o.io_fence_runs;
        self.delayed_guard_fences += o.delayed_guard_fences;
        self.fenced_holder_split_brains += o.fenced_holder_split_brains;
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub guard: GuardKind,
    pub allow_unguarded_split: bool,
    pub auto_failback: bool,
    pub preferred: Option<usize>,
    pub portblock: bool,
    pub links: LinkFaults,
    pub step_fail: f64,
    /// The resource's `disk.fencing dont-care` (the default): a restarted Consistent disk attaches UpToDate.
    pub fencing_dont_care: bool,
    /// `disk.fencing resource-and-stonith`: the replicator freezes I/O on peer loss and the daemon's io
    /// fencing runs (`io_fencing.rs`). Drawn as: not `dont-care` and a guard with a fence command
    /// (FenceCommand or Both), the configuration the daemon does not warn about; the other
    /// non-dont-care seeds stand for `resource-only` (no freeze). No extra draw, so the schedules of
    /// all seeds stay what they were.
    pub resource_and_stonith: bool,
    /// Chance per 10 ms that the holder's target submits a write.
    pub write_rate: f64,
}

impl Config {
    /// The only configuration in which two holders are allowed (and must be reported).
    pub fn unguarded_split_allowed(&self) -> bool {
        self.guard == GuardKind::None && self.allow_unguarded_split
    }
}

/// A step being carried out: when it is due and whether it is injected to fail.
#[derive(Clone, Copy)]
pub struct Busy {
    pub step: Step,
    pub done_at: u64,
    pub fails: bool,
}

/// What flaps: a heartbeat link (both directions) or the replication link.
#[derive(Clone, Copy, Debug)]
pub enum Flap {
    Heartbeat(usize),
    Replication,
}

#[derive(Default)]
pub struct Node {
    pub up: bool,
    pub restart_at: Option<u64>,
    /// Heartbeat generation = daemon incarnation (bumped per boot, persisted).
    pub generation: u64,
    pub seq: Option<Sequencer>,
    pub membership: Option<Membership>,
    pub hb_seq: u64,
    pub published: Vec<u8>,
    pub last_peer_state: Option<Vec<u8>>,
    pub queue: VecDeque<Step>,
    pub busy: Option<Busy>,
    pub guard_due: Option<u64>,
    pub last_volumes: Option<LocalVolumes>,
    pub uplink: bool,
    pub last_uplink: Option<bool>,
    pub persisted_epoch: u64,
    pub was_holding: bool,
    pub warned: bool,
    /// The iSCSI target serves (started and not being stopped).
    pub target: bool,
    /// Why the sequencer last acquired the group (its log line), to classify a data loss.
    pub acquire_reason: String,
    /// The guard's fence waits until then (the resource-and-stonith delay; ping already checked).
    pub guard_fence_at: Option<u64>,
    /// The fence delay decided when the sequencer asked for the guard (`run_guard`).
    pub guard_fence_delay: u64,
    pub io_fencing: IoFencingState,
}

pub struct Expect {
    pub target: usize,
    pub deadline: u64,
    pub disturbances: u64,
    pub what: &'static str,
}

pub struct World {
    pub rng: Rng,
    pub now: u64,
    base: Instant,
    pub cfg: Config,
    pub nodes: [Node; 2],
    pub hb: HeartbeatNet,
    pub store: Storage,
    pub flap: Option<(Flap, u64)>,
    pub stats: Stats,
    pub trace: Vec<String>,
    pub disturbances: u64,
    pub expects: Vec<Expect>,
    pub last_holder: Option<usize>,
    pub faults_on: bool,
    /// The target stops submitting writes (the end of the settle phase, so every write is answered).
    pub writes_on: bool,
    /// A rule broken inside an action handler, reported by the next check.
    pub violation: Option<String>,
    /// Both nodes held the group (allowed only unguarded): from then on the acknowledged-writes ledger
    /// is off and the check is instead that the replicator reports the split brain.
    pub split: Option<[u64; 2]>,
    /// Acknowledged writes per node when both became Primary at once (None = not both Primary now).
    pub dual: Option<[u64; 2]>,
    /// Both Primaries acknowledged writes while both were Primary: a real split brain.
    pub dual_both_wrote: bool,
    /// The replicator reported a split brain at some point.
    pub split_brain_seen: bool,
    /// `FAILOVER_STRICT=1`: the known gap (see `checks.rs`) fails the seed instead of being counted.
    pub strict: bool,
    /// Held acknowledgements per node while its replicator is suspended (None = not suspended).
    pub suspended_seen: [Option<usize>; 2],
}

pub fn other(i: usize) -> usize {
    1 - i
}

impl World {
    pub fn new(seed: u64) -> Result<World, String> {
        let mut rng = Rng::salted(seed, RNG_SALT);
        let guard = match rng.next() % 4 {
            0 => GuardKind::None,
            1 => GuardKind::PingNodes,
            2 => GuardKind::FenceCommand,
            _ => GuardKind::Both,
        };
        let mut cfg = Config {
            guard,
            allow_unguarded_split: rng.chance(0.6),
            auto_failback: rng.chance(0.3),
            preferred: match rng.next() % 3 {
                0 => None,
                k => Some((k - 1) as usize),
            },
            portblock: rng.chance(0.7),
            links: LinkFaults {
                loss: [0.0, 0.05, 0.2][rng.range(0, 3) as usize],
                dup: [0.0, 0.05][rng.range(0, 2) as usize],
                spike: [0.0, 0.02, 0.1][rng.range(0, 3) as usize],
                corrupt: [0.0, 0.01][rng.range(0, 2) as usize],
            },
            step_fail: [0.0, 0.02, 0.05][rng.range(0, 3) as usize],
            fencing_dont_care: rng.chance(0.7),
            resource_and_stonith: false,
            write_rate: [0.05, 0.2][rng.range(0, 2) as usize],
        };
        cfg.resource_and_stonith = !cfg.fencing_dont_care && matches!(cfg.guard, GuardKind::FenceCommand | GuardKind::Both);
        let store = Storage::bootstrap(seed, cfg.fencing_dont_care, cfg.resource_and_stonith)?;
        let mut w = World {
            rng,
            now: 0,
            base: Instant::now(),
            hb: HeartbeatNet::new(cfg.links),
            cfg,
            nodes: [Node::default(), Node::default()],
            store,
            flap: None,
            stats: Stats::default(),
            trace: Vec::new(),
            disturbances: 0,
            expects: Vec::new(),
            last_holder: None,
            faults_on: true,
            writes_on: true,
            violation: None,
            split: None,
            dual: None,
            dual_both_wrote: false,
            split_brain_seen: false,
            strict: std::env::var("FAILOVER_STRICT").is_ok_and(|v| v == "1"),
            suspended_seen: [None; 2],
        };
        w.stats.fencing_seeds = u64::from(w.cfg.resource_and_stonith);
        w.trace.push(format!("config {:?}", w.cfg));
        for i in 0..2 {
            w.nodes[i].uplink = true;
            // Staggered boots: sometimes one node is up long before the other.
            w.nodes[i].restart_at = Some(w.rng.range(0, 12_000));
        }
        Ok(w)
    }

    pub fn at(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    pub fn log(&mut self, msg: String) {
        self.trace.push(format!("{:>7} {msg}", self.now));
    }

    fn params(&self, i: usize) -> SequencerParams {
        let mut p = SequencerParams::new(NAMES[i], Some(NAMES[other(i)]));
        p.auto_failback = self.cfg.auto_failback;
        p.preferred = self.cfg.preferred.map(|k| NAMES[k].to_string());
        p.initdead = Duration::from_millis(6000);
        p.degr_wfc_timeout = Duration::from_millis(4000);
        p.start_timeout = Duration::from_millis(5000);
        p.stop_timeout = Duration::from_millis(5000);
        p.guard = self.cfg.guard;
        p.allow_unguarded_split = self.cfg.allow_unguarded_split;
        p.garp_repeat_after = Duration::from_millis(2000);
        p.portblock = self.cfg.portblock;
        p.failure_backoff = Duration::from_millis(5000);
        p.guard_retry = Duration::from_millis(2000);
        p.generation = self.nodes[i].generation;
        p.known_epoch = self.nodes[i].persisted_epoch;
        p
    }

    // ----- node life cycle -----

    pub fn crash(&mut self, i: usize, why: &str) {
        if !self.nodes[i].up {
            return;
        }
        let torn = self.rng.chance(0.5);
        self.log(format!("CRASH {} ({why}){}", NAMES[i], if torn { " inside a replicator step" } else { "" }));
        self.stats.crashes += 1;
        self.stats.torn_crashes += u64::from(torn);
        self.disturbances += 1;
        self.store.crash(i, torn);
        let restart = self.now + self.rng.range(1000, 10_000);
        let persisted_epoch = self.nodes[i].persisted_epoch;
        let generation = self.nodes[i].generation;
        let uplink = self.nodes[i].uplink;
        self.nodes[i] = Node { restart_at: Some(restart), persisted_epoch, generation, uplink, ..Node::default() };
    }

    fn boot(&mut self, i: usize) {
        self.store.finish_crash(i);
        let at = self.at();
        let n = &mut self.nodes[i];
        n.generation += 1;
        n.up = true;
        n.restart_at = None;
        n.membership = Some(Membership::new(membership_params(), CLUSTER, NAMES[i], NAMES[other(i)], at));
        let seq = Sequencer::new(self.params(i), at);
        self.nodes[i].seq = Some(seq);
        self.store.start(i);
        self.log(format!("BOOT {} generation {}", NAMES[i], self.nodes[i].generation));
    }

    /// The daemon incarnation that runs on each node (None = down).
    pub fn live(&self) -> [Option<u64>; 2] {
        [0, 1].map(|i| self.nodes[i].up.then_some(self.nodes[i].generation))
    }

    /// Feeds one input and carries out the actions; returns admin replies.
    pub fn feed(&mut self, i: usize, input: Input) -> Vec<(AdminCmd, Result<(), String>)> {
        let at = self.at();
        let Some(seq) = self.nodes[i].seq.as_mut() else { return Vec::new() };
        let actions = seq.step(at, input);
        self.apply(i, actions)
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) -> Vec<(AdminCmd, Result<(), String>)> {
        let mut replies = Vec::new();
        for a in actions {
            match a {
                Action::Run(step) => {
                    let told = self.nodes[i].last_volumes.map(|v| v.disk);
                    let bad = matches!(told, None | Some(DiskView::Inconsistent | DiskView::Outdated | DiskView::Diskless));
                    if step == Step::PromoteVolumes && bad && self.violation.is_none() {
                        self.violation = Some(format!("{} asked to promote a disk reported as {told:?}", NAMES[i]));
                    }
                    self.nodes[i].queue.push_back(step);
                }
                Action::RunGuard => {
                    let due = self.now + self.rng.range(100, 1500);
                    self.nodes[i].guard_due = Some(due);
                    self.nodes[i].guard_fence_delay = self.fence_delay_ms(i);
                    let disk = self.nodes[i].last_volumes.map(|v| v.disk);
                    self.log(format!("{} runs the guard (disk {disk:?}, answer due at {due})", NAMES[i]));
                }
                Action::Escalate(why) => {
                    self.stats.escalations += 1;
                    self.crash(i, &format!("self-fence: {why}"));
                    return replies;
                }
                Action::Publish(bytes) => self.nodes[i].published = bytes,
                Action::Reply { cmd, result } => replies.push((cmd, result)),
                Action::Log(level, msg) => {
                    if msg.contains("acquiring the group") {
                        self.nodes[i].acquire_reason = msg.clone();
                    }
                    if level >= Level::Info {
                        self.log(format!("{} {level:?}: {msg}", NAMES[i]));
                    }
                }
            }
        }
        replies
    }

    // ----- the clock -----

    pub fn advance(&mut self) -> Result<(), String> {
        self.now += TICK_MS;
        for i in 0..2 {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.boot(i);
            }
        }
        self.store.run_until(self.now);
        for i in 0..2 {
            if !self.nodes[i].up {
                self.store.finish_crash(i);
            }
        }
        let ledger = self.split.is_none();
        let (before, pr_before) = (self.store.acked, self.store.pr_acks);
        self.store.collect(self.live(), ledger);
        self.stats.writes_acked += self.store.acked - before;
        self.stats.pr_updates_acked += self.store.pr_acks - pr_before;
        self.track_suspensions()?;
        for line in self.store.drain_trace() {
            self.trace.push(format!("        repl {line}"));
        }
        self.heartbeats();
        self.flapping();
        self.run_executors();
        self.run_guards();
        self.run_io_fences();
        self.app_writes();
        if self.now.is_multiple_of(POLL_MS) {
            self.poll();
        }
        for i in 0..2 {
            if self.nodes[i].up && (self.now + 250 * i as u64).is_multiple_of(KEEPALIVE_MS) {
                self.nodes[i].hb_seq += 1;
                let (g, s) = (self.nodes[i].generation, self.nodes[i].hb_seq);
                let state = self.nodes[i].published.clone();
                self.hb.send(&mut self.rng, self.now, i, NAMES, g, s, &state);
            }
        }
        self.check_invariants()?;
        self.check_expectations()
    }

    /// Datagrams in, membership timers, events to the sequencer (the daemon's mapping).
    fn heartbeats(&mut self) {
        let at = self.at();
        let rejected_before = self.hb.rejected;
        for (to, input) in self.hb.deliver(self.now, at) {
            let Some(m) = self.nodes[to].membership.as_mut() else { continue };
            let events = m.step(input);
            self.membership_events(to, events);
        }
        self.stats.corrupt_heartbeats += self.hb.rejected - rejected_before;
        for i in 0..2 {
            let Some(m) = self.nodes[i].membership.as_mut() else { continue };
            let events = m.tick(at);
            self.membership_events(i, events);
        }
    }

    fn membership_events(&mut self, i: usize, events: Vec<MembershipEvent>) {
        for ev in events {
            let input = match ev {
                MembershipEvent::PeerAlive { generation } => Input::PeerAlive { generation },
                MembershipEvent::PeerDead | MembershipEvent::InitDeadExpired => {
                    self.disturbances += 1;
                    Input::PeerDead
                }
                MembershipEvent::PeerRestarted { new, .. } => Input::PeerRestarted { generation: new },
                MembershipEvent::LinkUp(_) | MembershipEvent::LinkDown(_) | MembershipEvent::LateHeartbeat { .. } => continue,
            };
            self.feed(i, input);
        }
    }

    /// The daemon's periodic work: volumes, the peer's published state, the uplink, the sequencer tick.
    fn poll(&mut self) {
        for i in 0..2 {
            if !self.nodes[i].up {
                continue;
            }
            let v = self.store.volumes(i);
            if self.nodes[i].last_volumes != Some(v) {
                self.nodes[i].last_volumes = Some(v);
                self.feed(i, Input::Volumes(v));
            }
            let ps = self.nodes[i].membership.as_ref().and_then(|m| m.peer_group_state().map(<[u8]>::to_vec));
            if ps.is_some() && ps != self.nodes[i].last_peer_state {
                self.nodes[i].last_peer_state = ps.clone();
                if let Some(bytes) = ps {
                    self.feed(i, Input::PeerState(bytes));
                }
            }
            let up = self.nodes[i].uplink;
            if self.nodes[i].up && self.nodes[i].last_uplink != Some(up) {
                self.nodes[i].last_uplink = Some(up);
                self.feed(i, Input::Uplink(up));
            }
            self.io_fencing_tick(i);
            let at = self.at();
            if let Some(seq) = self.nodes[i].seq.as_mut() {
                let actions = seq.tick(at);
                self.apply(i, actions);
            }
        }
    }

    /// The target of the node holding the group writes through its replicated volume.
    fn app_writes(&mut self) {
        if !self.writes_on {
            return;
        }
        for p in 0..2 {
            let serving = self.nodes[p].target && self.holding(p) && self.store.role(p) == Some(Role::Primary);
            if serving && self.store.inflight(p) < 4 && self.rng.chance(self.cfg.write_rate) {
                let inc = self.nodes[p].generation;
                let ledger = self.split.is_none();
                self.store.write(p, inc, &mut self.rng, ledger);
                if self.rng.chance(0.05) {
                    self.store.pr_update(p, inc, &mut self.rng, ledger);
                }
            }
        }
    }

    fn run_executors(&mut self) {
        for i in 0..2 {
            if !self.nodes[i].up {
                continue;
            }
            if let Some(b) = self.nodes[i].busy
                && b.done_at <= self.now
            {
                // Stopping the target completes only once its writes are answered (or the sequencer's
                // stop timeout escalates).
                if b.step == Step::StopTarget && !b.fails && self.store.inflight(i) > 0 {
                    continue;
                }
                self.nodes[i].busy = None;
                self.finish_step(i, b.step, b.fails);
            }
            if self.nodes[i].up
                && self.nodes[i].busy.is_none()
                && let Some(step) = self.nodes[i].queue.pop_front()
            {
                let slow = self.rng.chance(0.01);
                if slow {
                    self.disturbances += 1; // may exceed the step timeouts
                }
                let d = if slow { self.rng.range(2000, 8000) } else { self.rng.range(20, 400) };
                let fails = self.faults_on && self.rng.chance(self.cfg.step_fail);
                if step == Step::StopTarget {
                    self.nodes[i].target = false;
                }
                self.nodes[i].busy = Some(Busy { step, done_at: self.now + d, fails });
            }
        }
    }

    fn finish_step(&mut self, i: usize, step: Step, fails: bool) {
        let result = if fails {
            Err("injected".to_string())
        } else {
            match step {
                Step::PromoteVolumes => {
                    let r = self.store.promote(i);
                    if r.is_err() {
                        self.stats.promote_refused += 1;
                    }
                    r
                }
                Step::DemoteVolumes => self.store.demote(i),
                Step::StartTarget => {
                    self.nodes[i].target = true;
                    Ok(())
                }
                _ => Ok(()),
            }
        };
        match result {
            Ok(()) => {
                if step == Step::PromoteVolumes {
                    self.check_promotion(i);
                }
                self.feed(i, Input::StepDone(step));
            }
            Err(why) => {
                self.stats.step_failures += 1;
                self.disturbances += 1;
                self.log(format!("{} step {step:?} FAILED ({why})", NAMES[i]));
                self.feed(i, Input::StepFailed(step, why));
            }
        }
    }

    fn run_guards(&mut self) {
        for i in 0..2 {
            if !self.nodes[i].up {
                continue;
            }
            // The second half of a delayed guard: the ping nodes answered before the delay (run_guard
            // does not ask them again).
            if self.nodes[i].guard_fence_at.is_some_and(|t| t <= self.now) {
                self.nodes[i].guard_fence_at = None;
                // As run_guard: a peer heard again during the delay is not fenced.
                let at = self.at();
                let (ok, detail) = if self.nodes[i].membership.as_ref().is_some_and(|m| m.status(at).peer_alive()) {
                    (false, "peer heard again during the fence delay: not fenced".to_string())
                } else {
                    self.fence(i)
                };
                self.feed(i, Input::GuardResult { ok, detail });
                continue;
            }
            if self.nodes[i].guard_due.is_none_or(|t| t > self.now) {
                continue;
            }
            self.nodes[i].guard_due = None;
            let delay = std::mem::take(&mut self.nodes[i].guard_fence_delay);
            let (ok, detail) = match self.cfg.guard {
                GuardKind::PingNodes => (self.nodes[i].uplink, "ping nodes from here".to_string()),
                GuardKind::Both if !self.nodes[i].uplink => (false, "no ping node answers".into()),
                GuardKind::FenceCommand | GuardKind::Both if delay > 0 => {
                    self.stats.delayed_guard_fences += 1;
                    self.log(format!("{} waits {delay} ms before fencing {}, which held the group", NAMES[i], NAMES[other(i)]));
                    self.nodes[i].guard_fence_at = Some(self.now + delay);
                    continue;
                }
                GuardKind::FenceCommand | GuardKind::Both => self.fence(i),
                GuardKind::None => (false, "no guard configured".into()),
            };
            self.feed(i, Input::GuardResult { ok, detail });
        }
    }

    pub fn fence(&mut self, i: usize) -> (bool, String) {
        if self.rng.chance(0.1) {
            return (false, "fence device timed out".into());
        }
        self.stats.fences += 1;
        self.log(format!("{} FENCES {}", NAMES[i], NAMES[other(i)]));
        self.crash(other(i), "fenced");
        (true, "peer powered off".into())
    }

    pub fn holding(&self, i: usize) -> bool {
        self.nodes[i].seq.as_ref().is_some_and(|s| s.phase() == Phase::Holding)
    }
}
