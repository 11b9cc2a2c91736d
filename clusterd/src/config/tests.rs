//! Unit tests of loading: typed values, defaults, path resolution and lookups. The error messages
//! themselves are tested in `clusterd/tests/config_errors.rs`.

use super::*;
use std::net::SocketAddr;

const TWO_NODES: &str = r#"
nodes:
  - name: node1
  - name: node2
    control-socket: run/node2.sock
    state-dir: /srv/state
resources:
  r0:
    device: ha0
    net:
      cram-hmac-alg: sha1
      shared-secret-file: r0.secret
      after-sb-0pri: discard-node-node2
      after-sb-1pri: call-pri-lost-after-sb
      after-sb-2pri: violently-as0p
      rr-conflict: call-pri-lost
      timeout: 3
      ping-int: 1m
      ping-timeout: 250ms
      connect-int: 5s
      max-buffers: 8000
    disk: { on-io-error: pass_on, fencing: resource-and-stonith }
    startup: { wfc-timeout: 30s, degr-wfc-timeout: 0, outdated-wfc-timeout: 2m }
    syncer: { rate: 0, verify-alg: crc32c, csums-alg: md5, csums-for: all, al-extents: 7, c-min-rate: 4M }
    handlers:
      outdate-peer: "fence it"
      split-brain: "mail root"
    on:
      node1: { disk: data1.img, address: "127.0.0.1:7000", meta-disk: internal }
      node2: { disk: /dev/vdd1, address: "[::1]:7000", meta-disk: "meta.img[3]" }
"#;

