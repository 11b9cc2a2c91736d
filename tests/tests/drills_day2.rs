//! Day-2 drill (root only, network namespaces): a writer in the client namespace keeps writing
//! self-checking 4 KiB blocks through the VIP while the operator changes the running cluster:
//! `haadm adjust` raises the resync rate, adds LUN 1 and an ACL entry for a second initiator, then adds
//! a CHAP account and rotates its secret; `haadm resize` grows the replicated volume by 25 %. The
//! writing initiator must see nothing but the one UNIT ATTENTION 2A/09 CAPACITY DATA HAS CHANGED, and
//! every acknowledged write must be on both backing files afterwards. Last, `haadm detach` and `haadm
//! attach` of the Secondary's disk while the writer goes on: no error, only the blocks written meanwhile
//! resynced.
//!
//! The CHAP step runs after the resize: the project's test initiator (the writer and the probe session
//! that checks 2A/09 and READ CAPACITY) does not speak CHAP, so the probe must log in before the target
//! asks for it. The writer's session, logged in before, stays (a rotation applies to new logins only).

use anyhow::{Context, Result, bail, ensure};
use ha_tests::initiator::{Initiator, InitiatorConfig, InitiatorError};
use ha_tests::netlab::{IQN, NetLab, VIP, holder, phase};
use ha_tests::writer::{
    WriterConfig, WriterHandle, WriterLog, spawn_in_netns, verify_file,
};
use ha_tests::{field, resource, write_secret};
use std::process::Output;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 64 * MIB;
/// +25 %.
const GROWN_SIZE: u64 = DISK_SIZE + DISK_SIZE / 4;
const REGION_BLOCKS: u64 = 4096;
const FENCE: &str = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";
const WRITER_IQN: &str = "iqn.2026-11.org.example:drill-initiator";
const PROBE_IQN: &str = "iqn.2026-11.org.example:drill-probe";
const INIT2: &str = "iqn.2026-11.org.example:second-host";
const STRANGER: &str = "iqn.2026-11.org.example:stranger";
const OLD_SECRET: &str = "old-chap-secret-0123";
const NEW_SECRET: &str = "new-chap-secret-4567";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn r0(s: &serde_json::Value) -> serde_json::Value {
    resource(s, "r0").unwrap_or_default()
}

