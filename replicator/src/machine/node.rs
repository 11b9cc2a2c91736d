//! The per-resource replication state machine. It owns the in-memory bitmap and activity log and decides
//! everything; it performs no I/O. The I/O layer (the tokio engine, or the seeded simulator) feeds it
//! [`Input`]s and carries out the returned [`Action`]s **in order**. Persist actions
//! (`PersistSuperblock`, `PersistBitmap`, `PersistAl`) must be complete (written and synced) before the
//! next action is carried out: that ordering is how "metadata before data" is expressed without callbacks.
//!
//! Invariants (checked by the simulator after every run):
//! - A write is acknowledged (`Action::Complete` Ok) only when the local disk has it AND the peer
//!   acknowledged it written, or when its blocks are recorded in the bitmap because no peer took it.
//!   "Written" may mean "in a volatile cache": a flush (Ok) means every write acknowledged before it was
//!   issued is stable on the local disk and on the peer's (a peer lost meanwhile gets those blocks
//!   marked for resync instead), and a FUA write is stable likewise when acknowledged (`barrier.rs`).
//! - A SyncTarget's disk is Inconsistent until it adopts the source's generation at the end; an
//!   Inconsistent disk is never promoted.
//! - Two writes touching the same 4 KiB block are never in flight together (so both replicas apply them
//!   in the same order); a resync read of a block excludes application writes to it until acknowledged.

use super::policy::Policies;
use super::state::{ConnState, DiskState, ReplState, Role};
use super::uuids::Uuids;
use crate::meta::activity_log::{ActivityLog, AlTransaction};
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::flags;
use crate::wire::auth::Secret;
use crate::wire::frame::Frame;
use crate::wire::version::VersionRange;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};

pub const BLOCK: u64 = 4096;
pub const SECTOR: u64 = 512;
/// Largest resync request (one RsData frame).
pub const RESYNC_CHUNK: u64 = 1024 * 1024;
/// State-frame flag: the sender's user paused the resync (`pause-sync`). Older peers ignore it.
pub const STATE_SYNC_PAUSED: u32 = 1 << 8;
/// State-frame flag: the sender runs an online verify against us. Older peers ignore it.
pub const STATE_VERIFYING: u32 = 1 << 9;
/// State-frame flag: the sender's disk was detached by its administrator, not by an error (`detach.rs`).
pub const STATE_DETACH_REQUESTED: u32 = 1 << 12;

/// Largest slice of an application write sent in one Data frame.
pub const MAX_DATA_FRAME: u64 = 1024 * 1024;

/// Timers of the replication link (DRBD's net options), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ping_int_ms: u64,
    pub ping_timeout_ms: u64,
    /// A peer that has not answered a request for `timeout_ms * ko_count` is expelled.
    pub timeout_ms: u64,
    pub ko_count: u64,
    pub connect_int_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { ping_int_ms: 10_000, ping_timeout_ms: 500, timeout_ms: 6_000, ko_count: 7, connect_int_ms: 2_000 }
    }
}

/// Static parameters of one resource on one node.
#[derive(Debug, Clone)]
pub struct NodeParams {
    pub node: String,
    pub peer: Option<String>,
    pub resource: String,
    pub data_size: u64,
    pub policies: Policies,
    pub secret: Option<Secret>,
    /// `fencing dont-care`: a Consistent disk attaches as UpToDate (DRBD does the same).
    pub fencing_dont_care: bool,
    /// `fencing resource-and-stonith`: a Primary that loses an UpToDate peer holds back every write
    /// acknowledgement (I/O "suspended", as DRBD says) until the peer is confirmed outdated or fenced
    /// ([`Input::Thaw`]) or the link is back; otherwise the peer could be promoted without writes we
    /// acknowledged.
    pub freeze_io_on_peer_loss: bool,
    /// Resync cap in bytes/s; `None` = unlimited.
    pub resync_rate: Option<u64>,
    /// Online verify cap in bytes/s compared (`syncer.verify-rate`); `None` = unlimited.
    pub verify_rate: Option<u64>,
    /// `syncer.c-min-rate`: while the application writes, the resync yields (a small window) only
    /// while its own rate is at least this; `None` (0 in ha.yaml) = it never yields.
    pub c_min_rate: Option<u64>,
    /// `c-plan-ahead` / `c-fill-target` / `c-max-rate`: the dynamic resync controller
    /// (`resync_controller.rs`; plan-ahead 0 = the static window above).
    pub resync_control: super::resync_controller::ControllerOptions,
    pub timing: Timing,
    pub verify_alg: String,
    /// `csums-alg` / `csums-for`: which resyncs compare digests before moving data (`csums.rs`).
    pub csums: super::csums::CsumsOptions,
    /// `on-io-error detach`: a local disk error drops the disk (see `detach.rs`); otherwise the
    /// failed request fails upward and its blocks are marked for resync.
    pub detach_on_io_error: bool,
    /// Versions offered in Hello: [`crate::wire::frame::PROTOCOLS`] (lower: a test emulating an older release).
    pub protocols: VersionRange,
    /// Replication protocol C (synchronous) or A (asynchronous, `protocol_a.rs`); agreed in Params.
    pub protocol: super::protocol_a::ReplProtocol,
}

