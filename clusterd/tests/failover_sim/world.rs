//! A deterministic two-node world around two failover sequencers.
//!
//! Models (simple on purpose, each says what real component it stands for):
//! - Membership: heartbeats every 500 ms on two links; a peer is dead after 3 s of silence on both;
//!   packets may be lost, delayed (spikes reorder them) or duplicated; a packet from an older
//!   generation is dropped (replay protection); a new generation is reported as `PeerRestarted`.
//! - Replication: connected when both nodes are up, the link is up both ways and not both are Primary.
//!   On connect the newer (or Primary) side resyncs the other, which is Inconsistent meanwhile. A Primary
//!   that loses the link outdates the peer through the heartbeat path if it can (dopd); otherwise its
//!   writes freeze (resource-and-stonith style) so a silent Secondary is never silently behind. A restarted
//!   node's disk is Consistent until it connects. Promotion of an Outdated/Inconsistent disk is refused.
//! - Executor: one step at a time, random latency (sometimes slower than the start timeout), random
//!   failures while faults are on. `Escalate` = self-fence = crash.
//! - Guards: ping = this node's uplink; fence = crash the peer (fails sometimes); both = ping then fence.

use clusterd::failover::{
    Action, AdminCmd, DiskView, GuardKind, Input, Level, LocalVolumes, Phase, Sequencer, SequencerParams, Step,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// SplitMix64: small, fast, enough for schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

pub const TICK_MS: u64 = 10;
const SEQ_TICK_MS: u64 = 100;
const KEEPALIVE_MS: u64 = 500;
const DEADTIME_MS: u64 = 3000;
const NAMES: [&str; 2] = ["alpha", "beta"];

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub failovers: u64,
    pub handoffs: u64,
    pub handoffs_interrupted: u64,
    pub refusals: u64,
    pub split_warnings: u64,
    pub crashes: u64,
    pub fences: u64,
    pub partitions: u64,
    pub step_failures: u64,
    pub writes: u64,
    pub escalations: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.failovers += o.failovers;
        self.handoffs += o.handoffs;
        self.handoffs_interrupted += o.handoffs_interrupted;
        self.refusals += o.refusals;
        self.split_warnings += o.split_warnings;
        self.crashes += o.crashes;
        self.fences += o.fences;
        self.partitions += o.partitions;
        self.step_failures += o.step_failures;
        self.writes += o.writes;
        self.escalations += o.escalations;
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub guard: GuardKind,
    pub allow_unguarded_split: bool,
    pub auto_failback: bool,
    pub preferred: Option<usize>,
    pub portblock: bool,
    pub loss: f64,
    pub dup: f64,
    pub spike: f64,
    pub step_fail: f64,
}

