//! Seeded simulation of `on-io-error detach`: a running pair, then one node's data disk starts failing
//! every request (it keeps its old contents). Checked per seed:
//! - the Primary's disk failing: it goes Diskless and keeps serving from the peer — every write and
//!   flush issued meanwhile succeeds, every read returns acknowledged data — unless the link is cut too,
//!   in which case requests fail and none is acknowledged without a copy on the peer;
//! - the Secondary's disk failing: it goes Diskless and StandAlone, the Primary keeps acknowledging;
//! - the surviving disk holds every acknowledged write;
//! - after repair (failover if needed, then the failed node restarted on its old disk) the pair
//!   resyncs to byte-identical replicas that hold every acknowledged write.
//!
//! `DETACH_SEEDS=N` sets the number of seeds; a failure prints the seed and the trace tail.

#![allow(clippy::needless_range_loop)]

use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, DiskState, Role};
use replicator::machine::Input;
use replicator::sim::model::{fill, tag, Model};
use replicator::sim::world::{params, AppDone, World, SECTOR};
use std::collections::HashMap;

const SIZE: u64 = 8 << 20;

struct Run {
    w: World,
    model: Model,
    next_id: u64,
    /// id → (node, first sector, sectors)
    writes: HashMap<u64, (usize, u64, u64)>,
    reads: HashMap<u64, (usize, u64, u64)>,
    flushes: HashMap<u64, usize>,
    failed: u64,
    acked: u64,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut p = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
        for q in &mut p {
            q.detach_on_io_error = true;
        }
        let mut w = World::with_params(seed, SIZE, 7, p);
        w.start(0);
        w.start(1);
        Run { w, model: Model::new(SIZE), next_id: 1, writes: HashMap::new(), reads: HashMap::new(), flushes: HashMap::new(), failed: 0, acked: 0 }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn load(&mut self, p: usize) {
        if self.writes.len() < 4 && self.w.rng.chance(0.6) {
            let n = 1 + self.w.rng.below(32);
            let first = self.w.rng.below(4096 - n);
            let id = self.id();
            self.model.issued(id, first, n);
            self.writes.insert(id, (p, first, n));
            let data = bytes::Bytes::from(fill(id, first, n as usize));
            let fua = self.w.rng.chance(0.1);
            self.w.input(p, Input::Write { id, offset: first * SECTOR as u64, data, fua });
        }
        if self.w.rng.chance(0.1) {
            let n = 1 + self.w.rng.below(16);
            let first = self.w.rng.below(4096 - n);
            let id = self.id();
            self.reads.insert(id, (p, first, n));
            self.w.input(p, Input::Read { id, offset: first * SECTOR as u64, len: n * SECTOR as u64 });
        }
        if self.w.rng.chance(0.03) {
            let id = self.id();
            self.flushes.insert(id, p);
            self.w.input(p, Input::Flush { id });
        }
    }

    /// Run `ms` of virtual time with load on `load_on`; returns how many requests failed.
    fn run(&mut self, ms: u64, load_on: Option<usize>) -> Result<(), String> {
        let end = self.w.now + ms;
        while self.w.now < end {
            if let Some(p) = load_on {
                self.load(p);
            }
            let now = self.w.now;
            self.w.run_until(now + 5);
            self.collect()?;
        }
        Ok(())
    }