/// The superblock fields the state machine owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub uuids: Uuids,
    pub flags: u32,
}

/// Why an application request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoFailure {
    #[error("resource is Secondary: writes are refused (promote it with `haadm primary`)")]
    NotPrimary,
    #[error("no up-to-date data reachable for this range (local disk {0}, peer not connected)")]
    NoData(DiskState),
    #[error("request [{offset}, +{len}) is beyond the device end {size}")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("local disk I/O error: {0}")]
    Io(String),
    #[error("resource is going down")]
    Down,
}

/// Everything that can happen to a node.
#[derive(Debug, Clone)]
pub enum Input {
    Connect { discard_my_data: bool },
    Disconnect,
    Primary { force: bool },
    Secondary,
    Outdate,
    /// `pause-sync` / `resume-sync`: hold the resync (either side may ask; the SyncSource stops sending).
    PauseSync,
    ResumeSync,
    /// Online verify against the peer (checked first with [`Node::check_verify`]); `repair`: resync
    /// the blocks found different from this node right after (see `repair.rs`).
    Verify { repair: bool },
    /// `invalidate` (local disk resynced fully from the peer) / `invalidate-remote` (the peer's disk
    /// resynced fully from here); checked first with [`Node::check_invalidate`].
    Invalidate { remote: bool },
    /// Release the write acknowledgements held since the peer was lost: the peer is confirmed
    /// outdated or fenced (or the administrator says so: `resume-io`).
    Thaw { reason: String },
    /// `resize`: grow to the smaller backing device of the two, or to `size` (see `resize.rs`).
    Resize { size: Option<u64>, assume_clean: bool },
    /// `new-current-uuid [--clear-bitmap]` (checked first with [`Node::check_new_current_uuid`]).
    NewCurrentUuid { clear_bitmap: bool },
    /// `split-brain --keep THIS-NODE`: connect as the survivor (checked with `check_resolve_keep_me`).
    ResolveKeepMe,
    /// `detach`: drop the local disk on request (checked first with [`Node::check_detach`]; `detach.rs`).
    Detach,
    Down,
    TransportUp { conn: u64 },
    TransportDown { conn: u64, reason: String },
    Frame { conn: u64, frame: Frame },
    Write { id: u64, offset: u64, data: Bytes, fua: bool },
    Flush { id: u64 },
    /// Replace the resource's persistent-reservation state (whole blob) on the Primary; completes like
    /// a protocol-C write (see `pr.rs`).
    PrUpdate { id: u64, blob: Bytes },
    /// Reads normally bypass the machine; this slow path serves reads when the local copy may be stale.
    Read { id: u64, offset: u64, len: u64 },
    DiskDone { token: u64, result: Result<Option<Bytes>, String> },
    Tick { now_ms: u64 },
    /// Latencies (µs) of application writes acknowledged since the last such input, measured by the
    /// I/O layer from the write's arrival to its completion; they steer the resync controller
    /// (`resync_controller.rs`).
    AppWriteLatencies(Vec<u32>),
    /// `haadm adjust`: new resync rate, timers, policies... (see `options.rs`).
    SetOptions(Box<super::options::LiveOptions>),
}

