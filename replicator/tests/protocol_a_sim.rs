//! Seeded simulation of protocol A (asynchronous replication, issue 18), with protocol-C seeds beside
//! it (fault model: `replicator::sim::world`).
//!
//! Every seed: initial full sync, then node 0 writes as Primary (several writes in flight, some FUA,
//! some flushes) while the link is cut both ways or one way, latency spikes, the Secondary crashes (its
//! in-flight writes land whole, not at all or torn) and the Primary crashes and comes back as Primary.
//! Seeds vary the lag bound (`max-lag` bytes small or large, `max-lag-time`, `on-lag wait|disconnect`).
//!
//! Half the protocol-A seeds put a volatile write cache in front of both disks (what the kernel may
//! write back, in any order, at a power loss) and replace the Secondary's crashes by power losses.
//!
//! The invariant of protocol A, checked after every simulated step while the Secondary's disk is
//! Consistent (not a resync target): **the Secondary's disk is a prefix-consistent past state of the
//! Primary's.** Each write records how many writes had been acknowledged when it was issued (`deps`, a
//! prefix of the acknowledgement order). If the Secondary holds write X in any sector, every write
//! acknowledged before X was issued must be there whole (each of its sectors holds it or a later
//! write). Writes of the newest epoch may be partial (a crash of the Secondary tears them), as on any
//! disk. Protocol C seeds pass the same check, and both protocols end, after healing, with no
//! acknowledged write lost and both disks identical. Some seeds end with a failover instead: the
//! Primary dies; under protocol A the Secondary refuses to be promoted without `--force` and, forced,
//! serves a prefix-consistent state; under C it is promoted without force and has every acknowledged
//! write.
//!
//! `PROTO_A_SEEDS=N` sets the number of seeds; `PROTO_A_SEED=S ... replay_one_seed -- --nocapture`
//! replays one with its trace.

#![allow(clippy::needless_range_loop)]

use replicator::machine::policy::Policies;
use replicator::machine::state::{DiskState, ReplState, Role};
use replicator::machine::{AsyncOptions, Input, OnLag, ReplProtocol};
use replicator::sim::model::{fill, tag, Model};
use replicator::sim::world::{params, AppDone, World, SECTOR};
use std::collections::HashMap;

const SIZE: u64 = 8 << 20;
/// Writes go to the first MiB: many overlaps, and a cheap check after every step.
const HOT_SECTORS: u64 = 2048;
const AL_EXTENTS: u32 = 7;

struct WriteRec {
    first: u64,
    n: u64,
    /// Writes acknowledged when this one was issued (a prefix of `acked_order`).
    deps: usize,
}

struct Run {
    w: World,
    proto: ReplProtocol,
    model: Model,
    next_id: u64,
    writes: HashMap<u64, WriteRec>,
    /// Writes in flight: id → incarnation of node 0 that took it.
    inflight: HashMap<u64, u64>,
    acked_order: Vec<u64>,
    flushes_inflight: u32,
    checks: u64,
    early_acks: u64,
    /// Power losses of the Secondary (seeds with a volatile cache).
    power_losses: u64,
}

fn protocol_for(seed: u64) -> ReplProtocol {
    if seed % 5 == 4 {
        return ReplProtocol::C;
    }
    let max_lag_bytes = [16 << 10, 256 << 10, 64 << 20][(seed / 5 % 3) as usize];
    let on_lag = if seed / 15 % 2 == 1 { OnLag::Disconnect } else { OnLag::Wait };
    let max_lag_ms = seed.is_multiple_of(7).then_some(40);
    ReplProtocol::A(AsyncOptions { max_lag_bytes, max_lag_ms, on_lag, allow_failover: false, epoch_flush: true })
}

