//! The plan as a pure function: running configuration + ha.yaml now + what runs here → the changes
//! in order, or the refusals naming each field.

use super::*;
use std::path::Path;

const BASE: &str = r#"
nodes: [{ name: node1 }, { name: node2 }]
resources:
  r0:
    device: ha0
    syncer: { rate: 6M }
    on:
      node1: { disk: /d/r0.img, address: "127.0.0.1:7000" }
      node2: { disk: /d/r0.img, address: "127.0.0.2:7000" }
  r0.x:
    device: ha1
    on:
      node1: { disk: /d/x.img, address: "127.0.0.1:7001" }
      node2: { disk: /d/x.img, address: "127.0.0.2:7001" }
targets:
  iqn.2026-01.com.example:t0:
    portals: ["127.0.0.1:3260"]
    luns:
      0: { path: /d/lun0.img }
    initiators: [iqn.2026-01.com.example:init1]
    incoming-user: { name: u, secret-file: /d/chap.secret }
"#;

fn cfg(text: &str) -> HaConfig {
    HaConfig::from_str(text, Path::new("/etc/ha/ha.yaml")).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn running(attached: &[&str], primary: &[&str], target: bool) -> RunState {
    RunState {
        node: "node1".into(),
        attached: attached.iter().map(|s| s.to_string()).collect(),
        primary: primary.iter().map(|s| s.to_string()).collect(),
        target_running: target,
        ..Default::default()
    }
}

fn lines(p: &Plan) -> Vec<&str> {
    p.changes.iter().map(|c| c.line.as_str()).collect()
}

fn refused(r: Result<Plan, Vec<Refusal>>) -> Vec<Refusal> {
    match r {
        Ok(p) => panic!("should be refused, planned {:?}", lines(&p)),
        Err(r) => r,
    }
}

#[test]
fn same_file_plans_nothing() {
    let p = plan(&cfg(BASE), &cfg(BASE), "all", &running(&["r0"], &["r0"], true)).unwrap();
    assert!(p.is_empty(), "{:?}", lines(&p));
}

#[test]
fn resync_and_net_options_of_an_attached_resource_are_live() {
    let new = BASE.replace("syncer: { rate: 6M }", "syncer: { rate: 100M, c-min-rate: 1M }\n    net: { timeout: 3s, after-sb-0pri: discard-zero-changes }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &["r0"], false)).unwrap();
    assert_eq!(
        lines(&p),
        [
            "r0: net.after-sb-0pri disconnect -> discard-zero-changes (from the next connection)",
            "r0: net.timeout 6s -> 3s",
            "r0: syncer.c-min-rate 250K -> 1M",
            "r0: syncer.rate 6M -> 100M",
        ]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::ResourceOptions("r0".into())));
    assert_eq!(p.config.resources["r0"].syncer.rate.0, Some(100 << 20));
}

/// issue 18 verify: the verify settings are taken live (the schedule reads the running configuration
/// every second, `verify-repair` is read when a verify starts, `verify-rate` goes into the volume).
#[test]
fn verify_schedule_repair_and_rate_are_live() {
    let new = BASE.replace("syncer: { rate: 6M }", "syncer: { rate: 6M, verify-repair: yes, verify-interval: 7d, verify-rate: 2M }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &["r0"], false)).unwrap();
    assert_eq!(
        lines(&p),
        ["r0: syncer.verify-interval off -> 604800s", "r0: syncer.verify-rate same-as-rate -> 2M", "r0: syncer.verify-repair off -> on"]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::ResourceOptions("r0".into())));
}

#[test]
fn csums_options_are_taken_from_the_next_resync() {
    let new = BASE.replace("syncer: { rate: 6M }", "syncer: { rate: 6M, csums-alg: crc32c, csums-for: all }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &[], false)).unwrap();
    assert_eq!(
        lines(&p),
        ["r0: syncer.csums-alg sha1 -> crc32c (from the next resync)", "r0: syncer.csums-for full -> all (from the next resync)"]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::ResourceOptions("r0".into())));
    assert_eq!(p.config.resources["r0"].syncer.csums_alg, crate::config::CsumsAlg::Crc32c);
}

#[test]
fn disk_change_of_an_attached_resource_is_refused_with_the_field_and_nothing_else_applies() {
    let new = BASE.replace("syncer: { rate: 6M }", "syncer: { rate: 100M }").replace(
        "node1: { disk: /d/r0.img, address: \"127.0.0.1:7000\" }",
        "node1: { disk: /d/other.img, address: \"127.0.0.1:7000\" }",
    );
    let r = refused(plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &[], false)));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].field, "resources.r0.on.node1.disk");
    assert!(r[0].reason.contains("attached"), "{}", r[0].reason);
    // Down: the same change is only configuration.
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&[], &[], false)).unwrap();
    assert!(lines(&p).contains(&"r0: on.node1.disk /d/r0.img -> /d/other.img"), "{:?}", lines(&p));
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::ResourceConfig("r0".into())));
}

