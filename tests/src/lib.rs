//! Helpers shared by the end-to-end tests: a two-node cluster of real `clusterd` processes on loopback
//! (127.0.0.1 and 127.0.0.2), with its files in a temporary directory, driven through the real `haadm`.
//! Every process started here is killed when the [`Cluster`] is dropped, even when a test fails.

pub mod alua_probe;
pub mod initiator;
pub mod netlab;
pub mod pacemaker;
pub mod pr_host;
pub mod standalone;
pub mod writer;

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (`target/debug` next to this test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug
    let mut d = exe.parent().expect("deps dir").to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    d
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is not built; run `cargo build --workspace --bins` first (tests/run does)", p.display());
    p
}

/// A free TCP port on both 127.0.0.1 and 127.0.0.2 (best effort: bind, remember, release).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 and 127.0.0.2");
}

pub struct NodeProc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// Two nodes, one resource `r0`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub size: u64,
}

pub const NODES: [&str; 2] = ["node1", "node2"];

impl Cluster {
    /// Write ha.yaml, the secret file and sparse backing files; does not start anything.
    pub fn new(size: u64, secret: &str, secret2: Option<&str>) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("ha-e2e-").tempdir()?;
        let port = free_port();
        let mut nodes_yaml = String::new();
        let mut on_yaml = String::new();
        for (i, n) in NODES.iter().enumerate() {
            let ip = format!("127.0.0.{}", i + 1);
            nodes_yaml.push_str(&format!("  - name: {n}\n    control-socket: {}/{n}.sock\n    state-dir: {}/{n}-state\n", dir.path().display(), dir.path().display()));
            on_yaml.push_str(&format!(
                "      {n}: {{ disk: {n}-data.img, address: \"{ip}:{port}\", meta-disk: {n}-meta.img }}\n"
            ));
            let data = dir.path().join(format!("{n}-data.img"));
            std::fs::File::create(&data)?.set_len(size)?;
            std::fs::File::create(dir.path().join(format!("{n}-meta.img")))?.set_len(64 << 20)?;
        }
        write_secret(&dir.path().join("r0.secret"), secret)?;
        if let Some(s2) = secret2 {
            write_secret(&dir.path().join("r0-node2.secret"), s2)?;
        }
        let yaml = format!(
            "nodes:\n{nodes_yaml}resources:\n  r0:\n    protocol: C\n    device: ha0\n    net:\n      cram-hmac-alg: sha1\n      shared-secret-file: r0.secret\n      timeout: 800ms\n      ping-int: 1s\n      ping-timeout: 500ms\n      connect-int: 200ms\n    syncer:\n      rate: unlimited\n      al-extents: 257\n    on:\n{on_yaml}"
        );
        let config = dir.path().join("ha.yaml");
        std::fs::write(&config, &yaml)?;
        if secret2.is_some() {
            // node2 gets its own copy of the file with a different secret.
            let y2 = yaml.replace("shared-secret-file: r0.secret", "shared-secret-file: r0-node2.secret");
            std::fs::write(dir.path().join("ha-node2.yaml"), y2)?;
        }
        let nodes = NODES
            .iter()
            .map(|n| NodeProc { name: n.to_string(), child: None, log: dir.path().join(format!("{n}.log")) })
            .collect();
        Ok(Cluster { dir, config, nodes, size })
    }

    pub fn config_for(&self, i: usize) -> PathBuf {
        let alt = self.dir.path().join("ha-node2.yaml");
        if i == 1 && alt.exists() { alt } else { self.config.clone() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run `haadm --config .. --node NODE args...`.
    pub fn haadm(&self, i: usize, args: &[&str]) -> Result<Output> {
        let out = Command::new(bin("haadm"))
            .arg("--config")
            .arg(self.config_for(i))
            .arg("--node")
            .arg(NODES[i])
            .args(args)
            .output()
            .context("run haadm")?;
        Ok(out)
    }

    /// `haadm` that must succeed; returns stdout.
    /// Runs haadm on node i expecting it to fail with exit `code` and `text` in its stderr.
    pub fn haadm_fails(&self, i: usize, args: &[&str], code: i32, text: &str) -> Result<()> {
        let out = self.haadm(i, args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.code() == Some(code), "haadm {args:?}: expected exit {code}, got {} ({err})", out.status);
        anyhow::ensure!(err.contains(text), "haadm {args:?}: expected `{text}` in: {err}");
        Ok(())
    }

    pub fn haadm_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.haadm(i, args)?;
        if !out.status.success() {
            bail!(
                "haadm {:?} on {} failed ({}): {}{}",
                args,
                NODES[i],
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn start(&mut self, i: usize) -> Result<()> {
        self.start_wrapped(i, &[])
    }

    /// Start node i's clusterd as the last argument of `wrapper` (e.g. `prlimit --fsize=N --`).
    pub fn start_wrapped(&mut self, i: usize, wrapper: &[&str]) -> Result<()> {
        self.start_with(i, wrapper, &[], &[])
    }

    /// Start node i's clusterd with extra arguments and environment variables.
    pub fn start_with(&mut self, i: usize, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.nodes[i].log)?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("clusterd"));
                c
            }
            None => Command::new(bin("clusterd")),
        };
        let child = cmd
            .arg("--config")
            .arg(self.config_for(i))
            .arg("--node")
            .arg(NODES[i])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn clusterd")?;
        self.nodes[i].child = Some(child);
        // Ready when the control socket answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.haadm(i, &["status"]).map(|o| o.status.success()).unwrap_or(false) {
                return Ok(());
            }
            if let Some(st) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("clusterd {} exited with {st}: {}", NODES[i], self.log(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("clusterd {} did not come up: {}", NODES[i], self.log(i))
    }

    /// Adds a `metrics:` section (node1 on 127.0.0.1, node2 on 127.0.0.2, free ports) and returns the
    /// two listen addresses.
    pub fn enable_metrics(&self) -> Result<[std::net::SocketAddr; 2]> {
        let port = free_port();
        let addrs = [format!("127.0.0.1:{port}").parse()?, format!("127.0.0.2:{port}").parse()?];
        let mut yaml = std::fs::read_to_string(&self.config)?;
        yaml.push_str(&format!("metrics:\n  on: {{ node1: \"{}\", node2: \"{}\" }}\n", addrs[0], addrs[1]));
        std::fs::write(&self.config, yaml)?;
        Ok(addrs)
    }

    /// Under an external manager (`cluster.manager: pacemaker`: nothing starts by itself), target `iqn`
    /// with r0 as LUN 0 on a free loopback portal: both nodes up, node1 forced Primary, the initial sync
    /// done, node1 serving. Returns the portal.
    pub fn serve_r0_by_hand(&mut self, iqn: &str) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut yaml = std::fs::read_to_string(&self.config)?;
        yaml.push_str(&format!("cluster:\n  manager: pacemaker\ntargets:\n  {iqn}:\n    portals: [\"{addr}\"]\n    luns:\n      0: {{ resource: r0 }}\n"));
        std::fs::write(&self.config, yaml)?;
        for i in 0..2 {
            self.haadm_ok(i, &["create-md", "r0"])?;
        }
        self.start(0)?;
        self.start(1)?;
        for i in 0..2 {
            self.haadm_ok(i, &["up", "r0"])?;
        }
        self.wait_r0(1, "connected", Duration::from_secs(20), |r| field(r, "connection") == "Connected")?;
        self.haadm_ok(0, &["primary", "--force", "r0"])?;
        self.wait_r0(1, "initial sync done", Duration::from_secs(60), in_sync)?;
        self.haadm_ok(0, &["target", "start"])?;
        Ok(addr)
    }

    /// SIGKILL, like a crash.
    /// Metadata on both nodes, both daemons started, Connected, then node 0 made Primary with
    /// `--force` (its data becomes the source of the initial full sync, which the caller waits for as
    /// far as it needs).
    pub fn up_connected_primary0(&mut self) -> Result<()> {
        for i in 0..2 {
            self.haadm_ok(i, &["create-md", "r0"])?;
        }
        self.start(0)?;
        self.start(1)?;
        self.wait_r0(1, "connected", Duration::from_secs(20), |r| field(r, "connection") == "Connected")?;
        self.haadm_ok(0, &["primary", "--force", "r0"])?;
        Ok(())
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful stop).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// `haadm status --json` of node i, parsed.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let s = self.haadm_ok(i, &["status", "--json"])?;
        serde_json::from_str(&s).with_context(|| format!("parse status json: {s}"))
    }

    /// Poll node i's status of r0 until `pred` holds.
    pub fn wait_r0(&self, i: usize, what: &str, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        let found = poll_until(limit, || {
            let r = self.status(i).ok().and_then(|s| resource(&s, "r0"))?;
            if pred(&r) {
                return Some(r);
            }
            last = r;
            None
        });
        found.ok_or_else(|| anyhow::anyhow!("{}: timed out waiting for {what}; last status: {last:#}\n--- log ---\n{}", NODES[i], self.log(i)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

/// Calls `probe` every 50 ms until it returns a value or `limit` has passed.
pub fn poll_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The entry for resource `name` in a `haadm status --json` document.
pub fn resource(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    status.get("resources")?.as_array()?.iter().find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name)).cloned()
}

/// A resource's status (one node's view): established, both disks UpToDate, nothing out of sync.
pub fn in_sync(r: &serde_json::Value) -> bool {
    let oos = r["out_of_sync_bytes"].as_u64().or_else(|| r["out_of_sync_bytes"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
    field(r, "replication") == "Established" && field(r, "disk") == "UpToDate" && field(r, "peer_disk") == "UpToDate" && oos == 0
}

pub fn field<'a>(r: &'a serde_json::Value, key: &str) -> &'a str {
    r.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

pub fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(secret.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// SHA-1 of a whole file, hex.
pub fn sha1_file(path: &Path) -> Result<String> {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `GET path` over plain HTTP/1.1 (the daemon's monitoring listener): (status code, body). Bounded by
/// a 10 s timeout.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    http_get_with(addr, path, "")
}

/// [`http_get`] with extra request header lines (`"Accept: ...\r\n"`).
pub fn http_get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("read the answer to GET {path}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no HTTP header end in {text:?}"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("no status in {head:?}"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body)? } else { body.to_string() };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("chunk size line")?;
        let n = usize::from_str_radix(size.trim(), 16).with_context(|| format!("chunk size {size:?}"))?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).context("chunk end")?;
    }
}

/// The value of the sample `name{labels...}` (labels given as `k="v"` in exposition order, a
/// subset matches) in OpenMetrics text; None when absent.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        (n == name && labels.iter().all(|lab| rest.contains(lab))).then(|| value.parse().ok()).flatten()
    })
}

