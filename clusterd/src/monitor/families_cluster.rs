//! The `/metrics` families of the cluster layer (group, heartbeats, failovers, guard) and of the
//! embedded iSCSI target. Computed from one [`Sample`] at scrape time.

use super::families::{Labels, counters, gauges, state_set};
use super::sample::Sample;
use crate::failover::Phase;
use iscsi_target::stats::{opcode_name, tmf_name};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use std::fmt;

const PHASES: [Phase; 6] = [Phase::Idle, Phase::Claiming, Phase::Starting, Phase::Holding, Phase::Stopping, Phase::Failed];

pub fn encode_node(e: &mut DescriptorEncoder, s: &Sample) -> fmt::Result {
    let info = vec![("node", s.node.clone()), ("version", env!("CARGO_PKG_VERSION").to_string())];
    gauges(e, "clusterd_node_info", "Always 1; labels name this node and the clusterd version", &[(info, 1u64)])?;
    gauges(e, "clusterd_uptime_seconds", "Seconds since this clusterd started", &[(Labels::new(), s.uptime_seconds)])
}

pub fn encode_cluster(e: &mut DescriptorEncoder, s: &Sample) -> fmt::Result {
    let Some(c) = &s.cluster else { return Ok(()) };
    // One series per failover group (issue 17), labelled `group` (`default` for a single `group:`).
    if !c.view.groups.is_empty() {
        let group = |g: &str| vec![("group", g.to_string())];
        let mut holders: Vec<(Labels, i64)> = Vec::new();
        for g in &c.view.groups {
            let holder = g.status.holder.as_ref().map(|(n, _)| n.as_str());
            holders.extend(s.nodes.iter().map(|n| (vec![("group", g.name.clone()), ("node", n.clone())], i64::from(holder == Some(n.as_str())))));
        }
        gauges(e, "clusterd_group_holder", "1 for the node that holds the failover group as this node knows it (all 0: nobody)", &holders)?;
        let phases: Vec<&'static str> = PHASES.iter().map(|p| p.name()).collect();
        let now: Vec<(Labels, Option<&str>)> = c.view.groups.iter().map(|g| (group(&g.name), Some(g.status.phase.name()))).collect();
        state_set(e, "clusterd_group_phase", "This node's failover sequencer phase", &phases, &now)?;
        gauges(e, "clusterd_group_epoch", "Epoch of the group holder (bumped at every acquisition)", &c.view.groups.iter().map(|g| (group(&g.name), g.status.epoch)).collect::<Vec<_>>())?;
        // ALUA groups: each target port group's access state as this node sets it.
        let ports: Vec<(Labels, Option<&str>)> = c
            .view
            .groups
            .iter()
            .flat_map(|g| g.alua.iter().map(move |(id, st)| (vec![("group", g.name.clone()), ("port_group", id.to_string())], Some(*st))))
            .collect();
        if !ports.is_empty() {
            state_set(e, "clusterd_group_alua_port_state", "ALUA access state of the group's target port group (2 + node index; 1 = the VIP portal with access both)", &crate::daemon::alua_ports::STATE_NAMES, &ports)?;
        }
        gauges(e, "clusterd_group_split_brain_warning", "Boolean: both nodes may hold the group (unguarded takeover, or a healed split being resolved)", &c.view.groups.iter().map(|g| (group(&g.name), i64::from(g.status.split_brain_warning.is_some()))).collect::<Vec<_>>())?;
    }
    if let Some(m) = &c.view.membership {
        gauges(e, "clusterd_peer_online", "Boolean whether the peer is heard on at least one heartbeat link", &[(vec![("peer", m.peer.clone())], i64::from(m.peer_alive()))])?;
        // Issue 15: 0 while the peer's digest is unknown (not heard, or an older release).
        let differs = i64::from(m.config_differs() == Some(true));
        gauges(e, "clusterd_config_digest_mismatch", "Boolean: the peer's heartbeats carry a configuration digest other than this node's (run haadm adjust on both with the same ha.yaml)", &[(vec![("peer", m.peer.clone())], differs)])?;
        let link = |name: &str| vec![("link", name.to_string())];
        gauges(e, "clusterd_heartbeat_link_up", "Boolean whether the heartbeat link is up", &m.links.iter().map(|l| (link(&l.name), i64::from(l.up))).collect::<Vec<_>>())?;
        let heard: Vec<(Labels, f64)> = m.links.iter().filter_map(|l| l.last_heard_ago.map(|d| (link(&l.name), d.as_secs_f64()))).collect();
        gauges(e, "clusterd_heartbeat_link_last_heard_age_seconds", "Seconds since the last accepted heartbeat on the link (absent: never heard)", &heard)?;
        gauges(e, "clusterd_heartbeat_link_largest_gap_seconds", "Largest gap between two accepted heartbeats while the link was up", &m.links.iter().map(|l| (link(&l.name), l.largest_gap.as_secs_f64())).collect::<Vec<_>>())?;
        counters(e, "clusterd_heartbeat_packets", "Authenticated heartbeats accepted on the link", &m.links.iter().map(|l| (link(&l.name), l.packets_ok)).collect::<Vec<_>>())?;
        let late: Vec<(Labels, u64)> = m.links.iter().map(|l| (link(&l.name), c.counts.late_heartbeats.get(&l.name).copied().unwrap_or(0))).collect();
        counters(e, "clusterd_heartbeat_late", "Heartbeats that arrived later than warntime after the previous one", &late)?;
        let mut rejected = Vec::new();
        for l in &m.links {
            for (reason, n) in l.dropped.by_reason() {
                rejected.push((vec![("link", l.name.clone()), ("reason", reason.to_string())], n));
            }
        }
        counters(e, "clusterd_heartbeat_rejected", "Heartbeat packets dropped, by reason (bad_mac: wrong key or forged; replay: an old sequence number)", &rejected)?;
    }
    counters(e, "clusterd_failovers", "Times the failover group moved to this node from the peer (takeovers and hand-overs)", &[(Labels::new(), c.counts.failovers)])?;
    c.failovers.encode(e.encode_descriptor(
        "clusterd_failover_duration_seconds",
        "Seconds from the peer declared dead (or a hand-over's start) to this node holding the group",
        None,
        c.failovers.metric_type(),
    )?)?;
    let guard: Vec<(Labels, u64)> = [super::counters::GuardResult::Confirmed, super::counters::GuardResult::Refused]
        .iter()
        .map(|r| (vec![("result", r.name().to_string())], c.counts.guard_runs.get(r).copied().unwrap_or(0)))
        .collect();
    counters(e, "clusterd_guard_runs", "Guard runs before taking over a silent peer, by result", &guard)?;
    use super::counters::FenceResult as F;
    let fence: Vec<(Labels, u64)> = [F::Fenced, F::Failed, F::Skipped]
        .iter()
        .map(|r| (vec![("result", r.name().to_string())], c.counts.fence_commands.get(r).copied().unwrap_or(0)))
        .collect();
    counters(e, "clusterd_fence_commands", "cluster.guard.fence-command runs, by result", &fence)
}

