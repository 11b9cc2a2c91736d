//! The group's single replicated resource: the replicator's real state machines in the replication
//! world of `replicator::sim` (FIFO network with latency and partitions, data disks completing in any
//! order and tearing in-flight writes at a crash, metadata through the real `MetaStore` with torn
//! writes), plus the application's ledger of what it wrote and what was acknowledged.
//!
//! The failover world drives it the way the daemon drives its volumes: `start` + `connect` when the
//! daemon starts, `primary`/`secondary` verbs for the promote/demote steps (with the engine's checks),
//! snapshots mapped through `clusterd::failover::volumes_view`, writes submitted by the iSCSI target of
//! the node holding the group.

use clusterd::failover::{LocalVolumes, volumes_view};
use replicator::machine::Input;
use replicator::machine::policy::Policies;
use replicator::machine::state::{ConnState, DiskState, Role};
use replicator::sim::model::{Model, check_pr, fill, pr_blob};
use replicator::sim::world::{AppDone, SECTOR, World as ReplWorld, params};
use std::collections::HashMap;

/// Small enough that the initial full sync and every final resync are quick.
pub const SIZE: u64 = 1 << 20;
const AL_EXTENTS: u32 = 7;
const SECTORS: u64 = SIZE / SECTOR as u64;

/// One application write in flight.
struct AppWrite {
    node: usize,
    /// The daemon incarnation that submitted it: an acknowledgement reaching a crashed target is lost.
    incarnation: u64,
    first: u64,
    sectors: u64,
}

pub struct Storage {
    pub repl: ReplWorld,
    /// Every acknowledged write.
    pub model: Model,
    /// Only writes acknowledged while the writer's replication link was connected to an UpToDate peer
    /// (protocol C: the peer has them); writes acknowledged with the link down are "maybe" here.
    pub model_replicated: Model,
    /// Failover-world time 0 in replication-world time (the bootstrap sync ran before).
    offset: u64,
    next_id: u64,
    inflight: HashMap<u64, AppWrite>,
    pub acked: u64,
    /// Acknowledged writes per node since the last [`Storage::reset_split_ledger`].
    pub acked_by: [u64; 2],
    /// Persistent-reservation updates in flight: id → (node, incarnation).
    pr_inflight: HashMap<u64, (usize, u64)>,
    /// Highest PR update acknowledged OK (ledger), and the highest acknowledged while replicated.
    pr_acked: Option<u64>,
    pr_replicated: Option<u64>,
    pub pr_acks: u64,
}

impl Storage {
    /// Two nodes with one freshly created resource, initially synced (as `haadm primary --force` on
    /// one node then `secondary` would leave them), both shut down.
    /// `freeze_io_on_peer_loss`: `fencing resource-and-stonith` (the daemon sets both from the config).
    pub fn bootstrap(seed: u64, fencing_dont_care: bool, freeze_io_on_peer_loss: bool) -> Result<Storage, String> {
        let mut ps = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
        for p in &mut ps {
            p.fencing_dont_care = fencing_dont_care;
            p.freeze_io_on_peer_loss = freeze_io_on_peer_loss;
        }
        let mut repl = ReplWorld::with_params(seed ^ 0x51AB_0000_F00D, SIZE, AL_EXTENTS, ps);
        repl.start(0);
        repl.start(1);
        repl.input(0, Input::Primary { force: true });
        repl.input(0, Input::Connect { discard_my_data: false });
        repl.input(1, Input::Connect { discard_my_data: false });
        let deadline = repl.now + 60_000;
        while !repl.converged() {
            if repl.now >= deadline {
                return Err(format!("bootstrap sync did not finish: {:?} / {:?}", repl.snapshot(0), repl.snapshot(1)));
            }
            let t = repl.now + 10;
            repl.run_until(t);
        }
        repl.input(0, Input::Secondary);
        let t = repl.now + 50;
        repl.run_until(t);
        repl.shutdown(0);
        repl.shutdown(1);
        let t = repl.now + 50;
        repl.run_until(t);
        repl.trace.clear();
        let offset = repl.now;
        Ok(Storage {
            repl,
            model: Model::new(SIZE),
            model_replicated: Model::new(SIZE),
            offset,
            next_id: 1,
            inflight: HashMap::new(),
            acked: 0,
            acked_by: [0; 2],
            pr_inflight: HashMap::new(),
            pr_acked: None,
            pr_replicated: None,
            pr_acks: 0,
        })
    }

