//! Pure rendering of control-API replies for `haadm`: the `drbdadm status` look, the /proc/drbd
//! progress lines, `--json`, and events2-style event lines.
//!
//! Everything here is a function from a reply to a `String` so the exact output can be pinned by
//! tests without a running daemon. Counters and sizes in the text output are KiB without a unit
//! suffix, as `drbdsetup status --statistics` prints them, so operators can compare numbers with
//! what they know; the JSON output carries exact bytes instead.

use proto::control::{
    ClusterStatus, Event, GenerationUuids, ResourceStats, ResourceStatus, StatusReply, SyncProgress, VerbReply,
};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Replication states during which a resync or verify is running and progress is meaningful.
const SYNCING_STATES: &[&str] = &["SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT"];

/// /proc/drbd switches `(left/total)` from KiB to MiB above this many bytes to keep the numbers short.
const MIB_DISPLAY_THRESHOLD: u64 = 4 << 30;

/// Width of the progress bar between the brackets, as in /proc/drbd.
const BAR_WIDTH: u64 = 20;

/// Whether `replication` names a resync or verify state.
pub fn is_syncing(replication: &str) -> bool {
    SYNCING_STATES.contains(&replication)
}

fn is_verify(replication: &str) -> bool {
    replication == "VerifyS" || replication == "VerifyT"
}