impl Run {
    fn new(seed: u64) -> Run {
        let proto = protocol_for(seed);
        let mut ps = [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())];
        for p in &mut ps {
            p.protocol = proto;
        }
        let mut w = World::with_params(seed, SIZE, AL_EXTENTS, ps);
        // Half the A seeds put a volatile write cache in front of the disks and cut the Secondary's
        // power now and then: the epoch flushes must keep its media a prefix.
        if proto.is_async() && seed.is_multiple_of(2) {
            w.enable_volatile_cache();
        }
        w.start(0);
        w.start(1);
        Run {
            w,
            proto,
            model: Model::new(SIZE),
            next_id: 1,
            writes: HashMap::new(),
            inflight: HashMap::new(),
            acked_order: Vec::new(),
            flushes_inflight: 0,
            checks: 0,
            early_acks: 0,
            power_losses: 0,
        }
    }

    fn settle(&mut self, budget_ms: u64) -> Result<(), String> {
        let end = self.w.now + budget_ms;
        while self.w.now < end {
            let t = self.w.now + 50;
            self.w.run_until(t);
            self.collect();
            self.check_prefix()?;
            if self.w.converged() && self.inflight.is_empty() {
                return Ok(());
            }
        }
        Err(format!("not converged within {budget_ms} ms: {:?} / {:?}", self.w.snapshot(0).map(|s| (s.conn, s.repl, s.disk)), self.w.snapshot(1).map(|s| (s.conn, s.repl, s.disk))))
    }

    fn write(&mut self) {
        let n = 1 + self.w.rng.below(16);
        let first = self.w.rng.below(HOT_SECTORS - n);
        let id = self.next_id;
        self.next_id += 1;
        self.model.issued(id, first, n);
        self.writes.insert(id, WriteRec { first, n, deps: self.acked_order.len() });
        self.inflight.insert(id, self.w.inc[0]);
        let fua = self.w.rng.chance(0.05);
        let data = bytes::Bytes::from(fill(id, first, n as usize));
        self.w.input(0, Input::Write { id, offset: first * SECTOR as u64, data, fua });
    }

    fn collect(&mut self) {
        let inc0 = self.w.inc[0];
        let alive = self.w.nodes[0].is_some();
        // Requests to a crashed Primary never complete; their writes stay "maybe" in the model.
        self.inflight.retain(|_, inc| alive && *inc == inc0);
        for d in std::mem::take(&mut self.w.done) {
            let AppDone::Write { id, ok } = d else { continue };
            if id >= 1 << 40 {
                self.flushes_inflight = self.flushes_inflight.saturating_sub(1);
                continue;
            }
            if self.inflight.remove(&id).is_none() || !ok {
                continue;
            }
            let Some(r) = self.writes.get(&id) else { continue };
            self.model.acked(id, r.first, r.n);
            self.acked_order.push(id);
        }
    }

    /// The protocol-A invariant (module doc) on node 1's disk, while it is a consistent Secondary.
    fn check_prefix(&mut self) -> Result<(), String> {
        self.check_prefix_on(false)
    }

    /// `promoted`: node 1 was just promoted by the failover (same data, checked in any role).
    fn check_prefix_on(&mut self, promoted: bool) -> Result<(), String> {
        let Some(s) = self.w.snapshot(1) else { return Ok(()) };
        if s.disk == DiskState::Inconsistent || s.repl == ReplState::SyncTarget || (s.role != Role::Secondary && !promoted) {
            return Ok(());
        }
        self.checks += 1;
        let data = &self.w.data[1];
        let mut tags = vec![0u64; HOT_SECTORS as usize];
        let mut reach = 0usize;
        let mut why = 0u64;
        for sct in 0..HOT_SECTORS as usize {
            let bytes = &data[sct * SECTOR..(sct + 1) * SECTOR];
            let t = tag(bytes, sct as u64).ok_or_else(|| format!("node1 sector {sct} holds garbage"))?;
            tags[sct] = t;
            if let Some(r) = self.writes.get(&t)
                && r.deps > reach
            {
                reach = r.deps;
                why = t;
            }
        }
        for &dep in &self.acked_order[..reach] {
            let r = &self.writes[&dep];
            for sct in r.first..r.first + r.n {
                let held = tags[sct as usize];
                if held < dep {
                    return Err(format!(
                        "prefix violated on node1 (check {}): it holds write {why}, issued after write {dep} was acknowledged, \
                         but sector {sct} holds write {held}, older than {dep}",
                        self.checks
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, seed: u64) -> Result<(), String> {
        self.w.input(0, Input::Primary { force: true });
        self.w.input(0, Input::Connect { discard_my_data: false });
        self.w.input(1, Input::Connect { discard_my_data: false });
        self.settle(60_000)?;
        let mut heal_at: Option<u64> = None;
        let mut restart: [Option<u64>; 2] = [None, None];
        for _ in 0..1500 {
            let r = self.w.rng.below(1000);
            let primary_up = self.w.role(0) == Some(Role::Primary);
            match r {
                0..600 if primary_up && self.inflight.len() < 8 => self.write(),
                600..620 if primary_up && self.flushes_inflight < 2 => {
                    let id = (1 << 40) + self.next_id;
                    self.next_id += 1;
                    self.flushes_inflight += 1;
                    self.w.input(0, Input::Flush { id });
                }
                620..628 if heal_at.is_none() => {
                    match self.w.rng.below(3) {
                        0 => self.w.set_path(0, false),
                        1 => self.w.set_path(1, false),
                        _ => {
                            self.w.set_path(0, false);
                            self.w.set_path(1, false);
                        }
                    }
                    heal_at = Some(self.w.now + 50 + self.w.rng.below(3000));
                }
                628..631 if self.w.nodes[1].is_some() && !self.w.volatile_cache() => {
                    self.w.note("crash node1 (Secondary)".into());
                    self.w.crash(1);
                    restart[1] = Some(self.w.now + 100 + self.w.rng.below(1500));
                }
                628..631 if self.w.volatile_cache() => {
                    self.power_losses += 1;
                    self.w.power_loss(1);
                    restart[1] = Some(self.w.now + 100 + self.w.rng.below(1500));
                }
                631..633 if self.w.nodes[0].is_some() => {
                    self.early_acks += self.w.snapshot(0).map_or(0, |s| s.stats.async_early_acks);
                    self.w.note("crash node0 (Primary)".into());
                    self.w.crash(0);
                    restart[0] = Some(self.w.now + 100 + self.w.rng.below(1500));
                }
                _ => {}
            }
            if heal_at.is_some_and(|t| self.w.now >= t) {
                self.w.set_path(0, true);
                self.w.set_path(1, true);
                heal_at = None;
            }
            for i in 0..2 {
                if restart[i].is_some_and(|t| self.w.now >= t) {
                    restart[i] = None;
                    self.w.start(i);
                    self.w.input(i, Input::Connect { discard_my_data: false });
                    if i == 0 {
                        // It crashed as Primary: it has every write it acknowledged (no guard).
                        self.w.input(0, Input::Primary { force: false });
                    }
                }
            }
            let t = self.w.now + 1 + self.w.rng.below(12);
            self.w.run_until(t);
            self.collect();
            self.check_prefix()?;
        }
        if let Some(s) = self.w.snapshot(0) {
            self.early_acks += s.stats.async_early_acks;
        }
        let failover = seed % 4 == 3;
        self.w.set_path(0, true);
        self.w.set_path(1, true);
        for i in 0..2 {
            if self.w.nodes[i].is_none() {
                self.w.start(i);
                self.w.input(i, Input::Connect { discard_my_data: false });
            }
        }
        if self.w.role(0) != Some(Role::Primary) {
            self.w.input(0, Input::Primary { force: false });
        }
        if failover {
            return self.failover();
        }
        self.settle(120_000)?;
        self.check_prefix()?;
        self.model.check(&self.w.data[0], "node0").map_err(|e| format!("{e} (after healing)"))?;
        self.model.check(&self.w.data[1], "node1").map_err(|e| format!("{e} (after healing)"))?;
        if self.w.data[0] != self.w.data[1] {
            return Err("converged but the disks differ".into());
        }
        Ok(())
    }

    /// The Primary dies with writes in flight; node 1 is promoted.
    fn failover(&mut self) -> Result<(), String> {
        // In sync first (a Secondary left behind by an earlier partition is no failover target under
        // either protocol: the cluster's sequencer does not promote it), then more writes in flight,
        // then the Primary dies and the link with it.
        self.settle(120_000)?;
        for _ in 0..20 {
            if self.w.role(0) == Some(Role::Primary) && self.inflight.len() < 8 {
                self.write();
            }
            let t = self.w.now + 1 + self.w.rng.below(4);
            self.w.run_until(t);
            self.collect();
            self.check_prefix()?;
        }
        self.w.note("failover: node0 dies".into());
        self.w.crash(0);
        self.collect();
        let t = self.w.now + 3_000;
        self.w.run_until(t);
        let Some(n1) = self.w.machine(1) else { return Err("node1 down at failover".into()) };
        if n1.snapshot().disk == DiskState::Inconsistent {
            return Ok(()); // died during a resync into node1: nothing to promote (never promoted)
        }
        match self.proto {
            ReplProtocol::A(_) => {
                if n1.check_primary(false).is_ok() {
                    return Err("protocol A: node1 would be promoted without --force while its peer is gone".into());
                }
                self.w.input(1, Input::Primary { force: true });
                if self.w.role(1) != Some(Role::Primary) {
                    return Err("protocol A: forced promotion refused".into());
                }
                // Its data is a past state of the Primary's (it may miss the last writes).
                self.check_prefix_on(true)
            }
            ReplProtocol::C => {
                n1.check_primary(false).map_err(|e| format!("protocol C: node1 not promotable: {e}"))?;
                self.w.input(1, Input::Primary { force: false });
                self.model.check(&self.w.data[1], "node1 after failover")
            }
        }
    }

}

fn run_seed(seed: u64) -> Result<Run, (String, Vec<String>)> {
    let mut run = Run::new(seed);
    match run.run(seed) {
        Ok(()) => Ok(run),
        Err(e) => Err((e, std::mem::take(&mut run.w.trace))),
    }
}

#[test]
fn protocol_a_seeds_keep_the_secondary_prefix_consistent() {
    let seeds: u64 = std::env::var("PROTO_A_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let mut checks = 0;
    let mut acked = 0;
    let mut early = 0;
    let mut a_seeds = 0;
    let mut power_losses = 0;
    for seed in 0..seeds {
        match run_seed(seed) {
            Ok(run) => {
                checks += run.checks;
                acked += run.acked_order.len();
                early += run.early_acks;
                power_losses += run.power_losses;
                if run.proto.is_async() {
                    a_seeds += 1;
                }
            }
            Err((e, trace)) => {
                let tail: Vec<_> = trace.iter().rev().take(40).rev().cloned().collect();
                panic!("seed {seed} ({:?}): {e}\n{}", protocol_for(seed), tail.join("\n"));
            }
        }
    }
    eprintln!("protocol A/C sim: {seeds} seeds ({a_seeds} A), {acked} acknowledged writes ({early} before the peer's ack), {checks} prefix checks, {power_losses} power losses of the Secondary");
    assert!(seeds < 10 || power_losses > 0, "seeds with a volatile cache must cut the Secondary's power");
    assert!(checks > seeds * 100, "the invariant must actually be checked");
    assert!(a_seeds == 0 || early > 0, "protocol A seeds must acknowledge writes early");
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("PROTO_A_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    match run_seed(seed) {
        Ok(run) => eprintln!("seed {seed}: ok, {} acked, {} checks\n{}", run.acked_order.len(), run.checks, run.w.trace.join("\n")),
        Err((e, trace)) => panic!("seed {seed}: {e}\n{}", trace.join("\n")),
    }
}