/// What the I/O layer must do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    Send { conn: u64, frame: Frame },
    /// Drop this transport connection.
    Close { conn: u64 },
    /// Keep (re)connecting to the peer every connect-int, or stop trying.
    SetConnecting(bool),
    DiskWrite { token: u64, offset: u64, data: Bytes, fua: bool },
    DiskRead { token: u64, offset: u64, len: u64 },
    DiskFlush { token: u64 },
    PersistSuperblock(Persisted),
    /// Write these bitmap pages (taken from [`Node::bitmap`]) and sync.
    PersistBitmap(Vec<u32>),
    PersistAl(AlTransaction),
    /// Store this persistent-reservation state in the superblock and sync (same rules as the other
    /// Persist actions: complete before the next action).
    PersistPr(Bytes),
    /// Rewrite the metadata for `data_size` bytes with [`Node::bitmap`] (crash-safe, synced; before
    /// the next action). Nothing beyond the old end is written or read before it.
    PersistResize { data_size: u64 },
    /// The answer to [`Input::Resize`]: the new size, or why not.
    ResizeDone(Result<u64, String>),
    Complete { id: u64, result: Result<(), IoFailure> },
    ReadDone { id: u64, result: Result<Bytes, IoFailure> },
    RunHandler(&'static str),
    Log { warn: bool, msg: String },
    /// Role/disk/connection changed (publish status, events).
    StateChanged,
    /// The disk was detached on request: close the data and metadata files once no disk request
    /// issued before is in flight ([`Node::disk_requests_in_flight`]); nothing touches them after.
    ReleaseDisk,
}

pub use super::snapshot::{InFlight, Snapshot, Stats, SyncProgress};

pub(crate) use super::purpose::Purpose;

/// An application write in flight.
#[derive(Debug, Clone)]
pub(crate) struct AppWrite {
    pub offset: u64,
    pub len: u64,
    pub extents: (u32, u32),
    pub local_done: bool,
    pub local_error: Option<String>,
    /// Data frames sent to the peer and not yet acknowledged (0 = none or all done).
    pub peer_pending: u32,
    /// The peer took part (so a full ack means the blocks are in sync).
    pub replicated: bool,
    pub sent_ms: u64,
    /// FUA: stable on both disks when it completes (owes nothing to a later flush).
    pub fua: bool,
    /// Protocol A: already acknowledged to the application, before the peer's WriteAck.
    pub early_acked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct PendingWrite {
    pub id: u64,
    pub offset: u64,
    pub data: Bytes,
    pub fua: bool,
}

/// Handshake progress of the current transport connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Hello,
    Challenge,
    Response,
    Params,
    Uuids,
    Bitmap,
    /// Decision taken; waiting for the peer's matching `State` confirmation.
    Confirm,
    Up,
}

#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub conn: u64,
    pub stage: Stage,
    pub my_challenge: [u8; 64],
    pub peer_uuids: Option<crate::wire::frame::UuidsMsg>,
    pub peer_words: Vec<u64>,
    pub peer_discard: bool,
    pub started_ms: u64,
    pub last_rx_ms: u64,
    pub ping_sent_ms: Option<u64>,
    pub expected_peer_repl: Option<ReplState>,
    /// Protocol version both sides agreed on in Hello (0 until then).
    pub proto: u32,
    /// Accepted while StandAlone after a split brain, only to be resolved (`split_brain.rs`).
    pub resolve_only: bool,
}

/// Resync as SyncSource.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resync {
    pub cursor: u64,
    /// offset → len of RsData in flight (reads pending or acks pending).
    pub inflight: BTreeMap<u64, u64>,
    pub total_blocks: u64,
    pub started_ms: u64,
    pub budget_bytes: f64,
    pub last_refill_ms: u64,
    pub finishing: bool,
    /// The source's own disk was flushed after the handshake: nothing is sent before (see
    /// `resync.rs`).
    pub stable: bool,
    /// Digests are compared before data moves (`csums.rs`).
    pub csums: Option<super::csums::CsumSource>,
    /// The resync's own rate over the last whole second (bytes/s), for `c-min-rate`.
    pub recent_rate: u64,
    pub rate_window_ms: u64,
    pub rate_window_bytes: u64,
}

