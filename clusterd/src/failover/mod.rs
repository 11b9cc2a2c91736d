//! The failover sequencer: decides when this node starts or stops the resource group, in which order,
//! and coordinates with the peer through an opaque state blob carried in every heartbeat. It performs
//! no I/O: the daemon (or the seeded simulation in `tests/failover_sim.rs`) feeds it [`Input`]s and
//! carries out the returned [`Action`]s **in order**, reporting each `Run(step)` back with
//! `StepDone`/`StepFailed`.
//!
//! Safety rules (why they are what they are):
//! - A node promotes only with an UpToDate disk, or a Consistent one while the peer is known not to be
//!   newer (peer Outdated/Inconsistent on the replication link). A guard proves the peer down, not older,
//!   so a silent-peer takeover through a guard needs UpToDate (the replicator refuses to promote a
//!   Consistent disk anyway). Inconsistent, Outdated and Diskless disks are never promoted: that is where
//!   data loss comes from.
//! - While the peer's heartbeat is heard, nobody claims the group with the replication link down: both
//!   disks may say UpToDate although one missed the other's writes (generations are compared on connect).
//! - While the peer's heartbeat is heard, every acquisition is a *claim* the peer must acknowledge
//!   (or an explicit "released to you" after a handoff), so two live, connected nodes never start together.
//! - When the peer is silent, a node takes over only with proof that the peer does not serve: its disk
//!   was reported Outdated/Inconsistent, or the configured guard confirmed it (fence command succeeded;
//!   ping nodes reachable from here while the peer last said it could not reach them and did not hold
//!   the group). Without a guard it takes over only if `allow_unguarded_split` is set, and then it says
//!   loudly that both nodes may hold the group.
//! - Each acquisition bumps the group epoch. If both nodes end up holding (a healed split), the holder
//!   with the lower `(epoch, node name)` pair releases; this is logged as an error.
//!
//! - Ping nodes are not proof that a silent peer is down (a heartbeat-only partition leaves both sides
//!   reaching them); they keep an isolated node from taking over and move the group away from a holder
//!   that lost its uplink while the peer still has one (heartbeat's ipfail). Crash coverage needs a fence.
//!
//! Contract for the daemon: carry out `Run` actions one at a time in order (report each before starting
//! the next); send the latest `Publish` bytes in every heartbeat (nothing is published before the first
//! `step`/`tick`); call `tick` periodically (e.g. every 100 ms-1 s) for timeouts; answer `RunGuard` with
//! exactly one `GuardResult`; treat `Escalate` as "self-fence now"; on daemon start make sure no group
//! resource is active (a new `Sequencer` assumes nothing runs) and pass the persisted epoch.
//!
//! Handoff (standby/takeover/auto-failback) is a small protocol over the published state:
//! the holder stops fully (quiesce, block, stop target, remove VIP, unblock, demote), then publishes
//! `ReleasedTo { to, epoch }`; only then does the receiver start, at `epoch + 1`.

mod group_set;
mod sequencer;
mod state;
mod steps;
mod volumes;

pub use group_set::{MAX_GROUPS, NamedState, PeerStates, decode_state_set, encode_state_set};
pub use sequencer::Sequencer;
pub use state::{GroupState, Handoff, Phase, StateError, decode_state, encode_state};
pub use steps::{start_plan, stop_plan};
pub use volumes::{disk_view, volumes_view};

use std::time::Duration;

/// One action of the group's start/stop sequence, executed by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    PromoteVolumes,
    /// Insert the DROP rule for the iSCSI port on the VIP so initiators retry instead of getting RST.
    BlockPort,
    AddVip,
    /// A gratuitous ARP burst for the VIP (repeated once `garp_repeat_after` later).
    SendGarp,
    /// Start the iSCSI target with the same identity (IQN/LUN serials) as on the peer.
    StartTarget,
    UnblockPort,
    /// Sessions asked to log out, new commands refused, in-flight commands completed and flushed.
    QuiesceTarget,
    StopTarget,
    RemoveVip,
    DemoteVolumes,
}

/// The local replication view, worst over the group's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskView {
    UpToDate,
    Consistent,
    Outdated,
    Inconsistent,
    Diskless,
}

impl DiskView {
    pub fn name(self) -> &'static str {
        match self {
            DiskView::UpToDate => "UpToDate",
            DiskView::Consistent => "Consistent",
            DiskView::Outdated => "Outdated",
            DiskView::Inconsistent => "Inconsistent",
            DiskView::Diskless => "Diskless",
        }
    }

    /// A peer disk in this state cannot hold newer data than ours and cannot be promoted.
    pub fn cannot_serve(self) -> bool {
        matches!(self, DiskView::Outdated | DiskView::Inconsistent)
    }
}

