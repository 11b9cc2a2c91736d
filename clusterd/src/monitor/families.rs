//! The `/metrics` families of the replicated resources. Where DRBD has an equivalent, the family has
//! drbd-reactor's exact name, labels and meaning (`drbd_resource_role{name,drbd_resource_role}`, ...)
//! so a DRBD user's dashboards and alerts work unchanged; the rest are `clusterd_resource_*`. The
//! cluster and target families are in `families_cluster.rs`; the README lists them all.
//!
//! Everything is computed from one [`Sample`] at scrape time: nothing here runs on the data path.

use super::sample::{ResourceSample, Sample};
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use replicator::machine::state::{ConnState, DiskState, ReplState, Role};
use std::fmt;

/// A label set: `(key, value)` pairs in exposition order.
pub type Labels = Vec<(&'static str, String)>;

/// Writes one family of gauges (skipped when it has no samples, so an idle node exposes no empty
/// families).
pub fn gauges<V: EncodeGaugeValue>(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, V)]) -> fmt::Result {
    typed(e, name, help, MetricType::Gauge, samples, |m, v| m.encode_gauge(v))
}

/// Writes one family of counters; `name` is without `_total`, which the exposition appends.
pub fn counters<V: EncodeCounterValue>(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, V)]) -> fmt::Result {
    typed(e, name, help, MetricType::Counter, samples, |m, v| m.encode_counter::<NoLabelSet, _, u64>(v, None))
}

/// A family of type `unknown`: drbd-reactor's two byte counters that lack the `_total` suffix keep
/// their exact names this way.
pub fn untyped(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> fmt::Result {
    typed(e, name, help, MetricType::Unknown, samples, |m, v| m.encode_gauge(v))
}

fn typed<V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: &[(Labels, V)],
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, &V) -> fmt::Result,
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            write(&mut m, v)?; // `name 1`, not `name{} 1`
        } else {
            write(&mut m.encode_family(labels)?, v)?;
        }
    }
    Ok(())
}

/// A state set the way drbd-reactor writes one (with `enums = true`): one gauge per possible state,
/// 1 for the current one, 0 for the others; the state is a label named after the family.
pub fn state_set(
    e: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    states: &[&'static str],
    samples: &[(Labels, Option<&str>)],
) -> fmt::Result {
    let mut out = Vec::with_capacity(samples.len() * states.len());
    for (labels, current) in samples {
        for &s in states {
            let mut l = labels.clone();
            l.push((name, s.to_string()));
            out.push((l, i64::from(*current == Some(s))));
        }
    }
    gauges(e, name, help, &out)
}

fn names<T: Copy>(from_code: impl Fn(u8) -> Option<T>, name: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    (0..=u8::MAX).map_while(from_code).map(name).collect()
}

pub fn roles() -> Vec<&'static str> {
    names(Role::from_code, Role::as_str)
}
pub fn disk_states() -> Vec<&'static str> {
    names(DiskState::from_code, DiskState::as_str)
}
pub fn conn_states() -> Vec<&'static str> {
    names(ConnState::from_code, ConnState::as_str)
}
pub fn repl_states() -> Vec<&'static str> {
    names(ReplState::from_code, ReplState::as_str)
}

/// The label sets drbd-reactor uses for one resource.
struct DrbdLabels {
    resource: Labels,
    connection: Labels,
    device: Labels,
    peerdevice: Labels,
}

fn drbd_labels(s: &Sample, r: &ResourceSample) -> DrbdLabels {
    let name = ("name", r.name.clone());
    let conn = vec![
        name.clone(),
        ("conn_name", r.peer.clone().unwrap_or_default()),
        ("peer_node_id", s.peer_node_id.to_string()),
    ];
    let mut peerdevice = conn.clone();
    peerdevice.push(("volume", "0".into()));
    DrbdLabels {
        resource: vec![name.clone()],
        connection: conn,
        device: vec![name, ("volume", "0".into()), ("minor", r.minor.to_string())],
        peerdevice,
    }
}

fn snap(r: &ResourceSample) -> Option<&replicator::machine::Snapshot> {
    r.running.as_ref().map(|x| &x.snap)
}

