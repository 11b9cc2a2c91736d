//! Unit tests of the `cluster`, `group`, `iscsi` and `targets` sections: typed values, defaults,
//! warnings and the name/network parsers. Their error messages are tested in
//! `clusterd/tests/config_errors.rs`.

use super::fields::{network_of, parse_cidr};
use super::*;
use std::net::{IpAddr, SocketAddr};

const FULL: &str = r#"
nodes: [{ name: node1 }, { name: node2 }]
resources:
  r0:
    device: ha0
    net: { cram-hmac-alg: sha1, shared-secret-file: r0.secret }
    on:
      node1: { disk: /dev/vdc1, address: "10.0.0.1:7788" }
      node2: { disk: /dev/vdc1, address: "10.0.0.2:7788" }
cluster:
  keepalive: 1s
  deadtime: 10s
  authkeys-file: authkeys
  links:
    - name: l0
      mode: ucast
      on:
        node1: { address: 10.0.0.1 }
        node2: { address: 10.0.0.2 }
group:
  resources: [r0]
  vip: { address: 10.1.0.100/24, on: { node1: eth0, node2: eth1 } }
targets:
  iqn.2026-01.com.example:t0:
    luns:
      0: { resource: r0 }
"#;

fn load(text: &str) -> HaConfig {
    match HaConfig::from_str(text, Path::new("/etc/ha/ha.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("config should load: {e}"),
    }
}

#[test]
fn omitted_section_keys_take_the_documented_defaults() {
    let cfg = load(FULL);
    let c = cfg.cluster.as_ref().expect("cluster");
    assert_eq!(c.warntime, cluster_defaults::WARNTIME);
    assert_eq!(c.initdead, cluster_defaults::INITDEAD);
    assert!(!c.auto_failback);
    assert_eq!(c.authkeys_file, PathBuf::from("/etc/ha/authkeys"));
    assert_eq!(c.links[0].port, cluster_defaults::PORT);
    assert_eq!(c.links[0].mode, LinkMode::Unicast);
    assert_eq!(c.links[0].on["node1"].interface, None);
    assert_eq!(c.guard, GuardConfig::default());
    assert_eq!(c.escalation_command, None);
    let g = cfg.groups.first().expect("group");
    assert_eq!(g.preferred, None);
    assert!(g.portblock && !g.allow_unguarded_split);
    assert_eq!(g.start_timeout, group_defaults::START_TIMEOUT);
    assert_eq!(g.stop_timeout, group_defaults::STOP_TIMEOUT);
    let vip = g.vip.as_ref().expect("vip");
    assert_eq!(vip.interfaces["node1"], "eth0");
    assert_eq!(vip.interfaces["node2"], "eth1");
    assert_eq!(vip.garp_count, group_defaults::GARP_COUNT);
    assert_eq!(vip.garp_interval, Duration::from_millis(200));
    assert_eq!(vip.garp_repeat_after, Duration::from_secs(3));
    assert_eq!(cfg.iscsi, IscsiConfig::default());
    let t = &cfg.targets[0];
    assert_eq!(
        t.portals,
        ["10.1.0.100:3260".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(t.tpgt, 1);
    assert_eq!(
        (t.vendor.as_str(), t.product.as_str()),
        ("CLUSTERD", "HA-VOLUME")
    );
    assert!(t.initiators.is_empty() && t.networks.is_empty());
    assert_eq!(t.params, TargetParamOverrides::default());
    let lun = &t.luns[&0];
    assert_eq!(lun.source, LunSource::Resource("r0".into()));
    assert_eq!(
        (lun.serial.as_deref(), lun.block_size, lun.write_cache),
        (None, 512, true)
    );
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn every_section_key_is_typed() {
    let text = FULL
        .replace(
            "  keepalive: 1s\n",
            "  keepalive: 200ms\n  warntime: 1s\n  initdead: 1m\n  auto-failback: on\n  \
             escalation-command: \"systemctl reboot -f\"\n  \
             guard: { ping-nodes: [10.0.0.254, \"::1\"], ping-timeout: 300ms, fence-command: fence }\n",
        )
        .replace("  deadtime: 10s\n", "  deadtime: 3s\n")
        .replace(
            "  resources: [r0]\n",
            "  resources: [r0]\n  preferred: node2\n  portblock: off\n  start-timeout: 1m\n  \
             stop-timeout: 5s\n  unsafe-promote-without-guard: yes\n",
        )
        .replace("    luns:\n", "    alias: d0\n    tpgt: 7\n    portals: [\"[::1]:3261\"]\n    \
             initiators: [iqn.2026-01.com.example:c1, eui.02004567A425678D]\n    \
             networks: [10.0.0.0/8, 10.9.9.9, \"fd00::/8\"]\n    \
             incoming-user: { name: in, secret-file: in.secret }\n    \
             outgoing-user: { name: out, secret-file: /etc/out.secret }\n    \
             vendor: ACME\n    product: Disk\n    \
             params: { MaxConnections: 1, InitialR2T: No, DataDigest: none, ErrorRecoveryLevel: 0, \
             MaxBurstLength: 1048576, FirstBurstLength: 1048576, DefaultTime2Wait: 0 }\n    luns:\n")
        .replace(
            "      0: { resource: r0 }\n",
            "      7: { resource: r0, serial: SN-7, block-size: 4096, write-cache: true }\n",
        )
        + "iscsi:\n  discovery-user: { name: d, secret-file: d.secret }\n  nop-interval: 10s\n  nop-timeout: 2s\n";
    let cfg = load(&text);
    let c = cfg.cluster.as_ref().expect("cluster");
    assert_eq!(c.keepalive, Duration::from_millis(200));
    assert_eq!(
        (c.warntime, c.deadtime, c.initdead),
        (
            Duration::from_secs(1),
            Duration::from_secs(3),
            Duration::from_secs(60)
        )
    );
    assert!(c.auto_failback);
    assert_eq!(c.escalation_command.as_deref(), Some("systemctl reboot -f"));
    let ips: Vec<IpAddr> = vec!["10.0.0.254".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(c.guard.ping_nodes, ips);
    assert_eq!(c.guard.ping_timeout, Duration::from_millis(300));
    assert_eq!(c.guard.fence_command.as_deref(), Some("fence"));
    let g = cfg.groups.first().expect("group");
    assert_eq!(g.preferred.as_deref(), Some("node2"));
    assert!(!g.portblock && g.allow_unguarded_split);
    assert_eq!(
        (g.start_timeout, g.stop_timeout),
        (Duration::from_secs(60), Duration::from_secs(5))
    );
    let t = &cfg.targets[0];
    assert_eq!((t.alias.as_deref(), t.tpgt), (Some("d0"), 7));
    assert_eq!(t.portals, ["[::1]:3261".parse::<SocketAddr>().unwrap()]);
    assert_eq!(
        t.initiators,
        ["iqn.2026-01.com.example:c1", "eui.02004567A425678D"]
    );
    let nets: Vec<(IpAddr, u8)> = vec![
        ("10.0.0.0".parse().unwrap(), 8),
        ("10.9.9.9".parse().unwrap(), 32),
        ("fd00::".parse().unwrap(), 8),
    ];
    assert_eq!(t.networks, nets);
    assert_eq!(
        t.incoming_user.as_ref().map(|u| u.secret_file.clone()),
        Some(PathBuf::from("/etc/ha/in.secret"))
    );
    assert_eq!(
        t.outgoing_user.as_ref().map(|u| u.name.as_str()),
        Some("out")
    );
    assert_eq!((t.vendor.as_str(), t.product.as_str()), ("ACME", "Disk"));
    assert_eq!(t.params.max_connections, Some(1));
    assert_eq!(t.params.initial_r2t, Some(false));
    assert_eq!(t.params.data_digest, Some(vec!["None".to_string()]));
    assert_eq!(
        (t.params.max_burst_length, t.params.first_burst_length),
        (Some(1 << 20), Some(1 << 20))
    );
    assert_eq!(t.params.default_time2wait, Some(0));
    assert_eq!(t.params.header_digest, None);
    let lun = &t.luns[&7];
    assert_eq!(
        (lun.serial.as_deref(), lun.block_size, lun.write_cache),
        (Some("SN-7"), 4096, true)
    );
    let d = cfg.iscsi.discovery_user.as_ref().expect("discovery user");
    assert_eq!(
        (d.name.as_str(), d.secret_file.as_path()),
        ("d", Path::new("/etc/ha/d.secret"))
    );
    assert_eq!(
        (cfg.iscsi.nop_interval, cfg.iscsi.nop_timeout),
        (Duration::from_secs(10), Duration::from_secs(2))
    );
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("group.unsafe-promote-without-guard"),
        "{warnings:?}"
    );
}

#[test]
fn risky_but_valid_settings_are_warned_about() {
    let text = FULL
        .replace(
            "  keepalive: 1s\n",
            "  keepalive: 500ms\n  warntime: 1s\n  initdead: 2s\n",
        )
        .replace("  deadtime: 10s\n", "  deadtime: 2s\n")
        .replace(
            "  resources: [r0]\n",
            "  resources: [r0]\n  preferred: node1\n",
        )
        .replace(
            "      0: { resource: r0 }\n",
            "      0: { resource: r0 }\n      1: { path: local.img }\n",
        );
    let warnings = load(&text).warnings();
    let expect = [
        "cluster.deadtime: 2s is less than 10 × keepalive (500ms)",
        "targets.iqn.2026-01.com.example:t0.luns.1.path: /etc/ha/local.img is a local file, not replicated",
    ];
    assert_eq!(warnings.len(), expect.len(), "{warnings:?}");
    for (w, e) in warnings.iter().zip(expect) {
        assert!(
            w.starts_with("/etc/ha/ha.yaml: ") && w.contains(e),
            "{w:?} should contain {e:?}"
        );
    }
}

#[test]
fn local_node_picks_the_only_node_without_a_name() {
    let two = load(FULL);
    assert_eq!(two.local_node(None).unwrap(), None);
    assert_eq!(
        two.local_node(Some("node2"))
            .unwrap()
            .map(|n| n.name.as_str()),
        Some("node2")
    );
    assert!(two.local_node(Some("node3")).is_err());
    let one = load("nodes: [{ name: solo }]\n");
    assert_eq!(
        one.local_node(None).unwrap().map(|n| n.name.as_str()),
        Some("solo")
    );
    assert!(
        one.local_node(Some("other")).is_err(),
        "a given name must still exist"
    );
    assert!(one.targets.is_empty() && one.cluster.is_none() && one.groups.is_empty());
}

#[test]
fn iscsi_names_follow_rfc_7143() {
    for good in [
        "iqn.2008-04.local.home:storage.disk.0",
        "iqn.2026-11.org.example:standalone",
        "iqn.1992-01.com.example",
        "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.62004567BA64678D0123456789ABCDEF",
    ] {
        assert_eq!(check_iscsi_name(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "iqn.",
        "iqn.2008-4.local.home",
        "iqn.2008-00.local.home",
        "iqn.2008-04.",
        "iqn.2008-04..home",
        "iqn.2008-04.-home",
        "iqn.2008-04local.home",
        "iqn.2008-04.Local.home",
        "iqn.2008-04.local.home:disk 0",
        "iqn.2008-04.local.home:disk_0",
        "IQN.2008-04.local.home",
        "eui.0200",
        "eui.02004567A425678G",
        "naa.0123456789",
        "storage.disk.0",
    ] {
        assert!(check_iscsi_name(bad).is_err(), "{bad:?}");
    }
    let long = format!("iqn.2008-04.local.home:{}", "x".repeat(201));
    assert!(check_iscsi_name(&long).unwrap_err().contains("at most 223"));
}

#[test]
fn cidr_parsing_and_network_masking() {
    assert_eq!(
        parse_cidr("192.168.0.0/16", "x", false),
        Ok(("192.168.0.0".parse().unwrap(), 16))
    );
    assert_eq!(
        parse_cidr("10.1.2.3", "x", true),
        Ok(("10.1.2.3".parse().unwrap(), 32))
    );
    assert_eq!(
        parse_cidr("fd00::/8", "x", false),
        Ok(("fd00::".parse().unwrap(), 8))
    );
    for bad in [
        "10.1.2.3",
        "10.1.2.3/",
        "10.1.2.3/x",
        "10.1.2.3/33",
        "fd00::/129",
        "host/8",
        "10.1.2.3/-1",
    ] {
        assert!(parse_cidr(bad, bad, false).is_err(), "{bad}");
    }
    let net = |a: &str, p: u8| network_of(a.parse().unwrap(), p).to_string();
    assert_eq!(net("192.168.7.9", 16), "192.168.0.0");
    assert_eq!(net("192.168.7.9", 0), "0.0.0.0");
    assert_eq!(net("192.168.7.9", 32), "192.168.7.9");
    assert_eq!(net("fd00::1", 8), "fd00::");
    assert_eq!(net("fd00::1", 128), "fd00::1");
    assert_eq!(net("fd00::1", 0), "::");
}