/// The state machine for one resource on one node.
pub struct Node {
    pub(crate) p: NodeParams,
    pub(crate) role: Role,
    pub(crate) disk: DiskState,
    pub(crate) peer_role: Role,
    pub(crate) peer_disk: DiskState,
    pub(crate) conn: ConnState,
    pub(crate) repl: ReplState,
    pub(crate) persisted: Persisted,
    pub(crate) bitmap: Bitmap,
    pub(crate) al: ActivityLog,
    pub(crate) link: Option<Link>,
    pub(crate) discard_my_data: bool,
    pub(crate) split_brain: bool,
    /// Both sides of the last split brain found, until a handshake succeeds (`split_brain.rs`).
    pub(crate) split_brain_facts: Option<super::split_brain::SplitBrainFacts>,
    /// This node connects as a split brain's survivor, asking the peer to discard (`split_brain.rs`).
    pub(crate) resolve_keep_me: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) crashed_primary: bool,
    pub(crate) writes: BTreeMap<u64, AppWrite>,
    pub(crate) waiting: VecDeque<PendingWrite>,
    /// Flushes in flight (application flushes and barriers) by flush number.
    pub(crate) flushes: HashMap<u64, super::barrier::Flush>,
    /// Flush frames awaiting the peer's FlushAck: seq → flush number.
    pub(crate) peer_flush_seq: HashMap<u64, u64>,
    pub(crate) next_flush: u64,
    /// Acknowledged writes not yet covered by a flush of both disks, oldest first (see `barrier.rs`).
    pub(crate) unflushed: VecDeque<super::barrier::Unflushed>,
    pub(crate) unflushed_seq: u64,
    /// Remote reads: request seq → application read id.
    pub(crate) reads: HashMap<u64, u64>,
    /// Data frames awaiting the peer's ack: seq → application write id.
    pub(crate) pending_acks: HashMap<u64, u64>,
    pub(crate) tokens: HashMap<u64, Purpose>,
    pub(crate) next_token: u64,
    pub(crate) next_seq: u64,
    pub(crate) resync: Option<Resync>,
    pub(crate) rs_ctl: super::resync_controller::ResyncController,
    pub(crate) target_progress: Option<SyncProgress>,
    pub(crate) csum_target: Option<super::csums::CsumTarget>,
    pub(crate) stats: Stats,
    pub(crate) now_ms: u64,
    pub(crate) rng: u64,
    pub(crate) last_app_write_ms: u64,
    pub(crate) last_bm_flush_ms: u64,
    /// `pause-sync` on this node (kept until `resume-sync`; not persisted across restarts).
    pub(crate) user_paused: bool,
    /// The peer's `pause-sync`, from its State frames (bit [`STATE_SYNC_PAUSED`]).
    pub(crate) peer_paused: bool,
    /// A running online verify started here (VerifyS); see `verify.rs`.
    pub(crate) verify: Option<super::verify::Verify>,
    /// The peer runs an online verify against us (shown as VerifyT).
    pub(crate) peer_verifying: bool,
    /// The last verify's outcome and what the peer can do about it (`verify.rs`, `repair.rs`).
    pub(crate) verify_keeping: super::verify::VerifyKeeping,
    /// Set while write acknowledgements are held back (see [`NodeParams::freeze_io_on_peer_loss`]).
    pub(crate) frozen: Option<String>,
    pub(crate) held: Vec<(u64, Result<(), IoFailure>)>,
    /// Set in the step that detaches the disk: how many of that step's actions (up to and including
    /// the Outdated mark) may still write metadata.
    pub(crate) detach_mark: Option<usize>,
    /// Why the disk is Diskless (status, logs).
    pub(crate) detached: Option<super::detach::DetachCause>,
    /// The resource's persistent-reservation state as stored on this node (see `pr.rs`).
    pub(crate) pr: Bytes,
    pub(crate) pr_queue: VecDeque<(u64, Bytes)>,
    pub(crate) pr_inflight: Option<super::pr::PrInflight>,
    pub(crate) peer_protocols: Option<VersionRange>,
    pub(crate) resize: super::resize::ResizeState,
    /// Protocol A: epochs, flushes waiting for early-acknowledged writes, the peer's held writes.
    pub(crate) proto_a: super::protocol_a::AsyncState,
    pub(crate) out: Vec<Action>,
}

