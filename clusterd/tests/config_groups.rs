//! ha.yaml with several failover groups and ALUA access (issue 17): what loads, how a single `group:`
//! still reads (one group named `default`, dumped as before), and that each mistake is named with
//! file and field.

use clusterd::config::{Access, HaConfig, LEGACY_GROUP_NAME, dump_yaml};
#[path = "common/config_load.rs"]
mod config_load;
use config_load::{assert_error, load_text as load};

const HEAD: &str = r#"nodes:
  - name: node1
  - name: node2
resources:
  r0:
    device: ha0
    on:
      node1: { disk: /dev/vdc1, address: "10.0.0.1:7788" }
      node2: { disk: /dev/vdc1, address: "10.0.0.2:7788" }
  r1:
    device: ha1
    on:
      node1: { disk: /dev/vdd1, address: "10.0.0.1:7789" }
      node2: { disk: /dev/vdd1, address: "10.0.0.2:7789" }
cluster:
  authkeys-file: authkeys
  links:
    - name: l0
      mode: ucast
      on: { node1: { address: 10.0.0.1 }, node2: { address: 10.0.0.2 } }
"#;

const TWO_GROUPS: &str = r#"groups:
  web:
    preferred: node1
    auto-failback: on
    resources: [r0]
    vip: { address: 10.1.0.100/24, interface: eth0 }
  db:
    preferred: node2
    resources: [r1]
    access: both
    vip: { address: 10.1.0.101/24, interface: eth0 }
    node-portals: { node1: 10.1.0.1, node2: "10.1.0.2:3261" }
targets:
  iqn.2026-01.com.example:web:
    luns:
      0: { resource: r0 }
  iqn.2026-01.com.example:db:
    luns:
      0: { resource: r1 }
"#;

#[test]
fn two_groups_load_with_their_targets_and_access() {
    let (_d, _p, r) = load(&format!("{HEAD}{TWO_GROUPS}"));
    let cfg = r.expect("loads");
    let names: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    assert!(!cfg.legacy_group);
    let web = cfg.group("web").expect("web");
    assert_eq!((web.access, web.auto_failback, web.preferred.as_deref()), (Access::Vip, Some(true), Some("node1")));
    let db = cfg.group("db").expect("db");
    assert_eq!((db.access, db.auto_failback), (Access::Both, None));
    assert_eq!(db.node_portals["node1"].to_string(), "10.1.0.1:3260");
    assert_eq!(db.node_portals["node2"].to_string(), "10.1.0.2:3261");
    // Each target follows the group of its volume and defaults to that group's VIP.
    let t = |iqn: &str| cfg.targets.iter().find(|t| t.iqn == iqn).expect("target").clone();
    assert_eq!(t("iqn.2026-01.com.example:web").group.as_deref(), Some("web"));
    assert_eq!(t("iqn.2026-01.com.example:db").group.as_deref(), Some("db"));
    assert_eq!(t("iqn.2026-01.com.example:db").portals[0].to_string(), "10.1.0.101:3260");
    assert_eq!(cfg.group_of_resource("r1").map(|g| g.name.as_str()), Some("db"));
    assert_eq!(cfg.for_group("web").targets.len(), 1);
    // The dump loads back as the same groups.
    let dir = tempfile::tempdir().expect("tempdir");
    let again_path = dir.path().join("again.yaml");
    std::fs::write(&again_path, dump_yaml(&cfg, None).expect("dump")).expect("write");
    let again = HaConfig::load(&again_path).expect("dump loads");
    assert_eq!(again.groups, cfg.groups);
    assert_eq!(again.targets, cfg.targets);
}