/// Our own labels for one resource (and its peer).
fn own(r: &ResourceSample) -> Labels {
    vec![("resource", r.name.clone())]
}
fn own_peer(r: &ResourceSample) -> Labels {
    vec![("resource", r.name.clone()), ("peer", r.peer.clone().unwrap_or_default())]
}

/// Every per-resource family.
pub fn encode_resources(e: &mut DescriptorEncoder, s: &Sample) -> fmt::Result {
    let labels: Vec<DrbdLabels> = s.resources.iter().map(|r| drbd_labels(s, r)).collect();
    // Resources that are up; a resource that is down is Diskless/StandAlone (as DRBD shows it).
    let up: Vec<(&ResourceSample, &DrbdLabels)> = s.resources.iter().zip(&labels).filter(|(r, _)| r.running.is_some()).collect();
    let has_peer: Vec<(&ResourceSample, &DrbdLabels)> = s.resources.iter().zip(&labels).filter(|(r, _)| r.peer.is_some()).collect();

    gauges(e, "drbd_resource_resources", "Number of resources", &[(Labels::new(), s.resources.len() as u64)])?;
    let role: Vec<_> = s.resources.iter().zip(&labels).map(|(r, l)| (l.resource.clone(), Some(snap(r).map_or("Secondary", |x| x.role.as_str())))).collect();
    state_set(e, "drbd_resource_role", "DRBD role of the resource", &roles(), &role)?;
    let b = |f: &dyn Fn(&ResourceSample) -> bool, pick: fn(&DrbdLabels) -> &Labels| -> Vec<(Labels, i64)> {
        s.resources.iter().zip(&labels).map(|(r, l)| (pick(l).clone(), i64::from(f(r)))).collect()
    };
    gauges(e, "drbd_resource_suspended", "Boolean whether the resource is suspended (write acknowledgements held: fencing resource-and-stonith)", &b(&|r| snap(r).is_some_and(|x| x.suspended.is_some()), |l| &l.resource))?;
    gauges(e, "drbd_resource_maypromote", "Boolean whether the resource may be promoted to Primary", &b(&may_promote, |l| &l.resource))?;

    let cstate: Vec<_> = has_peer.iter().map(|(r, l)| (l.connection.clone(), Some(snap(r).map_or("StandAlone", |x| x.conn.as_str())))).collect();
    state_set(e, "drbd_connection_state", "DRBD connection state", &conn_states(), &cstate)?;
    let inflight = |f: fn(&replicator::machine::InFlight) -> u64, pick: fn(&DrbdLabels) -> &Labels| -> Vec<(Labels, u64)> {
        up.iter().filter(|(r, _)| r.peer.is_some()).map(|(r, l)| (pick(l).clone(), snap(r).map_or(0, |x| f(&x.in_flight)))).collect()
    };
    gauges(e, "drbd_connection_apinflight_bytes", "Bytes of application writes sent to the peer and not yet acknowledged", &inflight(|i| i.peer_bytes, |l| &l.connection))?;
    gauges(e, "drbd_connection_rsinflight_bytes", "Bytes of resync requests in flight", &inflight(|i| i.resync_bytes, |l| &l.connection))?;

    let dstate: Vec<_> = s.resources.iter().zip(&labels).map(|(r, l)| (l.device.clone(), Some(snap(r).map_or("Diskless", |x| x.disk.as_str())))).collect();
    state_set(e, "drbd_device_state", "DRBD device state", &disk_states(), &dstate)?;
    gauges(e, "drbd_device_unintentionaldiskless", "Boolean whether the device is unintentionally diskless (down, or detached after a disk error; not after `haadm detach`)", &b(&|r| snap(r).is_none_or(|x| x.disk == DiskState::Diskless && x.detached != Some(replicator::machine::detach::DetachCause::Requested)), |l| &l.device))?;
    gauges(e, "drbd_device_quorum", "Boolean whether the device can complete writes now (I/O not suspended, and a disk or an UpToDate peer to write to)", &b(&quorum, |l| &l.device))?;
    let dev = |f: &dyn Fn(&super::sample::Running) -> u64| -> Vec<(Labels, u64)> {
        up.iter().filter_map(|(r, l)| r.running.as_ref().map(|x| (l.device.clone(), f(x)))).collect()
    };
    gauges(e, "drbd_device_size_bytes", "Device size in bytes", &dev(&|x| x.size))?;
    counters(e, "drbd_device_read_bytes", "Bytes returned to application reads (from the local disk, or from the peer where the local copy is stale)", &dev(&|x| x.counters.read_bytes))?;
    counters(e, "drbd_device_written_bytes", "Net data written on the local disk", &dev(&|x| x.snap.stats.written_bytes))?;
    counters(e, "drbd_device_alwrites", "Number of updates of the activity log area of the metadata", &dev(&|x| x.snap.stats.al_writes))?;
    counters(e, "drbd_device_bmwrites", "Number of updates of the bitmap area of the metadata", &dev(&|x| x.snap.stats.bm_writes))?;
    gauges(e, "drbd_device_upperpending", "Application requests (writes, flushes, reads served through the replicator) not yet completed", &dev(&|x| x.snap.in_flight.app_requests))?;
    gauges(e, "drbd_device_lowerpending", "Requests to the local disk not yet completed", &dev(&|x| x.snap.in_flight.disk_requests))?;

    let pd = |f: &dyn Fn(&super::sample::Running) -> u64| -> Vec<(Labels, u64)> {
        up.iter().filter(|(r, _)| r.peer.is_some()).filter_map(|(r, l)| r.running.as_ref().map(|x| (l.peerdevice.clone(), f(x)))).collect()
    };
    gauges(e, "drbd_peerdevice_outofsync_bytes", "Bytes out of sync with this peer, according to the bitmap", &pd(&|x| x.snap.out_of_sync_blocks * 4096))?;
    untyped(e, "drbd_peerdevice_sent_bytes", "Bytes sent to this peer (application writes and resync data; monotonic, use rate())", &pd(&|x| x.snap.stats.sent_bytes))?;
    untyped(e, "drbd_peerdevice_received_bytes", "Bytes received from this peer (replicated writes and resync data; monotonic, use rate())", &pd(&|x| x.snap.stats.received_bytes))?;

    encode_own(e, s)
}