fn u64_of(r: &serde_json::Value, k: &str) -> u64 {
    r[k].as_u64()
        .or_else(|| r[k].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn edit(path: &std::path::Path, from: &str, to: &str) -> Result<()> {
    let s = std::fs::read_to_string(path)?;
    ensure!(s.contains(from), "`{from}` not in {}:\n{s}", path.display());
    std::fs::write(path, s.replacen(from, to, 1))?;
    Ok(())
}

fn initiator_cfg(name: &str) -> InitiatorConfig {
    let mut c = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    c.initiator_name = name.to_string();
    c.connect_timeout = Duration::from_millis(200);
    c
}

/// A libiscsi tool run in the client namespace (bounded by `timeout`).
fn iscsi_tool(lab: &NetLab, tool: &str, args: &[&str]) -> Result<Output> {
    let mut v = vec!["timeout", "20", tool];
    v.extend_from_slice(args);
    lab.exec("client", &v)
        .with_context(|| format!("run {tool} (is libiscsi-bin installed?)"))
}

fn lun_url(lun: u32, chap: Option<&str>) -> String {
    match chap {
        Some(secret) => format!("iscsi://alice%{secret}@{VIP}/{IQN}/{lun}"),
        None => format!("iscsi://{VIP}/{IQN}/{lun}"),
    }
}

/// `haadm adjust` on both nodes (they read the same file); returns node1's output.
fn adjust_both(lab: &NetLab) -> Result<String> {
    let out = lab.haadm_ok(0, &["adjust"])?;
    lab.haadm_ok(1, &["adjust"])?;
    Ok(out)
}

fn gap(log: &WriterLog, from: Instant, to: Instant) -> Duration {
    log.longest_gap(from, to)
        .map(|(g, _)| g)
        .unwrap_or_default()
}

fn is_capacity_changed(e: &InitiatorError) -> bool {
    matches!(
        e,
        InitiatorError::CheckCondition {
            key: 6,
            asc: 0x2A,
            ascq: 0x09
        }
    )
}

/// The probe's thread: joining it gives READ CAPACITY(10)'s size after the unit attention.
type ProbeThread = std::thread::JoinHandle<Result<Result<u64>>>;

/// A second session of the project's initiator, logged in before the resize, polling TEST UNIT READY
/// until the target reports 2A/09; returns READ CAPACITY(10)'s size after it.
fn spawn_probe(lab: &NetLab) -> Result<(std::sync::mpsc::Receiver<()>, ProbeThread)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cfg = initiator_cfg(PROBE_IQN);
    let worker = spawn_in_netns(Some(&lab.ns("client")), move || -> Result<u64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut ini = Initiator::connect(&cfg).await.context("probe login")?;
            // The power-on unit attention of a new nexus comes first.
            for _ in 0..5 {
                match ini.test_unit_ready().await {
                    Err(e) if e.is_unit_attention() => continue,
                    r => {
                        r?;
                        break;
                    }
                }
            }
            let (blocks, bs) = ini.read_capacity10().await?;
            ensure!(
                blocks * u64::from(bs) == DISK_SIZE,
                "probe before: {blocks} x {bs}"
            );
            let _ = ready_tx.send(());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match ini.test_unit_ready().await {
                    Err(e) if is_capacity_changed(&e) => break,
                    Err(e) => bail!("probe: expected 2A/09, got {e}"),
                    Ok(()) if Instant::now() > deadline => {
                        bail!("probe: no UNIT ATTENTION 2A/09 within 60 s")
                    }
                    Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let (blocks, bs) = ini.read_capacity10().await?;
            let _ = ini.logout().await;
            Ok(blocks * u64::from(bs))
        })
    })?;
    Ok((ready_rx, worker))
}

