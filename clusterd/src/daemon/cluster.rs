//! The HA group on this node: heartbeats in, the failover sequencer deciding, the group steps doing.
//!
//! The sequencer (`crate::failover`) and the membership core (`crate::heartbeat`) hold every decision;
//! this loop only feeds them events (heartbeat membership, the peer's published group state, volume
//! states, step results, admin commands, a timer) and carries out the actions they return. Steps run
//! as their own tasks, so a slow step never stalls heartbeats or the control API.

use super::io_fencing::IoFencing;
use super::group_steps::GroupSteps;
use super::resources::Resources;
use super::targets::TargetHost;
use crate::config::{ClusterConfig, GroupConfig, HaConfig, LinkMode as CfgLinkMode, NodeConfig};
use crate::failover::{
    Action, AdminCmd, GuardKind, Input, Level, LocalVolumes, Sequencer, SequencerParams, SequencerStatus, Step,
    start_plan, stop_plan, volumes_view,
};
use crate::heartbeat::{
    AuthKeys, Generation, HeartbeatHandle, HeartbeatRuntimeConfig, HeartbeatService, LinkMode, LinkRuntime,
    MembershipEvent, MembershipParams, MembershipStatus,
};
use crate::fencing::Fencer;
use crate::monitor::counters::{ClusterCounters, FenceResult, GuardResult};
use crate::netops;
use std::sync::atomic::{AtomicU64, Ordering};
use anyhow::{Context, Result, anyhow};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Sequencer tick and volume/peer-state poll period.
const TICK: Duration = Duration::from_millis(50);
/// How often ping nodes are probed for our own uplink state.
const UPLINK_EVERY: Duration = Duration::from_secs(1);

type AdminRequest = (AdminCmd, oneshot::Sender<Result<(), String>>);

/// What `haadm status` shows about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub generation: u64,
    pub sequencer: Option<SequencerStatus>,
    pub membership: Option<MembershipStatus>,
}

