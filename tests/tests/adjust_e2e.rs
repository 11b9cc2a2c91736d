//! `haadm adjust` / SIGHUP / `haadm dump` and the configuration digest over the heartbeat, with real
//! clusterd daemons: a resync rate raised during a rate-limited sync, LUN/ACL/CHAP changes seen by
//! libiscsi's initiators (a logged-in session survives a CHAP rotation), refusals that name the field
//! and change nothing, and a digest mismatch shown on both nodes until both run the same file.

use anyhow::{Context, Result, ensure};
use ha_tests::standalone::{Standalone, run_tool};
use ha_tests::{Cluster, bin, field, free_port, poll_until, resource, sample, write_secret, http_get};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn edit(path: &std::path::Path, from: &str, to: &str) -> Result<()> {
    let s = std::fs::read_to_string(path)?;
    ensure!(s.contains(from), "`{from}` not in {}:\n{s}", path.display());
    std::fs::write(path, s.replacen(from, to, 1))?;
    Ok(())
}

fn remaining_kib(c: &Cluster, i: usize) -> Option<u64> {
    let st = c.status(i).ok()?;
    let r = resource(&st, "r0")?;
    r["sync"]["remaining_bytes"].as_u64().map(|b| b / 1024)
}

#[test]
fn resync_rate_dry_run_refusal_sighup_dump_and_no_daemon() -> Result<()> {
    let mut c = Cluster::new(96 << 20, "adjust-secret-1", None)?;
    // Without checksums: the equal sparse files would otherwise sync at once (issue 18).
    edit(&c.config, "rate: unlimited", "rate: 1M\n      csums-alg: none")?;
    c.up_connected_primary0()?;
    c.wait_r0(0, "resync running", Duration::from_secs(20), |r| field(r, "replication") == "SyncSource")?;

    // Dry run: the plan, nothing applied.
    edit(&c.config, "rate: 1M", "rate: 500M")?;
    let plan = c.haadm_ok(0, &["adjust", "--dry-run"])?;
    ensure!(plan.trim() == "r0: syncer.rate 1M -> 500M", "dry-run plan: {plan}");
    std::thread::sleep(Duration::from_secs(3));
    let slow = remaining_kib(&c, 0).context("sync progress in status")?;
    ensure!(slow > 80 * 1024, "the sync went faster than 1M/s after a dry run: {slow} KiB left");
    ensure!(c.haadm_ok(0, &["adjust", "--dry-run"])?.trim() == plan.trim(), "the dry run applied something");

    // Applied on the SyncSource: the 96 MiB finish in seconds instead of ~90 s.
    let t0 = Instant::now();
    let applied = c.haadm_ok(0, &["adjust"])?;
    ensure!(applied.contains("r0: syncer.rate 1M -> 500M"), "adjust output: {applied}");
    c.wait_r0(0, "sync done after the rate was raised", Duration::from_secs(30), |r| field(r, "peer_disk") == "UpToDate")?;
    let took = t0.elapsed();
    eprintln!("measured: {slow} KiB left after 3 s at 1M/s; the rest synced {took:?} after adjust raised the rate");
    ensure!(took < Duration::from_secs(40), "sync took {took:?} after the rate was raised");
    ensure!(c.haadm_ok(0, &["adjust", "--dry-run"])?.trim() == "nothing to adjust");
    ensure!(c.log(0).contains("options adjusted (resync rate"), "{}", c.log(0));

    // A disk change while attached is refused by field, and the timeout change with it is not applied.
    edit(&c.config, "timeout: 800ms", "timeout: 700ms")?;
    edit(&c.config, "node1-data.img", "node1-other.img")?;
    let refused = c.haadm(0, &["adjust"])?;
    ensure!(refused.status.code() == Some(1), "exit {:?}: {}", refused.status.code(), text(&refused));
    let msg = text(&refused);
    ensure!(msg.contains("resources.r0.on.node1.disk") && msg.contains("nothing changed"), "{msg}");
    edit(&c.config, "node1-other.img", "node1-data.img")?;
    let pending = c.haadm_ok(0, &["adjust", "--dry-run"])?;
    ensure!(pending.trim() == "r0: net.timeout 800ms -> 700ms", "the refused adjust applied something: {pending}");

    // SIGHUP on node2 applies the file; its log says what.
    let pid = c.nodes[1].child.as_ref().context("node2 runs")?.id();
    ensure!(Command::new("kill").args(["-HUP", &pid.to_string()]).status()?.success());
    let done = poll_until(Duration::from_secs(10), || c.log(1).contains("SIGHUP: adjusted: r0: net.timeout 800ms -> 700ms").then_some(()));
    ensure!(done.is_some(), "no SIGHUP adjust in node2's log:\n{}", c.log(1));
    ensure!(c.haadm_ok(1, &["adjust", "--dry-run"])?.trim() == "nothing to adjust");
    ensure!(c.nodes[1].child.as_mut().context("node2")?.try_wait()?.is_none(), "SIGHUP stopped clusterd");

    // An unknown resource.
    let unknown = c.haadm(0, &["adjust", "nope"])?;
    ensure!(unknown.status.code() == Some(1) && text(&unknown).contains("no resource `nope`"), "{}", text(&unknown));

    // `haadm dump`: every default written out, and it loads back to the same effective config.
    let dumped = c.haadm_ok(0, &["dump"])?;
    for needle in ["c-min-rate: 250K", "after-sb-0pri: disconnect", "max-buffers: 2048", "wfc-timeout: 0s", "rate: 500M"] {
        ensure!(dumped.contains(needle), "`{needle}` missing from dump:\n{dumped}");
    }
    let copy = c.path("dumped.yaml");
    std::fs::write(&copy, &dumped)?;
    let again = Command::new(bin("haadm")).arg("--config").arg(&copy).args(["--node", "node1", "dump"]).output()?;
    ensure!(again.status.success() && String::from_utf8_lossy(&again.stdout) == dumped, "dump of the dump differs: {}", text(&again));
    let one = c.haadm_ok(0, &["dump", "r0"])?;
    ensure!(one.starts_with("resources:\n  r0:\n") && !one.contains("nodes:"), "{one}");

    // No daemon: haadm's exit status 3 and a message that says so.
    c.stop(1);
    let down = c.haadm(1, &["adjust"])?;
    ensure!(down.status.code() == Some(3), "exit {:?}: {}", down.status.code(), text(&down));
    ensure!(text(&down).contains("clusterd"), "{}", text(&down));
    Ok(())
}

