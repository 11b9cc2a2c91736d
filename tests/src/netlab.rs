//! Two clusterd nodes and a client in network namespaces this harness creates and always deletes:
//! a public network (a bridge in the client namespace, with the VIP), a direct replication link that
//! also carries the second heartbeat, real kernel addresses, real ARP, real TCP and UDP.
//!
//! Topology (`P` = a per-process prefix so parallel runs never collide):
//!   P-node1 pub0 10.66.1.1/24 ──┐                      ┌── P-node2 pub0 10.66.1.2/24
//!                               └─ br0 in P-client ────┘   client 10.66.1.10/24, VIP 10.66.1.100
//!   P-node1 repl0 10.66.2.1/24 ─────── veth ─────────────── P-node2 repl0 10.66.2.2/24

use crate::{bin, poll_until, write_secret};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "10.66.1.100";
pub const IQN: &str = "iqn.2026-11.org.example:ha";
pub const NODES: [&str; 2] = ["node1", "node2"];
/// Each node serves /metrics and its status page on its public address, this port.
pub const METRICS_PORT: u16 = 9942;

fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("run {args:?}"))?;
    Ok(out)
}

fn must(args: &[&str]) -> Result<String> {
    let out = sh(args)?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One lab at a time per test process: the drills measure pauses and failover times, and several
/// two-node labs on two cores at once would measure the scheduler instead.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct NetLab {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// node2's own copy of the config, when a test gives it a different one (e.g. a wrong key).
    pub node2_config: Option<PathBuf>,
    children: [Option<Child>; 2],
}

impl NetLab {
    pub fn ns(&self, who: &str) -> String {
        format!("{}-{who}", self.prefix)
    }

    /// Creates the namespaces and links, the config, secrets and backing files (`size` bytes each).
    pub fn new(tag: &str, size: u64, extra_cluster_yaml: &str) -> Result<NetLab> {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = format!("hat{}{}", std::process::id() % 100_000, tag);
        let dir = tempfile::Builder::new().prefix("ha-netns-").tempdir()?;
        let lab = NetLab { _serial: serial, prefix, config: dir.path().join("ha.yaml"), node2_config: None, dir, children: [None, None] };
        lab.build_network()?;
        lab.write_files(size, extra_cluster_yaml)?;
        Ok(lab)
    }

