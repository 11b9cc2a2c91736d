//! The `metrics:` section of ha.yaml: per-node listen addresses, and every error naming the file and
//! the field.

use clusterd::config::HaConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
#[path = "common/config_load.rs"]
mod config_load;

const BASE: &str = r#"nodes:
  - name: node1
  - name: node2
resources:
  r0:
    device: ha0
    on:
      node1: { disk: /dev/vdc1, address: "10.0.0.1:7788", meta-disk: /dev/vdb1 }
      node2: { disk: /dev/vdc1, address: "10.0.0.2:7788", meta-disk: /dev/vdb1 }
targets:
  iqn.2026-11.org.example:t:
    portals: ["10.0.1.100:3260"]
    luns:
      0: { path: /dev/vdd1 }
"#;

fn load(metrics: &str) -> (tempfile::TempDir, PathBuf, Result<HaConfig, clusterd::config::ConfigError>) {
    config_load::load_text(&format!("{BASE}{metrics}"))
}

fn error(metrics: &str, parts: &[&str]) {
    config_load::assert_error(&format!("{BASE}{metrics}"), parts);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn off_unless_set() {
    let (_d, _p, r) = load("");
    let cfg = r.expect("loads");
    assert_eq!(cfg.metrics.listen_for("node1"), None);
    assert_eq!(cfg.metrics.listen_for("node2"), None);
}

#[test]
fn listen_for_every_node_and_per_node_overrides() {
    let (_d, _p, r) = load("metrics:\n  listen: 127.0.0.1:9942\n  on:\n    node2: 10.0.1.2:9100\n");
    let cfg = r.expect("loads");
    assert_eq!(cfg.metrics.listen_for("node1"), Some(addr("127.0.0.1:9942")));
    assert_eq!(cfg.metrics.listen_for("node2"), Some(addr("10.0.1.2:9100")));
    // Only `on`: a node left out serves nothing.
    let (_d, _p, r) = load("metrics:\n  on: { node1: \"[::1]:9942\" }\n");
    let cfg = r.expect("loads");
    assert_eq!(cfg.metrics.listen_for("node1"), Some(addr("[::1]:9942")));
    assert_eq!(cfg.metrics.listen_for("node2"), None);
}

#[test]
fn errors_name_the_field() {
    error("metrics: {}\n", &["metrics: set `listen`"]);
    error("metrics:\n  listen: localhost:9942\n", &["metrics.listen:", "localhost:9942", "IP:PORT"]);
    error("metrics:\n  listen: 127.0.0.1:0\n", &["metrics.listen:"]);
    error("metrics:\n  listen: 127.0.0.1\n", &["metrics.listen:"]);
    error("metrics:\n  on: { node3: 127.0.0.1:9942 }\n", &["metrics.on.node3:", "not a node", "node1, node2"]);
    error("metrics:\n  on: { node1: nowhere }\n", &["metrics.on.node1:"]);
    error("metrics:\n  listen: 127.0.0.1:9942\n  port: 9942\n", &["unknown field `port`"]);
    // Collisions with the node's replication address and with a portal, wildcards included.
    error("metrics:\n  listen: 0.0.0.0:7788\n", &["metrics.listen:", "collides with resources.r0.on.node1.address 10.0.0.1:7788"]);
    error("metrics:\n  on: { node2: 10.0.0.2:7788 }\n", &["metrics.on.node2:", "resources.r0.on.node2.address"]);
    error("metrics:\n  listen: 10.0.1.100:3260\n", &["metrics.listen:", "portal 10.0.1.100:3260 of target iqn.2026-11.org.example:t"]);
    // The same port on other addresses is fine.
    let (_d, _p, r) = load("metrics:\n  listen: 10.0.0.9:7788\n");
    r.expect("a different address on the replication port is no collision");
}

#[test]
fn the_example_and_the_lab_set_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = HaConfig::load(&root.join("ha.yaml.example")).expect("ha.yaml.example loads");
    assert_eq!(cfg.metrics.listen_for("node1"), Some(addr("10.10.1.251:9942")));
    assert_eq!(cfg.metrics.listen_for("node2"), Some(addr("10.10.1.252:9942")));
    let lab = std::fs::read_to_string(root.join("deploy/lab")).expect("deploy/lab");
    assert!(lab.contains("metrics:\n  on: { node1: \"10.77.1.1:9942\", node2: \"10.77.1.2:9942\" }"), "deploy/lab must set metrics");
}