#[test]
fn a_single_group_is_the_default_group_and_dumps_as_before() {
    let text = format!(
        "{HEAD}group:\n  resources: [r0, r1]\n  vip: {{ address: 10.1.0.100/24, interface: eth0 }}\ntargets:\n  iqn.2026-01.com.example:t:\n    luns:\n      0: {{ resource: r0 }}\n"
    );
    let (_d, _p, r) = load(&text);
    let cfg = r.expect("loads");
    assert!(cfg.legacy_group);
    assert_eq!(cfg.groups.len(), 1);
    assert_eq!(cfg.groups[0].name, LEGACY_GROUP_NAME);
    assert_eq!(cfg.groups[0].access, Access::Vip);
    let text = dump_yaml(&cfg, None).expect("dump");
    assert!(text.contains("\ngroup:\n"), "{text}");
    assert!(!text.contains("groups:"), "{text}");
    assert!(!text.contains("  access:"), "a `group:` dump must not gain new keys (digest compatibility): {text}");
}

#[test]
fn alua_without_a_vip_serves_on_node_portals_only() {
    let text = format!(
        "{HEAD}groups:\n  g:\n    resources: [r0]\n    access: alua\n    node-portals: {{ node1: 10.1.0.1, node2: 10.1.0.2 }}\ntargets:\n  iqn.2026-01.com.example:t:\n    luns:\n      0: {{ resource: r0 }}\n"
    );
    let (_d, _p, r) = load(&text);
    let cfg = r.expect("loads");
    assert!(cfg.targets[0].portals.is_empty());
    assert_eq!(cfg.groups[0].access, Access::Alua);
}

#[test]
fn group_mistakes_are_named() {
    let both = format!("{HEAD}group:\n  resources: [r0]\n{TWO_GROUPS}");
    assert_error(&both, &["groups", "both `group` and `groups`"]);
    let shared = format!("{HEAD}{}", TWO_GROUPS.replace("resources: [r1]", "resources: [r0]"));
    assert_error(&shared, &["groups.db.resources", "`r0` is already in group `web`"]);
    let same_vip = format!("{HEAD}{}", TWO_GROUPS.replace("10.1.0.101/24", "10.1.0.100/24"));
    assert_error(&same_vip, &["groups.db.vip.address", "already the VIP of group `web`"]);
    let bad_access = format!("{HEAD}{}", TWO_GROUPS.replace("access: both", "access: multipath"));
    assert_error(&bad_access, &["groups.db.access", "not vip, alua or both"]);
    let no_portals = format!("{HEAD}{}", TWO_GROUPS.replace("    node-portals: { node1: 10.1.0.1, node2: \"10.1.0.2:3261\" }\n", ""));
    assert_error(&no_portals, &["groups.db.node-portals", "required with `access: both`"]);
    let one_portal = format!("{HEAD}{}", TWO_GROUPS.replace("node1: 10.1.0.1, node2: \"10.1.0.2:3261\"", "node1: 10.1.0.1"));
    assert_error(&one_portal, &["groups.db.node-portals", "no portal for node `node2`"]);
    let portals_with_vip = format!("{HEAD}{}", TWO_GROUPS.replace("access: both", "access: vip"));
    assert_error(&portals_with_vip, &["groups.db.node-portals", "only used with `access: alua`"]);
    let both_without_vip = format!("{HEAD}{}", TWO_GROUPS.replace("    vip: { address: 10.1.0.101/24, interface: eth0 }\n", ""));
    assert_error(&both_without_vip, &["groups.db.vip", "required with `access: both`"]);
    let reserved = format!("{HEAD}{}", TWO_GROUPS.replace("  db:\n", "  all:\n"));
    assert_error(&reserved, &["groups.all", "reserved"]);
    let wrong_group = format!("{HEAD}{}", TWO_GROUPS.replace("  iqn.2026-01.com.example:db:\n", "  iqn.2026-01.com.example:db:\n    group: web\n"));
    assert_error(&wrong_group, &["targets.iqn.2026-01.com.example:db.luns.0.resource", "not in groups.web.resources"]);
    let unknown_group = format!("{HEAD}{}", TWO_GROUPS.replace("  iqn.2026-01.com.example:db:\n", "  iqn.2026-01.com.example:db:\n    group: nope\n"));
    assert_error(&unknown_group, &["targets.iqn.2026-01.com.example:db.group", "not a failover group (web, db)"]);
}
