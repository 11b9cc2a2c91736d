//! The heartbeat I/O: one UDP socket per link, a sender/timer task and one receiver task per link,
//! all driving one shared [`Membership`].
//!
//! Every keepalive the same sequence number is sent on every link (per-link replay windows at the
//! receiver make that safe), carrying the latest `group_state` published by the failover
//! sequencer. Receivers decode and authenticate each datagram and feed the core; a timer ticks the
//! core often enough that dead detection lags deadtime by at most a small fraction of it.
//! Events go to a bounded channel; if the consumer has gone away the service keeps running so its
//! status stays queryable.

use super::authkeys::AuthKeys;
use super::membership::{
    Membership, MembershipEvent, MembershipInput, MembershipParams, MembershipParamsError, MembershipStatus,
    RejectReason,
};
use super::packet::{HeartbeatContent, VERSIONS, agreed_version, decode_packet, encode_packet};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Capacity of the event channel; events are rare (state changes), this only absorbs bursts.
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Largest UDP payload; bigger datagrams cannot exist.
const RECV_BUFFER_LEN: usize = 65_536;
/// At most one "another node uses our name" warning per link per this interval.
const NAME_CLASH_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Bounds for the core's tick period (see [`tick_period`]).
const MIN_TICK: Duration = Duration::from_millis(5);
const MAX_TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Bind our own address, send to the peer's address.
    Unicast,
    /// SO_BROADCAST; bind 0.0.0.0:port (optionally on one interface), send to the broadcast address.
    /// Our own broadcasts come back to us; the core recognises and ignores them.
    Broadcast,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRuntime {
    pub name: String,
    pub mode: LinkMode,
    pub bind: SocketAddr,
    pub send_to: SocketAddr,
    /// Interface to bind the socket to (SO_BINDTODEVICE; needs CAP_NET_RAW). It is applied
    /// before `bind`, so a broadcast link's wildcard socket on one interface and another link's
    /// socket on the same port but another interface do not collide (EADDRINUSE).
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRuntimeConfig {
    pub cluster: String,
    pub me: String,
    pub peer: String,
    pub links: Vec<LinkRuntime>,
    /// `params.links` must name the same links as `links`, in any order.
    pub params: MembershipParams,
    /// TEST ONLY (`CLUSTERD_TEST_MAX_PROTOCOL`): send bodies without the version fields, as the
    /// release before heartbeat versions did.
    pub legacy_packets: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("invalid heartbeat timers or links: {0}")]
    Params(#[from] MembershipParamsError),
    #[error("heartbeat link {0:?} has a socket configuration but is not among the membership links (or vice versa)")]
    LinkMismatch(String),
    #[error("heartbeat link {link}: cannot create a UDP socket: {source}")]
    Socket { link: String, source: std::io::Error },
    #[error("heartbeat link {link}: cannot bind {addr}: {source}{hint}")]
    Bind {
        hint: &'static str,
        link: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("heartbeat link {link}: cannot enable broadcast: {source}")]
    Broadcast { link: String, source: std::io::Error },
    #[error("heartbeat link {link}: cannot bind to interface {interface}: {source}")]
    BindDevice {
        link: String,
        interface: String,
        source: std::io::Error,
    },
}

/// The heartbeat keys, replaceable while running (`haadm adjust` after authkeys changed).
type KeyRing = Arc<std::sync::RwLock<Arc<AuthKeys>>>;

fn current_keys(ring: &KeyRing) -> Arc<AuthKeys> {
    Arc::clone(&ring.read().unwrap_or_else(|p| p.into_inner()))
}

/// A link's socket and the token that stops its receiver.
#[derive(Debug)]
struct RunningLink {
    runtime: LinkRuntime,
    socket: Arc<UdpSocket>,
    receiver: CancellationToken,
}

/// What the sender/timer task takes after a live change.
struct SenderUpdate {
    sockets: Vec<(LinkRuntime, Arc<UdpSocket>)>,
    params: MembershipParams,
}

/// Capacity of the sender's update channel: one adjust at a time, this only absorbs a burst.
const UPDATE_CHANNEL_CAPACITY: usize = 4;

/// Control of a running service. Stop it gracefully with [`stop`](Self::stop) or by cancelling the
/// token from [`cancel_token`](Self::cancel_token); dropping the handle aborts the tasks (a
/// heartbeat must never outlive the daemon part that owns it).
#[derive(Debug)]
pub struct HeartbeatHandle {
    core: Arc<Mutex<Membership>>,
    /// Signalled when the peer's `group_state` changes, so a hand-over is acted on at once rather
    /// than at the next poll.
    peer_state_changed: Arc<Notify>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    local_addrs: Vec<(String, SocketAddr)>,
    /// This node's configuration digest, sent in every heartbeat once set.
    config_digest: Arc<Mutex<Option<String>>>,
    keys: KeyRing,
    links: Vec<RunningLink>,
    cfg: HeartbeatRuntimeConfig,
    events_tx: mpsc::Sender<MembershipEvent>,
    sender_updates: mpsc::Sender<SenderUpdate>,
}

impl HeartbeatHandle {
    pub fn status(&self) -> MembershipStatus {
        let mut st = lock(&self.core).status(Instant::now());
        st.local_config_digest = self.config_digest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        st
    }

    /// A setter for this node's configuration digest that outlives a borrow of the handle.
    pub fn config_digest_setter(&self) -> impl Fn(String) + Send + Sync + 'static {
        let slot = Arc::clone(&self.config_digest);
        move |d| *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(d)
    }

    /// Sends `digest` as this node's configuration digest from the next heartbeat on.
    pub fn set_config_digest(&self, digest: String) {
        *self.config_digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
    }

    /// The peer's latest `group_state`, if heard.
    pub fn peer_group_state(&self) -> Option<Vec<u8>> {
        lock(&self.core).peer_group_state().map(<[u8]>::to_vec)
    }

    /// Resolves when the peer's `group_state` may have changed since the last call (a stored permit
    /// makes a change between two calls count).
    pub async fn peer_state_changed(&self) {
        self.peer_state_changed.notified().await;
    }

    /// Cancelling this token stops every task of the service (e.g. tie it to daemon shutdown).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The bound address of each link's socket (useful when binding port 0).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.local_addrs
    }

    /// Takes new timers, links and (if given) keys while running; the peer's liveness, generation
    /// and group state are kept. Sockets for new or re-addressed links are bound first: if one
    /// cannot be bound nothing changes. Returns one line per link change.
    pub async fn reconfigure(&mut self, cfg: HeartbeatRuntimeConfig, keys: Option<AuthKeys>) -> Result<Vec<String>, HeartbeatError> {
        check_links(&cfg)?;
        let mut lines = Vec::new();
        // Bind everything new before touching what runs.
        let mut opened = Vec::new();
        for link in &cfg.links {
            let old = self.links.iter().find(|l| l.runtime.name == link.name);
            let same_socket = old.is_some_and(|o| o.runtime.bind == link.bind && o.runtime.interface == link.interface && o.runtime.mode == link.mode);
            if !same_socket {
                opened.push((link.name.clone(), Arc::new(open_socket(link).await?)));
            }
        }
        if let Some(k) = keys {
            *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
            lines.push("heartbeat keys reloaded".to_string());
        }
        let mut reset = Vec::new();
        let mut next = Vec::with_capacity(cfg.links.len());
        let mut old_links = std::mem::take(&mut self.links);
        for link in &cfg.links {
            let old = old_links.iter().position(|l| l.runtime.name == link.name).map(|i| old_links.swap_remove(i));
            let fresh = opened.iter().position(|(n, _)| n == &link.name).map(|i| opened.swap_remove(i).1);
            let running = match (old, fresh) {
                (Some(mut o), None) => {
                    if o.runtime != *link {
                        reset.push(link.name.clone());
                        lines.push(format!("heartbeat link {}: now sends to {}", link.name, link.send_to));
                        o.runtime = link.clone();
                    }
                    o
                }
                (old, Some(socket)) => {
                    let verb = match old {
                        Some(o) => {
                            o.receiver.cancel();
                            reset.push(link.name.clone());
                            "rebound"
                        }
                        None => "added",
                    };
                    let receiver = self.cancel.child_token();
                    self.tasks.spawn(receive_loop(
                        link.name.clone(),
                        Arc::clone(&socket),
                        Arc::clone(&self.keys),
                        Arc::clone(&self.core),
                        Arc::clone(&self.peer_state_changed),
                        self.events_tx.clone(),
                        receiver.clone(),
                    ));
                    lines.push(format!("heartbeat link {}: {verb} on {}, sends to {}", link.name, socket.local_addr().map_or(link.bind, |a| a), link.send_to));
                    RunningLink { runtime: link.clone(), socket, receiver }
                }
                (None, None) => unreachable!("a link without a socket was bound above"),
            };
            next.push(running);
        }
        for gone in old_links {
            gone.receiver.cancel();
            lines.push(format!("heartbeat link {}: removed", gone.runtime.name));
        }
        self.links = next;
        self.local_addrs = self.links.iter().filter_map(|l| l.socket.local_addr().ok().map(|a| (l.runtime.name.clone(), a))).collect();
        if cfg.params != self.cfg.params {
            let p = &cfg.params;
            lines.push(format!(
                "heartbeat timers: keepalive {:?}, warntime {:?}, deadtime {:?}, initdead {:?}",
                p.keepalive, p.warntime, p.deadtime, p.initdead
            ));
        }
        let events = lock(&self.core).reconfigure(cfg.params.clone(), &reset, Instant::now());
        let update = SenderUpdate {
            sockets: self.links.iter().map(|l| (l.runtime.clone(), Arc::clone(&l.socket))).collect(),
            params: cfg.params.clone(),
        };
        // The sender task ends only with the service; a full channel means it is behind on
        // earlier updates, which this one supersedes anyway.
        if self.sender_updates.send(update).await.is_err() {
            tracing::warn!("heartbeat sender task is gone; the new links and timers apply to receiving only");
        }
        let (tx, cancel) = (self.events_tx.clone(), self.cancel.clone());
        tokio::spawn(async move { publish(events, &tx, &cancel).await });
        self.cfg = cfg;
        Ok(lines)
    }

    /// Stops sending and receiving and waits for the tasks to finish.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                tracing::error!("heartbeat task panicked: {e}");
            }
        }
    }
}

