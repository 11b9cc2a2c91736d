//! A deterministic two-node world running several failover groups per node the way the daemon's group
//! loop does (`daemon/cluster.rs` `Driver`, `daemon/group_run.rs` `GroupRun`): per node one real
//! `Sequencer` per group, one real heartbeat `Membership` fed datagrams of the real codec whose one
//! `group_state` field is the real `encode_state_set` of every group's published bytes, split on
//! arrival with `decode_state_set` + `PeerStates::for_group` and fed to a group only when its bytes
//! changed; membership events, uplink and the tick to every group; one guard per node shared by
//! every group (join a running one, answer later asks from a confirmation until the peer is heard).
//!
//! Modelled (I/O): each group's step executor (one step at a time, 20-400 ms, rarely slower than the
//! step timeouts, injected failures while faults are on), each group's volumes (disk always UpToDate;
//! connected while both daemons run and neither the replication network nor that group's link is
//! cut; peer disk known only while connected; promote = Primary, demote = Secondary, a crash or a
//! daemon shutdown leaves nothing Primary), guards (ping = this node's uplink flag; fence = crash the
//! peer, failing now and then; both = ping then fence: `guard.rs`) and escalation (= crash at the end
//! of the tick).

use super::guard::SharedGuard;
use super::heartbeat::{CLUSTER, HeartbeatNet, KEEPALIVE_MS, LinkFaults, membership_params};
use clusterd::failover::{
    Action, AdminCmd, DiskView, GuardKind, Input, Level, LocalVolumes, Phase, Sequencer, SequencerParams, Step,
    decode_state_set, encode_state_set,
};
use clusterd::heartbeat::{Membership, MembershipEvent};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The replication simulation's SplitMix64, salted so this simulation's seeds keep their schedules.
pub use replicator::sim::world::Rng;
const RNG_SALT: u64 = 0x6A09_E667_F3BC_C908;

pub const TICK_MS: u64 = 10;
/// The group loop's timer (`cluster.rs` TICK): volumes, the peer's states, sequencer ticks, epochs.
const POLL_MS: u64 = 50;
/// How often the loop probes the ping nodes (`cluster.rs` UPLINK_EVERY).
const UPLINK_MS: u64 = 1000;
pub const NAMES: [&str; 2] = ["alpha", "beta"];

pub fn other(i: usize) -> usize {
    1 - i
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub failovers: u64,
    pub handoffs: u64,
    pub handoffs_interrupted: u64,
    pub refusals: u64,
    /// Accepted uncontested admin commands after which every other group kept its holder.
    pub independence_checked: u64,
    pub split_warnings: u64,
    pub crashes: u64,
    pub clean_restarts: u64,
    pub escalations: u64,
    pub faults: u64,
    pub step_failures: u64,
    /// Guard runs started (ping and/or fence).
    pub guard_runs: u64,
    /// Group requests that joined a guard already running.
    pub guard_joined: u64,
    /// Group requests answered from a confirmation earlier in the same peer failure.
    pub guard_cached: u64,
    /// Guard runs whose answer went to two or more groups.
    pub guard_runs_shared: u64,
    /// Fences that powered the peer off.
    pub fences: u64,
    /// Fence commands that failed (device timeout): retried by the groups, not limited by check 4.
    pub fence_failures: u64,
    /// Fences of a guard started in a failure that was over when the fence landed (the peer was heard
    /// again meanwhile, e.g. its daemon restarted within the deadtime): counted apart from check 4.
    pub stale_fences: u64,
    /// Peer-failure episodes (seen from one daemon) in which the peer was fenced while several groups
    /// were waiting for or later used that one fence.
    pub multi_group_fence_episodes: u64,
    pub acquisitions: u64,
    pub final_groups_checked: u64,
    pub failbacks_checked: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        let pairs: [(&mut u64, u64); 22] = [
            (&mut self.failovers, o.failovers),
            (&mut self.handoffs, o.handoffs),
            (&mut self.handoffs_interrupted, o.handoffs_interrupted),
            (&mut self.refusals, o.refusals),
            (&mut self.independence_checked, o.independence_checked),
            (&mut self.split_warnings, o.split_warnings),
            (&mut self.crashes, o.crashes),
            (&mut self.clean_restarts, o.clean_restarts),
            (&mut self.escalations, o.escalations),
            (&mut self.faults, o.faults),
            (&mut self.step_failures, o.step_failures),
            (&mut self.guard_runs, o.guard_runs),
            (&mut self.guard_joined, o.guard_joined),
            (&mut self.guard_cached, o.guard_cached),
            (&mut self.guard_runs_shared, o.guard_runs_shared),
            (&mut self.fences, o.fences),
            (&mut self.fence_failures, o.fence_failures),
            (&mut self.stale_fences, o.stale_fences),
            (&mut self.multi_group_fence_episodes, o.multi_group_fence_episodes),
            (&mut self.acquisitions, o.acquisitions),
            (&mut self.final_groups_checked, o.final_groups_checked),
            (&mut self.failbacks_checked, o.failbacks_checked),
        ];
        for (a, b) in pairs {
            *a += b;
        }
    }
}

