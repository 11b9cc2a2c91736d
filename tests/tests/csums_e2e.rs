//! Checksum-based resync (`syncer.csums-alg`, issue 18) between two real `clusterd` processes on
//! loopback. Both backing files start with the same (non-zero) contents: the initial full sync and an
//! `invalidate` of the Secondary move no block — the SyncSource's `resync_csum_equal_bytes` counter
//! covers the whole device and `resync_blocks_sent` stays 0. After `csums-alg: none` is adjusted in,
//! the next `invalidate` moves every block. Then blocks of the Secondary's file are damaged behind its
//! back: an `invalidate` moves exactly those blocks and the files end identical. `haadm dump` shows
//! the defaults.

use anyhow::{ensure, Result};
use ha_tests::{field, sha1_file, Cluster};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const SIZE: u64 = 32 << 20;
const BLOCKS: u64 = SIZE / 4096;

fn u(r: &serde_json::Value, key: &str) -> u64 {
    r["stats"][key].as_u64().unwrap_or(0)
}

/// The resync counters of node `i`: (blocks sent, blocks received, bytes found equal).
fn counters(c: &Cluster, i: usize) -> Result<(u64, u64, u64)> {
    let s = c.status(i)?;
    let r = ha_tests::resource(&s, "r0").unwrap_or_default();
    Ok((u(&r, "resync_blocks_sent"), u(&r, "resync_blocks_received"), u(&r, "resync_csum_equal_bytes")))
}

/// Same non-zero contents in both backing files (each block names itself).
fn fill_identical(c: &Cluster) -> Result<()> {
    for n in ["node1", "node2"] {
        let f = std::fs::OpenOptions::new().write(true).open(c.path(&format!("{n}-data.img")))?;
        let mut buf = vec![0u8; 1 << 20];
        for mib in 0..SIZE >> 20 {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = (k as u64 ^ mib.wrapping_mul(0x9E37)) as u8 | 1;
            }
            for blk in 0..256u64 {
                let at = (blk * 4096) as usize;
                buf[at..at + 8].copy_from_slice(&((mib << 8) + blk).to_le_bytes());
            }
            f.write_all_at(&buf, mib << 20)?;
        }
        f.sync_all()?;
    }
    Ok(())
}

/// `invalidate` on node2 and wait until its resync covered the whole device again; returns how the
/// source's (node1) and the target's counters moved: (sent, equal) and (received, equal).
fn invalidate_node2(c: &Cluster) -> Result<((u64, u64), (u64, u64))> {
    let (s0, _, se0) = counters(c, 0)?;
    let (_, r0, te0) = counters(c, 1)?;
    let out = c.haadm_ok(1, &["invalidate", "r0"])?;
    ensure!(out.contains("resyncs fully"), "{out}");
    // A small resync can finish between two status polls: wait on the counters, not on SyncTarget.
    c.wait_r0(1, "resynced", Duration::from_secs(60), |r| {
        field(r, "disk") == "UpToDate"
            && field(r, "replication") == "Established"
            && u(r, "resync_blocks_received") - r0 + (u(r, "resync_csum_equal_bytes") - te0) / 4096 >= BLOCKS
    })?;
    c.wait_r0(0, "source done", Duration::from_secs(10), |r| {
        field(r, "replication") == "Established" && u(r, "resync_blocks_sent") - s0 + (u(r, "resync_csum_equal_bytes") - se0) / 4096 >= BLOCKS
    })?;
    let (s1, _, se1) = counters(c, 0)?;
    let (_, r1, te1) = counters(c, 1)?;
    Ok(((s1 - s0, se1 - se0), (r1 - r0, te1 - te0)))
}

fn files_identical(c: &Cluster) -> Result<bool> {
    Ok(sha1_file(&c.path("node1-data.img"))? == sha1_file(&c.path("node2-data.img"))?)
}

#[test]
fn identical_data_moves_no_block_and_csums_none_moves_all() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-csums", None)?;
    fill_identical(&c)?;
    c.up_connected_primary0()?;
    let dumped = c.haadm_ok(0, &["dump"])?;
    ensure!(dumped.contains("csums-alg: sha1") && dumped.contains("csums-for: full"), "the defaults in `haadm dump`:\n{dumped}");
    // The initial full sync (default csums-alg sha1): every block found equal, none sent.
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate")?;
    let p = c.wait_r0(0, "source established", Duration::from_secs(10), |r| field(r, "replication") == "Established")?;
    ensure!(u(&p, "resync_blocks_sent") == 0 && u(&p, "resync_csum_equal_bytes") == SIZE, "initial sync: {:#}", p["stats"]);
    ensure!(c.log(0).contains("comparing sha1 digests first"), "{}", c.log(0));

    let ((sent, equal), (received, t_equal)) = invalidate_node2(&c)?;
    ensure!(sent == 0 && received == 0, "identical data moved {sent} blocks (received {received})");
    ensure!(equal == SIZE && t_equal == SIZE, "equal bytes: source {equal}, target {t_equal}");
    ensure!(files_identical(&c)?, "files differ");
    let text = c.haadm_ok(0, &["status", "--verbose"])?;
    ensure!(text.contains(&format!("resync-equal:{}", 2 * SIZE / 1024)), "status shows the counter: {text}");

    // csums-alg none, taken by the running resource for its next resync.
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replacen("      al-extents: 257\n", "      al-extents: 257\n      csums-alg: none\n", 1))?;
    for i in 0..2 {
        let out = c.haadm_ok(i, &["adjust", "r0"])?;
        ensure!(out.contains("syncer.csums-alg sha1 -> none (from the next resync)"), "adjust on node{}: {out}", i + 1);
    }
    let ((sent, equal), (received, _)) = invalidate_node2(&c)?;
    ensure!(sent == BLOCKS && received == BLOCKS && equal == 0, "csums-alg none: sent {sent}, received {received}, equal {equal}");
    ensure!(files_identical(&c)?, "files differ");
    Ok(())
}

#[test]
fn differing_blocks_are_exactly_the_ones_moved() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-csums2", None)?;
    // md5 through the config this time.
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replacen("      al-extents: 257\n", "      al-extents: 257\n      csums-alg: md5\n", 1))?;
    fill_identical(&c)?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate")?;
    ensure!(c.log(0).contains("comparing md5 digests first"), "{}", c.log(0));

    // Damage node2's copy while it is stopped: one byte of block 3, blocks 1000-1001 whole, the last block.
    c.stop(1);
    let f = std::fs::OpenOptions::new().write(true).open(c.path("node2-data.img"))?;
    f.write_all_at(&[0xEE], 3 * 4096 + 100)?;
    f.write_all_at(&[0x11; 8192], 1000 * 4096)?;
    f.write_all_at(&[0x22; 4096], SIZE - 4096)?;
    drop(f);
    let damaged = 4;
    c.start(1)?;
    c.wait_r0(1, "reconnected", Duration::from_secs(20), |r| field(r, "replication") == "Established" && field(r, "disk") == "UpToDate")?;
    ensure!(!files_identical(&c)?, "damage did not land");

    let ((sent, equal), (received, t_equal)) = invalidate_node2(&c)?;
    ensure!(sent == damaged && received == damaged, "moved {sent} blocks (received {received}), expected exactly the {damaged} damaged ones");
    ensure!(equal == SIZE - damaged * 4096 && t_equal == equal, "equal bytes: source {equal}, target {t_equal}");
    ensure!(files_identical(&c)?, "files differ after the csums resync");
    Ok(())
}