pub struct HeartbeatService;

impl HeartbeatService {
    /// Binds every link's socket, then spawns the sender/timer and receiver tasks on the current
    /// tokio runtime. `generation` is this node's boot generation (from
    /// [`Generation::bump`](super::generation::Generation::bump)).
    pub async fn start(
        cfg: HeartbeatRuntimeConfig,
        keys: AuthKeys,
        generation: u64,
        group_state: watch::Receiver<Vec<u8>>,
    ) -> Result<(HeartbeatHandle, mpsc::Receiver<MembershipEvent>), HeartbeatError> {
        check_links(&cfg)?;
        let mut sockets = Vec::with_capacity(cfg.links.len());
        for link in &cfg.links {
            sockets.push((link.clone(), Arc::new(open_socket(link).await?)));
        }
        let local_addrs = sockets
            .iter()
            .filter_map(|(link, s)| s.local_addr().ok().map(|a| (link.name.clone(), a)))
            .collect();

        let core = Arc::new(Mutex::new(
            Membership::new(cfg.params.clone(), &cfg.cluster, &cfg.me, &cfg.peer, Instant::now())
                .with_own_generation(generation),
        ));
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let cancel = CancellationToken::new();
        let keys: KeyRing = Arc::new(std::sync::RwLock::new(Arc::new(keys)));
        let mut tasks = JoinSet::new();
        let peer_state_changed = Arc::new(Notify::new());
        let mut links = Vec::with_capacity(sockets.len());
        for (link, socket) in &sockets {
            let receiver = cancel.child_token();
            tasks.spawn(receive_loop(
                link.name.clone(),
                Arc::clone(socket),
                Arc::clone(&keys),
                Arc::clone(&core),
                Arc::clone(&peer_state_changed),
                events_tx.clone(),
                receiver.clone(),
            ));
            links.push(RunningLink { runtime: link.clone(), socket: Arc::clone(socket), receiver });
        }
        let (sender_updates, updates_rx) = mpsc::channel(UPDATE_CHANNEL_CAPACITY);
        let handle_cfg = cfg.clone();
        let config_digest = Arc::new(Mutex::new(None));
        let sender = PacketSender {
            cfg,
            keys: Arc::clone(&keys),
            generation,
            group_state,
            config_digest: Arc::clone(&config_digest),
            sockets,
            seq: 0,
            core: Arc::clone(&core),
        };
        tasks.spawn(send_and_tick_loop(sender, core.clone(), events_tx.clone(), updates_rx, cancel.clone()));
        tracing::info!(generation, "heartbeat service started");
        Ok((
            HeartbeatHandle {
                core,
                peer_state_changed,
                cancel,
                tasks,
                local_addrs,
                config_digest,
                keys,
                links,
                cfg: handle_cfg,
                events_tx,
                sender_updates,
            },
            events_rx,
        ))
    }
}

