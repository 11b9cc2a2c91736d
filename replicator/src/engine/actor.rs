//! The actor thread: owns the state machine, the metadata store and the request/reply bookkeeping.
//! It receives [`Msg`]s (application requests, verbs, disk completions, transport events), steps the
//! machine and carries out its actions in order. Metadata writes happen inline on this thread, which
//! is what guarantees they are durable before any later action (a data write, an ack) is issued.

use super::bufpool::BufPool;
use super::disk::{DataDisk, DiskJob, DiskPool};
use super::transport::{self, Outboxes, TransportCmd, TransportSpec};
use super::{EngineError, IoErrorPolicy, Msg, Shared, Verb, VolumeSpec, IO_ERROR_HANDLER_EVERY};
use crate::machine::{Action, Input, IoFailure, Node, Persisted, Snapshot};
use crate::wire::frame::Frame;
use crate::meta::store::{FileDevice, MetaStore};
use crate::meta::layout::MetaLocation;
use crate::machine::uuids::Uuids;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc::UnboundedSender, oneshot, watch};
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(20);

/// Messages stepped in one turn before the frames they produced are written (and the tick checked).
const BATCH: usize = 64;

/// Where a verb's answer goes.
type VerbReply = oneshot::Sender<Result<String, String>>;

struct Actor {
    node: Node,
    /// The metadata and the data device, for small writes done inline (see [`Actor::execute`]);
    /// both `None` once a requested detach closed them (`release_disk`).
    store: Option<MetaStore>,
    disk: DiskPool,
    data: Option<Arc<DataDisk>>,
    /// A requested detach waits for in-flight disk requests before closing the files; its caller
    /// gets the answer then.
    releasing: bool,
    detach_reply: Option<(VerbReply, Result<String, String>)>,
    /// Completions of inline writes, stepped after the action list that issued them.
    inline_done: Vec<Input>,
    transport: Option<UnboundedSender<TransportCmd>>,
    /// Where frames go (see `outbox.rs`), and the frames of the current batch: written once the
    /// actor has nothing more to step right now, so one batch costs one `writev`.
    outboxes: Option<Outboxes>,
    pending_sends: Vec<(u64, Frame)>,
    shutdown: CancellationToken,
    shared: Arc<Shared>,
    snap_tx: watch::Sender<Snapshot>,
    handlers: BTreeMap<String, String>,
    writes: HashMap<u64, oneshot::Sender<Result<(), IoFailure>>>,
    /// When each application write entered the actor, and the latencies (µs) of those acknowledged
    /// since the last tick: fed to the machine's resync controller (`Input::AppWriteLatencies`;
    /// measured here because the machine's clock is in milliseconds).
    write_started: HashMap<u64, Instant>,
    write_latencies: Vec<u32>,
    reads: HashMap<u64, oneshot::Sender<Result<Bytes, IoFailure>>>,
    next_id: u64,
    start: Instant,
    on_io_error: IoErrorPolicy,
    /// Last local disk error seen (logged once per burst) and the last handler run.
    last_io_error: Option<Instant>,
    last_io_handler: Option<Instant>,
    /// The caller of a resize the machine is carrying out.
    resize_reply: Option<oneshot::Sender<Result<u64, String>>>,
    /// Where internal metadata's last known place is recorded (see `meta_locator`).
    meta_locator: Option<std::path::PathBuf>,
}