pub fn encode_target(e: &mut DescriptorEncoder, s: &Sample) -> fmt::Result {
    let t = &s.target;
    gauges(e, "clusterd_iscsi_target_up", "Boolean whether the iSCSI target is served on this node now", &[(Labels::new(), i64::from(t.running))])?;
    let mut sessions: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for x in &t.sessions {
        *sessions.entry((x.target.clone(), x.initiator.clone())).or_default() += 1;
    }
    let sessions: Vec<(Labels, u64)> = sessions.into_iter().map(|((tg, i), n)| (vec![("target", tg), ("initiator", i)], n)).collect();
    gauges(e, "clusterd_iscsi_sessions", "Logged-in iSCSI sessions per target and initiator", &sessions)?;
    let tgt = |name: &str| vec![("target", name.to_string())];
    let per = |f: &dyn Fn(&iscsi_target::stats::TargetTotals) -> u64| -> Vec<(Labels, u64)> { t.totals.iter().map(|(n, x)| (tgt(n), f(x))).collect() };
    counters(e, "clusterd_iscsi_logins", "Successful logins of normal sessions", &per(&|x| x.logins))?;
    let refusals: Vec<(Labels, u64)> = t.refusals.iter().map(|(r, n)| (vec![("reason", r.name().to_string())], *n)).collect();
    counters(e, "clusterd_iscsi_login_refusals", "Refused logins by reason (chap: authentication failed; acl: initiator not allowed; not_found: no such target)", &refusals)?;
    let mut commands = Vec::new();
    let mut tmf = Vec::new();
    for (name, x) in &t.totals {
        for (op, n) in &x.commands {
            commands.push((vec![("target", name.clone()), ("opcode", opcode_name(*op).into_owned())], *n));
        }
        for (f, n) in &x.tmf {
            tmf.push((vec![("target", name.clone()), ("function", tmf_name(*f).into_owned())], *n));
        }
    }
    counters(e, "clusterd_iscsi_commands", "SCSI commands completed, by CDB opcode", &commands)?;
    if !t.totals.is_empty() {
        let mut m = e.encode_descriptor(
            "clusterd_iscsi_command_duration_seconds",
            "SCSI command latency from execution start to the queued response, for reads, writes and flushes",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (name, x) in &t.totals {
            for (class, h) in &x.latency {
                let labels = vec![("target", name.clone()), ("class", class.name().to_string())];
                m.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
            }
        }
    }
    counters(e, "clusterd_iscsi_sent_bytes", "Data-In payload sent to initiators (read data)", &per(&|x| x.data_in_bytes))?;
    counters(e, "clusterd_iscsi_received_bytes", "Data-Out and immediate payload received from initiators (write data)", &per(&|x| x.data_out_bytes))?;
    counters(e, "clusterd_iscsi_task_management", "Task management requests, by function", &tmf)?;
    counters(e, "clusterd_iscsi_reservation_conflicts", "Commands answered RESERVATION CONFLICT", &per(&|x| x.reservation_conflicts))
}
