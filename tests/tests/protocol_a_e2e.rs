//! Protocol A (asynchronous replication, issue 18) between two real `clusterd` processes on loopback,
//! with real files, real TCP and the project's iSCSI initiator (tests/src/initiator.rs):
//!
//! - Both nodes agree on protocol A (status, `status --json`, `/metrics`). With node2's clusterd
//!   stopped (SIGSTOP: its kernel still takes the bytes, nothing is applied or acknowledged), writes
//!   through node1's target still complete — they are acknowledged early — and status and `/metrics`
//!   show the lag (bytes, writes, age of the oldest) and the early-ack counter. A SYNCHRONIZE CACHE
//!   issued then does not complete until node2 runs again (SIGCONT); once it has, every acknowledged
//!   block is on node2's backing file and the lag is back to zero: the flush contract holds under A.
//! - A protocol mismatch (A on node1, C on node2) is refused, StandAlone on both, with a message naming
//!   both protocols in status and in the log.
//! - kill -9 of the Primary holding the failover group: the protocol-A Secondary does not promote
//!   itself (it stays Secondary, and status and log say why); after `net.allow-async-failover: on`
//!   and `haadm adjust` it takes the group and serves, through its own portal, the data flushed
//!   before the kill.
//! - The dynamic resync controller is shown (status, `--json`, `/metrics`) while it runs a resync.

use anyhow::{Context, Result, bail, ensure};
use ha_tests::initiator::{Initiator, InitiatorConfig};
use ha_tests::writer::{check_block, make_block};
use ha_tests::{Cluster, field, free_port, http_get, poll_until, sample, write_secret};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const IQN: &str = "iqn.2026-12.org.example:protocol-a";
const BLOCK: u64 = 4096;

/// ha.yaml's `protocol: C` made `protocol: A` (with extra `net:` lines, if any).
fn protocol_a(c: &Cluster, net_extra: &str) -> Result<String> {
    let yaml = std::fs::read_to_string(&c.config)?;
    ensure!(yaml.contains("protocol: C\n") && yaml.contains("    net:\n"), "unexpected test configuration: {yaml}");
    Ok(yaml.replacen("protocol: C\n", "protocol: A\n", 1).replacen("    net:\n", &format!("    net:\n{net_extra}"), 1))
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn pid(c: &Cluster, i: usize) -> Result<u32> {
    c.nodes[i].child.as_ref().map(|ch| ch.id()).context("node not running")
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
    ensure!(st.success(), "kill -{sig} {pid} failed");
    Ok(())
}

/// Logged in, past the first unit attention; returns the initiator and the LU's block size.
async fn login(addr: &str) -> Result<(Initiator, u32)> {
    let mut cfg = InitiatorConfig::new(addr, IQN);
    // A SYNCHRONIZE CACHE below waits for a stopped peer for a few seconds.
    cfg.io_timeout = Duration::from_secs(20);
    let mut ini = Initiator::connect(&cfg).await.with_context(|| format!("login to {addr}"))?;
    for _ in 0..5 {
        match ini.test_unit_ready().await {
            Ok(()) => break,
            Err(e) if e.is_unit_attention() => continue,
            Err(e) => bail!("TEST UNIT READY on {addr}: {e}"),
        }
    }
    let (_, bs) = ini.read_capacity10().await.context("READ CAPACITY")?;
    ensure!(bs > 0 && BLOCK.is_multiple_of(u64::from(bs)), "block size {bs}");
    Ok((ini, bs))
}

/// One self-describing 4 KiB drill block per index in `blocks`, written with sequence number `seq`.
async fn write_blocks(ini: &mut Initiator, bs: u32, blocks: std::ops::Range<u64>, seq: u64) -> Result<()> {
    for b in blocks {
        let lba = u32::try_from(b * BLOCK / u64::from(bs))?;
        ini.write10(lba, bs, make_block(b, seq).into()).await.with_context(|| format!("WRITE of block {b}"))?;
    }
    Ok(())
}

/// Every block of `blocks` on `file` carries sequence number `seq`.
fn blocks_on_file(file: &std::path::Path, blocks: std::ops::Range<u64>, seq: u64) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut bad = Vec::new();
    for b in blocks {
        f.read_exact_at(&mut buf, b * BLOCK)?;
        match check_block(&buf, b) {
            Ok(s) if s == seq => {}
            other => bad.push(format!("block {b}: {other:?}")),
        }
    }
    ensure!(bad.is_empty(), "{}: {} blocks lack the acknowledged data: {:?}", file.display(), bad.len(), &bad[..bad.len().min(8)]);
    Ok(())
}

fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    let (code, text) = http_get(addr, "/metrics")?;
    ensure!(code == 200, "GET /metrics on {addr}: HTTP {code}: {text}");
    Ok(text)
}

/// The protocol-A families (present only on an A resource, so metrics_e2e does not see them) as
/// Prometheus checks them.
fn promtool_lint(text: &str) -> Result<()> {
    ha_tests::promtool_check_metrics(text)
}

#[test]
fn protocol_a_acknowledges_early_shows_its_lag_and_keeps_the_flush_contract() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-protocol-a", None)?;
    // Long link timers: node2 is stopped for a few seconds below and must not be expelled meanwhile
    // (a ping after 10 s of silence; timeout × ko-count = 42 s for an unacknowledged write).
    let yaml = protocol_a(&c, "")?.replacen("timeout: 800ms\n      ping-int: 1s\n      ping-timeout: 500ms", "timeout: 6s\n      ping-int: 10s\n      ping-timeout: 5s", 1);
    ensure!(yaml.contains("ping-int: 10s"), "{yaml}");
    std::fs::write(&c.config, yaml)?;
    let metrics = c.enable_metrics()?;
    let addr = c.serve_r0_by_hand(IQN)?;

    // Both sides agree on A.
    for (i, m) in metrics.iter().enumerate() {
        let r = c.wait_r0(i, "connected with protocol A", Duration::from_secs(10), |r| field(r, "connection") == "Connected")?;
        ensure!(field(&r, "replication_protocol") == "A", "node{}: {r:#}", i + 1);
        ensure!(r["async_lag"].is_object(), "node{}: no protocol-A lag in status: {r:#}", i + 1);
        let text = c.haadm_ok(i, &["status", "r0"])?;
        ensure!(text.contains("  protocol:A lag:0 "), "node{}: {text}", i + 1);
        let m = scrape(*m)?;
        ensure!(sample(&m, "clusterd_resource_replication_protocol", &[r#"resource="r0""#, r#"clusterd_resource_replication_protocol="A""#]) == Some(1.0), "{m}");
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let node2_file = c.path("node2-data.img");
    let node2 = pid(&c, 1)?;
    rt.block_on(async {
        let (mut ini, bs) = login(&addr).await?;
        // With the peer running: writes and a flush, everything on node2's file.
        write_blocks(&mut ini, bs, 0..64, 1).await?;
        ini.sync_cache().await.context("SYNCHRONIZE CACHE")?;
        blocks_on_file(&node2_file, 0..64, 1)?;

        // node2's clusterd stopped: writes still complete (acknowledged on node1's disk), and the lag
        // grows by exactly what they wrote.
        signal(node2, "STOP")?;
        let stopped = Instant::now();
        // Bounded as a whole: a write waiting for the stopped peer would otherwise wait as long as
        // the target keeps the session alive with NOP-Ins.
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            write_blocks(&mut ini, bs, 0..32, 2).await?;
            write_blocks(&mut ini, bs, 64..96, 2).await
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after 10 s")));
        let wrote_in = stopped.elapsed();
        if let Err(e) = r {
            signal(node2, "CONT")?;
            return Err(e.context("a write with the peer stopped did not complete under protocol A"));
        }
        ensure!(wrote_in < Duration::from_secs(4), "64 writes took {wrote_in:?} with the peer stopped");
        // The oldest write gets an age (the machine clock moves with its 20 ms ticks: margin).
        std::thread::sleep(Duration::from_millis(400));
        let r = ha_tests::resource(&c.status(0)?, "r0").context("r0 in node1's status")?;
        let lag = &r["async_lag"];
        ensure!(u64_of(&lag["bytes"]) == 64 * BLOCK && u64_of(&lag["writes"]) == 64, "lag after 64 early acks: {r:#}");
        ensure!(u64_of(&lag["oldest_age_ms"]) >= 300, "age of the oldest unacknowledged write: {lag}");
        ensure!(u64_of(&lag["early_acks"]) >= 64, "early acks: {lag}");
        let text = c.haadm_ok(0, &["status", "r0"])?;
        ensure!(text.contains("  protocol:A lag:256 (64 writes, oldest "), "{text}");
        let m = scrape(metrics[0])?;
        ensure!(sample(&m, "clusterd_resource_async_lag_bytes", &[r#"resource="r0""#]) == Some((64 * BLOCK) as f64), "{m}");
        ensure!(sample(&m, "clusterd_resource_async_lag_seconds", &[]).is_some_and(|s| s >= 0.3), "{m}");
        ensure!(sample(&m, "clusterd_resource_async_early_acks_total", &[]).is_some_and(|n| n >= 64.0), "{m}");
        ensure!(sample(&m, "clusterd_resource_async_lag_waits_total", &[]) == Some(0.0), "{m}");
        ensure!(sample(&m, "clusterd_resource_async_promotion_needs_force", &[]) == Some(0.0), "a Primary: {m}");
        promtool_lint(&m)?;

        // A flush now waits for the peer: it must not complete while node2 is stopped ...
        let flush = ini.sync_cache();
        tokio::pin!(flush);
        let early = tokio::time::timeout(Duration::from_millis(1500), &mut flush).await;
        let resumed = Instant::now();
        signal(node2, "CONT")?;
        ensure!(early.is_err(), "SYNCHRONIZE CACHE completed while the peer was stopped: {early:?}");
        // ... and completes once it runs again, with every acknowledged block on node2's file.
        tokio::time::timeout(Duration::from_secs(15), &mut flush).await.context("SYNCHRONIZE CACHE after SIGCONT timed out")?.context("SYNCHRONIZE CACHE")?;
        eprintln!("protocol A: 64 writes in {wrote_in:?} with the peer stopped; the flush completed {:?} after SIGCONT", resumed.elapsed());
        blocks_on_file(&node2_file, 0..32, 2)?;
        blocks_on_file(&node2_file, 32..64, 1)?;
        blocks_on_file(&node2_file, 64..96, 2)?;
        anyhow::Ok(())
    })?;
    let r = c.wait_r0(0, "lag back to zero", Duration::from_secs(10), |r| r["async_lag"]["bytes"] == 0 && r["async_lag"]["writes"] == 0)?;
    ensure!(field(&r, "connection") == "Connected" && u64_of(&r["async_lag"]["early_acks"]) >= 64, "{r:#}");
    Ok(())
}

#[test]
fn a_protocol_mismatch_is_refused_naming_both() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-protocol-mismatch", None)?;
    // node1 runs protocol A, node2 (its own copy of ha.yaml) protocol C.
    let yaml_c = std::fs::read_to_string(&c.config)?;
    std::fs::write(c.path("ha-node2.yaml"), &yaml_c)?;
    std::fs::write(&c.config, protocol_a(&c, "")?)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    for (i, mine) in [(0, "A"), (1, "C")] {
        let r = c.wait_r0(i, "the mismatch refused", Duration::from_secs(20), |r| field(r, "last_error").contains("protocol mismatch"))?;
        let err = field(&r, "last_error");
        ensure!(err.contains("protocol A") && err.contains("protocol C"), "node{}: the refusal names both: {err}", i + 1);
        ensure!(field(&r, "replication_protocol") == mine, "node{}: {r:#}", i + 1);
        // Not retried: incompatible settings leave the resource StandAlone, as DRBD does.
        let standalone = poll_until(Duration::from_secs(5), || {
            let r = ha_tests::resource(&c.status(i).ok()?, "r0")?;
            (field(&r, "connection") == "StandAlone").then_some(())
        });
        ensure!(standalone.is_some(), "node{} not StandAlone after the refusal: {r:#}", i + 1);
        ensure!(c.log(i).contains("replication protocol mismatch"), "node{}'s log does not say why:\n{}", i + 1, c.log(i));
        let text = c.haadm_ok(i, &["status", "r0"])?;
        ensure!(text.contains("last-error:") && text.contains("protocol mismatch"), "node{}: {text}", i + 1);
    }
    Ok(())
}

fn group(c: &Cluster, i: usize) -> (String, String) {
    let Ok(s) = c.status(i) else { return Default::default() };
    let g = s["cluster"]["groups"].get(0).cloned().unwrap_or_default();
    (g["holder"].as_str().unwrap_or_default().to_string(), g["phase"].as_str().unwrap_or_default().to_string())
}

#[test]
fn an_async_secondary_is_failed_over_to_only_with_allow_async_failover() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-protocol-a-failover", None)?;
    let (hb, port) = (free_port(), free_port());
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 protocol-a-heartbeat-key\n")?;
    let mut yaml = protocol_a(&c, "")?;
    // Each node serves the group's target on its own portal (ALUA), so node2's serves after a failover.
    yaml.push_str(&ha_tests::alua_cluster_yaml(hb, port, IQN));
    std::fs::write(&c.config, &yaml)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    c.wait_r0(0, "connected", Duration::from_secs(20), |r| field(r, "connection") == "Connected")?;
    // Two fresh zeroed disks: no initial sync needed.
    c.haadm_ok(0, &["new-current-uuid", "--clear-bitmap", "r0"])?;
    let held = poll_until(Duration::from_secs(30), || (group(&c, 0) == ("node1".into(), "holding".into())).then_some(()));
    ensure!(held.is_some(), "node1 never held the group: {:?}\n{}", group(&c, 0), c.log(0));
    c.wait_r0(1, "UpToDate Secondary", Duration::from_secs(10), |r| field(r, "disk") == "UpToDate" && field(r, "role") == "Secondary")?;

    // Data flushed through node1's portal before the kill.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (mut ini, bs) = login(&format!("127.0.0.1:{port}")).await?;
        write_blocks(&mut ini, bs, 0..32, 7).await?;
        ini.sync_cache().await.context("SYNCHRONIZE CACHE")
    })?;

    c.kill9(0);
    // Without allow-async-failover the survivor stays Secondary: its peer may have acknowledged
    // writes it lacks. Watched well past deadtime (1 s) and the guard.
    let killed = Instant::now();
    let r = c.wait_r0(1, "the lost peer noticed", Duration::from_secs(10), |r| field(r, "connection") != "Connected")?;
    ensure!(field(&r, "role") == "Secondary", "{r:#}");
    while killed.elapsed() < Duration::from_secs(8) {
        let r = ha_tests::resource(&c.status(1)?, "r0").context("r0 in node2's status")?;
        ensure!(field(&r, "role") == "Secondary", "node2 promoted itself without allow-async-failover after {:?}: {r:#}\n{}", killed.elapsed(), c.log(1));
        let (holder, phase) = group(&c, 1);
        ensure!(holder != "node2" && phase != "holding" && phase != "starting", "node2 took the group: {holder} {phase}\n{}", c.log(1));
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = ha_tests::resource(&c.status(1)?, "r0").context("r0 in node2's status")?;
    ensure!(r["async_promotion_needs_force"] == true, "status does not say the promotion needs --force: {r:#}");
    let text = c.haadm_ok(1, &["status", "r0"])?;
    ensure!(text.contains("failover:needs-force"), "{text}");
    ensure!(c.log(1).contains("not promoted without `haadm primary --force`"), "node2's log does not say why:\n{}", c.log(1));

    // net.allow-async-failover: on, taken live: node2 now takes the group and serves the flushed data.
    let allowed = yaml.replacen("    net:\n", "    net:\n      allow-async-failover: on\n", 1);
    std::fs::write(&c.config, allowed)?;
    let adjusted = Instant::now();
    c.haadm_ok(1, &["adjust"])?;
    let took = poll_until(Duration::from_secs(30), || (group(&c, 1) == ("node2".into(), "holding".into())).then_some(()));
    ensure!(took.is_some(), "node2 did not take the group with allow-async-failover: {:?}\n{}", group(&c, 1), c.log(1));
    let r = c.wait_r0(1, "Primary", Duration::from_secs(5), |r| field(r, "role") == "Primary")?;
    ensure!(r["async_promotion_needs_force"] == false, "{r:#}");
    eprintln!("protocol A failover: node2 held the group {:?} after the adjust", adjusted.elapsed());
    rt.block_on(async {
        let (mut ini, bs) = login(&format!("127.0.0.2:{port}")).await?;
        for b in 0..32u64 {
            let lba = u32::try_from(b * BLOCK / u64::from(bs))?;
            let data = ini.read10(lba, bs, u16::try_from(BLOCK / u64::from(bs))?).await.with_context(|| format!("READ of block {b} on node2"))?;
            let seq = check_block(&data, b).map_err(|e| anyhow::anyhow!("block {b} on node2 after the failover: {e}"))?;
            ensure!(seq == 7, "block {b} on node2 has sequence {seq}, 7 was flushed");
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

/// The dynamic resync controller (issue 18) is shown while it runs a resync from this node, and only
/// then: status line, `--json`, `/metrics`. The initial sync is slowed down (`rate: 4M`, no checksums)
/// so that it runs for a while.
#[test]
fn the_resync_controller_is_shown_while_it_runs_a_resync() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-resync-controller", None)?;
    let yaml = std::fs::read_to_string(&c.config)?;
    ensure!(yaml.contains("rate: unlimited"), "{yaml}");
    std::fs::write(&c.config, yaml.replacen("rate: unlimited", "rate: 4M\n      csums-alg: none", 1))?;
    let metrics = c.enable_metrics()?;
    c.up_connected_primary0()?;
    let r = c.wait_r0(0, "SyncSource with the controller", Duration::from_secs(10), |r| field(r, "replication") == "SyncSource" && r["resync_controller"].is_object())?;
    let ctl = &r["resync_controller"];
    ensure!(u64_of(&ctl["fill_target_bytes"]) == 16 * MIB, "the default c-fill-target: {r:#}");
    ensure!(field(&r, "replication_protocol") == "C" && r["async_lag"].is_null(), "protocol C has no lag: {r:#}");
    let text = c.haadm_ok(0, &["status", "r0"])?;
    ensure!(text.contains("  resync-controller: budget:") && text.contains(" fill-target:16384 "), "{text}");
    ensure!(!text.contains("protocol:A"), "{text}");
    let m = scrape(metrics[0])?;
    ensure!(sample(&m, "clusterd_resource_resync_budget_bytes", &[r#"resource="r0""#]).is_some(), "{m}");
    ensure!(sample(&m, "clusterd_resource_resync_throttling", &[r#"resource="r0""#]).is_some(), "{m}");
    ensure!(sample(&m, "clusterd_resource_async_lag_bytes", &[]).is_none(), "protocol C: {m}");
    promtool_lint(&m)?;
    // The SyncTarget runs no controller.
    let t = c.wait_r0(1, "SyncTarget", Duration::from_secs(5), |r| field(r, "replication") == "SyncTarget")?;
    ensure!(t["resync_controller"].is_null(), "{t:#}");
    // Over: nothing shown.
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replacen("rate: 4M", "rate: unlimited", 1))?;
    c.haadm_ok(0, &["adjust"])?;
    let r = c.wait_r0(0, "the resync done", Duration::from_secs(60), |r| field(r, "replication") == "Established" && field(r, "peer_disk") == "UpToDate")?;
    ensure!(r["resync_controller"].is_null(), "{r:#}");
    ensure!(!c.haadm_ok(0, &["status", "r0"])?.contains("resync-controller:"));
    ensure!(sample(&scrape(metrics[0])?, "clusterd_resource_resync_budget_bytes", &[]).is_none());
    Ok(())
}
