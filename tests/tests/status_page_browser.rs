//! The status page in a real headless browser (Debian's chromium, driven by playwright-core from
//! tests/browser): two replicating daemons on loopback with a heartbeat link and a failover group
//! (no VIP, no port block: nothing touches the root namespace), a rate-limited initial sync and an
//! iSCSI session on the group's target. The page renders without JavaScript and shows both nodes;
//! with JavaScript its progress value changes in place (no reload) while the resync runs;
//! phone-sized, no sideways scrolling, no forms or buttons.
//! Set `STATUS_PAGE_SCREENSHOT=PATH` to keep the screenshot (deploy/docs/status-page.png was made so).

use anyhow::{Context, Result, ensure};
use ha_tests::initiator::{Initiator, InitiatorConfig};
use ha_tests::{Cluster, field, free_port, require_tool, write_secret};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.org.example:page";

#[test]
fn status_page_renders_both_nodes_and_moves_its_progress_bar() -> Result<()> {
    let node = require_tool("node", "nodejs");
    let chromium = require_tool("chromium", "chromium");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run `npm ci` there (tests/run does)",
        browser_dir.display()
    );
    let mut c = Cluster::new(64 << 20, "s3cret-page", None)?;
    let (hb, portal) = (free_port(), free_port());
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 page-heartbeat-key\n")?;
    // 3 MiB/s: the 64 MiB sync lasts ~20 s, longer than the browser checks take (without checksums:
    // equal sparse files would sync at once).
    let mut yaml = std::fs::read_to_string(&c.config)?.replace("rate: unlimited", "rate: 3M\n      csums-alg: none");
    yaml.push_str(&format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 500ms\n  deadtime: 1s\n  initdead: 2s\n  authkeys-file: authkeys\n  links:\n    - name: lo\n      mode: ucast\n      port: {hb}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:\n  preferred: node1\n  resources: [r0]\n  portblock: false\ntargets:\n  {IQN}:\n    portals: [\"127.0.0.1:{portal}\"]\n    luns:\n      0: {{ resource: r0 }}\n"
    ));
    std::fs::write(&c.config, yaml)?;
    let addrs = c.enable_metrics()?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "syncing", Duration::from_secs(20), |r| field(r, "replication") == "SyncTarget")?;
    let holding = ha_tests::poll_until(Duration::from_secs(20), || {
        let s = c.status(0).ok()?;
        (s["cluster"]["group_holder"] == "node1" && s["cluster"]["phase"] == "holding").then_some(())
    });
    ensure!(holding.is_some(), "node1 did not take the group: {}", c.log(0));

    // An initiator logged in for the whole browser run (the page lists its session).
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (up_tx, up_rx) = mpsc::channel::<Result<()>>();
    let session = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return up_tx.send(Err(e.into())).unwrap_or(()),
        };
        rt.block_on(async {
            let mut cfg = InitiatorConfig::new(&format!("127.0.0.1:{portal}"), IQN);
            cfg.initiator_name = "iqn.2026-11.org.example:page-initiator".into();
            match Initiator::connect(&cfg).await {
                Ok(mut ini) => {
                    let _ = up_tx.send(Ok(()));
                    let _ = tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(120))).await;
                    let _ = ini.logout().await;
                }
                Err(e) => {
                    let _ = up_tx.send(Err(anyhow::anyhow!("login: {e}")));
                }
            }
        });
    });
    up_rx.recv_timeout(Duration::from_secs(20)).context("the initiator thread")??;

    let shot = std::env::var("STATUS_PAGE_SCREENSHOT").unwrap_or_else(|_| c.path("status-page.png").display().to_string());
    let out = Command::new(node)
        .arg(browser_dir.join("status_page.mjs"))
        .arg(format!("http://{}/", addrs[0]))
        .arg(&shot)
        .args(["node1", "node2"])
        .env("CHROMIUM", chromium)
        .current_dir(&browser_dir)
        .output()
        .context("run tests/browser/status_page.mjs")?;
    let _ = done_tx.send(());
    let _ = session.join();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    ensure!(
        out.status.success(),
        "browser checks failed ({}):\n{report}\n{}\n--- node1 ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.log(0)
    );
    let r: serde_json::Value = serde_json::from_str(&report).context("the script's JSON report")?;
    ensure!(r["ok"] == true && r["checks"].as_object().is_some_and(|m| m.len() >= 11), "{report}");
    let seen = r["checks"]["static: session listed"]["detail"].to_string();
    ensure!(seen.contains("page-initiator"), "the session is not on the page: {seen}");
    let png = std::fs::read(&shot)?;
    ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "no screenshot at {shot}");
    Ok(())
}
