//! Engine snapshots → proto messages, and the resync speed/ETA estimate.

use crate::daemon::resources::SlotStatus;
use proto::control::*;
use replicator::machine::Snapshot;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Remembers recent (time, bytes remaining) samples per resource to report the resync speed over the
/// last few seconds, the average since the sync started, and an ETA (as /proc/drbd does).
#[derive(Default)]
pub struct Speedometer {
    samples: Mutex<HashMap<String, SpeedSamples>>,
}

/// Per resource: when the sync was first seen, the bytes remaining then, and the recent samples.
type SpeedSamples = (Instant, u64, VecDeque<(Instant, u64)>);

const WINDOW: Duration = Duration::from_secs(6);

impl Speedometer {
    /// (recent bytes/s, average bytes/s) from the samples recorded so far, without adding one.
    pub fn peek(&self, name: &str) -> (u64, u64) {
        let Ok(map) = self.samples.lock() else { return (0, 0) };
        let Some((t0, rem0, recent)) = map.get(name) else { return (0, 0) };
        let Some(&(t1, rem1)) = recent.back() else { return (0, 0) };
        let per_sec = |from: (Instant, u64)| {
            let dt = t1.duration_since(from.0).as_secs_f64();
            if dt < 0.2 { 0 } else { (from.1.saturating_sub(rem1) as f64 / dt) as u64 }
        };
        (recent.front().copied().map(per_sec).unwrap_or(0), per_sec((*t0, *rem0)))
    }

    /// Record `remaining` for `name` and return (recent bytes/s, average bytes/s).
    pub fn observe(&self, name: &str, remaining: Option<u64>) -> (u64, u64) {
        let Ok(mut map) = self.samples.lock() else { return (0, 0) };
        let Some(rem) = remaining else {
            map.remove(name);
            return (0, 0);
        };
        let now = Instant::now();
        let e = map.entry(name.to_string()).or_insert_with(|| (now, rem, VecDeque::new()));
        if e.2.back().is_some_and(|&(_, r)| rem > r) {
            *e = (now, rem, VecDeque::new()); // a new sync started
        }
        e.2.push_back((now, rem));
        while e.2.len() > 2 && e.2.front().is_some_and(|&(t, _)| now.duration_since(t) > WINDOW) {
            e.2.pop_front();
        }
        let per_sec = |from: (Instant, u64)| {
            let dt = now.duration_since(from.0).as_secs_f64();
            if dt < 0.2 { 0 } else { (from.1.saturating_sub(rem) as f64 / dt) as u64 }
        };
        let recent = e.2.front().copied().map(per_sec).unwrap_or(0);
        (recent, per_sec((e.0, e.1)))
    }
}

/// issue 18 verify: the last verify as status shows it.
pub fn last_verify(v: crate::daemon::verify_schedule::LastVerify) -> LastVerify {
    let o = v.outcome;
    LastVerify {
        finished_unix: v.finished_unix,
        duration_ms: o.finished_ms.saturating_sub(o.started_ms),
        checked_bytes: o.checked_bytes,
        found_bytes: o.found_bytes,
        completed: o.completed,
        repair: o.repair,
        scheduled: v.scheduled,
    }
}

