//! The HA groups on this node: heartbeats in, one failover sequencer per group deciding, the group
//! steps doing.
//!
//! The sequencers (`crate::failover`) and the membership core (`crate::heartbeat`) hold every decision;
//! this loop only feeds them events (heartbeat membership, the peer's published group states, volume
//! states, step results, admin commands, a timer) and carries out the actions they return. Steps run
//! as their own tasks, so a slow step never stalls heartbeats or the control API. Each group moves on
//! its own (issue 17); what belongs to the node rather than a group is shared: the heartbeat, the
//! guard (run once per peer failure, its answer given to every group that asked, see `Driver::guard`),
//! the published state (one field carrying every group's, `failover::encode_state_set`).

use super::group_run::{
    AdminReply, GroupRun, LoopMsg, Requests, epoch_file, local_volumes, read_epoch, sequencer_params,
};
use super::alua_ports::{Side, port_states};
use super::group_steps::GroupSteps;
use super::io_fencing::{FenceLedger, IoFencing};
use super::resources::Resources;
use super::targets::TargetHost;
use crate::config::{ClusterConfig, HaConfig, LinkMode as CfgLinkMode, NodeConfig};
use crate::failover::{AdminCmd, DiskView, Input, PeerStates, Phase, Sequencer, SequencerStatus, decode_state_set, encode_state_set, start_plan, stop_plan};
use crate::heartbeat::{
    AuthKeys, Generation, HeartbeatHandle, HeartbeatRuntimeConfig, HeartbeatService, LinkMode, LinkRuntime,
    MembershipEvent, MembershipParams, MembershipStatus,
};
use crate::fencing::Fencer;
use crate::monitor::counters::{ClusterCounters, FenceResult, GuardResult};
use crate::netops;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// An admin command for one group (by index).
type AdminRequest = (usize, AdminCmd, AdminReply);

/// One group as `haadm status` shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub status: SequencerStatus,
    /// `vip`, `alua` or `both`.
    pub access: &'static str,
    /// ALUA: each target port group's state on this node (empty for `access: vip`).
    pub alua: Vec<(u16, &'static str)>,
}

impl GroupView {
    /// The ALUA states as status shows them: `2:active/optimized 3:standby` ("" without ALUA).
    pub fn ports(&self) -> String {
        self.alua.iter().map(|(id, st)| format!("{id}:{st}")).collect::<Vec<_>>().join(" ")
    }
}

/// What `haadm status` shows about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub generation: u64,
    /// Every group, in configuration order.
    pub groups: Vec<GroupView>,
    pub membership: Option<MembershipStatus>,
}

impl ClusterView {
    /// The first group's sequencer (what a single-group consumer shows).
    pub fn sequencer(&self) -> Option<&SequencerStatus> {
        self.groups.first().map(|g| &g.status)
    }
}

