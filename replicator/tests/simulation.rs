//! Seeded simulation of two replicating nodes (fault model: see `replicator::sim::world`, built with the `sim` feature).
//!
//! Every seed: initial full sync, then a random schedule of application writes/reads/flushes with
//! partitions (both ways, one way), crashes at random points (also in the middle of a metadata write),
//! restarts and latency spikes, data disks that start failing every request (`on-io-error detach`; the
//! node is restarted on its old contents later); some seeds also force a split brain. Afterwards the faults heal and the
//! checks run: no acknowledged write lost (read back on both disks), both replicas byte-identical after
//! the final resync, and a split brain under the `disconnect` policy was reported (StandAlone, flagged)
//! and nothing was synced until an operator resolved it. Persistent-reservation updates (whole-state
//! blobs, `Input::PrUpdate`) are interleaved with all of it: an update that completed OK is present on
//! every Primary from then on (whichever node serves next), a stored state is always one update's blob
//! whole, a split brain's rogue updates never survive its resolution, and both nodes end with the same
//! state. Seeds vary `csums-alg` (off, sha1 for full syncs, crc32c for every resync): blocks declared
//! equal by digest must be equal, which the byte-identical check at the end proves.
//!
//! `SIM_SEEDS=N` sets the number of seeds; `SIM_SEED=S cargo test -p replicator --test simulation
//! replay_one_seed -- --nocapture` replays one with its trace.

// Two nodes indexed 0/1 across parallel arrays read clearer as index loops.
#![allow(clippy::needless_range_loop)]

use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, DiskState, Role};
use replicator::machine::{CsumAlg, CsumsOptions, Input};
use replicator::sim::model::{fill, pr_blob, pr_id, tag, Model};
use replicator::sim::world::{params, AppDone, World, SECTOR};
use std::collections::HashMap;

const SIZE: u64 = 16 << 20;
const AL_EXTENTS: u32 = 7;

struct Run {
    w: World,
    model: Model,
    next_id: u64,
    inflight: HashMap<u64, (usize, u64, u64, bool, u64)>,
    reads: HashMap<u64, (usize, u64, u64, u64)>,
    /// PR updates in flight: id → (node, rogue, incarnation).
    pr_inflight: HashMap<u64, (usize, bool, u64)>,
    /// Highest PR update id acknowledged OK (updates are issued in id order by the one Primary).
    pr_acked: Option<u64>,
    /// Ids issued by a split brain's rogue Primary.
    pr_rogue: std::collections::HashSet<u64>,
    last_primary: usize,
    split: Option<SplitState>,
    stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    writes_acked: u64,
    crashes: u64,
    partitions: u64,
    failovers: u64,
    split_brains: u64,
    disk_failures: u64,
    pr_acked: u64,
    /// Resync bytes found equal by digest on the final SyncSource (since its last start).
    csum_equal_bytes: u64,
}

struct SplitState {
    rogue: usize,
    detected: bool,
    rs_received_at_split: [u64; 2],
}

impl Run {
    fn new(seed: u64) -> Run {
        // `on-io-error detach` everywhere: it only matters once a data disk fails (a chaos fault below).
        let mut params = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
        // Checksum-based resync (issue 18) by seed: off, the default (sha1, full syncs only), or crc32c
        // for every resync; the final check (both disks byte-identical) covers all three.
        let csums = match seed % 3 {
            0 => CsumsOptions { alg: None, every_resync: false },
            1 => CsumsOptions::default(),
            _ => CsumsOptions { alg: Some(CsumAlg::Crc32c), every_resync: true },
        };
        for p in &mut params {
            p.detach_on_io_error = true;
            p.csums = csums;
        }
        let mut w = World::with_params(seed, SIZE, AL_EXTENTS, params);
        w.start(0);
        w.start(1);
        Run {
            w,
            model: Model::new(SIZE),
            next_id: 1,
            inflight: HashMap::new(),
            reads: HashMap::new(),
            pr_inflight: HashMap::new(),
            pr_acked: None,
            pr_rogue: Default::default(),
            last_primary: 0,
            split: None,
            stats: Stats::default(),
        }
    }

    fn bootstrap(&mut self) -> Result<(), String> {
        self.w.input(0, Input::Primary { force: true });
        self.w.input(0, Input::Connect { discard_my_data: false });
        self.w.input(1, Input::Connect { discard_my_data: false });
        self.settle(60_000)
    }