/// Timers valid, and the socket configurations name exactly the membership's links.
fn check_links(cfg: &HeartbeatRuntimeConfig) -> Result<(), HeartbeatError> {
    cfg.params.validate()?;
    for link in &cfg.links {
        if !cfg.params.links.contains(&link.name) {
            return Err(HeartbeatError::LinkMismatch(link.name.clone()));
        }
    }
    for name in &cfg.params.links {
        if !cfg.links.iter().any(|l| &l.name == name) {
            return Err(HeartbeatError::LinkMismatch(name.clone()));
        }
    }
    Ok(())
}

/// Creates the link's socket, binds it to its interface BEFORE binding the address (the kernel
/// then lets sockets on different interfaces share a port, as Heartbeat's `bcast bond0` and
/// `ucast bond1 ...` on one udpport do), then binds the address.
async fn open_socket(link: &LinkRuntime) -> Result<UdpSocket, HeartbeatError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if link.bind.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket_error = |source: std::io::Error| HeartbeatError::Socket {
        link: link.name.clone(),
        source,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| socket_error(e.into()))?;
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(socket_error)?;
    if let Some(interface) = &link.interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|source| HeartbeatError::BindDevice {
                link: link.name.clone(),
                interface: interface.clone(),
                source,
            })?;
    }
    if link.mode == LinkMode::Broadcast {
        socket.set_broadcast(true).map_err(|source| HeartbeatError::Broadcast {
            link: link.name.clone(),
            source,
        })?;
    }
    rustix::net::bind(&socket, &link.bind).map_err(|errno| {
        let source = std::io::Error::from(errno);
        let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another link or program uses this port on an overlapping address and interface; \
             a bcast link listens on every address, so give it an `interface` no other link on this \
             port uses, or give the links different ports)"
        } else {
            ""
        };
        HeartbeatError::Bind {
            link: link.name.clone(),
            addr: link.bind,
            source,
            hint,
        }
    })?;
    Ok(socket)
}

