//! Issue 15: `haadm new-current-uuid [--clear-bitmap]` between two real clusterd processes. Two
//! fresh (sparse, all-zero) disks skip their initial sync: both UpToDate at once, nothing resynced,
//! then a Primary replicates as usual and the backing files stay identical. Wrong states are refused
//! with the reason and exit 1; clusterd not running is exit 3. Plain `new-current-uuid` rotates the
//! current UUID (the old one becomes the bitmap UUID) on a disconnected UpToDate disk.

use anyhow::{Result, ensure};
use ha_tests::{Cluster, field, resource, sha1_file};
use std::time::Duration;

const SIZE: u64 = 64 << 20;

fn r0(c: &Cluster, i: usize) -> Result<serde_json::Value> {
    resource(&c.status(i)?, "r0").ok_or_else(|| anyhow::anyhow!("no r0 in status"))
}

#[test]
fn clear_bitmap_skips_the_initial_sync_of_two_fresh_disks_and_refuses_other_states() -> Result<()> {
    let mut c = Cluster::new(SIZE, "ncu-secret", None)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.haadm_fails(0, &["new-current-uuid", "--clear-bitmap", "r0"], 3, "")?;
    c.start(0)?;
    // Not connected yet; and an Inconsistent disk starts no generation.
    c.haadm_fails(0, &["new-current-uuid", "--clear-bitmap", "r0"], 1, "needs an established connection")?;
    c.haadm_fails(0, &["new-current-uuid", "r0"], 1, "only consistent data")?;
    c.haadm_fails(0, &["new-current-uuid", "nosuch"], 1, "nosuch")?;
    c.start(1)?;
    c.wait_r0(0, "connected, both Inconsistent", Duration::from_secs(20), |r| {
        field(r, "connection") == "Connected" && field(r, "disk") == "Inconsistent" && field(r, "peer_disk") == "Inconsistent"
    })?;

    let out = c.haadm_ok(0, &["new-current-uuid", "--clear-bitmap", "r0"])?;
    ensure!(out.contains("initial sync skipped"), "{out}");
    for i in 0..2 {
        c.wait_r0(i, "both UpToDate without a sync", Duration::from_secs(10), |r| {
            field(r, "disk") == "UpToDate" && field(r, "peer_disk") == "UpToDate" && field(r, "replication") == "Established"
        })?;
    }
    let (a, b) = (r0(&c, 0)?, r0(&c, 1)?);
    ensure!(a["uuids"]["current"] == b["uuids"]["current"], "both share the new generation: {a:#} {b:#}");
    for r in [&a, &b] {
        ensure!(r["stats"]["resync_blocks_sent"] == 0 && r["stats"]["resync_blocks_received"] == 0, "nothing may be resynced: {r:#}");
        ensure!(r["out_of_sync_bytes"] == 0, "{r:#}");
    }
    // Not fresh any more: refused on either node.
    c.haadm_fails(1, &["new-current-uuid", "--clear-bitmap", "r0"], 1, "only for two fresh disks")?;
    // Plain rotation is refused while connected.
    c.haadm_fails(0, &["new-current-uuid", "r0"], 1, "connected")?;

    // A Primary without --force, replicated writes, and a reconnect that finds nothing to sync.
    c.haadm_ok(0, &["primary", "r0"])?;
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let socket = c.path("node1.sock");
    let hint = clusterd::haadm::client::StartHint { config: c.config.clone(), node: "node1".into() };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut client = clusterd::haadm::client::connect(&socket, &hint).await?;
        let req = proto::control::IoWriteRequest { resource: "r0".into(), offset: 8 << 20, data, fua: true };
        client.io_write(req).await?;
        anyhow::Ok(())
    })?;
    c.haadm_ok(1, &["disconnect", "r0"])?;
    c.haadm_ok(1, &["connect", "r0"])?;
    c.wait_r0(1, "reconnected in sync", Duration::from_secs(20), |r| {
        field(r, "connection") == "Connected" && field(r, "disk") == "UpToDate" && field(r, "replication") == "Established"
    })?;
    let (fa, fb) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(fa == fb, "backing files differ ({fa} vs {fb})");

    // Plain rotation on a disconnected UpToDate disk: the old current becomes the bitmap UUID.
    c.haadm_ok(0, &["secondary", "r0"])?;
    c.haadm_ok(0, &["disconnect", "r0"])?;
    let before = r0(&c, 0)?;
    c.haadm_ok(0, &["new-current-uuid", "r0"])?;
    let after = r0(&c, 0)?;
    ensure!(after["uuids"]["current"] != before["uuids"]["current"], "{after:#}");
    let strip = |v: &serde_json::Value| u64::from_str_radix(v.as_str().unwrap_or("0"), 16).unwrap_or(0) & !1;
    ensure!(strip(&after["uuids"]["bitmap"]) == strip(&before["uuids"]["current"]), "old current → bitmap: {before:#} {after:#}");
    // ... and a bitmap UUID in use is not rotated again.
    c.haadm_fails(0, &["new-current-uuid", "r0"], 1, "bitmap UUID")?;
    c.haadm_ok(0, &["connect", "r0"])?;
    c.wait_r0(0, "reconnected after the rotation", Duration::from_secs(20), |r| {
        field(r, "connection") == "Connected" && field(r, "disk") == "UpToDate" && field(r, "peer_disk") == "UpToDate" && field(r, "replication") == "Established"
    })?;
    Ok(())
}