/// Handle held by the daemon and the control API.
pub struct ClusterHandle {
    admin: mpsc::Sender<AdminRequest>,
    adjust: mpsc::Sender<AdjustRequest>,
    view: watch::Receiver<ClusterView>,
    /// Event counters for `/metrics` (late heartbeats, guard and fence outcomes, failovers).
    pub counters: Arc<ClusterCounters>,
    /// Bumped by every pass of the group loop: the systemd watchdog is fed only while it moves.
    pub loop_passes: Arc<AtomicU64>,
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ClusterHandle {
    /// `standby` / `takeover`: the sequencer answers once the hand-over finished or was refused.
    pub async fn admin(&self, cmd: AdminCmd, limit: Duration) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.admin.send((cmd, tx)).await.map_err(|_| "the cluster loop is not running".to_string())?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the cluster loop stopped before answering".into()),
            Err(_) => Err(format!("no answer within {limit:?} (the hand-over may still complete; see `haadm status`)")),
        }
    }

    /// `haadm adjust` of the `cluster` section: heartbeat timers, links and keys, guard,
    /// escalation command and auto-failback, taken by the running loop. Answers one line per change
    /// made, or why nothing changed (a link that cannot be bound, authkeys that do not load).
    pub async fn adjust(&self, config: Arc<HaConfig>) -> Result<Vec<String>, String> {
        let (tx, rx) = oneshot::channel();
        self.adjust.send((config, tx)).await.map_err(|_| "the cluster loop is not running".to_string())?;
        rx.await.map_err(|_| "the cluster loop stopped before answering".to_string())?
    }

    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Every update of the view (about every 50 ms); consumers drop the ones that change nothing.
    pub fn subscribe(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Stops the loop: a group held here is stopped in reverse order first (the peer takes over).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

fn sequencer_params(cfg: &HaConfig, c: &ClusterConfig, g: &GroupConfig, me: &str, peer: Option<&str>, generation: u64) -> SequencerParams {
    let mut p = SequencerParams::new(me, peer);
    p.auto_failback = c.auto_failback;
    p.preferred = g.preferred.clone();
    p.initdead = c.initdead;
    p.degr_wfc_timeout = g
        .resources
        .iter()
        .filter_map(|r| cfg.resources.get(r))
        .map(|r| r.startup.degr_wfc_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    p.start_timeout = g.start_timeout;
    p.stop_timeout = g.stop_timeout;
    p.guard = match (!c.guard.ping_nodes.is_empty(), c.guard.can_fence()) {
        (false, false) => GuardKind::None,
        (true, false) => GuardKind::PingNodes,
        (false, true) => GuardKind::FenceCommand,
        (true, true) => GuardKind::Both,
    };
    p.allow_unguarded_split = g.allow_unguarded_split;
    p.garp_repeat_after = g.vip.as_ref().map_or(Duration::from_secs(3), |v| v.garp_repeat_after);
    p.portblock = g.portblock;
    p.generation = generation;
    p
}

fn heartbeat_config(cfg: &HaConfig, c: &ClusterConfig, me: &str, peer: &str) -> Result<HeartbeatRuntimeConfig> {
    let mut links = Vec::new();
    for l in &c.links {
        let mine = l.on.get(me).ok_or_else(|| anyhow!("cluster.links.{}.on: no entry for {me}", l.name))?;
        let theirs = l.on.get(peer).ok_or_else(|| anyhow!("cluster.links.{}.on: no entry for {peer}", l.name))?;
        let (mode, bind, send_to) = match l.mode {
            CfgLinkMode::Unicast => (LinkMode::Unicast, SocketAddr::new(mine.address, l.port), SocketAddr::new(theirs.address, l.port)),
            CfgLinkMode::Broadcast => {
                let bcast = mine.broadcast.ok_or_else(|| anyhow!("cluster.links.{}.on.{me}.broadcast: required for bcast", l.name))?;
                let any: std::net::IpAddr = if bcast.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
                (LinkMode::Broadcast, SocketAddr::new(any, l.port), SocketAddr::new(bcast, l.port))
            }
        };
        links.push(LinkRuntime { name: l.name.clone(), mode, bind, send_to, interface: mine.interface.clone() });
    }
    let mut names: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    Ok(HeartbeatRuntimeConfig {
        cluster: names.join("+"),
        me: me.to_string(),
        peer: peer.to_string(),
        params: MembershipParams {
            keepalive: c.keepalive,
            warntime: c.warntime,
            deadtime: c.deadtime,
            initdead: c.initdead,
            links: c.links.iter().map(|l| l.name.clone()).collect(),
        },
        links,
        legacy_packets: crate::versions::release_or_current().previous,
    })
}

/// The group's volumes summarised for the sequencer (see [`volumes_view`]); a resource that is not
/// running counts as Diskless and disconnected.
async fn local_volumes(resources: &Resources, names: &[String]) -> LocalVolumes {
    let mut snapshots = Vec::with_capacity(names.len());
    for n in names {
        snapshots.push(resources.volume(n).await.ok().map(|v| v.snapshot()));
    }
    volumes_view(&snapshots)
}

/// Feeds the peer's published group state to the sequencer when it changed since the last call.
fn feed_peer_state(d: &mut Driver, h: &HeartbeatHandle, last: &mut Option<Vec<u8>>) {
    let ps = h.peer_group_state();
    if ps.is_some() && ps != *last {
        last.clone_from(&ps);
        if let Some(bytes) = ps {
            d.peer_last = crate::failover::decode_state(&bytes).ok();
            d.feed(Input::PeerState(bytes));
        }
    }
}

/// Everything the loop needs to carry out actions.
struct Driver {
    config: Arc<HaConfig>,
    cluster: ClusterConfig,
    steps: Arc<GroupSteps>,
    group_resources: Vec<String>,
    seq: Sequencer,
    publish: watch::Sender<Vec<u8>>,
    step_tx: mpsc::Sender<Input>,
    pending: Vec<AdminRequest>,
    /// I/O fencing of the group's volumes (`fencing resource-and-stonith`), see `io_fencing.rs`.
    io_fence: IoFencing,
    /// The peer's newest group state (decoded), for the fence delay.
    peer_last: Option<crate::failover::GroupState>,
    /// Whether the peer is heard on a heartbeat link (a delayed fence checks it before fencing).
    peer_alive: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<ClusterCounters>,
    acquisition: Acquisition,
}

/// Failover accounting for `/metrics`: an acquisition that moved the group here from the peer is a
/// failover; its duration runs from the peer being declared dead (or, for a hand-over, from leaving
/// `idle`) to `holding`.
#[derive(Debug, Default)]
struct Acquisition {
    previous: Option<crate::failover::Phase>,
    /// The group was last known held by the peer.
    from_peer: bool,
    started: Option<Instant>,
    peer_lost_at: Option<Instant>,
}

impl Acquisition {
    fn observe(&mut self, st: &SequencerStatus, me: &str, counters: &ClusterCounters) {
        use crate::failover::Phase;
        let was = self.previous.replace(st.phase);
        match st.phase {
            Phase::Idle => {
                self.started = None;
                if let Some((holder, _)) = &st.holder {
                    self.from_peer = holder != me;
                }
            }
            Phase::Holding if was != Some(Phase::Holding) => {
                if let (Some(t0), true) = (self.started.take(), self.from_peer) {
                    let t0 = self.peer_lost_at.take().map_or(t0, |lost| lost.min(t0));
                    counters.failover(t0.elapsed());
                }
                self.from_peer = false;
            }
            Phase::Claiming | Phase::Starting if was == Some(Phase::Idle) => self.started = Some(Instant::now()),
            _ => {}
        }
    }

    fn peer_liveness(&mut self, alive: bool) {
        self.peer_lost_at = if alive { None } else { self.peer_lost_at.or(Some(Instant::now())) };
    }
}

impl Driver {
    fn cluster_portblock(&self) -> bool {
        self.config.group.as_ref().is_some_and(|g| g.portblock)
    }

    fn feed(&mut self, input: Input) {
        let actions = self.seq.step(Instant::now(), input);
        self.apply(actions);
        // Seen at every step, not only at the next tick: a peer that takes the group and dies
        // within one tick must still make our acquisition count as a failover.
        let status = self.seq.status();
        self.acquisition.observe(&status, &self.steps.node, &self.counters);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Run(step) => self.run_step(step),
                Action::RunGuard => self.run_guard(),
                Action::Escalate(why) => self.escalate(why),
                Action::Publish(bytes) => {
                    self.publish.send_replace(bytes);
                }
                Action::Reply { cmd, result } => {
                    let mut keep = Vec::new();
                    for (c, tx) in self.pending.drain(..) {
                        if c == cmd {
                            let _ = tx.send(result.clone());
                        } else {
                            keep.push((c, tx));
                        }
                    }
                    self.pending = keep;
                }
                Action::Log(level, msg) => match level {
                    Level::Debug => tracing::debug!(target: "failover", "{msg}"),
                    Level::Info => tracing::info!(target: "failover", "{msg}"),
                    Level::Warn => tracing::warn!(target: "failover", "{msg}"),
                    Level::Error => tracing::error!(target: "failover", "{msg}"),
                },
            }
        }
    }

    fn run_step(&self, step: Step) {
        let steps = Arc::clone(&self.steps);
        let tx = self.step_tx.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = steps.run(step).await;
            tracing::info!(target: "failover", "step {step:?}: {} in {:?}", if r.is_ok() { "done" } else { "FAILED" }, started.elapsed());
            let input = match r {
                Ok(()) => Input::StepDone(step),
                Err(e) => Input::StepFailed(step, e),
            };
            let _ = tx.send(input).await;
        });
    }

    /// Ping nodes (any answering = our uplink works) and/or fencing (the fence command's exit 0, or the
    /// fence agent's status reporting off = peer confirmed down).
    fn run_guard(&self) {
        let guard = self.cluster.guard.clone();
        let tx = self.step_tx.clone();
        let (me, peer) = (self.steps.node.clone(), self.seq.params().peer.clone().unwrap_or_default());
        // A holder that was lost may be suspended with the newest data and fencing us: give it a
        // deadtime's head start so the two do not fence each other at once (see io_fencing.rs).
        let fence_delay = if self.io_fence.delays_fencing_of_holder(self.peer_last.as_ref()) { self.cluster.deadtime } else { Duration::ZERO };
        let peer_alive = Arc::clone(&self.peer_alive);
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            let mut detail = Vec::new();
            let mut ok = true;
            if !guard.ping_nodes.is_empty() {
                let up = uplink(&guard.ping_nodes, guard.ping_timeout).await;
                detail.push(format!("ping nodes {}", if up { "reachable" } else { "unreachable" }));
                ok &= up;
            }
            if ok && let Some(fencer) = Fencer::from_guard(&guard) {
                if !fence_delay.is_zero() {
                    tracing::info!(target: "failover", "waiting {fence_delay:?} before fencing {peer}, which held the group (fencing resource-and-stonith)");
                    tokio::time::sleep(fence_delay).await;
                    if peer_alive.load(std::sync::atomic::Ordering::Acquire) {
                        counters.fence_command(FenceResult::Skipped);
                        counters.guard_run(GuardResult::Refused);
                        let detail = format!("{peer} was heard again during the fence delay: not fenced");
                        let _ = tx.send(Input::GuardResult { ok: false, detail }).await;
                        return;
                    }
                }
                let (fenced, outcome) = fencer.fence(&me, &peer).await;
                counters.fence_command(if fenced { FenceResult::Fenced } else { FenceResult::Failed });
                detail.push(outcome);
                ok &= fenced;
            }
            counters.guard_run(if ok { GuardResult::Confirmed } else { GuardResult::Refused });
            let _ = tx.send(Input::GuardResult { ok, detail: detail.join("; ") }).await;
        });
    }

    fn escalate(&self, why: String) {
        match &self.cluster.escalation_command {
            Some(cmd) => {
                tracing::error!(target: "failover", "stopping the group failed ({why}); running the escalation command `{cmd}`");
                let cmd = cmd.clone();
                tokio::spawn(async move {
                    let st = tokio::process::Command::new("/bin/sh").arg("-c").arg(&cmd).status().await;
                    tracing::error!(target: "failover", "escalation command `{cmd}` finished: {st:?}");
                });
            }
            None => tracing::error!(
                target: "failover",
                "stopping the group failed ({why}) and no cluster.escalation-command is configured: \
                 this node may still hold resources; intervene by hand"
            ),
        }
    }
}

