//! One test per class of ha.yaml error: each checks that the message names the file, the field path
//! and the problem. Plus: the shipped example loads, and the secret-file rules.

use clusterd::config::{ConfigError, HaConfig, read_secret_file};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Writes `text` to a fresh `ha.yaml` and loads it; the temp dir lives as long as the result.
fn load_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<HaConfig, ConfigError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ha.yaml");
    std::fs::write(&path, text).expect("write config");
    let result = HaConfig::load(&path);
    (dir, path, result)
}

/// BASE with `from` replaced by `to` (exactly once, so a stale needle fails the test).
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "needle {from:?} must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

/// Loads `text`, expects an error, and checks it names the file and contains every `parts`.
fn assert_error(text: &str, parts: &[&str]) -> ConfigError {
    let (_dir, path, result) = load_text(text);
    let err = match result {
        Ok(_) => panic!("expected an error containing {parts:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: ", path.display())),
        "file name missing: {msg}"
    );
    for part in parts {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    err
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
fn later_top_level_sections_are_not_accepted_yet() {
    assert_error(
        &format!("{BASE}cluster:\n  keepalive: 2s\n"),
        &["unknown field `cluster`", "line "],
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
fn protocol_a_is_refused_with_the_reason() {
    let text = base_with("protocol: C", "protocol: A");
    assert_error(
        &text,
        &[
            "resources.r0.protocol: protocol A is not supported",
            "writes must be on both disks",
        ],
    );
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
    assert!(cfg.warnings().is_empty());
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
