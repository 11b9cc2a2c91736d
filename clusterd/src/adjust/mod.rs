//! `haadm adjust`: the difference between the running configuration and ha.yaml as it is now, as a
//! plan of live changes — or a refusal naming every field that cannot change while the node runs.
//!
//! Planning is a pure function ([`plan`]): the two configurations plus what is running here (which
//! resources are attached or Primary, whether the target is served, which secret files changed) in,
//! a [`Plan`] or the [`Refusal`]s out. Nothing is applied unless the whole plan is acceptable, so a
//! refused adjust leaves the node exactly as it was. Applying is in [`apply`].
//!
//! Fields are compared on the canonical dump (`config::dump`), flattened to `section.key` paths, so
//! the plan names fields the way ha.yaml spells them and a default written out equals one left out.

pub mod apply;
mod cluster;
mod flat;

use crate::config::{HaConfig, dump_value};
use flat::{Flat, differences, section};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What is running on this node, as far as planning needs it.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// This node's name in the configuration.
    pub node: String,
    /// Resources with a running volume (attached).
    pub attached: BTreeSet<String>,
    /// Resources that are Primary here.
    pub primary: BTreeSet<String>,
    /// The embedded target serves on this node.
    pub target_running: bool,
    /// Secret files (CHAP, heartbeat authkeys) whose content differs from what the running
    /// configuration read.
    pub changed_secrets: BTreeSet<PathBuf>,
    /// The cluster layer (heartbeats, failover) runs here.
    pub cluster_running: bool,
    /// Heartbeat links that hear the peer now.
    pub links_up: BTreeSet<String>,
    pub peer_alive: bool,
}

/// One change of a plan: the line `--dry-run` prints and what applying it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub line: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Push the resource's live options into its running volume.
    ResourceOptions(String),
    /// Only the configuration changes (the resource is down, or the field is used at its next start).
    ResourceConfig(String),
    AddResource(String),
    RemoveResource(String),
    /// Targets, LUNs, ACLs, CHAP or iSCSI settings: the running target takes the new configuration
    /// for new logins (existing sessions keep theirs).
    Targets,
    /// Heartbeat timers, links and keys, guard, escalation, auto-failback: the cluster loop and the
    /// heartbeat service take them at once.
    Cluster,
    /// This node's metrics listener is started, moved or stopped.
    Metrics,
}

/// A field that cannot change now, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Refusal {
    pub field: String,
    pub reason: String,
}

/// The accepted difference, and the configuration that is running once it is applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub config: HaConfig,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

const RESTART: &str = "needs a restart of clusterd (not adjusted live)";