const T0: &str = "iqn.2026-11.org.example:adjust";
const INIT1: &str = "iqn.2026-11.org.example:init1";
const INIT2: &str = "iqn.2026-11.org.example:init2";
const OLD_SECRET: &str = "old-chap-secret-0123";
const NEW_SECRET: &str = "new-chap-secret-4567";

fn perf_alive(child: &mut std::process::Child) -> bool {
    child.try_wait().ok().flatten().is_none()
}

#[test]
fn luns_acls_and_chap_rotation_live() -> Result<()> {
    let yaml = format!(
        "  {T0}:\n    portals: [\"127.0.0.1:PORT\"]\n    luns:\n      0: {{ path: lun0.img }}\n    initiators: [{INIT1}]\n    incoming-user: {{ name: alice, secret-file: alice.secret }}\n"
    );
    let mut s = Standalone::new(&yaml, &[("lun0.img", 32 << 20), ("lun1.img", 16 << 20)], &[("alice.secret", OLD_SECRET)])?;
    s.start()?;
    let url = |lun: u32, secret: &str| s.url(T0, lun, Some(("alice", secret)));

    // A session logged in before the changes: iscsi-perf reading continuously.
    let perf_log = s.dir.path().join("perf.log");
    let mut perf = Command::new("iscsi-perf")
        .args(["-i", INIT1, "-m", "4", &url(0, OLD_SECRET)])
        .stdout(std::fs::File::create(&perf_log)?)
        .stderr(std::fs::File::create(s.dir.path().join("perf.err"))?)
        .spawn()
        .context("run iscsi-perf (libiscsi-bin)")?;
    let logged_in = poll_until(Duration::from_secs(10), || {
        let out = s.haadm(&["status", "--json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["sessions"].as_array()?.iter().any(|x| x["initiator"] == INIT1).then_some(())
    });
    ensure!(logged_in.is_some() && perf_alive(&mut perf), "iscsi-perf did not log in:\n{}", s.log());

    let before = run_tool("iscsi-ls", &["-i", INIT1, "-s", &format!("iscsi://alice%{OLD_SECRET}@127.0.0.1:{}", s.port)], &[])?;
    ensure!(!text(&before).contains("Lun:1"), "LUN 1 before adjust: {}", text(&before));
    let stranger = run_tool("iscsi-inq", &["-i", INIT2, &url(0, OLD_SECRET)], &[])?;
    ensure!(!stranger.status.success(), "init2 logged in before the ACL allowed it");

    // LUN 1, ACL entry for init2, the CHAP secret rotated in its file.
    let cfg = &s.config;
    edit(cfg, "      0: { path: lun0.img }\n", "      0: { path: lun0.img }\n      1: { path: lun1.img }\n")?;
    edit(cfg, &format!("initiators: [{INIT1}]"), &format!("initiators: [{INIT1}, {INIT2}]"))?;
    write_secret(&s.dir.path().join("alice.secret"), NEW_SECRET)?;
    let plan = s.haadm(&["adjust", "--dry-run"])?;
    let plan_text = String::from_utf8_lossy(&plan.stdout).into_owned();
    let want = [
        format!("target {T0}: acl add {INIT2}"),
        format!("target {T0}: add LUN 1 (file {})", s.dir.path().join("lun1.img").display()),
        format!("target {T0}: chap secret rotated (user alice)"),
    ];
    ensure!(plan.status.success() && plan_text.lines().collect::<Vec<_>>() == want.iter().map(String::as_str).collect::<Vec<_>>(), "plan: {}", text(&plan));
    let old_still = run_tool("iscsi-inq", &["-i", INIT1, &url(0, OLD_SECRET)], &[])?;
    ensure!(old_still.status.success(), "the dry run changed the secret: {}", text(&old_still));

    let applied = s.haadm(&["adjust"])?;
    ensure!(applied.status.success(), "adjust: {}\n{}", text(&applied), s.log());

    let ls = run_tool("iscsi-ls", &["-i", INIT1, "-s", &format!("iscsi://alice%{NEW_SECRET}@127.0.0.1:{}", s.port)], &[])?;
    ensure!(ls.status.success() && text(&ls).contains("Lun:1"), "the new LUN is not listed: {}", text(&ls));
    let inq1 = run_tool("iscsi-inq", &["-i", INIT1, &url(1, NEW_SECRET)], &[])?;
    ensure!(inq1.status.success(), "INQUIRY on LUN 1: {}", text(&inq1));
    let init2 = run_tool("iscsi-inq", &["-i", INIT2, &url(0, NEW_SECRET)], &[])?;
    ensure!(init2.status.success(), "init2 after the ACL entry: {}", text(&init2));
    let old = run_tool("iscsi-inq", &["-i", INIT1, &url(0, OLD_SECRET)], &[])?;
    ensure!(!old.status.success(), "a login with the old CHAP secret was accepted: {}", text(&old));

    // The session from before is still logged in and still reading.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(perf_alive(&mut perf), "iscsi-perf ended: {}", std::fs::read_to_string(&perf_log).unwrap_or_default());
    let out = s.haadm(&["status", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["sessions"].as_array().is_some_and(|a| a.iter().any(|x| x["initiator"] == INIT1)), "the old session is gone: {v}");
    // SIGKILL, not ^C: libiscsi's iscsi-perf counts a command that ended in CHECK CONDITION (the UNIT
    // ATTENTION REPORTED LUNS DATA HAS CHANGED its session got) twice, and its ^C handler then waits
    // forever for in-flight commands to reach zero.
    let _ = perf.kill();
    let _ = perf.wait();

    // A LUN's serial changing under logged-in sessions is refused by field.
    edit(cfg, "1: { path: lun1.img }", "1: { path: lun1.img, serial: other }")?;
    let refused = s.haadm(&["adjust"])?;
    ensure!(!refused.status.success(), "{}", text(&refused));
    ensure!(text(&refused).contains(&format!("targets.{T0}.luns.1:")) && text(&refused).contains("nothing changed"), "{}", text(&refused));
    Ok(())
}

#[test]
fn digest_mismatch_shown_on_both_nodes_until_both_adjusted() -> Result<()> {
    let mut c = Cluster::new(16 << 20, "digest-secret-1", None)?;
    let hb = free_port();
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 adjust-heartbeat-key\n")?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str(&format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 500ms\n  deadtime: 1s\n  initdead: 2s\n  authkeys-file: authkeys\n  links:\n    - name: lo\n      mode: ucast\n      port: {hb}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:\n  preferred: node1\n  resources: [r0]\n  portblock: false\n"
    ));
    std::fs::write(&c.config, &yaml)?;
    let metrics = c.enable_metrics()?;
    // node2 reads its own copy of the same file.
    let node2_file = c.path("ha-node2.yaml");
    std::fs::copy(&c.config, &node2_file)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start(1)?;
    let config_of = |i: usize| -> Option<serde_json::Value> { c.status(i).ok().map(|s| s["config"].clone()) };
    let agreed = poll_until(Duration::from_secs(20), || {
        let (a, b) = (config_of(0)?, config_of(1)?);
        (a["peer"] != "" && b["peer"] != "" && a["mismatch"] == false && b["mismatch"] == false && a["local"] == b["local"]).then_some(a)
    });
    ensure!(agreed.is_some(), "no agreed digests: {:?} {:?}\n{}", config_of(0), config_of(1), c.log(0));

    // node1 gets a new rate; node2 still runs the old file.
    edit(&c.config, "rate: unlimited", "rate: 50M")?;
    let out = c.haadm(0, &["adjust"])?;
    ensure!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("node2 runs a different config") && err.contains("copy ha.yaml there and run adjust on it too"), "no warning: {err}");
    for i in 0..2 {
        let other = ["node2", "node1"][i];
        let shown = poll_until(Duration::from_secs(10), || {
            let st = c.haadm_ok(i, &["status"]).ok()?;
            st.contains(&format!("config: differs from {other}")).then_some(st)
        });
        ensure!(shown.is_some(), "status of {} does not show the mismatch: {}", ["node1", "node2"][i], c.haadm_ok(i, &["status"])?);
    }
    let events = c.haadm_ok(0, &["events", "--now"])?;
    ensure!(events.contains("config:differs from node2") || events.contains("config:\"differs from node2"), "events: {events}");
    let (_, page) = http_get(metrics[0], "/metrics")?;
    ensure!(sample(&page, "clusterd_config_digest_mismatch", &["peer=\"node2\""]) == Some(1.0), "metrics:\n{page}");

    // The same file on node2, adjusted there: the mismatch clears on both.
    std::fs::copy(&c.config, &node2_file)?;
    let out = c.haadm(1, &["adjust"])?;
    ensure!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("different config"), "{}", text(&out));
    let cleared = poll_until(Duration::from_secs(10), || {
        let (a, b) = (config_of(0)?, config_of(1)?);
        (a["mismatch"] == false && b["mismatch"] == false && a["peer"] != "" && a["local"] == b["local"]).then_some(())
    });
    ensure!(cleared.is_some(), "mismatch did not clear: {:?} {:?}", config_of(0), config_of(1));
    ensure!(!c.haadm_ok(0, &["status"])?.contains("config: differs"));
    let (_, page) = http_get(metrics[0], "/metrics")?;
    ensure!(sample(&page, "clusterd_config_digest_mismatch", &["peer=\"node2\""]) == Some(0.0), "metrics:\n{page}");
    Ok(())
}

