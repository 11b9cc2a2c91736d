//! Admin commands (standby/takeover): checked against the peer's latest published state so a refusal
//! says exactly why the other node cannot take the group.

use super::{Sequencer, StopReason};
use crate::failover::state::{Handoff, Phase};
use crate::failover::{Action, DiskView, Level};
use std::time::Instant;

impl Sequencer {
    pub(super) fn standby(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<(), String> {
        let peer_name = self.p.peer.clone().ok_or("standby refused: no peer is configured")?;
        if self.phase != Phase::Holding {
            return Err(format!("standby refused: this node does not hold the group (it is {})", self.phase.name()));
        }
        if self.handoff != Handoff::None {
            return Err("standby refused: a handoff is already in progress".to_string());
        }
        self.peer_ready_to_take(&peer_name)?;
        self.log(out, Level::Info, format!("standby: handing the group to {peer_name}"));
        let epoch = self.held_epoch;
        self.handoff = Handoff::Releasing { to: peer_name.clone(), epoch };
        self.begin_stop(now, StopReason::Handoff { to: peer_name, epoch }, out);
        Ok(())
    }

    /// Why the peer cannot take the group now (for standby), from its latest published state.
    fn peer_ready_to_take(&self, peer_name: &str) -> Result<(), String> {
        if !self.peer_alive {
            return Err(format!("refused: peer {peer_name} is not connected (no heartbeat)"));
        }
        let ps = self.peer.as_ref().ok_or(format!("refused: no group state received from {peer_name} yet"))?;
        if !ps.hears_peer {
            return Err(format!("refused: {peer_name} does not hear this node's heartbeats (one-way link?)"));
        }
        if !self.volumes.is_some_and(|v| v.connected) {
            return Err(format!("refused: the replication link to {peer_name} is not connected"));
        }
        if ps.phase != Phase::Idle || ps.claim.is_some() {
            return Err(format!("refused: {peer_name} is in a transition ({})", ps.phase.name()));
        }
        if ps.disk != DiskView::UpToDate {
            return Err(format!("refused: {peer_name}'s disk is {}, not UpToDate", ps.disk.name()));
        }
        if !ps.can_take {
            return Err(format!("refused: {peer_name} reports it cannot take the group (recent failure?)"));
        }
        Ok(())
    }

    pub(super) fn takeover(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<(), String> {
        let peer_name = self.p.peer.clone().ok_or("takeover refused: no peer is configured")?;
        if self.phase == Phase::Holding {
            return Err("takeover refused: this node already holds the group".to_string());
        }
        if self.phase != Phase::Idle {
            return Err(format!("takeover refused: a transition is in progress here ({})", self.phase.name()));
        }
        if self.handoff != Handoff::None {
            return Err("takeover refused: a handoff is already in progress".to_string());
        }
        if !self.peer_alive {
            return Err(format!("takeover refused: peer {peer_name} is not connected (no heartbeat)"));
        }
        let ps = self.peer.as_ref().ok_or(format!("takeover refused: no group state from {peer_name} yet"))?;
        if ps.phase != Phase::Holding || ps.handoff != Handoff::None {
            return Err(format!("takeover refused: {peer_name} is {} (not holding steadily)", ps.phase.name()));
        }
        if !ps.hears_peer {
            return Err(format!("takeover refused: {peer_name} does not hear this node's heartbeats (one-way link?)"));
        }
        let epoch = ps.epoch;
        let v = self.volumes.ok_or("takeover refused: local volume state unknown")?;
        if !v.connected {
            return Err(format!("takeover refused: the replication link to {peer_name} is not connected"));
        }
        if v.disk != DiskView::UpToDate {
            return Err(format!("takeover refused: local disk is {}, not UpToDate", v.disk.name()));
        }
        self.eligibility(now).map_err(|e| format!("takeover refused: {e}"))?;
        self.log(out, Level::Info, format!("takeover: asking {peer_name} to release the group (epoch {epoch})"));
        self.handoff = Handoff::PleaseRelease { epoch };
        self.request_deadline = Some(now + self.p.stop_timeout * 8);
        Ok(())
    }
}
