//! Peer liveness from heartbeats: a plain state machine, no I/O and no clock of its own.
//!
//! The service feeds it authenticated packets and codec rejections with their arrival time
//! ([`Membership::step`]) and calls [`Membership::tick`] periodically; both return the
//! [`MembershipEvent`]s caused. Keeping time outside makes every rule testable with a fake clock.
//!
//! Rules (Linux-HA Heartbeat semantics, cluster-anchors §1):
//! - Each link is up while something authentic arrived on it within `deadtime`.
//! - The peer is dead only when EVERY link has been silent for `deadtime` (one cut cable must not
//!   cause a failover). Before the peer was ever heard, `initdead` applies instead and its expiry
//!   is reported as [`MembershipEvent::InitDeadExpired`].
//! - A packet arriving more than `warntime` after the previous one on a still-up link is reported
//!   as [`MembershipEvent::LateHeartbeat`]; the largest such gap per link is kept so deadtime can
//!   be tuned from real data (the Linux-HA FAQ recipe). Gaps across a link outage are not counted.
//! - Replay protection per peer generation: a LOWER generation than the current one is stale and
//!   dropped; a HIGHER one means the peer restarted (accepted, sequence tracking reset,
//!   [`MembershipEvent::PeerRestarted`]). Within a generation each link keeps a 64-entry sliding
//!   window over sequence numbers: a seq newer than any seen is accepted, an older one is accepted
//!   once if it is within 64 of the newest (UDP may reorder mildly, and dropping a delayed but
//!   authentic keepalive would only make liveness worse), and duplicates or older seqs are replays.
//! - The peer's `group_state` is taken only from the newest seq of the current generation, so a
//!   reordered packet never moves it backwards.
//! - On a broadcast link the kernel loops every packet we send back to us. A packet with our own
//!   node name AND our own current generation is such an echo: it is ignored and only counted in
//!   [`LinkStatus::own_echoes`], never as a drop, so drop counters keep meaning "something is
//!   wrong". Our name with ANOTHER generation is not an echo: a second node configured with our
//!   name, or a replay of our old traffic; it is dropped as [`DropCounts::from_self`].
//! - Packets from another cluster or from a node that is not our peer are dropped and counted
//!   (two clusters may share a segment and key).

use super::packet::{Heartbeat, PacketError, VersionRange, announced_versions};
use std::time::{Duration, Instant};

/// Timers and link names. Heartbeat's defaults: keepalive 1 s, deadtime 30 s, warntime
/// deadtime/2, initdead ≥ deadtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipParams {
    pub keepalive: Duration,
    pub warntime: Duration,
    pub deadtime: Duration,
    pub initdead: Duration,
    /// Link names; packets are attributed to the link they were received on.
    pub links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipParamsError {
    #[error("at least one heartbeat link is needed")]
    NoLinks,
    #[error("heartbeat link {0:?} is listed twice")]
    DuplicateLink(String),
    #[error("keepalive must be greater than zero")]
    ZeroKeepalive,
    #[error("deadtime ({deadtime:?}) must be more than twice keepalive ({keepalive:?})")]
    DeadtimeTooShort { deadtime: Duration, keepalive: Duration },
    #[error("warntime ({warntime:?}) must be at least keepalive and below deadtime ({deadtime:?})")]
    WarntimeOutOfRange { warntime: Duration, deadtime: Duration },
    #[error("initdead ({initdead:?}) must be at least deadtime ({deadtime:?})")]
    InitdeadTooShort { initdead: Duration, deadtime: Duration },
}

impl MembershipParams {
    /// Heartbeat's consistency rules (`heartbeat/config.c`), so nonsense timers fail at start-up.
    pub fn validate(&self) -> Result<(), MembershipParamsError> {
        if self.links.is_empty() {
            return Err(MembershipParamsError::NoLinks);
        }
        for (i, name) in self.links.iter().enumerate() {
            if self.links[..i].contains(name) {
                return Err(MembershipParamsError::DuplicateLink(name.clone()));
            }
        }
        if self.keepalive.is_zero() {
            return Err(MembershipParamsError::ZeroKeepalive);
        }
        if self.deadtime <= self.keepalive.saturating_mul(2) {
            return Err(MembershipParamsError::DeadtimeTooShort {
                deadtime: self.deadtime,
                keepalive: self.keepalive,
            });
        }
        if self.warntime < self.keepalive || self.warntime >= self.deadtime {
            return Err(MembershipParamsError::WarntimeOutOfRange {
                warntime: self.warntime,
                deadtime: self.deadtime,
            });
        }
        if self.initdead < self.deadtime {
            return Err(MembershipParamsError::InitdeadTooShort {
                initdead: self.initdead,
                deadtime: self.deadtime,
            });
        }
        Ok(())
    }
}

