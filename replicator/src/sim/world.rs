//! A deterministic world for two replication state machines.
//!
//! Fault model (what may go wrong, and what survives):
//! - Network: one TCP-like connection at a time, FIFO per direction with random latency and latency
//!   spikes. A partition (both ways or one way) holds frames; if it outlasts the nodes' timers they
//!   close the connection; frames of a closed connection are lost. A closed connection is noticed by
//!   the other side only if the path to it is up (a FIN/RST), otherwise by its own timers.
//! - Data disks: writes complete after a random delay, in any order. A crash applies each write still in
//!   flight fully, not at all, or torn at a 512-byte boundary. Completed writes survive a crash (the
//!   process dies, the kernel and the disk keep what they were given).
//! - Volatile write cache (off unless [`World::enable_volatile_cache`]): a completed non-FUA write is
//!   visible (`data[node]`, what reads return) but only *dirty*: it sits, in completion order, on top of
//!   the durable media image. A FUA write is durable when it completes. A flush makes durable exactly
//!   the writes that had completed when it was *issued* (recorded then, applied when it completes);
//!   later ones stay dirty. [`World::power_loss`] is a crash that also empties the cache: each dirty
//!   write, oldest first, reaches the media fully, not at all, or torn at a 512-byte boundary (what the
//!   kernel happened to write back), and the visible data becomes the media image. A FUA write drops
//!   the older dirty copies of its sectors (the cache held one version, now on the media). Crashes,
//!   orderly stops and restarts flush nothing: the cache outlives the process. Without the cache, a
//!   completed write is durable and a power loss is just a crash.
//! - Metadata: written synchronously by the real `MetaStore` code on an in-memory device; every write
//!   is durable when it returns (the store syncs after each one; a power loss does not undo it). A
//!   crash can hit in the middle of a step's action list; if the action it hits is a metadata write,
//!   that write is torn (a random sector-aligned prefix lands); later actions of that step never happen.
//! - Node crashes lose all memory; a restart re-opens the metadata (applying the activity log).

use crate::machine::{Action, Input, Node, NodeParams, Persisted, Snapshot, Timing};
use crate::machine::policy::Policies;
use crate::machine::state::{ConnState, DiskState, ReplState, Role};
use crate::machine::uuids::Uuids;
use crate::meta::layout::MetaLocation;
use crate::meta::store::{create_md, MetaDevice, MetaStore};
use crate::wire::frame::Frame;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

pub const SECTOR: usize = 512;

/// SplitMix64: small, fast, and enough for schedules.
#[derive(Clone)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// A stream of its own for another simulation: `salt` keeps its seeds' schedules apart from
    /// this one's (the clusterd simulations keep the streams their seeds were checked with).
    pub fn salted(seed: u64, salt: u64) -> Self {
        Rng(seed ^ salt)
    }
    #[allow(clippy::should_implement_trait)] // an endless generator, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// In `[lo, hi)` (`lo` when the range is empty; draws either way, so schedules stay aligned).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The most recent metadata write: its offset and the bytes it overwrote.
pub type LastWrite = (u64, Vec<u8>);

/// An in-memory metadata device whose last write can be torn by a crash.
#[derive(Clone)]
pub struct MemDev {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub last_write: Arc<Mutex<Option<LastWrite>>>,
}

impl MemDev {
    pub fn new(size: usize) -> Self {
        MemDev { bytes: Arc::new(Mutex::new(vec![0; size])), last_write: Arc::new(Mutex::new(None)) }
    }
    /// Undo a random sector-aligned suffix of the most recent write (it was in progress at the crash).
    pub fn tear_last(&self, rng: &mut Rng) -> bool {
        let Some((off, old)) = self.last_write.lock().unwrap().take() else { return false };
        let sectors = old.len().div_ceil(SECTOR);
        let keep = rng.below(sectors as u64) as usize * SECTOR;
        let mut b = self.bytes.lock().unwrap();
        let o = off as usize;
        b[o + keep..o + old.len()].copy_from_slice(&old[keep..]);
        true
    }
}