/// A resource added to ha.yaml comes up and connects on `adjust`; removing it takes it down, refused
/// while it is Primary.
#[test]
fn added_resource_comes_up_and_removed_one_goes_down() -> Result<()> {
    let mut c = Cluster::new(16 << 20, "add-secret-1", None)?;
    let base = std::fs::read_to_string(&c.config)?;
    let r0 = &base[base.find("  r0:\n").context("r0 section")?..];
    let port = free_port();
    let old_port = r0.split("127.0.0.1:").nth(1).and_then(|s| s.split('"').next()).context("r0's port")?.to_string();
    let r1 = r0
        .replace("  r0:\n", "  r1:\n")
        .replace("device: ha0", "device: ha1")
        .replace("-data.img", "-r1-data.img")
        .replace("-meta.img", "-r1-meta.img")
        .replace(&format!(":{old_port}\""), &format!(":{port}\""));
    for n in ["node1", "node2"] {
        std::fs::File::create(c.path(&format!("{n}-r1-data.img")))?.set_len(16 << 20)?;
        std::fs::File::create(c.path(&format!("{n}-r1-meta.img")))?.set_len(64 << 20)?;
    }
    let with_r1 = format!("{base}{r1}");
    c.up_connected_primary0()?;

    // The admin's order: add r1 to ha.yaml, write its metadata while clusterd runs (it does not
    // have r1 yet, so create-md may touch r1's disks), then adjust. r0 is up: refused, by name.
    std::fs::write(&c.config, &with_r1)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r1"])?;
    }
    let refused = c.haadm(1, &["create-md", "--force", "r0"])?;
    ensure!(
        refused.status.code() == Some(1) && text(&refused).contains("r0 is up in clusterd on node node2") && text(&refused).contains("haadm down r0"),
        "create-md on an attached resource must be refused: {:?} {}",
        refused.status,
        text(&refused)
    );
    ensure!(c.haadm_ok(0, &["adjust", "--dry-run"])?.trim() == "r1: add resource");
    for i in 0..2 {
        ensure!(c.haadm_ok(i, &["adjust"])?.trim() == "r1: add resource");
    }
    let connected = poll_until(Duration::from_secs(20), || {
        let st = c.status(1).ok()?;
        (field(&resource(&st, "r1")?, "connection") == "Connected").then_some(())
    });
    ensure!(connected.is_some(), "r1 did not connect: {:?}\n{}", c.status(1), c.log(1));

    c.haadm_ok(0, &["primary", "--force", "r1"])?;
    std::fs::write(&c.config, &base)?;
    let refused = c.haadm(0, &["adjust"])?;
    ensure!(refused.status.code() == Some(1) && text(&refused).contains("resources.r1") && text(&refused).contains("Primary"), "{}", text(&refused));
    ensure!(c.status(0)?["resources"].as_array().is_some_and(|a| a.len() == 2), "a refused adjust removed r1");
    c.haadm_ok(0, &["secondary", "r1"])?;
    for i in 0..2 {
        ensure!(c.haadm_ok(i, &["adjust"])?.trim() == "r1: remove resource (take it down)");
    }
    let names = |i: usize| -> Result<Vec<String>> {
        Ok(c.status(i)?["resources"].as_array().context("resources")?.iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect())
    };
    ensure!(names(0)? == ["r0"] && names(1)? == ["r0"], "{:?} {:?}", names(0), names(1));
    ensure!(c.haadm_ok(0, &["status"])?.contains("r0"), "r0 is unaffected");
    // The state log followed r1 from its adjust to its removal.
    let logged = poll_until(Duration::from_secs(5), || {
        let log = c.log(0);
        (log.contains("resource r1: Secondary") && log.contains("resource r1: removed from the configuration")).then_some(())
    });
    ensure!(logged.is_some(), "state log did not follow r1:\n{}", c.log(0));
    Ok(())
}
