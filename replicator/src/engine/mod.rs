//! The tokio-facing engine: a [`Volume`] per resource. The state machine ([`crate::machine::Node`]) runs
//! on one dedicated actor thread that also writes metadata (so "metadata before data" is plain program
//! order); data I/O goes to a small thread pool ([`disk`]); the replication link to tokio tasks
//! ([`transport`]). The API the iSCSI target calls — `read`, `write`, `flush`, `size` — is async.

pub mod actor;
pub mod bufpool;
pub mod disk;
pub mod meta_locator;
pub mod outbox;
pub mod transport;
mod save_blocks;

use crate::machine::{IoFailure, NodeParams, Snapshot};
use crate::meta::layout::MetaLocation;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Everything needed to bring one resource up on this node.
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub params: NodeParams,
    /// Backing device or file holding the data.
    pub data_path: PathBuf,
    pub meta: MetaLocation,
    /// This node's replication address, and the peer's (None: standalone, no replication).
    pub local_addr: Option<SocketAddr>,
    pub peer_addr: Option<SocketAddr>,
    /// Configured handler commands by name (`split-brain`, `pri-lost-after-sb`, ...).
    pub handlers: BTreeMap<String, String>,
    pub disk_threads: usize,
    /// Data I/O through O_DIRECT where offsets, lengths and buffers allow it (see [`disk`]).
    pub direct_io: bool,
    /// Connect to the peer right away (`up` does; tests may not).
    pub connect: bool,
    /// What a failed local disk request does besides failing (see [`IoErrorPolicy`]).
    pub on_io_error: IoErrorPolicy,
    /// Internal metadata: a small file recording where the superblock was last found or written (a
    /// byte offset), so that after the backing device grew — before or during `resize` — the metadata
    /// is still found (DRBD's "last known backing device" file). `None`: only the end is looked at.
    pub meta_locator: Option<PathBuf>,
}

/// DRBD's `on-io-error`: what a failed local disk request does. Nothing acknowledged is lost in any
/// case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoErrorPolicy {
    /// The request fails upward and the blocks it touched are marked out of sync (a resync repairs
    /// them from the peer).
    #[default]
    PassOn,
    /// As `PassOn`, and the `local-io-error` handler runs (at most once per [`IO_ERROR_HANDLER_EVERY`]).
    CallLocalIoErrorHandler,
    /// The disk is dropped (Diskless); a Primary with an UpToDate peer serves on from the peer's disk
    /// and the failed request is retried there (see `machine/detach.rs`).
    Detach,
}