/// Rate limit for the "someone else uses our node name" warning on one link: the first
/// occurrence is logged at once, later ones at most every [`NAME_CLASH_WARN_INTERVAL`] with the
/// number seen in between (the drops themselves are counted in the status).
#[derive(Debug, Default)]
struct NameClashWarning {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl NameClashWarning {
    /// Returns how many clashes to report now (this one included), or `None` to stay quiet.
    fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= NAME_CLASH_WARN_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// A poisoned lock only means another heartbeat task panicked mid-update; the counters and
/// timestamps are still usable, and liveness must keep being reported.
fn lock(core: &Mutex<Membership>) -> MutexGuard<'_, Membership> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Dead detection lags by at most one tick: a tenth of deadtime, within [5 ms, 250 ms].
fn tick_period(params: &MembershipParams) -> Duration {
    (params.deadtime / 10).clamp(MIN_TICK, MAX_TICK)
}

async fn publish(events: Vec<MembershipEvent>, tx: &mpsc::Sender<MembershipEvent>, cancel: &CancellationToken) {
    for event in events {
        log_event(&event);
        tokio::select! {
            // An Err means the consumer is gone; keep running for status queries.
            _ = tx.send(event) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::PeerAlive { generation } => tracing::info!(generation, "heartbeat: peer is alive"),
        MembershipEvent::PeerDead => tracing::warn!("heartbeat: peer is dead (every link silent for deadtime)"),
        MembershipEvent::PeerRestarted { old, new } => {
            tracing::warn!(old, new, "heartbeat: peer restarted (new generation)")
        }
        MembershipEvent::LinkUp(link) => tracing::info!(link, "heartbeat: link up"),
        MembershipEvent::LinkDown(link) => tracing::warn!(link, "heartbeat: link down"),
        MembershipEvent::LateHeartbeat { link, gap } => {
            tracing::warn!(link, gap_ms = gap.as_millis() as u64, "heartbeat: late heartbeat")
        }
        MembershipEvent::InitDeadExpired => tracing::warn!("heartbeat: peer not heard within initdead"),
    }
}

async fn receive_loop(
    link: String,
    socket: Arc<UdpSocket>,
    keys: KeyRing,
    core: Arc<Mutex<Membership>>,
    peer_state_changed: Arc<Notify>,
    events_tx: mpsc::Sender<MembershipEvent>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    // Refusals are counted in the status; the log gets the first of each kind per link only, so a
    // misconfigured neighbour cannot flood it.
    let mut logged = HashSet::new();
    let mut name_clash = NameClashWarning::default();
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = cancel.cancelled() => return,
        };
        let at = Instant::now();
        let (len, from_addr) = match received {
            Ok(ok) => ok,
            Err(e) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED); not fatal.
                tracing::debug!(link, "heartbeat receive error: {e}");
                continue;
            }
        };
        let datagram = buf.get(..len).unwrap_or_default();
        let input = match decode_packet(datagram, &current_keys(&keys)).map(|hb| (agreed_version(VERSIONS, &hb), hb)) {
            Ok((Err(no_common), _)) => {
                // Authenticated, but from a release too far apart to understand: counted like a bad
                // envelope version, logged once per link with both ranges.
                let reason = RejectReason::UnsupportedVersion;
                if logged.insert(reason) {
                    tracing::warn!(link, %from_addr, "heartbeat packet refused: {no_common}");
                }
                MembershipInput::Rejected { link: link.clone(), reason, at }
            }
            Ok((Ok(_), hb)) => {
                // A statement of its own, so the lock is released before `step` takes it again.
                let clash = lock(&core).is_name_clash(&hb);
                if clash && let Some(count) = name_clash.record(at) {
                    tracing::warn!(
                        link,
                        %from_addr,
                        node = hb.node,
                        generation = hb.generation,
                        count,
                        "heartbeat carrying OUR node name with a generation that is not ours: another node \
                         is configured with this node's name (or old traffic of ours is being replayed); dropped"
                    );
                }
                MembershipInput::Packet {
                link: link.clone(),
                    from: hb,
                    at,
                }
            }
            Err(err) => {
                let reason = RejectReason::from_packet_error(&err);
                if logged.insert(reason) {
                    tracing::warn!(link, %from_addr, "heartbeat packet refused: {err}");
                }
                MembershipInput::Rejected {
                    link: link.clone(),
                    reason,
                    at,
                }
            }
        };
        let (events, changed) = {
            let mut m = lock(&core);
            let before = m.peer_group_state().map(<[u8]>::to_vec);
            let events = m.step(input);
            (events, m.peer_group_state() != before.as_deref())
        };
        if changed {
            peer_state_changed.notify_one();
        }
        publish(events, &events_tx, &cancel).await;
    }
}