    /// Issue one application write on node `p`.
    fn write(&mut self, p: usize) {
        let sectors_total = SIZE / SECTOR as u64;
        let hot = self.w.rng.chance(0.5);
        let span = if hot { 2048 } else { sectors_total };
        let n = 1 + self.w.rng.below(64);
        let first = self.w.rng.below(span - n);
        let id = self.next_id;
        self.next_id += 1;
        let rogue = self.split.as_ref().is_some_and(|s| s.rogue == p);
        if !rogue {
            self.model.issued(id, first, n);
        }
        self.inflight.insert(id, (p, first, n, rogue, self.w.inc[p]));
        let data = bytes::Bytes::from(fill(id, first, n as usize));
        let fua = self.w.rng.chance(0.1);
        self.w.input(p, Input::Write { id, offset: first * SECTOR as u64, data, fua });
    }

    /// Issue one persistent-reservation update on node `p`: a whole-state blob naming its id.
    fn pr_update(&mut self, p: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let rogue = self.split.as_ref().is_some_and(|s| s.rogue == p);
        if rogue {
            self.pr_rogue.insert(id);
        }
        let len = 8 + self.w.rng.below(600) as usize;
        self.pr_inflight.insert(id, (p, rogue, self.w.inc[p]));
        self.w.input(p, Input::PrUpdate { id, blob: pr_blob(id, len) });
    }

    /// The invariants of a node's stored PR state (see the module doc).
    fn check_pr(&self, i: usize, what: &str) -> Result<(), String> {
        let Some(n) = self.w.nodes[i].as_ref() else { return Ok(()) };
        let id = pr_id(n.node.pr_state()).map_err(|e| format!("{what}: node{i} holds a damaged PR state: {e}"))?;
        if let Some(acked) = self.pr_acked
            && id.is_none_or(|v| v < acked)
        {
            return Err(format!("{what}: node{i} serves PR state {id:?}, older than the acknowledged update {acked}"));
        }
        if self.split.is_none() && id.is_some_and(|v| self.pr_rogue.contains(&v)) {
            return Err(format!("{what}: node{i} kept PR update {id:?} of a resolved split brain's rogue Primary"));
        }
        Ok(())
    }

    fn read(&mut self, p: usize) {
        let n = 1 + self.w.rng.below(32);
        let first = self.w.rng.below(2048 - n);
        let id = self.next_id;
        self.next_id += 1;
        self.reads.insert(id, (p, first, n, self.w.inc[p]));
        self.w.input(p, Input::Read { id, offset: first * SECTOR as u64, len: n * SECTOR as u64 });
    }