fn load(text: &str) -> HaConfig {
    match HaConfig::from_str(text, Path::new("/etc/ha/ha.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("config should load: {e}"),
    }
}

#[test]
fn every_field_is_typed() {
    let cfg = load(TWO_NODES);
    let r = &cfg.resources["r0"];
    assert_eq!(r.name, "r0");
    assert_eq!(r.protocol, Protocol::C);
    assert_eq!(r.device, "ha0");
    assert_eq!(
        r.net.after_sb_0pri,
        AfterSb0Pri::DiscardNode("node2".into())
    );
    assert_eq!(r.net.after_sb_1pri, AfterSb1Pri::CallPriLostAfterSb);
    assert_eq!(r.net.after_sb_2pri, AfterSb2Pri::ViolentlyAs0p);
    assert_eq!(r.net.rr_conflict, RrConflict::CallPriLost);
    assert_eq!(r.net.timeout, Duration::from_secs(3));
    assert_eq!(r.net.ping_int, Duration::from_secs(60));
    assert_eq!(r.net.ping_timeout, Duration::from_millis(250));
    assert_eq!(r.net.connect_int, Duration::from_secs(5));
    assert_eq!(r.net.max_buffers, 8000);
    assert_eq!(
        r.disk,
        DiskConfig {
            on_io_error: OnIoError::PassOn,
            fencing: Fencing::ResourceAndStonith,
            direct_io: false
        }
    );
    assert_eq!(
        r.startup,
        StartupConfig {
            wfc_timeout: Duration::from_secs(30),
            degr_wfc_timeout: Duration::ZERO,
            outdated_wfc_timeout: Duration::from_secs(120),
        }
    );
    assert_eq!(
        r.syncer,
        SyncerConfig {
            rate: Rate::UNLIMITED,
            verify_alg: VerifyAlg::Crc32c,
            csums_alg: CsumsAlg::Md5,
            csums_for: CsumsFor::All,
            al_extents: 7,
            c_min_rate: Rate(Some(4 << 20)),
            c_plan_ahead: Duration::from_secs(2),
            c_fill_target: 16 << 20,
            c_max_rate: Rate::UNLIMITED,
            verify_repair: false,
            verify_interval: None,
            verify_rate: None,
        }
    );
    assert_eq!(
        r.handlers.get("fence-peer").map(String::as_str),
        Some("fence it")
    );
    assert_eq!(
        r.handlers.get("split-brain").map(String::as_str),
        Some("mail root")
    );
    assert_eq!(r.handlers.len(), 2);
    let n2 = r.on("node2").unwrap();
    assert_eq!(n2.address, "[::1]:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(
        n2.meta_disk,
        MetaDisk::External {
            path: PathBuf::from("/etc/ha/meta.img"),
            index: Some(3)
        }
    );
    assert_eq!(r.on("node1").unwrap().meta_disk, MetaDisk::Internal);
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let cfg = load(TWO_NODES);
    let r = &cfg.resources["r0"];
    assert_eq!(
        r.on("node1").unwrap().disk,
        PathBuf::from("/etc/ha/data1.img")
    );
    assert_eq!(r.on("node2").unwrap().disk, PathBuf::from("/dev/vdd1"));
    assert_eq!(r.secret_file(), Some(Path::new("/etc/ha/r0.secret")));
    assert_eq!(
        cfg.nodes[1].control_socket,
        PathBuf::from("/etc/ha/run/node2.sock")
    );
    assert_eq!(cfg.nodes[1].state_dir, PathBuf::from("/srv/state"));
}

#[test]
fn omitted_fields_take_the_documented_defaults() {
    let cfg = load(
        r#"
nodes: [{ name: solo }]
resources:
  r0:
    device: ha0
    on: { solo: { disk: /dev/vdd1, address: "10.0.0.1:7789" } }
"#,
    );
    assert_eq!(
        cfg.nodes[0].control_socket,
        PathBuf::from(DEFAULT_CONTROL_SOCKET)
    );
    assert_eq!(cfg.nodes[0].state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    let r = &cfg.resources["r0"];
    assert_eq!(r.net.auth, None);
    assert_eq!(r.secret_file(), None);
    assert_eq!(r.net.after_sb_0pri, AfterSb0Pri::Disconnect);
    assert_eq!(r.net.after_sb_1pri, AfterSb1Pri::Disconnect);
    assert_eq!(r.net.after_sb_2pri, AfterSb2Pri::Disconnect);
    assert_eq!(r.net.rr_conflict, RrConflict::Disconnect);
    assert_eq!(r.net.timeout, defaults::TIMEOUT);
    assert_eq!(r.net.ping_int, defaults::PING_INT);
    assert_eq!(r.net.ping_timeout, defaults::PING_TIMEOUT);
    assert_eq!(r.net.connect_int, defaults::CONNECT_INT);
    assert_eq!(r.net.max_buffers, defaults::MAX_BUFFERS);
    assert_eq!(r.startup.degr_wfc_timeout, Duration::from_secs(120));
    assert_eq!(r.startup.wfc_timeout, Duration::ZERO);
    assert_eq!(
        r.disk,
        DiskConfig {
            on_io_error: OnIoError::PassOn,
            fencing: Fencing::DontCare,
            direct_io: false
        }
    );
    assert_eq!(r.syncer.rate, defaults::RATE);
    assert_eq!(r.syncer.verify_alg, VerifyAlg::Sha1);
    assert_eq!((r.syncer.csums_alg, r.syncer.csums_for), (CsumsAlg::Sha1, CsumsFor::Full));
    assert_eq!(r.syncer.al_extents, defaults::AL_EXTENTS);
    assert_eq!(r.syncer.c_min_rate, Rate(Some(250 * 1024)));
    assert_eq!((r.syncer.c_plan_ahead, r.syncer.c_fill_target, r.syncer.c_max_rate), (Duration::from_secs(2), 16 << 20, Rate::UNLIMITED));
    assert!(r.handlers.is_empty());
    assert_eq!(r.on("solo").unwrap().meta_disk, MetaDisk::Internal);
}

#[test]
fn standalone_node_has_no_peer() {
    let cfg = load(
        r#"
nodes: [{ name: solo }]
resources:
  r0: { device: ha0, on: { solo: { disk: d, address: "10.0.0.1:7789" } } }
"#,
    );
    assert!(cfg.peer_of("solo").is_none());
    assert!(
        cfg.warnings().is_empty(),
        "no peer, so no authentication warning"
    );
}

#[test]
fn node_lookup_and_peer() {
    let cfg = load(TWO_NODES);
    assert_eq!(cfg.node("node2").unwrap().name, "node2");
    assert_eq!(cfg.peer_of("node1").map(|n| n.name.as_str()), Some("node2"));
    assert_eq!(cfg.peer_of("node2").map(|n| n.name.as_str()), Some("node1"));
    assert!(cfg.peer_of("node3").is_none());
    let err = cfg.node("node3").unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `node3` is not in /etc/ha/ha.yaml (nodes: node1, node2)"
    );
    let err = cfg.resources["r0"].on("node3").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/ha/ha.yaml: resources.r0.on: no entry for node `node3` (entries: node1, node2)"
    );
}