struct Packet {
    at: u64,
    to: usize,
    generation: u64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Node {
    up: bool,
    restart_at: Option<u64>,
    generation: u64,
    seq: Option<Sequencer>,
    published: Vec<u8>,
    last_heard: u64,
    peer_alive: bool,
    peer_gen: Option<u64>,
    queue: VecDeque<Step>,
    busy: Option<(Step, u64, bool)>,
    guard_due: Option<u64>,
    promoted: bool,
    data: u64,
    outdated: bool,
    unsure: bool,
    inconsistent: bool,
    peer_disk_seen: Option<DiskView>,
    last_volumes: Option<LocalVolumes>,
    uplink: bool,
    last_uplink: Option<bool>,
    persisted_epoch: u64,
    was_holding: bool,
    warned: bool,
}

struct Expect {
    target: usize,
    deadline: u64,
    disturbances: u64,
    what: &'static str,
}

pub struct World {
    pub rng: Rng,
    pub now: u64,
    base: Instant,
    pub cfg: Config,
    nodes: [Node; 2],
    /// `hb_up[link][from]`: heartbeat link `link` carries packets sent by node `from`.
    hb_up: [[bool; 2]; 2],
    /// `repl_up[from]`.
    repl_up: [bool; 2],
    connected: bool,
    resync_done_at: Option<u64>,
    packets: Vec<Packet>,
    pub stats: Stats,
    pub trace: Vec<String>,
    disturbances: u64,
    expects: Vec<Expect>,
    last_holder: Option<usize>,
    pub faults_on: bool,
    /// A rule broken inside an action handler, reported by the next check.
    violation: Option<String>,
}

fn other(i: usize) -> usize {
    1 - i
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let guard = match rng.next() % 4 {
            0 => GuardKind::None,
            1 => GuardKind::PingNodes,
            2 => GuardKind::FenceCommand,
            _ => GuardKind::Both,
        };
        let cfg = Config {
            guard,
            allow_unguarded_split: rng.chance(0.6),
            auto_failback: rng.chance(0.3),
            preferred: match rng.next() % 3 {
                0 => None,
                k => Some((k - 1) as usize),
            },
            portblock: rng.chance(0.7),
            loss: [0.0, 0.05, 0.2][rng.range(0, 3) as usize],
            dup: [0.0, 0.05][rng.range(0, 2) as usize],
            spike: [0.0, 0.02, 0.1][rng.range(0, 3) as usize],
            step_fail: [0.0, 0.02, 0.05][rng.range(0, 3) as usize],
        };
        let mut w = World {
            rng,
            now: 0,
            base: Instant::now(),
            cfg,
            nodes: [Node::default(), Node::default()],
            hb_up: [[true; 2]; 2],
            repl_up: [true; 2],
            connected: false,
            resync_done_at: None,
            packets: Vec::new(),
            stats: Stats::default(),
            trace: Vec::new(),
            disturbances: 0,
            expects: Vec::new(),
            last_holder: None,
            faults_on: true,
            violation: None,
        };
        w.trace.push(format!("config {:?}", w.cfg));
        for i in 0..2 {
            w.nodes[i].uplink = true;
            // Staggered boots: sometimes one node is up long before the other.
            w.nodes[i].restart_at = Some(w.rng.range(0, 12_000));
        }
        w
    }

