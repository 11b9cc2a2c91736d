//! ha.yaml for the external manager (`cluster.manager: pacemaker`) and for standard fence agents
//! (`cluster.guard.fence-agent`): what loads, and that each mistake is named with file and field.

use clusterd::config::{Manager, fence_agent_defaults};
use std::path::PathBuf;
use std::time::Duration;
#[path = "common/config_load.rs"]
mod config_load;
use config_load::{assert_error, load_text as load};

const RESOURCES: &str = r#"nodes:
  - name: node1
  - name: node2
resources:
  r0:
    device: ha0
    on:
      node1: { disk: /dev/vdc1, address: "10.0.0.1:7788" }
      node2: { disk: /dev/vdc1, address: "10.0.0.2:7788" }
"#;

const TARGET: &str = r#"targets:
  iqn.2026-01.com.example:t0:
    portals: ["10.1.0.100:3260"]
    luns:
      0: { resource: r0 }
"#;

const EMBEDDED: &str = r#"cluster:
  authkeys-file: authkeys
  links:
    - name: l0
      mode: ucast
      on: { node1: { address: 10.0.0.1 }, node2: { address: 10.0.0.2 } }
  GUARD
group:
  resources: [r0]
  vip: { address: 10.1.0.100/24, interface: eth0 }
"#;

fn pacemaker(extra_cluster: &str) -> String {
    format!("{RESOURCES}cluster:\n  manager: pacemaker\n{extra_cluster}{TARGET}")
}

fn embedded(guard: &str) -> String {
    format!("{RESOURCES}{}{TARGET}", EMBEDDED.replace("GUARD", guard))
}

#[test]
fn pacemaker_manager_needs_no_heartbeat_or_group() {
    let (_d, _p, r) = load(&pacemaker(""));
    let cfg = r.expect("pacemaker config loads");
    assert_eq!(cfg.manager, Manager::Pacemaker);
    assert!(cfg.cluster.is_none() && cfg.groups.is_empty());
    // Without a cluster section the embedded manager is the default.
    let (_d, _p, r) = load(&embedded(""));
    assert_eq!(r.expect("embedded loads").manager, Manager::Embedded);
}

#[test]
fn pacemaker_manager_refuses_embedded_settings_and_the_group() {
    assert_error(&pacemaker("  deadtime: 10s\n"), &["cluster.deadtime", "not used with `manager: pacemaker`"]);
    assert_error(&pacemaker("  links: [{ name: l0, mode: ucast, on: { node1: { address: 10.0.0.1 }, node2: { address: 10.0.0.2 } } }]\n"), &["cluster.links", "Corosync"]);
    assert_error(&pacemaker("  guard: { fence-command: /bin/true }\n"), &["cluster.guard", "STONITH"]);
    let with_group = format!("{}group:\n  resources: [r0]\n  vip: {{ address: 10.1.0.100/24, interface: eth0 }}\n", pacemaker(""));
    assert_error(&with_group, &["group", "IPaddr2", "portals"]);
    assert_error(&format!("{RESOURCES}cluster:\n  manager: heartbeat\n{TARGET}"), &["cluster.manager", "\"heartbeat\"", "embedded", "pacemaker"]);
}

#[test]
fn pacemaker_with_resource_and_stonith_needs_a_fence_peer_handler() {
    let fenced = pacemaker("").replace("    device: ha0\n", "    device: ha0\n    disk: { fencing: resource-and-stonith }\n");
    assert_error(&fenced, &["resources.r0.handlers.fence-peer", "required", "crm-fence-peer"]);
    let with_handler = fenced.replace(
        "    disk: { fencing: resource-and-stonith }\n",
        "    disk: { fencing: resource-and-stonith }\n    handlers: { fence-peer: /usr/lib/ocf/lib/ha-iscsi/crm-fence-peer }\n",
    );
    let (_d, _p, r) = load(&with_handler);
    let cfg = r.expect("loads with the handler");
    assert!(cfg.warnings().iter().all(|w| !w.contains("disk.fencing")), "{:?}", cfg.warnings());
}

