//! Rolling upgrade with two real daemons on loopback: node2 runs as the previous release
//! (`CLUSTERD_TEST_MAX_PROTOCOL=1`: replication protocol 1 only, heartbeats without version fields,
//! no `Version` RPC), node1 as this release. They connect at replication protocol 1, resync,
//! replicate writes both ways, accept each other's heartbeats, hand the group over with `standby`
//! and back with `takeover`; `haadm status` on node1 shows the peer's release and the agreed
//! versions; `haadm version` against the old daemon says what to upgrade (exit 5).

use anyhow::{Context, Result, ensure};
use clusterd::haadm::client::{StartHint, connect};
use ha_tests::{Cluster, NODES, field, free_port, poll_until, resource, write_secret};
use proto::control::{IoWriteRequest, VerbRequest};
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

const SIZE: u64 = 32 << 20;
const OLD: &[(&str, &str)] = &[("CLUSTERD_TEST_MAX_PROTOCOL", "1")];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// One 4 KiB block through node i's engine (a protocol-C write: the peer has it when this returns).
fn write_block(c: &Cluster, i: usize, block: u64, tag: u8) -> Result<()> {
    let socket = c.path(&format!("{}.sock", NODES[i]));
    let hint = StartHint { config: c.config.clone(), node: NODES[i].into() };
    rt().block_on(async {
        let mut client = connect(&socket, &hint).await?;
        let req = IoWriteRequest { resource: "r0".into(), offset: block * 4096, data: vec![tag; 4096], fua: true };
        client.io_write(req).await.with_context(|| format!("write block {block} on {}", NODES[i]))?;
        client.io_flush(VerbRequest { resource: "r0".into(), ..Default::default() }).await?;
        anyhow::Ok(())
    })
}

fn backing_block(c: &Cluster, i: usize, block: u64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(c.path(&format!("{}-data.img", NODES[i])))?;
    f.seek(SeekFrom::Start(block * 4096))?;
    let mut buf = vec![0; 4096];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn cluster_field<'a>(s: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    &s["cluster"][key]
}

fn holding(c: &Cluster, i: usize, node: &str) -> bool {
    c.status(i).is_ok_and(|s| {
        cluster_field(&s, "group_holder") == node
            && cluster_field(&s, "phase") == "holding"
            && resource(&s, "r0").is_some_and(|r| field(&r, "role") == "Primary")
    })
}

fn wait_holding(c: &Cluster, i: usize, node: &str, what: &str) -> Result<()> {
    poll_until(Duration::from_secs(40), || holding(c, i, node).then_some(()))
        .with_context(|| format!("{what}: {node} not holding\n--- node1 ---\n{}\n--- node2 ---\n{}", c.log(0), c.log(1)))
}

fn in_sync(r: &serde_json::Value) -> bool {
    field(r, "connection") == "Connected"
        && field(r, "replication") == "Established"
        && field(r, "disk") == "UpToDate"
        && field(r, "peer_disk") == "UpToDate"
}

