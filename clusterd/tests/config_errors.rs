//! One test per class of ha.yaml error: each checks that the message names the file, the field path
//! and the problem. Plus: the shipped example loads, and the secret-file rules.

use clusterd::config::{ConfigError, HaConfig, LinkMode, LunSource, read_secret_file};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
#[path = "common/config_load.rs"]
mod config_load;
use config_load::{assert_error, load_text};

/// A valid two-node, two-resource config; each test breaks one thing in it.
const BASE: &str = r#"nodes:
  - name: node1
  - name: node2
resources:
  r0:
    protocol: C
    device: ha0
    net:
      cram-hmac-alg: sha1
      shared-secret-file: r0.secret
      after-sb-0pri: disconnect
      after-sb-1pri: disconnect
      timeout: 6s
      ping-int: 10s
      connect-int: 2s
    syncer: { rate: 100M, al-extents: 257 }
    handlers:
      fence-peer: "/bin/true"
    on:
      node1:
        disk: /dev/vdc1
        address: "10.0.0.1:7788"
        meta-disk: "/dev/vdb1[0]"
      node2:
        disk: /dev/vdc1
        address: "10.0.0.2:7788"
        meta-disk: "/dev/vdb1[0]"
  r1:
    device: ha1
    on:
      node1: { disk: /dev/vdd1, address: "10.0.0.1:7789", meta-disk: "/dev/vdb1[1]" }
      node2: { disk: /dev/vdd1, address: "10.0.0.2:7789", meta-disk: "/dev/vdb1[1]" }
"#;

/// BASE with `from` replaced by `to` (exactly once, so a stale needle fails the test).
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "needle {from:?} must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

