//! Exact-output tests of `haadm status` rendering (text and JSON) from fixed replies.

use clusterd::haadm::render::{render_status, render_status_json, status_json};
use proto::control::{
    ClusterStatus, GenerationUuids, LinkStatus, NodeStatus, ResourceStats, ResourceStatus, StatusReply, SyncProgress,
};

const MIB: u64 = 1 << 20;

/// Two healthy nodes, nothing to sync.
fn connected_idle() -> ResourceStatus {
    ResourceStatus {
        name: "iscsi.config".into(),
        role: "Primary".into(),
        disk: "UpToDate".into(),
        connection: "Connected".into(),
        replication: "Established".into(),
        peer_role: "Secondary".into(),
        peer_disk: "UpToDate".into(),
        peer_node: "node2".into(),
        local_address: "10.10.2.251:7788".into(),
        peer_address: "10.10.2.252:7788".into(),
        size_bytes: 1024 * MIB,
        stats: Some(ResourceStats {
            read_bytes: 656 * 1024,
            written_bytes: 4 * MIB,
            sent_bytes: 4 * MIB,
            received_bytes: 0,
            al_writes: 2,
            bm_writes: 1,
            pending_peer: 0,
            resync_blocks_sent: 0,
            resync_blocks_received: 0,
            resync_csum_equal_bytes: 0,
        }),
        uuids: Some(GenerationUuids { current: 0x8C2F_19A0_44D1_E001, bitmap: 0, history0: 0x17, history1: 0 }),
        ..Default::default()
    }
}

/// Initial full sync after `primary --overwrite-data-of-peer`, 148 of 256 MiB left.
fn syncing() -> ResourceStatus {
    ResourceStatus {
        name: "iscsi.target.0".into(),
        role: "Primary".into(),
        disk: "UpToDate".into(),
        connection: "Connected".into(),
        replication: "SyncSource".into(),
        peer_role: "Secondary".into(),
        peer_disk: "Inconsistent".into(),
        peer_node: "node2".into(),
        local_address: "10.10.2.251:7789".into(),
        peer_address: "10.10.2.252:7789".into(),
        size_bytes: 256 * MIB,
        out_of_sync_bytes: 148 * MIB,
        sync: Some(SyncProgress {
            done_percent: 42.17,
            total_bytes: 256 * MIB,
            remaining_bytes: 148 * MIB,
            speed_bytes_per_sec: 21_984 * 1024,
            avg_bytes_per_sec: 19_860 * 1024,
            eta_seconds: 13,
            rate_limit_bytes_per_sec: 100 * MIB,
            paused: false,
        }),
        ..Default::default()
    }
}

fn reply(resources: Vec<ResourceStatus>) -> StatusReply {
    StatusReply { node: "node1".into(), resources, ..Default::default() }
}

#[test]
fn connected_idle_omits_established() {
    let text = render_status(&reply(vec![connected_idle()]), false);
    assert_eq!(text, "iscsi.config role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n    peer-disk:UpToDate\n");
}

#[test]
fn connected_idle_verbose_has_statistics_and_uuids() {
    let text = render_status(&reply(vec![connected_idle()]), true);
    let expected = "\
iscsi.config role:Primary suspended:no
  disk:UpToDate
      size:1048576 read:656 written:4096 al-writes:2 bm-writes:1 out-of-sync:0
      gi:8C2F19A044D1E001:0000000000000000:0000000000000017:0000000000000000
  node2 connection:Connected role:Secondary local:10.10.2.251:7788 peer:10.10.2.252:7788
    replication:Established peer-disk:UpToDate resync-suspended:no
        received:0 sent:4096 pending:0 resync-sent:0 resync-received:0 resync-equal:0
";
    assert_eq!(text, expected);
}

