//! Two real `clusterd` processes on loopback (127.0.0.1 and 127.0.0.2) replicating a 256 MiB sparse
//! file: initial full sync, writes on the Primary, kill -9 of the Secondary, more writes, restart, and a
//! check that exactly the dirty blocks moved and that both backing files end identical (SHA-1). Also: a
//! wrong shared secret is refused on both sides, and a corrupt superblock is reported at start.

use anyhow::{Context, Result};
use clusterd::haadm::client::{connect, StartHint};
use ha_tests::{field, sha1_file, Cluster, NODES};
use proto::control::{IoReadRequest, IoWriteRequest, VerbRequest};
use std::collections::BTreeSet;
use std::time::Duration;

const SIZE: u64 = 256 << 20;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn u(r: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = r;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Write `blocks` (4 KiB block numbers) through node i's engine; each block's content names it.
fn write_blocks(c: &Cluster, i: usize, blocks: &BTreeSet<u64>, tag: u8) -> Result<()> {
    let socket = c.path(&format!("{}.sock", NODES[i]));
    let hint = StartHint { config: c.config.clone(), node: NODES[i].into() };
    rt().block_on(async {
        let mut client = connect(&socket, &hint).await?;
        for &b in blocks {
            let mut data = vec![tag; 4096];
            data[..8].copy_from_slice(&b.to_le_bytes());
            let req = IoWriteRequest { resource: "r0".into(), offset: b * 4096, data, fua: b % 7 == 0 };
            client.io_write(req).await.with_context(|| format!("write block {b}"))?;
        }
        client.io_flush(VerbRequest { resource: "r0".into(), ..Default::default() }).await?;
        // Read one back through the engine.
        if let Some(&b) = blocks.iter().next() {
            let r = client.io_read(IoReadRequest { resource: "r0".into(), offset: b * 4096, length: 4096 }).await?;
            let d = r.into_inner().data;
            assert_eq!(&d[..8], &b.to_le_bytes());
            assert_eq!(d[100], tag);
        }
        anyhow::Ok(())
    })
}

fn spread(n: u64, seed: u64) -> BTreeSet<u64> {
    let blocks = SIZE / 4096;
    let mut x = seed | 1;
    let mut s = BTreeSet::new();
    while (s.len() as u64) < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.insert(x % blocks);
    }
    s
}

fn bring_up(c: &mut Cluster) -> Result<()> {
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    Ok(())
}

#[test]
fn initial_sync_kill9_secondary_resyncs_only_dirty_blocks_and_files_match() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-shared", None)?;
    bring_up(&mut c)?;
    c.wait_r0(0, "Connected", Duration::from_secs(30), |r| field(r, "connection") == "Connected")?;
    // Seed 004's order: make node1's data the source of the initial full sync.
    c.haadm_ok(0, &["--", "--overwrite-data-of-peer", "primary", "r0"])?;
    let r = c.wait_r0(1, "initial sync done", Duration::from_secs(180), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;
    assert_eq!(field(&r, "role"), "Secondary");
    let p = c.wait_r0(0, "primary established", Duration::from_secs(30), |r| field(r, "replication") == "Established")?;
    let full = u(&p, &["stats", "resync_blocks_sent"]);
    // Blocks equal on both disks are not sent (csums-alg, default sha1 for full syncs): every block is
    // either sent or found equal, once.
    let equal = u(&p, &["stats", "resync_csum_equal_bytes"]) / 4096;
    assert_eq!(full + equal, SIZE / 4096, "the initial sync covers every block once");
    // `haadm status` in the drbdadm look.
    let text = c.haadm_ok(0, &["status"])?;
    assert!(text.contains("r0 role:Primary") && text.contains("peer-disk:UpToDate"), "{text}");

    write_blocks(&c, 0, &spread(300, 7), 0xA1)?;

    // A Secondary crash: the Primary keeps serving and records what the peer misses.
    c.kill9(1);
    c.wait_r0(0, "peer lost", Duration::from_secs(10), |r| field(r, "connection") != "Connected")?;
    let dirty = spread(500, 99);
    write_blocks(&c, 0, &dirty, 0xB2)?;
    let p = c.status(0)?;
    let r0 = ha_tests::resource(&p, "r0").context("r0 in status")?;
    assert_eq!(u(&r0, &["out_of_sync_bytes"]), dirty.len() as u64 * 4096, "every write made without the peer is in the bitmap: {r0:#}");

    c.start(1)?;
    c.wait_r0(1, "resync done", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;
    let p = c.wait_r0(0, "source established", Duration::from_secs(30), |r| field(r, "replication") == "Established")?;
    let moved = u(&p, &["stats", "resync_blocks_sent"]) - full;
    assert_eq!(moved, dirty.len() as u64, "only the dirty blocks move");
    assert!(c.log(0).contains("rule=70"), "the sync decision is logged with its rule");

    c.haadm_ok(0, &["secondary", "r0"])?;
    c.stop(0);
    c.stop(1);
    let a = sha1_file(&c.path("node1-data.img"))?;
    let b = sha1_file(&c.path("node2-data.img"))?;
    assert_eq!(a, b, "backing files differ after the resync");
    Ok(())
}

#[test]
fn wrong_shared_secret_is_refused_on_both_sides() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "the-right-secret", Some("not-the-same"))?;
    bring_up(&mut c)?;
    for i in 0..2 {
        let r = c.wait_r0(i, "authentication refused", Duration::from_secs(20), |r| {
            field(r, "connection") == "StandAlone" && field(r, "last_error").contains("authentication")
        })?;
        assert_eq!(field(&r, "disk"), "Inconsistent", "no data touched");
        assert_eq!(u(&r, &["stats", "received_bytes"]), 0);
    }
    Ok(())
}