struct PacketSender {
    cfg: HeartbeatRuntimeConfig,
    keys: KeyRing,
    generation: u64,
    group_state: watch::Receiver<Vec<u8>>,
    config_digest: Arc<Mutex<Option<String>>>,
    sockets: Vec<(LinkRuntime, Arc<UdpSocket>)>,
    seq: u64,
    /// The membership core: the peer's versions decide what the packets carry.
    core: Arc<Mutex<Membership>>,
}

impl PacketSender {
    async fn send_round(&mut self, failing: &mut HashSet<String>) {
        self.seq = self.seq.saturating_add(1);
        let group_state = self.group_state.borrow().clone();
        let config_digest = self.config_digest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sent_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let keys = current_keys(&self.keys);
        let (key_id, key) = keys.send_key();
        let version = lock(&self.core).send_version();
        for (link, socket) in &self.sockets {
            let content = HeartbeatContent {
                cluster: self.cfg.cluster.clone(),
                node: self.cfg.me.clone(),
                generation: self.generation,
                seq: self.seq,
                link: link.name.clone(),
                sent_unix_ms,
                group_state: group_state.clone(),
                config_digest: config_digest.clone(),
                software_version: crate::versions::SOFTWARE_VERSION.to_string(),
            };
            let hb = content.to_packet(VERSIONS, version, !self.cfg.legacy_packets);
            let wire = match encode_packet(&hb, key_id, key) {
                Ok(wire) => wire,
                Err(e) => {
                    if failing.insert(link.name.clone()) {
                        tracing::error!(link = link.name, "cannot encode heartbeat: {e}");
                    }
                    continue;
                }
            };
            match socket.send_to(&wire, link.send_to).await {
                Ok(_) => {
                    if failing.remove(&link.name) {
                        tracing::info!(link = link.name, "heartbeat sending works again");
                    }
                }
                Err(e) => {
                    if failing.insert(link.name.clone()) {
                        tracing::warn!(link = link.name, to = %link.send_to, "cannot send heartbeat: {e}");
                    }
                }
            }
        }
    }
}