/// `promtool check metrics` (Debian's prometheus package) on a classic text exposition: names, types
/// and help texts as Prometheus itself checks them.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    let promtool = require_tool("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run promtool")?;
    child.stdin.take().context("promtool stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "promtool check metrics failed:\n{said}\n--- exposition ---\n{text}");
    Ok(())
}

/// The `cluster`, `group` and `targets` sections of a two-node cluster on loopback whose group serves
/// target `iqn` (LUN 0 = r0) with ALUA on each node's own portal (`127.0.0.N:port`): heartbeats on
/// port `hb` (authkeys file `authkeys`), fence command `true`, node1 preferred with auto-failback.
pub fn alua_cluster_yaml(hb: u16, port: u16, iqn: &str) -> String {
    format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 600ms\n  deadtime: 1s\n  initdead: 3s\n  authkeys-file: authkeys\n  links:\n    - name: ring0\n      mode: ucast\n      port: {hb}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\n  guard: {{ fence-command: \"true\" }}\ngroup:\n  preferred: node1\n  auto-failback: on\n  resources: [r0]\n  portblock: false\n  access: alua\n  node-portals: {{ node1: \"127.0.0.1:{port}\", node2: \"127.0.0.2:{port}\" }}\ntargets:\n  {iqn}:\n    luns:\n      0: {{ resource: r0 }}\n"
    )
}

/// Fails the test loudly when a tool it needs is missing (tests/run installs them all).
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    found.unwrap_or_else(|| panic!("`{name}` is not installed: apt-get install {package} (tests/run installs it)"))
}
