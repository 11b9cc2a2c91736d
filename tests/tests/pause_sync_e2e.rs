//! `haadm pause-sync` / `resume-sync` between two real `clusterd` processes on loopback: a capped
//! initial sync is paused from the SyncTarget (the flag travels to the SyncSource, which stops sending),
//! then from the SyncSource; status names the paused states as DRBD does and the out-of-sync count
//! stands still while paused; after `resume-sync` the sync finishes and the backing files are
//! identical.

use anyhow::{ensure, Result};
use ha_tests::{field, sha1_file, Cluster};
use std::time::Duration;

fn oos(r: &serde_json::Value) -> u64 {
    r["out_of_sync_bytes"].as_u64().or_else(|| r["out_of_sync_bytes"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

#[test]
fn pause_and_resume_sync_from_either_side() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "s3cret-pause", None)?;
    // 8 MiB/s: the 64 MiB initial sync takes ~8 s, long enough to pause it twice (without checksums:
    // the equal sparse files would sync at once).
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replace("rate: unlimited", "rate: 8M\n      csums-alg: none"))?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "syncing", Duration::from_secs(20), |r| field(r, "replication") == "SyncTarget")?;

    // Paused from the target: both sides show it, nothing moves.
    let out = c.haadm_ok(1, &["pause-sync", "r0"])?;
    ensure!(out.contains("paused"), "{out}");
    let t = c.wait_r0(1, "PausedSyncT", Duration::from_secs(5), |r| field(r, "replication") == "PausedSyncT")?;
    ensure!(t["sync"]["paused"] == serde_json::Value::Bool(true), "{t:#}");
    c.wait_r0(0, "PausedSyncS", Duration::from_secs(5), |r| field(r, "replication") == "PausedSyncS")?;
    std::thread::sleep(Duration::from_millis(300)); // requests already in flight land
    let before = oos(&c.status(0).map(|s| ha_tests::resource(&s, "r0").unwrap_or_default())?);
    std::thread::sleep(Duration::from_millis(1500));
    let after = oos(&c.status(0).map(|s| ha_tests::resource(&s, "r0").unwrap_or_default())?);
    ensure!(before > 0 && after == before, "out-of-sync moved while paused: {before} -> {after}");
    ensure!(field(&t, "disk") == "Inconsistent", "a paused SyncTarget stays Inconsistent: {t:#}");

    // Resumed: it moves again; then paused and resumed from the source.
    c.haadm_ok(1, &["resume-sync", "r0"])?;
    c.wait_r0(0, "SyncSource again", Duration::from_secs(5), |r| field(r, "replication") == "SyncSource" && oos(r) < after)?;
    c.haadm_ok(0, &["pause-sync", "r0"])?;
    c.wait_r0(1, "PausedSyncT (source paused)", Duration::from_secs(5), |r| field(r, "replication") == "PausedSyncT")?;
    c.haadm_ok(0, &["resume-sync", "r0"])?;
    c.wait_r0(1, "UpToDate", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;

    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ after the resumed sync: {a} vs {b}");
    Ok(())
}