pub(crate) async fn start(spec: VolumeSpec) -> Result<Arc<Shared>, EngineError> {
    let name = spec.params.resource.clone();
    let io = |what: String| move |source| EngineError::Io { what, source };
    let bufs = BufPool::new();
    let data = DataDisk::open(&spec.data_path, spec.direct_io, bufs.clone())
        .map_err(io(format!("open data device {}", spec.data_path.display())))?;
    let data_dev_size = device_size(data.file()).map_err(io(format!("size of {}", spec.data_path.display())))?;
    let meta_path = match &spec.meta {
        MetaLocation::Internal => spec.data_path.clone(),
        MetaLocation::External { path, .. } => path.clone(),
    };
    let meta_err = |source| EngineError::Meta { path: meta_path.display().to_string(), source };
    let dev = FileDevice::open(&meta_path).map_err(meta_err)?;
    let locator = spec.meta_locator.as_deref().filter(|_| spec.meta == MetaLocation::Internal);
    let last_known = locator.and_then(super::meta_locator::read);
    let (store, report) = MetaStore::open_at(Box::new(dev), data_dev_size, &spec.meta, last_known).map_err(meta_err)?;
    if let Some(path) = locator {
        super::meta_locator::write(path, store.layout().sb_offset).map_err(io(format!("record the metadata's place in {}", path.display())))?;
    }
    for line in report.lines() {
        tracing::warn!(resource = %name, "{line}");
    }
    let sb = store.superblock().clone();
    if sb.resource != name {
        return Err(EngineError::Refused(format!(
            "metadata on {} belongs to resource `{}`, not `{name}` (wrong meta-disk index?)",
            meta_path.display(),
            sb.resource
        )));
    }
    let mut params = spec.params.clone();
    params.data_size = sb.data_size;
    // The volume's policy is the one source of truth for the machine's detach behaviour.
    params.detach_on_io_error = spec.on_io_error == IoErrorPolicy::Detach;
    let persisted = Persisted {
        uuids: Uuids { current: sb.current_uuid, bitmap: sb.bitmap_uuid, history: sb.history_uuids },
        flags: sb.flags,
    };
    let al = store.activity_log();
    let bitmap = store.bitmap().clone();
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| EngineError::Refused(format!("no randomness: {e}")))?;
    let (mut node, first) = Node::new(params.clone(), persisted, bitmap, al, u64::from_le_bytes(seed));
    node.load_pr(Bytes::from(sb.pr.clone()));

    let (tx, rx) = channel::<Msg>();
    let (snap_tx, snap_rx) = watch::channel(node.snapshot());
    let data = Arc::new(data);
    let shared = Arc::new(Shared {
        name: name.clone(),
        size: sb.data_size.into(),
        tx: tx.clone(),
        data: std::sync::RwLock::new(Some(Arc::clone(&data))),
        local_reads: node.local_reads_ok().into(),
        retry_failed_reads: spec.on_io_error == IoErrorPolicy::Detach,
        snapshot: snap_rx,
        counters: Default::default(),
        pr: std::sync::Mutex::new(Bytes::from(sb.pr.clone())),
    });
    let done_tx = tx.clone();
    let disk = DiskPool::start(Arc::clone(&data), spec.disk_threads.max(1), move |i| {
        let _ = done_tx.send(Msg::Input(i));
    })
    .map_err(io("start disk threads".into()))?;
    let shutdown = CancellationToken::new();
    let transport = match (spec.local_addr, spec.peer_addr, params.peer.as_deref()) {
        (Some(local), Some(peer), Some(peer_name)) => {
            let t_tx = tx.clone();
            let to_actor: Arc<dyn Fn(Input) + Send + Sync> = Arc::new(move |i| {
                let _ = t_tx.send(Msg::Input(i));
            });
            let spec_t = TransportSpec {
                local,
                peer,
                connector: params.node.as_str() < peer_name,
                connect_int: Duration::from_millis(params.timing.connect_int_ms.max(100)),
                bufs,
            };
            Some(
                transport::start(spec_t, to_actor, shutdown.clone())
                    .await
                    .map_err(io(format!("listen on replication address {local}")))?,
            )
        }
        _ => None,
    };
    let (transport, outboxes) = match transport {
        Some((t, o)) => (Some(t), Some(o)),
        None => (None, None),
    };
    let mut actor = Actor {
        node,
        store: Some(store),
        disk,
        data: Some(Arc::clone(&data)),
        releasing: false,
        detach_reply: None,
        inline_done: Vec::new(),
        transport,
        outboxes,
        pending_sends: Vec::new(),
        shutdown,
        shared: Arc::clone(&shared),
        snap_tx,
        handlers: spec.handlers.clone(),
        writes: HashMap::new(),
        write_started: HashMap::new(),
        write_latencies: Vec::new(),
        reads: HashMap::new(),
        next_id: 1,
        start: Instant::now(),
        on_io_error: spec.on_io_error,
        last_io_error: None,
        last_io_handler: None,
        resize_reply: None,
        meta_locator: locator.map(Into::into),
    };
    actor.refresh_capacity();
    actor.execute(first);
    if spec.connect && spec.peer_addr.is_some() {
        let a = actor.node.step(Input::Connect { discard_my_data: false });
        actor.execute(a);
    }
    actor.flush_sends();
    std::thread::Builder::new()
        .name(format!("repl-{name}"))
        .spawn(move || actor.run(rx))
        .map_err(io("start actor thread".into()))?;
    Ok(shared)
}

