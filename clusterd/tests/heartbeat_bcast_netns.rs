//! Broadcast heartbeat links for real: two `clusterd` daemons in two throw-away network namespaces
//! joined by TWO veth pairs (like Heartbeat's `bcast bond0` + `bcast bond1`), both links in
//! `mode: bcast` on the same UDP port, each socket bound to its interface.
//!
//! Checked through `haadm status --json` (run inside each namespace): both links come up on both
//! nodes, each shows the other's generation, no drops while they run (our own looped-back
//! broadcasts are not drops); one veth down → that link down, the peer stays alive and the group
//! does not move; both down → the peer is dead after deadtime; both up → alive again.
//!
//! Needs root and `ip netns`; otherwise it prints why and passes without doing anything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODES: [&str; 2] = ["node1", "node2"];
/// (veth name, subnet third octet): two independent links.
const LINKS: [(&str, u8); 2] = [("hb0", 0), ("hb1", 1)];
const PORT: u16 = 694;
const KEEPALIVE_MS: u64 = 100;
const DEADTIME_MS: u64 = 600;
/// Generous bound for any state change that should take about deadtime (shared, slow CPU).
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn ip_netns_usable() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `ip args...`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two namespaces (node i lives in `ns[i]`), joined by the veths of [`LINKS`]; node i has
/// 10.77.<subnet>.<i+1>/24 on each. Deleted on drop, even after a failed assertion.
struct Namespaces {
    ns: [String; 2],
}