/// One group's configuration (`groups:` entry).
#[derive(Debug, Clone)]
pub struct GroupCfg {
    pub name: String,
    pub preferred: Option<usize>,
    pub auto_failback: bool,
    pub allow_unguarded_split: bool,
    pub portblock: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub guard: GuardKind,
    pub groups: Vec<GroupCfg>,
    pub links: LinkFaults,
    pub step_fail: f64,
    pub fence_fail: f64,
}

impl Config {
    /// The only configuration in which group `g` may be held on both nodes (and must be reported).
    pub fn unguarded_split_allowed(&self, g: usize) -> bool {
        self.guard == GuardKind::None && self.groups[g].allow_unguarded_split
    }
}

/// A step being carried out by a group's executor.
#[derive(Clone, Copy)]
pub struct Busy {
    pub step: Step,
    pub done_at: u64,
    pub fails: bool,
}

/// One group inside a running daemon (`daemon/group_run.rs` `GroupRun`).
pub struct GroupRun {
    pub seq: Sequencer,
    /// What this group last asked to publish.
    pub published: Vec<u8>,
    /// The peer's newest state bytes for this group, to feed only changes.
    pub peer_bytes: Option<Vec<u8>>,
    pub last_volumes: Option<LocalVolumes>,
    pub queue: VecDeque<Step>,
    pub busy: Option<Busy>,
    /// The phase seen at the last observation (acquisitions are counted on leaving idle/claiming).
    pub seen_active: bool,
}

/// One clusterd incarnation.
pub struct Daemon {
    pub generation: u64,
    pub membership: Membership,
    pub groups: Vec<GroupRun>,
    pub guard: SharedGuard,
    /// The loop's `peer_alive` flag (membership events).
    pub peer_alive: bool,
    pub hb_seq: u64,
    /// The heartbeat's `group_state` field (the encoded set).
    pub published_set: Vec<u8>,
    /// Failure episodes: bumped each time the peer goes from heard to declared dead (1 at start,
    /// before the peer was ever heard). An episode ends when the peer is heard again.
    pub episode: u64,
    /// Fences of the peer by guard runs started in the current episode (check 4: at most one).
    pub fences_this_episode: u32,
    /// Escalation requested: the node crashes at the end of the tick.
    pub self_fence: Option<String>,
    /// A group's state changed: a heartbeat goes out at once (the service sends changes immediately).
    pub send_now: bool,
}

#[derive(Default)]
pub struct Node {
    pub daemon: Option<Daemon>,
    pub restart_at: Option<u64>,
    /// Heartbeat generation of the last incarnation (persisted, bumped per start).
    pub generation: u64,
    /// Per group: the epoch file (`group-epoch.NAME`), written by the loop's tick as `persist_epoch`.
    pub persisted_epoch: Vec<u64>,
    /// Per group: the highest epoch this node ever acquired at (any incarnation), for check 5.
    pub acquired_max: Vec<u64>,
    /// Per group: the volumes are Primary here.
    pub primary: Vec<bool>,
    pub uplink: bool,
}