/// Why the codec refused a datagram (the core counts these per link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    BadMac,
    UnknownKey,
    UnsupportedVersion,
    /// Bad magic, wrong length, or a body that does not decode.
    Malformed,
}

impl RejectReason {
    pub fn from_packet_error(err: &PacketError) -> RejectReason {
        match err {
            PacketError::BadMac => RejectReason::BadMac,
            PacketError::UnknownKey { .. } => RejectReason::UnknownKey,
            PacketError::UnsupportedVersion { .. } => RejectReason::UnsupportedVersion,
            PacketError::BadMagic
            | PacketError::Truncated
            | PacketError::TrailingBytes { .. }
            | PacketError::Body(_) => RejectReason::Malformed,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MembershipInput {
    /// An authenticated packet received on `link` at `at`.
    Packet { link: String, from: Heartbeat, at: Instant },
    /// A datagram on `link` that the codec refused.
    Rejected {
        link: String,
        reason: RejectReason,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    PeerAlive {
        generation: u64,
    },
    /// Every link silent for deadtime.
    PeerDead,
    PeerRestarted {
        old: u64,
        new: u64,
    },
    LinkUp(String),
    LinkDown(String),
    LateHeartbeat {
        link: String,
        gap: Duration,
    },
    /// The peer was never heard within initdead of start-up.
    InitDeadExpired,
}

/// Dropped packets per reason on one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub bad_mac: u64,
    pub unknown_key: u64,
    pub unsupported_version: u64,
    pub malformed: u64,
    pub replay: u64,
    pub stale_generation: u64,
    pub wrong_cluster: u64,
    /// Our own node name but not our own generation: another node uses our name, or old
    /// traffic of ours is replayed. (Our own broadcast echoes are not drops; see `own_echoes`.)
    pub from_self: u64,
    /// Right cluster and key, but neither us nor our configured peer.
    pub unknown_node: u64,
}

impl DropCounts {
    /// Each count with its reason's name (the `reason` label of the metric and status's detail).
    pub fn by_reason(&self) -> [(&'static str, u64); 9] {
        [
            ("bad_mac", self.bad_mac),
            ("unknown_key", self.unknown_key),
            ("unsupported_version", self.unsupported_version),
            ("malformed", self.malformed),
            ("replay", self.replay),
            ("stale_generation", self.stale_generation),
            ("wrong_cluster", self.wrong_cluster),
            ("from_self", self.from_self),
            ("unknown_node", self.unknown_node),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason().iter().fold(0u64, |acc, (_, n)| acc.saturating_add(*n))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub name: String,
    pub up: bool,
    /// Time since the last accepted packet on this link; `None` if never.
    pub last_heard_ago: Option<Duration>,
    /// Largest gap between consecutive accepted packets while the link was up.
    pub largest_gap: Duration,
    pub packets_ok: u64,
    pub dropped: DropCounts,
    /// Our own packets looped back by the kernel (broadcast links); expected, not a drop.
    pub own_echoes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLiveness {
    /// Not heard yet, initdead not expired.
    Waiting,
    Alive,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipStatus {
    pub peer: String,
    pub liveness: PeerLiveness,
    /// The peer's current generation, once heard.
    pub generation: Option<u64>,
    /// The `group_state` of the peer's newest accepted packet.
    pub group_state: Option<Vec<u8>>,
    pub links: Vec<LinkStatus>,
    /// The peer's configuration digest from its newest accepted packet; `None` when not heard or
    /// the peer does not send one (an older release): unknown, not a mismatch.
    pub peer_config_digest: Option<String>,
    /// This node's digest as its heartbeats carry it (set by the service, not the core).
    pub local_config_digest: Option<String>,
    /// The versions the peer's newest accepted packet announced (issue 15 upgrade).
    pub peer_versions: Option<PeerVersions>,
}

impl MembershipStatus {
    /// `Some(true)` when both digests are known and differ; `None` while either is unknown.
    pub fn config_differs(&self) -> Option<bool> {
        match (&self.local_config_digest, &self.peer_config_digest) {
            (Some(a), Some(b)) => Some(a != b),
            _ => None,
        }
    }
}

/// What the peer's heartbeats say about its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVersions {
    /// Heartbeat versions it speaks (1..=1 for a release that predates the fields).
    pub heartbeat: VersionRange,
    /// The highest heartbeat version both nodes speak: what this node sends it.
    pub agreed: u32,
    /// Its software version; "" from a release that predates the field.
    pub software: String,
}

impl PeerVersions {
    /// `None` when the ranges share no version (the receive loop drops such packets first).
    pub fn of(hb: &Heartbeat) -> Option<PeerVersions> {
        let agreed = super::packet::agreed_version(super::packet::VERSIONS, hb).ok()?;
        Some(PeerVersions { heartbeat: announced_versions(hb), agreed, software: hb.software_version.clone() })
    }
}

impl MembershipStatus {
    pub fn peer_alive(&self) -> bool {
        self.liveness == PeerLiveness::Alive
    }

    pub fn link(&self, name: &str) -> Option<&LinkStatus> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Sliding window of the last 64 sequence numbers below and including the newest seen.
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    newest: Option<u64>,
    /// Bit i set = `newest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    const SIZE: u64 = 64;

    /// True (and records it) if `seq` was not accepted before and is not older than the window.
    fn accept(&mut self, seq: u64) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            self.seen = 1;
            return true;
        };
        if seq > newest {
            let shift = seq - newest;
            self.seen = if shift >= Self::SIZE { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.newest = Some(seq);
            return true;
        }
        let back = newest - seq;
        if back >= Self::SIZE {
            return false;
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[derive(Debug)]
struct LinkState {
    name: String,
    up: bool,
    last_heard: Option<Instant>,
    largest_gap: Duration,
    packets_ok: u64,
    dropped: DropCounts,
    own_echoes: u64,
    window: ReplayWindow,
}

/// Liveness of the one peer, per link and overall. See the module docs for the rules.
#[derive(Debug)]
pub struct Membership {
    params: MembershipParams,
    cluster: String,
    me: String,
    peer: String,
    /// Our own boot generation, once known: tells our looped-back broadcasts from a node that
    /// wrongly uses our name.
    own_generation: Option<u64>,
    start: Instant,
    links: Vec<LinkState>,
    liveness: PeerLiveness,
    generation: Option<u64>,
    /// Newest seq accepted in `generation` on any link (decides whose group_state is current).
    newest_seq: Option<u64>,
    group_state: Option<Vec<u8>>,
    config_digest: Option<String>,
    peer_versions: Option<PeerVersions>,
    /// After a live change of the links (`haadm adjust`), the peer is not declared dead before this
    /// (initdead after the change):
    /// new or re-addressed links had no chance to hear it yet, and the peer may still be adjusting.
    relink_grace_until: Option<Instant>,
}

impl Membership {
    /// `cluster`: packets naming another cluster are dropped. `start`: when initdead begins.
    pub fn new(params: MembershipParams, cluster: &str, me: &str, peer: &str, start: Instant) -> Membership {
        let links = params.links.iter().map(|name| LinkState::silent(name)).collect();
        Membership {
            params,
            cluster: cluster.to_string(),
            me: me.to_string(),
            peer: peer.to_string(),
            own_generation: None,
            start,
            links,
            liveness: PeerLiveness::Waiting,
            generation: None,
            newest_seq: None,
            group_state: None,
            config_digest: None,
            peer_versions: None,
            relink_grace_until: None,
        }
    }

    /// Takes new timers and links while running (`haadm adjust`). Links kept by name keep their state
    /// and counters unless listed in `reset` (their addresses changed: what they heard says nothing
    /// about the new path); new links start silent. If any link is new or reset, the peer cannot be
    /// declared dead for `initdead` (the time links are given at start-up to come up), so a change made on one node before the other does not
    /// look like a dead peer. Returns the events caused (links that went away or were reset while up
    /// are reported down). `params` must have passed [`MembershipParams::validate`].
    pub fn reconfigure(&mut self, params: MembershipParams, reset: &[String], now: Instant) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let mut old: Vec<LinkState> = std::mem::take(&mut self.links);
        let mut fresh = false;
        for name in &params.links {
            let kept = old.iter().position(|l| &l.name == name).map(|i| old.swap_remove(i));
            let link = match kept {
                Some(l) if !reset.contains(name) => l,
                other => {
                    if other.is_some_and(|l| l.up) {
                        events.push(MembershipEvent::LinkDown(name.clone()));
                    }
                    fresh = true;
                    LinkState::silent(name)
                }
            };
            self.links.push(link);
        }
        events.extend(old.into_iter().filter(|l| l.up).map(|l| MembershipEvent::LinkDown(l.name)));
        if fresh {
            self.relink_grace_until = Some(now + params.initdead);
        }
        self.params = params;
        events
    }

    /// Sets this node's own boot generation, so packets carrying our name and this generation
    /// are recognised as our own broadcasts coming back. Without it every packet with our name
    /// counts as [`DropCounts::from_self`].
    pub fn with_own_generation(mut self, generation: u64) -> Membership {
        self.own_generation = Some(generation);
        self
    }

    /// True if `hb` carries our node name (and cluster) but not our generation: the signature of
    /// a second node configured with our name, or of replayed old traffic of ours.
    pub fn is_name_clash(&self, hb: &Heartbeat) -> bool {
        hb.cluster == self.cluster && hb.node == self.me && Some(hb.generation) != self.own_generation
    }

    pub fn params(&self) -> &MembershipParams {
        &self.params
    }

    /// Applies one received (or refused) datagram. Inputs for unknown link names are ignored.
    pub fn step(&mut self, input: MembershipInput) -> Vec<MembershipEvent> {
        match input {
            MembershipInput::Rejected { link, reason, at: _ } => {
                if let Some(l) = self.link_mut(&link) {
                    let counter = match reason {
                        RejectReason::BadMac => &mut l.dropped.bad_mac,
                        RejectReason::UnknownKey => &mut l.dropped.unknown_key,
                        RejectReason::UnsupportedVersion => &mut l.dropped.unsupported_version,
                        RejectReason::Malformed => &mut l.dropped.malformed,
                    };
                    *counter = counter.saturating_add(1);
                }
                Vec::new()
            }
            MembershipInput::Packet { link, from, at } => self.accept_packet(&link, from, at),
        }
    }

    fn accept_packet(&mut self, link: &str, hb: Heartbeat, at: Instant) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let Some(index) = self.links.iter().position(|l| l.name == link) else {
            return events;
        };
        if hb.cluster == self.cluster && hb.node == self.me && Some(hb.generation) == self.own_generation {
            let l = &mut self.links[index];
            l.own_echoes = l.own_echoes.saturating_add(1);
            return events;
        }
        let drop_reason = if hb.cluster != self.cluster {
            Some(DropKind::WrongCluster)
        } else if hb.node == self.me {
            Some(DropKind::FromSelf)
        } else if hb.node != self.peer {
            Some(DropKind::UnknownNode)
        } else {
            match self.generation {
                Some(current) if hb.generation < current => Some(DropKind::StaleGeneration),
                _ => None,
            }
        };
        if let Some(kind) = drop_reason {
            self.links[index].count_drop(kind);
            return events;
        }
        match self.generation {
            Some(old) if hb.generation > old => {
                events.push(MembershipEvent::PeerRestarted {
                    old,
                    new: hb.generation,
                });
                for l in &mut self.links {
                    l.window = ReplayWindow::default();
                }
                self.newest_seq = None;
                self.generation = Some(hb.generation);
            }
            Some(_) => {}
            None => self.generation = Some(hb.generation),
        }

        let warntime = self.params.warntime;
        let l = &mut self.links[index];
        if !l.window.accept(hb.seq) {
            l.count_drop(DropKind::Replay);
            return events;
        }
        l.packets_ok = l.packets_ok.saturating_add(1);
        if let Some(last) = l.last_heard {
            let gap = at.saturating_duration_since(last);
            if l.up {
                l.largest_gap = l.largest_gap.max(gap);
                if gap > warntime {
                    events.push(MembershipEvent::LateHeartbeat {
                        link: l.name.clone(),
                        gap,
                    });
                }
            }
        }
        // Inputs from several receive tasks may arrive slightly out of time order.
        l.last_heard = Some(l.last_heard.map_or(at, |last| last.max(at)));
        if !l.up {
            l.up = true;
            events.push(MembershipEvent::LinkUp(l.name.clone()));
        }

        if self.newest_seq.is_none_or(|newest| hb.seq > newest) {
            self.newest_seq = Some(hb.seq);
            self.peer_versions = PeerVersions::of(&hb);
            self.group_state = Some(hb.group_state);
            self.config_digest = hb.config_digest.filter(|d| !d.is_empty());
        }
        if self.liveness != PeerLiveness::Alive {
            self.liveness = PeerLiveness::Alive;
            events.push(MembershipEvent::PeerAlive {
                generation: hb.generation,
            });
        }
        events
    }

    /// Applies the timers at `now`: link deadtime, peer deadtime, initdead.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let deadtime = self.params.deadtime;
        for l in &mut self.links {
            let silent = l
                .last_heard
                .is_none_or(|last| now.saturating_duration_since(last) >= deadtime);
            if l.up && silent {
                l.up = false;
                events.push(MembershipEvent::LinkDown(l.name.clone()));
            }
        }
        match self.liveness {
            PeerLiveness::Alive
                if self.links.iter().all(|l| !l.up) && self.relink_grace_until.is_none_or(|t| now >= t) =>
            {
                self.liveness = PeerLiveness::Dead;
                events.push(MembershipEvent::PeerDead);
            }
            PeerLiveness::Waiting if now.saturating_duration_since(self.start) >= self.params.initdead => {
                self.liveness = PeerLiveness::Dead;
                events.push(MembershipEvent::InitDeadExpired);
            }
            _ => {}
        }
        events
    }

    pub fn status(&self, now: Instant) -> MembershipStatus {
        MembershipStatus {
            peer: self.peer.clone(),
            liveness: self.liveness,
            generation: self.generation,
            group_state: self.group_state.clone(),
            peer_config_digest: self.config_digest.clone(),
            local_config_digest: None,
            peer_versions: self.peer_versions.clone(),
            links: self
                .links
                .iter()
                .map(|l| LinkStatus {
                    name: l.name.clone(),
                    up: l.up,
                    last_heard_ago: l.last_heard.map(|t| now.saturating_duration_since(t)),
                    largest_gap: l.largest_gap,
                    packets_ok: l.packets_ok,
                    dropped: l.dropped.clone(),
                    own_echoes: l.own_echoes,
                })
                .collect(),
        }
    }

    /// The heartbeat version to send the peer: the highest common one once heard, our lowest before.
    pub fn send_version(&self) -> u32 {
        self.peer_versions.as_ref().map_or(super::packet::VERSIONS.min, |v| v.agreed)
    }

    pub fn peer_group_state(&self) -> Option<&[u8]> {
        self.group_state.as_deref()
    }

    fn link_mut(&mut self, name: &str) -> Option<&mut LinkState> {
        self.links.iter_mut().find(|l| l.name == name)
    }
}

#[derive(Debug, Clone, Copy)]
enum DropKind {
    WrongCluster,
    FromSelf,
    UnknownNode,
    StaleGeneration,
    Replay,
}

impl LinkState {
    fn silent(name: &str) -> LinkState {
        LinkState {
            name: name.to_string(),
            up: false,
            last_heard: None,
            largest_gap: Duration::ZERO,
            packets_ok: 0,
            dropped: DropCounts::default(),
            own_echoes: 0,
            window: ReplayWindow::default(),
        }
    }

    fn count_drop(&mut self, kind: DropKind) {
        let d = &mut self.dropped;
        let counter = match kind {
            DropKind::WrongCluster => &mut d.wrong_cluster,
            DropKind::FromSelf => &mut d.from_self,
            DropKind::UnknownNode => &mut d.unknown_node,
            DropKind::StaleGeneration => &mut d.stale_generation,
            DropKind::Replay => &mut d.replay,
        };
        *counter = counter.saturating_add(1);
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