#[test]
fn fence_agent_loads_with_defaults_and_per_node_parameters() {
    let guard = "guard:\n    fence-agent:\n      agent: fence_ipmilan\n      params: { username: admin, lanplus: \"1\" }\n      \
                 on: { node1: { ip: 10.0.3.1 }, node2: { ip: 10.0.3.2 } }\n      password-file: ipmi.secret\n";
    let (d, _p, r) = load(&embedded(guard));
    let cfg = r.expect("fence agent loads");
    let g = &cfg.cluster.as_ref().expect("cluster").guard;
    let a = g.fence_agent.as_ref().expect("agent");
    assert_eq!(a.agent, PathBuf::from("/usr/sbin/fence_ipmilan"));
    assert_eq!(a.password_file.as_deref(), Some(d.path().join("ipmi.secret").as_path()));
    assert_eq!((a.timeout, a.retries, a.confirm_timeout), (fence_agent_defaults::TIMEOUT, fence_agent_defaults::RETRIES, fence_agent_defaults::CONFIRM_TIMEOUT));
    let p = a.params_for("node2");
    assert_eq!((p["ip"].as_str(), p["username"].as_str(), p["lanplus"].as_str()), ("10.0.3.2", "admin", "1"));
    assert!(g.can_fence() && !g.is_empty());
    // A fence agent counts as a fence guard for resource-and-stonith.
    let fenced = embedded(guard).replace("    device: ha0\n", "    device: ha0\n    disk: { fencing: resource-and-stonith }\n");
    let (_d, _p, r) = load(&fenced);
    assert!(r.expect("loads").warnings().iter().all(|w| !w.contains("without")));
    let timed = guard.replace("password-file: ipmi.secret\n", "timeout: 5s\n      retries: 2\n      confirm-timeout: 10s\n");
    let (_d, _p, r) = load(&embedded(&timed));
    let cfg = r.expect("loads");
    let a = cfg.cluster.as_ref().and_then(|c| c.guard.fence_agent.as_ref()).expect("agent");
    assert_eq!((a.timeout, a.retries, a.confirm_timeout), (Duration::from_secs(5), 2, Duration::from_secs(10)));
}

#[test]
fn fence_agent_mistakes_are_named() {
    let agent = |body: &str| embedded(&format!("guard:\n    fence-agent: {{ {body} }}\n"));
    assert_error(&agent("agent: ipmitool"), &["cluster.guard.fence-agent.agent", "\"ipmitool\"", "fence_ipmilan"]);
    assert_error(&agent("agent: fence_ipmilan, params: { password: secret }"), &["cluster.guard.fence-agent.params.password", "password-file", "0600"]);
    assert_error(&agent("agent: fence_ipmilan, params: { action: reboot }"), &["cluster.guard.fence-agent.params.action", "set by clusterd"]);
    assert_error(&agent("agent: fence_ipmilan, params: { Bad-Key: x }"), &["cluster.guard.fence-agent.params.Bad-Key", "parameter name"]);
    assert_error(&agent("agent: fence_ipmilan, params: { ip: \"a\\nb\" }"), &["cluster.guard.fence-agent.params.ip", "line break"]);
    assert_error(&agent("agent: fence_ipmilan, on: { node3: { ip: 10.0.0.9 } }"), &["cluster.guard.fence-agent.on.node3", "not a node"]);
    assert_error(&agent("agent: fence_ipmilan, retries: 0"), &["cluster.guard.fence-agent.retries"]);
    let (_d, _p, r) = load(&agent("agent: fence_ipmilan, colour: red"));
    assert!(r.err().is_some_and(|e| e.to_string().contains("colour")), "an unknown key must be refused");
    let both = embedded("guard:\n    fence-command: /bin/true\n    fence-agent: { agent: fence_ipmilan }\n");
    assert_error(&both, &["cluster.guard.fence-agent", "not both"]);
}