/// An accepted admin command: its groups must reach `target`; with `others` (an uncontested command)
/// no other group may change holder meanwhile.
pub struct Expect {
    pub groups: Vec<usize>,
    pub target: usize,
    pub others: Option<Vec<(usize, [bool; 2])>>,
    pub deadline: u64,
    pub disturbances: u64,
    pub what: String,
}

pub struct World {
    pub rng: Rng,
    pub now: u64,
    base: Instant,
    pub cfg: Config,
    pub nodes: [Node; 2],
    pub hb: HeartbeatNet,
    /// The replication network between the nodes is cut (all groups).
    pub repl_cut: bool,
    /// Per group: that group's replication links are cut.
    pub group_cut: Vec<bool>,
    pub stats: Stats,
    pub trace: Vec<String>,
    pub disturbances: u64,
    pub expects: Vec<Expect>,
    pub faults_on: bool,
    /// A rule broken inside an action handler, reported by the next check.
    pub violation: Option<String>,
    /// Per group: the node that last held it (failover counting).
    pub last_holder: Vec<Option<usize>>,
    /// Per group, per node: a split-brain warning is showing (counted once per appearance).
    pub warned: Vec<[bool; 2]>,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::salted(seed, RNG_SALT);
        let guard = match rng.next() % 4 {
            0 => GuardKind::None,
            1 => GuardKind::PingNodes,
            2 => GuardKind::FenceCommand,
            _ => GuardKind::Both,
        };
        let count = rng.range(2, 5) as usize;
        let cluster_failback = rng.chance(0.4);
        let groups = (0..count)
            .map(|k| GroupCfg {
                name: ["web", "db", "mail", "files"][k].to_string(),
                preferred: match rng.next() % 3 {
                    0 => None,
                    p => Some((p - 1) as usize),
                },
                // `auto-failback` per group, else the cluster's.
                auto_failback: if rng.chance(0.5) { rng.chance(0.5) } else { cluster_failback },
                allow_unguarded_split: rng.chance(0.5),
                portblock: rng.chance(0.7),
            })
            .collect();
        let cfg = Config {
            guard,
            groups,
            links: LinkFaults {
                loss: [0.0, 0.05, 0.2][rng.range(0, 3) as usize],
                dup: [0.0, 0.05][rng.range(0, 2) as usize],
                spike: [0.0, 0.02, 0.1][rng.range(0, 3) as usize],
                corrupt: [0.0, 0.01][rng.range(0, 2) as usize],
            },
            step_fail: [0.0, 0.02, 0.05][rng.range(0, 3) as usize],
            fence_fail: [0.0, 0.1, 0.3][rng.range(0, 3) as usize],
        };
        let n = cfg.groups.len();
        let mut w = World {
            rng,
            now: 0,
            base: Instant::now(),
            hb: HeartbeatNet::new(cfg.links),
            cfg,
            nodes: [Node::default(), Node::default()],
            repl_cut: false,
            group_cut: vec![false; n],
            stats: Stats::default(),
            trace: Vec::new(),
            disturbances: 0,
            expects: Vec::new(),
            faults_on: true,
            violation: None,
            last_holder: vec![None; n],
            warned: vec![[false; 2]; n],
        };
        w.trace.push(format!("config {:?}", w.cfg));
        for i in 0..2 {
            let node = &mut w.nodes[i];
            node.uplink = true;
            node.persisted_epoch = vec![0; n];
            node.acquired_max = vec![0; n];
            node.primary = vec![false; n];
            // Staggered boots: sometimes one node is up long before the other.
            node.restart_at = Some(w.rng.range(0, 12_000));
        }
        w
    }

    pub fn at(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    pub fn log(&mut self, msg: String) {
        self.trace.push(format!("{:>7} {msg}", self.now));
    }

    pub fn groups(&self) -> usize {
        self.cfg.groups.len()
    }

    /// As `daemon/group_run.rs` `sequencer_params`, with the simulation's short timers.
    fn params(&self, i: usize, g: usize) -> SequencerParams {
        let gc = &self.cfg.groups[g];
        let mut p = SequencerParams::new(NAMES[i], Some(NAMES[other(i)]));
        p.auto_failback = gc.auto_failback;
        p.preferred = gc.preferred.map(|k| NAMES[k].to_string());
        p.initdead = Duration::from_millis(6000);
        p.degr_wfc_timeout = Duration::from_millis(4000);
        p.start_timeout = Duration::from_millis(5000);
        p.stop_timeout = Duration::from_millis(5000);
        p.guard = self.cfg.guard;
        p.allow_unguarded_split = gc.allow_unguarded_split;
        p.garp_repeat_after = Duration::from_millis(2000);
        p.portblock = gc.portblock;
        p.failure_backoff = Duration::from_millis(5000);
        p.guard_retry = Duration::from_millis(2000);
        p.generation = self.nodes[i].generation;
        p.known_epoch = self.nodes[i].persisted_epoch[g];
        p
    }

    // ----- node life cycle -----

    /// The node (or its daemon) dies: nothing it ran survives (the volumes are no longer Primary).
    pub fn crash(&mut self, i: usize, why: &str) {
        if self.nodes[i].daemon.is_none() {
            return;
        }
        self.log(format!("CRASH {} ({why})", NAMES[i]));
        self.stats.crashes += 1;
        self.disturbances += 1;
        self.nodes[i].daemon = None;
        self.nodes[i].primary.iter_mut().for_each(|p| *p = false);
        self.nodes[i].restart_at = Some(self.now + self.rng.range(1000, 10_000));
    }

    /// `systemctl restart clusterd`: the loop stops the groups held here (the steps succeed), stops
    /// heartbeats, and a new incarnation starts shortly after (often within the peer's deadtime).
    pub fn clean_restart(&mut self, i: usize) {
        if self.nodes[i].daemon.is_none() {
            return;
        }
        self.log(format!("RESTART {} (clean shutdown: held groups stopped in reverse order)", NAMES[i]));
        self.stats.clean_restarts += 1;
        self.disturbances += 1;
        self.nodes[i].daemon = None;
        self.nodes[i].primary.iter_mut().for_each(|p| *p = false);
        self.nodes[i].restart_at = Some(self.now + self.rng.range(300, 4000));
    }

    fn boot(&mut self, i: usize) {
        let at = self.at();
        self.nodes[i].generation += 1;
        self.nodes[i].restart_at = None;
        let generation = self.nodes[i].generation;
        let groups = (0..self.groups())
            .map(|g| {
                let p = self.params(i, g);
                GroupRun {
                    seq: Sequencer::new(p, at),
                    published: Vec::new(),
                    peer_bytes: None,
                    last_volumes: None,
                    queue: VecDeque::new(),
                    busy: None,
                    seen_active: false,
                }
            })
            .collect();
        self.nodes[i].daemon = Some(Daemon {
            generation,
            membership: Membership::new(membership_params(), CLUSTER, NAMES[i], NAMES[other(i)], at),
            groups,
            guard: SharedGuard::default(),
            peer_alive: false,
            hb_seq: 0,
            published_set: Vec::new(),
            episode: 1,
            fences_this_episode: 0,
            self_fence: None,
            send_now: false,
        });
        self.log(format!("BOOT {} generation {generation}", NAMES[i]));
    }

    pub fn up(&self, i: usize) -> bool {
        self.nodes[i].daemon.is_some()
    }

    pub fn seq(&self, i: usize, g: usize) -> Option<&Sequencer> {
        self.nodes[i].daemon.as_ref().and_then(|d| d.groups.get(g)).map(|r| &r.seq)
    }

    pub fn phase(&self, i: usize, g: usize) -> Option<Phase> {
        self.seq(i, g).map(Sequencer::phase)
    }

    pub fn holding(&self, i: usize, g: usize) -> bool {
        self.phase(i, g) == Some(Phase::Holding)
    }

    /// Which nodes' sequencers have group `g` active (resources may run there).
    pub fn active_on(&self, g: usize) -> [bool; 2] {
        [0, 1].map(|i| self.phase(i, g).is_some_and(Phase::active))
    }

    // ----- the loop's handlers (cluster.rs `Driver`) -----

    /// `Driver::feed`: one input to one group, its actions carried out; returns admin replies.
    pub fn feed(&mut self, i: usize, g: usize, input: Input) -> Vec<(AdminCmd, Result<(), String>)> {
        let at = self.at();
        let Some(run) = self.nodes[i].daemon.as_mut().and_then(|d| d.groups.get_mut(g)) else { return Vec::new() };
        let actions = run.seq.step(at, input);
        self.apply(i, g, actions)
    }

    /// `Driver::feed_all`.
    fn feed_all(&mut self, i: usize, input: &Input) {
        for g in 0..self.groups() {
            self.feed(i, g, input.clone());
        }
    }

    /// `GroupRun::apply` followed by `Driver::after` (publish the set, then the shared guard).
    fn apply(&mut self, i: usize, g: usize, actions: Vec<Action>) -> Vec<(AdminCmd, Result<(), String>)> {
        let mut replies = Vec::new();
        let (mut published, mut guard) = (false, false);
        for a in actions {
            match a {
                Action::Run(step) => {
                    let Some(run) = self.run_mut(i, g) else { continue };
                    let told = run.last_volumes.map(|v| v.disk);
                    if step == Step::PromoteVolumes && told != Some(DiskView::UpToDate) && self.violation.is_none() {
                        self.violation = Some(format!("{} asked to promote group {g} with its disk reported {told:?}", NAMES[i]));
                    }
                    if let Some(run) = self.run_mut(i, g) {
                        run.queue.push_back(step);
                    }
                }
                Action::RunGuard => guard = true,
                Action::Escalate(why) => {
                    self.stats.escalations += 1;
                    if let Some(d) = self.nodes[i].daemon.as_mut() {
                        d.self_fence.get_or_insert(format!("group {g}: {why}"));
                    }
                }
                Action::Publish(bytes) => {
                    if let Some(run) = self.run_mut(i, g) {
                        run.published = bytes;
                        published = true;
                    }
                }
                Action::Reply { cmd, result } => replies.push((cmd, result)),
                Action::Log(level, msg) => {
                    if level >= Level::Info {
                        self.log(format!("{} [{}] {level:?}: {msg}", NAMES[i], self.cfg.groups[g].name));
                    }
                }
            }
        }
        self.observe(i, g);
        if published {
            self.publish_all(i);
        }
        if guard {
            self.guard(i, g);
        }
        replies
    }

    fn run_mut(&mut self, i: usize, g: usize) -> Option<&mut GroupRun> {
        self.nodes[i].daemon.as_mut().and_then(|d| d.groups.get_mut(g))
    }

    /// Acquisitions (check 5: each at a higher epoch than any this node acquired the group at before,
    /// across restarts) and failovers.
    fn observe(&mut self, i: usize, g: usize) {
        let Some(run) = self.run_mut(i, g) else { return };
        let st = run.seq.status();
        let active = st.phase.active();
        let acquired = active && !run.seen_active;
        run.seen_active = active;
        if !acquired {
            return;
        }
        self.stats.acquisitions += 1;
        let before = self.nodes[i].acquired_max[g];
        if st.epoch <= before && self.violation.is_none() {
            self.violation = Some(format!(
                "check 5: {} acquired group {g} at epoch {} although it acquired it at epoch {before} before (generation {})",
                NAMES[i],
                st.epoch,
                self.nodes[i].generation
            ));
        }
        self.nodes[i].acquired_max[g] = before.max(st.epoch);
        if self.last_holder[g] == Some(other(i)) {
            self.stats.failovers += 1;
        }
        self.last_holder[g] = Some(i);
    }

    /// `Driver::publish_all`: the groups' published bytes as one set (a `groups:` configuration).
    fn publish_all(&mut self, i: usize) {
        let names: Vec<String> = self.cfg.groups.iter().map(|g| g.name.clone()).collect();
        let Some(d) = self.nodes[i].daemon.as_mut() else { return };
        let set: Vec<(String, Vec<u8>)> =
            d.groups.iter().zip(&names).filter(|(r, _)| !r.published.is_empty()).map(|(r, n)| (n.clone(), r.published.clone())).collect();
        let bytes = encode_state_set(&set);
        if bytes != d.published_set {
            d.published_set = bytes;
            d.send_now = true;
        }
    }

    /// `Driver::feed_peer_states`: the peer's set split per group, fed where the bytes changed.
    fn feed_peer_states(&mut self, i: usize) {
        let Some(bytes) = self.nodes[i].daemon.as_ref().and_then(|d| d.membership.peer_group_state().map(<[u8]>::to_vec)) else { return };
        let peer = match decode_state_set(&bytes) {
            Ok(p) => p,
            Err(e) => {
                self.violation.get_or_insert(format!("{}: the peer's group-state set does not decode: {e}", NAMES[i]));
                return;
            }
        };
        for g in 0..self.groups() {
            let name = self.cfg.groups[g].name.clone();
            let mine = peer.for_group(&name, g == 0).map(<[u8]>::to_vec);
            let Some(run) = self.run_mut(i, g) else { return };
            if mine.is_some() && mine != run.peer_bytes {
                run.peer_bytes.clone_from(&mine);
                if let Some(b) = mine {
                    self.feed(i, g, Input::PeerState(b));
                }
            }
        }
    }

    // ----- the clock -----

    pub fn advance(&mut self) -> Result<(), String> {
        self.now += TICK_MS;
        for i in 0..2 {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.boot(i);
            }
        }
        self.heartbeats();
        self.run_executors();
        self.run_guards();
        if self.now.is_multiple_of(POLL_MS) {
            for i in 0..2 {
                self.poll(i);
            }
        }
        for i in 0..2 {
            let keepalive = (self.now + 250 * i as u64).is_multiple_of(KEEPALIVE_MS);
            let Some(d) = self.nodes[i].daemon.as_mut() else { continue };
            if keepalive || std::mem::take(&mut d.send_now) {
                d.hb_seq += 1;
                let (generation, seq, state) = (d.generation, d.hb_seq, d.published_set.clone());
                self.hb.send(&mut self.rng, self.now, i, NAMES, generation, seq, &state);
            }
        }
        for i in 0..2 {
            if let Some(why) = self.nodes[i].daemon.as_mut().and_then(|d| d.self_fence.take()) {
                self.crash(i, &format!("self-fence: {why}"));
            }
        }
        self.check_invariants()?;
        self.check_expectations()
    }

    /// Datagrams in (real codec, real membership), membership events to every group, changed peer
    /// states to their groups, membership timers.
    fn heartbeats(&mut self) {
        let at = self.at();
        let mut changed = [false; 2];
        for (to, input) in self.hb.deliver(self.now, at) {
            let Some(d) = self.nodes[to].daemon.as_mut() else { continue };
            let before = d.membership.peer_group_state().map(<[u8]>::to_vec);
            let events = d.membership.step(input);
            changed[to] |= d.membership.peer_group_state().map(<[u8]>::to_vec) != before;
            self.membership_events(to, events);
        }
        for i in 0..2 {
            if changed[i] {
                self.feed_peer_states(i);
            }
            let Some(d) = self.nodes[i].daemon.as_mut() else { continue };
            let events = d.membership.tick(at);
            self.membership_events(i, events);
        }
    }

    fn membership_events(&mut self, i: usize, events: Vec<MembershipEvent>) {
        for ev in events {
            let input = match ev {
                MembershipEvent::PeerAlive { generation } => Input::PeerAlive { generation },
                MembershipEvent::PeerDead | MembershipEvent::InitDeadExpired => Input::PeerDead,
                MembershipEvent::PeerRestarted { new, .. } => Input::PeerRestarted { generation: new },
                MembershipEvent::LinkUp(_) | MembershipEvent::LinkDown(_) | MembershipEvent::LateHeartbeat { .. } => continue,
            };
            let alive = !matches!(input, Input::PeerDead);
            if !alive {
                self.disturbances += 1;
            }
            self.log(format!("{} membership: {input:?}", NAMES[i]));
            self.peer_liveness(i, alive);
            self.feed_all(i, &input);
        }
    }

    /// The modelled volumes of group `g` on node `i`.
    pub fn volumes(&self, i: usize, g: usize) -> LocalVolumes {
        let connected = self.up(0) && self.up(1) && !self.repl_cut && !self.group_cut[g];
        LocalVolumes {
            disk: DiskView::UpToDate,
            connected,
            peer_disk: connected.then_some(DiskView::UpToDate),
            peer_primary: connected && self.nodes[other(i)].primary[g],
        }
    }

    /// The loop's timer (`Driver::tick`): peer states, the uplink probe, then per group volumes,
    /// the sequencer's tick and the epoch file.
    fn poll(&mut self, i: usize) {
        if !self.up(i) {
            return;
        }
        self.feed_peer_states(i);
        if self.cfg.guard.uses_ping() && self.now.is_multiple_of(UPLINK_MS) {
            let up = self.nodes[i].uplink;
            self.feed_all(i, &Input::Uplink(up));
        }
        let at = self.at();
        for g in 0..self.groups() {
            let v = self.volumes(i, g);
            let Some(run) = self.run_mut(i, g) else { return };
            if run.last_volumes != Some(v) {
                run.last_volumes = Some(v);
                self.feed(i, g, Input::Volumes(v));
            }
            let Some(run) = self.run_mut(i, g) else { return };
            let actions = run.seq.tick(at);
            self.apply(i, g, actions);
            // `GroupRun::persist_epoch`: the epoch file follows the status' epoch at each tick.
            if let Some(e) = self.seq(i, g).map(|s| s.status().epoch) {
                let p = &mut self.nodes[i].persisted_epoch[g];
                *p = (*p).max(e);
            }
        }
    }

    /// Each group's executor: one step at a time in order.
    fn run_executors(&mut self) {
        let now = self.now;
        for i in 0..2 {
            for g in 0..self.groups() {
                let Some(run) = self.run_mut(i, g) else { break };
                if let Some(b) = run.busy
                    && b.done_at <= now
                {
                    run.busy = None;
                    self.finish_step(i, g, b.step, b.fails);
                }
                let Some(run) = self.run_mut(i, g) else { break };
                if run.busy.is_some() {
                    continue;
                }
                let Some(step) = run.queue.pop_front() else { continue };
                let slow = self.faults_on && self.rng.chance(0.01);
                let took = if slow { self.rng.range(2000, 8000) } else { self.rng.range(20, 400) };
                let fails = self.faults_on && self.rng.chance(self.cfg.step_fail);
                if slow {
                    self.disturbances += 1; // may exceed the step timeouts
                }
                if let Some(run) = self.run_mut(i, g) {
                    run.busy = Some(Busy { step, done_at: now + took, fails });
                }
            }
        }
    }

    fn finish_step(&mut self, i: usize, g: usize, step: Step, fails: bool) {
        if fails {
            self.stats.step_failures += 1;
            self.disturbances += 1;
            self.log(format!("{} [{}] step {step:?} FAILED (injected)", NAMES[i], self.cfg.groups[g].name));
            self.feed(i, g, Input::StepFailed(step, "injected".into()));
            return;
        }
        match step {
            Step::PromoteVolumes => self.nodes[i].primary[g] = true,
            Step::DemoteVolumes => self.nodes[i].primary[g] = false,
            _ => {}
        }
        self.feed(i, g, Input::StepDone(step));
    }
}