/// `clusterd_resource_*`: what DRBD's exporter has no family for.
fn encode_own(e: &mut DescriptorEncoder, s: &Sample) -> fmt::Result {
    let up: Vec<&ResourceSample> = s.resources.iter().filter(|r| r.running.is_some()).collect();
    let with_peer: Vec<&ResourceSample> = up.iter().copied().filter(|r| r.peer.is_some()).collect();

    gauges(e, "clusterd_resource_up", "Boolean whether the resource is attached (0: down, see the status page or `haadm status` for why)", &s.resources.iter().map(|r| (own(r), i64::from(r.running.is_some()))).collect::<Vec<_>>())?;
    let peer_role: Vec<_> = with_peer.iter().map(|r| (own_peer(r), snap(r).map(|x| x.peer_role.as_str()))).collect();
    state_set(e, "clusterd_resource_peer_role", "The peer's role as this node sees it", &roles(), &peer_role)?;
    let peer_disk: Vec<_> = with_peer.iter().map(|r| (own_peer(r), snap(r).map(|x| x.peer_disk.as_str()))).collect();
    state_set(e, "clusterd_resource_peer_disk_state", "The peer's disk state as this node sees it (DUnknown while not connected)", &disk_states(), &peer_disk)?;
    let repl: Vec<_> = with_peer.iter().map(|r| (own_peer(r), snap(r).map(|x| x.repl.as_str()))).collect();
    state_set(e, "clusterd_resource_replication_state", "Replication state (Established, SyncSource, SyncTarget, PausedSync*, Verify*, ...)", &repl_states(), &repl)?;

    let progress: Vec<_> = up.iter().filter_map(|r| r.progress().map(|p| (r, p))).collect();
    let pl = |r: &ResourceSample, kind: &'static str| {
        let mut l = own(r);
        l.push(("kind", kind.to_string()));
        l
    };
    gauges(e, "clusterd_resource_sync_progress_ratio", "Progress of the running resync or online verify, 0 to 1", &progress.iter().map(|(r, p)| (pl(r, p.kind), p.done_ratio)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_sync_remaining_bytes", "Bytes the running resync or verify still has to go", &progress.iter().map(|(r, p)| (pl(r, p.kind), p.remaining_bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_sync_total_bytes", "Bytes the running resync or verify had to do when it started", &progress.iter().map(|(r, p)| (pl(r, p.kind), p.total_bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_sync_speed_bytes_per_second", "Speed of the running resync or verify over the last few seconds", &progress.iter().map(|(r, p)| (pl(r, p.kind), p.speed_bytes_per_second)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_resync_rate_limit_bytes_per_second", "Configured syncer.rate (0: unlimited)", &with_peer.iter().map(|r| (own(r), r.rate_limit.unwrap_or(0))).collect::<Vec<_>>())?;
    // issue 18 verify: the last verify run from this node and the next scheduled one.
    let last: Vec<_> = up.iter().filter_map(|r| r.last_verify.map(|v| (own(r), v))).collect();
    gauges(e, "clusterd_resource_verify_last_timestamp_seconds", "When the last online verify run from this node ended (seconds since the epoch)", &last.iter().map(|(l, v)| (l.clone(), v.finished_unix)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_verify_last_out_of_sync_bytes", "Bytes the last online verify found different (marked out of sync; resynced with verify-repair)", &last.iter().map(|(l, v)| (l.clone(), v.outcome.found_bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_verify_last_checked_bytes", "Bytes the last online verify compared", &last.iter().map(|(l, v)| (l.clone(), v.outcome.checked_bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_verify_last_completed", "Boolean whether the last online verify ran to the end (0: aborted by a lost link or a promoted peer)", &last.iter().map(|(l, v)| (l.clone(), i64::from(v.outcome.completed))).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_verify_next_timestamp_seconds", "When the scheduled online verify (syncer.verify-interval) is due on this node (seconds since the epoch)", &up.iter().filter_map(|r| r.next_verify_unix.map(|t| (own(r), t))).collect::<Vec<_>>())?;
    let stat = |f: fn(&replicator::machine::Stats) -> u64| -> Vec<(Labels, u64)> { up.iter().filter_map(|r| snap(r).map(|x| (own(r), f(&x.stats)))).collect() };
    counters(e, "clusterd_resource_resync_sent_bytes", "Resync data sent to the peer (this node was SyncSource)", &stat(|st| st.resync_blocks_sent * 4096))?;
    counters(e, "clusterd_resource_resync_received_bytes", "Resync data received from the peer (this node was SyncTarget)", &stat(|st| st.resync_blocks_received * 4096))?;
    counters(e, "clusterd_resource_resync_csum_equal_bytes", "Resync data found equal on both disks by digest (syncer.csums-alg) and not sent", &stat(|st| st.resync_csum_equal_bytes))?;
    encode_async(e, &up)?;
    gauges(e, "clusterd_resource_app_write_in_flight_bytes", "Bytes of application writes not yet completed (queued ones included)", &up.iter().filter_map(|r| snap(r).map(|x| (own(r), x.in_flight.app_write_bytes))).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_held_acknowledgements", "Write acknowledgements held while I/O is suspended", &up.iter().filter_map(|r| snap(r).map(|x| (own(r), x.held_acks as u64))).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_split_brain", "Boolean whether the resource is flagged split brain now (StandAlone until resolved by hand)", &up.iter().filter_map(|r| snap(r).map(|x| (own(r), i64::from(x.split_brain)))).collect::<Vec<_>>())?;
    counters(e, "clusterd_resource_split_brains", "Split brains detected (resolved by a policy or not) since the resource came up", &stat(|st| st.split_brains))?;
    counters(e, "clusterd_resource_disk_errors", "Failed local disk requests since the resource came up", &up.iter().filter_map(|r| r.running.as_ref().map(|x| (own(r), x.counters.disk_errors))).collect::<Vec<_>>())?;
    let mut handlers = Vec::new();
    for r in &up {
        if let Some(x) = &r.running {
            for (h, n) in &x.counters.handler_runs {
                let mut l = own(r);
                l.push(("handler", (*h).to_string()));
                handlers.push((l, *n));
            }
        }
    }
    counters(e, "clusterd_resource_handler_runs", "Configured handlers started (split-brain, local-io-error, out-of-sync, ...)", &handlers)
}

/// issue 18 protocol A: the replication protocol of each resource that is up, protocol A's lag and
/// counters (only for A resources), and the resync controller (only while it runs a resync).
fn encode_async(e: &mut DescriptorEncoder, up: &[&ResourceSample]) -> fmt::Result {
    let proto: Vec<_> = up.iter().filter_map(|r| snap(r).map(|x| (own(r), Some(if x.replication_protocol == 'A' { "A" } else { "C" })))).collect();
    state_set(e, "clusterd_resource_replication_protocol", "Replication protocol of the resource (C: synchronous, A: asynchronous)", &["A", "C"], &proto)?;
    let lag: Vec<_> = up.iter().filter_map(|r| snap(r).and_then(|x| x.async_lag.map(|l| (own(r), l, x.stats)))).collect();
    gauges(e, "clusterd_resource_async_lag_bytes", "Protocol A: bytes of writes acknowledged to the application and not yet acknowledged by the peer (a failover to it would lose them)", &lag.iter().map(|(l, a, _)| (l.clone(), a.bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_async_lag_seconds", "Protocol A: age of the oldest write acknowledged to the application and not yet acknowledged by the peer (0: none)", &lag.iter().map(|(l, a, _)| (l.clone(), a.oldest_age_ms as f64 / 1000.0)).collect::<Vec<_>>())?;
    counters(e, "clusterd_resource_async_early_acks", "Protocol A: writes acknowledged to the application before the peer acknowledged them", &lag.iter().map(|(l, _, st)| (l.clone(), st.async_early_acks)).collect::<Vec<_>>())?;
    counters(e, "clusterd_resource_async_lag_waits", "Protocol A: writes that waited for the peer because the lag was beyond net.max-lag / max-lag-time", &lag.iter().map(|(l, _, st)| (l.clone(), st.async_lag_waits)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_async_promotion_needs_force", "Protocol A: boolean whether this Secondary lost its peer and is promoted (or taken by the failover) only with primary --force or net.allow-async-failover", &up.iter().filter_map(|r| snap(r).filter(|x| x.async_lag.is_some()).map(|x| (own(r), i64::from(x.async_promotion_needs_force)))).collect::<Vec<_>>())?;
    let ctl: Vec<_> = up.iter().filter_map(|r| snap(r).and_then(|x| x.resync_controller.map(|c| (own(r), c)))).collect();
    gauges(e, "clusterd_resource_resync_budget_bytes", "Resync data the dynamic resync controller allows in flight now (only while it runs a resync; 0 during a probe)", &ctl.iter().map(|(l, c)| (l.clone(), c.budget_bytes)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_resync_throttling", "Boolean whether the resync controller holds the resync back for the application's latency (shrinking budget or probe)", &ctl.iter().map(|(l, c)| (l.clone(), i64::from(c.throttling))).collect::<Vec<_>>())?;
    let us = |v: Option<u64>, l: &Labels| v.map(|v| (l.clone(), v as f64 / 1e6));
    gauges(e, "clusterd_resource_resync_app_write_p99_seconds", "Application write p99 latency the resync controller measured in its latest steps of the resync", &ctl.iter().filter_map(|(l, c)| us(c.last_p99_us, l)).collect::<Vec<_>>())?;
    gauges(e, "clusterd_resource_resync_app_write_baseline_p99_seconds", "Application write p99 latency the resync controller learnt without resync I/O (its reference)", &ctl.iter().filter_map(|(l, c)| us(c.baseline_p99_us, l)).collect::<Vec<_>>())
}

/// drbd-reactor's `maypromote`: this node could be made Primary now (it is not, its disk is UpToDate,
/// and the peer is not Primary).
fn may_promote(r: &ResourceSample) -> bool {
    r.running.as_ref().is_some_and(|x| x.snap.role != Role::Primary && x.snap.disk == DiskState::UpToDate && x.snap.peer_role != Role::Primary)
}

/// Writes can complete: not suspended, and a local disk or an UpToDate connected peer to take them.
fn quorum(r: &ResourceSample) -> bool {
    r.running.as_ref().is_some_and(|x| {
        let s = &x.snap;
        let peer_ok = s.conn == ConnState::Connected && s.peer_disk == DiskState::UpToDate;
        s.suspended.is_none() && (s.disk != DiskState::Diskless || peer_ok)
    })
}
