//! Planning live changes of the `cluster` section (heartbeat timers, links, keys, guard, fencing
//! and escalation, auto-failback) and of this node's metrics listener.
//!
//! Links are compared by name, not position: a link whose mode, port or addresses changed restarts
//! (new socket, its liveness forgotten), the others keep hearing the peer. When no link that hears
//! the peer now stays unchanged, the plan says so: the peer must be adjusted too before the grace
//! runs out (the membership core does not declare the peer dead for `initdead` after such a change).

use super::flat::{differences, section};
use super::{Change, ChangeKind, RESTART, Refusal, RunState};
use crate::config::HaConfig;
use serde_yaml::Value;
use std::collections::BTreeSet;

pub(super) fn cluster_changes(old: &HaConfig, new: &HaConfig, old_doc: &Value, new_doc: &Value, st: &RunState, changes: &mut Vec<Change>, refusals: &mut Vec<Refusal>) {
    let diffs = differences(&section(old_doc, &["cluster"]), &section(new_doc, &["cluster"]), "cluster");
    let (Some(oc), Some(nc)) = (&old.cluster, &new.cluster) else {
        // A cluster layer appears or goes (or the manager changes with it): not a live change.
        if let Some((field, _, _)) = diffs.into_iter().next() {
            refusals.push(Refusal { field, reason: RESTART.into() });
        }
        return;
    };
    if old.manager != new.manager || !st.cluster_running {
        for (field, _, _) in diffs {
            refusals.push(Refusal { field, reason: RESTART.into() });
        }
        return;
    }
    let mut lines = Vec::new();
    for (field, a, b) in diffs.iter().filter(|(f, _, _)| !f.starts_with("cluster.links")) {
        lines.push(format!("{field} {a} -> {b}"));
    }
    let old_names: BTreeSet<&str> = oc.links.iter().map(|l| l.name.as_str()).collect();
    let new_names: BTreeSet<&str> = nc.links.iter().map(|l| l.name.as_str()).collect();
    let mut untouched_up = false;
    for l in &nc.links {
        match oc.links.iter().find(|o| o.name == l.name) {
            None => lines.push(format!("cluster.links: add link {} ({} port {})", l.name, l.mode.as_str(), l.port)),
            Some(o) if o != l => lines.push(format!(
                "cluster.links.{}: changed (mode, port or addresses): the link restarts and hears the peer once the peer has it too",
                l.name
            )),
            Some(_) => untouched_up |= st.links_up.contains(&l.name),
        }
    }
    for name in old_names.difference(&new_names) {
        lines.push(format!("cluster.links: remove link {name}"));
    }
    let links_changed = oc.links != nc.links;
    if links_changed && st.peer_alive && !untouched_up {
        lines.push(format!(
            "cluster.links: WARNING no link that hears the peer now stays unchanged: adjust the peer within \
             initdead ({}) or it is declared dead",
            crate::config::format_duration(nc.initdead)
        ));
    }
    if oc.authkeys_file == nc.authkeys_file && st.changed_secrets.contains(&nc.authkeys_file) {
        lines.push(format!("cluster.authkeys-file: {} changed: keys reloaded", nc.authkeys_file.display()));
    }
    changes.extend(lines.into_iter().map(|line| Change { line, kind: ChangeKind::Cluster }));
}

/// The metrics listeners: this node's is moved, started or stopped; other nodes' entries are only
/// configuration here.
pub(super) fn metrics_changes(old: &HaConfig, new: &HaConfig, st: &RunState, changes: &mut Vec<Change>) {
    let show = |a: Option<std::net::SocketAddr>| a.map_or("(none)".to_string(), |a| a.to_string());
    let nodes: BTreeSet<&String> = old.metrics.listen.keys().chain(new.metrics.listen.keys()).collect();
    for node in nodes {
        let (a, b) = (old.metrics.listen_for(node), new.metrics.listen_for(node));
        if a == b {
            continue;
        }
        let line = if *node == st.node {
            match (a, b) {
                (None, Some(_)) => format!(
                    "metrics.on.{node}: {} -> {} (listener started; iSCSI counters from new sessions on)",
                    show(a),
                    show(b)
                ),
                (Some(_), None) => format!("metrics.on.{node}: {} -> (none) (listener stopped)", show(a)),
                _ => format!("metrics.on.{node}: {} -> {} (listener moved)", show(a), show(b)),
            }
        } else {
            format!("metrics.on.{node}: {} -> {} (on that node)", show(a), show(b))
        };
        changes.push(Change { line, kind: ChangeKind::Metrics });
    }
}
