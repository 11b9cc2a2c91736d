//! The read-only picture a node publishes after each step ([`Snapshot`]) and its parts: what
//! status, events and the metrics show. Kept apart from the machine itself (`node.rs`).

use super::state::{ConnState, DiskState, ReplState, Role};
use super::uuids::Uuids;
use crate::wire::version::VersionRange;

/// Counters for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub written_bytes: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    pub resync_blocks_sent: u64,
    pub resync_blocks_received: u64,
    /// Split brains detected on this node (resolved by a policy or not), since the resource came up.
    pub split_brains: u64,
    /// Resync bytes found equal on both disks by their digests (`csums-alg`) and so not sent (counted
    /// on both sides).
    pub resync_csum_equal_bytes: u64,
    /// Protocol A: writes acknowledged before the peer's WriteAck (`protocol_a.rs`).
    pub async_early_acks: u64,
    /// Protocol A: completions of local writes not acknowledged early because the lag was beyond the
    /// bound (`max-lag` / `max-lag-time`); such a write completes on the peer's WriteAck.
    pub async_lag_waits: u64,
}

/// Requests in flight at the moment of a snapshot (drbd-reactor's upperpending / lowerpending /
/// apinflight / rsinflight), computed from the machine's own tables when the snapshot is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Application writes, flushes and machine-served reads not yet completed (queued ones included).
    pub app_requests: u64,
    /// Bytes of the application writes among them.
    pub app_write_bytes: u64,
    /// Requests issued to the local disk and not yet completed.
    pub disk_requests: u64,
    /// Bytes of application writes sent to the peer and not yet acknowledged.
    pub peer_bytes: u64,
    /// Bytes of resync data in flight (read from the disk or sent, not yet acknowledged).
    pub resync_bytes: u64,
}

/// Resync progress for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub total_blocks: u64,
    pub remaining_blocks: u64,
    pub started_ms: u64,
    pub paused: bool,
}

/// A read-only picture for status and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub role: Role,
    pub disk: DiskState,
    pub peer_role: Role,
    pub peer_disk: DiskState,
    pub conn: ConnState,
    pub repl: ReplState,
    pub uuids: Uuids,
    pub out_of_sync_blocks: u64,
    pub sync: Option<SyncProgress>,
    pub split_brain: bool,
    /// Both sides as the handshake that found the last split brain saw them (issue 15).
    pub split_brain_facts: Option<super::split_brain::SplitBrainFacts>,
    pub last_error: Option<String>,
    pub stats: Stats,
    pub pending_peer: usize,
    /// Why write acknowledgements are held back (`fencing resource-and-stonith` after losing the peer).
    pub suspended: Option<String>,
    /// Acknowledgements held back meanwhile.
    pub held_acks: usize,
    pub in_flight: InFlight,
    /// Our persistent-reservation state is newer than the peer's copy (sent when it reconnects).
    pub peer_pr_stale: bool,
    /// Our replication versions, the peer's last Hello's (kept after a disconnect), the link's agreed one.
    pub protocols: VersionRange,
    pub peer_protocols: Option<VersionRange>,
    pub agreed_protocol: Option<u32>,
    /// Usable size of the volume in bytes (changes with `resize`).
    pub size: u64,
    /// The last online verify run from this node since the resource came up (issue 18).
    pub last_verify: Option<VerifyOutcome>,
    /// Why the disk is Diskless: `detach` on request or `on-io-error detach` (None: not detached).
    pub detached: Option<super::detach::DetachCause>,
    /// Protocol A: a Secondary whose peer is not connected may miss writes the old Primary acknowledged;
    /// promotion needs `--force` (or `net.allow-async-failover`), so clusterd's failover leaves it alone.
    pub async_promotion_needs_force: bool,
    /// The resource's replication protocol, `'A'` or `'C'` (issue 18; both sides agree or the link is
    /// refused).
    pub replication_protocol: char,
    /// Protocol A: what the peer still lacks of what this node acknowledged (None under protocol C).
    pub async_lag: Option<AsyncLag>,
    /// The dynamic resync controller while a resync runs from this node with it on (issue 18).
    pub resync_controller: Option<ControllerStatus>,
}

/// Protocol A's lag (issue 18): writes acknowledged to the application before the peer acknowledged
/// them, and not yet acknowledged by it: what a failover to the peer would lose now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsyncLag {
    pub bytes: u64,
    pub writes: u64,
    /// Age in ms (machine clock) of the oldest of them since it was sent; 0 when there is none.
    pub oldest_age_ms: u64,
}

/// The dynamic resync controller as status shows it (`resync_controller.rs`), in whole units so the
/// snapshot stays comparable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerStatus {
    /// Bytes of resync data the controller lets be in flight now (0 during a probe).
    pub budget_bytes: u64,
    /// `c-fill-target`: what it allows with an idle application.
    pub fill_target_bytes: u64,
    /// The application's write p99 (µs) learnt from steps without resync I/O (None: not measured yet).
    pub baseline_p99_us: Option<u64>,
    /// The application's latest (smoothed) write p99 during the resync (None: no writes measured).
    pub last_p99_us: Option<u64>,
    /// The latest step held the resync back for the application: it shrank the budget because the
    /// p99 was beyond the bound, or it is probing the baseline with nothing in flight.
    pub throttling: bool,
    pub probing: bool,
}

/// How an online verify run from this node ended (machine clock: milliseconds since attach).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub started_ms: u64,
    pub finished_ms: u64,
    pub checked_bytes: u64,
    /// Bytes found different (whole 4 KiB blocks: a differing chunk is narrowed down block by block).
    pub found_bytes: u64,
    /// It ran to the end (not aborted by a lost link or a peer promoted meanwhile).
    pub completed: bool,
    /// `--repair`: the differences were handed to a resync from this node at once.
    pub repair: bool,
}