#[test]
fn corrupt_superblock_is_reported_at_start() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "s3cret", None)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    // Tear one copy: the daemon starts with the other and says so.
    let meta = c.path("node1-meta.img");
    let f = std::fs::OpenOptions::new().write(true).open(&meta)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 512], 4096 + 1024)?;
    c.start(0)?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.log(0).contains("torn/corrupt superblock copy"), "{}", c.log(0));
    c.stop(0);
    // Both copies bad: refused, reported in status and by dump-md, never used.
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 512], 1024)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 512], 4096 + 1024)?;
    let dump = c.haadm(0, &["dump-md", "r0"])?;
    assert!(!dump.status.success());
    let err = String::from_utf8_lossy(&dump.stderr).to_string();
    assert!(err.contains("checksum") || err.contains("superblock"), "{err}");
    c.start(0)?;
    let r = c.wait_r0(0, "error reported", Duration::from_secs(10), |r| field(r, "last_error").contains("superblock"))?;
    assert_eq!(field(&r, "disk"), "Diskless");
    Ok(())
}

#[test]
fn crashed_primary_resyncs_only_its_activity_log_extents() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-al", None)?;
    bring_up(&mut c)?;
    c.wait_r0(0, "Connected", Duration::from_secs(30), |r| field(r, "connection") == "Connected")?;
    c.haadm_ok(0, &["primary", "--force", "r0"])?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(180), |r| field(r, "disk") == "UpToDate")?;
    c.wait_r0(0, "established", Duration::from_secs(30), |r| field(r, "replication") == "Established")?;
    // Writes touch three 4 MiB extents only (blocks 0..3072), all replicated.
    let hot: BTreeSet<u64> = (0..3072).step_by(7).collect();
    write_blocks(&c, 0, &hot, 0xC3)?;
    c.kill9(0);
    c.wait_r0(1, "peer lost", Duration::from_secs(10), |r| field(r, "connection") != "Connected")?;
    c.start(0)?;
    assert!(c.log(0).contains("activity-log extents"), "{}", c.log(0));
    let p = c.wait_r0(0, "resync after the crash", Duration::from_secs(60), |r| field(r, "replication") == "Established" && field(r, "connection") == "Connected")?;
    let moved = u(&p, &["stats", "resync_blocks_sent"]);
    assert!(moved > 0 && moved <= 3 * 1024, "only the activity-log extents resync, not the device: {moved} blocks");
    assert!(c.log(0).contains("rule=40"), "crashed-primary rule decides");
    c.stop(0);
    c.stop(1);
    assert_eq!(sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    Ok(())
}