/// Handle held by the daemon and the control API.
pub struct ClusterHandle {
    admin: mpsc::Sender<AdminRequest>,
    adjust: mpsc::Sender<AdjustRequest>,
    view: watch::Receiver<ClusterView>,
    /// Group names in configuration order (what `standby GROUP` may name).
    groups: Vec<String>,
    /// Event counters for `/metrics` (late heartbeats, guard and fence outcomes, failovers).
    pub counters: Arc<ClusterCounters>,
    /// Bumped by every pass of the group loop: the systemd watchdog is fed only while it moves.
    pub loop_passes: Arc<AtomicU64>,
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ClusterHandle {
    /// `standby` / `takeover` of `group` (a name, or `all` / "" for every group where it applies:
    /// standby moves the groups held here, takeover the ones held by the peer). Answers once every
    /// hand-over finished or was refused.
    pub async fn admin(&self, group: &str, cmd: AdminCmd, limit: Duration) -> Result<Vec<String>, String> {
        let view = self.view();
        let picked: Vec<usize> = if self.groups.len() == 1 && (group.is_empty() || group == "all") {
            // One group: its sequencer answers, with its own reason when it refuses.
            vec![0]
        } else if group.is_empty() || group == "all" {
            let applies = |g: &GroupView| match cmd {
                AdminCmd::Standby => g.status.phase.active(),
                AdminCmd::Takeover => !g.status.phase.active(),
            };
            let picked: Vec<usize> = view.groups.iter().enumerate().filter(|(_, g)| applies(g)).map(|(i, _)| i).collect();
            if picked.is_empty() {
                return Err(match cmd {
                    AdminCmd::Standby => "this node holds no group".to_string(),
                    AdminCmd::Takeover => "this node already holds every group".to_string(),
                });
            }
            picked
        } else {
            match self.groups.iter().position(|g| g == group) {
                Some(i) => vec![i],
                None => return Err(format!("no failover group `{group}` (groups: {})", self.groups.join(", "))),
            }
        };
        let mut waits = Vec::new();
        for i in picked {
            let (tx, rx) = oneshot::channel();
            self.admin.send((i, cmd, tx)).await.map_err(|_| "the cluster loop is not running".to_string())?;
            waits.push((self.groups.get(i).cloned().unwrap_or_default(), rx));
        }
        let deadline = tokio::time::Instant::now() + limit;
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for (name, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => done.push(format!("group {name}: done")),
                Ok(Ok(Err(e))) => failed.push(format!("group {name}: {e}")),
                Ok(Err(_)) => failed.push(format!("group {name}: the cluster loop stopped before answering")),
                Err(_) => failed.push(format!("group {name}: no answer within {limit:?} (the hand-over may still complete; see `haadm status`)")),
            }
        }
        if failed.is_empty() { Ok(done) } else { Err(failed.join("; ")) }
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

    /// Stops the loop: groups held here are stopped in reverse order first (the peer takes over).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
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


/// The shared guard: one run per peer failure, its answer given to every group that asked. A
/// confirmed answer holds until the peer is heard again, so a group that asks later in the same
/// failure (it was still stopping, say) does not fence the peer a second time.
#[derive(Debug, Default)]
struct SharedGuard {
    running: bool,
    /// Groups (by index) waiting for the running guard.
    waiters: Vec<usize>,
    /// The detail of a guard that confirmed the peer down since the peer was last heard.
    confirmed: Option<String>,
}

/// Everything the loop needs to carry out actions.
struct Driver {
    config: Arc<HaConfig>,
    cluster: ClusterConfig,
    me: String,
    peer: Option<String>,
    groups: Vec<GroupRun>,
    /// A single `group:` publishes its state as before; `groups:` publishes a set.
    legacy: bool,
    publish: watch::Sender<Vec<u8>>,
    tx: mpsc::Sender<LoopMsg>,
    guard: SharedGuard,
    /// Whether the peer is heard on a heartbeat link (a delayed fence checks it before fencing).
    peer_alive: Arc<AtomicBool>,
    counters: Arc<ClusterCounters>,
    /// Timer passes so far (paces work done every few ticks).
    ticks: u64,
    /// The peer fenced in this failure (guard and I/O fencing of every group share it).
    ledger: Arc<FenceLedger>,
}

/// Ticks between two re-reads of the reservations on an ALUA standby node (~1 s).
const RESERVATIONS_EVERY: u64 = 20;

impl Driver {
    fn feed(&mut self, i: usize, input: Input) {
        let escalation = self.cluster.escalation_command.clone();
        let Some(g) = self.groups.get_mut(i) else { return };
        let r = g.feed(input, &self.tx, &self.counters, escalation.as_deref());
        self.after(i, r);
    }

    fn feed_all(&mut self, input: &Input) {
        for i in 0..self.groups.len() {
            self.feed(i, input.clone());
        }
    }

    fn after(&mut self, i: usize, r: Requests) {
        if r.published {
            self.publish_all();
        }
        if r.guard {
            self.guard(i);
        }
    }

    fn publish_all(&self) {
        let bytes = if self.legacy {
            self.groups.first().map(|g| g.published.clone()).unwrap_or_default()
        } else {
            let set: Vec<(String, Vec<u8>)> = self.groups.iter().filter(|g| !g.published.is_empty()).map(|g| (g.name().to_string(), g.published.clone())).collect();
            encode_state_set(&set)
        };
        self.publish.send_replace(bytes);
    }

    /// Feeds each group the peer's state for it, when that changed.
    fn feed_peer_states(&mut self, h: &HeartbeatHandle) {
        let Some(bytes) = h.peer_group_state() else { return };
        let peer = match decode_state_set(&bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("the peer's group states do not decode: {e}");
                return;
            }
        };
        for i in 0..self.groups.len() {
            let Some(g) = self.groups.get_mut(i) else { continue };
            let mine = peer_bytes(&peer, g.name(), i == 0);
            if mine.is_some() && mine != g.peer_bytes {
                g.peer_bytes.clone_from(&mine);
                if let Some(b) = mine {
                    g.peer_last = crate::failover::decode_state(&b).ok();
                    self.feed(i, Input::PeerState(b));
                }
            }
        }
    }

    /// A group asked for the guard: answered from a confirmation of this failure, joined to the
    /// running guard, or a new run (ping nodes and/or fencing).
    fn guard(&mut self, i: usize) {
        if let Some(detail) = self.guard.confirmed.clone() {
            self.feed(i, Input::GuardResult { ok: true, detail: format!("{detail} (confirmed for another group in this failure)") });
            return;
        }
        if !self.guard.waiters.contains(&i) {
            self.guard.waiters.push(i);
        }
        if self.guard.running {
            return;
        }
        self.guard.running = true;
        let guard = self.cluster.guard.clone();
        let tx = self.tx.clone();
        let (me, peer) = (self.me.clone(), self.peer.clone().unwrap_or_default());
        // A holder that was lost may be suspended with the newest data and fencing us: give it a
        // deadtime's head start so the two do not fence each other at once (see io_fencing.rs).
        let delays = self.groups.iter().any(|g| g.io_fence.delays_fencing_of_holder(g.peer_last.as_ref()));
        let fence_delay = if delays { self.cluster.deadtime } else { Duration::ZERO };
        let peer_alive = Arc::clone(&self.peer_alive);
        let counters = Arc::clone(&self.counters);
        let ledger = Arc::clone(&self.ledger);
        tokio::spawn(async move {
            let (ok, detail) = run_guard(&guard, &me, &peer, fence_delay, &peer_alive, &counters, &ledger).await;
            let _ = tx.send(LoopMsg::GuardDone { ok, detail }).await;
        });
    }

    fn guard_done(&mut self, ok: bool, detail: String) {
        self.guard.running = false;
        if ok && !self.peer_alive.load(Ordering::Acquire) {
            self.guard.confirmed = Some(detail.clone());
        }
        for i in std::mem::take(&mut self.guard.waiters) {
            self.feed(i, Input::GuardResult { ok, detail: detail.clone() });
        }
    }

    fn peer_liveness(&mut self, alive: bool) {
        self.peer_alive.store(alive, Ordering::Release);
        if alive {
            self.guard.confirmed = None;
            self.ledger.peer_heard();
        }
        for g in &mut self.groups {
            g.acquisition.peer_liveness(alive);
        }
    }

    /// Carries out [`ClusterHandle::adjust`] inside the loop. Everything that can fail (keys, link
    /// sockets) is done first, so a failure leaves the running configuration as it was.
    async fn adjust(&mut self, config: Arc<HaConfig>, hb: Option<&mut HeartbeatHandle>, keys_hash: &mut Option<Vec<u8>>) -> Result<Vec<String>, String> {
        let me = self.me.clone();
        let Some(cluster) = config.cluster.clone() else {
            return Err("the new configuration has no cluster section; needs a restart of clusterd".into());
        };
        let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        if names != self.groups.iter().map(GroupRun::name).collect::<Vec<_>>() {
            return Err("the failover groups differ (added, removed or renamed); needs a restart of clusterd".into());
        }
        let peer = self.peer.clone();
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
        for (g, gc) in self.groups.iter_mut().zip(&config.groups) {
            let p = sequencer_params(&config, &cluster, gc, &me, peer.as_deref(), g.seq.params().generation);
            g.seq.adjust(&p);
        }
        if self.cluster.guard != cluster.guard {
            lines.push("guard: taken for the next takeover".into());
        }
        self.cluster = cluster;
        self.config = config;
        Ok(lines)
    }

    /// One pass of the timer: volumes, uplink probe, I/O fencing, sequencer timeouts, epochs.
    async fn tick(&mut self, resources: &Resources) {
        self.ticks = self.ticks.wrapping_add(1);
        let peer_alive = self.peer_alive.load(Ordering::Acquire);
        for i in 0..self.groups.len() {
            let Some(g) = self.groups.get_mut(i) else { continue };
            let vols = local_volumes(resources, &g.config.resources).await;
            if g.last_volumes != Some(vols) {
                g.last_volumes = Some(vols);
                self.feed(i, Input::Volumes(vols));
            }
            let escalation = self.cluster.escalation_command.clone();
            let Some(g) = self.groups.get_mut(i) else { continue };
            let phase = g.seq.phase();
            g.io_fence.tick(resources, peer_alive, phase, g.peer_last.as_ref()).await;
            let actions = g.seq.tick(Instant::now());
            let r = g.apply(actions, &self.tx, escalation.as_deref());
            g.persist_epoch();
            let status = g.seq.status();
            g.acquisition.observe(&status, &self.me, &self.counters);
            self.after(i, r);
            self.update_ports(i, peer_alive);
        }
    }

    /// ALUA groups: the target port states from both nodes' phases (see `alua_ports.rs`).
    fn update_ports(&self, i: usize, peer_alive: bool) {
        let Some(g) = self.groups.get(i) else { return };
        if !g.config.access.alua() {
            return;
        }
        let Some(me) = self.config.nodes.iter().position(|n| n.name == self.me) else { return };
        let mine = Side { phase: g.seq.phase(), up_to_date: g.last_volumes.is_some_and(|v| v.disk == DiskView::UpToDate) };
        let peer = Side::of_peer(g.peer_last.as_ref(), peer_alive);
        g.steps.targets.set_access_states(g.name(), &port_states(&g.config, me, mine, peer));
        if matches!(mine.phase, Phase::Idle | Phase::Failed) && self.ticks.is_multiple_of(RESERVATIONS_EVERY) {
            g.steps.targets.refresh_standby_reservations(g.name());
        }
    }

    fn view(&self, generation: u64, membership: Option<MembershipStatus>) -> ClusterView {
        let groups: Vec<GroupView> = self
            .groups
            .iter()
            .map(|g| GroupView {
                name: g.name().to_string(),
                status: g.seq.status(),
                access: g.config.access.name(),
                alua: g.steps.targets.access_states(g.name()).iter().map(|(id, st)| (*id, super::alua_ports::state_name(*st))).collect(),
            })
            .collect();
        ClusterView { generation, groups, membership }
    }
}

/// The state bytes the peer published for group `name` (`first`: this node's first group, which a
/// single-group peer's state belongs to).
fn peer_bytes(peer: &PeerStates, name: &str, first: bool) -> Option<Vec<u8>> {
    peer.for_group(name, first).map(<[u8]>::to_vec)
}

/// Ping nodes (any answering = our uplink works) and/or fencing (the fence command's exit 0, or the
/// fence agent's status reporting off = peer confirmed down).
async fn run_guard(
    guard: &crate::config::GuardConfig,
    me: &str,
    peer: &str,
    fence_delay: Duration,
    peer_alive: &AtomicBool,
    counters: &ClusterCounters,
    ledger: &FenceLedger,
) -> (bool, String) {
    let mut detail = Vec::new();
    let mut ok = true;
    if !guard.ping_nodes.is_empty() {
        let up = uplink(&guard.ping_nodes, guard.ping_timeout).await;
        detail.push(format!("ping nodes {}", if up { "reachable" } else { "unreachable" }));
        ok &= up;
    }
    if ok && let Some(fencer) = Fencer::from_guard(guard) {
        if !fence_delay.is_zero() {
            tracing::info!(target: "failover", "waiting {fence_delay:?} before fencing {peer}, which held a group (fencing resource-and-stonith)");
            tokio::time::sleep(fence_delay).await;
            if peer_alive.load(Ordering::Acquire) {
                counters.fence_command(FenceResult::Skipped);
                counters.guard_run(GuardResult::Refused);
                return (false, format!("{peer} was heard again during the fence delay: not fenced"));
            }
        }
        // A group's I/O fencing may be fencing the peer for this failure already: wait for it (bounded
        // by the agent's own timeouts) and take its answer rather than fence twice.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut mine = false;
        while !ledger.fenced() && Instant::now() < deadline {
            if ledger.begin() {
                mine = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ledger.fenced() && !mine {
            detail.push(format!("{peer} already fenced in this failure"));
        } else {
            let (fenced, outcome) = fencer.fence(me, peer).await;
            if mine {
                ledger.end(fenced);
            } else if fenced {
                ledger.mark_fenced();
            }
            counters.fence_command(if fenced { FenceResult::Fenced } else { FenceResult::Failed });
            detail.push(outcome);
            ok &= fenced;
        }
    }
    counters.guard_run(if ok { GuardResult::Confirmed } else { GuardResult::Refused });
    (ok, detail.join("; "))
}

/// Removes what a crashed run may have left: iSCSI port blocks and VIPs of every group.
async fn clear_leftovers(config: &HaConfig, me: &str) -> Result<()> {
    // Leftover blocks from a crashed run would make the port unreachable forever.
    if config.groups.iter().any(|g| g.portblock)
        && let Err(e) = tokio::task::spawn_blocking(netops::clear_all_blocks).await.map_err(|e| anyhow!(e))?
    {
        tracing::warn!("clearing stale iSCSI port blocks: {e}");
    }
    // A VIP left behind by a crashed run would answer ARP next to the node that holds the group now.
    for vip in config.groups.iter().filter_map(|g| g.vip.as_ref()) {
        if let Some(ifname) = vip.interfaces.get(me)
            && matches!(netops::vip_present(ifname, vip.address).await, Ok(true))
        {
            tracing::warn!("removing the VIP {} left on {ifname} by an earlier run", vip.address);
            if let Err(e) = netops::vip_remove(ifname, vip.address, vip.prefix_len).await {
                tracing::error!("cannot remove the stale VIP {}: {e}", vip.address);
            }
        }
    }
    Ok(())
}

/// Starts heartbeats and one sequencer per group of this node. `None` when the config has no group.
/// `config_digest`: this node's configuration digest (changed by `haadm adjust`), sent in every
/// heartbeat so both nodes can tell that they run different configurations.
pub async fn start(
    config: Arc<HaConfig>,
    me: &NodeConfig,
    resources: Arc<Resources>,
    targets: Arc<TargetHost>,
    mut config_digest: watch::Receiver<String>,
) -> Result<Option<ClusterHandle>> {
    let Some(cluster) = config.cluster.clone() else { return Ok(None) };
    if config.groups.is_empty() {
        return Ok(None);
    }
    let peer = config.peer_of(&me.name).map(|p| p.name.clone());
    let generation = Generation::bump(&me.state_dir).with_context(|| format!("heartbeat generation in {}", me.state_dir.display()))?;
    clear_leftovers(&config, &me.name).await?;
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
    let (tx, mut rx) = mpsc::channel::<LoopMsg>(64);
    let ledger = Arc::new(FenceLedger::default());
    let mut groups = Vec::with_capacity(config.groups.len());
    for (index, g) in config.groups.iter().enumerate() {
        let mut params = sequencer_params(&config, &cluster, g, &me.name, peer.as_deref(), generation);
        let epoch_path = epoch_file(&me.state_dir, &g.name);
        params.known_epoch = read_epoch(&epoch_path)?;
        let steps = Arc::new(GroupSteps {
            config: Arc::clone(&config),
            group: g.clone(),
            node: me.name.clone(),
            resources: Arc::clone(&resources),
            targets: Arc::clone(&targets),
            garp_burst: Default::default(),
        });
        groups.push(GroupRun {
            index,
            config: g.clone(),
            persisted_epoch: params.known_epoch,
            seq: Sequencer::new(params, Instant::now()),
            steps,
            pending: Vec::new(),
            io_fence: IoFencing::new(&config, &g.resources, &me.name, peer.as_deref().unwrap_or_default(), Arc::clone(&ledger)),
            peer_last: None,
            peer_bytes: None,
            published: Vec::new(),
            acquisition: Default::default(),
            last_volumes: None,
            epoch_file: epoch_path,
        });
    }
    let (admin, mut admin_rx) = mpsc::channel::<AdminRequest>(8);
    let (adjust, mut adjust_rx) = mpsc::channel::<AdjustRequest>(2);
    let mut keys_hash = file_hash(&cluster.authkeys_file);
    let group_names: Vec<String> = config.groups.iter().map(|g| g.name.clone()).collect();
    let mut d = Driver {
        legacy: config.legacy_group,
        config: Arc::clone(&config),
        cluster: cluster.clone(),
        me: me.name.clone(),
        peer: peer.clone(),
        groups,
        publish,
        tx,
        guard: SharedGuard::default(),
        peer_alive: Arc::new(AtomicBool::new(false)),
        counters: Arc::new(ClusterCounters::default()),
        ticks: 0,
        ledger,
    };
    // ALUA groups serve their targets on this node's own portal from now on (standby until the
    // loop says otherwise); a failure here is retried when the node takes the group.
    for g in config.groups.iter().filter(|g| g.access.alua()) {
        if let Err(e) = targets.start_alua(&g.name, &resources).await {
            tracing::error!("group {}: cannot serve the targets on this node's portal: {e:#}", g.name);
        }
    }
    let (view_tx, view) = watch::channel(d.view(generation, None));
    let cancel = CancellationToken::new();
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
        let mut last_uplink = Instant::now() - UPLINK_EVERY;
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
                        match i {
                            Input::PeerAlive { .. } | Input::PeerRestarted { .. } => d.peer_liveness(true),
                            Input::PeerDead => d.peer_liveness(false),
                            _ => {}
                        }
                        d.feed_all(i);
                    }
                }
                _ = async { match hb_handle.as_ref() { Some(h) => h.peer_state_changed().await, None => std::future::pending().await } } => {
                    if let Some(h) = &hb_handle {
                        d.feed_peer_states(h);
                    }
                }
                Some(msg) = rx.recv() => match msg {
                    LoopMsg::Group(i, input) => d.feed(i, input),
                    LoopMsg::GuardDone { ok, detail } => d.guard_done(ok, detail),
                    LoopMsg::Uplink(up) => d.feed_all(&Input::Uplink(up)),
                },
                Some((config, reply)) = adjust_rx.recv() => {
                    let r = d.adjust(config, hb_handle.as_mut(), &mut keys_hash).await;
                    let _ = reply.send(r);
                }
                Some((i, cmd, reply)) = admin_rx.recv() => {
                    if let Some(g) = d.groups.get_mut(i) {
                        g.pending.push((cmd, reply));
                        d.feed(i, match cmd { AdminCmd::Standby => Input::Standby, AdminCmd::Takeover => Input::Takeover });
                    }
                }
                _ = tick.tick() => {
                    if let Some(h) = &hb_handle {
                        d.feed_peer_states(h);
                    }
                    if !d.cluster.guard.ping_nodes.is_empty() && last_uplink.elapsed() >= UPLINK_EVERY {
                        last_uplink = Instant::now();
                        let (nodes, t, tx) = (d.cluster.guard.ping_nodes.clone(), d.cluster.guard.ping_timeout, d.tx.clone());
                        tokio::spawn(async move { let _ = tx.send(LoopMsg::Uplink(uplink(&nodes, t).await)).await; });
                    }
                    d.tick(&resources).await;
                    passes.fetch_add(1, Ordering::Relaxed);
                    view_tx.send_replace(d.view(generation, hb_handle.as_ref().map(|h| h.status())));
                }
            }
        }
        // Shutdown: release the groups held here in stop order, then stop heartbeats so the peer
        // takes over.
        for g in &d.groups {
            if g.seq.phase().active() {
                tracing::info!("shutting down while holding group {}: stopping it in reverse order", g.name());
                let portblock = g.config.portblock;
                for step in stop_plan(portblock, &start_plan(portblock)) {
                    if let Err(e) = g.steps.run(step).await {
                        tracing::error!("{step:?} of group {} at shutdown: {e}", g.name());
                    }
                }
            }
        }
        if let Some(h) = hb_handle {
            h.stop().await;
        }
    });
    Ok(Some(ClusterHandle { admin, adjust, view, groups: group_names, counters, loop_passes, cancel, task: std::sync::Mutex::new(Some(task)) }))
}
