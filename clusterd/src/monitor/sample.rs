//! One look at the node, taken per request of `/metrics`, `/` or `/status.json`: published engine
//! snapshots (never a message to a resource's actor), the cluster loop's last view, the target's
//! sessions and counters. [`StatusDoc`] is what the status page and `/status.json` show of it.

use crate::daemon::cluster::ClusterView;
use crate::monitor::counters::ClusterCounts;
use iscsi_target::stats::{LoginRefusal, TargetTotals};
use prometheus_client::metrics::histogram::Histogram;
use replicator::engine::CountersSnapshot;
use replicator::machine::Snapshot;
use replicator::machine::state::ReplState;
use serde::Serialize;
use std::collections::BTreeMap;

/// A running resource: its published snapshot, usable size and counters.
pub struct Running {
    pub snap: Snapshot,
    pub size: u64,
    pub counters: CountersSnapshot,
}

pub struct ResourceSample {
    pub name: String,
    /// Position in the configuration (sorted by name): drbd-reactor's `minor` label.
    pub minor: usize,
    pub peer: Option<String>,
    pub running: Option<Running>,
    /// Why it is not running.
    pub error: Option<String>,
    /// `syncer.rate` (None = unlimited).
    pub rate_limit: Option<u64>,
    /// (recent, average) resync/verify speed in bytes/s from the daemon's 1 s sampler.
    pub speed: (u64, u64),
    /// issue 18 verify: the last verify run from this node, and when the scheduled one is due here.
    pub last_verify: Option<crate::daemon::verify_schedule::LastVerify>,
    pub next_verify_unix: Option<u64>,
}

pub struct SessionSample {
    pub target: String,
    pub initiator: String,
    pub peer_address: String,
}

pub struct TargetSample {
    /// The target is served on this node now.
    pub running: bool,
    pub sessions: Vec<SessionSample>,
    /// Counters per target since clusterd started (empty when metrics are off).
    pub totals: BTreeMap<String, TargetTotals>,
    pub refusals: Vec<(LoginRefusal, u64)>,
}

pub struct ClusterSample {
    pub view: ClusterView,
    pub counts: ClusterCounts,
    pub failovers: Histogram,
}

pub struct Sample {
    pub node: String,
    /// Every configured node, in file order.
    pub nodes: Vec<String>,
    pub peer: Option<String>,
    /// The peer's index in `nodes` (drbd-reactor's `peer_node_id`).
    pub peer_node_id: usize,
    pub uptime_seconds: u64,
    pub resources: Vec<ResourceSample>,
    pub cluster: Option<ClusterSample>,
    pub target: TargetSample,
}

/// Progress of a resync or online verify, 0..=1, with its byte counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// "resync" or "verify".
    pub kind: &'static str,
    pub done_ratio: f64,
    pub total_bytes: u64,
    pub remaining_bytes: u64,
    pub speed_bytes_per_second: u64,
    pub eta_seconds: Option<u64>,
    pub paused: bool,
}

impl ResourceSample {
    /// The running resync or verify, if any.
    pub fn progress(&self) -> Option<Progress> {
        let r = self.running.as_ref()?;
        let p = r.snap.sync?;
        let kind = if matches!(r.snap.repl, ReplState::VerifyS | ReplState::VerifyT) { "verify" } else { "resync" };
        let (total, remaining) = (p.total_blocks * 4096, p.remaining_blocks.min(p.total_blocks) * 4096);
        let done_ratio = if total == 0 { 1.0 } else { (total - remaining) as f64 / total as f64 };
        let speed = self.speed.0;
        Some(Progress {
            kind,
            done_ratio,
            total_bytes: total,
            remaining_bytes: remaining,
            speed_bytes_per_second: speed,
            eta_seconds: remaining.checked_div(speed),
            paused: p.paused,
        })
    }
}

// ---- what the status page and /status.json show ------------------------------------------------

#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub node: String,
    pub version: &'static str,
    pub uptime_seconds: u64,
    /// When this document was taken, `HH:MM:SS UTC`.
    pub time_utc: String,
    pub cluster: Option<ClusterDoc>,
    /// Every failover group (issue 17); `cluster` is the first one's.
    pub groups: Vec<GroupDoc>,
    pub nodes: Vec<NodeDoc>,
    pub links: Vec<LinkDoc>,
    pub resources: Vec<ResourceDoc>,
    pub target: TargetDoc,
}