/// The highest group epoch this node used or saw, persisted in the state directory (missing = 0).
fn read_epoch(path: &std::path::Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().with_context(|| format!("{}: not an epoch number (remove it only if you know why)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Temp file, fsync, rename, fsync the directory: a crash leaves the old or the new number.
fn write_epoch(path: &std::path::Path, epoch: u64) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    writeln!(f, "{epoch}").with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync {}", dir.display()))?;
    }
    Ok(())
}

async fn uplink(nodes: &[std::net::IpAddr], timeout: Duration) -> bool {
    for n in nodes {
        if matches!(netops::ping(*n, timeout).await, Ok(true)) {
            return true;
        }
    }
    false
}

type AdjustRequest = (Arc<HaConfig>, oneshot::Sender<Result<Vec<String>, String>>);

/// SHA-256 of the authkeys file as read now (`None` if unreadable: the load reports why).
fn file_hash(path: &std::path::Path) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    std::fs::read(path).ok().map(|b| sha2::Sha256::digest(&b).to_vec())
}

impl Driver {
    /// Carries out [`ClusterHandle::adjust`] inside the loop. Everything that can fail (keys, link
    /// sockets) is done first, so a failure leaves the running configuration as it was.
    async fn adjust(&mut self, config: Arc<HaConfig>, hb: Option<&mut HeartbeatHandle>, keys_hash: &mut Option<Vec<u8>>) -> Result<Vec<String>, String> {
        let me = self.steps.node.clone();
        let (Some(cluster), Some(group)) = (config.cluster.clone(), config.group.clone()) else {
            return Err("the new configuration has no cluster or group section; needs a restart of clusterd".into());
        };
        let peer = self.seq.params().peer.clone();
        let mut lines = Vec::new();
        if let (Some(h), Some(p)) = (hb, peer.as_deref()) {
            let hash = file_hash(&cluster.authkeys_file);
            let keys = if hash != *keys_hash || cluster.authkeys_file != self.cluster.authkeys_file {
                Some(AuthKeys::load(&cluster.authkeys_file).map_err(|e| format!("cluster.authkeys-file: {e}; nothing changed"))?)
            } else {
                None
            };
            let hb_cfg = heartbeat_config(&config, &cluster, &me, p).map_err(|e| format!("{e:#}; nothing changed"))?;
            lines = h.reconfigure(hb_cfg, keys).await.map_err(|e| format!("{e}; nothing changed"))?;
            *keys_hash = hash;
        }
        let p = sequencer_params(&config, &cluster, &group, &me, peer.as_deref(), self.seq.params().generation);
        self.seq.adjust(&p);
        if self.cluster.guard != cluster.guard {
            lines.push("guard: taken for the next takeover".into());
        }
        self.cluster = cluster;
        self.config = config;
        Ok(lines)
    }
}

