//! The failover state machine. See the module docs in `failover/mod.rs` for the rules; comments here
//! say why each decision is made where it is.

use super::state::{GroupState, Handoff, Phase, encode_state};
use super::steps::{start_plan, stop_plan};
use super::{Action, AdminCmd, DiskView, GuardKind, Input, Level, LocalVolumes, SequencerParams, SequencerStatus, Step};
use std::time::Instant;

#[path = "admin.rs"]
mod admin;

/// Why the group is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopReason {
    /// Standby/takeover/auto-failback/uplink loss: publish `ReleasedTo` when done.
    Handoff { to: String, epoch: u64 },
    StartFailed,
    /// Both nodes held the group; this one had the lower (epoch, node) pair.
    SplitResolve,
}

/// Decides the group's start/stop for one node. Feed it inputs, carry out its actions in order, one
/// `Run` at a time (a step is reported before the next `Run` is started).
#[derive(Debug)]
pub struct Sequencer {
    p: SequencerParams,
    started_at: Instant,
    phase: Phase,
    /// Highest epoch known (ours, the peer's, persisted).
    epoch: u64,
    /// Epoch of the current acquisition (meaningful while `phase.active()`).
    held_epoch: u64,
    plan: Vec<Step>,
    idx: usize,
    step_started: Instant,
    /// Start steps that ran (fully or partly) for the current acquisition: what a release must undo.
    started_steps: Vec<Step>,
    stop_reason: Option<StopReason>,
    volumes: Option<LocalVolumes>,
    uplink: Option<bool>,
    peer_alive: bool,
    /// The peer was heard since this sequencer started (initdead applies until then).
    peer_heard: bool,
    peer: Option<GroupState>,
    guard_pending: bool,
    /// Set by a positive guard result and consumed by the very next decision: a confirmation is
    /// about the peer as it was then, so it is never reused later.
    guard_confirmed: bool,
    guard_next: Option<Instant>,
    claim: Option<u64>,
    ack: Option<u64>,
    handoff: Handoff,
    request_deadline: Option<Instant>,
    /// The `ReleasedTo` epoch this node already acted on: a release is used once.
    release_used: Option<u64>,
    backoff_until: Option<Instant>,
    garp_due: Option<Instant>,
    garp_inflight: bool,
    last_failure: Option<String>,
    split_warning: Option<String>,
    waiting: Option<String>,
    seq: u64,
    last_published: Option<GroupState>,
}

impl Sequencer {
    pub fn new(params: SequencerParams, now: Instant) -> Self {
        let epoch = params.known_epoch;
        Sequencer {
            p: params,
            started_at: now,
            phase: Phase::Idle,
            epoch,
            held_epoch: 0,
            plan: Vec::new(),
            idx: 0,
            step_started: now,
            started_steps: Vec::new(),
            stop_reason: None,
            volumes: None,
            uplink: None,
            peer_alive: false,
            peer_heard: false,
            peer: None,
            guard_pending: false,
            guard_confirmed: false,
            guard_next: None,
            claim: None,
            ack: None,
            handoff: Handoff::None,
            request_deadline: None,
            release_used: None,
            backoff_until: None,
            garp_due: None,
            garp_inflight: false,
            last_failure: None,
            split_warning: None,
            waiting: None,
            seq: 0,
            last_published: None,
        }
    }

    pub fn params(&self) -> &SequencerParams {
        &self.p
    }