    fn at(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn log(&mut self, msg: String) {
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

    fn crash(&mut self, i: usize, why: &str) {
        if !self.nodes[i].up {
            return;
        }
        self.log(format!("CRASH {} ({why})", NAMES[i]));
        self.stats.crashes += 1;
        self.disturbances += 1;
        let restart = self.now + self.rng.range(1000, 10_000);
        let n = &mut self.nodes[i];
        n.up = false;
        n.seq = None;
        n.promoted = false;
        n.queue.clear();
        n.busy = None;
        n.guard_due = None;
        n.peer_alive = false;
        n.peer_gen = None;
        n.last_volumes = None;
        n.last_uplink = None;
        n.peer_disk_seen = None;
        n.was_holding = false;
        n.warned = false;
        n.restart_at = Some(restart);
    }

    fn boot(&mut self, i: usize) {
        self.nodes[i].generation += 1;
        self.nodes[i].up = true;
        self.nodes[i].restart_at = None;
        self.nodes[i].unsure = true;
        let seq = Sequencer::new(self.params(i), self.at());
        self.nodes[i].seq = Some(seq);
        self.log(format!("BOOT {} generation {}", NAMES[i], self.nodes[i].generation));
    }

    /// Feeds one input and carries out the actions; returns admin replies.
    fn feed(&mut self, i: usize, input: Input) -> Vec<(AdminCmd, Result<(), String>)> {
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
                }
                Action::Escalate(why) => {
                    self.stats.escalations += 1;
                    self.crash(i, &format!("self-fence: {why}"));
                    return replies;
                }
                Action::Publish(bytes) => self.nodes[i].published = bytes,
                Action::Reply { cmd, result } => replies.push((cmd, result)),
                Action::Log(level, msg) => {
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
        self.deliver_packets();
        self.run_executors();
        self.run_guards();
        self.membership_timeouts();
        self.replication();
        if self.now.is_multiple_of(100) {
            self.writes();
        }
        self.feed_local_state();
        if self.now.is_multiple_of(SEQ_TICK_MS) {
            for i in 0..2 {
                let at = self.at();
                if let Some(seq) = self.nodes[i].seq.as_mut() {
                    let actions = seq.tick(at);
                    self.apply(i, actions);
                }
            }
        }
        for i in 0..2 {
            if self.nodes[i].up && (self.now + 250 * i as u64).is_multiple_of(KEEPALIVE_MS) {
                self.send_heartbeat(i);
            }
        }
        self.check_invariants()?;
        self.check_expectations()
    }

    fn send_heartbeat(&mut self, i: usize) {
        for link in 0..2 {
            if !self.hb_up[link][i] || self.rng.chance(self.cfg.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.cfg.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let delay =
                    if self.rng.chance(self.cfg.spike) { self.rng.range(200, 2500) } else { self.rng.range(1, 30) };
                let bytes = self.nodes[i].published.clone();
                let generation = self.nodes[i].generation;
                self.packets.push(Packet { at: self.now + delay, to: other(i), generation, bytes });
            }
        }
    }

    fn deliver_packets(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<Packet>, Vec<Packet>) = std::mem::take(&mut self.packets).into_iter().partition(|p| p.at <= now);
        self.packets = rest;
        for p in due {
            let to = p.to;
            if !self.nodes[to].up || p.bytes.is_empty() {
                continue;
            }
            if self.nodes[to].peer_gen.is_some_and(|g| p.generation < g) {
                continue; // replay of an older generation
            }
            self.nodes[to].last_heard = now;
            let restarted = self.nodes[to].peer_gen.is_some_and(|g| p.generation > g);
            let was_alive = self.nodes[to].peer_alive;
            self.nodes[to].peer_alive = true;
            self.nodes[to].peer_gen = Some(p.generation);
            if restarted {
                self.feed(to, Input::PeerRestarted { generation: p.generation });
            } else if !was_alive {
                self.feed(to, Input::PeerAlive { generation: p.generation });
            }
            self.feed(to, Input::PeerState(p.bytes));
        }
    }

    fn membership_timeouts(&mut self) {
        for i in 0..2 {
            let n = &self.nodes[i];
            if n.up && n.peer_alive && self.now.saturating_sub(n.last_heard) > DEADTIME_MS {
                self.nodes[i].peer_alive = false;
                self.disturbances += 1;
                self.feed(i, Input::PeerDead);
            }
        }
    }

    fn run_executors(&mut self) {
        for i in 0..2 {
            if !self.nodes[i].up {
                continue;
            }
            if let Some((step, done_at, fails)) = self.nodes[i].busy
                && done_at <= self.now
            {
                self.nodes[i].busy = None;
                self.finish_step(i, step, fails);
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
                self.nodes[i].busy = Some((step, self.now + d, fails));
            }
        }
    }

    fn finish_step(&mut self, i: usize, step: Step, fails: bool) {
        let view = self.disk_view(i);
        let refused = step == Step::PromoteVolumes && matches!(view, DiskView::Outdated | DiskView::Inconsistent);
        if fails || refused {
            let why = if refused { format!("replicator refused: disk is {}", view.name()) } else { "injected".into() };
            self.stats.step_failures += 1;
            self.disturbances += 1;
            self.log(format!("{} step {step:?} FAILED ({why})", NAMES[i]));
            self.feed(i, Input::StepFailed(step, why));
            return;
        }
        match step {
            Step::PromoteVolumes => {
                self.nodes[i].promoted = true;
                self.nodes[i].unsure = false;
            }
            Step::DemoteVolumes => self.nodes[i].promoted = false,
            _ => {}
        }
        self.feed(i, Input::StepDone(step));
    }

    fn run_guards(&mut self) {
        for i in 0..2 {
            if self.nodes[i].guard_due.is_none_or(|t| t > self.now) || !self.nodes[i].up {
                continue;
            }
            self.nodes[i].guard_due = None;
            let (ok, detail) = match self.cfg.guard {
                GuardKind::PingNodes => (self.nodes[i].uplink, "ping nodes from here".to_string()),
                GuardKind::FenceCommand => self.fence(i),
                GuardKind::Both if !self.nodes[i].uplink => (false, "no ping node answers".into()),
                GuardKind::Both => self.fence(i),
                GuardKind::None => (false, "no guard configured".into()),
            };
            self.feed(i, Input::GuardResult { ok, detail });
        }
    }

    fn fence(&mut self, i: usize) -> (bool, String) {
        if self.rng.chance(0.1) {
            return (false, "fence device timed out".into());
        }
        self.stats.fences += 1;
        self.log(format!("{} FENCES {}", NAMES[i], NAMES[other(i)]));
        self.crash(other(i), "fenced");
        (true, "peer powered off".into())
    }

    // ----- replication model -----

    fn disk_view(&self, i: usize) -> DiskView {
        let n = &self.nodes[i];
        if n.inconsistent {
            DiskView::Inconsistent
        } else if n.outdated {
            DiskView::Outdated
        } else if n.promoted {
            DiskView::UpToDate
        } else if n.unsure {
            DiskView::Consistent
        } else {
            DiskView::UpToDate
        }
    }

    fn heartbeat_path_both_ways(&self) -> bool {
        let a_to_b = self.hb_up[0][0] || self.hb_up[1][0];
        let b_to_a = self.hb_up[0][1] || self.hb_up[1][1];
        a_to_b && b_to_a && self.nodes[0].up && self.nodes[1].up
    }

    fn replication(&mut self) {
        let (a, b) = (&self.nodes[0], &self.nodes[1]);
        let link = a.up && b.up && self.repl_up[0] && self.repl_up[1] && !(a.promoted && b.promoted);
        if link && !self.connected {
            self.connected = true;
            self.on_connect();
        } else if !link && self.connected {
            self.connected = false;
            self.resync_done_at = None;
            self.log("replication disconnected".into());
        }
        if self.connected {
            if self.resync_done_at.is_some_and(|t| t <= self.now) {
                self.resync_done_at = None;
                let data = self.nodes[0].data.max(self.nodes[1].data);
                for n in &mut self.nodes {
                    n.data = data;
                    n.inconsistent = false;
                    n.outdated = false;
                    n.unsure = false;
                }
                self.log(format!("resync finished at data {data}"));
            }
            for i in 0..2 {
                self.nodes[i].peer_disk_seen = Some(self.disk_view(other(i)));
            }
        } else {
            // dopd: a Primary outdates a Secondary it cannot replicate to, over the heartbeat path.
            for i in 0..2 {
                let p = other(i);
                if self.nodes[p].promoted
                    && !self.nodes[i].promoted
                    && !self.nodes[i].outdated
                    && self.heartbeat_path_both_ways()
                {
                    self.nodes[i].outdated = true;
                    self.nodes[p].peer_disk_seen = Some(DiskView::Outdated);
                    self.log(format!("{} outdates {} over the heartbeat link", NAMES[p], NAMES[i]));
                }
            }
        }
    }

    fn on_connect(&mut self) {
        let (da, db) = (self.nodes[0].data, self.nodes[1].data);
        let needs = |n: &Node| n.inconsistent;
        let target = if da == db && !needs(&self.nodes[0]) && !needs(&self.nodes[1]) {
            None
        } else if self.nodes[0].promoted {
            Some(1)
        } else if self.nodes[1].promoted {
            Some(0)
        } else if da != db {
            Some(if da < db { 0 } else { 1 })
        } else {
            Some(if needs(&self.nodes[0]) { 0 } else { 1 })
        };
        match target {
            None => {
                for n in &mut self.nodes {
                    n.outdated = false;
                    n.unsure = false;
                }
                self.log(format!("replication connected, in sync at data {da}"));
            }
            Some(t) => {
                self.nodes[t].inconsistent = true;
                self.resync_done_at = Some(self.now + self.rng.range(300, 3000));
                self.log(format!("replication connected: resync {} <- {}", NAMES[t], NAMES[other(t)]));
            }
        }
    }

    fn writes(&mut self) {
        for p in 0..2 {
            let holding = self.nodes[p].seq.as_ref().is_some_and(|s| s.phase() == Phase::Holding);
            if !self.nodes[p].promoted || !holding {
                continue;
            }
            let s = other(p);
            if self.connected {
                self.nodes[p].data += 1;
                if !self.nodes[s].inconsistent {
                    self.nodes[s].data += 1;
                }
            } else if self.nodes[s].outdated {
                self.nodes[p].data += 1;
            } else {
                continue; // frozen until the peer is outdated or reconnects
            }
            self.stats.writes += 1;
        }
    }

    fn feed_local_state(&mut self) {
        for i in 0..2 {
            if !self.nodes[i].up {
                continue;
            }
            let v = LocalVolumes {
                disk: self.disk_view(i),
                connected: self.connected,
                peer_disk: self.nodes[i].peer_disk_seen,
                peer_primary: self.connected && self.nodes[other(i)].promoted,
            };
            if self.nodes[i].last_volumes != Some(v) {
                self.nodes[i].last_volumes = Some(v);
                self.feed(i, Input::Volumes(v));
            }
            let up = self.nodes[i].uplink;
            if self.nodes[i].last_uplink != Some(up) {
                self.nodes[i].last_uplink = Some(up);
                self.feed(i, Input::Uplink(up));
            }
        }
    }

    // ----- faults and admin -----

    pub fn inject_faults(&mut self) {
        let r = self.rng.next() % 100;
        match r {
            0..=2 => {
                let link = self.rng.range(0, 2) as usize;
                let dir = self.rng.range(0, 2) as usize;
                self.hb_up[link][dir] = !self.hb_up[link][dir];
                self.note_fault(format!("heartbeat link {link} from {} up={}", NAMES[dir], self.hb_up[link][dir]));
            }
            3 => {
                let up = !(self.hb_up[0][0] && self.hb_up[0][1]);
                self.hb_up = [[up; 2]; 2];
                self.note_fault(format!("all heartbeat links up={up}"));
            }
            4..=5 => {
                let dir = self.rng.range(0, 2) as usize;
                self.repl_up[dir] = !self.repl_up[dir];
                self.note_fault(format!("replication from {} up={}", NAMES[dir], self.repl_up[dir]));
            }
            6 => {
                let up = !(self.repl_up[0] && self.repl_up[1]);
                self.repl_up = [up; 2];
                self.hb_up = [[up; 2]; 2];
                self.note_fault(format!("full partition up={up}"));
            }
            7 => {
                let i = self.rng.range(0, 2) as usize;
                self.nodes[i].uplink = !self.nodes[i].uplink;
                self.note_fault(format!("{} uplink={}", NAMES[i], self.nodes[i].uplink));
            }
            8 => {
                let i = self.rng.range(0, 2) as usize;
                self.crash(i, "injected");
            }
            _ => {}
        }
    }

    fn note_fault(&mut self, what: String) {
        self.stats.partitions += 1;
        self.disturbances += 1;
        self.log(format!("FAULT {what}"));
    }

    pub fn admin(&mut self) {
        let i = self.rng.range(0, 2) as usize;
        let input = if self.rng.chance(0.5) { Input::Standby } else { Input::Takeover };
        self.log(format!("ADMIN {} {input:?}", NAMES[i]));
        for (cmd, result) in self.feed(i, input) {
            match result {
                Err(reason) => {
                    assert!(!reason.is_empty(), "a refusal must give a reason");
                    self.stats.refusals += 1;
                    self.log(format!("{} {cmd:?} refused: {reason}", NAMES[i]));
                }
                Ok(()) => {
                    self.disturbances += 1;
                    let target = if cmd == AdminCmd::Standby { other(i) } else { i };
                    let what = if cmd == AdminCmd::Standby { "standby" } else { "takeover" };
                    self.expects.push(Expect {
                        target,
                        deadline: self.now + 40_000,
                        disturbances: self.disturbances,
                        what,
                    });
                }
            }
        }
    }

    /// Faults stop: every link and node comes back, nothing fails any more.
    pub fn heal(&mut self) {
        self.faults_on = false;
        self.hb_up = [[true; 2]; 2];
        self.repl_up = [true; 2];
        self.cfg.loss = 0.0;
        self.cfg.spike = 0.0;
        for i in 0..2 {
            self.nodes[i].uplink = true;
            if !self.nodes[i].up {
                self.nodes[i].restart_at = Some(self.now + 10);
            }
        }
        self.log("HEAL: faults stop".into());
    }

    // ----- checks -----

    fn holding(&self, i: usize) -> bool {
        self.nodes[i].promoted && self.nodes[i].seq.as_ref().is_some_and(|s| s.phase() == Phase::Holding)
    }

    fn check_invariants(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        for i in 0..2 {
            let Some(seq) = self.nodes[i].seq.as_ref() else { continue };
            let st = seq.status();
            self.nodes[i].persisted_epoch = self.nodes[i].persisted_epoch.max(st.epoch);
            let warned = st.split_brain_warning.is_some();
            if warned && !self.nodes[i].warned {
                self.stats.split_warnings += 1;
            }
            self.nodes[i].warned = warned;
            if self.nodes[i].promoted && !st.phase.active() {
                return Err(format!("{} is Primary but its sequencer is {}", NAMES[i], st.phase.name()));
            }
            let holding = self.holding(i);
            if holding && !self.nodes[i].was_holding {
                if self.last_holder == Some(other(i)) {
                    self.stats.failovers += 1;
                }
                self.last_holder = Some(i);
            }
            self.nodes[i].was_holding = holding;
        }
        if self.nodes[0].promoted && self.nodes[1].promoted {
            let warned = self.nodes.iter().any(|n| n.warned);
            let allowed = self.cfg.guard == GuardKind::None && self.cfg.allow_unguarded_split && warned;
            if !allowed {
                return Err(format!(
                    "two holders (guard {:?}, unguarded split allowed {}, warning shown {warned})",
                    self.cfg.guard, self.cfg.allow_unguarded_split
                ));
            }
        }
        for i in 0..2 {
            let n = &self.nodes[i];
            if !n.promoted {
                continue;
            }
            if n.inconsistent || n.outdated {
                return Err(format!("{} holds the group with a {} disk", NAMES[i], self.disk_view(i).name()));
            }
            if n.data < self.nodes[other(i)].data {
                return Err(format!(
                    "{} holds older data ({}) than its peer ({}): data loss",
                    NAMES[i],
                    n.data,
                    self.nodes[other(i)].data
                ));
            }
        }
        Ok(())
    }

    fn check_expectations(&mut self) -> Result<(), String> {
        let mut keep = Vec::new();
        for e in std::mem::take(&mut self.expects) {
            if self.holding(e.target) {
                self.stats.handoffs += 1;
            } else if self.disturbances > e.disturbances {
                self.stats.handoffs_interrupted += 1;
            } else if self.now >= e.deadline {
                return Err(format!("accepted {} did not move the group to {}", e.what, NAMES[e.target]));
            } else {
                keep.push(e);
            }
        }
        self.expects = keep;
        Ok(())
    }

    /// After the quiet period: exactly one node holds the group.
    pub fn check_liveness(&self) -> Result<(), String> {
        let holders: Vec<usize> = (0..2).filter(|&i| self.holding(i)).collect();
        if holders.len() != 1 {
            let st: Vec<String> =
                (0..2).map(|i| format!("{}: {:?}", NAMES[i], self.nodes[i].seq.as_ref().map(|s| s.status()))).collect();
            return Err(format!("liveness: {} holders after faults stopped; {}", holders.len(), st.join("; ")));
        }
        Ok(())
    }
}