/// Starts heartbeats and the sequencer for this node's group. `None` when the config has no group.
/// `config_digest`: this node's configuration digest (changed by `haadm adjust`), sent in every
/// heartbeat so both nodes can tell that they run different configurations.
pub async fn start(
    config: Arc<HaConfig>,
    me: &NodeConfig,
    resources: Arc<Resources>,
    targets: Arc<TargetHost>,
    mut config_digest: watch::Receiver<String>,
) -> Result<Option<ClusterHandle>> {
    let (Some(cluster), Some(group)) = (config.cluster.clone(), config.group.clone()) else { return Ok(None) };
    let peer = config.peer_of(&me.name).map(|p| p.name.clone());
    let generation = Generation::bump(&me.state_dir).with_context(|| format!("heartbeat generation in {}", me.state_dir.display()))?;
    let mut params = sequencer_params(&config, &cluster, &group, &me.name, peer.as_deref(), generation);
    let epoch_file = me.state_dir.join("group-epoch");
    params.known_epoch = read_epoch(&epoch_file)?;
    // Leftover blocks from a crashed run would make the port unreachable forever.
    if group.portblock
        && let Err(e) = tokio::task::spawn_blocking(netops::clear_all_blocks).await.map_err(|e| anyhow!(e))?
    {
        tracing::warn!("clearing stale iSCSI port blocks: {e}");
    }
    // A VIP left behind by a crashed run would answer ARP next to the node that holds the group now.
    if let Some(vip) = &group.vip
        && let Some(ifname) = vip.interfaces.get(&me.name)
        && matches!(netops::vip_present(ifname, vip.address).await, Ok(true))
    {
        tracing::warn!("removing the VIP {} left on {ifname} by an earlier run", vip.address);
        if let Err(e) = netops::vip_remove(ifname, vip.address, vip.prefix_len).await {
            tracing::error!("cannot remove the stale VIP {}: {e}", vip.address);
        }
    }
    let (publish, publish_rx) = watch::channel(Vec::new());
    let hb: Option<(HeartbeatHandle, mpsc::Receiver<MembershipEvent>)> = match &peer {
        Some(p) => {
            let keys = AuthKeys::load(&cluster.authkeys_file).map_err(|e| anyhow!("{e}"))?;
            let hb_cfg = heartbeat_config(&config, &cluster, &me.name, p)?;
            Some(HeartbeatService::start(hb_cfg, keys, generation, publish_rx).await.map_err(|e| anyhow!("{e}"))?)
        }
        None => None,
    };
    if let Some((h, _)) = &hb {
        let set = h.config_digest_setter();
        set(config_digest.borrow_and_update().clone());
        // Ends with the daemon (the sender side is dropped) or never needed again.
        tokio::spawn(async move {
            while config_digest.changed().await.is_ok() {
                set(config_digest.borrow_and_update().clone());
            }
        });
    }
    let (step_tx, mut step_rx) = mpsc::channel::<Input>(64);
    let (admin, mut admin_rx) = mpsc::channel::<AdminRequest>(8);
    let (adjust, mut adjust_rx) = mpsc::channel::<AdjustRequest>(2);
    let mut keys_hash = file_hash(&cluster.authkeys_file);
    let (view_tx, view) = watch::channel(ClusterView { generation, sequencer: None, membership: None });
    let cancel = CancellationToken::new();
    let steps = Arc::new(GroupSteps { config: Arc::clone(&config), node: me.name.clone(), resources: Arc::clone(&resources), targets, garp_burst: Default::default() });
    let mut d = Driver {
        config: Arc::clone(&config),
        cluster: cluster.clone(),
        steps,
        group_resources: group.resources.clone(),
        seq: Sequencer::new(params, Instant::now()),
        publish,
        step_tx,
        pending: Vec::new(),
        peer_alive: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        io_fence: IoFencing::new(&config, &group.resources, &me.name, peer.as_deref().unwrap_or_default()),
        peer_last: None,
        counters: Arc::new(ClusterCounters::default()),
        acquisition: Acquisition::default(),
    };
    let counters = Arc::clone(&d.counters);
    let loop_passes = Arc::new(AtomicU64::new(0));
    let passes = Arc::clone(&loop_passes);
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let (mut hb_handle, mut hb_events) = match hb {
            Some((h, e)) => (Some(h), Some(e)),
            None => (None, None),
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_volumes: Option<LocalVolumes> = None;
        let mut last_peer_state: Option<Vec<u8>> = None;
        let mut last_uplink = Instant::now() - UPLINK_EVERY;
        let mut persisted_epoch = d.seq.params().known_epoch;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = async { match hb_events.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    let Some(ev) = ev else { break };
                    let input = match ev {
                        MembershipEvent::PeerAlive { generation } => Some(Input::PeerAlive { generation }),
                        MembershipEvent::PeerDead | MembershipEvent::InitDeadExpired => Some(Input::PeerDead),
                        MembershipEvent::PeerRestarted { new, .. } => Some(Input::PeerRestarted { generation: new }),
                        MembershipEvent::LinkUp(l) => { tracing::info!("heartbeat link {l} up"); None }
                        MembershipEvent::LinkDown(l) => { tracing::warn!("heartbeat link {l} down"); None }
                        MembershipEvent::LateHeartbeat { link, gap } => {
                            d.counters.late_heartbeat(&link);
                            tracing::warn!("late heartbeat on link {link}: {gap:?} since the previous one");
                            None
                        }
                    };
                    if let Some(i) = &input {
                        let alive = match i { Input::PeerAlive { .. } | Input::PeerRestarted { .. } => Some(true), Input::PeerDead => Some(false), _ => None };
                        if let Some(a) = alive {
                            d.peer_alive.store(a, std::sync::atomic::Ordering::Release);
                            d.acquisition.peer_liveness(a);
                        }
                    }
                    if let Some(i) = input { d.feed(i); }
                }
                _ = async { match hb_handle.as_ref() { Some(h) => h.peer_state_changed().await, None => std::future::pending().await } } => {
                    if let Some(h) = &hb_handle {
                        feed_peer_state(&mut d, h, &mut last_peer_state);
                    }
                }
                Some(input) = step_rx.recv() => d.feed(input),
                Some((config, reply)) = adjust_rx.recv() => {
                    let r = d.adjust(config, hb_handle.as_mut(), &mut keys_hash).await;
                    let _ = reply.send(r);
                }
                Some((cmd, reply)) = admin_rx.recv() => {
                    d.pending.push((cmd, reply));
                    d.feed(match cmd { AdminCmd::Standby => Input::Standby, AdminCmd::Takeover => Input::Takeover });
                }
                _ = tick.tick() => {
                    let vols = local_volumes(&resources, &d.group_resources).await;
                    if last_volumes != Some(vols) {
                        last_volumes = Some(vols);
                        d.feed(Input::Volumes(vols));
                    }
                    if let Some(h) = &hb_handle {
                        feed_peer_state(&mut d, h, &mut last_peer_state);
                    }
                    if !d.cluster.guard.ping_nodes.is_empty() && last_uplink.elapsed() >= UPLINK_EVERY {
                        last_uplink = Instant::now();
                        let (nodes, t, tx) = (d.cluster.guard.ping_nodes.clone(), d.cluster.guard.ping_timeout, d.step_tx.clone());
                        tokio::spawn(async move { let _ = tx.send(Input::Uplink(uplink(&nodes, t).await)).await; });
                    }
                    let phase = d.seq.phase();
                    let peer_alive = d.peer_alive.load(std::sync::atomic::Ordering::Acquire);
                    d.io_fence.tick(&resources, peer_alive, phase, d.peer_last.as_ref()).await;
                    let actions = d.seq.tick(Instant::now());
                    d.apply(actions);
                    let epoch = d.seq.status().epoch;
                    if epoch > persisted_epoch {
                        // Epochs only grow, across restarts too: a restarted node must never claim an epoch
                        // it (or its peer) already used.
                        match write_epoch(&epoch_file, epoch) {
                            Ok(()) => persisted_epoch = epoch,
                            Err(e) => tracing::error!("cannot persist the group epoch {epoch}: {e:#}"),
                        }
                    }
                    let status = d.seq.status();
                    d.acquisition.observe(&status, &d.steps.node, &d.counters);
                    passes.fetch_add(1, Ordering::Relaxed);
                    view_tx.send_replace(ClusterView {
                        generation,
                        sequencer: Some(status),
                        membership: hb_handle.as_ref().map(|h| h.status()),
                    });
                }
            }
        }
        // Shutdown: release the group here in stop order, then stop heartbeats so the peer takes over.
        if d.seq.phase().active() {
            tracing::info!("shutting down while holding the group: stopping it in reverse order");
            let portblock = d.cluster_portblock();
            for step in stop_plan(portblock, &start_plan(portblock)) {
                if let Err(e) = d.steps.run(step).await {
                    tracing::error!("{step:?} at shutdown: {e}");
                }
            }
        }
        if let Some(h) = hb_handle {
            h.stop().await;
        }
    });
    Ok(Some(ClusterHandle { admin, adjust, view, counters, loop_passes, cancel, task: std::sync::Mutex::new(Some(task)) }))
}