/// What the replicator reports about the group's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalVolumes {
    pub disk: DiskView,
    /// The replication link to the peer is connected (all resources).
    pub connected: bool,
    /// The peer's disk as the replication link last reported it (`None` = never known).
    pub peer_disk: Option<DiskView>,
    /// The replication link reports the peer Primary (it is alive and holds the volumes).
    pub peer_primary: bool,
}

/// How a silent peer is proven not to serve the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardKind {
    None,
    /// `GuardResult.ok` = a ping node answers from here; the peer must also have published that it cannot
    /// reach them (and not be holding) for a takeover.
    PingNodes,
    /// `GuardResult.ok` = the fence command confirmed the peer is down.
    FenceCommand,
    /// `GuardResult.ok` = a ping node answers from here AND the fence command confirmed the peer down
    /// (the ping check keeps an isolated node from fencing the healthy one).
    Both,
}

impl GuardKind {
    pub fn uses_ping(self) -> bool {
        matches!(self, GuardKind::PingNodes | GuardKind::Both)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencerParams {
    pub me: String,
    /// `None` = a one-node cluster.
    pub peer: Option<String>,
    pub auto_failback: bool,
    pub preferred: Option<String>,
    pub initdead: Duration,
    pub degr_wfc_timeout: Duration,
    /// Longest a single start step may take before it counts as failed.
    pub start_timeout: Duration,
    /// Longest a single stop step may take before the node escalates (self-fence).
    pub stop_timeout: Duration,
    pub guard: GuardKind,
    pub allow_unguarded_split: bool,
    pub garp_repeat_after: Duration,
    pub portblock: bool,
    /// After a failed start this node does not offer to take the group for this long, so the peer takes it.
    pub failure_backoff: Duration,
    /// Pause between two guard runs that did not confirm.
    pub guard_retry: Duration,
    /// This daemon instance's heartbeat generation (persisted, bumped per start): orders our published
    /// states across restarts.
    pub generation: u64,
    /// Highest group epoch this node persisted (0 if unknown); epochs only grow.
    pub known_epoch: u64,
}

impl SequencerParams {
    /// Defaults modelled on heartbeat's (initdead 30 s) and DRBD's (degr-wfc-timeout 60 s).
    pub fn new(me: &str, peer: Option<&str>) -> Self {
        SequencerParams {
            me: me.to_string(),
            peer: peer.map(str::to_string),
            auto_failback: false,
            preferred: None,
            initdead: Duration::from_secs(30),
            degr_wfc_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
            guard: GuardKind::None,
            allow_unguarded_split: false,
            garp_repeat_after: Duration::from_secs(5),
            portblock: true,
            failure_backoff: Duration::from_secs(30),
            guard_retry: Duration::from_secs(5),
            generation: 1,
            known_epoch: 0,
        }
    }
}

/// Administrative commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCmd {
    /// Hand the group to the peer gracefully.
    Standby,
    /// Pull the group to this node gracefully.
    Takeover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    PeerAlive { generation: u64 },
    PeerDead,
    PeerRestarted { generation: u64 },
    /// The peer's `group_state` bytes from its latest heartbeat.
    PeerState(Vec<u8>),
    Volumes(LocalVolumes),
    /// Whether a ping node answers from here (published so the peer can use it as a guard).
    Uplink(bool),
    GuardResult { ok: bool, detail: String },
    StepDone(Step),
    StepFailed(Step, String),
    /// Admin: hand the group to the peer.
    Standby,
    /// Admin: pull the group here.
    Takeover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Step),
    /// Run the configured guard (ping check and/or fence command) and answer with `GuardResult`.
    RunGuard,
    /// A stop failed: run the escalation command (self-fence). The sequencer does nothing further.
    Escalate(String),
    /// Our state for the heartbeat's `group_state` field (send the latest one in every heartbeat).
    Publish(Vec<u8>),
    Reply { cmd: AdminCmd, result: Result<(), String> },
    Log(Level, String),
}

/// Read-only picture for `haadm status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencerStatus {
    pub phase: Phase,
    /// Who holds the group as far as this node knows: `(node, epoch)`.
    pub holder: Option<(String, u64)>,
    pub epoch: u64,
    pub peer_alive: bool,
    pub last_failure: Option<String>,
    /// Set while both nodes may hold the group (unguarded takeover, or a healed split being resolved).
    pub split_brain_warning: Option<String>,
    /// Why this node is not taking the group although nobody is known to hold it.
    pub waiting: Option<String>,
    pub handoff: Handoff,
}

#[cfg(test)]
mod tests;