#[test]
fn syncing_shows_progress_like_proc_drbd() {
    let text = render_status(&reply(vec![syncing()]), false);
    let expected = "\
iscsi.target.0 role:Primary
  disk:UpToDate
  node2 role:Secondary
    replication:SyncSource peer-disk:Inconsistent done:42.17
        [=======>............] sync'ed: 42.2% (151552/262144)K
        finish: 0:00:13 speed: 21,984 (19,860) K/sec
";
    assert_eq!(text, expected);
}

#[test]
fn sync_target_side_shows_want_and_pause() {
    let mut r = syncing();
    r.role = "Secondary".into();
    r.disk = "Inconsistent".into();
    r.peer_role = "Primary".into();
    r.peer_disk = "UpToDate".into();
    r.replication = "PausedSyncT".into();
    if let Some(sync) = r.sync.as_mut() {
        sync.paused = true;
        sync.speed_bytes_per_sec = 0;
    }
    let text = render_status(&reply(vec![r]), false);
    let expected = "\
iscsi.target.0 role:Secondary
  disk:Inconsistent
  node2 role:Primary
    replication:PausedSyncT peer-disk:UpToDate done:42.17 resync-suspended:yes
        [=======>............] sync'ed: 42.2% (151552/262144)K
        finish: 0:00:13 speed: 0 (19,860) want: 102,400 K/sec
";
    assert_eq!(text, expected);
}

#[test]
fn standalone_split_brain() {
    let r = ResourceStatus {
        connection: "StandAlone".into(),
        replication: "Off".into(),
        peer_role: "Unknown".into(),
        peer_disk: "DUnknown".into(),
        split_brain: true,
        last_error: "split brain detected; after-sb-1pri disconnect: resolve by hand (connect --discard-my-data on the victim)".into(),
        out_of_sync_bytes: 12 * 1024,
        ..connected_idle()
    };
    let text = render_status(&reply(vec![r]), false);
    let expected = "\
iscsi.config role:Primary
  disk:UpToDate
  last-error:split brain detected; after-sb-1pri disconnect: resolve by hand (connect --discard-my-data on the victim)
  node2 connection:StandAlone split-brain:yes
    out-of-sync:12
";
    assert_eq!(text, expected);
}

/// A PR OUT completed while the peer was away: the peer line says its reservations are behind.
#[test]
fn peer_behind_on_reservations() {
    let r = ResourceStatus {
        connection: "Connecting".into(),
        replication: "Off".into(),
        peer_role: "Unknown".into(),
        peer_disk: "DUnknown".into(),
        peer_pr_stale: true,
        ..connected_idle()
    };
    let text = render_status(&reply(vec![r]), false);
    assert!(text.contains("  node2 connection:Connecting reservations:behind\n"), "{text}");
    let value = status_json(&reply(vec![connected_idle()]));
    assert_eq!(value["resources"][0]["peer_pr_stale"], false, "{value:#}");
}

#[test]
fn disconnected_primary_with_out_of_sync() {
    let r = ResourceStatus {
        connection: "Connecting".into(),
        replication: "Off".into(),
        peer_role: "Unknown".into(),
        peer_disk: "DUnknown".into(),
        out_of_sync_bytes: 37 * MIB,
        suspended: true,
        ..connected_idle()
    };
    let text = render_status(&reply(vec![r.clone()]), false);
    let expected = "\
iscsi.config role:Primary suspended:yes
  disk:UpToDate
  node2 connection:Connecting
    out-of-sync:37888
";
    assert_eq!(text, expected);

    // Verbose shows the amount on the device statistics line and the peer-device line anyway.
    let verbose = render_status(&reply(vec![r]), true);
    assert!(verbose.contains(" out-of-sync:37888\n"), "{verbose}");
    assert!(verbose.contains("  node2 connection:Connecting local:10.10.2.251:7788 peer:10.10.2.252:7788\n"), "{verbose}");
    assert!(verbose.contains("    replication:Off peer-disk:DUnknown resync-suspended:no\n"), "{verbose}");
}

