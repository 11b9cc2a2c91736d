//! issue 18 verify: `haadm verify --repair` and the scheduled verify (`syncer.verify-interval`)
//! between two real `clusterd` processes on loopback. Blocks of the Secondary's backing file are
//! damaged behind its back (while it is stopped); verify on the Primary finds exactly those blocks
//! (a differing chunk is narrowed down block by block), and the repair resyncs only them over the
//! established link — no reconnect — until both files are identical. Status (`--json`) and
//! `/metrics` report the last verify.

use anyhow::{ensure, Result};
use ha_tests::{field, http_get, poll_until, sample, sha1_file, Cluster};
use std::os::unix::fs::FileExt;
use std::time::Duration;

fn oos(r: &serde_json::Value) -> u64 {
    r["out_of_sync_bytes"].as_u64().unwrap_or(0)
}

fn received_blocks(r: &serde_json::Value) -> u64 {
    r["stats"]["resync_blocks_received"].as_u64().unwrap_or(0)
}

fn wait_log(c: &Cluster, i: usize, needle: &str, nth: usize, limit: Duration) -> Result<String> {
    poll_until(limit, || (c.log(i).matches(needle).count() >= nth).then(|| c.log(i)))
        .ok_or_else(|| anyhow::anyhow!("node {i}: no {nth}x `{needle}` in the log:\n{}", c.log(i)))
}

/// Stop node 2, overwrite 4 KiB blocks of its file at `offsets`, start it again and wait for the link.
fn damage_secondary(c: &mut Cluster, offsets: &[u64]) -> Result<()> {
    c.stop(1);
    let f = std::fs::OpenOptions::new().write(true).open(c.path("node2-data.img"))?;
    for &off in offsets {
        f.write_all_at(&[0xEE; 4096], off)?;
    }
    drop(f);
    c.start(1)?;
    c.wait_r0(1, "reconnected", Duration::from_secs(20), |r| field(r, "replication") == "Established" && field(r, "disk") == "UpToDate")?;
    ensure!(sha1_file(&c.path("node1-data.img"))? != sha1_file(&c.path("node2-data.img"))?, "damage did not land");
    Ok(())
}