#[test]
fn previous_release_peer_replicates_heartbeats_and_hands_over() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-upgrade", None)?;
    let hb = free_port();
    write_secret(&c.path("authkeys"), "auth 1\n1 sha1 upgrade-heartbeat-key\n")?;
    let mut yaml = std::fs::read_to_string(&c.config)?;
    yaml.push_str(&format!(
        "cluster:\n  keepalive: 200ms\n  warntime: 500ms\n  deadtime: 2s\n  initdead: 4s\n  authkeys-file: authkeys\n  links:\n    - name: lo\n      mode: ucast\n      port: {hb}\n      on: {{ node1: {{ address: 127.0.0.1 }}, node2: {{ address: 127.0.0.2 }} }}\ngroup:\n  preferred: node1\n  resources: [r0]\n  portblock: false\n"
    ));
    std::fs::write(&c.config, yaml)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    c.start(0)?;
    c.start_with(1, &[], &[], OLD)?;
    c.wait_r0(0, "connected", Duration::from_secs(30), |r| field(r, "connection") == "Connected")?;
    // Fresh disks on both: node1's data becomes the source of the initial full sync (at protocol 1).
    c.haadm_ok(0, &["primary", "--force", "r0"])?;
    let r = c.wait_r0(0, "initial sync", Duration::from_secs(60), in_sync)?;
    wait_holding(&c, 0, "node1", "start")?;

    // Replication at the old protocol, shown on both sides.
    ensure!(r["agreed_protocol"] == 1 && r["peer_protocol_max"] == 1 && r["protocol_max"] == 4, "node1 r0: {r:#}");
    let s2 = c.status(1)?;
    let r2 = resource(&s2, "r0").unwrap_or_default();
    ensure!(r2["agreed_protocol"] == 1 && r2["protocol_max"] == 1 && r2["peer_protocol_max"] == 4, "node2 r0: {r2:#}");

    // Heartbeats: accepted both ways, nothing dropped; node1 sees a peer without version fields.
    let s1 = c.status(0)?;
    for (i, s) in [&s1, &s2].into_iter().enumerate() {
        let links = cluster_field(s, "links").as_array().cloned().unwrap_or_default();
        ensure!(
            links.iter().all(|l| l["up"] == true && l["dropped"] == 0 && l["packets_ok"].as_u64() > Some(0)),
            "{}: heartbeat links {links:?}",
            NODES[i]
        );
    }
    ensure!(cluster_field(&s1, "heartbeat_version") == 1 && cluster_field(&s1, "peer_software_version") == "", "{s1:#}");
    ensure!(cluster_field(&s2, "peer_software_version") == env!("CARGO_PKG_VERSION"), "node2 sees node1's version: {s2:#}");
    let text = c.haadm_ok(0, &["status"])?;
    ensure!(text.contains("peer:node2 version:unknown(older release) heartbeat-protocol:1"), "{text}");
    ensure!(text.contains("protocol:1 (peer 1..=1, this node 1..=4)"), "{text}");

    // Writes on the Primary (this release) land on the old node's disk.
    write_block(&c, 0, 10, 0xA1)?;
    ensure!(backing_block(&c, 1, 10)? == vec![0xA1; 4096], "node2's backing file lacks node1's write");

    // `haadm version`: the new daemon answers, the old one has no Version RPC.
    let v = c.haadm_ok(0, &["version"])?;
    ensure!(v.contains("control-protocol:1..=2") && v.contains("replication-protocol:1..=4"), "{v}");
    let old = c.haadm(1, &["version"])?;
    let err = String::from_utf8_lossy(&old.stderr);
    ensure!(old.status.code() == Some(5), "haadm version on the old daemon: {:?} {err}", old.status);
    ensure!(err.contains("clusterd on this node is an older release (control protocol 1)") && err.contains("upgrade clusterd"), "{err}");
    // Verbs of the first release still work against it.
    c.haadm_ok(1, &["status"])?;

    // Hand the group to the old node (the step before upgrading node1), write there, take it back.
    c.haadm_ok(0, &["standby"])?;
    wait_holding(&c, 1, "node2", "standby")?;
    c.wait_r0(1, "in sync after standby", Duration::from_secs(30), in_sync)?;
    write_block(&c, 1, 20, 0xB2)?;
    ensure!(backing_block(&c, 0, 20)? == vec![0xB2; 4096], "node1's backing file lacks the old Primary's write");
    c.haadm_ok(0, &["takeover"])?;
    wait_holding(&c, 0, "node1", "takeover")?;
    let r = c.wait_r0(0, "in sync after takeover", Duration::from_secs(30), in_sync)?;
    ensure!(r["agreed_protocol"] == 1, "{r:#}");

    // "Upgrade" node2: restart it without the knob; the link comes back at protocol 2.
    c.stop(1);
    c.start(1)?;
    let r = c.wait_r0(0, "reconnected at protocol 4", Duration::from_secs(30), |r| in_sync(r) && r["agreed_protocol"] == 4)?;
    ensure!(r["peer_protocol_max"] == 4, "{r:#}");
    let s1 = c.status(0)?;
    let peer_version_seen = poll_until(Duration::from_secs(5), || {
        let s = c.status(0).ok()?;
        (cluster_field(&s, "peer_software_version") == env!("CARGO_PKG_VERSION")).then_some(())
    });
    ensure!(peer_version_seen.is_some(), "node1 does not see node2's version after the upgrade: {s1:#}");
    let text = c.haadm_ok(0, &["status"])?;
    ensure!(!text.contains(" protocol:"), "mixed-version field shown on a uniform cluster: {text}");
    ensure!(text.contains(&format!("peer:node2 version:{} heartbeat-protocol:1", env!("CARGO_PKG_VERSION"))), "{text}");
    Ok(())
}