#[test]
fn several_resources_are_separated_by_a_blank_line() {
    let text = render_status(&reply(vec![connected_idle(), syncing()]), false);
    assert!(
        text.starts_with("iscsi.config role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n    peer-disk:UpToDate\n\niscsi.target.0 role:Primary\n"),
        "{text}"
    );
    assert_eq!(render_status(&reply(vec![]), false), "no resources on node1\n");
}

#[test]
fn cluster_summary_when_present() {
    let mut r = reply(vec![connected_idle()]);
    r.cluster = Some(ClusterStatus {
        generation: 7,
        group_holder: "node1".into(),
        nodes: vec![
            NodeStatus { name: "node1".into(), online: true, standby: false },
            NodeStatus { name: "node2".into(), online: true, standby: true },
        ],
        links: vec![
            LinkStatus {
                name: "bond1".into(),
                up: true,
                last_heard_ms_ago: 120,
                largest_gap_ms: 900,
                heard: true,
                packets_ok: 42,
                ..Default::default()
            },
            LinkStatus {
                name: "bond0".into(),
                up: false,
                dropped: 3,
                dropped_detail: "bad_mac=3".into(),
                ..Default::default()
            },
        ],
        epoch: 4,
        phase: "holding".into(),
        split_brain_warning: "both may hold".into(),
        ..Default::default()
    });
    let text = render_status(&r, false);
    assert!(
        text.starts_with(
            "cluster generation:7 group-holder:node1 epoch:4 phase:holding\n  WARNING split brain: both may hold\n  online: [ node1 ]\n  standby: [ node2 ]\n  link bond1 up last-heard:120ms largest-gap:900ms ok:42 dropped:0\n  link bond0 down last-heard:never largest-gap:0ms ok:0 dropped:3 (bad_mac=3)\n\niscsi.config role:Primary\n"
        ),
        "{text}"
    );
}

#[test]
fn json_shape() {
    let value = status_json(&reply(vec![syncing(), connected_idle()]));
    assert_eq!(value["node"], "node1");
    let resources = value["resources"].as_array().expect("resources array");
    assert_eq!(resources.len(), 2);
    let r0 = &resources[0];
    assert_eq!(r0["name"], "iscsi.target.0");
    assert_eq!(r0["role"], "Primary");
    assert_eq!(r0["replication"], "SyncSource");
    assert_eq!(r0["peer_node"], "node2");
    assert_eq!(r0["size_bytes"], 256 * MIB);
    assert_eq!(r0["out_of_sync_bytes"], 148 * MIB);
    assert_eq!(r0["sync"]["active"], true);
    assert_eq!(r0["sync"]["done_percent"], 42.17);
    assert_eq!(r0["sync"]["remaining_bytes"], 148 * MIB);
    assert_eq!(r0["sync"]["rate_limit_bytes_per_sec"], 100 * MIB);
    assert_eq!(r0["split_brain"], false);
    let r1 = &resources[1];
    assert_eq!(r1["sync"]["active"], false);
    assert_eq!(r1["stats"]["al_writes"], 2);
    assert_eq!(r1["uuids"]["current"], "8C2F19A044D1E001");
    assert_eq!(r1["uuids"]["history0"], "0000000000000017");
    assert!(value["cluster"]["nodes"].as_array().is_some_and(|n| n.is_empty()));
    assert!(value["sessions"].as_array().is_some_and(|s| s.is_empty()));

    // The printed form is that value, pretty-printed, and parses back to it.
    let text = render_status_json(&reply(vec![syncing(), connected_idle()]));
    assert!(text.ends_with("}\n"));
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(parsed, value);
}