    /// Runs the replication world up to failover-world time `now`.
    pub fn run_until(&mut self, now: u64) {
        self.repl.run_until(self.offset + now);
    }

    /// The daemon starts: the resource attaches from its metadata and connects.
    pub fn start(&mut self, i: usize) {
        if !self.repl.is_up(i) {
            self.repl.start(i);
        }
        self.repl.input(i, Input::Connect { discard_my_data: false });
    }

    /// The node dies. `torn`: the crash lands in the middle of the machine's next step (a metadata
    /// write it is doing may be torn) instead of between steps.
    pub fn crash(&mut self, i: usize, torn: bool) {
        if torn && self.repl.is_up(i) {
            self.repl.crash_next_step[i] = true;
        } else {
            self.repl.crash(i);
        }
    }

    /// A torn-crash request still pending (the machine has not stepped since): crash it now.
    pub fn finish_crash(&mut self, i: usize) {
        if self.repl.crash_next_step[i] {
            self.repl.crash(i);
        }
    }

    pub fn volumes(&self, i: usize) -> LocalVolumes {
        volumes_view(&[self.repl.snapshot(i)])
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.repl.role(i)
    }

    pub fn disk(&self, i: usize) -> Option<DiskState> {
        self.repl.snapshot(i).map(|s| s.disk)
    }

    /// The daemon's promote step: the engine's `Primary` verb (its checks first, as `haadm primary`).
    pub fn promote(&mut self, i: usize) -> Result<(), String> {
        let Some(m) = self.repl.machine(i) else { return Err("r0: resource is not running".into()) };
        m.check_primary(false).map_err(|e| format!("r0: {e}"))?;
        self.repl.input(i, Input::Primary { force: false });
        if self.role(i) == Some(Role::Primary) { Ok(()) } else { Err("r0: promotion did not take effect".into()) }
    }

    /// The daemon's demote step: the engine's `Secondary` verb; not running = nothing to demote.
    pub fn demote(&mut self, i: usize) -> Result<(), String> {
        if self.role(i) != Some(Role::Primary) {
            return Ok(());
        }
        self.repl.input(i, Input::Secondary);
        if self.role(i) == Some(Role::Primary) { Err("r0: writes are in flight; try again".into()) } else { Ok(()) }
    }

    /// Application writes of node i's target not yet answered.
    pub fn inflight(&self, i: usize) -> usize {
        self.inflight.values().filter(|w| w.node == i).count()
    }

    /// The target on node i submits one application write (random place, 1-32 sectors, some FUA).
    /// `ledger`: the write counts for the acknowledged-writes check (false while the run is a split).
    pub fn write(&mut self, i: usize, incarnation: u64, rng: &mut super::world::Rng, ledger: bool) {
        let sectors = rng.range(1, 33);
        let hot = rng.chance(0.5);
        let span = if hot { 256 } else { SECTORS };
        let first = rng.range(0, span - sectors);
        let id = self.next_id;
        self.next_id += 1;
        if ledger {
            self.model.issued(id, first, sectors);
            self.model_replicated.issued(id, first, sectors);
        }
        self.inflight.insert(id, AppWrite { node: i, incarnation, first, sectors });
        let data = bytes::Bytes::from(fill(id, first, sectors as usize));
        let fua = rng.chance(0.1);
        self.repl.input(i, Input::Write { id, offset: first * SECTOR as u64, data, fua });
    }