async fn send_and_tick_loop(
    mut sender: PacketSender,
    core: Arc<Mutex<Membership>>,
    events_tx: mpsc::Sender<MembershipEvent>,
    mut updates: mpsc::Receiver<SenderUpdate>,
    cancel: CancellationToken,
) {
    let params = sender.cfg.params.clone();
    let mut keepalive = tokio::time::interval(params.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticker = tokio::time::interval(tick_period(&params));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = HashSet::new();
    let mut state_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(u) = updates.recv() => {
                if u.params.keepalive != sender.cfg.params.keepalive {
                    keepalive = tokio::time::interval(u.params.keepalive);
                    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                if tick_period(&u.params) != tick_period(&sender.cfg.params) {
                    ticker = tokio::time::interval(tick_period(&u.params));
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                }
                failing.retain(|name: &String| u.sockets.iter().any(|(l, _)| &l.name == name));
                sender.sockets = u.sockets;
                sender.cfg.links = sender.sockets.iter().map(|(l, _)| l.clone()).collect();
                sender.cfg.params = u.params;
                // The peer hears the new links at once, not a keepalive later.
                sender.send_round(&mut failing).await;
            }
            _ = keepalive.tick() => sender.send_round(&mut failing).await,
            // A changed group state (claim, release, hand-over) goes out at once: waiting for the next
            // keepalive would add up to a whole interval to every transition.
            changed = sender.group_state.changed(), if state_open => {
                // An error means the publisher is gone (daemon shutting down): keep beating on the
                // last state.
                state_open = changed.is_ok();
                if state_open {
                    sender.send_round(&mut failing).await;
                    keepalive.reset();
                }
            }
            _ = ticker.tick() => {
                let events = lock(&core).tick(Instant::now());
                publish(events, &events_tx, &cancel).await;
            }
        }
    }
    tracing::info!("heartbeat service stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_period_is_a_tenth_of_deadtime_within_bounds() {
        let mut params = MembershipParams {
            keepalive: Duration::from_secs(1),
            warntime: Duration::from_secs(10),
            deadtime: Duration::from_secs(30),
            initdead: Duration::from_secs(60),
            links: vec!["ring0".into()],
        };
        assert_eq!(tick_period(&params), MAX_TICK);
        params.deadtime = Duration::from_millis(300);
        assert_eq!(tick_period(&params), Duration::from_millis(30));
        params.deadtime = Duration::from_millis(20);
        assert_eq!(tick_period(&params), MIN_TICK);
    }

    #[test]
    fn name_clash_warning_is_rate_limited_and_counts_the_quiet_ones() {
        let t0 = Instant::now();
        let mut w = NameClashWarning::default();
        assert_eq!(w.record(t0), Some(1));
        for s in 1..=9 {
            assert_eq!(w.record(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(w.record(t0 + NAME_CLASH_WARN_INTERVAL), Some(10));
        assert_eq!(w.record(t0 + NAME_CLASH_WARN_INTERVAL + Duration::from_secs(1)), None);
    }
}