/// The side that receives resync data shows the configured rate next to the speed (/proc/drbd's
/// `want:`), because that is where the limit is applied.
fn shows_want(replication: &str) -> bool {
    matches!(replication, "SyncTarget" | "PausedSyncT" | "VerifyS")
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// `21984` → `21,984`, the thousands grouping /proc/drbd uses for speeds.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Done fraction in per-mille. Computed from the byte counts the way /proc/drbd does (so the bar and
/// `sync'ed:` agree with `(left/total)`), falling back to the server's percentage without totals.
fn done_permille(sync: &SyncProgress) -> u64 {
    if sync.total_bytes > 0 {
        let remaining = u128::from(sync.remaining_bytes.min(sync.total_bytes));
        let left_permille = remaining * 1000 / u128::from(sync.total_bytes);
        // left_permille ≤ 1000 because remaining ≤ total.
        1000 - u64::try_from(left_permille).unwrap_or(1000)
    } else if sync.done_percent.is_finite() {
        // Saturating float-to-int cast; clamp keeps the bar within its width.
        ((sync.done_percent * 10.0) as u64).min(1000)
    } else {
        0
    }
}

/// The /proc/drbd progress bar: `[` + (x−1)×`=` + `>` + (20−x)×`.` + `]`, x = permille/50.
pub fn progress_bar(permille: u64) -> String {
    let x = permille.min(1000) / 50;
    let mut bar = String::with_capacity(23);
    bar.push('[');
    for _ in 1..x {
        bar.push('=');
    }
    bar.push('>');
    for _ in x..BAR_WIDTH {
        bar.push('.');
    }
    bar.push(']');
    bar
}

/// The two /proc/drbd progress lines (without indentation):
/// `[==>....] sync'ed: 18.6% (776076/952288)M` and `finish: 5:27:02 speed: 40,480 (40,264) K/sec`.
pub fn progress_lines(replication: &str, sync: &SyncProgress) -> [String; 2] {
    let permille = done_permille(sync);
    let label = if is_verify(replication) { "verified:" } else { "sync'ed:" };
    let (left, total, unit) = if sync.total_bytes > MIB_DISPLAY_THRESHOLD {
        (sync.remaining_bytes >> 20, sync.total_bytes >> 20, 'M')
    } else {
        (kib(sync.remaining_bytes), kib(sync.total_bytes), 'K')
    };
    let first = format!(
        "{} {label}{:3}.{}% ({left}/{total}){unit}",
        progress_bar(permille),
        permille / 10,
        permille % 10
    );
    let eta = sync.eta_seconds;
    let mut second = format!(
        "finish: {}:{:02}:{:02} speed: {} ({})",
        eta / 3600,
        (eta % 3600) / 60,
        eta % 60,
        group_thousands(kib(sync.speed_bytes_per_sec)),
        group_thousands(kib(sync.avg_bytes_per_sec))
    );
    if shows_want(replication) && sync.rate_limit_bytes_per_sec > 0 {
        let _ = write!(second, " want: {}", group_thousands(kib(sync.rate_limit_bytes_per_sec)));
    }
    second.push_str(" K/sec");
    [first, second]
}

fn gi_string(uuids: &GenerationUuids) -> String {
    format!("{:016X}:{:016X}:{:016X}:{:016X}", uuids.current, uuids.bitmap, uuids.history0, uuids.history1)
}

/// Renders one resource block in the `drbdadm status` layout (2/4/8-space indentation).
///
/// Non-verbose: the `replication:` field is left out while Established (nothing to report), and a
/// disconnected peer shows its connection state instead of a role, plus the out-of-sync amount if
/// any (that is what the next resync will have to copy). Verbose adds the counters and the
/// generation identifiers.
pub fn render_resource(r: &ResourceStatus, verbose: bool) -> String {
    let mut out = String::new();
    let default_sync = SyncProgress::default();
    let default_stats = ResourceStats::default();
    let sync = r.sync.as_ref().unwrap_or(&default_sync);
    let stats = r.stats.as_ref().unwrap_or(&default_stats);
    let connected = r.connection == "Connected";
    let syncing = connected && is_syncing(&r.replication);

    let _ = write!(out, "{} role:{}", r.name, r.role);
    if verbose || r.suspended {
        let _ = write!(out, " suspended:{}", yes_no(r.suspended));
    }
    out.push('\n');

    if r.detached.is_empty() {
        let _ = writeln!(out, "  disk:{}", r.disk);
    } else {
        let _ = writeln!(out, "  disk:{} ({})", r.disk, r.detached);
    }
    if verbose {
        let _ = writeln!(
            out,
            "      size:{} read:{} written:{} al-writes:{} bm-writes:{} out-of-sync:{}",
            kib(r.size_bytes),
            kib(stats.read_bytes),
            kib(stats.written_bytes),
            stats.al_writes,
            stats.bm_writes,
            kib(r.out_of_sync_bytes)
        );
        if let Some(uuids) = &r.uuids {
            let _ = writeln!(out, "      gi:{}", gi_string(uuids));
        }
    }
    if !r.last_error.is_empty() {
        let _ = writeln!(out, "  last-error:{}", r.last_error);
    }

    let peer = if r.peer_node.is_empty() { "peer" } else { r.peer_node.as_str() };
    let _ = write!(out, "  {peer}");
    if verbose {
        let _ = write!(out, " connection:{}", r.connection);
        if connected {
            let _ = write!(out, " role:{}", r.peer_role);
        }
        if !r.local_address.is_empty() {
            let _ = write!(out, " local:{}", r.local_address);
        }
        if !r.peer_address.is_empty() {
            let _ = write!(out, " peer:{}", r.peer_address);
        }
    } else if connected {
        let _ = write!(out, " role:{}", r.peer_role);
    } else {
        let _ = write!(out, " connection:{}", r.connection);
    }
    if r.split_brain {
        out.push_str(" split-brain:yes");
    }
    if r.peer_pr_stale {
        out.push_str(" reservations:behind");
    }
    out.push('\n');

    if connected || verbose {
        let mut fields = Vec::new();
        if verbose || r.replication != "Established" {
            fields.push(format!("replication:{}", r.replication));
        }
        fields.push(format!("peer-disk:{}", r.peer_disk));
        if syncing {
            fields.push(format!("done:{:.2}", sync.done_percent));
        }
        if verbose || sync.paused {
            fields.push(format!("resync-suspended:{}", yes_no(sync.paused)));
        }
        // issue 15 upgrade: shown when the link runs below this node's newest version (mixed
        // releases during a rolling upgrade) or with --verbose.
        if r.agreed_protocol > 0 && (verbose || r.agreed_protocol < r.protocol_max) {
            fields.push(format!(
                "protocol:{} (peer {}..={}, this node {}..={})",
                r.agreed_protocol, r.peer_protocol_min, r.peer_protocol_max, r.protocol_min, r.protocol_max
            ));
        }
        let _ = writeln!(out, "    {}", fields.join(" "));
        if verbose {
            let _ = writeln!(
                out,
                "        received:{} sent:{} pending:{} resync-sent:{} resync-received:{} resync-equal:{}",
                kib(stats.received_bytes),
                kib(stats.sent_bytes),
                stats.pending_peer,
                stats.resync_blocks_sent,
                stats.resync_blocks_received,
                kib(stats.resync_csum_equal_bytes)
            );
        }
    } else if r.out_of_sync_bytes > 0 {
        let _ = writeln!(out, "    out-of-sync:{}", kib(r.out_of_sync_bytes));
    }

    if syncing {
        for line in progress_lines(&r.replication, sync) {
            let _ = writeln!(out, "        {line}");
        }
    }
    for line in [async_line(r), controller_line(r)].into_iter().flatten() {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(line) = verify_line(r) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// issue 18 protocol A: `protocol:A lag:8 (2 writes, oldest 120 ms) early-acks:1234 lag-waits:0`
/// (KiB), only for a protocol-A resource: what the peer still lacks of the acknowledged writes.
pub fn async_line(r: &ResourceStatus) -> Option<String> {
    let l = r.async_lag.as_ref()?;
    let mut line = format!("protocol:{} lag:{}", r.replication_protocol, kib(l.bytes));
    if l.writes > 0 {
        let _ = write!(line, " ({} writes, oldest {} ms)", l.writes, l.oldest_age_ms);
    }
    let _ = write!(line, " early-acks:{} lag-waits:{}", l.early_acks, l.lag_waits);
    if r.async_promotion_needs_force {
        line.push_str(" failover:needs-force (the peer is gone and may have had writes this node lacks; net.allow-async-failover: off)");
    }
    Some(line)
}

/// issue 18 controller: `resync-controller: budget:4096 fill-target:16384 app-p99:350us
/// baseline-p99:300us throttling:no` (KiB), while a resync runs from this node with it on.
pub fn controller_line(r: &ResourceStatus) -> Option<String> {
    let c = r.resync_controller.as_ref()?;
    let us = |v: u64| if v == 0 { "-".to_string() } else { format!("{v}us") };
    let throttling = if c.probing { "probe" } else { yes_no(c.throttling) };
    Some(format!(
        "resync-controller: budget:{} fill-target:{} app-p99:{} baseline-p99:{} throttling:{throttling}",
        kib(c.budget_bytes),
        kib(c.fill_target_bytes),
        us(c.last_p99_us),
        us(c.baseline_p99_us)
    ))
}

/// issue 18 verify: `verify: last 2026-12-06 11:00:00 UTC (4.2 s, 65536 checked, 12 out-of-sync,
/// repaired, scheduled) next 2026-12-13 11:00:00 UTC` (KiB), when a verify ran or one is scheduled.
pub fn verify_line(r: &ResourceStatus) -> Option<String> {
    if r.last_verify.is_none() && r.next_verify_unix == 0 {
        return None;
    }
    let mut line = String::from("verify:");
    if let Some(v) = &r.last_verify {
        let mut notes = vec![
            format!("{:.1} s", v.duration_ms as f64 / 1000.0),
            format!("{} checked", kib(v.checked_bytes)),
            format!("{} out-of-sync", kib(v.found_bytes)),
        ];
        if !v.completed {
            notes.push("aborted".into());
        } else if v.repair && v.found_bytes > 0 {
            notes.push("repaired".into());
        }
        if v.scheduled {
            notes.push("scheduled".into());
        }
        let _ = write!(line, " last {} ({})", utc(v.finished_unix), notes.join(", "));
    }
    if r.next_verify_unix > 0 {
        let _ = write!(line, " next {}", utc(r.next_verify_unix));
    }
    Some(line)
}

/// `YYYY-MM-DD HH:MM:SS UTC` from seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// crm_mon-like summary of the cluster view; empty while the cluster layer reports nothing.
fn render_cluster(cluster: &ClusterStatus) -> String {
    if cluster.nodes.is_empty() && cluster.links.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let holder = if cluster.group_holder.is_empty() { "nobody" } else { cluster.group_holder.as_str() };
    let _ = writeln!(
        out,
        "cluster generation:{} group-holder:{holder} epoch:{} phase:{}",
        cluster.generation, cluster.epoch, if cluster.phase.is_empty() { "-" } else { cluster.phase.as_str() }
    );
    if !cluster.split_brain_warning.is_empty() {
        let _ = writeln!(out, "  WARNING split brain: {}", cluster.split_brain_warning);
    }
    for (label, v) in [("waiting", &cluster.waiting), ("handoff", &cluster.handoff), ("last-failure", &cluster.last_failure)] {
        if !v.is_empty() {
            let _ = writeln!(out, "  {label}: {v}");
        }
    }
    // Issue 17: named groups, one line each (a single `group:` is the line above).
    if cluster.groups.len() > 1 || cluster.groups.iter().any(|g| g.name != "default" || g.access != "vip") {
        for g in &cluster.groups {
            let holder = if g.holder.is_empty() { "nobody" } else { g.holder.as_str() };
            let _ = writeln!(out, "  group {} holder:{holder} epoch:{} phase:{} access:{}", g.name, g.epoch, g.phase, g.access);
            if !g.ports.is_empty() {
                let _ = writeln!(out, "    alua ports: {}", g.ports);
            }
            for (label, v) in [("WARNING split brain", &g.split_brain_warning), ("waiting", &g.waiting), ("handoff", &g.handoff), ("last-failure", &g.last_failure)] {
                if !v.is_empty() {
                    let _ = writeln!(out, "    {label}: {v}");
                }
            }
        }
    }
    let names = |pred: &dyn Fn(&proto::control::NodeStatus) -> bool| -> String {
        cluster.nodes.iter().filter(|n| pred(n)).map(|n| n.name.as_str()).collect::<Vec<_>>().join(" ")
    };
    let _ = writeln!(out, "  online: [ {} ]", names(&|n| n.online && !n.standby));
    let standby = names(&|n| n.standby);
    if !standby.is_empty() {
        let _ = writeln!(out, "  standby: [ {standby} ]");
    }
    let offline = names(&|n| !n.online);
    if !offline.is_empty() {
        let _ = writeln!(out, "  offline: [ {offline} ]");
    }
    render_peer_versions(cluster, &mut out);
    for link in &cluster.links {
        let heard = if link.heard || link.last_heard_ms_ago > 0 { format!("{}ms", link.last_heard_ms_ago) } else { "never".into() };
        let _ = writeln!(
            out,
            "  link {} {} last-heard:{heard} largest-gap:{}ms ok:{} dropped:{}{}",
            link.name,
            if link.up { "up" } else { "down" },
            link.largest_gap_ms,
            link.packets_ok,
            link.dropped,
            if link.dropped_detail.is_empty() { String::new() } else { format!(" ({})", link.dropped_detail) }
        );
    }
    out.push('\n');
    out
}

/// `haadm version`: this haadm, then the daemon's answer.
pub fn render_version(reply: Option<&proto::control::VersionReply>) -> String {
    let mut out = format!(
        "haadm {} control-protocol:{}\n",
        crate::versions::SOFTWARE_VERSION,
        crate::versions::CONTROL_PROTOCOL
    );
    if let Some(v) = reply {
        let _ = writeln!(
            out,
            "clusterd {} node:{} control-protocol:{}..={} replication-protocol:{}..={} heartbeat-protocol:{}..={}",
            v.software_version, v.node, v.control_min, v.control_max, v.replication_min, v.replication_max, v.heartbeat_min, v.heartbeat_max
        );
    }
    out
}

/// The peer's release as its heartbeats announce it (issue 15 upgrade), e.g.
/// `  peer:node2 version:0.1.0 heartbeat-protocol:1 (peer 1..=1, this node 1..=1)`.
fn render_peer_versions(cluster: &ClusterStatus, out: &mut String) {
    if cluster.heartbeat_version == 0 {
        return;
    }
    let peer = cluster.nodes.iter().skip(1).map(|n| n.name.as_str()).next().unwrap_or("peer");
    let version = if cluster.peer_software_version.is_empty() { "unknown(older release)" } else { &cluster.peer_software_version };
    let _ = writeln!(
        out,
        "  peer:{peer} version:{version} heartbeat-protocol:{} (peer {}..={}, this node {})",
        cluster.heartbeat_version,
        cluster.peer_heartbeat_min,
        cluster.peer_heartbeat_max,
        crate::heartbeat::packet::VERSIONS
    );
}

/// Full `haadm status` text: optional cluster summary, then one block per resource separated by a
/// blank line (as `drbdadm status` separates them).
pub fn render_status(reply: &StatusReply, verbose: bool) -> String {
    let mut out = reply.cluster.as_ref().map(render_cluster).unwrap_or_default();
    if let Some(c) = reply.config.as_ref().filter(|c| c.mismatch) {
        let _ = writeln!(out, "config: differs from {} ({} vs {}); copy ha.yaml there and run `haadm adjust` on both", c.peer_node, c.local, c.peer);
    }
    if reply.resources.is_empty() {
        let _ = writeln!(out, "no resources on {}", reply.node);
        return out;
    }
    let blocks: Vec<String> = reply.resources.iter().map(|r| render_resource(r, verbose)).collect();
    out.push_str(&blocks.join("\n"));
    out
}

/// JSON document for `haadm status --json`. Field names follow the proto (snake_case); sizes are
/// exact bytes; generation identifiers are 16-digit hex strings because u64 does not survive a
/// round trip through JavaScript numbers.
pub fn status_json(reply: &StatusReply) -> Value {
    let resources: Vec<Value> = reply.resources.iter().map(resource_json).collect();
    let cluster = reply.cluster.clone().unwrap_or_default();
    let config = reply.config.clone().unwrap_or_default();
    json!({
        "node": reply.node,
        "config": { "local": config.local, "peer": config.peer, "peer_node": config.peer_node, "mismatch": config.mismatch },
        "software_version": reply.software_version,
        "resources": resources,
        "cluster": {
            "configured": cluster.configured,
            "generation": cluster.generation,
            "group_holder": cluster.group_holder,
            "epoch": cluster.epoch,
            "phase": cluster.phase,
            "split_brain_warning": cluster.split_brain_warning,
            "waiting": cluster.waiting,
            "last_failure": cluster.last_failure,
            "handoff": cluster.handoff,
            "peer_generation": cluster.peer_generation,
            "peer_software_version": cluster.peer_software_version,
            "peer_heartbeat_min": cluster.peer_heartbeat_min,
            "peer_heartbeat_max": cluster.peer_heartbeat_max,
            "heartbeat_version": cluster.heartbeat_version,
            "groups": cluster.groups.iter().map(|g| json!({
                "name": g.name, "holder": g.holder, "phase": g.phase, "epoch": g.epoch, "access": g.access, "ports": g.ports,
                "split_brain_warning": g.split_brain_warning, "waiting": g.waiting,
                "last_failure": g.last_failure, "handoff": g.handoff,
            })).collect::<Vec<_>>(),
            "nodes": cluster.nodes.iter().map(|n| json!({
                "name": n.name, "online": n.online, "standby": n.standby,
            })).collect::<Vec<_>>(),
            "links": cluster.links.iter().map(|l| json!({
                "name": l.name, "up": l.up,
                "last_heard_ms_ago": l.last_heard_ms_ago, "largest_gap_ms": l.largest_gap_ms,
                "heard": l.heard, "packets_ok": l.packets_ok, "dropped": l.dropped, "dropped_detail": l.dropped_detail,
            })).collect::<Vec<_>>(),
        },
        "sessions": reply.sessions.iter().map(|s| json!({
            "initiator": s.initiator, "target": s.target,
            "peer_address": s.peer_address, "connections": s.connections,
        })).collect::<Vec<_>>(),
    })
}

fn resource_json(r: &ResourceStatus) -> Value {
    let sync = r.sync.unwrap_or_default();
    let stats = r.stats.unwrap_or_default();
    let uuids = r.uuids.unwrap_or_default();
    let hex = |v: u64| format!("{v:016X}");
    json!({
        "name": r.name,
        "role": r.role,
        "disk": r.disk,
        "connection": r.connection,
        "replication": r.replication,
        "peer_node": r.peer_node,
        "peer_role": r.peer_role,
        "peer_disk": r.peer_disk,
        "local_address": r.local_address,
        "peer_address": r.peer_address,
        "size_bytes": r.size_bytes,
        "out_of_sync_bytes": r.out_of_sync_bytes,
        "split_brain": r.split_brain,
        "suspended": r.suspended,
        "peer_pr_stale": r.peer_pr_stale,
        "last_error": r.last_error,
        "detached": r.detached,
        "protocol_min": r.protocol_min,
        "protocol_max": r.protocol_max,
        "peer_protocol_min": r.peer_protocol_min,
        "peer_protocol_max": r.peer_protocol_max,
        "agreed_protocol": r.agreed_protocol,
        // issue 18 verify
        "last_verify": r.last_verify.as_ref().map(|v| json!({
            "finished_unix": v.finished_unix,
            "duration_ms": v.duration_ms,
            "checked_bytes": v.checked_bytes,
            "found_bytes": v.found_bytes,
            "completed": v.completed,
            "repair": v.repair,
            "scheduled": v.scheduled,
        })),
        "next_verify_unix": r.next_verify_unix,
        // issue 18 protocol A
        "replication_protocol": r.replication_protocol,
        "async_promotion_needs_force": r.async_promotion_needs_force,
        "async_lag": r.async_lag.as_ref().map(|l| json!({
            "bytes": l.bytes,
            "writes": l.writes,
            "oldest_age_ms": l.oldest_age_ms,
            "early_acks": l.early_acks,
            "lag_waits": l.lag_waits,
        })),
        "resync_controller": r.resync_controller.as_ref().map(|c| json!({
            "budget_bytes": c.budget_bytes,
            "fill_target_bytes": c.fill_target_bytes,
            "baseline_p99_us": c.baseline_p99_us,
            "last_p99_us": c.last_p99_us,
            "throttling": c.throttling,
            "probing": c.probing,
        })),
        "sync": {
            "active": r.connection == "Connected" && is_syncing(&r.replication),
            "done_percent": sync.done_percent,
            "total_bytes": sync.total_bytes,
            "remaining_bytes": sync.remaining_bytes,
            "speed_bytes_per_sec": sync.speed_bytes_per_sec,
            "avg_bytes_per_sec": sync.avg_bytes_per_sec,
            "eta_seconds": sync.eta_seconds,
            "rate_limit_bytes_per_sec": sync.rate_limit_bytes_per_sec,
            "paused": sync.paused,
        },
        "stats": {
            "read_bytes": stats.read_bytes,
            "written_bytes": stats.written_bytes,
            "sent_bytes": stats.sent_bytes,
            "received_bytes": stats.received_bytes,
            "al_writes": stats.al_writes,
            "bm_writes": stats.bm_writes,
            "pending_peer": stats.pending_peer,
            "resync_blocks_sent": stats.resync_blocks_sent,
            "resync_blocks_received": stats.resync_blocks_received,
            "resync_csum_equal_bytes": stats.resync_csum_equal_bytes,
        },
        "uuids": {
            "current": hex(uuids.current),
            "bitmap": hex(uuids.bitmap),
            "history0": hex(uuids.history0),
            "history1": hex(uuids.history1),
        },
    })
}

/// Pretty-printed `status --json` output, newline-terminated.
pub fn render_status_json(reply: &StatusReply) -> String {
    let mut text = serde_json::to_string_pretty(&status_json(reply)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

/// `status RES --shell`: `key=value` lines of one resource, values without blanks, for shell scripts
/// (the OCF agents read them with `read`, no JSON parser needed).
pub fn render_status_shell(reply: &StatusReply, which: &str) -> Result<String, String> {
    let [r] = reply.resources.as_slice() else {
        return Err(format!("--shell prints one resource; `{which}` selects {}", reply.resources.len()));
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let word = |s: &str| if s.is_empty() { "-".to_string() } else { s.replace(char::is_whitespace, "_") };
    let mut text = String::new();
    for (k, v) in [
        ("resource", word(&r.name)),
        ("attached", yes(r.attached).to_string()),
        ("role", word(&r.role)),
        ("disk", word(&r.disk)),
        ("connection", word(&r.connection)),
        ("replication", word(&r.replication)),
        ("peer_role", word(&r.peer_role)),
        ("peer_disk", word(&r.peer_disk)),
        ("peer_node", word(&r.peer_node)),
        ("split_brain", yes(r.split_brain).to_string()),
        ("suspended", yes(r.suspended).to_string()),
        ("peer_pr_stale", yes(r.peer_pr_stale).to_string()),
        ("fencing", word(&r.fencing)),
        ("out_of_sync_bytes", r.out_of_sync_bytes.to_string()),
    ] {
        let _ = writeln!(text, "{k}={v}");
    }
    Ok(text)
}

/// One events2-style line: `change peer-device name:r0 replication:SyncSource done:42.17`; the
/// end-of-dump marker (object `-`) renders as `exists -`.
pub fn render_event(event: &Event) -> String {
    let mut line = format!("{} {}", event.kind, event.object);
    if event.object == "-" {
        return line;
    }
    if !event.name.is_empty() {
        let _ = write!(line, " name:{}", event.name);
    }
    for kv in &event.fields {
        let _ = write!(line, " {}:{}", kv.key, kv.value);
    }
    line
}

/// Text for a verb's reply: warnings first (prefixed so scripts can grep them), then the message.
pub fn render_verb_reply(reply: &VerbReply) -> String {
    let mut out = String::new();
    for warning in &reply.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if !reply.message.is_empty() {
        let _ = writeln!(out, "{}", reply.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_grouping() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(21984), "21,984");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }

    #[test]
    fn bar_matches_proc_drbd_shape() {
        // Seed 004: 72.3% → 13 '=' then '>' then 6 '.'.
        assert_eq!(progress_bar(723), "[=============>......]");
        assert_eq!(progress_bar(0), "[>....................]");
        assert_eq!(progress_bar(1000), "[===================>]");
        assert_eq!(progress_bar(5000), "[===================>]");
    }

    #[test]
    fn seed_004_progress_lines() {
        let sync = SyncProgress {
            total_bytes: 1048292 * 1024,
            remaining_bytes: 293604 * 1024,
            speed_bytes_per_sec: 21984 * 1024,
            avg_bytes_per_sec: 19860 * 1024,
            eta_seconds: 13,
            ..Default::default()
        };
        let [a, b] = progress_lines("SyncSource", &sync);
        assert_eq!(a, "[=============>......] sync'ed: 72.0% (293604/1048292)K");
        assert_eq!(b, "finish: 0:00:13 speed: 21,984 (19,860) K/sec");
    }

    #[test]
    fn large_totals_in_mib_and_want_on_target() {
        let sync = SyncProgress {
            total_bytes: 952288 << 20,
            remaining_bytes: 776076 << 20,
            speed_bytes_per_sec: 40480 * 1024,
            avg_bytes_per_sec: 40264 * 1024,
            eta_seconds: 5 * 3600 + 27 * 60 + 2,
            rate_limit_bytes_per_sec: 250 * 1024,
            ..Default::default()
        };
        let [a, b] = progress_lines("SyncTarget", &sync);
        assert_eq!(a, "[==>.................] sync'ed: 18.6% (776076/952288)M");
        assert_eq!(b, "finish: 5:27:02 speed: 40,480 (40,264) want: 250 K/sec");
        let [v, _] = progress_lines("VerifyT", &sync);
        assert!(v.contains(" verified: 18.6% "), "{v}");
    }

    #[test]
    fn event_lines() {
        let ev = Event {
            kind: "change".into(),
            object: "peer-device".into(),
            name: "r0".into(),
            fields: vec![
                proto::control::KeyValue { key: "replication".into(), value: "SyncSource".into() },
                proto::control::KeyValue { key: "done".into(), value: "42.17".into() },
            ],
            ..Default::default()
        };
        assert_eq!(render_event(&ev), "change peer-device name:r0 replication:SyncSource done:42.17");
        let marker = Event { kind: "exists".into(), object: "-".into(), ..Default::default() };
        assert_eq!(render_event(&marker), "exists -");
    }

    #[test]
    fn verb_reply_warnings_first() {
        let reply = VerbReply { ok: true, message: "r0: Primary".into(), warnings: vec!["peer is Outdated".into()] };
        assert_eq!(render_verb_reply(&reply), "warning: peer is Outdated\nr0: Primary\n");
    }
}