#[test]
fn drill_e_day2_adjust_and_resize_while_writing() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = NetLab::new("de", DISK_SIZE, FENCE)?;
    edit(&lab.config, "rate: unlimited", "rate: 100M")?;
    lab.bring_up_group()?;
    let t_start = Instant::now();

    // (1) The writer, with a generous time limit: the drill runs ~a minute on a loaded machine.
    let mut wcfg = WriterConfig::new(
        Some(&lab.ns("client")),
        initiator_cfg(WRITER_IQN),
        REGION_BLOCKS,
    );
    wcfg.backoff = Duration::from_millis(50);
    wcfg.time_limit = Duration::from_secs(600);
    let writer = WriterHandle::spawn(wcfg)?;
    writer.wait_acked(200, Duration::from_secs(20))?;

    // (2) adjust: resync rate, LUN 1 (a file), an ACL naming the writer, the probe and a second host.
    let lun1 = lab.path("lun1.img");
    std::fs::File::create(&lun1)?.set_len(16 * MIB)?;
    edit(&lab.config, "rate: 100M", "rate: 400M")?;
    edit(
        &lab.config,
        "      0: { resource: r0 }\n",
        &format!(
            "      0: {{ resource: r0 }}\n      1: {{ path: lun1.img }}\n    initiators: [{WRITER_IQN}, {PROBE_IQN}, {INIT2}]\n"
        ),
    )?;
    let before = iscsi_tool(
        &lab,
        "iscsi-ls",
        &["-i", INIT2, "-s", &format!("iscsi://{VIP}")],
    )?;
    ensure!(
        !text(&before).contains("Lun:1"),
        "LUN 1 before adjust: {}",
        text(&before)
    );
    let adjust_at = Instant::now();
    let plan = lab.haadm_ok(0, &["adjust", "--dry-run"])?;
    eprintln!("adjust --dry-run on node1:\n{plan}");
    for want in [
        "r0: syncer.rate 100M -> 400M".to_string(),
        format!("target {IQN}: add LUN 1 (file "),
        format!("target {IQN}: acl add {INIT2}"),
    ] {
        ensure!(plan.contains(&want), "`{want}` not in the plan:\n{plan}");
    }
    let applied = adjust_both(&lab)?;
    let adjust_took = adjust_at.elapsed();
    ensure!(
        applied.contains("syncer.rate 100M -> 400M") && applied.contains("add LUN 1"),
        "adjust output: {applied}"
    );
    ensure!(
        lab.haadm_ok(0, &["adjust", "--dry-run"])?.trim() == "nothing to adjust",
        "node1 still has something to adjust"
    );
    let ls = iscsi_tool(
        &lab,
        "iscsi-ls",
        &["-i", INIT2, "-s", &format!("iscsi://{VIP}")],
    )?;
    ensure!(
        ls.status.success() && text(&ls).contains("Lun:1"),
        "the second initiator does not see LUN 1: {}",
        text(&ls)
    );
    let inq1 = iscsi_tool(&lab, "iscsi-inq", &["-i", INIT2, &lun_url(1, None)])?;
    ensure!(inq1.status.success(), "INQUIRY on LUN 1: {}", text(&inq1));
    let stranger = iscsi_tool(&lab, "iscsi-inq", &["-i", STRANGER, &lun_url(0, None)])?;
    ensure!(
        !stranger.status.success(),
        "an initiator outside the ACL logged in: {}",
        text(&stranger)
    );
    let adjust_end = Instant::now();

    // (3) resize: +25 % on both backing files, then `haadm resize` on the holder.
    let (probe_ready, probe) = spawn_probe(&lab)?;
    probe_ready
        .recv_timeout(Duration::from_secs(20))
        .context("the probe session did not log in")?;
    let sent_before = r0(&lab.status(0)?)["stats"]["resync_blocks_sent"]
        .as_u64()
        .unwrap_or(0);
    let resize_at = Instant::now();
    for n in ["node1", "node2"] {
        let p = lab.path(&format!("{n}-data.img"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)?
            .set_len(GROWN_SIZE)
            .with_context(|| format!("grow {}", p.display()))?;
    }
    let msg = lab.haadm_ok(0, &["resize", "r0"])?;
    ensure!(
        msg.contains(&format!("resized from {DISK_SIZE} to {GROWN_SIZE}")),
        "resize output: {msg}"
    );
    let resize_cmd_took = resize_at.elapsed();
    for i in 0..2 {
        lab.wait_status(i, "the new size", Duration::from_secs(15), |s| {
            u64_of(&r0(s), "size_bytes") == GROWN_SIZE
        })?;
    }
    lab.wait_status(0, "the new area resynced", Duration::from_secs(60), |s| {
        let r = r0(s);
        field(&r, "connection") == "Connected"
            && field(&r, "peer_disk") == "UpToDate"
            && u64_of(&r, "out_of_sync_bytes") == 0
            && r["stats"]["resync_blocks_sent"].as_u64().unwrap_or(0)
                >= sent_before + (GROWN_SIZE - DISK_SIZE) / 4096
    })?;
    let resize_took = resize_at.elapsed();
    let resynced = r0(&lab.status(0)?)["stats"]["resync_blocks_sent"]
        .as_u64()
        .unwrap_or(0)
        - sent_before;
    let probe_size = match probe.join() {
        Ok(r) => r??,
        Err(_) => bail!("probe thread panicked"),
    };
    ensure!(
        probe_size == GROWN_SIZE,
        "READ CAPACITY(10) after the resize: {probe_size}, want {GROWN_SIZE}"
    );
    let rc16 = iscsi_tool(
        &lab,
        "iscsi-readcapacity16",
        &["-i", INIT2, &lun_url(0, None)],
    )?;
    eprintln!("iscsi-readcapacity16 after the resize:\n{}", text(&rc16));
    ensure!(
        rc16.status.success() && text(&rc16).contains(&format!("Total size:{GROWN_SIZE}")),
        "READ CAPACITY(16) of the second initiator: {}",
        text(&rc16)
    );
    let resize_end = Instant::now();

    // (4) CHAP: an account for new logins, then its secret rotated.
    let chap_at = Instant::now();
    write_secret(&lab.path("alice.secret"), OLD_SECRET)?;
    edit(
        &lab.config,
        &format!("{INIT2}]\n"),
        &format!("{INIT2}]\n    incoming-user: {{ name: alice, secret-file: alice.secret }}\n"),
    )?;
    adjust_both(&lab)?;
    let with_old = iscsi_tool(
        &lab,
        "iscsi-inq",
        &["-i", INIT2, &lun_url(1, Some(OLD_SECRET))],
    )?;
    ensure!(with_old.status.success(), "CHAP login: {}", text(&with_old));
    let no_chap = iscsi_tool(&lab, "iscsi-inq", &["-i", INIT2, &lun_url(0, None)])?;
    ensure!(
        !no_chap.status.success(),
        "a login without CHAP was accepted: {}",
        text(&no_chap)
    );
    write_secret(&lab.path("alice.secret"), NEW_SECRET)?;
    let plan = lab.haadm_ok(0, &["adjust", "--dry-run"])?;
    ensure!(
        plan.trim() == format!("target {IQN}: chap secret rotated (user alice)"),
        "rotation plan: {plan}"
    );
    adjust_both(&lab)?;
    let with_new = iscsi_tool(
        &lab,
        "iscsi-inq",
        &["-i", INIT2, &lun_url(1, Some(NEW_SECRET))],
    )?;
    ensure!(
        with_new.status.success(),
        "login with the new secret: {}",
        text(&with_new)
    );
    let with_old = iscsi_tool(
        &lab,
        "iscsi-inq",
        &["-i", INIT2, &lun_url(0, Some(OLD_SECRET))],
    )?;
    ensure!(
        !with_old.status.success(),
        "a login with the old CHAP secret was accepted: {}",
        text(&with_old)
    );
    let chap_took = chap_at.elapsed();
    let chap_end = Instant::now();

    // (5) detach / attach of the Secondary's disk (issue 15, disk replacement): the writer goes on;
    // node1 marks what it writes meanwhile and resyncs only that at attach.
    let detach_at = Instant::now();
    let out = lab.haadm_ok(1, &["detach", "r0"])?;
    ensure!(out.contains("detached on request"), "detach output: {out}");
    lab.wait_status(0, "the peer disk Diskless", Duration::from_secs(10), |s| {
        let r = r0(s);
        field(&r, "peer_disk") == "Diskless" && field(&r, "connection") == "Connected"
    })?;
    writer.wait_ack_after(Instant::now(), Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    let marked = u64_of(&r0(&lab.status(0)?), "out_of_sync_bytes");
    ensure!(marked > 0, "nothing marked while node2 was detached");
    let out = lab.haadm_ok(1, &["attach", "r0"])?;
    ensure!(out.contains("attached"), "attach output: {out}");
    lab.wait_status(0, "the attached disk resynced", Duration::from_secs(60), |s| {
        let r = r0(s);
        field(&r, "connection") == "Connected"
            && field(&r, "peer_disk") == "UpToDate"
            && u64_of(&r, "out_of_sync_bytes") == 0
    })?;
    let detach_took = detach_at.elapsed();
    let detach_end = Instant::now();

    // (6) A few more seconds of writing, then stop and check.
    writer.wait_ack_after(Instant::now(), Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(3));
    let log = writer.stop()?;
    let end = Instant::now();
    lab.wait_status(0, "in sync at the end", Duration::from_secs(30), |s| {
        let r = r0(s);
        field(&r, "peer_disk") == "UpToDate" && u64_of(&r, "out_of_sync_bytes") == 0
    })?;
    let s1 = lab.status(0)?;
    let expected = log.latest_acked();
    let on_node1 = verify_file(&lab.path("node1-data.img"), &expected)?;
    let on_node2 = verify_file(&lab.path("node2-data.img"), &expected)?;
    let (h1, h2) = (
        ha_tests::sha1_file(&lab.path("node1-data.img"))?,
        ha_tests::sha1_file(&lab.path("node2-data.img"))?,
    );

    let (mut ua_2a09, mut ua_3f0e, mut other) = (0usize, 0usize, Vec::new());
    for e in log.errors_since(t_start) {
        if e.message.contains("0x2a/0x09") && e.unit_attention {
            ua_2a09 += 1;
        } else if e.message.contains("0x3f/0x0e") && e.unit_attention {
            // LUN 1 added under the logged-in writer: REPORTED LUNS DATA HAS CHANGED, then a retry.
            ua_3f0e += 1;
        } else {
            other.push(e.message.clone());
        }
    }
    let (g_adjust, g_resize, g_chap, g_detach) = (
        gap(&log, adjust_at, adjust_end),
        gap(&log, resize_at, resize_end),
        gap(&log, chap_at, chap_end),
        gap(&log, detach_at, detach_end),
    );
    let summary: Vec<(&str, String)> = vec![
        ("adjust (dry-run + both nodes)", format!("{adjust_took:?}")),
        (
            "longest pause during adjust + checks",
            format!("{g_adjust:?}"),
        ),
        ("haadm resize command", format!("{resize_cmd_took:?}")),
        ("resize until new area resynced", format!("{resize_took:?}")),
        ("longest pause during resize", format!("{g_resize:?}")),
        ("4 KiB blocks resynced by the resize", resynced.to_string()),
        ("CHAP add + rotate (two adjusts)", format!("{chap_took:?}")),
        ("longest pause during CHAP steps", format!("{g_chap:?}")),
        ("detach + attach node2 until resynced", format!("{detach_took:?}")),
        ("KiB marked while node2 was detached", (marked / 1024).to_string()),
        ("longest pause during detach/attach", format!("{g_detach:?}")),
        ("writes acknowledged (total)", log.acked.len().to_string()),
        ("writer logins", log.logins.to_string()),
        ("writer UA 2A/09 seen", ua_2a09.to_string()),
        ("writer UA 3F/0E seen", ua_3f0e.to_string()),
        ("writer errors (other)", other.len().to_string()),
        (
            "blocks checked on node1's file",
            format!("{} ({} bad)", on_node1.checked, on_node1.bad.len()),
        ),
        (
            "blocks checked on node2's file",
            format!("{} ({} bad)", on_node2.checked, on_node2.bad.len()),
        ),
        ("probe READ CAPACITY(10) after", probe_size.to_string()),
        ("backing files identical (sha1)", (h1 == h2).to_string()),
        ("drill time", format!("{:?}", end - t_start)),
    ];
    eprintln!(
        "+-- drill e: day-2 adjust, resize, CHAP rotation, detach/attach {}",
        "-".repeat(12)
    );
    for (k, v) in &summary {
        eprintln!("| {k:<38} | {v}");
    }
    eprintln!("+{}", "-".repeat(60));

    on_node1.ensure_ok("node1's backing file")?;
    on_node2.ensure_ok("node2's backing file")?;
    ensure!(
        h1 == h2,
        "the backing files differ after the drill ({h1} vs {h2})"
    );
    ensure!(other.is_empty(), "writer errors: {other:?}\n{}", lab.logs());
    ensure!(ua_3f0e == 1, "the writing initiator saw {ua_3f0e} UNIT ATTENTION 3F/0E after LUN 1 was added (want exactly 1)");
    ensure!(
        ua_2a09 == 1,
        "the writing initiator saw {ua_2a09} UNIT ATTENTION 2A/09 (want exactly 1)"
    );
    ensure!(log.logins == 1, "the writer logged in {} times", log.logins);
    ensure!(
        holder(&s1) == "node1" && phase(&s1) == "holding",
        "the group moved: {s1:#}"
    );
    Ok(())
}
