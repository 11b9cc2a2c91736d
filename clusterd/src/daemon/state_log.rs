//! One log event per state change, with the resource (or link) and the node as fields, for journald
//! and Loki pipelines (`clusterd --log-format json` makes each a JSON object). Events use the tracing
//! target `state`, so `RUST_LOG=state=info` selects exactly them.
//!
//! It follows the same published snapshots as `haadm events` (a watch per resource, the group loop's
//! view) and logs only when a state field changed, never for counters.

use super::cluster::{ClusterHandle, ClusterView};
use super::resources::Resources;
use replicator::machine::Snapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The fields of a resource that make its state (not its counters).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceState {
    role: &'static str,
    disk: &'static str,
    connection: &'static str,
    replication: &'static str,
    peer_role: &'static str,
    peer_disk: &'static str,
    suspended: bool,
    split_brain: bool,
}

impl From<&Snapshot> for ResourceState {
    fn from(s: &Snapshot) -> Self {
        ResourceState {
            role: s.role.as_str(),
            disk: s.disk.as_str(),
            connection: s.conn.as_str(),
            replication: s.repl.as_str(),
            peer_role: s.peer_role.as_str(),
            peer_disk: s.peer_disk.as_str(),
            suspended: s.suspended.is_some(),
            split_brain: s.split_brain,
        }
    }
}

fn log_resource(node: &str, resource: &str, s: &ResourceState) {
    tracing::info!(
        target: "state",
        node,
        resource,
        role = s.role,
        disk = s.disk,
        connection = s.connection,
        replication = s.replication,
        peer_role = s.peer_role,
        peer_disk = s.peer_disk,
        suspended = s.suspended,
        split_brain = s.split_brain,
        "resource {resource}: {} {} {} {}, peer {} {}",
        s.role,
        s.disk,
        s.connection,
        s.replication,
        s.peer_role,
        s.peer_disk
    );
}

/// Follows one resource across `down`/`up`: its snapshot watch while it runs, a slow poll while not.
async fn follow_resource(resources: Arc<Resources>, name: String, stop: CancellationToken) {
    let node = resources.node.clone();
    let mut last: Option<ResourceState> = None;
    loop {
        let Ok(v) = resources.volume(&name).await else {
            if last.take().is_some() {
                tracing::info!(target: "state", node = %node, resource = %name, "resource {name}: down");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(DOWN_POLL) => continue,
            }
        };
        let mut rx = v.subscribe();
        loop {
            let now = ResourceState::from(&*rx.borrow_and_update());
            if last.as_ref() != Some(&now) {
                log_resource(&node, &name, &now);
                last = Some(now);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { break },
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct GroupState {
    holder: String,
    phase: &'static str,
    epoch: u64,
    peer_online: Option<bool>,
    split_brain_warning: bool,
    links: Vec<(String, bool)>,
}

/// Every group's state (issue 17), each with the shared membership facts.
fn group_states(v: &ClusterView) -> Vec<(String, GroupState)> {
    let (peer_online, links) = match &v.membership {
        Some(m) => (Some(m.peer_alive()), m.links.iter().map(|l| (l.name.clone(), l.up)).collect()),
        None => (None, Vec::new()),
    };
    v.groups
        .iter()
        .map(|g| {
            let s = &g.status;
            let st = GroupState {
                holder: s.holder.as_ref().map_or_else(|| "-".to_string(), |(n, _)| n.clone()),
                phase: s.phase.name(),
                epoch: s.epoch,
                peer_online,
                split_brain_warning: s.split_brain_warning.is_some(),
                links: links.clone(),
            };
            (g.name.clone(), st)
        })
        .collect()
}

async fn follow_group(node: String, cluster: Arc<ClusterHandle>, stop: CancellationToken) {
    let mut rx = cluster.subscribe();
    let mut last: std::collections::BTreeMap<String, GroupState> = Default::default();
    let mut last_links: Vec<(String, bool)> = Vec::new();
    loop {
        let states = group_states(&rx.borrow_and_update());
        for (name, now) in states {
            let before = last.get(&name).cloned().unwrap_or_default();
            if now.phase.is_empty() || now == before {
                continue;
            }
            let changed = now.holder != before.holder
                || now.phase != before.phase
                || now.epoch != before.epoch
                || now.peer_online != before.peer_online
                || now.split_brain_warning != before.split_brain_warning;
            if changed {
                let peer = match now.peer_online {
                    Some(true) => "online",
                    Some(false) => "offline",
                    None => "-",
                };
                tracing::info!(
                    target: "state",
                    node = %node,
                    group = %name,
                    holder = %now.holder,
                    phase = now.phase,
                    epoch = now.epoch,
                    peer,
                    split_brain_warning = now.split_brain_warning,
                    "group {name}: {} on {node}, holder {}, epoch {}, peer {peer}",
                    now.phase,
                    now.holder,
                    now.epoch
                );
            }
            for (link, up) in &now.links {
                if !last_links.iter().any(|(l, u)| l == link && u == up) {
                    tracing::info!(target: "state", node = %node, link = %link, up = *up, "heartbeat link {link}: {}", if *up { "up" } else { "down" });
                }
            }
            last_links.clone_from(&now.links);
            last.insert(name, now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// How often a follower looks for a resource that is down (cheap: one lock, no I/O).
const DOWN_POLL: Duration = Duration::from_millis(100);

/// Keeps one follower per resource of the running configuration: started for resources `adjust`
/// adds, stopped (with a `removed` event) for those it removes, as each configuration is installed.
async fn follow_resources(resources: Arc<Resources>, stop: CancellationToken) {
    let mut followed: std::collections::BTreeMap<String, CancellationToken> = Default::default();
    let mut installed = resources.installed();
    loop {
        installed.borrow_and_update();
        let config = resources.running_config();
        let new: Vec<String> = config.resources.keys().filter(|n| !followed.contains_key(*n)).cloned().collect();
        for name in new {
            let token = stop.child_token();
            tokio::spawn(follow_resource(Arc::clone(&resources), name.clone(), token.clone()));
            followed.insert(name, token);
        }
        followed.retain(|name, token| {
            let keep = config.resources.contains_key(name);
            if !keep {
                token.cancel();
                tracing::info!(target: "state", node = %resources.node, resource = %name, "resource {name}: removed from the configuration");
            }
            keep
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = installed.changed() => if changed.is_err() { return },
        }
    }
}

/// Starts the resource followers and one for the group.
pub fn start(resources: &Arc<Resources>, cluster: Option<&Arc<ClusterHandle>>, stop: &CancellationToken) {
    tokio::spawn(follow_resources(Arc::clone(resources), stop.clone()));
    if let Some(c) = cluster {
        tokio::spawn(follow_group(resources.node.clone(), Arc::clone(c), stop.clone()));
    }
}
