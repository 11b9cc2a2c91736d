//! A real Prometheus (Debian's `prometheus` server) scrapes both nodes of the two-node netns lab with
//! the shipped alert rules (deploy/prometheus/clusterd-alerts.yml, unmodified): its HTTP API shows
//! both nodes Connected; after the replication link is cut (nft drops TCP 7788 in node1) it shows the
//! connection-state change and `ClusterdPeerDisconnected` pending, then firing once the rule's
//! `for: 30s` has run out; after the heal both are Connected again and the alert is gone.

use anyhow::{Context, Result, bail, ensure};
use ha_tests::netlab::{METRICS_PORT, NetLab};
use ha_tests::{poll_until, require_tool};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROM_ADDR: &str = "127.0.0.1:9090";

struct Prometheus {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts Prometheus inside the lab's client namespace (it reaches both nodes' public addresses).
fn start_prometheus(lab: &NetLab) -> Result<Prometheus> {
    let prometheus = require_tool("prometheus", "prometheus");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/clusterd-alerts.yml").canonicalize()?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: clusterd\n    static_configs:\n      - targets: [\"10.66.1.1:{METRICS_PORT}\", \"10.66.1.2:{METRICS_PORT}\"]\n",
        rules.display()
    );
    let path = lab.path("prometheus.yml");
    std::fs::write(&path, config)?;
    let log = lab.path("prometheus.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client")])
        .arg(prometheus)
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--storage.tsdb.path={}", lab.path("tsdb").display()))
        .arg(format!("--web.listen-address={PROM_ADDR}"))
        .arg("--log.level=warn")
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .context("start prometheus")?;
    Ok(Prometheus { child, log })
}

/// GET on Prometheus' HTTP API from inside the client namespace, parsed.
fn api(lab: &NetLab, path: &str, query: Option<&str>) -> Result<serde_json::Value> {
    let url = format!("http://{PROM_ADDR}{path}");
    let mut args = vec!["curl", "-sS", "--max-time", "5", "-G", url.as_str()];
    let q = query.map(|q| format!("query={q}"));
    if let Some(q) = &q {
        args.extend(["--data-urlencode", q.as_str()]);
    }
    let out = lab.exec("client", &args)?;
    ensure!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{url}: {}", String::from_utf8_lossy(&out.stdout)))?;
    ensure!(v["status"] == "success", "{url}: {v}");
    Ok(v["data"].clone())
}

/// Instant query: `(instance, value)` of every series.
fn query(lab: &NetLab, q: &str) -> Result<Vec<(String, f64)>> {
    let data = api(lab, "/api/v1/query", Some(q))?;
    let result = data["result"].as_array().context("no result")?;
    Ok(result
        .iter()
        .map(|s| {
            let inst = s["metric"]["instance"].as_str().unwrap_or("").to_string();
            let v = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            (inst, v)
        })
        .collect())
}

/// States of the ClusterdPeerDisconnected alerts Prometheus holds now.
fn peer_alerts(lab: &NetLab) -> Result<Vec<(String, String)>> {
    let data = api(lab, "/api/v1/alerts", None)?;
    Ok(data["alerts"]
        .as_array()
        .context("no alerts array")?
        .iter()
        .filter(|a| a["labels"]["alertname"] == "ClusterdPeerDisconnected")
        .map(|a| (a["labels"]["instance"].as_str().unwrap_or("").to_string(), a["state"].as_str().unwrap_or("").to_string()))
        .collect())
}

fn wait<T>(what: &str, limit: Duration, prom: &Prometheus, lab: &NetLab, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    match poll_until(limit, &mut probe) {
        Some(v) => Ok(v),
        None => bail!("timed out waiting for {what}\n--- prometheus ---\n{}\n{}", prom.log(), lab.logs()),
    }
}

