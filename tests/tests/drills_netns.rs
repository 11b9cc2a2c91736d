//! Failover drills with a continuous writer (root only, network namespaces): a writer in the client
//! namespace keeps writing self-checking 4 KiB blocks through the VIP while the cluster is hit — the
//! active clusterd killed, a graceful standby/takeover, the replication link cut, the Secondary killed.
//! Each drill measures what a user would see (time to the first write after the fault, longest pause,
//! errors) and checks that every acknowledged write is on the surviving disk, then prints a summary.

use anyhow::{Result, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{IQN, NetLab, VIP, holder, phase};
use ha_tests::writer::{
    WriterConfig, WriterHandle, WriterLog, verify_file, verify_through_target,
};
use ha_tests::{field, resource};
use std::time::{Duration, Instant};

const FENCE: &str = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";
/// Backing files: 64 MiB each (initial sync stays short); the writer uses the first 16 MiB.
const DISK_SIZE: u64 = 64 << 20;
const REGION_BLOCKS: u64 = 4096;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn holding(s: &serde_json::Value, node: &str) -> bool {
    holder(s) == node && phase(s) == "holding"
}

fn r0(s: &serde_json::Value) -> serde_json::Value {
    resource(s, "r0").unwrap_or_default()
}

fn u64_at(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// Two nodes up, r0 connected and in sync, the group (VIP + target) held by node1.
fn lab_with_group(tag: &str) -> Result<NetLab> {
    let mut lab = NetLab::new(tag, DISK_SIZE, FENCE)?;
    lab.bring_up_group()?;
    Ok(lab)
}

/// Connect attempts give up after this long: a SYN sent to the old node's MAC (before the gratuitous ARP)
/// or into a blocked port is only retransmitted by the kernel after a second, so a short timeout and a
/// fresh attempt measure the cluster rather than TCP's retransmission timer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF: Duration = Duration::from_millis(50);

fn initiator_cfg() -> InitiatorConfig {
    let mut c = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    c.connect_timeout = CONNECT_TIMEOUT;
    c
}

fn start_writer(lab: &NetLab) -> Result<WriterHandle> {
    start_writer_with(lab, false)
}

fn start_writer_with(lab: &NetLab, honour_time2wait: bool) -> Result<WriterHandle> {
    let mut cfg = WriterConfig::new(Some(&lab.ns("client")), initiator_cfg(), REGION_BLOCKS);
    cfg.backoff = BACKOFF;
    cfg.honour_time2wait = honour_time2wait;
    let w = WriterHandle::spawn(cfg)?;
    w.wait_acked(200, Duration::from_secs(20))?;
    Ok(w)
}

fn summary(drill: &str, rows: &[(&str, String)]) {
    eprintln!(
        "+-- drill {drill} {}",
        "-".repeat(50usize.saturating_sub(drill.len()))
    );
    for (k, v) in rows {
        eprintln!("| {k:<38} | {v}");
    }
    eprintln!("+{}", "-".repeat(60));
}

fn error_counts(log: &WriterLog, since: Instant) -> (usize, usize, usize, usize) {
    let (mut all, mut ua, mut scsi, mut logout) = (0, 0, 0, 0);
    for e in log.errors_since(since) {
        all += 1;
        ua += usize::from(e.unit_attention);
        scsi += usize::from(e.scsi_failure);
        logout += usize::from(e.logout_requested);
    }
    (all, ua, scsi, logout)
}

/// The writer's errors after `t0`, one line each with the offset from `t0` (consecutive repeats folded).
fn error_timeline(log: &WriterLog, t0: Instant) {
    let mut last: Option<&str> = None;
    let mut repeats = 0;
    for e in log.errors_since(t0) {
        if last == Some(e.message.as_str()) {
            repeats += 1;
            continue;
        }
        if repeats > 0 {
            eprintln!("|   (repeated {repeats} more times)");
            repeats = 0;
        }
        eprintln!("|   +{:>5} ms  {}", (e.at - t0).as_millis(), e.message);
        last = Some(e.message.as_str());
    }
    if repeats > 0 {
        eprintln!("|   (repeated {repeats} more times)");
    }
}

#[test]
fn drill_a_kill9_active_while_writing() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = lab_with_group("da")?;
    let writer = start_writer(&lab)?;

    let killed = Instant::now();
    lab.kill9(0);
    lab.wait_status(
        1,
        "node2 holding after the kill",
        Duration::from_secs(10),
        |s| holding(s, "node2"),
    )?;
    writer.wait_ack_after(Instant::now(), Duration::from_secs(15))?;
    writer.wait_acked(writer.acked_count() + 200, Duration::from_secs(15))?;
    let log = writer.stop()?;
    let end = Instant::now();
    // A write may complete just after the kill instant on the dying connection: the outage starts with
    // the writer's first error after the kill, and ends with the first write acknowledged after that.
    let outage_start = log.errors_since(killed).next().map_or(killed, |e| e.at);
    let first = log
        .first_ack_after(outage_start)
        .map_or(Duration::MAX, |d| d + (outage_start - killed));

    let expected = log.latest_acked();
    let on_file = verify_file(&lab.path("node2-data.img"), &expected)?;
    let via_vip = verify_through_target(Some(&lab.ns("client")), &initiator_cfg(), &expected)?;
    let (errors, ua, scsi, _) = error_counts(&log, killed);
    let gap = log
        .longest_gap(killed - Duration::from_secs(1), end)
        .map(|(g, _)| g)
        .unwrap_or_default();
    summary(
        "a: kill -9 of the active clusterd",
        &[
            (
                "kill -> first acknowledged write",
                format!(
                    "{first:?}{}",
                    if first > Duration::from_millis(1500) {
                        "  GOAL MISSED (1.5 s)"
                    } else {
                        ""
                    }
                ),
            ),
            ("longest pause between writes", format!("{gap:?}")),
            ("writes acknowledged (total)", log.acked.len().to_string()),
            (
                "writer errors after the kill",
                format!("{errors} ({ua} unit attention, {scsi} SCSI failures)"),
            ),
            ("logins", log.logins.to_string()),
            (
                "blocks checked on node2's file",
                format!(
                    "{} ({} newer than acked, {} bad)",
                    on_file.checked,
                    on_file.newer,
                    on_file.bad.len()
                ),
            ),
            (
                "blocks checked through the VIP",
                format!("{} ({} bad)", via_vip.checked, via_vip.bad.len()),
            ),
            (
                "independent reader (iscsi-dd)",
                "not installed: skipped".into(),
            ),
            (
                "writer connect timeout / backoff",
                format!("{CONNECT_TIMEOUT:?} / {BACKOFF:?}"),
            ),
        ],
    );
    error_timeline(&log, killed);
    on_file.ensure_ok("node2's backing file")?;
    via_vip.ensure_ok("read through the VIP")?;
    ensure!(
        first <= Duration::from_secs(5),
        "writes resumed only {first:?} after the kill\n{}",
        lab.logs()
    );
    ensure!(
        scsi == 0,
        "writes failed with SCSI errors: {:?}",
        log.errors
            .iter()
            .filter(|e| e.scsi_failure)
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Drill b with a writer that reconnects as soon as it has logged out.
#[test]
fn drill_b_standby_then_takeover_while_writing() -> Result<()> {
    standby_then_takeover("db", false)
}

/// Drill b with a writer that waits the Time2Wait of the logout request first, as RFC 7143 asks: the old
/// node must then see every session leave on its own (none closed by force).
#[test]
fn drill_b2_standby_then_takeover_honouring_time2wait() -> Result<()> {
    standby_then_takeover("dw", true)
}

fn standby_then_takeover(tag: &str, honour_time2wait: bool) -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let lab = lab_with_group(tag)?;
    let writer = start_writer_with(&lab, honour_time2wait)?;

    let standby_at = Instant::now();
    lab.haadm_ok(0, &["standby"])?;
    lab.wait_status(
        1,
        "node2 holding after standby",
        Duration::from_secs(30),
        |s| holding(s, "node2"),
    )?;
    writer.wait_ack_after(Instant::now(), Duration::from_secs(15))?;
    writer.wait_acked(writer.acked_count() + 200, Duration::from_secs(15))?;

    let takeover_at = Instant::now();
    lab.haadm_ok(0, &["takeover"])?;
    lab.wait_status(
        0,
        "node1 holding after takeover",
        Duration::from_secs(30),
        |s| holding(s, "node1"),
    )?;
    writer.wait_ack_after(Instant::now(), Duration::from_secs(15))?;
    writer.wait_acked(writer.acked_count() + 200, Duration::from_secs(15))?;
    let log = writer.stop()?;
    let end = Instant::now();

    let gap_standby = log
        .longest_gap(standby_at, takeover_at)
        .map(|(g, _)| g)
        .unwrap_or_default();
    let gap_takeover = log
        .longest_gap(takeover_at, end)
        .map(|(g, _)| g)
        .unwrap_or_default();
    let (errors, ua, scsi, logouts) = error_counts(&log, standby_at);
    let expected = log.latest_acked();
    let on_file = verify_file(&lab.path("node1-data.img"), &expected)?;
    let on_peer = verify_file(&lab.path("node2-data.img"), &expected)?;
    let via_vip = verify_through_target(Some(&lab.ns("client")), &initiator_cfg(), &expected)?;
    // Sessions the old node had to close after waiting for their logout (see the report: an initiator
    // that reconnects at once logs in to the old node again before its port is blocked).
    let forced = (0..2)
        .map(|i| lab.log(i).matches("did not log out within").count())
        .sum::<usize>();
    let goal = |g: Duration| {
        if g > Duration::from_millis(500) {
            "  GOAL MISSED (0.5 s)"
        } else {
            ""
        }
    };
    summary(
        if honour_time2wait {
            "b2: standby, then takeover (Time2Wait honoured)"
        } else {
            "b: standby, then takeover"
        },
        &[
            (
                "longest pause around standby",
                format!("{gap_standby:?}{}", goal(gap_standby)),
            ),
            (
                "longest pause around takeover",
                format!("{gap_takeover:?}{}", goal(gap_takeover)),
            ),
            ("writes acknowledged (total)", log.acked.len().to_string()),
            (
                "writer errors",
                format!(
                    "{errors} ({logouts} logout requests, {ua} unit attention, {scsi} SCSI failures)"
                ),
            ),
            ("logins", log.logins.to_string()),
            ("sessions closed by force (LOGOUT_WAIT)", forced.to_string()),
            (
                "writer connect timeout / backoff",
                format!("{CONNECT_TIMEOUT:?} / {BACKOFF:?}"),
            ),
            (
                "blocks checked on node1's file",
                format!("{} ({} bad)", on_file.checked, on_file.bad.len()),
            ),
            (
                "blocks checked on node2's file",
                format!("{} ({} bad)", on_peer.checked, on_peer.bad.len()),
            ),
            (
                "blocks checked through the VIP",
                format!("{} ({} bad)", via_vip.checked, via_vip.bad.len()),
            ),
        ],
    );
    eprintln!("| errors after standby:");
    error_timeline(&log, standby_at);
    eprintln!(
        "| takeover issued at +{} ms",
        (takeover_at - standby_at).as_millis()
    );
    if std::env::var_os("DRILL_LOGS").is_some() {
        eprintln!("{}", lab.logs());
    }
    on_file.ensure_ok("node1's backing file")?;
    on_peer.ensure_ok("node2's backing file")?;
    via_vip.ensure_ok("read through the VIP")?;
    ensure!(
        scsi == 0,
        "writes failed with SCSI errors: {:?}",
        log.errors
            .iter()
            .filter(|e| e.scsi_failure)
            .collect::<Vec<_>>()
    );
    ensure!(
        !honour_time2wait || forced == 0,
        "sessions that logged out as asked were still closed by force\n{}",
        lab.logs()
    );
    for (what, g) in [("standby", gap_standby), ("takeover", gap_takeover)] {
        ensure!(
            g <= Duration::from_secs(5),
            "writes paused {g:?} around {what}\n{}",
            lab.logs()
        );
    }
    Ok(())
}

/// What an outage drill (c, d) measured.
struct OutageNumbers {
    out_of_sync_blocks: u64,
    distinct_written: usize,
    distinct_after_notice: usize,
    /// Written during the outage or acknowledged within UNFLUSHED_WINDOW before it.
    distinct_with_unflushed: usize,
    resynced: u64,
    acked_during: usize,
}

/// Breaks replication with `cut` while the writer runs, stops the writer, heals with `heal`, waits for
/// the resync and checks that only the blocks written meanwhile moved and both disks end identical.
fn outage_drill(
    lab: &mut NetLab,
    cut: &dyn Fn(&mut NetLab) -> Result<()>,
    heal: &dyn Fn(&mut NetLab) -> Result<()>,
) -> Result<OutageNumbers> {
    let writer = start_writer(lab)?;
    let sent_before = u64_at(&r0(&lab.status(0)?), &["stats", "resync_blocks_sent"]);
    let from_seq = writer.next_seq().saturating_sub(1); // the write in flight at the cut counts too
    let acked_before = writer.acked_count();
    let cut_at = Instant::now();
    cut(lab)?;
    lab.wait_status(
        0,
        "node1 sees r0 disconnected",
        Duration::from_secs(10),
        |s| field(&r0(s), "connection") != "Connected",
    )?;
    // Writes issued between `from_seq` and the moment the link really went down may still have been
    // replicated; every write issued after the Primary saw the disconnect must be out of sync.
    let noticed_seq = writer.next_seq();
    writer.wait_acked(writer.acked_count() + 300, Duration::from_secs(15))?;
    let s1 = lab.status(0)?;
    ensure!(
        holding(&s1, "node1") && field(&r0(&s1), "role") == "Primary",
        "node1 stopped serving during the outage: {s1:#}"
    );
    let log = writer.stop()?;
    let to_seq = log.issued.last().map_or(0, |(s, _)| s + 1);
    let distinct_written = log.distinct_blocks_issued(from_seq, to_seq);
    let distinct_after_notice = log.distinct_blocks_issued(noticed_seq, to_seq);
    // Writes acknowledged shortly before the cut may still have been only in the caches: the Primary
    // holds them until a flush of both disks covers them (a barrier at most BARRIER_AGE = 1 s after, plus
    // the flush itself) and marks them out of sync when the link goes first (the peer may have lost them
    // in a power loss). So the blocks acknowledged in the last UNFLUSHED_WINDOW before the cut may be
    // out of sync as well.
    let unflushed_from = log
        .acked
        .iter()
        .filter(|a| a.at + UNFLUSHED_WINDOW >= cut_at)
        .map(|a| a.seq)
        .min()
        .unwrap_or(from_seq)
        .min(from_seq);
    let distinct_with_unflushed = log.distinct_blocks_issued(unflushed_from, to_seq);
    let out_of_sync_blocks = u64_at(&r0(&lab.status(0)?), &["out_of_sync_bytes"]) / 4096;

    heal(lab)?;
    lab.wait_status(0, "resync finished", Duration::from_secs(40), |s| {
        let r = r0(s);
        field(&r, "connection") == "Connected"
            && field(&r, "peer_disk") == "UpToDate"
            && u64_at(&r, &["out_of_sync_bytes"]) == 0
    })?;
    lab.wait_status(1, "node2 UpToDate", Duration::from_secs(20), |s| {
        field(&r0(s), "disk") == "UpToDate"
    })?;
    let resynced =
        u64_at(&r0(&lab.status(0)?), &["stats", "resync_blocks_sent"]).saturating_sub(sent_before);
    let (h1, h2) = (
        ha_tests::sha1_file(&lab.path("node1-data.img"))?,
        ha_tests::sha1_file(&lab.path("node2-data.img"))?,
    );
    ensure!(
        h1 == h2,
        "backing files differ after the resync ({h1} vs {h2})\n{}",
        lab.logs()
    );
    let on_peer = verify_file(&lab.path("node2-data.img"), &log.latest_acked())?;
    on_peer.ensure_ok("node2's backing file after resync")?;
    Ok(OutageNumbers {
        out_of_sync_blocks,
        distinct_written,
        distinct_after_notice,
        distinct_with_unflushed,
        resynced,
        acked_during: log.acked.len() - acked_before,
    })
}

/// How long before a cut an acknowledged write may still wait for a flush of both disks: the barrier
/// age (1 s, replicator/src/machine/barrier.rs) plus a tick and the flush on a loaded machine.
const UNFLUSHED_WINDOW: Duration = Duration::from_millis(2_000);

/// Only dirty blocks move: the out-of-sync count lies between the distinct blocks written after the
/// Primary saw the outage and those written during it plus the ones acknowledged but not yet flushed
/// on both disks when it began (at most a few more: a write in flight at the cut that the writer counts
/// as not acknowledged).
fn check_dirty_only(n: &OutageNumbers) -> Result<()> {
    let (lo, hi) = (n.distinct_after_notice as u64, n.distinct_with_unflushed.max(n.distinct_written) as u64);
    ensure!(
        n.out_of_sync_blocks >= lo && n.out_of_sync_blocks <= hi + 2,
        "out-of-sync blocks ({}) outside [{lo}, {hi}+2]: the distinct blocks written after the Primary saw \
         the outage, and during the whole outage plus the last {UNFLUSHED_WINDOW:?} before it (not yet \
         flushed on both disks); {} written during the outage alone",
        n.out_of_sync_blocks,
        n.distinct_written
    );
    ensure!(
        n.resynced <= n.out_of_sync_blocks + 2,
        "resync moved {} blocks for {} out of sync",
        n.resynced,
        n.out_of_sync_blocks
    );
    Ok(())
}

#[test]
fn drill_c_replication_link_cut_while_writing() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = lab_with_group("dc")?;
    let link = |up: bool| {
        move |lab: &mut NetLab| -> Result<()> {
            let out = std::process::Command::new("ip")
                .args([
                    "-n",
                    &lab.ns("node1"),
                    "link",
                    "set",
                    "repl0",
                    if up { "up" } else { "down" },
                ])
                .output()?;
            ensure!(
                out.status.success(),
                "ip link set repl0: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        }
    };
    let t0 = Instant::now();
    let n = outage_drill(&mut lab, &link(false), &link(true))?;
    let s2 = lab.status(1)?;
    summary(
        "c: replication link cut",
        &[
            (
                "writes acknowledged during the cut",
                n.acked_during.to_string(),
            ),
            (
                "distinct 4 KiB blocks written",
                n.distinct_written.to_string(),
            ),
            (
                "out-of-sync blocks before heal",
                n.out_of_sync_blocks.to_string(),
            ),
            ("blocks resynced after heal", n.resynced.to_string()),
            ("group holder afterwards", holder(&s2)),
            ("drill time", format!("{:?}", t0.elapsed())),
        ],
    );
    ensure!(
        holder(&s2) == "node1",
        "the link cut caused a failover: {s2:#}"
    );
    check_dirty_only(&n)
}

#[test]
fn drill_d_secondary_killed_while_writing() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = lab_with_group("dd")?;
    let t0 = Instant::now();
    let kill = |lab: &mut NetLab| -> Result<()> {
        lab.kill9(1);
        Ok(())
    };
    let restart = |lab: &mut NetLab| lab.start(1);
    let n = outage_drill(&mut lab, &kill, &restart)?;
    summary(
        "d: Secondary killed and restarted",
        &[
            (
                "writes acknowledged while it was down",
                n.acked_during.to_string(),
            ),
            (
                "distinct 4 KiB blocks written",
                n.distinct_written.to_string(),
            ),
            (
                "out-of-sync blocks before restart",
                n.out_of_sync_blocks.to_string(),
            ),
            ("blocks resynced after restart", n.resynced.to_string()),
            ("drill time", format!("{:?}", t0.elapsed())),
        ],
    );
    check_dirty_only(&n)
}
