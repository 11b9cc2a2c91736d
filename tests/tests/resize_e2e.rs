//! `haadm resize` between two real `clusterd` processes on loopback (issue 15, online grow).
//!
//! - Refused while neither or only one backing file grew (the message names the node and both
//!   sizes), refused to shrink without --size and with a Primary; then both files grow (truncate) and
//!   the volume grows on both nodes (`status --json` size_bytes); what the Primary's backing file
//!   holds beyond the old end is resynced to the Secondary; `--assume-clean` skips that.
//! - kill -9 of the Secondary, and separately of the Primary, at several moments of a resize of
//!   internal metadata (which moves to the new end of the file): after a restart both nodes come
//!   up with the same size, old or new, `dump-md` reads the metadata, and a second resize completes.
//! - The embedded target on the replicated LUN: two sessions see UNIT ATTENTION 2A/09 CAPACITY DATA
//!   HAS CHANGED and READ CAPACITY reports the new size.

use anyhow::{anyhow, bail, ensure, Context, Result};
use ha_tests::initiator::{Initiator, InitiatorConfig, InitiatorError};
use ha_tests::{field, in_sync, poll_until, Cluster};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn size_of(r: &serde_json::Value) -> u64 {
    r["size_bytes"].as_u64().or_else(|| r["size_bytes"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn oos(r: &serde_json::Value) -> u64 {
    r["out_of_sync_bytes"].as_u64().or_else(|| r["out_of_sync_bytes"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn grow(c: &Cluster, node: usize, to: u64) -> Result<()> {
    let p = c.path(&format!("node{}-data.img", node + 1));
    std::fs::OpenOptions::new().write(true).open(&p)?.set_len(to).with_context(|| format!("truncate {}", p.display()))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `haadm resize` that must fail; returns its message.
fn refused(c: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let out = c.haadm(i, args)?;
    let t = text(&out);
    ensure!(out.status.code() == Some(1), "haadm {args:?} should fail with exit 1: {:?} {t}", out.status);
    Ok(t)
}

fn read_at(c: &Cluster, file: &str, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    std::fs::File::open(c.path(file))?.read_exact_at(&mut b, off)?;
    Ok(b)
}


#[test]
fn grow_resyncs_the_new_area_and_refuses_wrong_use() -> Result<()> {
    let mut c = Cluster::new(64 * MIB, "s3cret-resize", None)?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), in_sync)?;
    ensure!(size_of(&c.status(0).and_then(|s| ha_tests::resource(&s, "r0").ok_or(anyhow!("no r0")))?) == 64 * MIB);

    // Nothing grew.
    let e = refused(&c, 0, &["resize", "r0"])?;
    ensure!(e.contains("did not grow") && e.contains("node1"), "{e}");
    // Only node1 grew: node2 is named, with both sizes.
    grow(&c, 0, 80 * MIB)?;
    let e = refused(&c, 0, &["resize", "r0"])?;
    ensure!(e.contains("node2") && e.contains("did not grow") && e.contains(&(80 * MIB).to_string()) && e.contains(&(64 * MIB).to_string()), "{e}");
    // Shrinking: refused with a Primary.
    let e = refused(&c, 0, &["resize", "--size", "32M", "r0"])?;
    ensure!(e.contains("Secondary on both"), "{e}");
    // Unknown resource, clusterd not running: the usual exit statuses.
    let out = c.haadm(0, &["resize", "nope"])?;
    ensure!(!out.status.success() && text(&out).contains("nope"), "{}", text(&out));

    // node2 grows too. What the Primary's file holds beyond the old end must reach node2.
    grow(&c, 1, 80 * MIB)?;
    let pattern: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::OpenOptions::new().write(true).open(c.path("node1-data.img"))?.write_all_at(&pattern, 70 * MIB)?;
    let msg = c.haadm_ok(0, &["resize", "r0"])?;
    ensure!(msg.contains("resized from 67108864 to 83886080"), "{msg}");
    for i in 0..2 {
        c.wait_r0(i, "new size", Duration::from_secs(10), |r| size_of(r) == 80 * MIB)?;
    }
    c.wait_r0(1, "new area resynced", Duration::from_secs(60), in_sync)?;
    ensure!(read_at(&c, "node2-data.img", 70 * MIB, MIB as usize)? == pattern, "the new area was not resynced to node2");

    // --assume-clean: grown again, node1's new area differs from node2's and stays so.
    grow(&c, 0, 96 * MIB)?;
    grow(&c, 1, 96 * MIB)?;
    std::fs::OpenOptions::new().write(true).open(c.path("node1-data.img"))?.write_all_at(&pattern, 90 * MIB)?;
    c.haadm_ok(0, &["resize", "--assume-clean", "r0"])?;
    for i in 0..2 {
        c.wait_r0(i, "new size", Duration::from_secs(10), |r| size_of(r) == 96 * MIB && oos(r) == 0)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    c.wait_r0(1, "still in sync", Duration::from_secs(5), in_sync)?;
    ensure!(read_at(&c, "node2-data.img", 90 * MIB, MIB as usize)? != pattern, "--assume-clean resynced the new area anyway");
    ensure!(read_at(&c, "node2-data.img", 90 * MIB, 4096)? == vec![0u8; 4096]);

    // Disconnected: refused with the reason.
    c.haadm_ok(1, &["disconnect", "r0"])?;
    grow(&c, 0, 112 * MIB)?;
    let e = refused(&c, 0, &["resize", "r0"])?;
    ensure!(e.contains("not connected"), "{e}");
    c.stop(1);
    c.stop(0);
    let out = c.haadm(0, &["resize", "r0"])?;
    ensure!(out.status.code() == Some(3), "clusterd not running: {:?} {}", out.status, text(&out));
    Ok(())
}

/// Internal metadata in the test cluster (it moves to the new end of the grown file).
fn internal_cluster(size: u64) -> Result<Cluster> {
    let c = Cluster::new(size, "s3cret-resize-kill", None)?;
    let yaml = std::fs::read_to_string(&c.config)?;
    let yaml = yaml.replace("meta-disk: node1-meta.img", "meta-disk: internal").replace("meta-disk: node2-meta.img", "meta-disk: internal");
    std::fs::write(&c.config, yaml)?;
    Ok(c)
}

#[test]
fn kill9_during_resize_leaves_consistent_metadata_and_a_second_resize_completes() -> Result<()> {
    let mut c = internal_cluster(64 * MIB)?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync done", Duration::from_secs(60), in_sync)?;
    let mut file = 64 * MIB;
    let mut primary = 0usize;
    // (victim relative to the Primary, delay before the kill in ms)
    for (round, (victim_is_primary, delay_ms)) in [(false, 0u64), (false, 3), (false, 15), (true, 0), (true, 3), (true, 15)].into_iter().enumerate() {
        let before = size_of(&ha_tests::resource(&c.status(primary)?, "r0").ok_or(anyhow!("no r0"))?);
        file += 16 * MIB;
        grow(&c, 0, file)?;
        grow(&c, 1, file)?;
        let victim = if victim_is_primary { primary } else { 1 - primary };
        let handshakes_before = (0..2).map(|i| c.log(i).matches("finishing an interrupted resize").count()).sum::<usize>();
        let mut haadm = std::process::Command::new(ha_tests::bin("haadm"))
            .args(["--config"])
            .arg(&c.config)
            .args(["--node", ha_tests::NODES[primary], "resize", "r0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill9(victim);
        let _ = haadm.wait();
        // The survivor must still answer and have consistent metadata in memory.
        c.status(1 - victim).with_context(|| format!("round {round}: survivor status"))?;
        // Offline, the victim's metadata reads (at the end or at its last known place).
        let dump = c.haadm(victim, &["dump-md", "r0"])?;
        ensure!(dump.status.success(), "round {round}: dump-md: {}", text(&dump));
        c.start(victim).with_context(|| format!("round {round}: restart {}", ha_tests::NODES[victim]))?;
        // Both come up with the same size, the old or the new one (the handshake finishes an
        // interrupted resize on the smaller side).
        let (r0, r1) = poll_until(Duration::from_secs(30), || {
            let a = ha_tests::resource(&c.status(0).ok()?, "r0")?;
            let b = ha_tests::resource(&c.status(1).ok()?, "r0")?;
            (field(&a, "connection") == "Connected" && field(&b, "connection") == "Connected").then_some((a, b))
        })
        .ok_or_else(|| anyhow!("round {round}: not reconnected\n--- node1 ---\n{}\n--- node2 ---\n{}", c.log(0), c.log(1)))?;
        let (s0, s1) = (size_of(&r0), size_of(&r1));
        ensure!(s0 == s1, "round {round}: sizes differ after the restart: {s0} vs {s1}");
        ensure!(s0 >= before, "round {round}: size went from {before} to {s0}");
        let finished_at_handshake = |c: &Cluster| (0..2).map(|i| c.log(i).matches("finishing an interrupted resize").count()).sum::<usize>();
        let interrupted = finished_at_handshake(&c) > handshakes_before;
        eprintln!("round {round}: killed {} after {delay_ms} ms: size {before} -> {s0} after the restart{}", ha_tests::NODES[victim], if interrupted { " (an interrupted resize was finished at the handshake)" } else { "" });
        if victim_is_primary {
            // The restarted node comes back Secondary (a crashed Primary: its activity log resyncs);
            // promote it again once it may be, or else the survivor.
            let promoted = poll_until(Duration::from_secs(60), || {
                [victim, 1 - victim].into_iter().find(|&i| c.haadm(i, &["primary", "r0"]).is_ok_and(|o| o.status.success()))
            })
            .ok_or_else(|| anyhow!("round {round}: neither node can be promoted
{}
{}", c.log(0), c.log(1)))?;
            primary = promoted;
        }
        c.wait_r0(1 - primary, "in sync", Duration::from_secs(60), in_sync)?;
        // A second resize completes (or there is nothing left to grow).
        let out = c.haadm(primary, &["resize", "r0"])?;
        ensure!(out.status.success() || text(&out).contains("did not grow"), "round {round}: second resize: {}", text(&out));
        let want = size_of(&ha_tests::resource(&c.status(primary)?, "r0").unwrap_or_default());
        ensure!(want > before, "round {round}: the volume did not grow: {want} <= {before}");
        c.wait_r0(1 - primary, "same size", Duration::from_secs(10), |r| size_of(r) == want)?;
        c.wait_r0(1 - primary, "in sync", Duration::from_secs(60), in_sync)?;
    }
    // Finally the metadata of both reads offline, at the grown size.
    c.stop(0);
    c.stop(1);
    for i in 0..2 {
        let d = c.haadm_ok(i, &["dump-md", "r0"])?;
        ensure!(d.contains("data-size"), "{d}");
    }
    Ok(())
}

const IQN: &str = "iqn.2026-12.org.example:resize";

async fn login(addr: &str, isid: u8) -> Result<Initiator> {
    let mut cfg = InitiatorConfig::new(addr, IQN);
    cfg.isid = [0x40, 0, 0, 0, 0, isid];
    for _ in 0..100 {
        match Initiator::connect(&cfg).await {
            Ok(mut i) => {
                // The first command reports the power-on unit attention.
                for _ in 0..5 {
                    match i.test_unit_ready().await {
                        Ok(()) => return Ok(i),
                        Err(e) if e.is_unit_attention() => continue,
                        Err(e) => bail!("TEST UNIT READY: {e}"),
                    }
                }
                bail!("unit attentions do not stop");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("no login to {addr}")
}

#[test]
fn the_target_reports_the_new_capacity_with_a_unit_attention() -> Result<()> {
    let mut c = Cluster::new(64 * MIB, "s3cret-resize-target", None)?;
    // Under an external manager nothing starts by itself: up, primary and `target start` by hand, so
    // only node1 serves the portal.
    let addr = c.serve_r0_by_hand(IQN)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut a, mut b) = rt.block_on(async { Ok::<_, anyhow::Error>((login(&addr, 1).await?, login(&addr, 2).await?)) })?;
    let (blocks, bs) = rt.block_on(a.read_capacity10())?;
    ensure!(blocks * u64::from(bs) == 64 * MIB, "before: {blocks} x {bs}");

    grow(&c, 0, 80 * MIB)?;
    grow(&c, 1, 80 * MIB)?;
    c.haadm_ok(0, &["resize", "r0"])?;
    for (name, ini) in [("session 1", &mut a), ("session 2", &mut b)] {
        let got = rt.block_on(async {
            // The LU adopts the size when the volume publishes it (right after the metadata).
            for _ in 0..50 {
                match ini.test_unit_ready().await {
                    Err(InitiatorError::CheckCondition { key: 6, asc: 0x2A, ascq: 0x09 }) => return Ok(()),
                    Err(e) => return Err(anyhow!("{name}: expected 2A/09, got {e}")),
                    Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Err(anyhow!("{name}: no unit attention CAPACITY DATA HAS CHANGED"))
        });
        got?;
        let (blocks, bs) = rt.block_on(ini.read_capacity10())?;
        ensure!(blocks * u64::from(bs) == 80 * MIB, "{name} after: {blocks} x {bs}");
    }
    // The Secondary adopted the size too.
    c.wait_r0(1, "node2 size", Duration::from_secs(5), |r| size_of(r) == 80 * MIB)?;
    rt.block_on(async {
        let _ = a.logout().await;
        let _ = b.logout().await;
    });
    Ok(())
}