#[derive(Debug, Serialize)]
pub struct ClusterDoc {
    pub holder: Option<String>,
    pub phase: &'static str,
    pub epoch: u64,
    pub split_brain_warning: Option<String>,
    pub waiting: Option<String>,
    pub last_failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupDoc {
    pub name: String,
    pub holder: Option<String>,
    pub phase: &'static str,
    pub epoch: u64,
    pub access: &'static str,
}

#[derive(Debug, Serialize)]
pub struct NodeDoc {
    pub name: String,
    /// The node this page is served by.
    pub this_node: bool,
    /// None = not known (no heartbeat configured).
    pub online: Option<bool>,
    pub holds_group: bool,
}

#[derive(Debug, Serialize)]
pub struct LinkDoc {
    pub name: String,
    pub up: bool,
    pub last_heard_ms_ago: Option<u64>,
    pub rejected: u64,
}

#[derive(Debug, Serialize)]
pub struct ResourceDoc {
    pub name: String,
    pub up: bool,
    pub role: String,
    pub disk: String,
    pub connection: String,
    pub replication: String,
    pub peer: Option<String>,
    pub peer_role: String,
    pub peer_disk: String,
    pub size_bytes: u64,
    pub out_of_sync_bytes: u64,
    pub suspended: bool,
    pub split_brain: bool,
    pub progress: Option<Progress>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetDoc {
    pub running: bool,
    pub sessions: Vec<SessionDoc>,
}

#[derive(Debug, Serialize)]
pub struct SessionDoc {
    pub target: String,
    pub initiator: String,
    pub peer_address: String,
}

impl Sample {
    pub fn doc(&self) -> StatusDoc {
        let seq = self.cluster.as_ref().and_then(|c| c.view.sequencer());
        let membership = self.cluster.as_ref().and_then(|c| c.view.membership.as_ref());
        let holder = seq.and_then(|s| s.holder.as_ref().map(|(n, _)| n.clone()));
        let cluster = seq.map(|s| ClusterDoc {
            holder: holder.clone(),
            phase: s.phase.name(),
            epoch: s.epoch,
            split_brain_warning: s.split_brain_warning.clone(),
            waiting: s.waiting.clone(),
            last_failure: s.last_failure.clone(),
        });
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let this_node = *n == self.node;
                let online = if this_node { Some(true) } else { membership.map(|m| m.peer_alive()) };
                NodeDoc { name: n.clone(), this_node, online, holds_group: holder.as_deref() == Some(n) }
            })
            .collect();
        let links = membership
            .map(|m| {
                m.links
                    .iter()
                    .map(|l| LinkDoc {
                        name: l.name.clone(),
                        up: l.up,
                        last_heard_ms_ago: l.last_heard_ago.map(|d| d.as_millis() as u64),
                        rejected: l.dropped.total(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let resources = self.resources.iter().map(resource_doc).collect();
        let sessions = self
            .target
            .sessions
            .iter()
            .map(|s| SessionDoc { target: s.target.clone(), initiator: s.initiator.clone(), peer_address: s.peer_address.clone() })
            .collect();
        StatusDoc {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.uptime_seconds,
            time_utc: {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                format!("{:02}:{:02}:{:02} UTC", t / 3600 % 24, t / 60 % 60, t % 60)
            },
            cluster,
            groups: self
                .cluster
                .as_ref()
                .map(|c| {
                    c.view
                        .groups
                        .iter()
                        .map(|g| GroupDoc {
                            name: g.name.clone(),
                            holder: g.status.holder.as_ref().map(|(n, _)| n.clone()),
                            phase: g.status.phase.name(),
                            epoch: g.status.epoch,
                            access: g.access,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            nodes,
            links,
            resources,
            target: TargetDoc { running: self.target.running, sessions },
        }
    }
}

fn resource_doc(r: &ResourceSample) -> ResourceDoc {
    let progress = r.progress();
    match &r.running {
        Some(run) => {
            let s = &run.snap;
            ResourceDoc {
                name: r.name.clone(),
                up: true,
                role: s.role.to_string(),
                disk: s.disk.to_string(),
                connection: s.conn.to_string(),
                replication: s.repl.to_string(),
                peer: r.peer.clone(),
                peer_role: s.peer_role.to_string(),
                peer_disk: s.peer_disk.to_string(),
                size_bytes: run.size,
                out_of_sync_bytes: s.out_of_sync_blocks * 4096,
                suspended: s.suspended.is_some(),
                split_brain: s.split_brain,
                progress,
                error: s.last_error.clone(),
            }
        }
        None => ResourceDoc {
            name: r.name.clone(),
            up: false,
            role: "Secondary".into(),
            disk: "Diskless".into(),
            connection: "StandAlone".into(),
            replication: "Off".into(),
            peer: r.peer.clone(),
            peer_role: "Unknown".into(),
            peer_disk: "DUnknown".into(),
            size_bytes: 0,
            out_of_sync_bytes: 0,
            suspended: false,
            split_brain: false,
            progress: None,
            error: Some(r.error.clone().unwrap_or_else(|| "down".into())),
        },
    }
}
