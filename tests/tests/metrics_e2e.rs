//! `/metrics`, `/status.json` and `/` of real clusterd processes: two replicating daemons on loopback
//! (drbd-reactor's families and labels, values that follow a resync and a disconnect, the exposition
//! linted by Debian's `promtool check metrics`), and a standalone target driven by a real initiator
//! (logins, a CHAP refusal, commands by opcode, latency histograms, bytes).

use anyhow::{Context, Result, ensure};
use ha_tests::initiator::{Initiator, InitiatorConfig};
use ha_tests::standalone::{Standalone, run_tool};
use ha_tests::{Cluster, field, http_get, http_get_with, poll_until, sample};
use std::net::SocketAddr;
use std::time::Duration;

/// Every family drbd-reactor's exporter has that we expose too, with the type it has there.
const DRBD_FAMILIES: &[(&str, &str)] = &[
    ("drbd_resource_resources", "gauge"),
    ("drbd_resource_role", "gauge"),
    ("drbd_resource_suspended", "gauge"),
    ("drbd_resource_maypromote", "gauge"),
    ("drbd_connection_state", "gauge"),
    ("drbd_connection_apinflight_bytes", "gauge"),
    ("drbd_connection_rsinflight_bytes", "gauge"),
    ("drbd_device_state", "gauge"),
    ("drbd_device_unintentionaldiskless", "gauge"),
    ("drbd_device_quorum", "gauge"),
    ("drbd_device_size_bytes", "gauge"),
    ("drbd_device_read_bytes", "counter"),
    ("drbd_device_written_bytes", "counter"),
    ("drbd_device_alwrites", "counter"),
    ("drbd_device_bmwrites", "counter"),
    ("drbd_device_upperpending", "gauge"),
    ("drbd_device_lowerpending", "gauge"),
    ("drbd_peerdevice_outofsync_bytes", "gauge"),
    ("drbd_peerdevice_sent_bytes", "unknown"),
    ("drbd_peerdevice_received_bytes", "unknown"),
];

const OWN_RESOURCE_FAMILIES: &[&str] = &[
    "clusterd_node_info",
    "clusterd_resource_up",
    "clusterd_resource_peer_role",
    "clusterd_resource_peer_disk_state",
    "clusterd_resource_replication_state",
    "clusterd_resource_resync_rate_limit_bytes_per_second",
    "clusterd_resource_resync_sent_bytes",
    "clusterd_resource_resync_received_bytes",
    "clusterd_resource_resync_csum_equal_bytes",
    "clusterd_resource_app_write_in_flight_bytes",
    "clusterd_resource_held_acknowledgements",
    "clusterd_resource_split_brain",
    "clusterd_resource_split_brains",
    "clusterd_resource_disk_errors",
];

/// /metrics as Prometheus asks for it (OpenMetrics).
fn scrape(addr: SocketAddr) -> Result<String> {
    let accept = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n";
    let (code, body) = http_get_with(addr, "/metrics", accept)?;
    ensure!(code == 200, "GET /metrics on {addr}: HTTP {code}: {body}");
    ensure!(body.ends_with("# EOF\n"), "not OpenMetrics text (no # EOF): {body}");
    Ok(body)
}

/// The classic text format a plain client gets is what `promtool check metrics` (Debian's prometheus
/// package) lints: names, types, help texts.
fn promtool_lint(addr: SocketAddr) -> Result<()> {
    let (code, text) = http_get(addr, "/metrics")?;
    ensure!(code == 200 && !text.contains("# EOF"), "classic text expected: {text}");
    ha_tests::promtool_check_metrics(&text)?;
    Ok(())
}

fn state(text: &str, family: &str, state: &str) -> Option<f64> {
    sample(text, family, &[&format!("{family}=\"{state}\"")])
}

