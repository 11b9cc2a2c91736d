//! A flush that our own disk fails (with `on-io-error pass_on`, so the node keeps its disk) must not
//! release the activity-log extents of the writes it covered: they may still be only in the disk's
//! volatile cache, and after a power loss only the activity log makes the returning node resync them
//! from its peer. Directed, over several seeds (the seed decides what the power loss writes back):
//! a write on the Primary, a flush its disk fails (the peer's part succeeds), writes to every other
//! extent (enough to push the first out of a log that had released it), then a power loss of the
//! Primary before any later flush, failover to the peer, and the old Primary back as Secondary. The two
//! replicas must end byte-identical, with the first write on both.

use replicator::machine::policy::Policies;
use replicator::machine::state::Role;
use replicator::machine::Input;
use replicator::sim::model::{fill, tag};
use replicator::sim::world::{params, AppDone, World, SECTOR};

const SIZE: u64 = 48 << 20;
/// 4 MiB activity-log extents: twelve of them against a log of seven.
const EXTENT: u64 = 4 << 20;
const AL_EXTENTS: u32 = 7;

fn wait(w: &mut World, what: &str, budget_ms: u64, f: impl Fn(&World) -> bool) -> Result<(), String> {
    let end = w.now + budget_ms;
    while w.now < end {
        if f(w) {
            return Ok(());
        }
        let now = w.now;
        w.run_until(now + 5);
    }
    Err(format!("timed out waiting for {what}: {:?} / {:?}", w.snapshot(0), w.snapshot(1)))
}

/// Issues a request on node 0 and runs until it completes; returns whether it succeeded.
fn request(w: &mut World, id: u64, input: Input) -> Result<bool, String> {
    w.input(0, input);
    let end = w.now + 5_000;
    while w.now < end {
        let now = w.now;
        w.run_until(now + 1);
        if let Some(ok) = w.done.iter().find_map(|d| match d {
            AppDone::Write { id: i, ok } if *i == id => Some(*ok),
            _ => None,
        }) {
            w.done.clear();
            return Ok(ok);
        }
    }
    Err(format!("request {id} never completed"))
}

fn scenario(seed: u64) -> Result<(), String> {
    let mut w = World::with_params(seed, SIZE, AL_EXTENTS, [params(0, SIZE, Policies::default()), params(1, SIZE, Policies::default())]);
    w.enable_volatile_cache();
    w.start(0);
    w.start(1);
    w.input(0, Input::Primary { force: true });
    w.input(0, Input::Connect { discard_my_data: false });
    w.input(1, Input::Connect { discard_my_data: false });
    wait(&mut w, "the initial sync", 60_000, |w| w.converged())?;

    // The write the failed flush covers (sectors 0..8 of extent 0), acknowledged by both nodes.
    let first = fill(1, 0, 8);
    if !request(&mut w, 1, Input::Write { id: 1, offset: 0, data: first.into(), fua: false })? {
        return Err("the first write failed".into());
    }
    // Our disk fails the flush; the peer's part succeeds.
    w.disk_failed[0] = true;
    let flushed = request(&mut w, 2, Input::Flush { id: 2 })?;
    w.disk_failed[0] = false;
    if flushed {
        return Err("a flush our disk failed was acknowledged".into());
    }
    if w.snapshot(0).map(|s| s.role) != Some(Role::Primary) {
        return Err(format!("pass_on must keep the disk and the role: {:?}", w.snapshot(0)));
    }
    // One write into every other extent, quickly (well within the barrier age): a log that had let go
    // of extent 0 would evict it now.
    for k in 1..SIZE / EXTENT {
        let id = 10 + k;
        let sector = k * EXTENT / SECTOR as u64;
        let data = fill(id, sector, 8);
        if !request(&mut w, id, Input::Write { id, offset: k * EXTENT, data: data.into(), fua: true })? {
            return Err(format!("write {id} failed"));
        }
    }
    // Power loss of the Primary before any later flush; the peer takes over.
    w.power_loss(0);
    // As a cluster manager would: once the survivor has noticed the loss, promote it.
    for _ in 0..100 {
        let now = w.now;
        w.run_until(now + 50);
        w.input(1, Input::Primary { force: false });
        if w.role(1) == Some(Role::Primary) {
            break;
        }
    }
    if w.role(1) != Some(Role::Primary) {
        return Err(format!("the survivor was not promoted: {:?}", w.snapshot(1)));
    }
    // The old Primary returns as Secondary and resyncs from the survivor.
    w.start(0);
    w.input(0, Input::Connect { discard_my_data: false });
    wait(&mut w, "the resync after the failover", 60_000, |w| w.converged())?;
    for node in 0..2 {
        for s in 0..8u64 {
            let at = s as usize * SECTOR;
            if tag(&w.data[node][at..at + SECTOR], s) != Some(1) {
                return Err(format!("node{node} lost the first write in sector {s}"));
            }
        }
    }
    if w.data[0] != w.data[1] {
        let at = w.data[0].iter().zip(&w.data[1]).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("replicas differ from byte {at} (extent {})", at as u64 / EXTENT));
    }
    Ok(())
}

#[test]
fn a_failed_local_flush_keeps_the_activity_log_so_a_power_loss_diverges_nothing() {
    for seed in 0..24 {
        if let Err(e) = scenario(seed) {
            panic!("seed {seed}: {e}");
        }
    }
}