    fn collect(&mut self) -> Result<(), String> {
        for d in std::mem::take(&mut self.w.done) {
            match d {
                AppDone::Write { id, ok } => {
                    if let Some((_, first, n)) = self.writes.remove(&id) {
                        if ok {
                            self.model.acked(id, first, n);
                            self.acked += 1;
                        } else {
                            self.failed += 1;
                        }
                    } else if self.flushes.remove(&id).is_some() && !ok {
                        self.failed += 1;
                    }
                }
                AppDone::Read { id, data } => {
                    let Some((node, first, n)) = self.reads.remove(&id) else { continue };
                    let Some(data) = data else {
                        self.failed += 1;
                        continue;
                    };
                    for k in 0..n as usize {
                        let s = first + k as u64;
                        match tag(&data[k * SECTOR..(k + 1) * SECTOR], s) {
                            Some(t) if self.model.allows(s, t) => {}
                            t => return Err(format!("read on node{node} returned {t:?} in sector {s}, not an acknowledged write")),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn wait(&mut self, what: &str, budget: u64, f: impl Fn(&World) -> bool) -> Result<(), String> {
        let end = self.w.now + budget;
        while self.w.now < end {
            if f(&self.w) {
                return Ok(());
            }
            let now = self.w.now;
            self.w.run_until(now + 10);
            self.collect()?;
        }
        Err(format!("timed out waiting for {what}: {:?} / {:?}", self.w.snapshot(0), self.w.snapshot(1)))
    }

    fn scenario(&mut self) -> Result<(), String> {
        self.w.input(0, Input::Primary { force: true });
        self.w.input(0, Input::Connect { discard_my_data: false });
        self.w.input(1, Input::Connect { discard_my_data: false });
        self.wait("the initial sync", 60_000, |w| w.converged())?;
        let before = 200 + self.w.rng.below(1500);
        self.run(before, Some(0))?;

        let x = self.w.rng.below(2) as usize;
        let cut_link = x == 0 && self.w.rng.chance(0.3);
        self.w.note(format!("node{x}'s disk starts failing{}", if cut_link { "; the link will be cut later" } else { "" }));
        self.w.disk_failed[x] = true;
        let failed_before = self.failed;
        self.run(1500, Some(0))?;
        let s = self.w.snapshot(x).ok_or("node died")?;
        if s.disk != DiskState::Diskless {
            return Err(format!("node{x} did not detach its failing disk: {s:?}"));
        }
        if x == 0 {
            if s.role != Role::Primary || s.conn != ConnState::Connected {
                return Err(format!("the detached Primary stopped serving through the peer: {s:?}"));
            }
            if self.failed != failed_before {
                return Err(format!("{} request(s) failed although the peer served them", self.failed - failed_before));
            }
            let peer = self.w.snapshot(1).ok_or("node1 died")?;
            if peer.peer_disk != DiskState::Diskless || peer.uuids.bitmap == 0 || peer.out_of_sync_blocks != SIZE / 4096 {
                return Err(format!("the survivor did not start a generation with every block marked: {peer:?}"));
            }
            if cut_link {
                // With the peer gone too there is no copy left: everything fails, nothing is acked falsely.
                self.w.set_path(0, false);
                self.w.set_path(1, false);
                self.run(2500, Some(0))?;
                let s = self.w.snapshot(0).ok_or("node0 died")?;
                if s.conn != ConnState::StandAlone {
                    return Err(format!("a Diskless Primary without its peer must stay StandAlone: {s:?}"));
                }
                self.w.set_path(0, true);
                self.w.set_path(1, true);
            }
        } else {
            if s.conn != ConnState::StandAlone {
                return Err(format!("the detached Secondary kept replicating: {s:?}"));
            }
            let p = self.w.snapshot(0).ok_or("node0 died")?;
            if p.role != Role::Primary || p.disk != DiskState::UpToDate || p.out_of_sync_blocks == 0 && self.acked == 0 {
                return Err(format!("the Primary did not carry on alone: {p:?}"));
            }
        }
        // Drain, then the surviving disk must hold every acknowledged write.
        self.run(1000, None)?;
        let survivor = 1 - x;
        self.model.check(&self.w.data[survivor], &format!("node{survivor} (survivor)"))?;

        // Repair: move the Primary role off a Diskless node, restart the failed node on its old disk.
        if x == 0 {
            self.w.input(0, Input::Secondary);
            if self.w.role(0) != Some(Role::Secondary) {
                return Err(format!("the Diskless Primary could not be demoted: {:?}", self.w.snapshot(0)));
            }
            // The survivor learns of the demotion from a State frame (unless the link was cut).
            self.wait("the survivor to see the demotion", 5_000, |w| w.snapshot(1).is_some_and(|s| s.peer_role != Role::Primary))?;
            self.w.input(1, Input::Primary { force: false });
            if self.w.role(1) != Some(Role::Primary) {
                return Err(format!("the survivor could not be promoted: {:?}", self.w.snapshot(1)));
            }
            self.w.input(1, Input::Connect { discard_my_data: false });
        }
        self.w.crash(x);
        self.w.disk_failed[x] = false;
        self.w.start(x);
        // The detach marked the metadata (here on a separate device, as with an external meta-disk).
        let back = self.w.snapshot(x).ok_or("restart failed")?;
        if back.disk != DiskState::Outdated {
            return Err(format!("node{x} came back on its stale disk as {} instead of Outdated", back.disk));
        }
        self.w.input(x, Input::Connect { discard_my_data: false });
        self.wait("resync after the repair", 120_000, |w| w.converged())?;
        if self.w.data[0] != self.w.data[1] {
            return Err("replicas differ after the resync that followed the repair".into());
        }
        self.model.check(&self.w.data[0], "node0")?;
        self.model.check(&self.w.data[1], "node1")
    }
}

#[test]
fn a_failing_disk_detaches_and_no_acknowledged_write_is_lost() {
    let n: u64 = std::env::var("DETACH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let mut acked = 0;
    for seed in 0..n {
        let mut run = Run::new(0xDE7AC4 + seed);
        if let Err(e) = run.scenario() {
            let tail: Vec<_> = run.w.trace.iter().rev().take(60).rev().cloned().collect();
            panic!("seed {} FAILED: {e}\n--- last trace lines ---\n{}", 0xDE7AC4 + seed, tail.join("\n"));
        }
        acked += run.acked;
    }
    assert!(acked > n * 50, "too little load to mean anything: {acked} writes acknowledged over {n} seeds");
}
