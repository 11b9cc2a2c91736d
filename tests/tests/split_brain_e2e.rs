//! Issue 15: guided split-brain recovery and `wait-connect`, between two real clusterd processes on
//! loopback. A split brain is forced (disconnect, both Primary, different blocks written on each,
//! reconnect); `haadm split-brain r0` shows both sides and recommends the side that changed less;
//! `haadm split-brain r0 --keep node2 --save-victim FILE` run on node1 resolves it: both Connected
//! and UpToDate, both backing files identical and holding node2's data, and FILE holding exactly
//! node1's diverged blocks (every other block a hole reading as zeroes). A second split brain is
//! resolved from the survivor (`--keep node2` on node2, refused while node1 is Primary). Also the
//! wrong uses and `wait-connect`.

use anyhow::{Context, Result, ensure};
use clusterd::haadm::client::{StartHint, connect};
use ha_tests::{Cluster, NODES, field, sha1_file};
use proto::control::{IoWriteRequest, VerbRequest};
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const SIZE: u64 = 32 << 20;
const BLOCK: u64 = 4096;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The content node `tag` writes into block `b`: names both.
fn content(b: u64, tag: u8) -> Vec<u8> {
    let mut data = vec![tag; BLOCK as usize];
    data[..8].copy_from_slice(&b.to_le_bytes());
    data
}

fn write_blocks(c: &Cluster, i: usize, blocks: &BTreeSet<u64>, tag: u8) -> Result<()> {
    let socket = c.path(&format!("{}.sock", NODES[i]));
    let hint = StartHint { config: c.config.clone(), node: NODES[i].into() };
    rt().block_on(async {
        let mut client = connect(&socket, &hint).await?;
        for &b in blocks {
            let req = IoWriteRequest { resource: "r0".into(), offset: b * BLOCK, data: content(b, tag), fua: false };
            client.io_write(req).await.with_context(|| format!("write block {b} on {}", NODES[i]))?;
        }
        client.io_flush(VerbRequest { resource: "r0".into(), ..Default::default() }).await?;
        anyhow::Ok(())
    })
}

fn read_block(f: &std::fs::File, b: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK as usize];
    f.read_exact_at(&mut buf, b * BLOCK)?;
    Ok(buf)
}

fn connected_uptodate(r: &serde_json::Value) -> bool {
    field(r, "connection") == "Connected" && field(r, "disk") == "UpToDate" && field(r, "peer_disk") == "UpToDate" && field(r, "replication") == "Established"
}