#[test]
fn the_peers_disk_is_not_this_nodes_business_but_addresses_are() {
    let new = BASE.replace("node2: { disk: /d/r0.img, address: \"127.0.0.2:7000\" }", "node2: { disk: /d/new.img, address: \"127.0.0.2:7000\" }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &[], false)).unwrap();
    assert_eq!(lines(&p), ["r0: on.node2.disk /d/r0.img -> /d/new.img (on that node)"]);
    let new = BASE.replace("127.0.0.2:7000", "127.0.0.3:7000");
    let r = refused(plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0"], &[], false)));
    assert_eq!(r[0].field, "resources.r0.on.node2.address");
}

#[test]
fn names_with_dots_are_compared_whole() {
    // r0.x's change must not be mistaken for one of r0 (and the reverse).
    let new = BASE.replace("device: ha1", "device: ha1\n    syncer: { rate: 1M }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0", "r0.x"], &[], false)).unwrap();
    assert_eq!(lines(&p), ["r0.x: syncer.rate unlimited -> 1M"]);
    assert_eq!(p.changes[0].kind, ChangeKind::ResourceOptions("r0.x".into()));
}

#[test]
fn one_resource_only_takes_that_resource() {
    let new = BASE.replace("syncer: { rate: 6M }", "syncer: { rate: 7M }").replace("device: ha1", "device: ha1\n    syncer: { rate: 1M }");
    let p = plan(&cfg(BASE), &cfg(&new), "r0", &running(&["r0", "r0.x"], &[], false)).unwrap();
    assert_eq!(lines(&p), ["r0: syncer.rate 6M -> 7M"]);
    assert_eq!(p.config.resources["r0.x"].syncer.rate.0, None, "r0.x must stay as it runs");
    let r = refused(plan(&cfg(BASE), &cfg(&new), "nope", &running(&[], &[], false)));
    assert!(r[0].reason.starts_with("no such resource"), "{r:?}");
}

#[test]
fn added_and_removed_resources() {
    let without_x = BASE.split("  r0.x:").next().unwrap().to_string() + &BASE[BASE.find("targets:").unwrap()..];
    let p = plan(&cfg(&without_x), &cfg(BASE), "all", &running(&["r0"], &[], false)).unwrap();
    assert_eq!(lines(&p), ["r0.x: add resource"]);
    let p = plan(&cfg(BASE), &cfg(&without_x), "all", &running(&["r0", "r0.x"], &[], false)).unwrap();
    assert_eq!(lines(&p), ["r0.x: remove resource (take it down)"]);
    let r = refused(plan(&cfg(BASE), &cfg(&without_x), "all", &running(&["r0", "r0.x"], &["r0.x"], false)));
    assert_eq!(r[0].field, "resources.r0.x");
    assert!(r[0].reason.contains("Primary"), "{}", r[0].reason);
}

#[test]
fn luns_acls_and_chap_rotation() {
    let new = BASE
        .replace("      0: { path: /d/lun0.img }", "      0: { path: /d/lun0.img }\n      1: { path: /x }")
        .replace("initiators: [iqn.2026-01.com.example:init1]", "initiators: [iqn.2026-01.com.example:init1, iqn.2026-01.com.example:init2]");
    let mut st = running(&[], &[], true);
    st.changed_secrets.insert("/d/chap.secret".into());
    let p = plan(&cfg(BASE), &cfg(&new), "all", &st).unwrap();
    assert_eq!(
        lines(&p),
        [
            "target iqn.2026-01.com.example:t0: acl add iqn.2026-01.com.example:init2",
            "target iqn.2026-01.com.example:t0: add LUN 1 (file /x)",
            "target iqn.2026-01.com.example:t0: chap secret rotated (user u)",
        ]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::Targets));
    let back = plan(&cfg(&new), &cfg(BASE), "all", &running(&[], &[], true)).unwrap();
    assert_eq!(
        lines(&back),
        [
            "target iqn.2026-01.com.example:t0: acl remove iqn.2026-01.com.example:init2",
            "target iqn.2026-01.com.example:t0: remove LUN 1 (logged-in sessions lose it too, told by REPORTED LUNS DATA HAS CHANGED)",
        ]
    );
}