#[test]
fn base_config_is_valid() {
    let (_dir, _path, result) = load_text(BASE);
    let cfg = result.expect("BASE must load");
    assert_eq!(cfg.resources.len(), 2);
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.yaml");
    let err = HaConfig::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("missing.yaml") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[test]
fn empty_file() {
    assert_error("\n# nothing\n", &["the file is empty"]);
    assert_error("  \n", &["the file is empty"]);
    assert_error(
        "resources: {}\n",
        &["line 1 column 1: missing field `nodes`"],
    );
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let err = assert_error("nodes:\n  - name: node1\n   bad: [\n", &["line "]);
    assert!(
        matches!(err, ConfigError::Syntax { line: Some(_), .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_field_keeps_serde_position_and_path() {
    let text = base_with("address: \"10.0.0.1:7788\"", "adress: \"10.0.0.1:7788\"");
    let err = assert_error(
        &text,
        &[
            "line 22 column 9: ",
            "resources.r0.on.node1",
            "unknown field `adress`",
            "expected one of",
        ],
    );
    assert!(
        matches!(
            err,
            ConfigError::Syntax {
                line: Some(22),
                column: Some(9),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_top_level_section_is_refused() {
    assert_error(
        &format!("{BASE}clusters:\n  keepalive: 2s\n"),
        &["unknown field `clusters`", "line "],
    );
}

#[test]
fn missing_required_field() {
    let text = base_with("    device: ha1\n", "");
    assert_error(&text, &["resources.r1", "missing field `device`"]);
}

#[test]
fn address_not_host_port() {
    let text = base_with("address: \"10.0.0.1:7788\"", "address: \"10.0.0.1\"");
    assert_error(
        &text,
        &[
            "resources.r0.on.node1.address: \"10.0.0.1\" is not HOST:PORT (expected like 10.10.2.251:7789)",
        ],
    );
}

#[test]
fn unknown_policy_lists_choices() {
    let text = base_with(
        "after-sb-1pri: disconnect",
        "after-sb-1pri: discard-yonger-primary",
    );
    assert_error(
        &text,
        &[
            "resources.r0.net.after-sb-1pri: unknown policy \"discard-yonger-primary\"; expected one of: disconnect, \
             consensus, violently-as0p, discard-secondary, call-pri-lost-after-sb",
        ],
    );
}

#[test]
fn discard_node_must_name_a_node() {
    let text = base_with(
        "after-sb-0pri: disconnect",
        "after-sb-0pri: discard-node-node3",
    );
    assert_error(
        &text,
        &[
            "resources.r0.net.after-sb-0pri: ",
            "`node3` is not a node",
            "node1, node2",
        ],
    );
}

#[test]
fn number_out_of_range() {
    let text = base_with("al-extents: 257", "al-extents: 3");
    assert_error(
        &text,
        &["resources.r0.syncer.al-extents: 3 is out of range 7..=6433"],
    );
    let text = base_with("al-extents: 257", "al-extents: many");
    assert_error(
        &text,
        &["resources.r0.syncer.al-extents: \"many\" is not a whole number"],
    );
}

#[test]
fn protocol_b_is_refused_with_the_reason() {
    let text = base_with("protocol: C", "protocol: B");
    assert_error(
        &text,
        &[
            "resources.r0.protocol: protocol B is not supported",
            "use C (synchronous, for the HA pair) or A (asynchronous, for a DR peer)",
        ],
    );
}

/// Issue 18: the protocol-A fields name the file and the field; they are refused under protocol C.
#[test]
fn protocol_a_fields_are_checked() {
    let text = base_with("connect-int: 2s", "connect-int: 2s\n      max-lag: 64M");
    assert_error(
        &text,
        &["resources.r0.net.max-lag: only applies to protocol A (this resource uses protocol C)"],
    );
    let a = base_with("protocol: C", "protocol: A");
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      max-lag: 4K");
    assert_error(&text, &["resources.r0.net.max-lag: \"4K\" is below the smallest bound, 64K"]);
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      max-lag: unlimited");
    assert_error(&text, &["resources.r0.net.max-lag: \"unlimited\" is not a bound; write a size like 64M"]);
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      max-lag: lots");
    assert_error(&text, &["resources.r0.net.max-lag: \"lots\" is not a size"]);
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      on-lag: pull-ahead");
    assert_error(&text, &["resources.r0.net.on-lag: unknown on-lag policy \"pull-ahead\"; expected one of: wait, disconnect"]);
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      max-lag-time: soon");
    assert_error(&text, &["resources.r0.net.max-lag-time: \"soon\" is not a duration"]);
    let text = a.replace("connect-int: 2s", "connect-int: 2s\n      allow-async-failover: maybe");
    assert_error(&text, &["resources.r0.net.allow-async-failover: \"maybe\" is not a yes/no value"]);
}

#[test]
fn bad_duration() {
    let text = base_with("connect-int: 2s", "connect-int: 2 weeks");
    assert_error(
        &text,
        &["resources.r0.net.connect-int: \"2 weeks\" is not a duration"],
    );
}

#[test]
fn zero_duration_where_a_timer_needs_one() {
    let text = base_with("connect-int: 2s", "connect-int: 0");
    assert_error(
        &text,
        &["resources.r0.net.connect-int: 0 must be greater than zero"],
    );
}

#[test]
fn timeout_must_be_below_ping_int() {
    let text = base_with("timeout: 6s", "timeout: 10s");
    assert_error(
        &text,
        &["resources.r0.net.timeout: 10s must be less than ping-int (10s)"],
    );
}

#[test]
fn rate_without_unit() {
    let text = base_with("rate: 100M", "rate: 100");
    assert_error(&text, &["resources.r0.syncer.rate: 100 has no unit"]);
}

#[test]
fn resync_controller_keys_are_checked() {
    // issue 18 resync controller
    let text = base_with("rate: 100M", "rate: 100M, c-plan-ahead: 50ms");
    assert_error(&text, &["resources.r0.syncer.c-plan-ahead: \"50ms\" is outside 100ms..60s"]);
    let text = base_with("rate: 100M", "rate: 100M, c-plan-ahead: soon");
    assert_error(&text, &["resources.r0.syncer.c-plan-ahead:"]);
    let text = base_with("rate: 100M", "rate: 100M, c-fill-target: 4K");
    assert_error(&text, &["resources.r0.syncer.c-fill-target: \"4K\" is outside 64K..1G"]);
    let text = base_with("rate: 100M", "rate: 100M, c-fill-target: 0");
    assert_error(&text, &["resources.r0.syncer.c-fill-target: 0 is outside 64K..1G"]);
    let text = base_with("rate: 100M", "rate: 100M, c-max-rate: 100");
    assert_error(&text, &["resources.r0.syncer.c-max-rate: 100 has no unit"]);
}

#[test]
fn unknown_csums_alg_or_scope_lists_choices() {
    let text = base_with("rate: 100M", "rate: 100M, csums-alg: sha256");
    assert_error(
        &text,
        &["resources.r0.syncer.csums-alg: unknown algorithm \"sha256\"; expected one of: none, sha1, md5, crc32c"],
    );
    let text = base_with("rate: 100M", "rate: 100M, csums-for: bitmap");
    assert_error(&text, &["resources.r0.syncer.csums-for: unknown value \"bitmap\"; expected one of: full, all"]);
}

#[test]
fn auth_needs_both_alg_and_secret_file() {
    let text = base_with("      shared-secret-file: r0.secret\n", "");
    assert_error(
        &text,
        &["resources.r0.net: cram-hmac-alg is set but shared-secret-file is not"],
    );
    let text = base_with("      cram-hmac-alg: sha1\n", "");
    assert_error(
        &text,
        &["resources.r0.net: shared-secret-file is set but cram-hmac-alg is not"],
    );
    let text = base_with("cram-hmac-alg: sha1", "cram-hmac-alg: md5");
    assert_error(
        &text,
        &["resources.r0.net.cram-hmac-alg: unknown algorithm \"md5\"; expected one of: sha1"],
    );
}

#[test]
fn on_must_name_every_node() {
    let text = base_with(
        "      node2: { disk: /dev/vdd1, address: \"10.0.0.2:7789\", meta-disk: \"/dev/vdb1[1]\" }\n",
        "",
    );
    assert_error(&text, &["resources.r1.on: no entry for node `node2`"]);
}

#[test]
fn on_must_not_name_other_nodes() {
    let text = base_with(
        "      node2: { disk: /dev/vdd1",
        "      node3: { disk: /dev/vdd1",
    );
    assert_error(
        &text,
        &["resources.r1.on.node3: `node3` is not a node in `nodes` (node1, node2)"],
    );
}

#[test]
fn the_two_nodes_of_a_resource_need_different_addresses() {
    let text = base_with("address: \"10.0.0.2:7788\"", "address: \"10.0.0.1:7788\"");
    assert_error(
        &text,
        &["resources.r0.on.node2.address: 10.0.0.1:7788 is also the address of `node1`"],
    );
}

#[test]
fn two_resources_cannot_share_an_address_on_a_node() {
    let text = base_with("address: \"10.0.0.1:7789\"", "address: \"10.0.0.1:7788\"");
    assert_error(
        &text,
        &[
            "resources.r1.on.node1.address: 10.0.0.1:7788 is already used by resource `r0` on `node1`",
        ],
    );
}

#[test]
fn two_resources_cannot_share_a_disk_or_meta_slot() {
    let text = base_with("node1: { disk: /dev/vdd1", "node1: { disk: /dev/vdc1");
    assert_error(
        &text,
        &["resources.r1.on.node1.disk: /dev/vdc1 is already the disk of resource `r0`"],
    );
    let text = base_with(
        "address: \"10.0.0.1:7789\", meta-disk: \"/dev/vdb1[1]\"",
        "address: \"10.0.0.1:7789\", meta-disk: \"/dev/vdb1[0]\"",
    );
    assert_error(
        &text,
        &["resources.r1.on.node1.meta-disk: /dev/vdb1[0] overlaps the meta-disk of resource `r0`"],
    );
    let text = base_with(
        "address: \"10.0.0.1:7789\", meta-disk: \"/dev/vdb1[1]\"",
        "address: \"10.0.0.1:7789\", meta-disk: /dev/vdb1",
    );
    assert_error(
        &text,
        &["resources.r1.on.node1.meta-disk: /dev/vdb1 overlaps"],
    );
}

#[test]
fn bad_meta_disk() {
    let text = base_with(
        "meta-disk: \"/dev/vdb1[1]\" }\n      node2",
        "meta-disk: \"/dev/vdb1[x]\" }\n      node2",
    );
    assert_error(
        &text,
        &["resources.r1.on.node1.meta-disk: \"/dev/vdb1[x]\" is not a meta-disk"],
    );
}

#[test]
fn two_resources_cannot_export_one_device() {
    let text = base_with("device: ha1", "device: ha0");
    assert_error(
        &text,
        &["resources.r1.device: \"ha0\" is already the device of resource `r0`"],
    );
}

#[test]
fn resource_names_are_checked() {
    let text = base_with("  r1:\n", "  \"r 1\":\n");
    assert_error(&text, &["resources.r 1: ' ' is not allowed in a name"]);
    let text = base_with("  r1:\n", &format!("  {}:\n", "r".repeat(64)));
    assert_error(&text, &["is 64 bytes long; at most 63 allowed"]);
}

#[test]
fn duplicate_resource_is_refused() {
    let text = base_with("  r1:\n", "  r0:\n");
    assert_error(&text, &["resources: `r0` appears twice", "line "]);
}

#[test]
fn node_names_are_unique_and_valid() {
    let text = base_with("  - name: node2\n", "  - name: node1\n");
    assert_error(&text, &["nodes[1].name: `node1` is listed twice"]);
    let text = base_with("  - name: node2\n", "  - name: \"node/2\"\n");
    assert_error(
        &text,
        &["nodes[1].name: \"node/2\": '/' is not allowed in a name"],
    );
}

#[test]
fn node_count_is_one_or_two() {
    assert_error("nodes: []\n", &["nodes: no nodes"]);
    let text = base_with("  - name: node2\n", "  - name: node2\n  - name: node3\n");
    assert_error(
        &text,
        &["nodes: 3 nodes listed; a cluster has one (standalone) or two nodes"],
    );
}

#[test]
fn empty_handler_command() {
    let text = base_with("fence-peer: \"/bin/true\"", "fence-peer: \"  \"");
    assert_error(&text, &["resources.r0.handlers.fence-peer: empty command"]);
}

#[test]
fn handler_alias_and_canonical_name_together_is_a_duplicate() {
    let text = base_with(
        "      fence-peer: \"/bin/true\"\n",
        "      fence-peer: \"/bin/true\"\n      outdate-peer: x\n",
    );
    assert_error(
        &text,
        &["resources.r0.handlers", "duplicate field `fence-peer`"],
    );
}

/// BASE plus the cluster, group and targets sections; the section tests break one thing in it.
fn full() -> String {
    format!(
        "{BASE}{}",
        r#"cluster:
  keepalive: 1s
  deadtime: 10s
  authkeys-file: authkeys
  links:
    - name: l0
      mode: ucast
      on:
        node1: { address: 10.0.0.1 }
        node2: { address: 10.0.0.2 }
    - name: l1
      mode: bcast
      on:
        node1: { address: 10.1.0.1, interface: eth1, broadcast: 10.1.0.255 }
        node2: { address: 10.1.0.2, interface: eth1, broadcast: 10.1.0.255 }
group:
  resources: [r0, r1]
  vip: { address: 10.1.0.100/24, interface: eth1 }
targets:
  iqn.2026-01.com.example:t0:
    luns:
      0: { resource: r1 }
    networks: [192.168.0.0/16]
    incoming-user: { name: u, secret-file: in.secret }
    params: { MaxBurstLength: 262144, FirstBurstLength: 65536, HeaderDigest: "CRC32C,None" }
"#
    )
}

/// `full()` with `from` replaced by `to` (exactly once).
fn full_with(from: &str, to: &str) -> String {
    let text = full();
    assert_eq!(
        text.matches(from).count(),
        1,
        "needle {from:?} must occur once"
    );
    text.replacen(from, to, 1)
}

#[test]
fn heartbeat_timer_rules() {
    let text = full_with("deadtime: 10s", "deadtime: 2s");
    assert_error(
        &text,
        &["cluster.deadtime: 2s must be more than 2 × keepalive (1s)"],
    );
    let text = full_with("deadtime: 10s", "deadtime: 40s");
    assert_error(
        &text,
        &["cluster.initdead: 30s (the default) must be at least deadtime (40s)"],
    );
    let text = full_with("deadtime: 10s", "deadtime: 10s\n  warntime: 10s");
    assert_error(
        &text,
        &["cluster.warntime: 10s must be more than keepalive (1s) and less than deadtime (10s)"],
    );
    let text = full_with("deadtime: 10s", "deadtime: 10s\n  warntime: 1s");
    assert_error(&text, &["cluster.warntime: 1s must be more than keepalive"]);
    let text = full_with("keepalive: 1s", "keepalive: 0");
    assert_error(&text, &["cluster.keepalive: 0 must be greater than zero"]);
}

#[test]
fn cluster_needs_authkeys_links_and_valid_flags() {
    assert_error(
        &full_with("  authkeys-file: authkeys\n", ""),
        &["cluster.authkeys-file: required"],
    );
    let text = full();
    let (head, rest) = text.split_once("  links:\n").expect("links");
    let (_, tail) = rest.split_once("group:\n").expect("group");
    assert_error(
        &format!("{head}  links: []\ngroup:\n{tail}"),
        &["cluster.links: at least one heartbeat link is required"],
    );
    let text = full_with("deadtime: 10s", "deadtime: 10s\n  auto-failback: sometimes");
    assert_error(
        &text,
        &["cluster.auto-failback: \"sometimes\" is not a yes/no value"],
    );
    let text = full_with(
        "deadtime: 10s",
        "deadtime: 10s\n  escalation-command: \" \"",
    );
    assert_error(&text, &["cluster.escalation-command: empty value"]);
}

#[test]
fn link_names_are_unique() {
    let text = full_with("- name: l1", "- name: l0");
    assert_error(
        &text,
        &["cluster.links[1].name: `l0` is used by another link"],
    );
}

#[test]
fn link_on_names_exactly_the_nodes() {
    let text = full_with("        node2: { address: 10.0.0.2 }\n", "");
    assert_error(&text, &["cluster.links[0].on: no entry for node `node2`"]);
    let text = full_with(
        "node2: { address: 10.0.0.2 }",
        "node3: { address: 10.0.0.2 }",
    );
    assert_error(
        &text,
        &["cluster.links[0].on.node3: `node3` is not a node in `nodes` (node1, node2)"],
    );
    let text = full_with(
        "node2: { address: 10.0.0.2 }",
        "node2: { address: 10.0.0.1 }",
    );
    assert_error(
        &text,
        &["cluster.links[0].on.node2.address: 10.0.0.1 is also the address of `node1`"],
    );
    let text = full_with("node2: { address: 10.0.0.2 }", "node2: { address: node2 }");
    assert_error(
        &text,
        &["cluster.links[0].on.node2.address: \"node2\" is not an IP address"],
    );
}

#[test]
fn link_mode_and_broadcast() {
    let text = full_with(
        "node1: { address: 10.1.0.1, interface: eth1, broadcast: 10.1.0.255 }",
        "node1: { address: 10.1.0.1, interface: eth1 }",
    );
    assert_error(
        &text,
        &["cluster.links[1].on.node1.broadcast: required for a bcast link"],
    );
    let text = full_with(
        "node1: { address: 10.0.0.1 }",
        "node1: { address: 10.0.0.1, broadcast: 10.0.0.255 }",
    );
    assert_error(
        &text,
        &["cluster.links[0].on.node1.broadcast: only used by bcast links"],
    );
    let text = full_with("mode: ucast", "mode: mcast");
    assert_error(
        &text,
        &["cluster.links[0].mode: unknown mode \"mcast\"; expected one of: ucast, bcast"],
    );
}

#[test]
fn two_nodes_need_cluster_exactly_when_there_is_a_group() {
    let text = full();
    let (before, after) = text.split_once("cluster:\n").expect("cluster section");
    let (_, from_group) = after.split_once("group:\n").expect("group section");
    assert_error(
        &format!("{before}group:\n{from_group}"),
        &["cluster: required: with two nodes and a `group`"],
    );
    let (_, targets) = from_group
        .split_once("targets:\n")
        .expect("targets section");
    let no_group = format!(
        "{before}cluster:\n{}targets:\n{targets}",
        after.split_once("group:\n").unwrap().0
    );
    let no_group = no_group.replace(
        "\n    luns:",
        "\n    portals: [\"10.1.0.100:3260\"]\n    luns:",
    );
    assert_error(
        &no_group,
        &["group: required: with two nodes, a `cluster` section needs a `group`"],
    );
}

#[test]
fn group_resources_must_exist_once() {
    assert_error(
        &full_with("resources: [r0, r1]", "resources: [r0, r9]"),
        &["group.resources[1]: \"r9\" is not a resource in `resources` (r0, r1)"],
    );
    assert_error(
        &full_with("resources: [r0, r1]", "resources: [r0, r0]"),
        &["group.resources[1]: \"r0\" is listed twice"],
    );
    assert_error(
        &full_with(
            "resources: [r0, r1]",
            "resources: [r0, r1]\n  preferred: node7",
        ),
        &["group.preferred: \"node7\" is not a node"],
    );
}

#[test]
fn vip_needs_a_prefix_and_an_interface_on_every_node() {
    let text = full_with(
        "interface: eth1 }\ntargets",
        "on: { node1: eth1 } }\ntargets",
    );
    assert_error(&text, &["group.vip.on: no interface for node `node2`"]);
    let text = full_with("interface: eth1 }\ntargets", "}\ntargets");
    assert_error(&text, &["group.vip.interface: required"]);
    let text = full_with(
        "interface: eth1 }\ntargets",
        "interface: eth1, on: { node1: a, node2: b } }\ntargets",
    );
    assert_error(&text, &["group.vip: both `interface` and `on` are set"]);
    let text = full_with("address: 10.1.0.100/24", "address: 10.1.0.100");
    assert_error(
        &text,
        &["group.vip.address: \"10.1.0.100\" is not ADDRESS/PREFIX"],
    );
    let text = full_with("address: 10.1.0.100/24", "address: 10.1.0.100/33");
    assert_error(
        &text,
        &["group.vip.address: \"10.1.0.100/33\": the prefix length must be 0..=32"],
    );
    let text = full_with(
        "interface: eth1 }\ntargets",
        "interface: \"a/b\" }\ntargets",
    );
    assert_error(
        &text,
        &["group.vip.interface: \"a/b\" is not a network interface name"],
    );
}

#[test]
fn target_iqns_are_unique_and_well_formed() {
    let dup = full().replacen(
        "    params:",
        "  iqn.2026-01.com.example:t0:\n    portals: [\"10.1.0.100\"]\n    luns: { 0: { path: x.img } }\n    params:",
        1,
    );
    assert_error(
        &dup,
        &[
            "targets: `iqn.2026-01.com.example:t0` appears twice",
            "line ",
        ],
    );
    let iqn = "iqn.2026-01.com.example:t0:";
    assert_error(
        &full_with(iqn, "iqn.2026-01.com.Example:t0:"),
        &["targets.iqn.2026-01.com.Example:t0: ", "must be lowercase"],
    );
    assert_error(
        &full_with(iqn, "iqn.2026-13.com.example:t0:"),
        &["the date YYYY-MM"],
    );
    assert_error(
        &full_with(iqn, "storage.t0:"),
        &["targets.storage.t0: \"storage.t0\": not an iSCSI name"],
    );
    assert_error(
        &full_with(iqn, "eui.0123:"),
        &["`eui.` followed by 16 hex digits"],
    );
    let (_d, _p, ok) = load_text(&full_with(iqn, "naa.52004567BA64678D:"));
    assert!(ok.is_ok(), "naa. names are accepted: {:?}", ok.err());
}

#[test]
fn lun_source_rules() {
    assert_error(
        &full_with("0: { resource: r1 }", "0: { resource: r7 }"),
        &[
            "targets.iqn.2026-01.com.example:t0.luns.0.resource: \"r7\" is not a resource in `resources` (r0, r1)",
        ],
    );
    let text = full_with("0: { resource: r1 }", "0: { resource: r1 }").replacen(
        "resources: [r0, r1]",
        "resources: [r0]",
        1,
    );
    assert_error(
        &text,
        &["luns.0.resource: \"r1\" is not in group.resources"],
    );
    assert_error(
        &full_with("0: { resource: r1 }", "0: { resource: r1, path: x.img }"),
        &["luns.0: both `resource` and `path` are set"],
    );
    assert_error(
        &full_with("0: { resource: r1 }", "0: { serial: abc }"),
        &["luns.0: needs `resource: NAME`"],
    );
    assert_error(
        &full_with("0: { resource: r1 }", "256: { resource: r1 }"),
        &["luns.256: 256 is out of range 0..=255"],
    );
    assert_error(
        &full_with(
            "0: { resource: r1 }",
            "0: { resource: r1 }\n      1: { resource: r1 }",
        ),
        &["luns.1: resource `r1` is already served as LUN 0 of target"],
    );
    assert_error(
        &full_with(
            "0: { resource: r1 }",
            "0: { resource: r1, block-size: 1024 }",
        ),
        &["luns.0.block-size: 1024 is not supported; use 512 or 4096"],
    );
    assert_error(
        &full_with("    luns:\n      0: { resource: r1 }\n", "    luns: {}\n"),
        &["targets.iqn.2026-01.com.example:t0.luns: at least one LUN is required"],
    );
}

#[test]
fn portals_default_to_the_vip_or_are_required() {
    let text = full_with("  vip: { address: 10.1.0.100/24, interface: eth1 }\n", "");
    assert_error(
        &text,
        &[
            "targets.iqn.2026-01.com.example:t0.portals: required (there is no group.vip to default to)",
        ],
    );
    let text = full_with(
        "    luns:",
        "    portals: [\"10.1.0.100:3260\", 10.1.0.100]\n    luns:",
    );
    assert_error(&text, &["portals[1]: 10.1.0.100:3260 is listed twice"]);
}

#[test]
fn acl_and_chap_rules() {
    assert_error(
        &full_with("networks: [192.168.0.0/16]", "networks: [192.168.1.0/16]"),
        &["networks[0]: \"192.168.1.0/16\" has host bits set; did you mean 192.168.0.0/16?"],
    );
    assert_error(
        &full_with(
            "    networks:",
            "    initiators: [iqn.2026-01.com.example:C1]\n    networks:",
        ),
        &["initiators[0]: \"iqn.2026-01.com.example:C1\": must be lowercase"],
    );
    let text = full_with(
        "    incoming-user: { name: u, secret-file: in.secret }",
        "    outgoing-user: { name: u, secret-file: out.secret }",
    );
    assert_error(
        &text,
        &["outgoing-user: mutual CHAP needs incoming-user too"],
    );
    let text = full_with(
        "secret-file: in.secret }",
        "secret-file: in.secret }\n    outgoing-user: { name: t, secret-file: in.secret }",
    );
    assert_error(
        &text,
        &["outgoing-user.secret-file: must differ from incoming-user's"],
    );
}

#[test]
fn target_parameter_ranges() {
    let params = "params: { MaxBurstLength: 262144, FirstBurstLength: 65536, HeaderDigest: \"CRC32C,None\" }";
    let with = |p: &str| full_with(params, &format!("params: {{ {p} }}"));
    assert_error(
        &with("MaxRecvDataSegmentLength: 511"),
        &["params.MaxRecvDataSegmentLength: 511 is out of range 512..=16777215"],
    );
    assert_error(
        &with("MaxXmitDataSegmentLength: 16777216"),
        &["params.MaxXmitDataSegmentLength: 16777216 is out of range"],
    );
    assert_error(
        &with("MaxBurstLength: 65536, FirstBurstLength: 65537"),
        &["params.FirstBurstLength: 65537 must not exceed MaxBurstLength (65536)"],
    );
    assert_error(
        &with("MaxConnections: 2"),
        &["params.MaxConnections: 2 is not supported"],
    );
    assert_error(
        &with("ErrorRecoveryLevel: 1"),
        &["params.ErrorRecoveryLevel: 1 is not supported"],
    );
    assert_error(
        &with("DataDigest: \"CRC32C,MD5\""),
        &["params.DataDigest: unknown digest \"MD5\""],
    );
    assert_error(
        &with("InitialR2T: maybe"),
        &["params.InitialR2T: \"maybe\" is not a yes/no value"],
    );
    assert_error(&with("Wthreads: 8"), &["unknown field `Wthreads`"]);
}

#[test]
fn one_node_target_without_resources_is_valid() {
    let text = "nodes: [{ name: solo }]\ntargets:\n  iqn.2026-01.com.example:a:\n    portals: [127.0.0.1]\n    luns: { 0: { path: a.img } }\n  iqn.2026-01.com.example:b:\n    portals: [\"127.0.0.1:3261\"]\n    luns: { 3: { path: b.img } }\n";
    let (_d, _p, result) = load_text(text);
    let cfg = result.unwrap_or_else(|e| panic!("standalone target: {e}"));
    let names: Vec<_> = cfg.targets.iter().map(|t| t.iqn.as_str()).collect();
    assert_eq!(
        names,
        ["iqn.2026-01.com.example:a", "iqn.2026-01.com.example:b"],
        "file order"
    );
    assert_eq!(
        cfg.targets[0].portals,
        ["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]
    );
    let text = text.replace("b.img", "a.img");
    assert_error(
        &text,
        &[
            "targets.iqn.2026-01.com.example:b.luns.3: ",
            "a.img is already served as LUN 0 of target iqn.2026-01.com.example:a",
        ],
    );
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ha.yaml.example")
}

#[test]
fn shipped_example_loads() {
    let cfg = HaConfig::load(&example_path())
        .unwrap_or_else(|e| panic!("ha.yaml.example must load: {e}"));
    assert_eq!(
        cfg.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["node1", "node2"]
    );
    assert_eq!(
        cfg.resources.keys().map(String::as_str).collect::<Vec<_>>(),
        ["iscsi.config", "iscsi.target.0"]
    );
    let target = &cfg.resources["iscsi.target.0"];
    assert_eq!(
        target.on("node2").unwrap().address.to_string(),
        "10.10.2.252:7789"
    );
    assert_eq!(
        target.on("node1").unwrap().meta_disk.to_string(),
        "/dev/vdb1[1]"
    );
    assert_eq!(
        cfg.resources["iscsi.config"]
            .on("node1")
            .unwrap()
            .address
            .port(),
        7788
    );
    assert!(
        target.handlers.contains_key("fence-peer"),
        "outdate-peer is an alias of fence-peer"
    );
    assert_eq!(
        target.secret_file(),
        Some(Path::new("/etc/ha/iscsi.target.0.secret"))
    );
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    let cluster = cfg.cluster.as_ref().expect("cluster section");
    assert_eq!(cluster.keepalive, Duration::from_secs(2));
    assert_eq!(cluster.deadtime, Duration::from_secs(30));
    assert_eq!(cluster.warntime, Duration::from_secs(10));
    assert_eq!(cluster.initdead, Duration::from_secs(120));
    assert!(!cluster.auto_failback);
    assert_eq!(cluster.authkeys_file, Path::new("/etc/ha/authkeys"));
    let links: Vec<_> = cluster
        .links
        .iter()
        .map(|l| (l.name.as_str(), l.mode))
        .collect();
    assert_eq!(
        links,
        [
            ("public", LinkMode::Broadcast),
            ("replication", LinkMode::Unicast)
        ]
    );
    let public = &cluster.links[0].on["node1"];
    assert_eq!(public.interface.as_deref(), Some("bond0"));
    assert_eq!(public.broadcast, Some("10.10.1.255".parse().unwrap()));
    assert_eq!(
        cluster.links[1].on["node2"].address,
        "10.10.2.252".parse::<IpAddr>().unwrap()
    );
    let group = cfg.groups.first().expect("group section");
    assert_eq!(group.resources, ["iscsi.config", "iscsi.target.0"]);
    let vip = group.vip.as_ref().expect("vip");
    assert_eq!(
        (vip.address.to_string(), vip.prefix_len),
        ("10.10.1.250".to_string(), 24)
    );
    assert_eq!(vip.interfaces["node2"], "bond0");
    assert_eq!(cfg.targets.len(), 1);
    let t = &cfg.targets[0];
    assert_eq!(t.iqn, "iqn.2008-04.local.home:storage.disk.0");
    assert_eq!(
        t.portals,
        ["10.10.1.250:3260".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        t.luns[&0].source,
        LunSource::Resource("iscsi.target.0".into())
    );
    assert_eq!(t.networks, [("192.168.0.0".parse::<IpAddr>().unwrap(), 16)]);
    assert_eq!(
        t.incoming_user.as_ref().map(|u| u.name.as_str()),
        Some("geekshlby")
    );
    assert_eq!(
        t.outgoing_user.as_ref().map(|u| u.secret_file.as_path()),
        Some(Path::new("/etc/ha/chap-outgoing.secret"))
    );
    assert_eq!(t.params.initial_r2t, Some(true));
    assert_eq!(t.params.immediate_data, Some(false));
    assert_eq!(t.params.max_recv_data_segment_length, Some(8192));
    assert_eq!(
        t.params.header_digest.as_deref(),
        Some(&["CRC32C".to_string(), "None".to_string()][..])
    );
}

#[test]
fn standalone_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/standalone.yaml");
    let cfg = HaConfig::load(&path).unwrap_or_else(|e| panic!("standalone.yaml must load: {e}"));
    assert_eq!(cfg.nodes.len(), 1);
    assert_eq!(cfg.nodes[0].name, "standalone");
    assert_eq!(
        cfg.nodes[0].control_socket,
        Path::new("/tmp/clusterd-standalone.sock")
    );
    assert_eq!(
        cfg.nodes[0].state_dir,
        Path::new("/tmp/clusterd-standalone")
    );
    assert!(cfg.resources.is_empty() && cfg.cluster.is_none() && cfg.groups.is_empty());
    assert_eq!(
        cfg.local_node(None)
            .expect("no error")
            .map(|n| n.name.as_str()),
        Some("standalone")
    );
    let t = &cfg.targets[0];
    assert_eq!(t.iqn, "iqn.2026-11.org.example:standalone");
    assert_eq!(t.portals, ["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]);
    assert!(t.incoming_user.is_none() && t.outgoing_user.is_none());
    let dir = path.parent().expect("a directory");
    assert_eq!(
        t.luns[&0].source,
        LunSource::Path(dir.join("standalone.img"))
    );
    assert_eq!(t.luns[&0].block_size, 512);
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

fn write_secret(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join("r0.secret");
    std::fs::write(&path, content).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn secret_file_with_mode_0644_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_secret(dir.path(), b"password\n", 0o644);
    let msg = read_secret_file(&path).unwrap_err().to_string();
    let shown = path.display();
    assert_eq!(
        msg,
        format!("{shown} has mode 0644; it must be 0600 (chmod 600 {shown})")
    );
    assert!(!msg.contains("password"));
}

#[test]
fn secret_file_with_mode_0600_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_secret(dir.path(), b"password\n", 0o600);
    assert_eq!(read_secret_file(&path).expect("0600 is fine"), b"password");
}

#[test]
fn secret_of_65_bytes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_secret(dir.path(), &[b's'; 65], 0o600);
    let err = read_secret_file(&path).unwrap_err();
    assert!(
        matches!(err, ConfigError::SecretTooLong { len: 65, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("65 bytes") && msg.contains("at most 64"),
        "{msg}"
    );
    assert!(
        !msg.contains("sssss"),
        "the secret must not be in the message"
    );
}

#[test]
fn missing_secret_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_secret_file(&dir.path().join("r0.secret")).unwrap_err();
    assert!(
        err.to_string().contains("r0.secret") && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[test]
fn debug_output_never_contains_the_secret() {
    let secret = "correct-horse-battery-staple";
    let (dir, _path, result) = load_text(BASE);
    write_secret(dir.path(), secret.as_bytes(), 0o600);
    let cfg = result.expect("BASE must load");
    let secret_path = cfg.resources["r0"]
        .secret_file()
        .expect("auth is on")
        .to_path_buf();
    assert_eq!(
        read_secret_file(&secret_path).expect("readable"),
        secret.as_bytes()
    );
    let debug = format!("{cfg:?}");
    assert!(debug.contains("r0.secret"), "the path is shown");
    assert!(!debug.contains(secret), "the secret is not");
}