#[test]
fn resources_without_authentication_are_warned_about() {
    let cfg = load(
        r#"
nodes: [{ name: a }, { name: b }]
resources:
  r0:
    device: ha0
    on:
      a: { disk: d, address: "10.0.0.1:7789" }
      b: { disk: d, address: "10.0.0.2:7789" }
"#,
    );
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("resources.r0.net") && warnings[0].contains("not authenticated"),
        "{warnings:?}"
    );
    // TWO_NODES asks for `fencing: resource-and-stonith`, which is accepted but warned about.
    let w = load(TWO_NODES).warnings();
    assert!(w.len() == 1 && w[0].contains("disk.fencing") && w[0].contains("outside the failover group"), "{w:?}");
}

#[test]
fn on_io_error_detach_is_accepted_and_pass_on_is_the_default() {
    let cfg = load(
        r#"
nodes: [{ name: solo }]
resources:
  r0: { device: ha0, disk: { on-io-error: detach }, on: { solo: { disk: d, address: "10.0.0.1:7789" } } }
  r1: { device: ha1, on: { solo: { disk: e, address: "10.0.0.1:7790" } } }
"#,
    );
    assert_eq!(cfg.resources["r0"].disk.on_io_error, OnIoError::Detach);
    assert_eq!(cfg.resources["r1"].disk.on_io_error, OnIoError::PassOn);
    let warnings = cfg.warnings();
    assert!(!warnings.iter().any(|w| w.contains("on-io-error")), "{warnings:?}");
}

#[test]
fn syntax_errors_move_the_position_to_the_front() {
    let err =
        HaConfig::from_str("nodes: [{ name: a, nmae: b }]\n", Path::new("x.yaml")).unwrap_err();
    let ConfigError::Syntax {
        line,
        column,
        ref message,
        ..
    } = err
    else {
        panic!("expected Syntax, got {err:?}")
    };
    assert_eq!(line, Some(1));
    assert!(column.is_some());
    assert!(message.contains("unknown field `nmae`"), "{message}");
    assert!(
        !message.contains(" at line "),
        "position must not be repeated: {message}"
    );
}

#[test]
fn names_allow_only_the_safe_set() {
    assert!(check_name("iscsi.target.0", 63).is_ok());
    assert!(check_name("r_0-a", 63).is_ok());
    for bad in ["", "r 0", "r/0", "-r", ".r", "r0;rm", "é"] {
        assert!(check_name(bad, 63).is_err(), "{bad:?}");
    }
    assert!(check_name(&"r".repeat(63), 63).is_ok());
    assert!(check_name(&"r".repeat(64), 63).is_err());
}