#[test]
fn restart_only_fields_are_refused_by_name() {
    let new = BASE.replace("targets:", "metrics: { listen: \"127.0.0.1:9942\" }\ntargets:").replace("\"127.0.0.1:3260\"", "\"127.0.0.1:3261\"");
    let r = refused(plan(&cfg(BASE), &cfg(&new), "all", &running(&[], &[], true)));
    let fields: Vec<&str> = r.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(fields, ["targets.iqn.2026-01.com.example:t0.portals"]);
    assert!(r[0].reason.contains("needs a restart of clusterd"));
    // The metrics listener alone is live: this node's starts, the other node's is only configuration.
    let metrics_only = BASE.replace("targets:", "metrics: { listen: \"127.0.0.1:9942\" }\ntargets:");
    let p = plan(&cfg(BASE), &cfg(&metrics_only), "all", &running(&[], &[], true)).unwrap();
    assert_eq!(
        lines(&p),
        [
            "metrics.on.node1: (none) -> 127.0.0.1:9942 (listener started; iSCSI counters from new sessions on)",
            "metrics.on.node2: (none) -> 127.0.0.1:9942 (on that node)",
        ]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::Metrics));
    // With the target not served here the portals are only configuration.
    let only_portal = BASE.replace("\"127.0.0.1:3260\"", "\"127.0.0.1:3261\"");
    let p = plan(&cfg(BASE), &cfg(&only_portal), "all", &running(&[], &[], false)).unwrap();
    assert_eq!(lines(&p), ["target iqn.2026-01.com.example:t0: portals 127.0.0.1:3260 -> 127.0.0.1:3261"]);
}

#[test]
fn changes_come_in_a_safe_order() {
    let without_x = BASE.split("  r0.x:").next().unwrap().to_string() + &BASE[BASE.find("targets:").unwrap()..];
    let new = without_x.replace("syncer: { rate: 6M }", "syncer: { rate: 8M }").replace("      0: { path: /d/lun0.img }", "      0: { path: /d/lun0.img }\n      1: { path: /x }");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&["r0", "r0.x"], &[], true)).unwrap();
    let kinds: Vec<&ChangeKind> = p.changes.iter().map(|c| &c.kind).collect();
    assert_eq!(kinds, [&ChangeKind::ResourceOptions("r0".into()), &ChangeKind::Targets, &ChangeKind::RemoveResource("r0.x".into())]);
}

#[test]
fn a_served_lun_cannot_change_but_an_unserved_one_can() {
    let new = BASE.replace("0: { path: /d/lun0.img }", "0: { path: /d/lun0.img, serial: abc }");
    let r = refused(plan(&cfg(BASE), &cfg(&new), "all", &running(&[], &[], true)));
    assert_eq!(r[0].field, "targets.iqn.2026-01.com.example:t0.luns.0");
    let p = plan(&cfg(BASE), &cfg(&new), "all", &running(&[], &[], false)).unwrap();
    assert_eq!(lines(&p), ["target iqn.2026-01.com.example:t0: LUN 0 settings changed (for new logins)"]);
}

/// A target open to every initiator (no `initiators`) that gets a list: only the added names, no
/// line for the empty "everyone" setting that goes away (and the reverse).
#[test]
fn acl_from_open_to_a_list_and_back() {
    let open = BASE.replace("    initiators: [iqn.2026-01.com.example:init1]\n", "");
    let p = plan(&cfg(&open), &cfg(BASE), "all", &running(&[], &[], true)).unwrap();
    assert_eq!(lines(&p), ["target iqn.2026-01.com.example:t0: acl add iqn.2026-01.com.example:init1"]);
    let p = plan(&cfg(BASE), &cfg(&open), "all", &running(&[], &[], true)).unwrap();
    assert_eq!(lines(&p), ["target iqn.2026-01.com.example:t0: acl remove iqn.2026-01.com.example:init1"]);
}