/// issue 18 verify: the last verify and the next scheduled one, in text and JSON.
#[test]
fn last_and_next_verify_are_shown() {
    use clusterd::haadm::render::{render_resource, utc, verify_line};
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_796_556_981), "2026-12-06 11:36:21 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    let mut r = connected_idle();
    assert_eq!(verify_line(&r), None);
    r.last_verify = Some(proto::control::LastVerify {
        finished_unix: 1_796_556_981,
        duration_ms: 4_200,
        checked_bytes: 64 * MIB,
        found_bytes: 12 * 1024,
        completed: true,
        repair: true,
        scheduled: true,
    });
    r.next_verify_unix = 1_796_556_981 + 7 * 86_400;
    let line = "verify: last 2026-12-06 11:36:21 UTC (4.2 s, 65536 checked, 12 out-of-sync, repaired, scheduled) next 2026-12-13 11:36:21 UTC";
    assert_eq!(verify_line(&r).as_deref(), Some(line));
    assert!(render_resource(&r, false).ends_with(&format!("  {line}\n")), "{}", render_resource(&r, false));
    let reply = StatusReply { resources: vec![r], ..Default::default() };
    let j = status_json(&reply);
    assert_eq!(j["resources"][0]["last_verify"]["found_bytes"], 12 * 1024);
    assert_eq!(j["resources"][0]["last_verify"]["scheduled"], true);
    assert_eq!(j["resources"][0]["next_verify_unix"], 1_796_556_981u64 + 7 * 86_400);
}

/// issue 18 protocol A: one line with the lag and the counters, only for a protocol-A resource; one
/// line for the resync controller, only while it runs a resync.
#[test]
fn protocol_a_lag_and_controller_lines() {
    use clusterd::haadm::render::{async_line, controller_line, render_resource};
    use proto::control::{AsyncLag, ResyncController};
    let c = connected_idle();
    assert_eq!((async_line(&c), controller_line(&c)), (None, None), "protocol C, no resync: nothing");
    assert!(!render_resource(&c, false).contains("protocol:A"));
    let mut a = connected_idle();
    a.replication_protocol = "A".into();
    a.async_lag = Some(AsyncLag { bytes: 8192, writes: 2, oldest_age_ms: 120, early_acks: 1234, lag_waits: 3 });
    let line = "protocol:A lag:8 (2 writes, oldest 120 ms) early-acks:1234 lag-waits:3";
    assert_eq!(async_line(&a).as_deref(), Some(line));
    assert!(render_resource(&a, false).contains(&format!("\n  {line}\n")), "{}", render_resource(&a, false));
    a.async_lag = Some(AsyncLag { early_acks: 5, ..Default::default() });
    assert_eq!(async_line(&a).as_deref(), Some("protocol:A lag:0 early-acks:5 lag-waits:0"));
    let mut gone = a.clone();
    gone.async_promotion_needs_force = true;
    assert!(async_line(&gone).is_some_and(|l| l.ends_with("failover:needs-force (the peer is gone and may have had writes this node lacks; net.allow-async-failover: off)")));

    let mut s = syncing();
    s.resync_controller = Some(ResyncController {
        budget_bytes: 4 * MIB,
        fill_target_bytes: 16 * MIB,
        baseline_p99_us: 300,
        last_p99_us: 350,
        throttling: true,
        probing: false,
    });
    let line = "resync-controller: budget:4096 fill-target:16384 app-p99:350us baseline-p99:300us throttling:yes";
    assert_eq!(controller_line(&s).as_deref(), Some(line));
    assert!(render_resource(&s, false).contains(&format!("\n  {line}\n")), "{}", render_resource(&s, false));
    s.resync_controller = Some(ResyncController { probing: true, throttling: true, fill_target_bytes: 16 * MIB, ..Default::default() });
    assert_eq!(
        controller_line(&s).as_deref(),
        Some("resync-controller: budget:0 fill-target:16384 app-p99:- baseline-p99:- throttling:probe")
    );

    let j = status_json(&StatusReply { resources: vec![a, s, c], ..Default::default() });
    assert_eq!(j["resources"][0]["replication_protocol"], "A");
    assert_eq!(j["resources"][0]["async_lag"]["early_acks"], 5);
    assert_eq!(j["resources"][1]["resync_controller"]["probing"], true);
    assert!(j["resources"][2]["async_lag"].is_null() && j["resources"][2]["resync_controller"].is_null());
}