    fn collect(&mut self) -> Result<(), String> {
        // Requests to a node that crashed never complete; their writes stay "maybe" in the model.
        let live = |w: &World, node: usize, inc: u64| w.nodes[node].is_some() && w.inc[node] == inc;
        let w = &self.w;
        self.inflight.retain(|_, v| live(w, v.0, v.4));
        self.reads.retain(|_, v| live(w, v.0, v.3));
        self.pr_inflight.retain(|_, v| live(w, v.0, v.2));
        for d in std::mem::take(&mut self.w.done) {
            match d {
                AppDone::Write { id, ok } => {
                    if let Some((_, rogue, _)) = self.pr_inflight.remove(&id) {
                        if ok && !rogue {
                            self.pr_acked = self.pr_acked.max(Some(id));
                            self.stats.pr_acked += 1;
                        }
                        continue;
                    }
                    let Some((_, first, n, rogue, _)) = self.inflight.remove(&id) else { continue };
                    if ok && !rogue {
                        self.model.acked(id, first, n);
                        self.stats.writes_acked += 1;
                    }
                }
                AppDone::Read { id, data } => {
                    let Some((node, first, n, _)) = self.reads.remove(&id) else { continue };
                    let rogue = self.split.as_ref().is_some_and(|s| s.rogue == node);
                    if let (Some(data), false) = (data, rogue) {
                        for k in 0..n as usize {
                            let s = first + k as u64;
                            if tag(&data[k * SECTOR..(k + 1) * SECTOR], s).is_none() {
                                return Err(format!("read on node{node} returned garbage in sector {s}"));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The oracle cluster manager: it promotes the other node only when that loses nothing — its disk
    /// holds every acknowledged write and the dead Primary's generation did not move on — which is what
    /// fencing/outdating guarantees in production (a later issue); otherwise it waits for the Primary.
    fn manage(&mut self) -> Result<(), String> {
        let primaries: Vec<usize> = (0..2).filter(|&i| self.w.role(i) == Some(Role::Primary)).collect();
        if !primaries.is_empty() {
            if let Some(&p) = primaries.iter().find(|&&p| self.split.as_ref().is_none_or(|s| s.rogue != p)) {
                self.last_primary = p;
                self.check_pr(p, "serving Primary")?;
            }
            return Ok(());
        }
        let lp = self.last_primary;
        let up = |w: &World, i: usize| w.snapshot(i).is_some_and(|s| s.disk == DiskState::UpToDate);
        let candidate = if up(&self.w, lp) {
            Some(lp)
        } else if self.w.nodes[lp].is_none() && up(&self.w, 1 - lp) {
            let c = 1 - lp;
            let same_gen = self.w.snapshot(c).is_some_and(|s| s.uuids.current & !1 == self.w.disk_current_uuid(lp) & !1);
            let has_all = self.model.check(&self.w.data[c], "candidate").is_ok();
            (same_gen && has_all).then_some(c)
        } else {
            None
        };
        if let Some(c) = candidate {
            self.w.input(c, Input::Primary { force: false });
            if self.w.role(c) == Some(Role::Primary) {
                if c != lp {
                    self.stats.failovers += 1;
                }
                self.w.note(format!("manager promoted node{c}"));
                self.last_primary = c;
                self.check_pr(c, "promoted node")?;
            }
        }
        Ok(())
    }

    fn chaos(&mut self, t_end: u64, allow_split: bool) -> Result<(), String> {
        let mut restart_at: [Option<u64>; 2] = [None, None];
        // A failed data disk is replaced (the node restarted on its old contents) at this time.
        let mut repair_at: [Option<u64>; 2] = [None, None];
        let mut heal_at: Option<u64> = None;
        let mut split_planned = allow_split && self.w.rng.chance(0.25);
        while self.w.now < t_end {
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
            let now = self.w.now;
            for i in 0..2 {
                if restart_at[i].is_some_and(|t| t <= now) && self.w.nodes[i].is_none() {
                    restart_at[i] = None;
                    self.w.start(i);
                    self.w.input(i, Input::Connect { discard_my_data: false });
                }
            }
            for i in 0..2 {
                if repair_at[i].is_some_and(|t| t <= now) {
                    repair_at[i] = None;
                    self.w.note(format!("node{i}: failed disk repaired; restarting the node"));
                    self.w.crash(i);
                    self.w.disk_failed[i] = false;
                    restart_at[i] = Some(now + 10);
                }
            }
            if heal_at.is_some_and(|t| t <= now) {
                heal_at = None;
                self.w.set_path(0, true);
                self.w.set_path(1, true);
                self.w.note("network healed".into());
            }
            // Application load on every Primary (a rogue one during a split brain too).
            for p in 0..2 {
                if self.w.role(p) != Some(Role::Primary) {
                    continue;
                }
                let mine = self.inflight.values().filter(|v| v.0 == p).count();
                if mine < 4 && self.w.rng.chance(0.6) {
                    self.write(p);
                }
                if self.w.rng.chance(0.03) {
                    self.read(p);
                }
                if self.w.rng.chance(0.02) {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.w.input(p, Input::Flush { id });
                }
                if self.w.rng.chance(0.01) {
                    self.pr_update(p);
                }
            }
            // Faults.
            let r = self.w.rng.below(1000);
            if r < 4 && heal_at.is_none() {
                let one_way = self.w.rng.chance(0.4);
                let from = self.w.rng.below(2) as usize;
                self.w.set_path(from, false);
                if !one_way {
                    self.w.set_path(1 - from, false);
                }
                heal_at = Some(now + 50 + self.w.rng.below(2000));
                self.stats.partitions += 1;
                self.w.note(format!("partition {}", if one_way { format!("one way from node{from}") } else { "both ways".into() }));
            } else if r < 7 {
                let i = self.w.rng.below(2) as usize;
                if self.w.nodes[i].is_some() && restart_at[i].is_none() {
                    if self.w.rng.chance(0.5) {
                        self.w.crash_next_step[i] = true;
                    } else {
                        self.w.crash(i);
                    }
                    self.stats.crashes += 1;
                    restart_at[i] = Some(now + 50 + self.w.rng.below(1500));
                }
            } else if r == 7 && repair_at.iter().all(Option::is_none) {
                let i = self.w.rng.below(2) as usize;
                if self.w.nodes[i].is_some() && restart_at[i].is_none() {
                    self.w.note(format!("node{i}: data disk starts failing"));
                    self.w.disk_failed[i] = true;
                    self.stats.disk_failures += 1;
                    repair_at[i] = Some(now + 200 + self.w.rng.below(2000));
                }
            } else if split_planned && r < 9 && heal_at.is_none() && self.w.nodes.iter().all(Option::is_some) && repair_at.iter().all(Option::is_none) {
                // (Not with a detached disk: a Diskless node stays StandAlone, so there is no split
                // brain to detect.)
                split_planned = false;
                self.force_split_brain()?;
            }
            if self.w.now.is_multiple_of(50) {
                self.manage()?;
            }
            for i in 0..2 {
                if self.w.nodes[i].is_none() && restart_at[i].is_none() {
                    restart_at[i] = Some(now + 100);
                }
            }
        }
        Ok(())
    }

    /// Partition both ways until both sides noticed, then promote the other side too (an unsafe
    /// cluster manager) and let both write.
    fn force_split_brain(&mut self) -> Result<(), String> {
        let Some(p) = (0..2).find(|&i| self.w.role(i) == Some(Role::Primary)) else { return Ok(()) };
        let rogue = 1 - p;
        self.w.note(format!("forcing a split brain: node{rogue} will be promoted while cut off"));
        self.w.set_path(0, false);
        self.w.set_path(1, false);
        let t = self.w.now + 3_000;
        while self.w.now < t {
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
        }
        if self.w.nodes.iter().any(Option::is_none) || self.w.snapshot(rogue).is_some_and(|s| s.disk != DiskState::UpToDate) {
            self.w.set_path(0, true);
            self.w.set_path(1, true);
            return Ok(());
        }
        self.w.input(rogue, Input::Primary { force: false });
        if self.w.role(rogue) != Some(Role::Primary) {
            self.w.set_path(0, true);
            self.w.set_path(1, true);
            return Ok(());
        }
        let rs = [0, 1].map(|i| self.w.snapshot(i).map(|s| s.stats.resync_blocks_received).unwrap_or(0));
        self.split = Some(SplitState { rogue, detected: false, rs_received_at_split: rs });
        self.stats.split_brains += 1;
        // Both write for a while, then the network heals.
        let t = self.w.now + 1_000;
        while self.w.now < t {
            for q in 0..2 {
                if self.w.role(q) == Some(Role::Primary) && self.inflight.values().filter(|v| v.0 == q).count() < 4 {
                    self.write(q);
                }
                if self.w.role(q) == Some(Role::Primary) && self.w.rng.chance(0.02) {
                    self.pr_update(q);
                }
            }
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
        }
        self.w.set_path(0, true);
        self.w.set_path(1, true);
        self.w.note("network healed after the split".into());
        // Stop the rogue's writes and watch the reconnect.
        let t = self.w.now + 5_000;
        while self.w.now < t {
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
            let both = (0..2).all(|i| self.w.snapshot(i).is_some_and(|s| s.conn == ConnState::StandAlone && s.split_brain));
            if both {
                break;
            }
        }
        let s = self.split.as_mut().expect("split state");
        for i in 0..2 {
            let snap = self.w.snapshot(i).ok_or("node died during split check")?;
            if snap.stats.resync_blocks_received != s.rs_received_at_split[i] {
                return Err(format!("node{i} received resync data during an unresolved split brain"));
            }
            if !(snap.conn == ConnState::StandAlone && snap.split_brain) {
                return Err(format!("node{i} did not report the split brain: {:?} split_brain={}", snap.conn, snap.split_brain));
            }
        }
        s.detected = true;
        self.w.note("split brain detected on both nodes; resolving by hand on the rogue".into());
        // Operator: the rogue gives up (drbdadm secondary; connect --discard-my-data), the survivor connects.
        let deadline = self.w.now + 5_000;
        while (self.inflight.values().any(|v| v.0 == rogue) || self.pr_inflight.values().any(|v| v.0 == rogue)) && self.w.now < deadline {
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
        }
        self.w.input(rogue, Input::Secondary);
        self.w.input(rogue, Input::Connect { discard_my_data: true });
        self.w.input(p, Input::Connect { discard_my_data: false });
        self.settle(60_000)?;
        self.split = None;
        Ok(())
    }

    /// Let everything converge: no faults, no new writes.
    fn settle(&mut self, budget: u64) -> Result<(), String> {
        let deadline = self.w.now + budget;
        while self.w.now < deadline {
            let now = self.w.now;
            self.w.run_until(now + 10);
            self.collect()?;
            if self.w.now.is_multiple_of(50) {
                self.manage()?;
            }
            if self.w.converged() && self.inflight.is_empty() && self.pr_inflight.is_empty() {
                return Ok(());
            }
        }
        let s: Vec<_> = (0..2).map(|i| self.w.snapshot(i)).collect();
        Err(format!("did not converge within {budget} ms: {s:#?}"))
    }

    fn finish(&mut self) -> Result<(), String> {
        self.w.crash_next_step = [false, false];
        for i in 0..2 {
            if self.w.disk_failed[i] {
                self.w.crash(i);
                self.w.disk_failed[i] = false;
            }
        }
        self.w.set_path(0, true);
        self.w.set_path(1, true);
        for i in 0..2 {
            if self.w.nodes[i].is_none() {
                self.w.start(i);
            }
            if self.w.snapshot(i).is_some_and(|s| s.conn == ConnState::StandAlone) {
                self.w.input(i, Input::Connect { discard_my_data: false });
            }
        }
        self.settle(120_000)?;
        if self.w.data[0] != self.w.data[1] {
            let first = (0..SIZE as usize).find(|&k| self.w.data[0][k] != self.w.data[1][k]).unwrap_or(0);
            return Err(format!("replicas differ after the final resync (first difference at byte {first})"));
        }
        self.model.check(&self.w.data[0], "node0")?;
        self.model.check(&self.w.data[1], "node1")?;
        self.stats.csum_equal_bytes = (0..2).filter_map(|i| self.w.snapshot(i)).map(|s| s.stats.resync_csum_equal_bytes).sum();
        self.check_pr(0, "after the final resync")?;
        self.check_pr(1, "after the final resync")?;
        let pr = [0, 1].map(|i| self.w.nodes[i].as_ref().map(|n| n.node.pr_state().clone()));
        if pr[0] != pr[1] {
            return Err(format!("PR states differ after the final resync: {:?} vs {:?}", pr[0].as_deref().map(pr_id), pr[1].as_deref().map(pr_id)));
        }
        Ok(())
    }
}
fn run_seed(seed: u64, allow_split: bool) -> Result<Stats, (String, Vec<String>)> {
    let mut run = Run::new(seed);
    let result = run.bootstrap().and_then(|()| run.chaos(15_000, allow_split)).and_then(|()| run.finish());
    match result {
        Ok(()) => Ok(run.stats),
        Err(e) => Err((e, std::mem::take(&mut run.w.trace))),
    }
}

fn report(seed: u64, e: &str, trace: &[String]) -> String {
    let tail: Vec<_> = trace.iter().rev().take(60).rev().cloned().collect();
    format!("seed {seed} FAILED: {e}\n--- last trace lines ---\n{}\nreplay: SIM_SEED={seed} cargo test -p replicator --test simulation replay_one_seed -- --nocapture", tail.join("\n"))
}

#[test]
fn many_seeds_no_acked_write_lost_replicas_identical_split_brain_never_silent() {
    let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let base: u64 = std::env::var("SIM_BASE").ok().and_then(|s| s.parse().ok()).unwrap_or(0xC0FFEE);
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    for k in 0..n {
        let seed = base.wrapping_add(k);
        match run_seed(seed, true) {
            Ok(s) => {
                total.writes_acked += s.writes_acked;
                total.crashes += s.crashes;
                total.partitions += s.partitions;
                total.failovers += s.failovers;
                total.split_brains += s.split_brains;
                total.disk_failures += s.disk_failures;
                total.pr_acked += s.pr_acked;
                total.csum_equal_bytes += s.csum_equal_bytes;
            }
            Err((e, trace)) => panic!("{}", report(seed, &e, &trace)),
        }
    }
    eprintln!("simulated {n} seeds in {:.1?}: {total:?}", started.elapsed());
    assert!(total.crashes > 0 && total.partitions > 0 && total.writes_acked > 0, "the schedule injected no faults: {total:?}");
    assert!(total.pr_acked > 0, "no persistent-reservation update was acknowledged: {total:?}");
    assert!(total.csum_equal_bytes > 0, "no resync compared digests: {total:?}");
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    match run_seed(seed, true) {
        Ok(s) => eprintln!("seed {seed} passed: {s:?}"),
        Err((e, trace)) => {
            for line in &trace {
                eprintln!("{line}");
            }
            panic!("seed {seed}: {e}");
        }
    }
}