#[test]
fn durations_print_like_the_config() {
    assert_eq!(format_duration(Duration::from_secs(6)), "6s");
    assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn direct_io_is_off_by_default_and_a_bad_value_names_the_field() {
    let text = |v: &str| {
        format!(
            "nodes: [{{ name: solo }}]\nresources:\n  r0: {{ device: ha0, disk: {{ direct-io: {v} }}, on: {{ solo: {{ disk: d, address: \"10.0.0.1:7789\" }} }} }}\n  r1: {{ device: ha1, on: {{ solo: {{ disk: e, address: \"10.0.0.1:7790\" }} }} }}\n"
        )
    };
    let cfg = load(&text("yes"));
    assert!(cfg.resources["r0"].disk.direct_io);
    assert!(!cfg.resources["r1"].disk.direct_io);
    let e = HaConfig::from_str(&text("sometimes"), Path::new("/etc/ha/ha.yaml")).unwrap_err().to_string();
    assert!(e.contains("/etc/ha/ha.yaml") && e.contains("resources.r0.disk.direct-io") && e.contains("sometimes"), "{e}");
}

/// issue 18 verify: `verify-repair`, `verify-interval` and `verify-rate`, their defaults (off, off,
/// the resync rate) and errors that name the field and the file.
#[test]
fn verify_schedule_settings_default_off_and_bad_values_name_field_and_file() {
    let text = |syncer: &str| {
        format!(
            "nodes: [{{ name: solo }}]\nresources:\n  r0: {{ device: ha0, syncer: {{ {syncer} }}, on: {{ solo: {{ disk: d, address: \"10.0.0.1:7789\" }} }} }}\n"
        )
    };
    let cfg = load(&text("rate: 40M"));
    let s = &cfg.resources["r0"].syncer;
    assert!(!s.verify_repair);
    assert_eq!(s.verify_interval, None);
    assert_eq!(s.verify_rate, None);
    assert_eq!(s.effective_verify_rate(), Rate(Some(40 << 20)), "verify-rate follows rate by default");
    let cfg = load(&text("verify-repair: on, verify-interval: 7d, verify-rate: 10M"));
    let s = &cfg.resources["r0"].syncer;
    assert!(s.verify_repair);
    assert_eq!(s.verify_interval, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(s.verify_rate, Some(Rate(Some(10 << 20))));
    let s = &load(&text("rate: 40M, verify-rate: same-as-rate")).resources["r0"].syncer;
    assert_eq!((s.verify_rate, s.effective_verify_rate()), (None, Rate(Some(40 << 20))));
    assert_eq!(load(&text("verify-interval: \"off\"")).resources["r0"].syncer.verify_interval, None);
    for (bad, field, why) in [
        ("verify-repair: maybe", "syncer.verify-repair", "yes/no"),
        ("verify-interval: 7w", "syncer.verify-interval", "7w"),
        ("verify-interval: 500ms", "syncer.verify-interval", "shorter than 1s"),
        ("verify-rate: 10", "syncer.verify-rate", "10"),
    ] {
        let e = HaConfig::from_str(&text(bad), Path::new("/etc/ha/ha.yaml")).unwrap_err().to_string();
        assert!(e.contains("/etc/ha/ha.yaml") && e.contains(field) && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn resync_controller_keys_are_typed() {
    // issue 18 resync controller
    let text = TWO_NODES.replace("c-min-rate: 4M }", "c-min-rate: 4M, c-plan-ahead: 500ms, c-fill-target: 2M, c-max-rate: 300M }");
    let r = load(&text).resources["r0"].clone();
    assert_eq!((r.syncer.c_plan_ahead, r.syncer.c_fill_target, r.syncer.c_max_rate), (Duration::from_millis(500), 2 << 20, Rate(Some(300 << 20))));
    for off in ["0", "off"] {
        let text = TWO_NODES.replace("c-min-rate: 4M }", &format!("c-min-rate: 4M, c-plan-ahead: {off} }}"));
        assert_eq!(load(&text).resources["r0"].syncer.c_plan_ahead, Duration::ZERO);
    }
}