    /// The target on node i runs a PERSISTENT RESERVE OUT: the whole new PR state goes to the
    /// replicated resource (`ledger` as for writes).
    pub fn pr_update(&mut self, i: usize, incarnation: u64, rng: &mut super::world::Rng, ledger: bool) {
        let id = self.next_id;
        self.next_id += 1;
        if ledger {
            self.pr_inflight.insert(id, (i, incarnation));
        }
        let len = rng.range(8, 400) as usize;
        self.repl.input(i, Input::PrUpdate { id, blob: pr_blob(id, len) });
    }

    /// Takes the machines' completions: an Ok for a write whose target still runs (same incarnation)
    /// is an acknowledgement the application saw. Writes of a crashed target stay "maybe" forever.
    pub fn collect(&mut self, live: [Option<u64>; 2], ledger: bool) {
        self.inflight.retain(|_, w| live[w.node] == Some(w.incarnation));
        self.pr_inflight.retain(|_, (node, inc)| live[*node] == Some(*inc));
        for d in std::mem::take(&mut self.repl.done) {
            let AppDone::Write { id, ok } = d else { continue };
            if let Some((node, _)) = self.pr_inflight.remove(&id) {
                if ok && ledger {
                    self.pr_acked = self.pr_acked.max(Some(id));
                    self.pr_acks += 1;
                    let replicated = self.repl.snapshot(node).is_some_and(|s| {
                        s.conn == ConnState::Connected && s.peer_disk == DiskState::UpToDate
                    });
                    if replicated {
                        self.pr_replicated = self.pr_replicated.max(Some(id));
                    }
                }
                continue;
            }
            let Some(w) = self.inflight.remove(&id) else { continue };
            if ok {
                self.acked += 1;
                self.acked_by[w.node] += 1;
                if ledger {
                    self.model.acked(id, w.first, w.sectors);
                    let replicated = self.repl.snapshot(w.node).is_some_and(|s| {
                        s.conn == ConnState::Connected && s.peer_disk == DiskState::UpToDate
                    });
                    if replicated {
                        self.model_replicated.acked(id, w.first, w.sectors);
                    }
                }
            }
        }
    }

    /// Every acknowledged write (latest per sector) is on node i's disk, and its persistent-reservation
    /// state is not older than the last acknowledged PERSISTENT RESERVE OUT.
    pub fn check_has_acked(&self, i: usize, who: &str) -> Result<(), String> {
        self.model.check(&self.repl.data[i], who)?;
        check_pr(&self.pr_of(i), self.pr_acked, who)
    }

    /// The same for what was acknowledged while replication was connected.
    pub fn check_has_replicated(&self, i: usize, who: &str) -> Result<(), String> {
        self.model_replicated.check(&self.repl.data[i], who)?;
        check_pr(&self.pr_of(i), self.pr_replicated, who)
    }

    /// Node i's persistent-reservation state: the running machine's, or what its metadata holds.
    fn pr_of(&self, i: usize) -> Vec<u8> {
        match self.repl.machine(i) {
            Some(m) => m.pr_state().to_vec(),
            None => self.repl.pr_on_disk(i),
        }
    }

    /// Both running, connected, UpToDate on both sides, nothing out of sync or in flight.
    pub fn converged(&self) -> bool {
        self.repl.converged()
    }

    pub fn split_brain_reported(&self) -> bool {
        (0..2).any(|i| self.repl.snapshot(i).is_some_and(|s| s.split_brain))
    }

    pub fn replicas_identical(&self) -> Result<(), String> {
        let (a, b) = (&self.repl.data[0], &self.repl.data[1]);
        match a.iter().zip(b.iter()).position(|(x, y)| x != y) {
            None => Ok(()),
            Some(k) => Err(format!("replicas differ after the final resync (first difference at byte {k})")),
        }
    }

    /// Replication-world trace lines since the last call.
    pub fn drain_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.repl.trace)
    }
}