pub fn resource_status(st: SlotStatus, rate: Option<u64>, speedo: &Speedometer) -> ResourceStatus {
    let SlotStatus { name, running, error, local, peer, peer_name } = st;
    let name = name.as_str();
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let Some((s, size)) = running.as_ref() else {
        speedo.observe(name, None);
        return ResourceStatus {
            name: name.into(),
            role: "Secondary".into(),
            disk: "Diskless".into(),
            connection: "StandAlone".into(),
            replication: "Off".into(),
            peer_role: "Unknown".into(),
            peer_disk: "DUnknown".into(),
            peer_node: peer_name.unwrap_or_default(),
            local_address: addr(local),
            peer_address: addr(peer),
            last_error: error.unwrap_or_else(|| "down".into()),
            ..Default::default()
        };
    };
    let sync = s.sync.map(|p| {
        let total = p.total_blocks * 4096;
        let remaining = p.remaining_blocks * 4096;
        let (speed, avg) = speedo.observe(name, Some(remaining));
        let done = if total == 0 { 100.0 } else { 100.0 * (total.saturating_sub(remaining)) as f64 / total as f64 };
        SyncProgress {
            done_percent: done,
            total_bytes: total,
            remaining_bytes: remaining,
            speed_bytes_per_sec: speed,
            avg_bytes_per_sec: avg,
            eta_seconds: remaining.checked_div(speed).unwrap_or(0),
            rate_limit_bytes_per_sec: rate.unwrap_or(0),
            paused: p.paused,
        }
    });
    if sync.is_none() {
        speedo.observe(name, None);
    }
    ResourceStatus {
        name: name.into(),
        role: s.role.to_string(),
        disk: s.disk.to_string(),
        connection: s.conn.to_string(),
        replication: s.repl.to_string(),
        peer_role: s.peer_role.to_string(),
        peer_disk: s.peer_disk.to_string(),
        peer_node: peer_name.unwrap_or_default(),
        local_address: addr(local),
        peer_address: addr(peer),
        size_bytes: *size,
        out_of_sync_bytes: s.out_of_sync_blocks * 4096,
        sync,
        stats: Some(ResourceStats {
            read_bytes: 0,
            written_bytes: s.stats.written_bytes,
            sent_bytes: s.stats.sent_bytes,
            received_bytes: s.stats.received_bytes,
            al_writes: s.stats.al_writes,
            bm_writes: s.stats.bm_writes,
            pending_peer: s.pending_peer as u64,
            resync_blocks_sent: s.stats.resync_blocks_sent,
            resync_blocks_received: s.stats.resync_blocks_received,
            resync_csum_equal_bytes: s.stats.resync_csum_equal_bytes,
        }),
        uuids: Some(GenerationUuids {
            current: s.uuids.current,
            bitmap: s.uuids.bitmap,
            history0: s.uuids.history[0],
            history1: s.uuids.history[1],
        }),
        split_brain: s.split_brain,
        last_error: s.last_error.clone().or(error).unwrap_or_default(),
        suspended: s.suspended.is_some(),
        peer_pr_stale: s.peer_pr_stale,
        attached: true,
        fencing: String::new(),
        protocol_min: s.protocols.min,
        protocol_max: s.protocols.max,
        peer_protocol_min: s.peer_protocols.map_or(0, |r| r.min),
        peer_protocol_max: s.peer_protocols.map_or(0, |r| r.max),
        agreed_protocol: s.agreed_protocol.unwrap_or(0),
        // issue 18 verify: filled by the control service from its `VerifyBook`.
        last_verify: None,
        next_verify_unix: 0,
        detached: s.detached.map(|c| c.to_string()).unwrap_or_default(),
        replication_protocol: s.replication_protocol.to_string(),
        async_lag: s.async_lag.map(|l| AsyncLag {
            bytes: l.bytes,
            writes: l.writes,
            oldest_age_ms: l.oldest_age_ms,
            early_acks: s.stats.async_early_acks,
            lag_waits: s.stats.async_lag_waits,
        }),
        async_promotion_needs_force: s.async_promotion_needs_force,
        resync_controller: s.resync_controller.map(|c| ResyncController {
            budget_bytes: c.budget_bytes,
            fill_target_bytes: c.fill_target_bytes,
            baseline_p99_us: c.baseline_p99_us.unwrap_or(0),
            last_p99_us: c.last_p99_us.unwrap_or(0),
            throttling: c.throttling,
            probing: c.probing,
        }),
    }
}

/// An events2-like line for one resource.
pub fn event(kind: &str, name: &str, s: &Snapshot) -> Event {
    let kv = |k: &str, v: String| KeyValue { key: k.into(), value: v };
    let mut fields = vec![
        kv("role", s.role.to_string()),
        kv("disk", s.disk.to_string()),
        kv("connection", s.conn.to_string()),
        kv("replication", s.repl.to_string()),
        kv("peer-role", s.peer_role.to_string()),
        kv("peer-disk", s.peer_disk.to_string()),
        kv("out-of-sync", (s.out_of_sync_blocks * 4).to_string()),
    ];
    if let Some(p) = s.sync {
        let done = if p.total_blocks == 0 { 100.0 } else { 100.0 * (p.total_blocks - p.remaining_blocks.min(p.total_blocks)) as f64 / p.total_blocks as f64 };
        fields.push(kv("done", format!("{done:.2}")));
    }
    if s.split_brain {
        fields.push(kv("split-brain", "yes".into()));
    }
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Event { seq: 0, unix_ms, kind: kind.into(), object: "resource".into(), name: name.into(), fields }
}