#[test]
fn verify_repair_resyncs_only_the_damaged_blocks_over_the_established_link() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "s3cret-verify-repair", None)?;
    let metrics = c.enable_metrics()?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;

    // Three blocks: two in one verify chunk, one far away.
    let damaged = [1u64 << 20, (1 << 20) + 3 * 4096, 40 << 20];
    damage_secondary(&mut c, &damaged)?;
    let before = received_blocks(&c.wait_r0(1, "settled", Duration::from_secs(5), |_| true)?);
    let handshakes = c.log(0).matches("handshake done").count();

    let out = c.haadm_ok(0, &["verify", "--repair", "r0"])?;
    ensure!(out.contains("resynced from this node"), "{out}");
    let log = wait_log(&c, 0, "online verify finished", 1, Duration::from_secs(30))?;
    let found = damaged.len() as u64 * 4096;
    ensure!(log.contains(&format!("{} KiB out of sync of 65536 KiB checked", found / 1024)), "{log}");
    let r1 = c.wait_r0(1, "repaired", Duration::from_secs(30), |r| {
        field(r, "disk") == "UpToDate" && field(r, "replication") == "Established" && oos(r) == 0 && received_blocks(r) >= before + damaged.len() as u64
    })?;
    ensure!(received_blocks(&r1) == before + damaged.len() as u64, "resynced {} blocks, expected {}", received_blocks(&r1) - before, damaged.len());
    c.wait_r0(0, "clean", Duration::from_secs(10), |r| oos(r) == 0 && field(r, "replication") == "Established")?;
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "files differ after the repair: {a} vs {b}");
    ensure!(c.log(0).matches("handshake done").count() == handshakes, "the repair renegotiated the link:\n{}", c.log(0));
    ensure!(c.log(1).contains("repair: resync started as SyncTarget over the established link"), "{}", c.log(1));

    // Status and metrics report it.
    let r0 = c.wait_r0(0, "last verify in status", Duration::from_secs(5), |r| r["last_verify"]["finished_unix"].as_u64().unwrap_or(0) > 0)?;
    let v = &r0["last_verify"];
    ensure!(v["found_bytes"] == found && v["checked_bytes"] == 64u64 << 20 && v["completed"] == true && v["repair"] == true && v["scheduled"] == false, "{v:#}");
    let text = c.haadm_ok(0, &["status", "r0"])?;
    ensure!(text.contains("verify: last ") && text.contains("12 out-of-sync, repaired"), "{text}");
    let (_, body) = http_get(metrics[0], "/metrics")?;
    ensure!(sample(&body, "clusterd_resource_verify_last_out_of_sync_bytes", &["resource=\"r0\""]) == Some(found as f64), "{body}");
    ensure!(sample(&body, "clusterd_resource_verify_last_timestamp_seconds", &["resource=\"r0\""]).is_some_and(|t| t > 1.7e9), "{body}");

    // Without --repair: found and marked, nothing moves.
    damage_secondary(&mut c, &[8 << 20])?;
    let before = received_blocks(&c.wait_r0(1, "settled", Duration::from_secs(5), |_| true)?);
    c.haadm_ok(0, &["verify", "r0"])?;
    wait_log(&c, 0, "online verify finished", 2, Duration::from_secs(30))?;
    c.wait_r0(1, "marked", Duration::from_secs(10), |r| oos(r) == 4096)?;
    std::thread::sleep(Duration::from_millis(500));
    let r1 = c.wait_r0(1, "still marked", Duration::from_secs(5), |r| oos(r) == 4096)?;
    ensure!(received_blocks(&r1) == before, "a plain verify resynced");
    Ok(())
}

#[test]
fn scheduled_verify_runs_on_the_primary_and_repairs() -> Result<()> {
    let mut c = Cluster::new(32 << 20, "s3cret-verify-sched", None)?;
    let yaml = std::fs::read_to_string(&c.config)?;
    let yaml = yaml.replacen("      al-extents: 257\n", "      al-extents: 257\n      verify-interval: 2s\n      verify-repair: on\n      verify-rate: 200M\n", 1);
    std::fs::write(&c.config, yaml)?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;
    let dump = c.haadm_ok(0, &["dump"])?;
    ensure!(dump.contains("verify-interval: 2s") && dump.contains("verify-repair: on") && dump.contains("verify-rate: 200M"), "{dump}");

    damage_secondary(&mut c, &[3 << 20, 20 << 20])?;
    wait_log(&c, 0, "scheduled verify", 1, Duration::from_secs(20))?;
    c.wait_r0(1, "repaired by the schedule", Duration::from_secs(30), |r| oos(r) == 0 && field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;
    poll_until(Duration::from_secs(20), || (sha1_file(&c.path("node1-data.img")).ok()? == sha1_file(&c.path("node2-data.img")).ok()?).then_some(()))
        .ok_or_else(|| anyhow::anyhow!("files still differ:\n{}", c.log(0)))?;
    // Runs on the Primary only; the Secondary does not schedule one.
    ensure!(!c.log(1).contains("scheduled verify"), "{}", c.log(1));
    let r0 = c.wait_r0(0, "scheduled outcome", Duration::from_secs(10), |r| r["last_verify"]["scheduled"] == true)?;
    ensure!(r0["next_verify_unix"].as_u64().unwrap_or(0) > 0, "{r0:#}");
    let r1 = c.wait_r0(1, "secondary", Duration::from_secs(5), |_| true)?;
    ensure!(r1["next_verify_unix"].as_u64().unwrap_or(0) == 0, "{r1:#}");
    ensure!(c.log(0).contains("rate 204800 KiB/s"), "verify-rate not applied:\n{}", c.log(0));
    Ok(())
}