fn cut_replication(lab: &NetLab, cut: bool) -> Result<()> {
    let ns = lab.ns("node1");
    let nft = |args: &[&str]| -> Result<()> {
        let mut v = vec!["ip", "netns", "exec", ns.as_str(), "nft"];
        v.extend_from_slice(args);
        let out = Command::new(v[0]).args(&v[1..]).output()?;
        ensure!(out.status.success() || !cut, "{v:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    if !cut {
        return nft(&["delete", "table", "inet", "hacutrepl"]);
    }
    nft(&["add", "table", "inet", "hacutrepl"])?;
    nft(&["add", "chain", "inet", "hacutrepl", "in", "{ type filter hook input priority -20 ; }"])?;
    nft(&["add", "chain", "inet", "hacutrepl", "out", "{ type filter hook output priority -20 ; }"])?;
    for (chain, dir) in [("in", "dport"), ("in", "sport"), ("out", "dport"), ("out", "sport")] {
        nft(&["add", "rule", "inet", "hacutrepl", chain, "tcp", dir, "7788", "drop"])?;
    }
    Ok(())
}

#[test]
fn prometheus_sees_a_replication_cut_and_its_heal() -> Result<()> {
    require_tool("curl", "curl");
    let mut lab = NetLab::new("pm", 64 << 20, "")?;
    lab.bring_up_group()?;
    let prom = start_prometheus(&lab)?;
    let connected = r#"drbd_connection_state{job="clusterd",drbd_connection_state="Connected"}"#;

    let t0 = Instant::now();
    wait("both nodes scraped and Connected", Duration::from_secs(40), &prom, &lab, || {
        let up = query(&lab, r#"up{job="clusterd"}"#).ok()?;
        let conn = query(&lab, connected).ok()?;
        (up.len() == 2 && up.iter().all(|(_, v)| *v == 1.0) && conn.len() == 2 && conn.iter().all(|(_, v)| *v == 1.0)).then_some(())
    })?;
    println!("prometheus: both nodes up and Connected after {:.1} s", t0.elapsed().as_secs_f64());
    ensure!(peer_alerts(&lab)?.is_empty(), "no disconnect alert before the cut");

    cut_replication(&lab, true)?;
    let t1 = Instant::now();
    let seen = wait("the connection state change", Duration::from_secs(30), &prom, &lab, || {
        let down = query(&lab, &format!("{connected} == 0")).ok()?;
        (down.len() == 2).then_some(down)
    })?;
    println!("prometheus: Connected == 0 on {:?} {:.1} s after the cut", seen, t1.elapsed().as_secs_f64());
    let standalone_or_connecting = query(&lab, r#"drbd_connection_state{drbd_connection_state=~"Connecting|StandAlone"} == 1"#)?;
    ensure!(standalone_or_connecting.len() == 2, "both nodes must show the new state: {standalone_or_connecting:?}");
    let alerts = wait("ClusterdPeerDisconnected pending or firing", Duration::from_secs(30), &prom, &lab, || {
        let a = peer_alerts(&lab).ok()?;
        (a.len() == 2 && a.iter().all(|(_, s)| s == "pending" || s == "firing")).then_some(a)
    })?;
    println!("prometheus: ClusterdPeerDisconnected {alerts:?} {:.1} s after the cut", t1.elapsed().as_secs_f64());
    // The rule's `for: 30s` runs out while the link stays cut: the alert fires.
    let firing = wait("ClusterdPeerDisconnected firing", Duration::from_secs(50), &prom, &lab, || {
        let a = peer_alerts(&lab).ok()?;
        (a.len() == 2 && a.iter().all(|(_, s)| s == "firing")).then_some(a)
    })?;
    println!("prometheus: ClusterdPeerDisconnected {firing:?} {:.1} s after the cut", t1.elapsed().as_secs_f64());

    cut_replication(&lab, false)?;
    let t2 = Instant::now();
    wait("Connected again and the alert cleared", Duration::from_secs(40), &prom, &lab, || {
        let conn = query(&lab, connected).ok()?;
        let cleared = peer_alerts(&lab).ok()?.is_empty();
        (conn.len() == 2 && conn.iter().all(|(_, v)| *v == 1.0) && cleared).then_some(())
    })?;
    println!("prometheus: Connected and the alert cleared {:.1} s after the heal", t2.elapsed().as_secs_f64());
    // The group never moved: the heartbeats ran on the public link throughout.
    let holder = query(&lab, r#"clusterd_group_holder{node="node1"}"#)?;
    ensure!(holder.len() == 2 && holder.iter().all(|(_, v)| *v == 1.0), "node1 holds the group on both views: {holder:?}");
    Ok(())
}