impl Node {
    /// Attach: the disk's metadata has been read (and the activity log applied to `bitmap` if the
    /// previous run did not shut down cleanly). `seed` feeds UUID generation (random in production,
    /// fixed in the simulator).
    pub fn new(p: NodeParams, persisted: Persisted, bitmap: Bitmap, al: ActivityLog, seed: u64) -> (Node, Vec<Action>) {
        assert_eq!(bitmap.blocks(), p.data_size.div_ceil(BLOCK), "bitmap does not match the data size");
        let f = persisted.flags;
        let disk = if f & flags::CONSISTENT == 0 {
            DiskState::Inconsistent
        } else if f & flags::OUTDATED != 0 {
            DiskState::Outdated
        } else if p.fencing_dont_care {
            DiskState::UpToDate
        } else {
            DiskState::Consistent
        };
        let crashed_primary = f & flags::PRIMARY_IND != 0 && f & flags::AL_CLEAN == 0 || f & flags::CRASHED_PRIMARY != 0;
        let rs_ctl = super::resync_controller::ResyncController::new(p.resync_control);
        let mut node = Node {
            p,
            role: Role::Secondary,
            disk,
            peer_role: Role::Unknown,
            peer_disk: DiskState::DUnknown,
            conn: ConnState::StandAlone,
            repl: ReplState::Off,
            persisted,
            bitmap,
            al,
            link: None,
            discard_my_data: false,
            split_brain: false,
            split_brain_facts: None,
            resolve_keep_me: false,
            last_error: None,
            crashed_primary,
            writes: BTreeMap::new(),
            waiting: VecDeque::new(),
            flushes: HashMap::new(),
            peer_flush_seq: HashMap::new(),
            next_flush: 1,
            unflushed: VecDeque::new(),
            unflushed_seq: 0,
            reads: HashMap::new(),
            pending_acks: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            next_seq: 1,
            resync: None,
            rs_ctl,
            target_progress: None,
            csum_target: None,
            stats: Stats::default(),
            now_ms: 0,
            rng: seed | 1,
            last_app_write_ms: 0,
            last_bm_flush_ms: 0,
            user_paused: false,
            peer_paused: false,
            verify: None,
            peer_verifying: false,
            verify_keeping: Default::default(),
            frozen: None,
            held: Vec::new(),
            detach_mark: None,
            detached: None,
            pr: Bytes::new(),
            pr_queue: VecDeque::new(),
            pr_inflight: None,
            peer_protocols: None,
            resize: Default::default(),
            proto_a: Default::default(),
            out: Vec::new(),
        };
        // The activity log (if the last run was not clean) is already folded into `bitmap`: write the
        // bitmap first, then mark the log clean. Remember a crash as Primary until the next successful
        // handshake consumes it (it decides the sync direction, rule 40).
        node.resize.capacity = node.p.data_size;
        node.bitmap.mark_all_pages_dirty();
        let pages = node.bitmap.take_dirty_pages();
        node.out.push(Action::PersistBitmap(pages));
        let mut fl = (node.persisted.flags & !flags::PRIMARY_IND) | flags::AL_CLEAN;
        if crashed_primary {
            fl |= flags::CRASHED_PRIMARY;
            node.log(true, "previous run ended while Primary: activity-log extents are marked out of sync".into());
        }
        node.persist_flags(fl);
        node.out.push(Action::StateChanged);
        let actions = std::mem::take(&mut node.out);
        (node, actions)
    }

