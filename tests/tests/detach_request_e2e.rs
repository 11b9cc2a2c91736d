//! `haadm detach` / `haadm attach` (issue 15, disk replacement) between two real `clusterd` processes
//! on loopback, while the project's iSCSI initiator writes self-checking blocks through node1's
//! embedded target (`cluster.manager: pacemaker`: nothing moves by itself).
//!
//! - Secondary: `detach` makes node2 Diskless and still Connected, node1 shows the peer Diskless and
//!   the writes go on; node2's clusterd holds no descriptor of its data or metadata file; `attach`
//!   resyncs only the blocks written meanwhile (far fewer than the volume), then both are UpToDate,
//!   every acknowledged write is on both files and the files are identical.
//! - Disk replacement: `detach`, the data and metadata files deleted and recreated empty,
//!   `create-md` (accepted on the detached resource), `attach`: a full sync, identical files.
//! - Primary: `detach` with an UpToDate peer while writing: no initiator error, reads served (through
//!   the peer), node1's files closed; `attach` on the Diskless Primary is refused with the reason;
//!   demoted, it attaches and gets a full sync (the peer marked everything).
//! - Wrong use: detach twice, attach of an attached disk, unknown resource (exit 1, message), clusterd
//!   not running (exit 3).

use anyhow::{Context, Result, ensure};
use ha_tests::initiator::{Initiator, InitiatorConfig};
use ha_tests::writer::{WriterConfig, WriterHandle, check_block, verify_file};
use ha_tests::{Cluster, field, in_sync, poll_until, sha1_file};
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const IQN: &str = "iqn.2026-12.org.example:detach";
/// The writer's region: 16 MiB of the 64 MiB volume.
const REGION_BLOCKS: u64 = 4096;

fn u64_at(r: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = r;
    for k in path {
        v = &v[*k];
    }
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}


/// node1 Primary serving the target on a loopback portal, node2 Secondary, in sync. Returns the portal.
fn setup(secret: &str) -> Result<(Cluster, String)> {
    let mut c = Cluster::new(SIZE, secret, None)?;
    let addr = c.serve_r0_by_hand(IQN)?;
    Ok((c, addr))
}

fn writer(addr: &str) -> Result<WriterHandle> {
    let mut icfg = InitiatorConfig::new(addr, IQN);
    icfg.connect_timeout = Duration::from_millis(500);
    let mut wcfg = WriterConfig::new(None, icfg, REGION_BLOCKS);
    wcfg.time_limit = Duration::from_secs(240);
    let w = WriterHandle::spawn(wcfg)?;
    w.wait_acked(100, Duration::from_secs(30))?;
    Ok(w)
}

/// Waits until `n` more writes than now are acknowledged.
fn more_acks(w: &WriterHandle, n: usize) -> Result<()> {
    let target = w.acked_count() + n;
    w.wait_acked(target, Duration::from_secs(30))
}

fn pid(c: &Cluster, i: usize) -> Result<u32> {
    c.nodes[i].child.as_ref().map(|ch| ch.id()).context("node not running")
}

/// The files among `paths` that process `pid` has open.
fn open_files(pid: u32, paths: &[&Path]) -> Result<Vec<String>> {
    let mut open = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(e?.path()) else { continue };
        if paths.iter().any(|p| target == *p) {
            open.push(target.display().to_string());
        }
    }
    Ok(open)
}

/// node i's clusterd closes its data and metadata files (bounded wait).
fn files_closed(c: &Cluster, i: usize) -> Result<()> {
    let n = i + 1;
    let (data, meta) = (c.path(&format!("node{n}-data.img")), c.path(&format!("node{n}-meta.img")));
    let pid = pid(c, i)?;
    let closed = poll_until(Duration::from_secs(5), || open_files(pid, &[&data, &meta]).ok().filter(|v| v.is_empty()));
    ensure!(closed.is_some(), "node{n}'s clusterd still holds {:?}", open_files(pid, &[&data, &meta])?);
    Ok(())
}

/// Every block the writer last acknowledged, on both files; the files identical.
fn check_files(c: &Cluster, log: &ha_tests::writer::WriterLog) -> Result<()> {
    let expected = log.latest_acked();
    for n in ["node1", "node2"] {
        verify_file(&c.path(&format!("{n}-data.img")), &expected)?.ensure_ok(n)?;
    }
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ: {a} vs {b}");
    Ok(())
}