/// The cluster part of `status`: membership per link and the sequencer's view of the group.
pub fn cluster_status(view: &crate::daemon::cluster::ClusterView, me: &str) -> ClusterStatus {
    let mut out = ClusterStatus { generation: view.generation, configured: true, ..Default::default() };
    if let Some(s) = view.sequencer() {
        out.phase = s.phase.name().to_string();
        out.epoch = s.epoch;
        out.group_holder = s.holder.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
        out.split_brain_warning = s.split_brain_warning.clone().unwrap_or_default();
        out.waiting = s.waiting.clone().unwrap_or_default();
        out.last_failure = s.last_failure.clone().unwrap_or_default();
        out.handoff = format!("{:?}", s.handoff);
        if out.handoff == "None" {
            out.handoff.clear();
        }
    }
    for g in &view.groups {
        let s = &g.status;
        let handoff = format!("{:?}", s.handoff);
        out.groups.push(proto::control::GroupStatus {
            name: g.name.clone(),
            holder: s.holder.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
            phase: s.phase.name().to_string(),
            epoch: s.epoch,
            split_brain_warning: s.split_brain_warning.clone().unwrap_or_default(),
            waiting: s.waiting.clone().unwrap_or_default(),
            last_failure: s.last_failure.clone().unwrap_or_default(),
            handoff: if handoff == "None" { String::new() } else { handoff },
            access: g.access.to_string(),
            ports: g.ports(),
        });
    }
    out.nodes.push(NodeStatus { name: me.to_string(), online: true, standby: false });
    if let Some(m) = &view.membership {
        out.peer_generation = m.generation.unwrap_or(0);
        if let Some(v) = &m.peer_versions {
            out.peer_software_version = v.software.clone();
            out.peer_heartbeat_min = v.heartbeat.min;
            out.peer_heartbeat_max = v.heartbeat.max;
            out.heartbeat_version = v.agreed;
        }
        out.nodes.push(NodeStatus { name: m.peer.clone(), online: m.peer_alive(), standby: false });
        for l in &m.links {
            let detail: Vec<String> = l
                .dropped
                .by_reason()
                .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
            out.links.push(LinkStatus {
                name: l.name.clone(),
                up: l.up,
                last_heard_ms_ago: l.last_heard_ago.map_or(0, |d| d.as_millis() as u64),
                heard: l.last_heard_ago.is_some(),
                largest_gap_ms: l.largest_gap.as_millis() as u64,
                packets_ok: l.packets_ok,
                dropped: l.dropped.total(),
                dropped_detail: detail.join(" "),
            });
        }
    }
    out
}

/// One `group` event line from the cluster view: who holds the group, the phase, the peer and the links.
/// Only the fields that describe state (not timings) are included, so identical lines can be dropped.
pub fn cluster_event(kind: &str, view: &crate::daemon::cluster::ClusterView) -> Event {
    let kv = |k: &str, v: String| KeyValue { key: k.into(), value: v };
    let mut fields = Vec::new();
    if let Some(s) = view.sequencer() {
        fields.push(kv("holder", s.holder.as_ref().map(|(n, _)| n.clone()).unwrap_or_else(|| "-".into())));
        fields.push(kv("phase", s.phase.name().into()));
        fields.push(kv("epoch", s.epoch.to_string()));
        if let Some(w) = &s.split_brain_warning {
            fields.push(kv("split-brain", w.clone()));
        }
    }
    // Issue 17: every named group (the fields above are the first group's, as before).
    if view.groups.len() > 1 || view.groups.first().is_some_and(|g| g.name != crate::config::LEGACY_GROUP_NAME) {
        for g in &view.groups {
            let s = &g.status;
            fields.push(kv(&format!("holder.{}", g.name), s.holder.as_ref().map(|(n, _)| n.clone()).unwrap_or_else(|| "-".into())));
            fields.push(kv(&format!("phase.{}", g.name), s.phase.name().into()));
            fields.push(kv(&format!("epoch.{}", g.name), s.epoch.to_string()));
        }
    }
    if let Some(m) = &view.membership {
        fields.push(kv("peer", format!("{}:{}", m.peer, if m.peer_alive() { "online" } else { "offline" })));
        for l in &m.links {
            fields.push(kv(&format!("link-{}", l.name), if l.up { "up".into() } else { "down".into() }));
        }
        if let (Some(true), Some(mine), Some(theirs)) = (m.config_differs(), &m.local_config_digest, &m.peer_config_digest) {
            fields.push(kv("config", format!("differs from {} ({mine} vs {theirs})", m.peer)));
        } else if m.config_differs() == Some(false) {
            fields.push(kv("config", "same".into()));
        }
    }
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Event { seq: 0, unix_ms, kind: kind.into(), object: "group".into(), name: "group".into(), fields }
}