    fn build_network(&self) -> Result<()> {
        let (n1, n2, cl) = (self.ns("node1"), self.ns("node2"), self.ns("client"));
        for ns in [&n1, &n2, &cl] {
            let _ = sh(&["ip", "netns", "del", ns]);
            must(&["ip", "netns", "add", ns])?;
            must(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        must(&["ip", "-n", &cl, "link", "add", "br0", "type", "bridge"])?;
        must(&["ip", "-n", &cl, "addr", "add", "10.66.1.10/24", "dev", "br0"])?;
        must(&["ip", "-n", &cl, "link", "set", "br0", "up"])?;
        for (i, ns) in [&n1, &n2].into_iter().enumerate() {
            let port = format!("p{}", i + 1);
            must(&["ip", "-n", ns, "link", "add", "pub0", "type", "veth", "peer", "name", &port, "netns", &cl])?;
            must(&["ip", "-n", &cl, "link", "set", &port, "master", "br0", "up"])?;
            must(&["ip", "-n", ns, "addr", "add", &format!("10.66.1.{}/24", i + 1), "dev", "pub0"])?;
            must(&["ip", "-n", ns, "link", "set", "pub0", "up"])?;
        }
        must(&["ip", "-n", &n1, "link", "add", "repl0", "type", "veth", "peer", "name", "repl0", "netns", &n2])?;
        for (i, ns) in [&n1, &n2].into_iter().enumerate() {
            must(&["ip", "-n", ns, "addr", "add", &format!("10.66.2.{}/24", i + 1), "dev", "repl0"])?;
            must(&["ip", "-n", ns, "link", "set", "repl0", "up"])?;
        }
        Ok(())
    }

    fn write_files(&self, size: u64, extra_cluster_yaml: &str) -> Result<()> {
        let d = self.dir.path();
        for n in NODES {
            std::fs::File::create(d.join(format!("{n}-data.img")))?.set_len(size)?;
            std::fs::File::create(d.join(format!("{n}-meta.img")))?.set_len(64 << 20)?;
        }
        write_secret(&d.join("r0.secret"), "replication-secret-1")?;
        write_secret(&d.join("authkeys"), "auth 1\n1 sha1 heartbeat-key-one\n")?;
        // The fence command emulates powering the peer off: its clusterd dies and its addresses go.
        let fence = format!(
            "#!/bin/sh\nkill -9 $(cat {d}/$HA_PEER.pid) 2>/dev/null\nip -n {p}-$HA_PEER addr del {VIP}/24 dev pub0 2>/dev/null\necho \"fenced $HA_PEER from $HA_NODE\" >> {d}/fence.log\nexit 0\n",
            d = d.display(),
            p = self.prefix
        );
        std::fs::write(d.join("fence.sh"), fence)?;
        let yaml = format!(
            r#"nodes:
  - {{ name: node1, control-socket: {d}/node1.sock, state-dir: {d}/node1-state }}
  - {{ name: node2, control-socket: {d}/node2.sock, state-dir: {d}/node2-state }}
resources:
  r0:
    protocol: C
    device: ha0
    startup: {{ degr-wfc-timeout: 2s }}
    net: {{ cram-hmac-alg: sha1, shared-secret-file: r0.secret, timeout: 800ms, ping-int: 1s, ping-timeout: 500ms, connect-int: 200ms }}
    syncer: {{ rate: unlimited, al-extents: 257 }}
    on:
      node1: {{ disk: node1-data.img, address: "10.66.2.1:7788", meta-disk: node1-meta.img }}
      node2: {{ disk: node2-data.img, address: "10.66.2.2:7788", meta-disk: node2-meta.img }}
cluster:
  keepalive: 200ms
  warntime: 500ms
  deadtime: 1s
  initdead: 2s
  authkeys-file: authkeys
  links:
    - name: public
      mode: ucast
      port: 694
      on: {{ node1: {{ address: 10.66.1.1 }}, node2: {{ address: 10.66.1.2 }} }}
    - name: repl
      mode: ucast
      port: 695
      on: {{ node1: {{ address: 10.66.2.1 }}, node2: {{ address: 10.66.2.2 }} }}
{extra}group:
  preferred: node1
  resources: [r0]
  vip: {{ address: {VIP}/24, interface: pub0, garp-count: 3, garp-interval: 100ms, garp-repeat-after: 1s }}
  start-timeout: 20s
  stop-timeout: 20s
targets:
  {IQN}:
    portals: ["{VIP}:3260"]
    luns:
      0: {{ resource: r0 }}
metrics:
  on: {{ node1: "10.66.1.1:{METRICS_PORT}", node2: "10.66.1.2:{METRICS_PORT}" }}
"#,
            d = d.display(),
            extra = extra_cluster_yaml.replace("DIR", &d.display().to_string())
        );
        std::fs::write(&self.config, yaml)?;
        Ok(())
    }

    pub fn config_for(&self, i: usize) -> PathBuf {
        match (&self.node2_config, i) {
            (Some(p), 1) => p.clone(),
            _ => self.config.clone(),
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn haadm(&self, i: usize, args: &[&str]) -> Result<Output> {
        Command::new(bin("haadm"))
            .arg("--config")
            .arg(self.config_for(i))
            .arg("--node")
            .arg(NODES[i])
            .args(args)
            .output()
            .context("run haadm")
    }

    pub fn haadm_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.haadm(i, args)?;
        if !out.status.success() {
            bail!("haadm {args:?} on {} failed: {}{}", NODES[i], String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn start(&mut self, i: usize) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path(&format!("{}.log", NODES[i])))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(NODES[i])])
            .arg(bin("clusterd"))
            .arg("--config")
            .arg(self.config_for(i))
            .arg("--node")
            .arg(NODES[i])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn clusterd in its namespace")?;
        std::fs::write(self.path(&format!("{}.pid", NODES[i])), child.id().to_string())?;
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.haadm(i, &["status"]).map(|o| o.status.success()).unwrap_or(false) {
                return Ok(());
            }
            if let Some(st) = self.children[i].as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("clusterd {} exited with {st}: {}", NODES[i], self.log(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("clusterd {} did not come up: {}", NODES[i], self.log(i))
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether node i's clusterd (started by this lab) still runs; reaps it if it has exited.
    pub fn running(&mut self, i: usize) -> bool {
        self.reap(i);
        self.children[i].is_some()
    }

    /// Reaps a child the fence command killed.
    pub fn reap(&mut self, i: usize) {
        if let Some(c) = self.children[i].as_mut()
            && c.try_wait().ok().flatten().is_some()
        {
            self.children[i] = None;
        }
    }

    /// The drills' common start: metadata on both nodes, both daemons up, r0 connected, the initial full
    /// sync from node1, and node1 holding the group. Tests that need another config edit `self.config`
    /// before calling this.
    pub fn bring_up_group(&mut self) -> Result<()> {
        let r0 = |s: &serde_json::Value| crate::resource(s, "r0").unwrap_or_default();
        for i in 0..2 {
            self.haadm_ok(i, &["create-md", "all"])?;
        }
        self.start(0)?;
        self.start(1)?;
        self.wait_status(0, "r0 connected", Duration::from_secs(20), |s| crate::field(&r0(s), "connection") == "Connected")?;
        self.haadm_ok(0, &["primary", "--overwrite-data-of-peer", "r0"])?;
        self.wait_status(1, "initial sync done", Duration::from_secs(60), |s| crate::field(&r0(s), "disk") == "UpToDate")?;
        self.wait_status(0, "node1 holding the group", Duration::from_secs(20), |s| holder(s) == "node1" && phase(s) == "holding")?;
        Ok(())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", NODES[i]))).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!("--- node1 ---\n{}\n--- node2 ---\n{}", tail(&self.log(0), 60), tail(&self.log(1), 60))
    }

    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let s = self.haadm_ok(i, &["status", "--json"])?;
        serde_json::from_str(&s).with_context(|| format!("parse status json: {s}"))
    }

    /// Polls node i's status until `pred` holds (bounded).
    pub fn wait_status(&self, i: usize, what: &str, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        let found = poll_until(limit, || {
            let s = self.status(i).ok()?;
            if pred(&s) {
                return Some(s);
            }
            last = s;
            None
        });
        found.ok_or_else(|| anyhow::anyhow!("{}: timed out waiting for {what}; last status: {last:#}\n{}", NODES[i], self.logs()))
    }

    /// Runs a command inside a namespace.
    pub fn exec(&self, who: &str, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "netns", "exec"];
        let ns = self.ns(who);
        v.push(&ns);
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn has_vip(&self, node: &str) -> bool {
        self.has_address(node, VIP)
    }

    /// Whether `addr` is on the node's public interface (a VIP of another group, say).
    pub fn has_address(&self, node: &str, addr: &str) -> bool {
        must(&["ip", "-n", &self.ns(node), "-4", "addr", "show", "dev", "pub0"]).map(|s| s.contains(&format!("{addr}/"))).unwrap_or(false)
    }

    pub fn mac(&self, node: &str) -> Result<String> {
        let s = must(&["ip", "-n", &self.ns(node), "link", "show", "pub0"])?;
        s.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .context("no MAC on pub0")
    }

    /// The client's neighbour entry for the VIP (lladdr), if any.
    pub fn client_neigh(&self) -> Option<String> {
        let s = must(&["ip", "-n", &self.ns("client"), "neigh", "show", VIP]).ok()?;
        s.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_string)
    }

    /// Node i's `/metrics` (classic text), fetched with curl from the client namespace.
    pub fn metrics(&self, i: usize) -> Result<String> {
        let url = format!("http://10.66.1.{}:{METRICS_PORT}/metrics", i + 1);
        let out = self.exec("client", &["curl", "-sS", "--max-time", "5", &url])?;
        if !out.status.success() {
            bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iscsi-inq` from the client namespace at the VIP.
    pub fn inquiry(&self) -> Result<Output> {
        self.exec("client", &["timeout", "15", "iscsi-inq", &format!("iscsi://{VIP}/{IQN}/0")])
    }

    /// Drops (or passes again) the heartbeat UDP port of one link on both nodes.
    pub fn cut_udp_port(&self, port: u16, cut: bool) -> Result<()> {
        for n in NODES {
            let ns = self.ns(n);
            if cut {
                must(&["ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "hatest"])?;
                must(&["ip", "netns", "exec", &ns, "nft", "add", "chain", "inet", "hatest", "in", "{ type filter hook input priority -10 ; }"])?;
                must(&["ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "hatest", "in", "udp", "dport", &port.to_string(), "drop"])?;
            } else {
                let _ = sh(&["ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "hatest"]);
            }
        }
        Ok(())
    }
}

/// What one node shows at one instant. "Serving" means both halves at once: the VIP is configured on its
/// `pub0` (what initiators reach; the kernel answers ARP and TCP for it) AND its sequencer reports that it
/// holds the group (the target is started). A dead or unreachable daemon never counts as holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingSample {
    pub vip: bool,
    pub holding: bool,
}

impl ServingSample {
    pub fn serving(self) -> bool {
        self.vip && self.holding
    }
}

impl NetLab {
    /// Cuts (or restores) everything between the two nodes while leaving each reachable from the client:
    /// nft drops all traffic between 10.66.1.1 and 10.66.1.2 inside both node namespaces (heartbeat link
    /// `public`), and the replication veth goes down (replication and heartbeat link `repl`).
    pub fn cut_between_nodes(&self, cut: bool) -> Result<()> {
        for (i, n) in NODES.into_iter().enumerate() {
            let ns = self.ns(n);
            let peer = format!("10.66.1.{}", 2 - i);
            if cut {
                let nft = |args: &[&str]| -> Result<String> {
                    let mut v = vec!["ip", "netns", "exec", &ns, "nft"];
                    v.extend_from_slice(args);
                    must(&v)
                };
                nft(&["add", "table", "inet", "hacut"])?;
                nft(&["add", "chain", "inet", "hacut", "in", "{ type filter hook input priority -20 ; }"])?;
                nft(&["add", "chain", "inet", "hacut", "out", "{ type filter hook output priority -20 ; }"])?;
                nft(&["add", "rule", "inet", "hacut", "in", "ip", "saddr", &peer, "drop"])?;
                nft(&["add", "rule", "inet", "hacut", "out", "ip", "daddr", &peer, "drop"])?;
            } else {
                let _ = sh(&["ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "hacut"]);
            }
        }
        must(&["ip", "-n", &self.ns("node1"), "link", "set", "repl0", if cut { "down" } else { "up" }])?;
        Ok(())
    }

    /// Pulls (or plugs back) `node`'s public cable at the switch: its port on the client's bridge goes down,
    /// so neither the client, the ping node nor the peer reach it there (ARP included). Its `pub0` keeps
    /// its addresses (the VIP too) and only loses carrier.
    pub fn isolate_public(&self, node: &str, isolate: bool) -> Result<()> {
        let i = NODES.iter().position(|n| *n == node).context("unknown node")?;
        let port = format!("p{}", i + 1);
        must(&["ip", "-n", &self.ns("client"), "link", "set", &port, if isolate { "down" } else { "up" }])?;
        Ok(())
    }

    /// One sample of whether node `i` serves (see [`ServingSample`]).
    pub fn serving(&self, i: usize) -> ServingSample {
        let vip = self.has_vip(NODES[i]);
        let holding = self.status(i).map(|s| holder(&s) == NODES[i] && phase(&s) == "holding").unwrap_or(false);
        ServingSample { vip, holding }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for i in 0..2 {
            self.kill9(i);
        }
        // Anything else started in the namespaces (a fence-killed pid is already gone).
        for who in ["node1", "node2", "client"] {
            let ns = self.ns(who);
            if let Ok(out) = sh(&["ip", "netns", "pids", &ns]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = sh(&["kill", "-9", pid]);
                }
            }
            let _ = sh(&["ip", "netns", "del", &ns]);
        }
    }
}

/// The `cluster` object of a status document.
pub fn cluster(s: &serde_json::Value) -> &serde_json::Value {
    &s["cluster"]
}

pub fn holder(s: &serde_json::Value) -> String {
    s["cluster"]["group_holder"].as_str().unwrap_or("").to_string()
}

pub fn phase(s: &serde_json::Value) -> String {
    s["cluster"]["phase"].as_str().unwrap_or("").to_string()
}