    /// `haadm adjust` of the cluster section: the fields that may change while the group runs
    /// (auto-failback, the guard kind, initdead). The rest of `p` (names, group, epochs) must equal
    /// the running parameters; a guard already running finishes under the old kind.
    pub fn adjust(&mut self, p: &SequencerParams) {
        self.p.auto_failback = p.auto_failback;
        self.p.guard = p.guard;
        self.p.initdead = p.initdead;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::PeerAlive { generation } => {
                if !self.peer_alive {
                    self.log(&mut out, Level::Info, format!("peer is alive (generation {generation})"));
                }
                self.peer_alive = true;
                self.peer_heard = true;
            }
            Input::PeerDead => {
                if self.peer_alive {
                    self.log(&mut out, Level::Warn, "peer declared dead".to_string());
                }
                self.peer_alive = false;
            }
            Input::PeerRestarted { generation } => {
                self.log(&mut out, Level::Info, format!("peer restarted (generation {generation})"));
                // Its old state describes a daemon that no longer exists.
                self.peer = None;
                self.peer_alive = true;
                self.peer_heard = true;
            }
            Input::PeerState(bytes) => self.on_peer_state(&bytes, &mut out),
            Input::Volumes(v) => self.volumes = Some(v),
            Input::Uplink(up) => self.uplink = Some(up),
            Input::GuardResult { ok, detail } => {
                self.guard_pending = false;
                if ok {
                    self.log(&mut out, Level::Info, format!("guard confirmed the peer does not serve: {detail}"));
                    self.guard_confirmed = true;
                } else {
                    self.log(&mut out, Level::Warn, format!("guard did not confirm: {detail}"));
                    self.guard_next = Some(now + self.p.guard_retry);
                }
            }
            Input::StepDone(step) => self.on_step_done(now, step, &mut out),
            Input::StepFailed(step, err) => self.on_step_failed(now, step, err, &mut out),
            Input::Standby => {
                let result = self.standby(now, &mut out);
                out.push(Action::Reply { cmd: AdminCmd::Standby, result });
            }
            Input::Takeover => {
                let result = self.takeover(now, &mut out);
                out.push(Action::Reply { cmd: AdminCmd::Takeover, result });
            }
        }
        self.evaluate(now, &mut out);
        self.publish(now, &mut out);
        out
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let elapsed = now.saturating_duration_since(self.step_started);
        match self.phase {
            Phase::Starting if elapsed >= self.p.start_timeout => {
                if let Some(step) = self.plan.get(self.idx).copied() {
                    self.on_step_failed(now, step, format!("timed out after {:?}", self.p.start_timeout), &mut out);
                }
            }
            Phase::Stopping if elapsed >= self.p.stop_timeout => {
                if let Some(step) = self.plan.get(self.idx).copied() {
                    self.escalate(format!("stop step {step:?} timed out after {:?}", self.p.stop_timeout), &mut out);
                }
            }
            _ => {}
        }
        self.evaluate(now, &mut out);
        self.publish(now, &mut out);
        out
    }

    pub fn status(&self) -> SequencerStatus {
        let holder = if self.phase.active() {
            Some((self.p.me.clone(), self.held_epoch))
        } else {
            self.peer.as_ref().filter(|ps| ps.phase.active()).map(|ps| (ps.node.clone(), ps.epoch))
        };
        SequencerStatus {
            phase: self.phase,
            holder,
            epoch: if self.phase.active() { self.held_epoch } else { self.epoch },
            peer_alive: self.peer_alive,
            last_failure: self.last_failure.clone(),
            split_brain_warning: self.split_warning.clone(),
            waiting: self.waiting.clone(),
            handoff: self.handoff.clone(),
        }
    }

    // ----- inputs -----

    fn on_peer_state(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let st = match super::state::decode_state(bytes) {
            Ok(st) => st,
            Err(e) => {
                self.log(out, Level::Warn, format!("ignoring undecodable peer group state: {e}"));
                return;
            }
        };
        if self.p.peer.as_deref() != Some(st.node.as_str()) {
            self.log(out, Level::Warn, format!("ignoring group state from unexpected node {:?}", st.node));
            return;
        }
        if let Some(old) = &self.peer
            && (st.generation, st.seq) <= (old.generation, old.seq)
        {
            return; // duplicate or reordered older packet
        }
        self.epoch = self.epoch.max(st.epoch).max(st.claim.unwrap_or(0));
        self.peer = Some(st);
    }

    fn on_step_done(&mut self, now: Instant, step: Step, out: &mut Vec<Action>) {
        let current = self.plan.get(self.idx).copied();
        match self.phase {
            Phase::Starting if current == Some(step) => {
                self.started_steps.push(step);
                self.idx += 1;
                if self.idx >= self.plan.len() {
                    self.phase = Phase::Holding;
                    self.garp_due = Some(now + self.p.garp_repeat_after);
                    self.log(out, Level::Info, format!("group started; holding at epoch {}", self.held_epoch));
                } else {
                    self.run_current(now, out);
                }
            }
            Phase::Stopping if current == Some(step) => {
                self.idx += 1;
                if self.idx >= self.plan.len() {
                    self.finish_stop(now, out);
                } else {
                    self.run_current(now, out);
                }
            }
            Phase::Holding if step == Step::SendGarp && self.garp_inflight => self.garp_inflight = false,
            _ => self.log(out, Level::Debug, format!("ignoring completion of {step:?} in phase {}", self.phase.name())),
        }
    }

    fn on_step_failed(&mut self, now: Instant, step: Step, err: String, out: &mut Vec<Action>) {
        let current = self.plan.get(self.idx).copied();
        match self.phase {
            Phase::Starting if current == Some(step) => {
                // The failed step may have done part of its work: undo it too.
                self.started_steps.push(step);
                let why = format!("start step {step:?} failed: {err}");
                self.log(out, Level::Error, format!("{why}; releasing the group (stopping in reverse order)"));
                self.last_failure = Some(why);
                self.backoff_until = Some(now + self.p.failure_backoff);
                self.begin_stop(now, StopReason::StartFailed, out);
            }
            Phase::Stopping if current == Some(step) => {
                self.escalate(format!("stop step {step:?} failed: {err}"), out);
            }
            Phase::Holding if step == Step::SendGarp && self.garp_inflight => {
                self.garp_inflight = false;
                self.log(out, Level::Warn, format!("repeated gratuitous ARP failed: {err}"));
            }
            _ => self.log(out, Level::Debug, format!("ignoring failure of {step:?} in phase {}", self.phase.name())),
        }
    }

    // ----- decisions -----

    /// Local reasons this node may not take the group at all.
    fn eligibility(&self, now: Instant) -> Result<(), String> {
        let v = self.volumes.ok_or("local volume state not known yet")?;
        if !matches!(v.disk, DiskView::UpToDate | DiskView::Consistent) {
            return Err(format!("local disk is {}", v.disk.name()));
        }
        if let Some(until) = self.backoff_until
            && now < until
        {
            return Err("backing off after a failed start".to_string());
        }
        if self.p.guard.uses_ping() && self.uplink == Some(false) {
            return Err("no ping node answers from here".to_string());
        }
        Ok(())
    }

    /// Disk good enough to start while the peer is heard: UpToDate, or Consistent against a peer that
    /// cannot serve.
    fn disk_ok_vs_peer(&self, peer_disk: Option<DiskView>) -> bool {
        match self.volumes.map(|v| v.disk) {
            Some(DiskView::UpToDate) => true,
            Some(DiskView::Consistent) => peer_disk.is_some_and(DiskView::cannot_serve),
            _ => false,
        }
    }

    /// The peer goes first when both could take the group: the preferred node, else the smaller name.
    fn peer_has_priority(&self) -> bool {
        let Some(peer) = self.p.peer.as_deref() else { return false };
        match self.p.preferred.as_deref() {
            Some(pref) if pref == peer => true,
            Some(pref) if pref == self.p.me => false,
            _ => peer < self.p.me.as_str(),
        }
    }

    fn evaluate(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.waiting = None;
        match self.phase {
            Phase::Holding => self.evaluate_holding(now, out),
            Phase::Idle | Phase::Claiming => {
                self.evaluate_idle(now, out);
                self.guard_confirmed = false;
            }
            Phase::Starting | Phase::Stopping | Phase::Failed => {}
        }
    }

    fn evaluate_holding(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(due) = self.garp_due
            && now >= due
            && !self.garp_inflight
        {
            self.garp_due = None;
            self.garp_inflight = true;
            out.push(Action::Run(Step::SendGarp));
        }
        if !self.peer_alive {
            return;
        }
        let Some(ps) = self.peer.clone() else { return };
        let peer_name = ps.node.clone();
        if ps.phase == Phase::Holding {
            let mine = (self.held_epoch, self.p.me.as_str());
            let theirs = (ps.epoch, peer_name.as_str());
            if mine < theirs {
                let msg = format!(
                    "SPLIT BRAIN: both nodes hold the group ({} at epoch {}, {} at epoch {}); the lower \
                     (epoch, node) releases: releasing here. Writes made here since the split may be lost.",
                    self.p.me, self.held_epoch, peer_name, ps.epoch
                );
                self.log(out, Level::Error, msg.clone());
                self.split_warning = Some(msg);
                self.begin_stop(now, StopReason::SplitResolve, out);
            } else if self.split_warning.is_none() {
                let msg = format!(
                    "SPLIT BRAIN: both nodes hold the group ({} at epoch {}, {} at epoch {}); {} must release",
                    self.p.me, self.held_epoch, peer_name, ps.epoch, peer_name
                );
                self.log(out, Level::Error, msg.clone());
                self.split_warning = Some(msg);
            }
            return;
        }
        if !ps.phase.active() && self.split_warning.is_some() {
            self.log(out, Level::Info, "peer heard and not holding: split-brain warning cleared".to_string());
            self.split_warning = None;
        }
        if self.handoff != Handoff::None {
            return;
        }
        let peer_idle_ready = ps.phase == Phase::Idle && ps.claim.is_none() && ps.can_take;
        let epoch = self.held_epoch;
        if ps.handoff == (Handoff::PleaseRelease { epoch }) && peer_idle_ready {
            self.log(out, Level::Info, format!("{peer_name} asked for the group: releasing it to {peer_name}"));
            self.handoff = Handoff::Releasing { to: peer_name.clone(), epoch };
            self.begin_stop(now, StopReason::Handoff { to: peer_name, epoch }, out);
            return;
        }
        let connected = self.volumes.is_some_and(|v| v.connected);
        if self.p.guard.uses_ping()
            && self.uplink == Some(false)
            && ps.uplink == Some(true)
            && peer_idle_ready
            && ps.disk == DiskView::UpToDate
            && connected
        {
            self.log(out, Level::Warn, format!("no ping node answers here but {peer_name} reaches them: handing over"));
            self.handoff = Handoff::Releasing { to: peer_name.clone(), epoch };
            self.begin_stop(now, StopReason::Handoff { to: peer_name, epoch }, out);
        }
    }

    fn evaluate_idle(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(peer_name) = self.p.peer.clone() else {
            // One node: nobody else can hold newer data or the group.
            match self.eligibility(now) {
                Ok(()) => self.start(now, self.epoch + 1, "single-node cluster", out),
                Err(e) => self.waiting = Some(e),
            }
            return;
        };
        if let Handoff::ReleasedTo { epoch, .. } = self.handoff {
            let peer = self.peer.as_ref().filter(|_| self.peer_alive);
            match peer {
                Some(ps) if ps.phase.active() && ps.epoch > epoch => {
                    self.log(out, Level::Info, format!("handoff complete: {peer_name} holds at epoch {}", ps.epoch));
                    self.handoff = Handoff::None;
                }
                Some(ps) if ps.phase == Phase::Idle && (!ps.can_take || ps.claim.is_some()) => {
                    let why = if ps.can_take { "claims it through the normal protocol" } else { "cannot take it" };
                    self.log(out, Level::Warn, format!("{peer_name} {why} instead of using the release; normal rules apply"));
                    self.handoff = Handoff::None;
                }
                None => {
                    self.log(out, Level::Warn, format!("{peer_name} died during the handoff; normal failover rules apply"));
                    self.handoff = Handoff::None;
                }
                Some(_) if self.request_deadline.is_some_and(|d| now >= d) => {
                    self.log(out, Level::Warn, format!("{peer_name} did not start the released group in time"));
                    self.handoff = Handoff::None;
                }
                Some(_) => {
                    self.waiting = Some(format!("released the group to {peer_name}; waiting for it to start"));
                    return;
                }
            }
        }
        if let Handoff::PleaseRelease { .. } = self.handoff {
            let expired = self.request_deadline.is_none_or(|d| now >= d);
            if expired || !self.peer_alive {
                self.log(out, Level::Warn, format!("request to {peer_name} to release the group expired or lost"));
                self.handoff = Handoff::None;
                self.request_deadline = None;
            }
        }
        if self.peer_alive {
            self.idle_with_peer(now, &peer_name, out);
        } else {
            self.claim = None;
            self.ack = None;
            self.phase = Phase::Idle;
            self.idle_alone(now, out);
        }
    }

    fn idle_with_peer(&mut self, now: Instant, peer_name: &str, out: &mut Vec<Action>) {
        let Some(ps) = self.peer.clone() else {
            self.waiting = Some(format!("waiting for {peer_name}'s group state"));
            return;
        };
        let elig = self.eligibility(now);
        if let Handoff::ReleasedTo { to, epoch } = &ps.handoff
            && *to == self.p.me
            && !ps.phase.active()
            && ps.claim.is_none()
            && self.release_used != Some(*epoch)
        {
            // The release only hands over what the replication link carried: with the link down this node
            // cannot know that it has the releaser's last writes, so it waits for the link (a resync
            // makes it Inconsistent until it has them).
            let connected = self.volumes.is_some_and(|v| v.connected);
            if elig.is_ok() && connected && self.disk_ok_vs_peer(Some(ps.disk)) {
                self.release_used = Some(*epoch);
                let e = self.epoch.max(*epoch) + 1;
                self.start(now, e, &format!("{peer_name} released the group to this node"), out);
            } else if elig.is_ok() && !connected {
                self.waiting = Some(format!("{peer_name} released the group here; waiting for the replication link to confirm this disk has its last writes"));
            } else {
                self.waiting = Some(format!("{peer_name} released the group here but this node cannot take it"));
            }
            return;
        }
        if ps.phase.active() {
            self.claim = None;
            self.ack = None;
            self.phase = Phase::Idle;
            if ps.phase == Phase::Holding
                && self.p.auto_failback
                && self.p.preferred.as_deref() == Some(self.p.me.as_str())
                && self.handoff == Handoff::None
                && ps.handoff == Handoff::None
                && elig.is_ok()
                && self.volumes.is_some_and(|v| v.connected && v.disk == DiskView::UpToDate)
            {
                self.log(out, Level::Info, format!("auto_failback: asking {peer_name} to return the group"));
                self.handoff = Handoff::PleaseRelease { epoch: ps.epoch };
                self.request_deadline = Some(now + self.p.stop_timeout * 8);
            }
            return;
        }
        if ps.phase == Phase::Failed {
            self.claim = None;
            self.phase = Phase::Idle;
            self.waiting = Some(format!("{peer_name} failed to stop and is escalating; waiting for it to go down"));
            return;
        }
        // The peer is idle or claiming: whoever has priority goes first, with the other's acknowledgement.
        if let Some(peer_claim) = ps.claim {
            if self.claim.is_none() || self.peer_has_priority() {
                if self.claim.is_some() {
                    self.log(out, Level::Info, format!("withdrawing claim: {peer_name} claims with priority"));
                }
                self.claim = None;
                self.phase = Phase::Idle;
                self.ack = Some(peer_claim);
                self.waiting = Some(format!("acknowledged {peer_name}'s claim"));
                return;
            }
        } else {
            self.ack = None;
        }
        if let Err(e) = elig {
            self.withdraw_claim(out, &e);
            self.waiting = Some(e);
            return;
        }
        if !self.disk_ok_vs_peer(Some(ps.disk)) {
            let e = "local disk is not UpToDate; waiting for the replication link".to_string();
            self.withdraw_claim(out, &e);
            self.waiting = Some(e);
            return;
        }
        // Both disks may say UpToDate while the replication link is down although one of them missed the
        // other's writes (the replicator compares generations only on connect): no claim until it is up.
        if !self.volumes.is_some_and(|v| v.connected) {
            let e = "replication link not connected: cannot tell which node has the newer data".to_string();
            self.withdraw_claim(out, &e);
            self.waiting = Some(e);
            return;
        }
        if self.claim.is_none() && ps.can_take && self.peer_has_priority() {
            self.waiting = Some(format!("{peer_name} has priority to take the group"));
            return;
        }
        let claim = match self.claim {
            Some(c) => c,
            None => {
                let c = self.epoch.max(ps.epoch) + 1;
                self.log(out, Level::Info, format!("claiming the group at epoch {c}"));
                self.claim = Some(c);
                self.phase = Phase::Claiming;
                c
            }
        };
        if ps.ack == Some(claim) && ps.claim.is_none() {
            self.start(now, claim, &format!("{peer_name} acknowledged the claim"), out);
        } else {
            self.waiting = Some(format!("waiting for {peer_name} to acknowledge the claim"));
        }
    }

    fn withdraw_claim(&mut self, out: &mut Vec<Action>, why: &str) {
        if self.claim.take().is_some() {
            self.log(out, Level::Info, format!("withdrawing claim: {why}"));
        }
        self.phase = Phase::Idle;
    }

    fn idle_alone(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Err(e) = self.eligibility(now) {
            self.waiting = Some(e);
            return;
        }
        let Some(v) = self.volumes else { return };
        if !self.peer_heard {
            let initdead_end = self.started_at + self.p.initdead;
            if now < initdead_end {
                self.waiting = Some("started alone: waiting initdead for the peer".to_string());
                return;
            }
            if !v.connected && now < initdead_end + self.p.degr_wfc_timeout {
                self.waiting = Some("started alone: waiting degr-wfc-timeout for the replication link".to_string());
                return;
            }
        }
        if v.connected && v.peer_primary {
            self.waiting = Some("peer is Primary on the replication link: it is alive and holds the volumes".into());
            return;
        }
        let me = self.p.me.clone();
        if let Some(ps) = &self.peer
            && let Handoff::ReleasedTo { to, epoch } = &ps.handoff
            && *to == me
            && !ps.phase.active()
            && self.release_used != Some(*epoch)
            && v.disk == DiskView::UpToDate
        {
            self.release_used = Some(*epoch);
            let e = self.epoch.max(*epoch) + 1;
            self.start(now, e, "peer released the group here before going silent", out);
            return;
        }
        let next = self.epoch + 1;
        if let Some(pd) = v.peer_disk.filter(|d| d.cannot_serve()) {
            self.start(now, next, &format!("peer silent and its disk is {}", pd.name()), out);
            return;
        }
        match self.p.guard {
            GuardKind::None => {
                if !self.p.allow_unguarded_split {
                    self.waiting = Some(
                        "peer silent and no guard configured: not taking over (configure a fence or ping \
                         guard, or allow_unguarded_split)"
                            .to_string(),
                    );
                    return;
                }
                if v.disk != DiskView::UpToDate {
                    self.waiting = Some("local disk is Consistent and nothing proves the peer is not newer".into());
                    return;
                }
                let msg = "took over WITHOUT A GUARD while the peer is silent: if it is alive, both nodes \
                           hold the group (split brain)"
                    .to_string();
                self.log(out, Level::Warn, msg.clone());
                self.split_warning = Some(msg);
                self.start(now, next, "peer silent, unguarded takeover allowed", out);
            }
            guard => {
                // A guard proves the peer does not serve, not that its data is older; and the replicator
                // promotes only an UpToDate disk (without --force). A Consistent disk would fail the
                // promote step after the guard fenced the peer, again every time the peer boots.
                if v.disk != DiskView::UpToDate {
                    self.waiting = Some("peer silent and the local disk is Consistent, not UpToDate: not running the guard".into());
                    return;
                }
                if guard == GuardKind::PingNodes {
                    let isolated = self
                        .peer
                        .as_ref()
                        .is_some_and(|ps| ps.uplink == Some(false) && !ps.phase.active() && ps.claim.is_none());
                    if !isolated {
                        self.waiting = Some("peer silent; the ping guard cannot prove it is isolated".into());
                        return;
                    }
                }
                if self.guard_confirmed {
                    self.start(now, next, "peer silent and the guard confirmed it does not serve", out);
                } else if !self.guard_pending && self.guard_next.is_none_or(|t| now >= t) {
                    self.guard_pending = true;
                    out.push(Action::RunGuard);
                    self.waiting = Some("peer silent: running the guard".into());
                } else {
                    self.waiting = Some("peer silent: waiting for the guard".into());
                }
            }
        }
    }

    // ----- transitions -----

    fn start(&mut self, now: Instant, epoch: u64, why: &str, out: &mut Vec<Action>) {
        self.epoch = self.epoch.max(epoch);
        self.held_epoch = epoch;
        self.phase = Phase::Starting;
        self.plan = start_plan(self.p.portblock);
        self.idx = 0;
        self.started_steps.clear();
        self.claim = None;
        self.ack = None;
        self.handoff = Handoff::None;
        self.request_deadline = None;
        self.waiting = None;
        self.log(out, Level::Info, format!("acquiring the group at epoch {epoch}: {why}"));
        self.run_current(now, out);
    }

    fn begin_stop(&mut self, now: Instant, reason: StopReason, out: &mut Vec<Action>) {
        self.phase = Phase::Stopping;
        self.plan = stop_plan(self.p.portblock, &self.started_steps);
        self.idx = 0;
        self.stop_reason = Some(reason);
        self.garp_due = None;
        self.garp_inflight = false;
        if self.plan.is_empty() {
            self.finish_stop(now, out);
        } else {
            self.run_current(now, out);
        }
    }

    fn finish_stop(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.phase = Phase::Idle;
        self.started_steps.clear();
        self.plan.clear();
        self.idx = 0;
        match self.stop_reason.take() {
            Some(StopReason::Handoff { to, epoch }) if self.volumes.is_some_and(|v| v.connected) => {
                self.log(out, Level::Info, format!("group stopped; released to {to} (epoch {epoch})"));
                self.handoff = Handoff::ReleasedTo { to, epoch };
                self.request_deadline = Some(now + self.p.start_timeout * 8);
            }
            Some(StopReason::Handoff { to, .. }) => {
                // Writes made after the link dropped exist only here: handing over would promote stale data.
                // The hand-over is over (not done): a `Releasing` left published would block auto-failback,
                // standby and takeover of this group for good (found by the multi-group simulation, seed 47).
                self.handoff = Handoff::None;
                self.log(out, Level::Warn, format!("group stopped, but the replication link is down: not handing it to {to} (it may lack the last writes); the group is claimed again once replication is back"));
            }
            Some(StopReason::StartFailed) => {
                self.log(out, Level::Warn, "group released after a failed start".to_string());
            }
            Some(StopReason::SplitResolve) => {
                self.log(out, Level::Error, "group released to resolve the split brain".to_string());
            }
            None => {}
        }
    }

    fn run_current(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(step) = self.plan.get(self.idx).copied() {
            self.step_started = now;
            out.push(Action::Run(step));
        }
    }

    fn escalate(&mut self, why: String, out: &mut Vec<Action>) {
        self.phase = Phase::Failed;
        self.log(out, Level::Error, format!("{why}: escalating (self-fence); this node must not hold the group"));
        self.last_failure = Some(why.clone());
        out.push(Action::Escalate(why));
    }

    fn log(&self, out: &mut Vec<Action>, level: Level, msg: String) {
        out.push(Action::Log(level, msg));
    }

    /// Our state as published, with `seq` left at 0 (set by `publish`).
    fn current_state(&self, now: Instant) -> GroupState {
        let peer_disk = self.peer.as_ref().map(|ps| ps.disk);
        let can_take = self.phase != Phase::Failed && self.eligibility(now).is_ok() && self.disk_ok_vs_peer(peer_disk);
        GroupState {
            node: self.p.me.clone(),
            generation: self.p.generation,
            seq: 0,
            phase: self.phase,
            epoch: if self.phase.active() { self.held_epoch } else { self.epoch },
            disk: self.volumes.map_or(DiskView::Diskless, |v| v.disk),
            can_take,
            hears_peer: self.peer_alive,
            uplink: self.uplink,
            claim: self.claim,
            ack: self.ack,
            handoff: self.handoff.clone(),
        }
    }

    /// Emits `Publish` when anything the peer relies on changed.
    fn publish(&mut self, now: Instant, out: &mut Vec<Action>) {
        let st = self.current_state(now);
        if self.last_published.as_ref() == Some(&st) {
            return;
        }
        self.seq += 1;
        out.push(Action::Publish(encode_state(&GroupState { seq: self.seq, ..st.clone() })));
        self.last_published = Some(st);
    }
}
