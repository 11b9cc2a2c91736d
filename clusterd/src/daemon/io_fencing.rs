//! `fencing resource-and-stonith` around the group's volumes, in the roles DRBD gives its fence-peer
//! handler and dopd:
//! - A Primary that loses its UpToDate peer holds back every write acknowledgement (the replicator
//!   suspends I/O). It resumes when the peer is proven unable to serve stale data: the peer published
//!   that its disk is Outdated (it outdates itself, below), or the peer is silent on every heartbeat
//!   link and the configured fence command confirmed it down. A reconnect resumes it too (in the
//!   replicator).
//! - A Secondary that loses the replication link while the holder is still heard outdates its own disk
//!   (it may lack acknowledged writes from now on) and publishes that through its group state, which is
//!   what lets the holder resume without fencing a healthy node.
//! - A Secondary about to fence a holder that was last seen holding waits one deadtime first, so that a
//!   suspended holder (which has the newest data) gets the first shot and the two do not fence each other
//!   at the same instant.
//!
//! Everything here runs from the group loop's tick; the fence command is spawned and its result picked
//! up on a later tick, so the loop never blocks on it.

use super::resources::Resources;
use crate::config::Fencing;
use crate::fencing::Fencer;
use crate::failover::{DiskView, GroupState, Phase};
use replicator::engine::Verb;
use replicator::machine::state::{ConnState, DiskState, Role};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Pause between two fence attempts that did not confirm.
const FENCE_RETRY: Duration = Duration::from_secs(5);

/// Whether the peer was fenced in the current failure, shared by the guard and every group's I/O
/// fencing (issue 17): one failure fences the peer once, however many groups wait on it. Cleared when
/// the peer is heard again.
#[derive(Debug, Default)]
pub(super) struct FenceLedger {
    fenced: AtomicBool,
    fencing: AtomicBool,
}

impl FenceLedger {
    pub(super) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Marks a fence as running; false if one already runs.
    pub(super) fn begin(&self) -> bool {
        !self.fencing.swap(true, Ordering::AcqRel)
    }

    pub(super) fn end(&self, fenced: bool) {
        if fenced {
            self.fenced.store(true, Ordering::Release);
        }
        self.fencing.store(false, Ordering::Release);
    }

    /// A fence that ran without [`begin`](Self::begin) (its wait for another ran out) confirmed.
    pub(super) fn mark_fenced(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    /// The peer was heard: a later failure needs a fence of its own.
    pub(super) fn peer_heard(&self) {
        self.fenced.store(false, Ordering::Release);
    }
}

pub(super) struct IoFencing {
    /// Group resources configured with `fencing resource-and-stonith`.
    resources: Vec<String>,
    fencer: Option<Fencer>,
    me: String,
    peer: String,
    fence_running: Option<oneshot::Receiver<bool>>,
    last_fence: Option<Instant>,
    /// Resources this node outdated itself (logged once per loss of the link).
    self_outdated: HashSet<String>,
    ledger: Arc<FenceLedger>,
}

impl IoFencing {
    pub(super) fn new(config: &crate::config::HaConfig, group: &[String], me: &str, peer: &str, ledger: Arc<FenceLedger>) -> IoFencing {
        let resources = group
            .iter()
            .filter(|n| config.resources.get(*n).is_some_and(|r| r.disk.fencing == Fencing::ResourceAndStonith))
            .cloned()
            .collect();
        IoFencing {
            resources,
            fencer: config.cluster.as_ref().and_then(|c| Fencer::from_guard(&c.guard)),
            me: me.to_string(),
            peer: peer.to_string(),
            fence_running: None,
            last_fence: None,
            self_outdated: HashSet::new(),
            ledger,
        }
    }

    pub(super) fn active(&self) -> bool {
        !self.resources.is_empty()
    }

    /// Whether a fence of a peer last seen holding the group should wait a deadtime (see module doc).
    pub(super) fn delays_fencing_of_holder(&self, peer: Option<&GroupState>) -> bool {
        self.active() && peer.is_some_and(|p| p.phase == Phase::Holding)
    }

    /// `peer_alive`: the peer is heard on a heartbeat link; `peer`: its newest group state.
    pub(super) async fn tick(&mut self, resources: &Resources, peer_alive: bool, my_phase: Phase, peer: Option<&GroupState>) {
        if !self.active() {
            return;
        }
        if let Some(rx) = self.fence_running.as_mut()
            && let Ok(fenced) = rx.try_recv()
        {
            self.fence_running = None;
            if fenced {
                self.thaw_all(resources, "the peer was fenced (fence command confirmed it down)").await;
            }
        }
        let mut suspended = false;
        for name in &self.resources {
            let Ok(v) = resources.volume(name).await else { continue };
            let s = v.snapshot();
            // Once the disk is no longer Outdated (a resync made it UpToDate again), a later loss of the
            // link must outdate it again, even if no tick happened to see the link Connected.
            if s.conn == ConnState::Connected || s.disk != DiskState::Outdated {
                self.self_outdated.remove(name);
            }
            if s.suspended.is_some() {
                suspended = true;
            }
            // dopd's part on the Secondary: the holder is alive but we no longer receive its writes.
            if s.role == Role::Secondary
                && s.conn != ConnState::Connected
                && matches!(s.disk, DiskState::UpToDate | DiskState::Consistent)
                && !my_phase.active()
                && peer_alive
                && peer.is_some_and(|p| p.phase == Phase::Holding)
                && self.self_outdated.insert(name.clone())
            {
                tracing::warn!(target: "failover", "{name}: the replication link to the holder {} is down while it is alive: outdating this disk (fencing resource-and-stonith), so the holder can resume its I/O", self.peer);
                if let Err(e) = v.verb(Verb::Outdate).await {
                    tracing::error!(target: "failover", "{name}: outdate failed: {e}");
                }
            }
        }
        if !suspended {
            return;
        }
        if peer_alive && peer.is_some_and(|p| p.disk == DiskView::Outdated) {
            self.thaw_all(resources, "the peer outdated its disk").await;
            return;
        }
        if !peer_alive && self.ledger.fenced() {
            self.thaw_all(resources, "the peer was fenced in this failure").await;
            return;
        }
        if !peer_alive
            && self.fence_running.is_none()
            && self.last_fence.is_none_or(|t| t.elapsed() >= FENCE_RETRY)
            && self.fencer.is_some()
            && self.ledger.begin()
        {
            let Some(fencer) = self.fencer.clone() else { return };
            self.last_fence = Some(Instant::now());
            tracing::warn!(target: "failover", "I/O suspended and {} is silent on every heartbeat link: running the fence command", self.peer);
            let (tx, rx) = oneshot::channel();
            self.fence_running = Some(rx);
            let (me, peer) = (self.me.clone(), self.peer.clone());
            let ledger = Arc::clone(&self.ledger);
            tokio::spawn(async move {
                let (ok, outcome) = fencer.fence(&me, &peer).await;
                ledger.end(ok);
                if !ok {
                    tracing::error!(target: "failover", "{outcome}: did not confirm; I/O stays suspended");
                }
                let _ = tx.send(ok);
            });
        }
    }

    async fn thaw_all(&self, resources: &Resources, reason: &'static str) {
        for name in &self.resources {
            if let Ok(v) = resources.volume(name).await
                && v.snapshot().suspended.is_some()
                && let Err(e) = v.verb(Verb::Thaw { reason }).await
            {
                tracing::error!(target: "failover", "{name}: resume I/O failed: {e}");
            }
        }
    }
}
