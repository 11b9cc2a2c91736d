//! `fencing resource-and-stonith` in the simulated daemons: the same decisions as
//! `clusterd/src/daemon/io_fencing.rs` (private to the daemon, so re-stated here condition by condition)
//! and the fence delay of `daemon/cluster.rs::run_guard`, driven from the simulated group loop.
//!
//! The replicator half is real: `freeze_io_on_peer_loss` makes a Primary that loses an UpToDate peer hold
//! its write acknowledgements; a reconnect thaws it inside the replicator. The daemon half, per poll:
//! - a fence command started earlier reported: confirmed down = thaw every suspended volume;
//! - dopd's part on a Secondary (not active, replication not connected, disk UpToDate/Consistent, the
//!   peer alive on heartbeats and its newest group state says Holding): outdate the own disk, once per
//!   loss of the link (`Input::Outdate`, what `Verb::Outdate` steps);
//! - on a suspended node: the peer alive and its newest group state says disk Outdated = thaw; the peer
//!   not alive on heartbeats = run the fence command (at most one at a time, 5 s between attempts).
//!
//! Modelled: the fence command is the guard's fence (crash the peer, fails 10% of the time), answered
//! after 100-1500 ms and picked up on the next poll, like the daemon's spawned command.

use super::world::{NAMES, World, other};
use clusterd::failover::{DiskView, GroupState, Phase, decode_state};
use replicator::machine::Input as ReplInput;
use replicator::machine::state::{ConnState, DiskState, Role};

/// `io_fencing.rs`'s pause between two fence attempts that did not confirm.
const FENCE_RETRY_MS: u64 = 5000;
/// The daemon's deadtime in the simulation (`heartbeat::membership_params`): the fence delay.
pub const DEADTIME_MS: u64 = 3000;

/// Thaw reasons, the same strings the daemon passes to `Verb::Thaw`.
const THAW_FENCED: &str = "the peer was fenced (fence command confirmed it down)";
const THAW_OUTDATED: &str = "the peer outdated its disk";

/// A fence command the io fencing started: due when it answers, then its answer until the next poll.
#[derive(Clone, Copy)]
pub struct IoFence {
    pub due: u64,
    pub result: Option<bool>,
}

/// The io-fencing part of a simulated daemon (gone with the daemon at a crash).
#[derive(Default)]
pub struct IoFencingState {
    pub fence: Option<IoFence>,
    pub last_fence: Option<u64>,
    /// This node outdated its disk since replication was last seen connected.
    pub self_outdated: bool,
}

impl World {
    /// The peer's newest group state as node i's daemon decoded it last (`Driver::peer_last`).
    fn peer_last(&self, i: usize) -> Option<GroupState> {
        self.nodes[i].last_peer_state.as_deref().and_then(|b| decode_state(b).ok())
    }

    /// `IoFencing::delays_fencing_of_holder`: the guard's fence waits a deadtime when the peer was last
    /// seen holding the group (a suspended holder gets the first shot).
    pub fn fence_delay_ms(&self, i: usize) -> u64 {
        let holder = self.peer_last(i).is_some_and(|p| p.phase == Phase::Holding);
        if self.cfg.resource_and_stonith && holder { DEADTIME_MS } else { 0 }
    }