impl Namespaces {
    fn new() -> Namespaces {
        let prefix = format!("hbbcast-{}-", std::process::id());
        // Leftovers of an earlier run that had the same pid and was killed before its Drop.
        for line in ip(&["netns", "list"]).lines() {
            if let Some(name) = line.split_whitespace().next()
                && name.starts_with(&prefix)
            {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
        let created = Namespaces {
            ns: [format!("{prefix}a"), format!("{prefix}b")],
        };
        for ns in &created.ns {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let [a, b] = &created.ns;
        for (dev, subnet) in LINKS {
            // Created from inside `a` with its peer moved to `b`: nothing touches the root namespace.
            ip(&["-n", a, "link", "add", dev, "type", "veth", "peer", "name", dev, "netns", b]);
            for (i, ns) in created.ns.iter().enumerate() {
                let addr = format!("10.77.{subnet}.{}/24", i + 1);
                ip(&["-n", ns, "addr", "add", &addr, "brd", "+", "dev", dev]);
                ip(&["-n", ns, "link", "set", dev, "up"]);
            }
        }
        created
    }

    fn set_link(&self, node: usize, dev: &str, up: bool) {
        ip(&["-n", &self.ns[node], "link", "set", dev, if up { "up" } else { "down" }]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The files both daemons share (one ha.yaml, like a real cluster) and their logs.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new().prefix("hb-bcast-").tempdir().expect("tempdir");
        let d = dir.path().display();
        let authkeys = dir.path().join("authkeys");
        write_private(&authkeys, "auth 1\n1 sha1 bcast-test-secret-0123456789\n");
        let mut nodes = String::new();
        for n in NODES {
            nodes.push_str(&format!(
                "  - name: {n}\n    control-socket: {d}/{n}.sock\n    state-dir: {d}/{n}-state\n"
            ));
        }
        let mut links = String::new();
        for (dev, subnet) in LINKS {
            links.push_str(&format!(
                "    - name: {dev}\n      mode: bcast\n      port: {PORT}\n      on:\n\
                 \x20       node1: {{ address: 10.77.{subnet}.1, interface: {dev}, broadcast: 10.77.{subnet}.255 }}\n\
                 \x20       node2: {{ address: 10.77.{subnet}.2, interface: {dev}, broadcast: 10.77.{subnet}.255 }}\n"
            ));
        }
        let yaml = format!(
            "nodes:\n{nodes}resources: {{}}\ncluster:\n  keepalive: {KEEPALIVE_MS}ms\n  warntime: 300ms\n  \
             deadtime: {DEADTIME_MS}ms\n  initdead: 1200ms\n  authkeys-file: {}\n  links:\n{links}group:\n  resources: []\n",
            authkeys.display()
        );
        let config = dir.path().join("ha.yaml");
        std::fs::write(&config, yaml).expect("write ha.yaml");
        Setup { dir, config }
    }

    fn log_path(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", NODES[node]))
    }

    fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("create secret file");
    f.write_all(text.as_bytes()).expect("write secret file");
}

/// The daemons; killed (and reaped) on drop.
struct Daemons {
    children: Vec<Child>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Lab {
    // Field order = drop order: daemons first, then namespaces, then the files.
    daemons: Daemons,
    nets: Namespaces,
    setup: Setup,
}

impl Lab {
    fn start() -> Lab {
        let nets = Namespaces::new();
        let setup = Setup::new();
        let mut lab = Lab {
            daemons: Daemons { children: Vec::new() },
            nets,
            setup,
        };
        for (node, name) in NODES.iter().enumerate() {
            let log = std::fs::File::create(lab.setup.log_path(node)).expect("log file");
            let child = Command::new("ip")
                .args(["netns", "exec", &lab.nets.ns[node]])
                .arg(env!("CARGO_BIN_EXE_clusterd"))
                .arg("--config")
                .arg(&lab.setup.config)
                .args(["--node", name])
                .env("RUST_LOG", "info")
                .stdout(Stdio::from(log.try_clone().expect("dup log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn clusterd");
            lab.daemons.children.push(child);
        }
        lab
    }

    /// `haadm status --json` of `node`, run in its namespace; `None` while the daemon is not up.
    fn status(&self, node: usize) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.nets.ns[node]])
            .arg(env!("CARGO_BIN_EXE_haadm"))
            .arg("--config")
            .arg(&self.setup.config)
            .args(["--node", NODES[node], "status", "--json"])
            .output()
            .expect("run haadm");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn assert_running(&mut self) {
        for (node, child) in self.daemons.children.iter_mut().enumerate() {
            if let Ok(Some(exit)) = child.try_wait() {
                panic!(
                    "clusterd {} exited ({exit}); log:\n{}",
                    NODES[node],
                    self.setup.log(node)
                );
            }
        }
    }

    /// Polls both nodes' status until `pred(node, status)` holds for both, at most `limit`.
    /// Returns the time it took and the last statuses.
    fn wait_both(&mut self, what: &str, limit: Duration, pred: impl Fn(usize, &Value) -> bool) -> (Duration, [Value; 2]) {
        let start = Instant::now();
        let mut last = [Value::Null, Value::Null];
        while start.elapsed() < limit {
            self.assert_running();
            let mut all = true;
            for (node, slot) in last.iter_mut().enumerate() {
                *slot = self.status(node).unwrap_or(Value::Null);
                all &= pred(node, slot);
            }
            if all {
                return (start.elapsed(), last);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "timed out after {limit:?} waiting for: {what}\nnode1: {}\nnode2: {}\nnode1 log:\n{}\nnode2 log:\n{}",
            last[0],
            last[1],
            self.setup.log(0),
            self.setup.log(1)
        );
    }
}

fn link<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["cluster"]["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["name"] == name))
        .unwrap_or(&Value::Null)
}

fn link_up(status: &Value, name: &str) -> bool {
    link(status, name)["up"] == true
}

fn peer_online(status: &Value, node: usize) -> bool {
    let peer = NODES[1 - node];
    status["cluster"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == peer))
        .is_some_and(|n| n["online"] == true)
}

fn drops(status: &Value) -> Vec<(String, u64, String)> {
    status["cluster"]["links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    (
                        l["name"].as_str().unwrap_or_default().to_string(),
                        l["dropped"].as_u64().unwrap_or(u64::MAX),
                        l["dropped_detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What failover-related state a node shows (must not change while one link is still up).
fn group_view(status: &Value) -> (Value, Value, Value) {
    let c = &status["cluster"];
    (c["group_holder"].clone(), c["phase"].clone(), c["epoch"].clone())
}

#[test]
fn two_bcast_links_each_with_its_own_state_and_the_peer_dead_only_when_both_are_silent() {
    if !running_as_root() {
        eprintln!("skipping: network namespace tests need root");
        return;
    }
    if !ip_netns_usable() {
        eprintln!("skipping: `ip netns` is not available");
        return;
    }
    let mut lab = Lab::start();
    let (dev0, dev1) = (LINKS[0].0, LINKS[1].0);

    let all_up = |node: usize, s: &Value| {
        peer_online(s, node) && link_up(s, dev0) && link_up(s, dev1) && s["cluster"]["peer_generation"].as_u64().unwrap_or(0) > 0
    };
    let (took, statuses) = lab.wait_both("both links up and the peer alive on both nodes", Duration::from_secs(20), all_up);
    println!("both links up on both nodes after {took:?}");
    for (node, status) in statuses.iter().enumerate() {
        let own = statuses[1 - node]["cluster"]["generation"].as_u64();
        assert_eq!(
            status["cluster"]["peer_generation"].as_u64(),
            own,
            "{} must show {}'s generation",
            NODES[node],
            NODES[1 - node]
        );
        assert!(own.is_some_and(|g| g > 0));
    }

    // A couple of seconds of steady broadcasting: every packet we send comes back to us, and none
    // of that may show up as a drop.
    std::thread::sleep(Duration::from_secs(2));
    lab.assert_running();
    let steady: Vec<Value> = (0..2).map(|n| lab.status(n).expect("status")).collect();
    for (node, s) in steady.iter().enumerate() {
        let d = drops(s);
        println!("{} after 2 s: links {d:?}, packets_ok {:?}", NODES[node], [
            link(s, dev0)["packets_ok"].clone(),
            link(s, dev1)["packets_ok"].clone()
        ]);
        assert_eq!(d.len(), 2, "{s}");
        assert!(d.iter().all(|(_, n, _)| *n == 0), "{} drops counted: {d:?}", NODES[node]);
        for dev in [dev0, dev1] {
            // ~20 keepalives in 2 s; only the peer's count, never our echoes. Generous lower bound.
            let ok = link(s, dev)["packets_ok"].as_u64().unwrap_or(0);
            assert!(ok >= 8, "{} link {dev}: only {ok} packets in 2 s+", NODES[node]);
        }
        assert!(all_up(node, s), "{s}");
    }
    let groups_before: Vec<_> = steady.iter().map(group_view).collect();

    // One cable cut: that link goes down on both sides; the peer stays alive.
    lab.nets.set_link(0, dev0, false);
    let cut = Instant::now();
    let (took, _) = lab.wait_both("link hb0 down, hb1 up, peer alive", CHANGE_LIMIT, |node, s| {
        !link_up(s, dev0) && link_up(s, dev1) && peer_online(s, node)
    });
    println!("hb0 down seen on both nodes after {took:?} (deadtime {DEADTIME_MS} ms)");
    assert!(
        cut.elapsed() >= Duration::from_millis(DEADTIME_MS / 2),
        "a link must not go down long before deadtime"
    );
    // Stay like that for several deadtimes: still alive, the group did not move.
    std::thread::sleep(Duration::from_millis(3 * DEADTIME_MS));
    for (node, before) in groups_before.iter().enumerate() {
        let s = lab.status(node).expect("status");
        assert!(peer_online(&s, node) && link_up(&s, dev1) && !link_up(&s, dev0), "{s}");
        assert_eq!(&group_view(&s), before, "one link down must not change the group: {s}");
    }

    // Second cable cut: every link silent → the peer is dead after deadtime.
    lab.nets.set_link(0, dev1, false);
    let (took, _) = lab.wait_both("both links down and the peer dead", CHANGE_LIMIT, |node, s| {
        !link_up(s, dev0) && !link_up(s, dev1) && !peer_online(s, node)
    });
    println!("peer declared dead on both nodes {took:?} after the second link went down");

    // Cables back: links up, peer alive again, still with no drops.
    lab.nets.set_link(0, dev0, true);
    lab.nets.set_link(0, dev1, true);
    let (took, back) = lab.wait_both("both links up and the peer alive again", CHANGE_LIMIT, all_up);
    println!("alive again on both nodes after {took:?}");
    for (node, s) in back.iter().enumerate() {
        let d = drops(s);
        assert!(d.iter().all(|(_, n, _)| *n == 0), "{} drops after recovery: {d:?}", NODES[node]);
    }
}