impl MetaDevice for MemDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let b = self.bytes.lock().unwrap();
        let o = off as usize;
        let src = b.get(o..o + buf.len()).ok_or_else(|| std::io::Error::other("read past end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let mut b = self.bytes.lock().unwrap();
        let o = off as usize;
        let dst = b.get_mut(o..o + buf.len()).ok_or_else(|| std::io::Error::other("write past end"))?;
        let old = dst.to_vec();
        dst.copy_from_slice(buf);
        *self.last_write.lock().unwrap() = Some((off, old));
        Ok(())
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver { to: usize, conn: u64, frame: Frame },
    Down { to: usize, conn: u64 },
    DiskDone { node: usize, inc: u64, token: u64 },
    Tick { node: usize, inc: u64 },
}

#[derive(Debug, Clone)]
enum Io {
    Write { offset: u64, data: Bytes, fua: bool },
    Read { offset: u64, len: u64 },
    /// `cover`: the cache sequence number of the newest write that had completed when the flush was
    /// issued; the flush makes durable that one and everything older, nothing newer.
    Flush { cover: u64 },
}

/// A completed write that is still only in a node's volatile cache.
#[derive(Debug, Clone)]
struct Dirty {
    seq: u64,
    offset: u64,
    data: Bytes,
}

/// A node's data disk with a volatile write cache: the durable image and the dirty writes above it.
#[derive(Default)]
struct Cache {
    media: Vec<u8>,
    /// Oldest first.
    dirty: Vec<Dirty>,
    /// Sequence number of the newest write that entered `dirty`.
    seq: u64,
}

impl Cache {
    /// Writes covered by a flush (completed when it was issued) reach the media, oldest first.
    fn commit(&mut self, cover: u64) {
        let n = self.dirty.iter().take_while(|d| d.seq <= cover).count();
        for d in self.dirty.drain(..n) {
            let o = d.offset as usize;
            self.media[o..o + d.data.len()].copy_from_slice(&d.data);
        }
    }

    /// A FUA write reached the media: older dirty copies of its sectors no longer exist anywhere (the
    /// cache held one version per sector, now the FUA data), so they must never be "written back" over
    /// it at a power loss. Drop those sectors from the dirty list (splitting entries; all sector-aligned).
    fn supersede(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let mut kept = Vec::with_capacity(self.dirty.len());
        for d in self.dirty.drain(..) {
            let (s, e) = (d.offset, d.offset + d.data.len() as u64);
            if e <= offset || s >= end {
                kept.push(d);
                continue;
            }
            if s < offset {
                kept.push(Dirty { seq: d.seq, offset: s, data: d.data.slice(..(offset - s) as usize) });
            }
            if e > end {
                kept.push(Dirty { seq: d.seq, offset: end, data: d.data.slice((end - s) as usize..) });
            }
        }
        self.dirty = kept;
    }
}

pub struct SimNode {
    pub node: Node,
    store: MetaStore,
    pending: HashMap<u64, Io>,
    connecting: bool,
}

/// Application completions surfaced to the scenario.
#[derive(Debug, Clone)]
pub enum AppDone {
    Write { id: u64, ok: bool },
    Read { id: u64, data: Option<Bytes> },
}

pub struct World {
    pub rng: Rng,
    pub now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    payload: HashMap<u64, Ev>,
    pub nodes: [Option<SimNode>; 2],
    pub inc: [u64; 2],
    pub data: [Vec<u8>; 2],
    meta: [MemDev; 2],
    params: [NodeParams; 2],
    conn: Option<u64>,
    /// The connection each node still considers open (until it closes it or sees the FIN).
    open: [Option<u64>; 2],
    next_conn: u64,
    last_dial: u64,
    /// path[from][to] is up.
    pub path: [[bool; 2]; 2],
    held: [Vec<(u64, Frame)>; 2],
    fifo_at: [u64; 2],
    pub crash_next_step: [bool; 2],
    /// The node's data disk fails every request (`on-io-error` scenarios); it keeps its old contents.
    pub disk_failed: [bool; 2],
    /// Volatile write caches in front of the data disks (see the module's fault model); `None` = off.
    cache: Option<[Cache; 2]>,
    pub done: Vec<AppDone>,
    pub trace: Vec<String>,
    pub size: u64,
}

/// Requests in flight in issue order: a HashMap's iteration order differs between runs, and the fates
/// drawn for them must not, or a seed would not replay.
fn by_token(pending: HashMap<u64, Io>) -> Vec<(u64, Io)> {
    let mut v: Vec<(u64, Io)> = pending.into_iter().collect();
    v.sort_unstable_by_key(|(t, _)| *t);
    v
}

pub fn params(i: usize, size: u64, policies: Policies) -> NodeParams {
    let names = ["alpha", "beta"];
    NodeParams {
        node: names[i].into(),
        peer: Some(names[1 - i].into()),
        resource: "r0".into(),
        data_size: size,
        policies,
        secret: Some(crate::wire::auth::Secret::new(b"sim-secret".to_vec()).unwrap()),
        fencing_dont_care: true,
        freeze_io_on_peer_loss: false,
        resync_rate: None,
        verify_rate: None,
        // Never yield to the application: the resync runs its full window beside application writes
        // (the most concurrency the conflict rules must handle).
        c_min_rate: None,
        resync_control: Default::default(),
        timing: Timing { ping_int_ms: 300, ping_timeout_ms: 300, timeout_ms: 400, ko_count: 3, connect_int_ms: 100 },
        verify_alg: "sha1".into(),
        csums: Default::default(),
        detach_on_io_error: false,
        protocols: crate::wire::frame::PROTOCOLS,
        protocol: Default::default(),
    }
}

impl World {
    /// Both nodes created (metadata initialised, disks Inconsistent) and started.
    pub fn new(seed: u64, size: u64, al_extents: u32, policies: Policies) -> World {
        let mut w = World::with_params(seed, size, al_extents, [params(0, size, policies), params(1, size, policies)]);
        w.start(0);
        w.start(1);
        w
    }

    /// Both nodes' metadata initialised with these parameters, neither node started yet (callers that
    /// boot nodes on their own schedule, like the failover simulation, call [`World::start`]).
    pub fn with_params(seed: u64, size: u64, al_extents: u32, params: [NodeParams; 2]) -> World {
        let meta_size = 4 << 20;
        let meta = [MemDev::new(meta_size), MemDev::new(meta_size)];
        let loc = MetaLocation::External { path: "mem".into(), index: None };
        for m in &meta {
            create_md(size, m, &loc, "r0", al_extents, false).expect("create-md on the sim device");
        }
        World {
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            payload: HashMap::new(),
            nodes: [None, None],
            inc: [0, 0],
            data: [vec![0; size as usize], vec![0; size as usize]],
            meta,
            params,
            conn: None,
            open: [None, None],
            next_conn: 1,
            last_dial: 0,
            path: [[true; 2]; 2],
            held: [Vec::new(), Vec::new()],
            fifo_at: [0, 0],
            crash_next_step: [false, false],
            disk_failed: [false, false],
            cache: None,
            done: Vec::new(),
            trace: Vec::new(),
            size,
        }
    }

    pub fn note(&mut self, s: String) {
        let line = format!("{:>7}ms {s}", self.now);
        self.trace.push(line);
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.payload.insert(self.seq, ev);
    }

    /// Boot a node from its (surviving) metadata.
    pub fn start(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        self.inc[i] += 1;
        let loc = MetaLocation::External { path: "mem".into(), index: None };
        let (store, report) = MetaStore::open(Box::new(self.meta[i].clone()), self.size, &loc).expect("metadata must open after any crash");
        let _ = report;
        let sb = store.superblock().clone();
        let persisted = Persisted {
            uuids: Uuids { current: sb.current_uuid, bitmap: sb.bitmap_uuid, history: sb.history_uuids },
            flags: sb.flags,
        };
        let al = store.activity_log();
        let bitmap = store.bitmap().clone();
        let seed = self.rng.next();
        let (mut node, actions) = Node::new(self.params[i].clone(), persisted, bitmap, al, seed);
        node.load_pr(Bytes::from(sb.pr.clone()));
        self.nodes[i] = Some(SimNode { node, store, pending: HashMap::new(), connecting: false });
        self.note(format!("node{i} started (incarnation {})", self.inc[i]));
        self.execute(i, actions);
        let now = self.now;
        self.input(i, Input::Tick { now_ms: now });
        let inc = self.inc[i];
        self.push(self.now + 10, Ev::Tick { node: i, inc });
    }

    /// Turn on the volatile write caches (see the module's fault model). Call it before the first data
    /// write: the media image starts as a copy of what the disks hold now.
    pub fn enable_volatile_cache(&mut self) {
        let cache = |d: &Vec<u8>| Cache { media: d.clone(), dirty: Vec::new(), seq: 0 };
        self.cache = Some([cache(&self.data[0]), cache(&self.data[1])]);
    }

    pub fn volatile_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// What node i's data disk would hold after a power loss that wrote back nothing (its media image;
    /// without a volatile cache, everything it holds).
    pub fn durable(&self, i: usize) -> &[u8] {
        match &self.cache {
            Some(c) => &c[i].media,
            None => &self.data[i],
        }
    }

    /// Completed writes on node i not yet on its media.
    pub fn dirty_writes(&self, i: usize) -> usize {
        self.cache.as_ref().map_or(0, |c| c[i].dirty.len())
    }

    /// A data write (or the part of it that made it) is on node i's disk: visible at once; durable now
    /// if FUA (or without a cache), otherwise dirty in the cache.
    fn land(&mut self, i: usize, offset: u64, data: Bytes, fua: bool) {
        let o = offset as usize;
        self.data[i][o..o + data.len()].copy_from_slice(&data);
        let Some(c) = self.cache.as_mut().map(|c| &mut c[i]) else { return };
        if fua {
            c.supersede(offset, data.len() as u64);
            c.media[o..o + data.len()].copy_from_slice(&data);
        } else {
            c.seq += 1;
            c.dirty.push(Dirty { seq: c.seq, offset, data });
        }
    }

    /// Kill a node: in-flight data writes land fully, torn or not at all (into the cache, if any: the
    /// process died, not the machine).
    pub fn crash(&mut self, i: usize) {
        self.crash_next_step[i] = false;
        let Some(n) = self.nodes[i].take() else { return };
        self.open[i] = None;
        for (_, io) in by_token(n.pending) {
            if let Io::Write { offset, data, .. } = io {
                // Not completed, so not durable even if FUA: it lands in the cache.
                match self.rng.below(3) {
                    0 => self.land(i, offset, data, false),
                    1 => {
                        let keep = self.rng.below((data.len() / SECTOR) as u64) as usize * SECTOR;
                        if keep > 0 {
                            self.land(i, offset, data.slice(..keep), false);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(c) = self.conn.take()
            && self.path[i][1 - i]
        {
            let at = self.now + 1;
            self.push(at, Ev::Down { to: 1 - i, conn: c });
        }
        self.held = [Vec::new(), Vec::new()];
        self.note(format!("node{i} CRASHED"));
    }

    /// Power loss of node i: a crash (if it is up), and its volatile cache is gone: each dirty write,
    /// oldest first, reaches the media fully, not at all, or torn at a sector boundary (what the kernel
    /// had written back), then the disk holds exactly its media image. Works on a node that is already
    /// down too (its cache outlived the process). Without a cache this is [`World::crash`].
    pub fn power_loss(&mut self, i: usize) {
        self.crash(i);
        let Some(mut c) = self.cache.as_mut().map(|c| std::mem::take(&mut c[i])) else { return };
        let (mut full, mut torn, mut lost) = (0, 0, 0);
        for d in std::mem::take(&mut c.dirty) {
            let o = d.offset as usize;
            let keep = match self.rng.below(3) {
                0 => d.data.len(),
                1 => self.rng.below((d.data.len() / SECTOR) as u64) as usize * SECTOR,
                _ => 0,
            };
            match keep {
                0 => lost += 1,
                k if k == d.data.len() => full += 1,
                _ => torn += 1,
            }
            c.media[o..o + keep].copy_from_slice(&d.data[..keep]);
        }
        self.data[i].copy_from_slice(&c.media);
        if let Some(cs) = self.cache.as_mut() {
            cs[i] = c;
        }
        self.note(format!("node{i} POWER LOSS: dirty writes written back {full}, torn {torn}, lost {lost}"));
    }

    /// Orderly stop (the daemon shutting a resource down): the node's `Down` verb runs, its disk I/O
    /// still in flight completes, then it is gone until [`World::start`].
    pub fn shutdown(&mut self, i: usize) {
        self.input(i, Input::Down);
        let Some(n) = self.nodes[i].take() else { return };
        self.open[i] = None;
        for (_, io) in by_token(n.pending) {
            match io {
                Io::Write { offset, data, fua } => self.land(i, offset, data, fua),
                Io::Flush { cover } => {
                    if let Some(c) = self.cache.as_mut() {
                        c[i].commit(cover);
                    }
                }
                Io::Read { .. } => {}
            }
        }
        if let Some(c) = self.conn.take()
            && self.path[i][1 - i]
        {
            let at = self.now + 1;
            self.push(at, Ev::Down { to: 1 - i, conn: c });
        }
        self.held = [Vec::new(), Vec::new()];
        self.note(format!("node{i} shut down"));
    }

    /// Node i's state machine, for read-only questions (e.g. `check_primary`, as the engine asks it).
    pub fn machine(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref().map(|n| &n.node)
    }

    /// Node i is running (not crashed or shut down).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Node i is running and has no request, flush or disk I/O in flight.
    pub fn idle(&self, i: usize) -> bool {
        self.nodes[i].as_ref().is_some_and(|n| n.node.idle())
    }

    /// The current UUID recorded on node i's metadata (readable even while it is down).
    pub fn disk_current_uuid(&self, i: usize) -> u64 {
        let loc = MetaLocation::External { path: "mem".into(), index: None };
        let copy = MemDev { bytes: Arc::new(Mutex::new(self.meta[i].bytes.lock().unwrap().clone())), last_write: Arc::new(Mutex::new(None)) };
        MetaStore::open(Box::new(copy), self.size, &loc).map(|(s, _)| s.superblock().current_uuid).unwrap_or(0)
    }

    /// The persistent-reservation state on node i's metadata (what a restart loads; readable while down).
    pub fn pr_on_disk(&self, i: usize) -> Vec<u8> {
        let loc = MetaLocation::External { path: "mem".into(), index: None };
        let copy = MemDev { bytes: Arc::new(Mutex::new(self.meta[i].bytes.lock().unwrap().clone())), last_write: Arc::new(Mutex::new(None)) };
        MetaStore::open(Box::new(copy), self.size, &loc).map(|(s, _)| s.superblock().pr.clone()).unwrap_or_default()
    }

    /// Feed an input to a live node.
    pub fn input(&mut self, i: usize, input: Input) {
        let Some(n) = self.nodes[i].as_mut() else { return };
        let actions = n.node.step(input);
        self.execute(i, actions);
    }

    pub fn snapshot(&self, i: usize) -> Option<Snapshot> {
        self.nodes[i].as_ref().map(|n| n.node.snapshot())
    }

    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        // A pending crash hits while one of this step's actions is carried out (or right after).
        let crash_at = if std::mem::take(&mut self.crash_next_step[i]) {
            Some(self.rng.below(actions.len() as u64 + 1) as usize)
        } else {
            None
        };
        let n = actions.len();
        for (k, a) in actions.into_iter().enumerate() {
            if Some(k) == crash_at {
                // The crash hits while this action is being carried out.
                let persist = matches!(
                    a,
                    Action::PersistSuperblock(_)
                        | Action::PersistBitmap(_)
                        | Action::PersistAl(_)
                        | Action::PersistPr(_)
                        | Action::PersistResize { .. }
                );
                if persist {
                    self.apply(i, a);
                    let torn = self.meta[i].tear_last(&mut self.rng);
                    self.note(format!("node{i} crash tore a metadata write: {torn}"));
                }
                self.crash(i);
                return;
            }
            self.apply(i, a);
        }
        if crash_at == Some(n) {
            self.crash(i);
        }
    }

    fn apply(&mut self, i: usize, a: Action) {
        *self.meta[i].last_write.lock().unwrap() = None;
        let now = self.now;
        let lat = 1 + self.rng.below(3);
        match a {
            Action::Send { conn, frame } => self.send(i, conn, frame),
            Action::Close { conn } => {
                if self.open[i] == Some(conn) {
                    self.open[i] = None;
                }
                if self.conn == Some(conn) {
                    self.conn = None;
                    self.held = [Vec::new(), Vec::new()];
                    if self.path[i][1 - i] {
                        // The FIN follows whatever was sent before it.
                        let at = (now + lat).max(self.fifo_at[i] + 1);
                        self.push(at, Ev::Down { to: 1 - i, conn });
                    }
                }
            }
            Action::SetConnecting(on) => {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.connecting = on;
                }
            }
            Action::DiskWrite { token, offset, data, fua } => self.disk(i, token, Io::Write { offset, data, fua }),
            Action::DiskRead { token, offset, len } => self.disk(i, token, Io::Read { offset, len }),
            Action::DiskFlush { token } => {
                // What the flush covers is decided now, at issue: writes completed so far.
                let cover = self.cache.as_ref().map_or(0, |c| c[i].seq);
                self.disk(i, token, Io::Flush { cover })
            }
            Action::PersistSuperblock(p) => {
                let Some(n) = self.nodes[i].as_mut() else { return };
                let mut sb = n.store.superblock().clone();
                sb.current_uuid = p.uuids.current;
                sb.bitmap_uuid = p.uuids.bitmap;
                sb.history_uuids = p.uuids.history;
                sb.flags = p.flags;
                n.store.write_superblock(&mut sb).expect("sim superblock write");
            }
            Action::PersistBitmap(pages) => {
                let Some(n) = self.nodes[i].as_mut() else { return };
                if !pages.is_empty() {
                    n.store.write_bitmap_pages(n.node.bitmap(), &pages).expect("sim bitmap write");
                }
            }
            Action::PersistAl(tx) => {
                let Some(n) = self.nodes[i].as_mut() else { return };
                n.store.write_al_transaction(&tx).expect("sim al write");
            }
            Action::PersistPr(blob) => {
                let Some(n) = self.nodes[i].as_mut() else { return };
                n.store.write_pr(&blob).expect("sim PR state write");
            }
            Action::PersistResize { .. } => {
                // The simulated devices do not grow (capacity = size): no resize ever starts here.
                let Some(n) = self.nodes[i].as_mut() else { return };
                n.store.resize(n.node.bitmap(), self.size).expect("sim resize");
            }
            Action::ResizeDone(r) => self.note(format!("node{i} resize: {r:?}")),
            Action::Complete { id, result } => {
                self.done.push(AppDone::Write { id, ok: result.is_ok() });
            }
            Action::ReadDone { id, result } => self.done.push(AppDone::Read { id, data: result.ok() }),
            Action::RunHandler(h) => self.note(format!("node{i} handler {h}")),
            Action::Log { msg, .. } => self.note(format!("node{i} {msg}")),
            Action::StateChanged => {}
            // The simulated disks stay open; a Diskless node issues nothing to them.
            Action::ReleaseDisk => {}
        }
    }

    fn disk(&mut self, i: usize, token: u64, io: Io) {
        let Some(n) = self.nodes[i].as_mut() else { return };
        n.pending.insert(token, io);
        let at = self.now + self.rng.below(3);
        let inc = self.inc[i];
        self.push(at, Ev::DiskDone { node: i, inc, token });
    }

    fn send(&mut self, from: usize, conn: u64, frame: Frame) {
        if self.conn != Some(conn) {
            return;
        }
        if !self.path[from][1 - from] {
            self.held[from].push((conn, frame));
            return;
        }
        let spike = if self.rng.chance(0.01) { 20 + self.rng.below(200) } else { 0 };
        let at = (self.now + 1 + self.rng.below(3) + spike).max(self.fifo_at[from]);
        self.fifo_at[from] = at;
        self.push(at, Ev::Deliver { to: 1 - from, conn, frame });
    }

    pub fn set_path(&mut self, from: usize, up: bool) {
        self.path[from][1 - from] = up;
        if up {
            let held = std::mem::take(&mut self.held[from]);
            for (conn, f) in held {
                self.send(from, conn, f);
            }
        }
    }

    fn try_dial(&mut self) {
        if self.conn.is_some() || self.now < self.last_dial + 100 || !self.path[0][1] || !self.path[1][0] {
            return;
        }
        // The connector dials only once its own previous connection is gone (as the transport does).
        let dialer = self.nodes[0].as_ref().is_some_and(|n| n.connecting) && self.open[0].is_none();
        if !dialer || self.nodes[1].is_none() {
            return;
        }
        self.last_dial = self.now;
        let c = self.next_conn;
        self.next_conn += 1;
        self.conn = Some(c);
        self.fifo_at = [self.now, self.now];
        self.open = [Some(c), Some(c)];
        self.input(0, Input::TransportUp { conn: c });
        self.input(1, Input::TransportUp { conn: c });
    }

    /// Run until `until` (virtual ms).
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, seq))) = self.events.peek().copied() {
            if at > until {
                break;
            }
            self.events.pop();
            let Some(ev) = self.payload.remove(&seq) else { continue };
            self.now = self.now.max(at);
            self.try_dial();
            match ev {
                // Frames already on the wire arrive even if the sender closed since (TCP); the node
                // ignores frames of a connection that is no longer its current one.
                Ev::Deliver { to, conn, frame } => self.input(to, Input::Frame { conn, frame }),
                Ev::Down { to, conn } => {
                    if self.open[to] == Some(conn) {
                        self.open[to] = None;
                    }
                    self.input(to, Input::TransportDown { conn, reason: "peer closed".into() });
                }
                Ev::DiskDone { node, inc, token } => {
                    if self.inc[node] != inc {
                        continue;
                    }
                    let Some(io) = self.nodes[node].as_mut().and_then(|n| n.pending.remove(&token)) else { continue };
                    if self.disk_failed[node] {
                        self.input(node, Input::DiskDone { token, result: Err("injected I/O error".into()) });
                        continue;
                    }
                    let result = match io {
                        Io::Write { offset, data, fua } => {
                            self.land(node, offset, data, fua);
                            Ok(None)
                        }
                        Io::Read { offset, len } => {
                            Ok(Some(Bytes::copy_from_slice(&self.data[node][offset as usize..(offset + len) as usize])))
                        }
                        Io::Flush { cover } => {
                            if let Some(c) = self.cache.as_mut() {
                                c[node].commit(cover);
                            }
                            Ok(None)
                        }
                    };
                    self.input(node, Input::DiskDone { token, result });
                }
                Ev::Tick { node, inc } => {
                    if self.inc[node] != inc || self.nodes[node].is_none() {
                        continue;
                    }
                    let now = self.now;
                    self.input(node, Input::Tick { now_ms: now });
                    let inc = self.inc[node];
                    self.push(now + 10, Ev::Tick { node, inc });
                }
            }
        }
        self.now = self.now.max(until);
        self.try_dial();
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.snapshot(i).map(|s| s.role)
    }

    /// Both alive, connected, established, UpToDate, nothing out of sync.
    pub fn converged(&self) -> bool {
        (0..2).all(|i| {
            self.snapshot(i).is_some_and(|s| {
                s.conn == ConnState::Connected && s.repl == ReplState::Established && s.disk == DiskState::UpToDate
                    && s.peer_disk == DiskState::UpToDate && s.out_of_sync_blocks == 0
            }) && self.nodes[i].as_ref().is_some_and(|n| n.node.idle())
        })
    }
}