#[test]
fn detach_and_attach_the_secondary_while_writing_then_replace_its_disk() -> Result<()> {
    let (mut c, addr) = setup("s3cret-detach-request")?;
    let w = writer(&addr)?;

    // Detach the Secondary: Diskless, still connected; its files are closed.
    let before_detach = w.next_seq();
    let out = c.haadm_ok(1, &["detach", "r0"])?;
    ensure!(out.contains("detached on request") && out.contains("files closed"), "{out}");
    let s2 = c.wait_r0(1, "Diskless", Duration::from_secs(5), |r| field(r, "disk") == "Diskless")?;
    ensure!(field(&s2, "connection") == "Connected" && field(&s2, "detached") == "detached on request", "{s2:#}");
    c.wait_r0(0, "peer Diskless", Duration::from_secs(5), |r| field(r, "peer_disk") == "Diskless" && field(r, "connection") == "Connected")?;
    files_closed(&c, 1)?;
    let text = c.haadm_ok(1, &["status", "r0"])?;
    ensure!(text.contains("disk:Diskless (detached on request)"), "{text}");
    ensure!(c.log(1).contains("local disk detached on request"), "the detach is logged");

    // Wrong use while detached.
    c.haadm_fails(1, &["detach", "r0"], 1, "already detached on request")?;
    c.haadm_fails(0, &["attach", "r0"], 1, "already attached")?;
    c.haadm_fails(1, &["detach", "nope"], 1, "no resource `nope`")?;
    c.haadm_fails(1, &["attach", "nope"], 1, "no resource `nope`")?;

    // Writes go on and are only marked on node1.
    more_acks(&w, 300)?;
    let marked = u64_at(&c.wait_r0(0, "blocks marked", Duration::from_secs(5), |r| u64_at(r, &["out_of_sync_bytes"]) > 0)?, &["out_of_sync_bytes"]);
    let at_attach = w.next_seq();
    let out = c.haadm_ok(1, &["attach", "r0"])?;
    ensure!(out.contains("attached"), "{out}");
    c.wait_r0(1, "resynced", Duration::from_secs(60), in_sync)?;
    c.wait_r0(0, "peer UpToDate", Duration::from_secs(10), in_sync)?;
    let s2 = c.status(1).map(|s| ha_tests::resource(&s, "r0").unwrap_or_default())?;
    let resynced = u64_at(&s2, &["stats", "resync_blocks_received"]);
    // What was written while detached (and until the handshake), plus what the last second before the
    // detach may have held only in a cache: never the whole volume.
    let written = w.snapshot().distinct_blocks_issued(before_detach.saturating_sub(200), w.next_seq()) as u64;
    eprintln!("marked while detached: {} KiB; blocks resynced at attach: {resynced}; distinct blocks written meanwhile: {written}", marked / 1024);
    ensure!(resynced > 0 && resynced <= written, "resynced {resynced} blocks, the writer touched {written} from shortly before the detach");
    ensure!(resynced < SIZE / 4096 / 4, "a bitmap resync, not a full one: {resynced} blocks");
    ensure!(at_attach > before_detach, "the writer went on while detached");

    // Replace the disk: detach, new empty files, create-md on the detached resource, attach.
    more_acks(&w, 100)?;
    c.haadm_ok(1, &["detach", "r0"])?;
    files_closed(&c, 1)?;
    for f in ["node2-data.img", "node2-meta.img"] {
        let p = c.path(f);
        std::fs::remove_file(&p)?;
        std::fs::File::create(&p)?.set_len(if f.contains("data") { SIZE } else { 64 * MIB })?;
    }
    c.haadm_ok(1, &["create-md", "r0"])?;
    more_acks(&w, 100)?;
    c.haadm_ok(1, &["attach", "r0"])?;
    c.wait_r0(1, "full sync", Duration::from_secs(90), in_sync)?;
    let s2 = c.status(1).map(|s| ha_tests::resource(&s, "r0").unwrap_or_default())?;
    // Every block is either received or found equal by its checksum (csums-alg, default sha1 for full
    // syncs: the fresh disk's zeros equal the volume's never-written blocks).
    let full = u64_at(&s2, &["stats", "resync_blocks_received"]) + u64_at(&s2, &["stats", "resync_csum_equal_bytes"]) / 4096;
    // Everything (a block the writer rewrote with FUA meanwhile may be skipped: it arrived whole).
    ensure!(full >= SIZE / 4096 * 9 / 10, "a replaced disk gets everything: {full} blocks");
    more_acks(&w, 50)?;

    let log = w.stop()?;
    ensure!(log.errors.is_empty(), "initiator errors: {:?}", log.errors);
    ensure!(log.logins == 1, "the writer logged in {} times", log.logins);
    c.wait_r0(1, "in sync after the writer", Duration::from_secs(30), in_sync)?;
    check_files(&c, &log)?;

    // clusterd not running: exit 3 like every verb.
    c.stop(1);
    c.haadm_fails(1, &["detach", "r0"], 3, "")?;
    c.haadm_fails(1, &["attach", "r0"], 3, "")?;
    Ok(())
}

