//! `haadm dump` and the configuration digest: the dump parses back to the same effective
//! configuration, and the digest ignores layout, comments and spelled-out defaults.

use super::*;

fn load_at(text: &str, path: &str) -> HaConfig {
    HaConfig::from_str(text, Path::new(path)).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn round_trip(text: &str) {
    let cfg = load_at(text, "/etc/ha/ha.yaml");
    let dumped = dump_yaml(&cfg, None).unwrap();
    // Another directory: every path in the dump is absolute, so nothing may depend on it.
    let again = load_at(&dumped, "/elsewhere/dump.yaml");
    assert_eq!(dump_yaml(&again, None).unwrap(), dumped, "dump of the dump differs:\n{dumped}");
    assert_eq!(config_digest(&again), config_digest(&cfg));
    assert_eq!(again.resources.keys().collect::<Vec<_>>(), cfg.resources.keys().collect::<Vec<_>>());
    for (name, r) in &cfg.resources {
        let b = &again.resources[name];
        assert_eq!((&r.net, &r.syncer, &r.disk, &r.startup, &r.handlers, &r.on), (&b.net, &b.syncer, &b.disk, &b.startup, &b.handlers, &b.on));
    }
    assert_eq!((&again.cluster, &again.groups, &again.iscsi, &again.targets, &again.metrics), (&cfg.cluster, &cfg.groups, &cfg.iscsi, &cfg.targets, &cfg.metrics));
    assert_eq!(again.nodes, cfg.nodes);
}

#[test]
fn the_shipped_example_dumps_and_parses_back() {
    round_trip(include_str!("../../../ha.yaml.example"));
}

#[test]
fn a_config_with_targets_acls_chap_and_params_dumps_and_parses_back() {
    round_trip(
        r#"
nodes: [{ name: node1 }]
resources:
  r0:
    device: ha0
    syncer: { rate: 6M }
    on: { node1: { disk: d.img, address: "127.0.0.1:7000", meta-disk: "m.img[2]" } }
iscsi: { discovery-user: { name: disc, secret-file: disc.secret }, nop-interval: 20s }
targets:
  iqn.2026-01.com.example:t0:
    alias: first
    portals: ["127.0.0.1:3260"]
    luns:
      0: { resource: r0 }
      3: { path: /srv/x.img, serial: abc, block-size: 4096, write-cache: off }
    initiators: [iqn.2026-01.com.example:c1]
    networks: [10.0.0.0/8]
    incoming-user: { name: in, secret-file: in.secret }
    outgoing-user: { name: out, secret-file: out.secret }
    params: { MaxConnections: 1, InitialR2T: No, DataDigest: "CRC32C,None" }
metrics: { listen: "127.0.0.1:9942" }
"#,
    );
}

#[test]
fn digest_ignores_layout_and_defaults_but_not_values() {
    let base = "nodes: [{ name: node1 }]\nresources:\n  r0:\n    device: ha0\n    on: { node1: { disk: /d, address: \"127.0.0.1:7000\" } }\n";
    let spelled = "# comment\nnodes:\n  - name: node1\nresources:\n  r0:\n    device: ha0\n    syncer: { rate: unlimited, c-min-rate: 250K }\n    on:\n      node1: { disk: /d, address: \"127.0.0.1:7000\", meta-disk: internal }\n";
    let changed = base.replace("device: ha0", "device: ha0\n    syncer: { rate: 6M }");
    let d = |t: &str| config_digest(&load_at(t, "/etc/ha/ha.yaml"));
    assert_eq!(d(base), d(spelled));
    assert_ne!(d(base), d(&changed));
    assert_eq!(d(base).len(), 16);
    assert!(d(base).bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn dump_of_one_resource_and_of_an_unknown_one() {
    let cfg = load_at(include_str!("../../../ha.yaml.example"), "/etc/ha/ha.yaml");
    let one = dump_yaml(&cfg, Some("iscsi.target.0")).unwrap();
    assert!(one.starts_with("resources:\n  iscsi.target.0:\n"), "{one}");
    assert!(!one.contains("iscsi.config") && !one.contains("cluster:"), "{one}");
    assert!(one.contains("c-min-rate: 250K") && one.contains("wfc-timeout: 0s"), "{one}");
    // issue 18 resync controller: the defaults are shown.
    assert!(one.contains("c-plan-ahead: 2s") && one.contains("c-fill-target: 16M") && one.contains("c-max-rate: unlimited"), "{one}");
    let err = dump_yaml(&cfg, Some("nope")).unwrap_err();
    assert!(err.contains("no resource `nope`") && err.contains("iscsi.config"), "{err}");
}