#[test]
fn replication_families_follow_a_resync_and_a_disconnect() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "s3cret-metrics", None)?;
    // 8 MiB/s: the 64 MiB initial sync takes ~8 s, long enough to watch it move. Without checksums:
    // the two sparse files are equal, so a csums resync would move nothing (csums_e2e.rs covers that).
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replace("rate: unlimited", "rate: 8M\n      csums-alg: none"))?;
    let addrs = c.enable_metrics()?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "syncing", Duration::from_secs(20), |r| field(r, "replication") == "SyncTarget")?;

    let text = scrape(addrs[0])?;
    for (family, ty) in DRBD_FAMILIES {
        ensure!(text.contains(&format!("# TYPE {family} {ty}\n")), "family {family} ({ty}) missing:\n{text}");
    }
    for family in OWN_RESOURCE_FAMILIES {
        ensure!(text.contains(&format!("# TYPE {family} ")), "family {family} missing:\n{text}");
    }
    // drbd-reactor's label sets.
    ensure!(text.contains(r#"drbd_resource_role{name="r0",drbd_resource_role="Primary"} 1"#), "{text}");
    ensure!(text.contains(r#"drbd_resource_role{name="r0",drbd_resource_role="Secondary"} 0"#), "{text}");
    ensure!(
        text.contains(r#"drbd_connection_state{name="r0",conn_name="node2",peer_node_id="1",drbd_connection_state="Connected"} 1"#),
        "{text}"
    );
    ensure!(text.contains(r#"drbd_device_state{name="r0",volume="0",minor="0",drbd_device_state="UpToDate"} 1"#), "{text}");
    ensure!(text.contains(r#"drbd_device_size_bytes{name="r0",volume="0",minor="0"} "#), "{text}");
    ensure!(sample(&text, "drbd_peerdevice_outofsync_bytes", &[r#"conn_name="node2""#]).unwrap_or(0.0) > 0.0, "{text}");
    ensure!(state(&text, "clusterd_resource_replication_state", "SyncSource") == Some(1.0), "{text}");
    ensure!(sample(&text, "clusterd_resource_resync_rate_limit_bytes_per_second", &[]) == Some(8.0 * 1024.0 * 1024.0), "{text}");
    promtool_lint(addrs[0])?;

    // The SyncTarget's progress moves between scrapes.
    let progress = |i: usize| -> Option<f64> {
        let t = scrape(addrs[i]).ok()?;
        sample(&t, "clusterd_resource_sync_progress_ratio", &[r#"resource="r0""#, r#"kind="resync""#])
    };
    let first = progress(1).context("no progress sample on the SyncTarget")?;
    let later = poll_until(Duration::from_secs(10), || progress(1).filter(|p| *p > first + 0.02));
    ensure!(later.is_some(), "resync progress did not move from {first}");
    let t2 = scrape(addrs[1])?;
    ensure!(t2.contains(r#"drbd_device_state{name="r0",volume="0",minor="0",drbd_device_state="Inconsistent"} 1"#), "{t2}");
    ensure!(sample(&t2, "drbd_peerdevice_received_bytes", &[]).unwrap_or(0.0) > 0.0, "{t2}");

    c.wait_r0(1, "UpToDate", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate")?;
    let done = poll_until(Duration::from_secs(5), || scrape(addrs[0]).ok().filter(|t| !t.contains("clusterd_resource_sync_progress_ratio{")));
    let done = done.context("the progress series did not go away after the resync")?;
    ensure!(sample(&done, "clusterd_resource_resync_sent_bytes_total", &[]) == Some(64.0 * 1024.0 * 1024.0), "{done}");
    ensure!(sample(&done, "clusterd_resource_resync_csum_equal_bytes_total", &[]) == Some(0.0), "{done}");
    ensure!(sample(&done, "drbd_peerdevice_outofsync_bytes", &[]) == Some(0.0), "{done}");

    // A disconnect shows as StandAlone, and Connected again after connect.
    c.haadm_ok(0, &["disconnect", "r0"])?;
    let cut = poll_until(Duration::from_secs(5), || scrape(addrs[0]).ok().filter(|t| state(t, "drbd_connection_state", "StandAlone") == Some(1.0)));
    let cut = cut.context("drbd_connection_state did not turn StandAlone")?;
    ensure!(state(&cut, "drbd_connection_state", "Connected") == Some(0.0), "{cut}");
    c.haadm_ok(0, &["connect", "r0"])?;
    let back = poll_until(Duration::from_secs(10), || scrape(addrs[0]).ok().filter(|t| state(t, "drbd_connection_state", "Connected") == Some(1.0)));
    ensure!(back.is_some(), "not Connected again after connect");

    // The status document and the page: both nodes, no write actions.
    let (code, json) = http_get(addrs[1], "/status.json")?;
    ensure!(code == 200, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(doc["node"] == "node2" && doc["resources"][0]["name"] == "r0", "{doc:#}");
    let (code, html) = http_get(addrs[0], "/")?;
    ensure!(code == 200 && html.contains(r#"data-resource="r0""#) && html.contains("<script src=\"/page.js\">"), "{html}");
    ensure!(!html.contains("<form") && !html.contains("<button"), "the page must not act: {html}");
    ensure!(!html.contains("s3cret-metrics"), "a secret on the page");
    ensure!(http_get(addrs[0], "/nothing-here")?.0 == 404, "unknown paths are 404");
    Ok(())
}

const OPEN: &str = "iqn.2026-11.org.example:metrics";
const CHAP: &str = "iqn.2026-11.org.example:metrics-chap";

#[test]
fn target_families_count_logins_refusals_and_commands() -> Result<()> {
    let yaml = format!(
        "  {OPEN}:\n    portals: [\"127.0.0.1:PORT\"]\n    luns:\n      0: {{ path: open.img }}\n  {CHAP}:\n    portals: [\"127.0.0.1:PORT\"]\n    luns:\n      0: {{ path: chap.img }}\n    incoming-user: {{ name: alice, secret-file: alice.secret }}\n"
    );
    let mut s = Standalone::new(&yaml, &[("open.img", 16 << 20), ("chap.img", 16 << 20)], &[("alice.secret", "alice-secret-0123")])?;
    let port = ha_tests::standalone::free_local_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cfg = std::fs::read_to_string(&s.config)?;
    cfg.push_str(&format!("metrics:\n  listen: \"{addr}\"\n"));
    std::fs::write(&s.config, cfg)?;
    s.start()?;

    // Writes, reads and a flush through our own initiator; a CHAP refusal through libiscsi's.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut ini = Initiator::connect(&InitiatorConfig::new(&format!("127.0.0.1:{}", s.port), OPEN)).await?;
        // The first command of a new nexus reports the power-on unit attention.
        let _ = ini.test_unit_ready().await;
        for lba in 0..20u32 {
            ini.write10(lba * 8, 512, bytes::Bytes::from(vec![lba as u8; 4096])).await?;
        }
        for lba in 0..10u32 {
            ini.read10(lba * 8, 512, 8).await?;
        }
        ini.sync_cache().await?;
        ini.logout().await?;
        anyhow::Ok(())
    })?;
    let wrong = run_tool("iscsi-inq", &[&s.url(CHAP, 0, Some(("alice", "not-the-secret-99")))], &[])?;
    ensure!(!wrong.status.success(), "a wrong CHAP secret must be refused");

    let text = scrape(addr)?;
    let t = format!(r#"target="{OPEN}""#);
    ensure!(sample(&text, "clusterd_iscsi_logins_total", &[&t]) == Some(1.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_login_refusals_total", &[r#"reason="chap""#]) == Some(1.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_login_refusals_total", &[r#"reason="acl""#]) == Some(0.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_commands_total", &[&t, r#"opcode="WRITE_10""#]) == Some(20.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_commands_total", &[&t, r#"opcode="READ_10""#]) == Some(10.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_commands_total", &[&t, r#"opcode="SYNCHRONIZE_CACHE_10""#]) == Some(1.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_command_duration_seconds_count", &[&t, r#"class="write""#]) == Some(20.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_command_duration_seconds_bucket", &[&t, r#"class="read""#, r#"le="+Inf""#]) == Some(10.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_command_duration_seconds_count", &[&t, r#"class="flush""#]) == Some(1.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_received_bytes_total", &[&t]) == Some(20.0 * 4096.0), "{text}");
    ensure!(sample(&text, "clusterd_iscsi_sent_bytes_total", &[&t]).unwrap_or(0.0) >= 10.0 * 4096.0, "{text}");
    ensure!(sample(&text, "clusterd_iscsi_target_up", &[]) == Some(1.0), "{text}");
    ensure!(!text.contains("alice-secret"), "a secret in /metrics");
    promtool_lint(addr)?;
    Ok(())
}