    /// Feed one input; returns the actions to carry out in order.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Connect { discard_my_data } => self.on_connect_verb(discard_my_data),
            Input::Disconnect => self.on_disconnect_verb(),
            Input::Primary { force } => self.on_primary(force),
            Input::Secondary => self.on_secondary(),
            Input::Outdate => self.on_outdate(),
            Input::PauseSync => self.set_user_paused(true),
            Input::ResumeSync => self.set_user_paused(false),
            Input::Verify { repair } => self.on_verify_verb(repair),
            Input::Invalidate { remote } => self.on_invalidate(remote),
            Input::NewCurrentUuid { clear_bitmap } => self.on_new_current_uuid(clear_bitmap),
            Input::ResolveKeepMe => self.on_resolve_keep_me(),
            Input::Detach => self.on_detach_request(),
            Input::Thaw { reason } => self.thaw(&reason),
            Input::Resize { size, assume_clean } => self.on_resize_verb(size, assume_clean),
            Input::Down => self.on_down(),
            Input::TransportUp { conn } => self.on_transport_up(conn),
            Input::TransportDown { conn, reason } => self.on_transport_down(conn, &reason),
            Input::Frame { conn, frame } => self.on_frame(conn, frame),
            Input::Write { id, offset, data, fua } => self.on_app_write(id, offset, data, fua),
            Input::Flush { id } => self.on_app_flush(id),
            Input::PrUpdate { id, blob } => self.on_pr_update(id, blob),
            Input::Read { id, offset, len } => self.on_app_read(id, offset, len),
            Input::DiskDone { token, result } => self.on_disk_done(token, result),
            Input::Tick { now_ms } => self.on_tick(now_ms),
            Input::AppWriteLatencies(l) => l.into_iter().for_each(|us| self.rs_ctl.on_app_write_done(us)),
            Input::SetOptions(o) => self.set_options(*o),
        }
        let mut out = std::mem::take(&mut self.out);
        if self.diskless() {
            // A detached disk is not written again, its metadata included; what this step emitted up
            // to the detach (and the Outdated mark) still goes out.
            let keep = self.detach_mark.take().unwrap_or(0);
            let mut k = 0;
            out.retain(|a| {
                k += 1;
                k <= keep
                    || !matches!(
                        a,
                        Action::PersistSuperblock(_)
                            | Action::PersistBitmap(_)
                            | Action::PersistAl(_)
                            | Action::PersistPr(_)
                            | Action::PersistResize { .. }
                    )
            });
        }
        out
    }

    pub fn snapshot(&self) -> Snapshot {
        let paused = self.sync_paused();
        let sync = match self.repl {
            ReplState::SyncSource | ReplState::PausedSyncS => self.resync.as_ref().map(|r| SyncProgress {
                total_blocks: r.total_blocks,
                remaining_blocks: self.bitmap.count(),
                started_ms: r.started_ms,
                paused,
            }),
            ReplState::SyncTarget | ReplState::PausedSyncT => self.target_progress.map(|mut t| {
                t.remaining_blocks = self.bitmap.count();
                t.paused = paused;
                t
            }),
            ReplState::Established => self.verify.as_ref().map(|v| SyncProgress {
                total_blocks: self.p.data_size.div_ceil(BLOCK),
                remaining_blocks: self.p.data_size.saturating_sub(v.checked_bytes).div_ceil(BLOCK),
                started_ms: v.started_ms,
                paused: false,
            }),
            _ => None,
        };
        // A paused resync keeps its internal state (SyncSource/SyncTarget); status names it as DRBD does.
        let repl = match self.repl {
            ReplState::SyncSource if paused => ReplState::PausedSyncS,
            ReplState::SyncTarget if paused => ReplState::PausedSyncT,
            // A verify runs on an established link; status names the two sides as DRBD does.
            ReplState::Established if self.verify.is_some() => ReplState::VerifyS,
            ReplState::Established if self.peer_verifying => ReplState::VerifyT,
            r => r,
        };
        Snapshot {
            role: self.role,
            disk: self.disk,
            peer_role: self.peer_role,
            peer_disk: self.peer_disk,
            conn: self.conn,
            repl,
            uuids: self.persisted.uuids,
            out_of_sync_blocks: self.bitmap.count(),
            sync,
            split_brain: self.split_brain,
            split_brain_facts: self.split_brain_facts,
            last_error: self.last_error.clone(),
            stats: self.stats,
            pending_peer: self.writes.values().filter(|w| w.peer_pending > 0).count(),
            suspended: self.frozen.clone(),
            held_acks: self.held.len(),
            in_flight: self.in_flight(),
            peer_pr_stale: self.persisted.flags & flags::PEER_PR_STALE != 0,
            protocols: self.p.protocols,
            peer_protocols: self.peer_protocols,
            agreed_protocol: self.link.as_ref().map(|l| l.proto).filter(|&v| v > 0),
            size: self.p.data_size,
            last_verify: self.verify_keeping.last,
            detached: self.detached,
            async_promotion_needs_force: self.role != Role::Primary && self.async_promotion_guard(false).is_err(),
            replication_protocol: self.p.protocol.name(),
            async_lag: self.async_lag_status(),
            resync_controller: (self.p.resync_control.enabled() && matches!(self.repl, ReplState::SyncSource)).then(|| self.rs_ctl.status()),
        }
    }

    fn in_flight(&self) -> InFlight {
        let queued: u64 = self.waiting.iter().map(|w| w.data.len() as u64).sum();
        InFlight {
            app_requests: (self.writes.len() + self.waiting.len() + self.flushes.len() + self.reads.len()) as u64,
            app_write_bytes: self.writes.values().map(|w| w.len).sum::<u64>() + queued,
            disk_requests: self.tokens.len() as u64,
            peer_bytes: self.writes.values().filter(|w| w.peer_pending > 0).map(|w| w.len).sum(),
            resync_bytes: self.resync.as_ref().map_or(0, |r| r.inflight.values().sum()),
        }
    }

    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn persisted(&self) -> Persisted {
        self.persisted
    }

    pub fn params(&self) -> &NodeParams {
        &self.p
    }

    /// Reads may bypass the machine and go straight to the local disk.
    pub fn local_reads_ok(&self) -> bool {
        self.disk == DiskState::UpToDate
    }

    /// Nothing is in flight (used by `down` and by tests).
    pub fn idle(&self) -> bool {
        self.writes.is_empty()
            && self.waiting.is_empty()
            && self.flushes.is_empty()
            && self.tokens.is_empty()
            && self.pr_queue.is_empty()
            && self.pr_inflight.is_none()
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.check_link_timers();
        self.tick_resync_controller();
        self.pump_resync();
        self.pump_verify();
        self.barrier_on_tick();
        self.lag_on_tick();
        // Lazily write bitmap pages changed by resync progress or disconnected writes (stale set bits
        // only cost extra resync; set bits of live extents are covered by the activity log).
        if self.now_ms.saturating_sub(self.last_bm_flush_ms) >= 5_000 {
            self.last_bm_flush_ms = self.now_ms;
            let pages = self.bitmap.take_dirty_pages();
            if !pages.is_empty() {
                self.out.push(Action::PersistBitmap(pages));
            }
        }
    }

    fn on_disk_done(&mut self, token: u64, result: Result<Option<Bytes>, String>) {
        let Some(purpose) = self.tokens.remove(&token) else {
            self.log(true, format!("completion for unknown disk token {token}"));
            return;
        };
        if matches!(purpose, Purpose::PeerWrite { .. }) {
            // Releases the peer's writes held behind an epoch boundary (`protocol_a.rs`).
            self.peer_write_left_disk();
        }
        // A request of the peer's on a link still up (a detached Secondary stays connected) is answered
        // as failed below; the peer marks its blocks.
        let peer_asks = matches!(purpose, Purpose::PeerWrite { conn, .. } | Purpose::PeerFlush { conn, .. } | Purpose::PeerRead { conn, .. } if self.up_conn() == Some(conn));
        if let Err(e) = &result
            && self.local_io_failed(purpose.what(), e)
            && !peer_asks
        {
            match purpose {
                // Masked where the peer serves: a write completes on the peer's acknowledgement alone
                // (see `maybe_complete_write`), a flush on the peer's, a read is retried on the peer;
                // otherwise they fail (see `detach.rs`).
                Purpose::AppWrite { id } => self.app_write_local_done(id, result.map(|_| ())),
                Purpose::Flush { n } => {
                    let r = if self.peer_receiving() { Ok(()) } else { result.map(|_| ()) };
                    self.flush_local_done(n, r)
                }
                Purpose::AppRead { id, offset, len } => self.on_app_read(id, offset, len),
                // The next epoch must not wait for good (see `epoch_flush_done`).
                Purpose::EpochFlush => self.epoch_flush_done(result.map(|_| ())),
                // Requests for the peer, the resync and a verify: the link is gone or the verify
                // aborted; nothing to answer.
                _ => {}
            }
            return;
        }
        match purpose {
            Purpose::AppWrite { id } => self.app_write_local_done(id, result.map(|_| ())),
            Purpose::Flush { n } => self.flush_local_done(n, result.map(|_| ())),
            Purpose::AppRead { id, .. } => self.app_read_done(id, result),
            Purpose::PeerWrite { conn, seq, offset, len, fua } => self.peer_write_done(conn, seq, offset, len, fua, result.map(|_| ())),
            Purpose::PeerFlush { conn, seq } => {
                self.send(conn, Frame::FlushAck { seq, ok: result.is_ok() });
            }
            Purpose::PeerRead { conn, seq } => {
                let (ok, data) = match result {
                    Ok(Some(d)) => (true, d),
                    _ => (false, Bytes::new()),
                };
                self.send(conn, Frame::ReadReply { seq, ok, data });
            }
            Purpose::ResyncWrite { conn, offset, len } => self.resync_write_done(conn, offset, len, result.map(|_| ())),
            Purpose::ResyncRead { conn, offset } => self.resync_read_done(conn, offset, result),
            Purpose::ResyncFlush { conn } => self.resync_flush_done(conn, result.map(|_| ())),
            Purpose::VerifyLocal { offset } => self.verify_local_done(offset, result),
            Purpose::PeerVerifyRead { conn, offset, len } => self.peer_verify_read_done(conn, offset, len, result),
            Purpose::CsumLocal { conn, offset } => self.csum_local_done(conn, offset, result),
            Purpose::CsumPeerRead { conn, offset, len, alg } => self.csum_peer_read_done(conn, offset, len, alg, result),
            Purpose::CsumTargetFlush { conn } => self.csum_target_flush_done(conn, result.map(|_| ())),
            Purpose::EpochFlush => self.epoch_flush_done(result.map(|_| ())),
        }
    }

    // ---- helpers shared by the submodules ----------------------------------------------------------

    pub(crate) fn token(&mut self, purpose: Purpose) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        self.tokens.insert(t, purpose);
        t
    }

    pub(crate) fn send(&mut self, conn: u64, frame: Frame) {
        if let Frame::Data { data, .. } | Frame::RsData { data, .. } = &frame {
            self.stats.sent_bytes += data.len() as u64;
        }
        self.out.push(Action::Send { conn, frame });
    }

    pub(crate) fn log(&mut self, warn: bool, msg: String) {
        self.out.push(Action::Log { warn, msg });
    }

    pub(crate) fn changed(&mut self) {
        self.out.push(Action::StateChanged);
    }

    pub(crate) fn set_conn(&mut self, c: ConnState) {
        if self.conn != c {
            self.conn = c;
            self.changed();
        }
    }

    pub(crate) fn persist_flags(&mut self, fl: u32) {
        self.persisted.flags = fl;
        self.out.push(Action::PersistSuperblock(self.persisted));
    }

    pub(crate) fn fresh_uuid(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, which is all UUIDs need (uniqueness, not secrecy).
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D) & !0xF;
        if v == 0 { 0x10 } else { v }
    }

    pub(crate) fn in_range(&self, offset: u64, len: u64) -> Result<(), IoFailure> {
        match offset.checked_add(len) {
            Some(end) if end <= self.p.data_size => Ok(()),
            _ => Err(IoFailure::OutOfRange { offset, len, size: self.p.data_size }),
        }
    }

    pub(crate) fn fail_waiting(&mut self, why: IoFailure) {
        while let Some(w) = self.waiting.pop_front() {
            self.out.push(Action::Complete { id: w.id, result: Err(why.clone()) });
        }
    }

    /// Tell the peer our role and disk (it shows them in status and uses them for safety checks).
    /// The connection once its handshake is done.
    pub(crate) fn up_conn(&self) -> Option<u64> {
        self.link.as_ref().filter(|l| l.stage == Stage::Up).map(|l| l.conn)
    }

    pub(crate) fn broadcast_state(&mut self) {
        if let Some(conn) = self.up_conn() {
            let frame = Frame::State { role: self.role.code(), disk: self.disk.code(), flags: self.state_flags() };
            self.send(conn, frame);
        }
    }

    /// The State frame's flags: the replication state in the low byte, then [`STATE_SYNC_PAUSED`].
    pub(crate) fn state_flags(&self) -> u32 {
        u32::from(self.repl.code())
            | if self.user_paused { STATE_SYNC_PAUSED } else { 0 }
            | if self.verify.is_some() { STATE_VERIFYING } else { 0 }
            | self.repair_capability()
            | if self.detached == Some(super::detach::DetachCause::Requested) { STATE_DETACH_REQUESTED } else { 0 }
    }

    /// Either side's `pause-sync` holds the resync.
    pub fn sync_paused(&self) -> bool {
        self.user_paused || self.peer_paused
    }

    fn set_user_paused(&mut self, on: bool) {
        if self.user_paused == on {
            return;
        }
        self.user_paused = on;
        let what = if on { "paused by the user (resume-sync continues it)" } else { "resumed by the user" };
        self.log(false, format!("{}: resync {what}", self.p.resource));
        self.broadcast_state();
        self.changed();
        if !on {
            self.pump_resync();
        }
    }

    /// The peer's State frame told us whether it holds the resync.
    pub(crate) fn set_peer_paused(&mut self, on: bool) {
        if self.peer_paused == on {
            return;
        }
        self.peer_paused = on;
        self.changed();
        if !on {
            self.pump_resync();
        }
    }
}