    /// `IoFencing::tick` for node i, called from the poll before the sequencer ticks (as the daemon does).
    pub fn io_fencing_tick(&mut self, i: usize) {
        if !self.cfg.resource_and_stonith || !self.nodes[i].up {
            return;
        }
        let at = self.at();
        let peer_alive = self.nodes[i].membership.as_ref().is_some_and(|m| m.status(at).peer_alive());
        let peer = self.peer_last(i);
        let my_phase = self.nodes[i].seq.as_ref().map_or(Phase::Idle, |s| s.phase());
        if let Some(IoFence { result: Some(fenced), .. }) = self.nodes[i].io_fencing.fence {
            self.nodes[i].io_fencing.fence = None;
            if fenced {
                self.thaw(i, THAW_FENCED);
            }
        }
        // The group's one resource; a volume that is not running is skipped, as `resources.volume` fails.
        let Some(s) = self.store.repl.snapshot(i) else { return };
        if s.conn == ConnState::Connected || s.disk != DiskState::Outdated {
            self.nodes[i].io_fencing.self_outdated = false;
        }
        if s.role == Role::Secondary
            && s.conn != ConnState::Connected
            && matches!(s.disk, DiskState::UpToDate | DiskState::Consistent)
            && !my_phase.active()
            && peer_alive
            && peer.as_ref().is_some_and(|p| p.phase == Phase::Holding)
            && !self.nodes[i].io_fencing.self_outdated
        {
            self.nodes[i].io_fencing.self_outdated = true;
            self.stats.self_outdates += 1;
            self.log(format!("{} IO-FENCING: replication to the holder is down while it is alive: outdating own disk", NAMES[i]));
            self.store.repl.input(i, ReplInput::Outdate);
        }
        if s.suspended.is_none() {
            return;
        }
        if peer_alive && peer.as_ref().is_some_and(|p| p.disk == DiskView::Outdated) {
            self.thaw(i, THAW_OUTDATED);
            return;
        }
        let st = &self.nodes[i].io_fencing;
        if !peer_alive && st.fence.is_none() && st.last_fence.is_none_or(|t| self.now.saturating_sub(t) >= FENCE_RETRY_MS) {
            // Every resource-and-stonith seed has a fence guard, i.e. a fence command.
            let due = self.now + self.rng.range(100, 1500);
            let st = &mut self.nodes[i].io_fencing;
            st.last_fence = Some(self.now);
            st.fence = Some(IoFence { due, result: None });
            self.stats.io_fence_runs += 1;
            self.log(format!("{} IO-FENCING: I/O suspended and {} silent on every link: running the fence command", NAMES[i], NAMES[other(i)]));
        }
    }

    /// Fence commands started by the io fencing answer (checked every 10 ms like the guards).
    pub fn run_io_fences(&mut self) {
        for i in 0..2 {
            let Some(f) = self.nodes[i].io_fencing.fence else { continue };
            if !self.nodes[i].up || f.result.is_some() || f.due > self.now {
                continue;
            }
            let (ok, detail) = self.fence(i);
            self.log(format!("{} IO-FENCING: fence command answered: {ok} ({detail})", NAMES[i]));
            self.nodes[i].io_fencing.fence = Some(IoFence { result: Some(ok), ..f });
        }
    }

    /// `IoFencing::thaw_all`: `Verb::Thaw` on a suspended volume.
    fn thaw(&mut self, i: usize, reason: &'static str) {
        let Some(s) = self.store.repl.snapshot(i) else { return };
        if s.suspended.is_none() {
            return;
        }
        if reason == THAW_FENCED {
            self.stats.thaws_fenced += 1;
        } else {
            self.stats.thaws_outdated += 1;
        }
        self.stats.held_acks_released += s.held_acks as u64;
        self.suspended_seen[i] = None;
        self.log(format!("{} IO-FENCING: thaw ({reason}), {} held acknowledgement(s)", NAMES[i], s.held_acks));
        self.store.repl.input(i, ReplInput::Thaw { reason: reason.to_string() });
    }

    /// Follows each node's suspension from the replicator's snapshots (every 10 ms): counts suspensions,
    /// thaws on reconnect (inside the replicator) and suspensions that ended unthawed (the held writes
    /// failed at a demote or shutdown, or vanished in a crash). Thaws the daemon asked for are counted
    /// in [`World::thaw`]. Also the liveness rule of the freeze: never suspended while connected.
    pub fn track_suspensions(&mut self) -> Result<(), String> {
        for i in 0..2 {
            let snap = self.store.repl.snapshot(i);
            let held_now = snap.as_ref().filter(|s| s.suspended.is_some()).map(|s| s.held_acks);
            match (self.suspended_seen[i], held_now) {
                (None, Some(_)) => {
                    self.stats.suspensions += 1;
                    if !self.cfg.resource_and_stonith {
                        return Err(format!("{} suspended I/O without fencing resource-and-stonith", NAMES[i]));
                    }
                }
                (Some(held), None) => {
                    if snap.as_ref().is_some_and(|s| s.role == Role::Primary && s.conn == ConnState::Connected) {
                        self.stats.thaws_reconnect += 1;
                        self.stats.held_acks_released += held as u64;
                    } else {
                        self.stats.suspensions_ended_unthawed += 1;
                    }
                }
                _ => {}
            }
            self.suspended_seen[i] = held_now;
            if let Some(s) = snap.filter(|s| s.suspended.is_some() && s.conn == ConnState::Connected) {
                return Err(format!("{} is connected but its I/O stays suspended ({} held)", NAMES[i], s.held_acks));
            }
        }
        Ok(())
    }
}