const CLUSTERED: &str = r#"
nodes: [{ name: node1 }, { name: node2 }]
resources:
  r0:
    device: ha0
    on:
      node1: { disk: /d/r0.img, address: "127.0.0.1:7000" }
      node2: { disk: /d/r0.img, address: "127.0.0.2:7000" }
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
"#;

fn clustered(links_up: &[&str]) -> RunState {
    RunState {
        cluster_running: true,
        peer_alive: true,
        links_up: links_up.iter().map(|s| s.to_string()).collect(),
        ..running(&["r0"], &["r0"], false)
    }
}

const SECOND_LINK: &str = "    - name: l1\n      mode: ucast\n      port: 695\n      on:\n        node1: { address: 10.0.1.1 }\n        node2: { address: 10.0.1.2 }\ngroup:";

#[test]
fn heartbeat_timers_guard_and_links_are_live() {
    let new = CLUSTERED
        .replace("deadtime: 10s", "deadtime: 20s\n  auto-failback: on\n  guard: { ping-nodes: [10.0.0.254] }")
        .replace("group:", SECOND_LINK);
    let p = plan(&cfg(CLUSTERED), &cfg(&new), "all", &clustered(&["l0"])).unwrap();
    assert_eq!(
        lines(&p),
        [
            "cluster.auto-failback off -> on",
            "cluster.deadtime 10s -> 20s",
            "cluster.guard.ping-nodes \"\" -> 10.0.0.254",
            "cluster.links: add link l1 (ucast port 695)",
        ]
    );
    assert!(p.changes.iter().all(|c| c.kind == ChangeKind::Cluster));
    // Removing the old link once the new one hears the peer: no warning.
    let only_l1 = cfg(&new.replace("    - name: l0\n      mode: ucast\n      on:\n        node1: { address: 10.0.0.1 }\n        node2: { address: 10.0.0.2 }\n", ""));
    let p = plan(&cfg(&new), &only_l1, "all", &clustered(&["l0", "l1"])).unwrap();
    assert_eq!(lines(&p).last().copied(), Some("cluster.links: remove link l0"));
    assert!(!lines(&p).iter().any(|l| l.contains("WARNING")), "{:?}", lines(&p));
}

#[test]
fn re_addressing_the_only_link_that_hears_the_peer_warns_about_the_grace() {
    let new = CLUSTERED.replace("10.0.0.2 }", "10.0.0.3 }");
    let p = plan(&cfg(CLUSTERED), &cfg(&new), "all", &clustered(&["l0"])).unwrap();
    let l = lines(&p);
    assert!(l[0].starts_with("cluster.links.l0: changed"), "{l:?}");
    assert!(l[1].contains("WARNING") && l[1].contains("within initdead (30s)"), "{l:?}");
    // With a second, untouched link that hears the peer there is nothing to warn about.
    let two = CLUSTERED.replace("group:", SECOND_LINK);
    let p = plan(&cfg(&two), &cfg(&two.replace("10.0.0.2 }", "10.0.0.3 }")), "all", &clustered(&["l0", "l1"])).unwrap();
    assert!(!lines(&p).iter().any(|l| l.contains("WARNING")), "{:?}", lines(&p));
}

#[test]
fn the_group_and_the_manager_still_need_a_restart() {
    let new = CLUSTERED.replace("  resources: [r0]", "  resources: [r0]\n  preferred: node2");
    let r = refused(plan(&cfg(CLUSTERED), &cfg(&new), "all", &clustered(&["l0"])));
    assert_eq!(r[0].field, "group.preferred");
    assert!(r[0].reason.contains("restart of clusterd"), "{}", r[0].reason);
    // Without a running cluster layer (e.g. under Pacemaker) the cluster section is not live.
    let timers = CLUSTERED.replace("deadtime: 10s", "deadtime: 20s");
    let r = refused(plan(&cfg(CLUSTERED), &cfg(&timers), "all", &running(&["r0"], &[], false)));
    assert_eq!(r[0].field, "cluster.deadtime");
}