/// A failing disk fails every request: the handler runs once, then again only after this long.
pub const IO_ERROR_HANDLER_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Errors of bringing a volume up or driving it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{what}: {source}")]
    Io { what: String, #[source] source: std::io::Error },
    #[error("metadata of {path}: {source}")]
    Meta { path: String, #[source] source: crate::meta::MetaError },
    #[error("{0}")]
    Refused(String),
    #[error("the resource's engine has stopped")]
    Stopped,
}

/// Administrative verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Primary { force: bool },
    Secondary,
    Connect { discard_my_data: bool },
    Disconnect,
    Outdate,
    /// `pause-sync` / `resume-sync`.
    PauseSync,
    ResumeSync,
    /// Online verify against the peer; `repair`: resync what differs from here right after (issue 18).
    Verify { repair: bool },
    /// `invalidate` / `invalidate-remote`.
    Invalidate { remote: bool },
    /// Release write acknowledgements held by `fencing resource-and-stonith` (peer outdated or fenced).
    Thaw { reason: &'static str },
    /// `new-current-uuid [--clear-bitmap]` (issue 15).
    NewCurrentUuid { clear_bitmap: bool },
    /// `split-brain --keep THIS-NODE` (issue 15): connect as the survivor, the peer discards.
    ResolveKeepMe,
    /// `detach` (issue 15): drop the local disk on request; answered once its files are closed.
    Detach,
}

pub(crate) enum Msg {
    Input(crate::machine::Input),
    Write { offset: u64, data: Bytes, fua: bool, reply: oneshot::Sender<Result<(), IoFailure>> },
    Flush { reply: oneshot::Sender<Result<(), IoFailure>> },
    PrUpdate { blob: Bytes, reply: oneshot::Sender<Result<(), IoFailure>> },
    Read { offset: u64, len: u64, reply: oneshot::Sender<Result<Bytes, IoFailure>> },
    Verb { verb: Verb, reply: oneshot::Sender<Result<String, String>> },
    Resize { size: Option<u64>, assume_clean: bool, reply: oneshot::Sender<Result<u64, String>> },
    Snapshot { reply: oneshot::Sender<Snapshot> },
    /// The blocks set in the bitmap, in order (split-brain `--save-victim`, issue 15).
    OutOfSyncBlocks { reply: oneshot::Sender<Vec<u64>> },
    Down { reply: oneshot::Sender<()> },
    SetOptions { options: Box<crate::machine::LiveOptions>, handlers: BTreeMap<String, String>, reply: oneshot::Sender<()> },
}

impl Shared {
    /// The data device while attached.
    pub(crate) fn data(&self) -> Option<Arc<disk::DataDisk>> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub(crate) struct Shared {
    pub name: String,
    /// Usable bytes; grows (or shrinks) with `resize`, published by the actor after the metadata.
    pub size: AtomicU64,
    pub tx: std::sync::mpsc::Sender<Msg>,
    /// The data device; `None` once a requested detach closed it.
    pub data: std::sync::RwLock<Option<Arc<disk::DataDisk>>>,
    pub local_reads: AtomicBool,
    /// A failed fast-path read is retried through the state machine (which detaches the disk and
    /// asks the peer) instead of failing.
    pub retry_failed_reads: bool,
    pub snapshot: watch::Receiver<Snapshot>,
    pub counters: VolumeCounters,
    /// The persistent-reservation state as stored on this node (kept current by the actor).
    pub pr: std::sync::Mutex<Bytes>,
}

/// Counters kept outside the state machine, for monitoring: application read bytes (most reads never
/// reach the machine), local disk errors and handler runs (both seen by the actor). Relaxed atomics:
/// one increment per read, nothing locked on the data path; handler runs are rare and take a lock.
#[derive(Debug, Default)]
pub struct VolumeCounters {
    read_bytes: AtomicU64,
    disk_errors: AtomicU64,
    handler_runs: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

/// [`VolumeCounters`] read out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Bytes returned to application reads (from the local disk or, where it is stale, the peer).
    pub read_bytes: u64,
    /// Failed local disk requests.
    pub disk_errors: u64,
    /// Configured handlers started, by handler name (`split-brain`, `local-io-error`, ...).
    pub handler_runs: BTreeMap<&'static str, u64>,
}

impl VolumeCounters {
    pub(crate) fn disk_error(&self) {
        self.disk_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handler_run(&self, name: &'static str) {
        *self.handler_runs.lock().unwrap_or_else(|p| p.into_inner()).entry(name).or_default() += 1;
    }

    fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            disk_errors: self.disk_errors.load(Ordering::Relaxed),
            handler_runs: self.handler_runs.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Handle to a running replicated volume. Cheap to clone.
#[derive(Clone)]
pub struct Volume {
    shared: Arc<Shared>,
}

impl Volume {
    /// Open the metadata and data, start the actor, the disk pool and the replication transport.
    pub async fn start(spec: VolumeSpec) -> Result<Volume, EngineError> {
        actor::start(spec).await.map(|shared| Volume { shared })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Usable size in bytes (changes with [`Volume::resize`]; watch [`Snapshot::size`]).
    pub fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// Online resize (`haadm resize`): with the peer connected, grow to the smaller of both backing
    /// devices, or set `size` explicitly (shrinking only with both nodes Secondary). `assume_clean`:
    /// the new area is not resynced. Ok: the new size in bytes; Err: why not (nothing changed, or —
    /// the link lost midway — the next handshake reconciles the sizes).
    pub async fn resize(&self, size: Option<u64>, assume_clean: bool) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Resize { size, assume_clean, reply }).map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the resource's engine has stopped".to_string())?
    }

    /// Read from the local disk when it is up to date (no round trip through the state machine);
    /// otherwise the state machine serves it (from the peer where the local copy is stale).
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, IoFailure> {
        let r = self.read_inner(offset, len).await;
        if let Ok(data) = &r {
            self.shared.counters.read_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        r
    }

    async fn read_inner(&self, offset: u64, len: u64) -> Result<Bytes, IoFailure> {
        let end = offset.checked_add(len);
        let size = self.size();
        if end.is_none_or(|e| e > size) {
            return Err(IoFailure::OutOfRange { offset, len, size });
        }
        if self.shared.local_reads.load(Ordering::Acquire)
            && let Some(file) = self.shared.data()
        {
            let local = tokio::task::spawn_blocking(move || file.read(offset, len))
                .await
                .map_err(|e| IoFailure::Io(e.to_string()))?
                .map_err(|e| IoFailure::Io(e.to_string()));
            if local.is_ok() || !self.shared.retry_failed_reads {
                return local;
            }
            // on-io-error detach: the machine reads again; a second failure detaches the disk and
            // the read is served by the peer.
        }
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Read { offset, len, reply })?;
        rx.await.map_err(|_| IoFailure::Down)?
    }

    /// Protocol C write: returns when the data is on the local disk and the peer's disk (or recorded
    /// as out of sync when no peer takes writes). `fua`: stable (not just written) on both.
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), IoFailure> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Write { offset, data, fua, reply })?;
        rx.await.map_err(|_| IoFailure::Down)?
    }

    /// Flush both disks (an empty flush waits for the peer too).
    pub async fn flush(&self) -> Result<(), IoFailure> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Flush { reply })?;
        rx.await.map_err(|_| IoFailure::Down)?
    }

    /// Replace the resource's persistent-reservation state (the whole blob). Completes like a protocol-C
    /// write: Ok once this node and the peer stored it, or this node stored it and recorded that the
    /// peer is owed it (no peer taking it). At most [`Volume::PR_CAPACITY`] bytes.
    pub async fn pr_update(&self, blob: Bytes) -> Result<(), IoFailure> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::PrUpdate { blob, reply })?;
        rx.await.map_err(|_| IoFailure::Down)?
    }

    /// The persistent-reservation state as stored on this node (empty: none yet).
    pub fn pr_state(&self) -> Bytes {
        self.shared.pr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Largest persistent-reservation state a resource holds (it lives in the superblock).
    pub const PR_CAPACITY: usize = crate::meta::superblock::PR_MAX;

    /// Run an administrative verb; Ok carries a human message, Err the refusal reason.
    pub async fn verb(&self, verb: Verb) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Verb { verb, reply }).map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the resource's engine has stopped".to_string())?
    }

    /// `haadm adjust`: replace the live options (resync rate, timers, policies, secret, verify-alg,
    /// fencing) and the handler commands of the running resource; returns once the actor took them.
    pub async fn set_options(&self, options: crate::machine::LiveOptions, handlers: BTreeMap<String, String>) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::SetOptions { options: Box::new(options), handlers, reply }).map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// The last published state (refreshed on state changes and every 20 ms): cheap, for polling.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot.borrow().clone()
    }

    /// The state as of now, taken by the actor after everything queued before this call (exact
    /// counters for `status`); the published snapshot if the engine has stopped.
    pub async fn current(&self) -> Snapshot {
        let (reply, rx) = oneshot::channel();
        if self.send(Msg::Snapshot { reply }).is_ok()
            && let Ok(s) = rx.await
        {
            return s;
        }
        self.snapshot()
    }

    /// Monitoring counters kept outside the state machine (the machine's own are in [`Snapshot::stats`]).
    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.shared.snapshot.clone()
    }

    /// Copy every block set in this node's bitmap to a new sparse image at `path` (same size as the
    /// volume, only those blocks written): what a split-brain victim changed, saved before it is
    /// discarded. Returns the number of blocks. The caller keeps writes away meanwhile (Secondary,
    /// StandAlone); the file is written as `path.partial`, synced, then renamed.
    pub async fn save_out_of_sync(&self, path: &std::path::Path) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::OutOfSyncBlocks { reply }).map_err(|e| e.to_string())?;
        let blocks = rx.await.map_err(|_| "the resource's engine has stopped".to_string())?;
        let data = self.shared.data().ok_or_else(|| format!("{}: the local disk is detached", self.name()))?;
        let (path, size) = (path.to_path_buf(), self.size());
        tokio::task::spawn_blocking(move || save_blocks::write_sparse_image(&data, size, &blocks, &path))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Graceful stop: demote if idle, write clean metadata, close the link, stop threads.
    pub async fn down(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Msg::Down { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, m: Msg) -> Result<(), IoFailure> {
        self.shared.tx.send(m).map_err(|_| IoFailure::Down)
    }
}