/// Plans the move from `old` (running) to `new` (ha.yaml now) for `which` (`all` or one resource).
/// With one resource only that resource's section is compared and taken over; the rest of the
/// running configuration stays.
pub fn plan(old: &HaConfig, new: &HaConfig, which: &str, st: &RunState) -> Result<Plan, Vec<Refusal>> {
    let all = which.is_empty() || which == "all";
    let mut changes = Vec::new();
    let mut refusals = Vec::new();
    if !all && !old.resources.contains_key(which) && !new.resources.contains_key(which) {
        return Err(vec![Refusal {
            field: format!("resources.{which}"),
            reason: format!("no such resource in {} nor in the running configuration", new.path.display()),
        }]);
    }
    let old_doc = dump_value(old);
    let new_doc = dump_value(new);
    if all {
        for part in ["nodes", "group", "groups"] {
            for (field, _, _) in differences(&section(&old_doc, &[part]), &section(&new_doc, &[part]), part) {
                let reason = match part {
                    "nodes" => "the nodes (names, control sockets, state directories) cannot change while clusterd runs; \
                                needs a restart of clusterd on both nodes"
                        .to_string(),
                    _ => "the group's members, VIP and start order are in use by the failover sequencer; needs a \
                          restart of clusterd (move the group to the peer first: `haadm standby`)"
                        .to_string(),
                };
                refusals.push(Refusal { field, reason });
            }
        }
        cluster::cluster_changes(old, new, &old_doc, &new_doc, st, &mut changes, &mut refusals);
        cluster::metrics_changes(old, new, st, &mut changes);
    }
    let names: BTreeSet<&String> = old.resources.keys().chain(new.resources.keys()).collect();
    for name in names.into_iter().filter(|n| all || n.as_str() == which) {
        resource_changes(old, new, name, &old_doc, &new_doc, st, &mut changes, &mut refusals);
    }
    if all {
        target_changes(old, new, &old_doc, &new_doc, st, &mut changes, &mut refusals);
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    // Resources come up before targets use them, and go only after the targets let go of them.
    changes.sort_by_key(|c| match c.kind {
        ChangeKind::AddResource(_) => 0,
        ChangeKind::ResourceOptions(_) | ChangeKind::ResourceConfig(_) => 1,
        ChangeKind::Targets | ChangeKind::Cluster | ChangeKind::Metrics => 2,
        ChangeKind::RemoveResource(_) => 3,
    });
    let config = if all { new.clone() } else { merged(old, new, which) };
    Ok(Plan { changes, config })
}

/// The running configuration with only resource `which` taken from `new`.
fn merged(old: &HaConfig, new: &HaConfig, which: &str) -> HaConfig {
    let mut out = old.clone();
    match new.resources.get(which) {
        Some(r) => out.resources.insert(which.to_string(), r.clone()),
        None => out.resources.remove(which),
    };
    out
}

/// How a changed resource field is taken by a running (attached) resource.
enum Take {
    Live,
    /// Live, noted: taken at the resource's next connection or start.
    Later(&'static str),
    /// Cannot change while attached.
    Refuse(String),
}

fn take(field: &str, me: &str) -> Take {
    let mine = |k: &str| field == format!("on.{me}.{k}");
    // issue 18: a running resync keeps the choice it started with.
    if field == "syncer.csums-alg" || field == "syncer.csums-for" {
        return Take::Later("from the next resync");
    }
    if field.starts_with("syncer.") && field != "syncer.al-extents" || field == "disk.fencing" || field.starts_with("handlers") {
        return Take::Live;
    }
    if ["net.after-sb-0pri", "net.after-sb-1pri", "net.after-sb-2pri", "net.rr-conflict", "net.cram-hmac-alg", "net.shared-secret-file"]
        .contains(&field)
        || field == "syncer.verify-alg"
    {
        return Take::Later("from the next connection");
    }
    if field == "net.connect-int" || field == "net.max-buffers" || field == "syncer.al-extents" || field.starts_with("startup.") {
        return Take::Later("at the next attach");
    }
    if field.starts_with("net.") {
        return Take::Live;
    }
    if mine("disk") || mine("meta-disk") {
        return Take::Refuse("the backing device cannot change while the resource is attached; run `haadm down` first (or detach/attach)".into());
    }
    if field.starts_with("on.") && field.ends_with(".address") {
        return Take::Refuse("the replication addresses are bound while the resource is attached; run `haadm down` first".into());
    }
    if field.starts_with("on.") {
        // The peer's disk or meta-disk: nothing of it runs here.
        return Take::Later("on that node");
    }
    Take::Refuse(match field {
        "device" => "the device name cannot change while the resource is attached; run `haadm down` first".into(),
        _ => format!("cannot change while the resource is attached; run `haadm down` and `haadm up` (field `{field}`)"),
    })
}

#[allow(clippy::too_many_arguments)]
fn resource_changes(
    old: &HaConfig,
    new: &HaConfig,
    name: &str,
    old_doc: &Value,
    new_doc: &Value,
    st: &RunState,
    changes: &mut Vec<Change>,
    refusals: &mut Vec<Refusal>,
) {
    let attached = st.attached.contains(name);
    match (old.resources.contains_key(name), new.resources.contains_key(name)) {
        (false, true) => {
            let line = format!("{name}: add resource");
            changes.push(Change { line, kind: ChangeKind::AddResource(name.to_string()) });
            return;
        }
        (true, false) => {
            if st.primary.contains(name) {
                refusals.push(Refusal {
                    field: format!("resources.{name}"),
                    reason: "is Primary (in use) here; it can be removed only while Secondary or down \
                             (run `haadm secondary` or move the group first)"
                        .into(),
                });
            } else {
                let what = if attached { "remove resource (take it down)" } else { "remove resource" };
                changes.push(Change { line: format!("{name}: {what}"), kind: ChangeKind::RemoveResource(name.to_string()) });
            }
            return;
        }
        _ => {}
    }
    let prefix = format!("resources.{name}");
    let mut live = false;
    let mut lines = Vec::new();
    let (before, after) = (section(old_doc, &["resources", name]), section(new_doc, &["resources", name]));
    for (field, a, b) in differences(&before, &after, &prefix) {
        let short = field[prefix.len() + 1..].to_string();
        let base = format!("{name}: {short} {a} -> {b}");
        if !attached {
            lines.push(base);
            continue;
        }
        match take(&short, &st.node) {
            Take::Live => {
                live = true;
                lines.push(base);
            }
            Take::Later(when) => {
                live = true;
                lines.push(format!("{base} ({when})"));
            }
            Take::Refuse(reason) => refusals.push(Refusal { field, reason }),
        }
    }
    let kind = if live { ChangeKind::ResourceOptions(name.to_string()) } else { ChangeKind::ResourceConfig(name.to_string()) };
    changes.extend(lines.into_iter().map(|line| Change { line, kind: kind.clone() }));
}

fn target_changes(
    old: &HaConfig,
    new: &HaConfig,
    old_doc: &Value,
    new_doc: &Value,
    st: &RunState,
    changes: &mut Vec<Change>,
    refusals: &mut Vec<Refusal>,
) {
    let mut lines = Vec::new();
    for (field, a, b) in differences(&section(old_doc, &["iscsi"]), &section(new_doc, &["iscsi"]), "iscsi") {
        lines.push(format!("{field} {a} -> {b}"));
    }
    let old_t: BTreeMap<&str, _> = old.targets.iter().map(|t| (t.iqn.as_str(), t)).collect();
    let new_t: BTreeMap<&str, _> = new.targets.iter().map(|t| (t.iqn.as_str(), t)).collect();
    if old_t.is_empty() != new_t.is_empty() && st.target_running {
        refusals.push(Refusal { field: "targets".into(), reason: RESTART.into() });
    }
    for (iqn, t) in &new_t {
        if !old_t.contains_key(iqn) {
            let luns: Vec<String> = t.luns.keys().map(|n| n.to_string()).collect();
            lines.push(format!("target {iqn}: add (LUNs {})", luns.join(", ")));
        }
    }
    for iqn in old_t.keys().filter(|i| !new_t.contains_key(*i)) {
        lines.push(format!("target {iqn}: remove (logged-in sessions stay until they log out)"));
    }
    for (iqn, t) in new_t.iter().filter(|(i, _)| old_t.contains_key(*i)) {
        let prefix = format!("targets.{iqn}");
        let (before, after) = (section(old_doc, &["targets", *iqn]), section(new_doc, &["targets", *iqn]));
        let diffs = differences(&before, &after, &prefix);
        let mut seen_luns = BTreeSet::new();
        for (field, a, b) in diffs {
            let short = &field[prefix.len() + 1..];
            let head = format!("target {iqn}");
            if let Some(rest) = short.strip_prefix("luns.") {
                let n = rest.split('.').next().unwrap_or(rest).to_string();
                if !seen_luns.insert(n.clone()) {
                    continue;
                }
                let kept = t.luns.keys().any(|k| k.to_string() == n) && old_t[iqn].luns.keys().any(|k| k.to_string() == n);
                if kept && st.target_running {
                    // Logged-in sessions keep the old logical unit; a second one on the same backing
                    // (with its own reservations) must not appear beside it.
                    refusals.push(Refusal {
                        field: format!("{prefix}.luns.{n}"),
                        reason: "a served LUN cannot change under logged-in sessions (serial, backing, block size, \
                                 write cache); add it under a new LUN number, or change it where the target is not served"
                            .into(),
                    });
                } else {
                    lines.push(lun_line(&head, &n, &before, &after));
                }
                continue;
            }
            match short {
                "initiators" | "networks" => {
                    // "(none)" (absent) and "\"\"" (an empty list: everyone) are no names.
                    let list = |v: &str| -> BTreeSet<String> {
                        v.split(", ").filter(|s| !s.is_empty() && *s != "(none)" && *s != "\"\"").map(String::from).collect()
                    };
                    let (before, after) = (list(&a), list(&b));
                    for x in after.difference(&before) {
                        lines.push(format!("{head}: acl add {x}"));
                    }
                    for x in before.difference(&after) {
                        lines.push(format!("{head}: acl remove {x}"));
                    }
                }
                "portals" if st.target_running => refusals.push(Refusal {
                    field,
                    reason: "the portals are bound while the target runs; needs a restart of clusterd (or a move of the group)".into(),
                }),
                "vendor" | "product" if st.target_running => refusals.push(Refusal {
                    field,
                    reason: "the LUNs' identity (INQUIRY) cannot change under logged-in initiators; needs a restart of clusterd".into(),
                }),
                _ => lines.push(format!("{head}: {short} {a} -> {b}")),
            }
        }
        for (which, user) in [("incoming-user", &t.incoming_user), ("outgoing-user", &t.outgoing_user)] {
            let Some(u) = user else { continue };
            let key = format!("{which}.secret-file");
            let same_file = before.get(&key) == after.get(&key);
            if same_file && st.changed_secrets.contains(&u.secret_file) {
                let kind = if which == "incoming-user" { "chap" } else { "mutual chap" };
                lines.push(format!("target {iqn}: {kind} secret rotated (user {})", u.name));
            }
        }
    }
    if let Some(u) = &new.iscsi.discovery_user
        && st.changed_secrets.contains(&u.secret_file)
    {
        lines.push(format!("iscsi.discovery-user: secret rotated (user {})", u.name));
    }
    changes.extend(lines.into_iter().map(|line| Change { line, kind: ChangeKind::Targets }));
}

/// `add LUN 1 (file /x)`, `remove LUN 1`, or what changed in it.
fn lun_line(head: &str, n: &str, old: &Flat, new: &Flat) -> String {
    let source = |doc: &Flat| {
        let base = format!("luns.{n}");
        match (doc.get(&format!("{base}.path")), doc.get(&format!("{base}.resource"))) {
            (Some(p), _) => Some(format!("file {p}")),
            (None, Some(r)) => Some(format!("resource {r}")),
            _ => None,
        }
    };
    match (source(old), source(new)) {
        (None, Some(s)) => format!("{head}: add LUN {n} ({s})"),
        (Some(_), None) => format!("{head}: remove LUN {n} (logged-in sessions lose it too, told by REPORTED LUNS DATA HAS CHANGED)"),
        (Some(a), Some(b)) if a != b => format!("{head}: replace LUN {n} ({a} -> {b}; for new logins)"),
        _ => format!("{head}: LUN {n} settings changed (for new logins)"),
    }
}

#[cfg(test)]
mod tests;