#[test]
fn forced_split_brain_is_shown_and_resolved_keeping_node2_with_node1s_blocks_saved() -> Result<()> {
    let mut c = Cluster::new(SIZE, "sb-secret", None)?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "initial sync", Duration::from_secs(60), connected_uptodate)?;
    // wait-connect on a connected resource returns at once.
    let out = c.haadm_ok(0, &["wait-connect", "r0", "--timeout", "5s"])?;
    ensure!(out.contains("connected"), "{out}");

    // Nothing to resolve yet.
    let shown = c.haadm_ok(0, &["split-brain", "r0"])?;
    ensure!(shown.contains("no split brain recorded"), "{shown}");
    c.haadm_fails(0, &["split-brain", "r0", "--keep", "node2"], 1, "no unresolved split brain")?;

    // Common data before the split, then the split: both Primary, different blocks on each.
    let common: BTreeSet<u64> = (0..16).map(|b| b * 97).collect();
    write_blocks(&c, 0, &common, 0xC0)?;
    c.haadm_ok(0, &["disconnect", "r0"])?;
    c.haadm_ok(1, &["disconnect", "r0"])?;
    // wait-connect on a StandAlone resource says why it cannot get there (exit 1).
    c.haadm_fails(1, &["wait-connect", "r0", "--timeout", "5s"], 1, "StandAlone")?;
    c.haadm_ok(1, &["primary", "r0"])?;
    let node1_blocks: BTreeSet<u64> = [3, 200, 1000, 4095, 5000].into_iter().collect();
    let node2_blocks: BTreeSet<u64> = (0..64).map(|b| 100 + b * 31).chain([200, 1000]).collect();
    write_blocks(&c, 0, &node1_blocks, 0x11)?;
    write_blocks(&c, 1, &node2_blocks, 0x22)?;
    c.haadm_ok(0, &["connect", "r0"])?;
    c.haadm_ok(1, &["connect", "r0"])?;
    for i in 0..2 {
        c.wait_r0(i, "split brain detected", Duration::from_secs(20), |r| r["split_brain"] == true && field(r, "connection") == "StandAlone")?;
    }
    c.haadm_fails(0, &["wait-connect", "r0", "--timeout", "5s"], 1, "split brain")?;

    // Both nodes show both sides and agree on the victim: node1 changed less.
    for (i, node) in NODES.iter().enumerate() {
        let shown = c.haadm_ok(i, &["split-brain", "r0"])?;
        eprintln!("{node}:\n{shown}");
        ensure!(shown.contains("SPLIT BRAIN"), "{shown}");
        ensure!(shown.contains(&format!("{} blocks", node1_blocks.len())), "node1's changes missing: {shown}");
        ensure!(shown.contains(&format!("{} blocks", node2_blocks.len())), "node2's changes missing: {shown}");
        ensure!(shown.contains("recommended victim: node1") && shown.contains("changed less"), "{shown}");
        ensure!(shown.contains("--keep node2"), "{shown}");
        ensure!(shown.contains("diverged from generation") && !shown.contains("diverged from generation none"), "{shown}");
    }

    // Wrong uses: unknown resource, a node that is not in the resource, --save-victim on the
    // survivor, --keep from the survivor while the victim is still Primary, --save-victim without
    // --keep.
    c.haadm_fails(0, &["split-brain", "nosuch"], 1, "nosuch")?;
    c.haadm_fails(0, &["split-brain", "r0", "--keep", "node9"], 1, "not a node of r0")?;
    c.haadm_fails(1, &["split-brain", "r0", "--keep", "node2", "--save-victim", "/tmp/x.img"], 1, "on the victim node1")?;
    c.haadm_fails(1, &["split-brain", "r0", "--keep", "node2"], 1, "node1 is Primary")?;
    c.haadm_fails(0, &["split-brain", "r0", "--save-victim", "x.img"], 2, "--keep")?;
    // The probes between the two unresolved nodes changed nothing.
    for i in 0..2 {
        let r = c.wait_r0(i, "still split", Duration::from_secs(5), |r| r["split_brain"] == true)?;
        ensure!(field(&r, "connection") == "StandAlone", "{r:#}");
    }

    // Resolve from the victim, saving its changes.
    let saved = c.path("node1-diverged.img");
    let out = c.haadm_ok(0, &["split-brain", "r0", "--keep", "node2", "--save-victim", saved.to_str().context("path")?])?;
    eprintln!("{out}");
    ensure!(out.contains("resolved") && out.contains(&format!("{} changed block(s)", node1_blocks.len())), "{out}");
    for i in 0..2 {
        c.wait_r0(i, "resolved and in sync", Duration::from_secs(60), connected_uptodate)?;
    }
    let r1 = c.status(0)?;
    ensure!(ha_tests::resource(&r1, "r0").is_some_and(|r| field(&r, "role") == "Secondary"), "the victim must end Secondary: {r1:#}");
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ after the resolution ({a} vs {b})");

    // node2's data won everywhere, and node1's own blocks are in the saved image, nothing else.
    let data1 = std::fs::File::open(c.path("node1-data.img"))?;
    for &blk in &node2_blocks {
        ensure!(read_block(&data1, blk)? == content(blk, 0x22), "block {blk} is not node2's");
    }
    let zero = vec![0u8; BLOCK as usize];
    for &blk in node1_blocks.difference(&node2_blocks) {
        // node2 never wrote these (nor the common data): they are zero again.
        ensure!(!common.contains(&blk) && read_block(&data1, blk)? == zero, "block {blk}: node1's write survived");
    }
    let img = std::fs::File::open(&saved)?;
    ensure!(img.metadata()?.len() == SIZE, "the saved image has the volume's size");
    for blk in 0..SIZE / BLOCK {
        let got = read_block(&img, blk)?;
        if node1_blocks.contains(&blk) {
            ensure!(got == content(blk, 0x11), "saved block {blk} is not what node1 wrote");
        } else {
            ensure!(got == zero, "saved image holds block {blk}, which node1 did not change");
        }
    }
    // Sparse: only the saved blocks take space.
    use std::os::unix::fs::MetadataExt;
    ensure!(img.metadata()?.blocks() * 512 <= 64 * BLOCK, "the saved image is not sparse ({} bytes allocated)", img.metadata()?.blocks() * 512);

    // A second split brain, resolved from the survivor this time: once the victim is Secondary,
    // `--keep node2` on node2 alone makes node1 discard.
    c.haadm_ok(0, &["disconnect", "r0"])?;
    c.haadm_ok(1, &["disconnect", "r0"])?;
    c.haadm_ok(0, &["primary", "r0"])?;
    let again1: BTreeSet<u64> = [7, 300].into_iter().collect();
    let again2: BTreeSet<u64> = [300, 301, 302].into_iter().collect();
    write_blocks(&c, 0, &again1, 0x33)?;
    write_blocks(&c, 1, &again2, 0x44)?;
    c.haadm_ok(0, &["connect", "r0"])?;
    c.haadm_ok(1, &["connect", "r0"])?;
    for i in 0..2 {
        c.wait_r0(i, "second split brain", Duration::from_secs(20), |r| r["split_brain"] == true && field(r, "connection") == "StandAlone")?;
    }
    c.haadm_fails(1, &["split-brain", "r0", "--keep", "node2"], 1, "node1 is Primary")?;
    c.haadm_ok(0, &["secondary", "r0"])?;
    let out = c.haadm_ok(1, &["split-brain", "r0", "--keep", "node2"])?;
    ensure!(out.contains("resolved"), "{out}");
    for i in 0..2 {
        c.wait_r0(i, "second resolution in sync", Duration::from_secs(60), connected_uptodate)?;
    }
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ after the second resolution ({a} vs {b})");
    ensure!(read_block(&data1, 7)? == zero && read_block(&data1, 300)? == content(300, 0x44), "node1 kept its changes");
    Ok(())
}

#[test]
fn wait_connect_times_out_and_reports_clusterd_not_running() -> Result<()> {
    let mut c = Cluster::new(SIZE, "wc-secret", None)?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    // clusterd not running: exit 3, for both verbs.
    c.haadm_fails(0, &["wait-connect", "r0", "--timeout", "1s"], 3, "")?;
    c.haadm_fails(0, &["split-brain", "r0"], 3, "")?;
    // Only node1 up: Connecting until the timeout (exit 4).
    c.start(0)?;
    c.haadm_fails(0, &["wait-connect", "r0", "--timeout", "1s"], 4, "not connected after")?;
    c.haadm_fails(0, &["wait-connect", "nosuch", "--timeout", "1s"], 1, "nosuch")?;
    // The peer comes up: wait-connect returns once Connected.
    c.start(1)?;
    let out = c.haadm_ok(0, &["wait-connect", "r0", "--timeout", "20s"])?;
    ensure!(out.contains("r0: connected"), "{out}");
    Ok(())
}