fn device_size(f: &std::fs::File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f.try_clone()?;
    f.seek(SeekFrom::End(0))
}

impl Actor {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut next_tick = Instant::now() + TICK;
        let mut carry: Option<Msg> = None;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let got = match carry.take() {
                Some(m) => Ok(m),
                None => rx.recv_timeout(timeout),
            };
            match got {
                Ok(first) => {
                    // Step what else has arrived (bounded) before writing the frames all of it
                    // produced: a burst of Data frames is answered with one write of its WriteAcks.
                    let mut next = Some(first);
                    for _ in 0..BATCH {
                        let Some(m) = next.take() else { break };
                        if let Msg::Down { reply } = m {
                            let a = self.node.step(Input::Down);
                            self.execute(a);
                            self.flush_sends();
                            self.stop();
                            let _ = reply.send(());
                            return;
                        }
                        self.handle(m);
                        next = rx.try_recv().ok();
                    }
                    self.flush_sends();
                    if let Some(m) = next {
                        // The bound was reached: this one starts the next turn, after the tick.
                        carry = Some(m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                let now_ms = self.start.elapsed().as_millis() as u64;
                if !self.write_latencies.is_empty() {
                    let a = self.node.step(Input::AppWriteLatencies(std::mem::take(&mut self.write_latencies)));
                    self.execute(a);
                }
                let a = self.node.step(Input::Tick { now_ms });
                self.execute(a);
                self.flush_sends();
                self.publish();
            }
        }
    }

    fn stop(&mut self) {
        self.shutdown.cancel();
        self.transport = None;
        self.disk.shutdown();
        self.publish();
        if let Some((reply, _)) = self.detach_reply.take() {
            let _ = reply.send(Err(format!("{}: went down before the detach finished", self.shared.name)));
        }
        for (_, r) in self.writes.drain() {
            let _ = r.send(Err(IoFailure::Down));
        }
        self.write_started.clear();
        for (_, r) in self.reads.drain() {
            let _ = r.send(Err(IoFailure::Down));
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn handle(&mut self, m: Msg) {
        let actions = match m {
            Msg::Input(i) => {
                if let Input::DiskDone { result: Err(e), .. } = &i {
                    self.local_io_error(e);
                }
                if let Input::Frame { frame: Frame::Params(_) | Frame::ResizeRequest { .. }, .. } = &i {
                    // The machine compares sizes with what the backing device gives now.
                    self.refresh_capacity();
                }
                self.node.step(i)
            }
            Msg::Resize { size, assume_clean, reply } => {
                if self.resize_reply.is_some() {
                    let _ = reply.send(Err(format!("{}: a resize is already in progress", self.shared.name)));
                    return;
                }
                self.refresh_capacity();
                self.resize_reply = Some(reply);
                self.node.step(Input::Resize { size, assume_clean })
            }
            Msg::Write { offset, data, fua, reply } => {
                let id = self.id();
                self.writes.insert(id, reply);
                self.write_started.insert(id, Instant::now());
                self.node.step(Input::Write { id, offset, data, fua })
            }
            Msg::Flush { reply } => {
                let id = self.id();
                self.writes.insert(id, reply);
                self.node.step(Input::Flush { id })
            }
            Msg::PrUpdate { blob, reply } => {
                let id = self.id();
                self.writes.insert(id, reply);
                self.node.step(Input::PrUpdate { id, blob })
            }
            Msg::Read { offset, len, reply } => {
                let id = self.id();
                self.reads.insert(id, reply);
                self.node.step(Input::Read { id, offset, len })
            }
            Msg::Verb { verb, reply } => {
                let (res, actions) = self.verb(verb);
                if verb == Verb::Detach && res.is_ok() {
                    // Answered when the files are closed (`release_disk`).
                    self.detach_reply = Some((reply, res));
                    self.execute(actions);
                    self.publish();
                    return;
                }
                self.execute(actions);
                self.publish();
                let _ = reply.send(res);
                return;
            }
            Msg::Snapshot { reply } => {
                let _ = reply.send(self.node.snapshot());
                return;
            }
            Msg::OutOfSyncBlocks { reply } => {
                let bm = self.node.bitmap();
                let blocks = std::iter::successors(bm.next_set(0), |b| bm.next_set(b + 1)).collect();
                let _ = reply.send(blocks);
                return;
            }
            Msg::Down { .. } => Vec::new(),
            Msg::SetOptions { options, handlers, reply } => {
                self.handlers = handlers;
                let actions = self.node.step(Input::SetOptions(options));
                self.execute(actions);
                self.publish();
                let _ = reply.send(());
                return;
            }
        };
        self.execute(actions);
    }

    /// A local disk request failed. The state machine fails the request and marks its blocks out of
    /// sync; here the operator is told (once per burst, not once per request) and the policy's handler
    /// runs.
    fn local_io_error(&mut self, error: &str) {
        self.shared.counters.disk_error();
        let now = Instant::now();
        let quiet = self.last_io_error.is_none_or(|t| now.duration_since(t) >= IO_ERROR_HANDLER_EVERY);
        self.last_io_error = Some(now);
        if quiet {
            let what = match self.on_io_error {
                IoErrorPolicy::Detach => "on-io-error detach: the disk is detached",
                _ => "the request fails and its blocks are marked for resync",
            };
            tracing::error!(resource = %self.shared.name, "local disk I/O error: {error} ({what})");
        }
        if self.on_io_error == IoErrorPolicy::CallLocalIoErrorHandler
            && self.last_io_handler.is_none_or(|t| now.duration_since(t) >= IO_ERROR_HANDLER_EVERY)
        {
            self.last_io_handler = Some(now);
            self.run_handler("local-io-error");
        }
    }

    fn verb(&mut self, verb: Verb) -> (Result<String, String>, Vec<Action>) {
        let name = self.shared.name.clone();
        match verb {
            Verb::Primary { force } => {
                if let Err(e) = self.node.check_primary(force) {
                    return (Err(format!("{name}: {e}")), Vec::new());
                }
                let a = self.node.step(Input::Primary { force });
                (Ok(format!("{name}: Primary")), a)
            }
            Verb::Secondary => {
                let a = self.node.step(Input::Secondary);
                if self.node.role() == crate::machine::state::Role::Primary {
                    return (Err(format!("{name}: writes are in flight; try again")), a);
                }
                (Ok(format!("{name}: Secondary")), a)
            }
            Verb::Connect { discard_my_data } => {
                if self.transport.is_none() {
                    return (Err(format!("{name}: no peer configured")), Vec::new());
                }
                if let Err(e) = self.node.check_connect() {
                    return (Err(format!("{name}: {e}")), Vec::new());
                }
                (Ok(format!("{name}: connecting")), self.node.step(Input::Connect { discard_my_data }))
            }
            Verb::Disconnect => (Ok(format!("{name}: StandAlone")), self.node.step(Input::Disconnect)),
            Verb::PauseSync | Verb::ResumeSync => {
                let pause = matches!(verb, Verb::PauseSync);
                let a = self.node.step(if pause { Input::PauseSync } else { Input::ResumeSync });
                let s = self.node.snapshot();
                let now = if s.sync.is_some() {
                    format!("replication {}", s.repl)
                } else if pause {
                    "no resync is running; the next one waits for resume-sync".to_string()
                } else {
                    "no resync is running".to_string()
                };
                (Ok(format!("{name}: resync {} ({now})", if pause { "paused" } else { "resumed" })), a)
            }
            Verb::Thaw { reason } => {
                let s = self.node.snapshot();
                if s.suspended.is_none() {
                    return (Ok(format!("{name}: I/O is not suspended")), Vec::new());
                }
                let held = s.held_acks;
                (Ok(format!("{name}: I/O resumed ({reason}); {held} held acknowledgement(s) released")), self.node.step(Input::Thaw { reason: reason.to_string() }))
            }
            Verb::Invalidate { remote } => {
                let verb = if remote { "invalidate-remote" } else { "invalidate" };
                if let Err(e) = self.node.check_invalidate(remote) {
                    return (Err(format!("{name}: {verb} refused: {e}")), Vec::new());
                }
                let what = if remote { "the peer resyncs fully from this node" } else { "this node resyncs fully from the peer" };
                (Ok(format!("{name}: {verb}: {what}")), self.node.step(Input::Invalidate { remote }))
            }
            Verb::Verify { repair } => {
                if let Err(e) = self.node.check_verify() {
                    return (Err(format!("{name}: verify refused: {e}")), Vec::new());
                }
                let alg = self.node.params().verify_alg.clone();
                let what = if repair { ", differences resynced from this node when it ends" } else { "" };
                (Ok(format!("{name}: online verify started ({alg}{what}); `haadm status` shows its progress")), self.node.step(Input::Verify { repair }))
            }
            Verb::NewCurrentUuid { clear_bitmap } => {
                if let Err(e) = self.node.check_new_current_uuid(clear_bitmap) {
                    return (Err(format!("{name}: new-current-uuid refused: {e}")), Vec::new());
                }
                let a = self.node.step(Input::NewCurrentUuid { clear_bitmap });
                let what = if clear_bitmap { "initial sync skipped, this disk is UpToDate; the peer follows" } else { "new data generation" };
                (Ok(format!("{name}: new current UUID {:016X} ({what})", self.node.persisted().uuids.current)), a)
            }
            Verb::ResolveKeepMe => {
                if let Err(e) = self.node.check_resolve_keep_me() {
                    return (Err(format!("{name}: {e}")), Vec::new());
                }
                (Ok(format!("{name}: connecting as the split brain's survivor")), self.node.step(Input::ResolveKeepMe))
            }
            Verb::Detach => {
                if let Err(e) = self.node.check_detach() {
                    return (Err(format!("{name}: detach refused: {e}")), Vec::new());
                }
                let a = self.node.step(Input::Detach);
                let s = self.node.snapshot();
                let how = if s.role == crate::machine::state::Role::Primary {
                    "reads and writes are served by the peer"
                } else if s.conn == crate::machine::state::ConnState::Connected {
                    "still connected, the peer records the blocks written meanwhile"
                } else {
                    "not connected"
                };
                (Ok(format!("{name}: detached on request: disk Diskless, data and metadata files closed; {how} (`haadm attach {name}` attaches it again)")), a)
            }
            Verb::Outdate => {
                let a = self.node.step(Input::Outdate);
                let s = self.node.snapshot();
                if s.disk != crate::machine::state::DiskState::Outdated {
                    return (Err(format!("{name}: cannot outdate a {} {} disk", s.role, s.disk)), a);
                }
                (Ok(format!("{name}: Outdated")), a)
            }
        }
    }

    /// Carry out `actions` in order, then step the completions of writes done inline (and what those
    /// produce) the same way, as if a disk thread had answered right after this message.
    fn execute(&mut self, actions: Vec<Action>) {
        self.execute_list(actions);
        // Bounded: each round only steps completions of writes issued by the previous round.
        for _ in 0..64 {
            if self.inline_done.is_empty() {
                break;
            }
            for input in std::mem::take(&mut self.inline_done) {
                if let Input::DiskDone { result: Err(e), .. } = &input {
                    self.local_io_error(e);
                }
                let more = self.node.step(input);
                self.execute_list(more);
            }
        }
        // Anything left (never expected) goes through the channel like a disk thread's answer.
        for input in std::mem::take(&mut self.inline_done) {
            let _ = self.shared.tx.send(Msg::Input(input));
        }
        self.release_disk();
    }

    /// A requested detach, once no disk request issued before it is in flight: make what the disk
    /// acknowledged stable, stop the disk threads and close the data and metadata files (the
    /// administrator may take the disk away now), then answer the `detach` caller.
    fn release_disk(&mut self) {
        if !self.releasing || self.node.disk_requests_in_flight() > 0 {
            return;
        }
        self.releasing = false;
        let name = self.shared.name.clone();
        self.shared.local_reads.store(false, Ordering::Release);
        if let Some(data) = self.data.take() {
            if let Err(e) = data.flush() {
                tracing::warn!(resource = %name, "flushing the data device before closing it: {e}");
            }
            *self.shared.data.write().unwrap_or_else(|e| e.into_inner()) = None;
            // The disk threads hold the device too: stop them (nothing is queued any more).
            self.disk.shutdown();
        }
        self.store = None;
        tracing::info!(resource = %name, "local disk detached on request: data and metadata files closed");
        if let Some((reply, res)) = self.detach_reply.take() {
            let _ = reply.send(res);
        }
    }

    fn execute_list(&mut self, actions: Vec<Action>) {
        let mut changed = false;
        for a in actions {
            match a {
                Action::Send { conn, frame } => self.pending_sends.push((conn, frame)),
                // Frames sent before a close go out before it.
                Action::Close { conn } => {
                    self.flush_sends();
                    self.to_transport(TransportCmd::Close { conn });
                }
                Action::SetConnecting(on) => self.to_transport(TransportCmd::SetConnecting(on)),
                // WHY inline: a small buffered write is a page-cache copy that the inode lock serialises
                // anyway; handing it to a disk thread costs two thread wake-ups per write on each node,
                // which dominated the CPU profile of replicated 4 KiB writes.
                // Never issued by a Diskless machine; answered as failed should one be.
                Action::DiskWrite { token, .. } | Action::DiskRead { token, .. } | Action::DiskFlush { token } if self.data.is_none() => {
                    self.inline_done.push(Input::DiskDone { token, result: Err("the local disk is detached".into()) });
                }
                Action::DiskWrite { token, offset, data, fua } if self.data.as_ref().is_some_and(|d| d.inline_ok(offset, data.len(), fua)) => {
                    let disk = self.data.as_ref().expect("checked by the guard");
                    let result = disk.write(offset, &data, fua).map(|()| None).map_err(|e| e.to_string());
                    self.inline_done.push(Input::DiskDone { token, result });
                }
                Action::DiskWrite { token, offset, data, fua } => self.disk.submit(DiskJob::Write { token, offset, data, fua }),
                Action::DiskRead { token, offset, len } => self.disk.submit(DiskJob::Read { token, offset, len }),
                Action::DiskFlush { token } => self.disk.submit(DiskJob::Flush { token }),
                Action::PersistSuperblock(_)
                | Action::PersistBitmap(_)
                | Action::PersistAl(_)
                | Action::PersistPr(_)
                | Action::PersistResize { .. }
                    if self.store.is_none() =>
                {
                    tracing::error!(resource = %self.shared.name, "metadata write after the disk was detached: skipped");
                }
                Action::ReleaseDisk => self.releasing = true,
                Action::PersistSuperblock(p) => {
                    let Some(store) = self.store.as_mut() else { continue };
                    let mut sb = store.superblock().clone();
                    sb.current_uuid = p.uuids.current;
                    sb.bitmap_uuid = p.uuids.bitmap;
                    sb.history_uuids = p.uuids.history;
                    sb.flags = p.flags;
                    if let Err(e) = store.write_superblock(&mut sb) {
                        tracing::error!(resource = %self.shared.name, "writing the superblock failed: {e}");
                    }
                }
                Action::PersistBitmap(pages) => {
                    if !pages.is_empty()
                        && let Some(store) = self.store.as_mut()
                        && let Err(e) = store.write_bitmap_pages(self.node.bitmap(), &pages)
                    {
                        tracing::error!(resource = %self.shared.name, "writing the bitmap failed: {e}");
                    }
                }
                Action::PersistAl(tx) => {
                    if let Some(store) = self.store.as_mut()
                        && let Err(e) = store.write_al_transaction(&tx)
                    {
                        tracing::error!(resource = %self.shared.name, "writing the activity log failed: {e}");
                    }
                }
                Action::PersistResize { data_size } => self.persist_resize(data_size),
                Action::ResizeDone(result) => {
                    let name = &self.shared.name;
                    let result = result.map_err(|e| format!("{name}: resize refused: {e}"));
                    match &result {
                        Ok(size) => tracing::info!(resource = %name, "resize done: {size} bytes"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                    if let Some(r) = self.resize_reply.take() {
                        let _ = r.send(result);
                    }
                }
                Action::PersistPr(blob) => {
                    if let Some(store) = self.store.as_mut()
                        && let Err(e) = store.write_pr(&blob)
                    {
                        tracing::error!(resource = %self.shared.name, "writing the persistent-reservation state failed: {e}");
                    }
                    *self.shared.pr.lock().unwrap_or_else(|e| e.into_inner()) = blob;
                }
                Action::Complete { id, result } => {
                    if let Some(t0) = self.write_started.remove(&id) {
                        self.write_latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    if let Some(r) = self.writes.remove(&id) {
                        let _ = r.send(result);
                    }
                }
                Action::ReadDone { id, result } => {
                    if let Some(r) = self.reads.remove(&id) {
                        let _ = r.send(result);
                    }
                }
                Action::RunHandler(name) => self.run_handler(name),
                Action::Log { warn, msg } => {
                    if warn {
                        tracing::warn!("{msg}");
                    } else {
                        tracing::info!("{msg}");
                    }
                }
                Action::StateChanged => changed = true,
            }
        }
        self.shared.local_reads.store(self.node.local_reads_ok(), Ordering::Release);
        if changed {
            self.publish();
        }
    }

    /// Tell the machine how much data the backing device can hold now: the largest size a resize
    /// could write metadata for (internal metadata that cannot move yet counts as not grown).
    fn refresh_capacity(&mut self) {
        let current = self.node.data_size();
        let (Some(data), Some(store)) = (self.data.as_ref(), self.store.as_ref()) else { return };
        let cap = device_size(data.file())
            .map_err(|e| e.to_string())
            .and_then(|dev| {
                let cap = store.capacity(dev).map_err(|e| e.to_string())?;
                match store.plan_resize(cap, dev) {
                    Ok(_) => Ok(cap),
                    Err(e) if cap > current => {
                        tracing::warn!(resource = %self.shared.name, "the backing device grew but the volume cannot grow yet: {e}");
                        Ok(current)
                    }
                    Err(_) => Ok(cap),
                }
            })
            .unwrap_or_else(|e| {
                tracing::warn!(resource = %self.shared.name, "size of the backing device: {e}");
                current
            });
        self.node.set_capacity(cap);
    }

    /// Rewrite the metadata for the machine's new size (crash-safe, see `meta/store_resize.rs`),
    /// record its place, and only then publish the size to the volume's users (the target).
    fn persist_resize(&mut self, data_size: u64) {
        let name = self.shared.name.clone();
        let (Some(data), Some(store)) = (self.data.as_ref(), self.store.as_mut()) else {
            tracing::error!(resource = %name, "resize to {data_size} bytes with the disk detached: skipped");
            return;
        };
        let r = device_size(data.file())
            .map_err(|e| e.to_string())
            .and_then(|dev| store.resize(self.node.bitmap(), dev).map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::error!(resource = %name, "resizing the metadata to {data_size} bytes failed: {e}");
            return;
        }
        if let Some(path) = &self.meta_locator
            && let Some(store) = self.store.as_ref()
            && let Err(e) = super::meta_locator::write(path, store.layout().sb_offset)
        {
            tracing::error!(resource = %name, "recording the metadata's place in {}: {e}", path.display());
        }
        self.shared.size.store(data_size, Ordering::Release);
    }

    fn publish(&self) {
        let s = self.node.snapshot();
        self.snap_tx.send_if_modified(|old| {
            if *old == s {
                false
            } else {
                *old = s;
                true
            }
        });
    }

    /// Write the frames of the current batch, each connection's in one go.
    fn flush_sends(&mut self) {
        if self.pending_sends.is_empty() {
            return;
        }
        let mut sends = std::mem::take(&mut self.pending_sends);
        let Some(outboxes) = &self.outboxes else { return };
        while !sends.is_empty() {
            let conn = sends[0].0;
            let out = outboxes.lock().unwrap_or_else(|e| e.into_inner()).get(&conn).cloned();
            let (mine, rest): (Vec<_>, Vec<_>) = sends.into_iter().partition(|(c, _)| *c == conn);
            sends = rest;
            // A connection that is gone drops its frames, as its channel did before.
            if let Some(out) = out {
                out.send(mine.into_iter().map(|(_, f)| f));
            }
        }
    }

    fn to_transport(&self, cmd: TransportCmd) {
        if let Some(t) = &self.transport {
            let _ = t.send(cmd);
        }
    }

    /// Handlers run detached (a hung script must not stall replication); their exit is logged.
    fn run_handler(&self, name: &'static str) {
        let Some(cmd) = self.handlers.get(name).cloned() else {
            tracing::info!(resource = %self.shared.name, "handler {name}: none configured");
            return;
        };
        self.shared.counters.handler_run(name);
        let p = self.node.params();
        let (res, peer) = (p.resource.clone(), p.peer.clone().unwrap_or_default());
        tracing::warn!(resource = %res, "running handler {name}: {cmd}");
        let spawned = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .env("DRBD_RESOURCE", &res)
            .env("HA_RESOURCE", &res)
            .env("DRBD_PEER", &peer)
            .env("HA_HANDLER", name)
            .spawn();
        match spawned {
            Ok(mut child) => {
                std::thread::spawn(move || match child.wait() {
                    Ok(st) => tracing::info!(resource = %res, "handler {name} exited with {st}"),
                    Err(e) => tracing::warn!(resource = %res, "handler {name}: {e}"),
                });
            }
            Err(e) => tracing::warn!(resource = %res, "handler {name} could not start: {e}"),
        }
    }
}