#[test]
fn a_primary_detaches_and_serves_through_its_uptodate_peer() -> Result<()> {
    let (c, addr) = setup("s3cret-detach-primary")?;
    // Refused while the peer is not connected: no copy would be left.
    c.haadm_ok(1, &["disconnect", "r0"])?;
    c.wait_r0(0, "peer gone", Duration::from_secs(5), |r| field(r, "connection") != "Connected")?;
    c.haadm_fails(0, &["detach", "r0"], 1, "would leave no copy of the data")?;
    c.haadm_ok(1, &["connect", "r0"])?;
    c.wait_r0(0, "in sync", Duration::from_secs(30), in_sync)?;

    let w = writer(&addr)?;
    let detached_at = Instant::now();
    let out = c.haadm_ok(0, &["detach", "r0"])?;
    ensure!(out.contains("served by the peer"), "{out}");
    let s1 = c.wait_r0(0, "Diskless", Duration::from_secs(5), |r| field(r, "disk") == "Diskless")?;
    ensure!(field(&s1, "role") == "Primary" && field(&s1, "connection") == "Connected", "{s1:#}");
    c.wait_r0(1, "peer Diskless", Duration::from_secs(5), |r| field(r, "peer_disk") == "Diskless")?;
    files_closed(&c, 0)?;
    more_acks(&w, 300)?;
    c.haadm_fails(0, &["attach", "r0"], 1, "attach needs this node Secondary")?;

    // Reads through a second session: served (from the peer), every block a valid drill block.
    let log = w.snapshot();
    let acked = log.latest_acked();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let checked = rt.block_on(async {
        let mut cfg = InitiatorConfig::new(&addr, IQN);
        cfg.isid = [0x40, 0, 0, 0, 0, 9];
        let mut ini = Initiator::connect(&cfg).await.context("second session")?;
        for _ in 0..5 {
            if ini.test_unit_ready().await.is_ok() {
                break;
            }
        }
        let (_, bs) = ini.read_capacity10().await.context("READ CAPACITY")?;
        let per = 4096 / bs;
        let mut n = 0;
        for (&block, _) in acked.iter().take(64) {
            let data = ini.read10((block * u64::from(per)) as u32, bs, per as u16).await.with_context(|| format!("read block {block}"))?;
            check_block(&data, block).map_err(|e| anyhow::anyhow!("block {block}: {e}"))?;
            n += 1;
        }
        anyhow::Ok(n)
    })?;
    ensure!(checked > 0, "nothing read back");
    let log = w.stop()?;
    ensure!(log.errors.is_empty(), "initiator errors after a Primary detach: {:?}", log.errors);
    let after = log.acked.iter().filter(|a| a.at > detached_at).count();
    ensure!(after >= 300, "only {after} writes after the detach");
    verify_file(&c.path("node2-data.img"), &log.latest_acked())?.ensure_ok("node2 (the peer serving)")?;

    // Repair: stop serving, demote, attach: the old disk is Outdated, the peer started a generation
    // with every block marked, so it gets a full sync.
    c.haadm_ok(0, &["target", "stop"])?;
    c.haadm_ok(0, &["secondary", "r0"])?;
    c.haadm_ok(0, &["attach", "r0"])?;
    c.wait_r0(0, "full sync of the old Primary", Duration::from_secs(90), in_sync)?;
    let s1 = c.status(0).map(|s| ha_tests::resource(&s, "r0").unwrap_or_default())?;
    let full = u64_at(&s1, &["stats", "resync_blocks_received"]) + u64_at(&s1, &["stats", "resync_csum_equal_bytes"]) / 4096;
    ensure!(full == SIZE / 4096, "the disk of a detached Primary only returns through a full sync (received or checksum-equal): {full} blocks");
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ after the repair: {a} vs {b}");
    // A resource that is down: `up` is the verb.
    c.haadm_ok(0, &["down", "r0"])?;
    c.haadm_fails(0, &["attach", "r0"], 1, "is down: `haadm up r0`")?;
    Ok(())
}
