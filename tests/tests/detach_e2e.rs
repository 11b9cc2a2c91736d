//! `on-io-error detach` with a real disk error, between two real `clusterd` processes on loopback. The
//! Primary runs with a file-size limit (RLIMIT_FSIZE) of half its backing file, so the kernel fails
//! every write to the upper half with EFBIG, as a failing disk would. Checked: the first such write
//! still succeeds for the client (the Primary detaches its disk and the write is served by the peer);
//! status shows the Primary Diskless and still Connected, the peer UpToDate with the Primary's disk
//! Diskless; later reads and writes, in both halves, go to the peer; the peer's backing file holds
//! every acknowledged block. Then the repair: the Primary role moves to the survivor, the failed node
//! restarts without the limit and is resynced fully, and both backing files end identical.

use anyhow::{ensure, Context, Result};
use clusterd::haadm::client::{connect, StartHint};
use ha_tests::{field, sha1_file, Cluster, NODES};
use proto::control::{IoReadRequest, IoWriteRequest, VerbRequest};
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

const SIZE: u64 = 64 << 20;
const LIMIT: u64 = SIZE / 2;

fn block(b: u64, tag: u8) -> Vec<u8> {
    let mut data = vec![tag; 4096];
    data[..8].copy_from_slice(&b.to_le_bytes());
    data
}

/// Write the blocks through node i, flush, and read each back through node i.
fn write_and_read(c: &Cluster, i: usize, blocks: &[u64], tag: u8) -> Result<()> {
    let socket = c.path(&format!("{}.sock", NODES[i]));
    let hint = StartHint { config: c.config.clone(), node: NODES[i].into() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut client = connect(&socket, &hint).await?;
        for &b in blocks {
            let req = IoWriteRequest { resource: "r0".into(), offset: b * 4096, data: block(b, tag), fua: false };
            client.io_write(req).await.with_context(|| format!("write block {b} through {}", NODES[i]))?;
        }
        client.io_flush(VerbRequest { resource: "r0".into(), ..Default::default() }).await.context("flush")?;
        for &b in blocks {
            let r = client.io_read(IoReadRequest { resource: "r0".into(), offset: b * 4096, length: 4096 }).await?;
            ensure!(r.into_inner().data == block(b, tag), "block {b} read back through {} differs", NODES[i]);
        }
        anyhow::Ok(())
    })
}

fn on_disk(c: &Cluster, node: usize, b: u64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(c.path(&format!("{}-data.img", NODES[node])))?;
    f.seek(SeekFrom::Start(b * 4096))?;
    let mut buf = vec![0u8; 4096];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn a_write_error_detaches_the_primarys_disk_and_the_peer_serves_on() -> Result<()> {
    let mut c = Cluster::new(SIZE, "s3cret-detach", None)?;
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replace("    syncer:\n", "    disk:\n      on-io-error: detach\n    syncer:\n"))?;
    for i in 0..2 {
        c.haadm_ok(i, &["create-md", "r0"])?;
    }
    // node1: writes at or beyond LIMIT fail with EFBIG (SIGXFSZ ignored, as it must be for the
    // error to reach the process instead of killing it).
    let script = format!("trap '' XFSZ; exec prlimit --fsize={LIMIT} -- \"$0\" \"$@\"");
    c.start_wrapped(0, &["sh", "-c", &script])?;
    c.start(1)?;
    c.wait_r0(1, "connected", Duration::from_secs(20), |r| field(r, "connection") == "Connected")?;
    c.haadm_ok(0, &["primary", "--force", "r0"])?;
    c.wait_r0(1, "initial sync", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;

    // Below the limit: an ordinary replicated write.
    let low: Vec<u64> = (0..8).map(|k| k * 97 + 3).collect();
    write_and_read(&c, 0, &low, 0x11)?;
    let s = c.wait_r0(0, "UpToDate", Duration::from_secs(5), |r| field(r, "disk") == "UpToDate")?;
    ensure!(field(&s, "role") == "Primary", "{s:#}");

    // Above the limit: the local write fails, the client does not notice.
    let high: Vec<u64> = (0..8).map(|k| LIMIT / 4096 + k * 131 + 5).collect();
    write_and_read(&c, 0, &high, 0x22)?;
    let p = c.wait_r0(0, "Diskless", Duration::from_secs(5), |r| field(r, "disk") == "Diskless")?;
    ensure!(field(&p, "role") == "Primary" && field(&p, "connection") == "Connected", "the detached Primary must keep serving: {p:#}");
    let s = c.wait_r0(1, "peer Diskless", Duration::from_secs(5), |r| field(r, "peer_disk") == "Diskless")?;
    ensure!(field(&s, "disk") == "UpToDate", "{s:#}");
    let log = c.log(0);
    ensure!(log.contains("disk detached") && log.contains("File too large"), "the detach and its cause must be logged: {log}");

    // Everything now goes to the peer, in both halves (a low block rewritten, new low blocks too).
    let more: Vec<u64> = low.iter().map(|b| b + 1).chain([low[0]]).collect();
    write_and_read(&c, 0, &more, 0x33)?;
    for &b in low.iter().skip(1) {
        ensure!(on_disk(&c, 1, b)? == block(b, 0x11), "peer lost block {b}");
    }
    for &b in &high {
        ensure!(on_disk(&c, 1, b)? == block(b, 0x22), "peer lost block {b}");
        ensure!(on_disk(&c, 0, b)? != block(b, 0x22), "block {b} cannot be on the failing disk");
    }
    for &b in &more {
        ensure!(on_disk(&c, 1, b)? == block(b, 0x33), "peer lost block {b}");
    }

    // Repair: the survivor takes over, the failed node comes back without the fault and resyncs.
    c.haadm_ok(0, &["secondary", "r0"])?;
    c.wait_r0(1, "peer Secondary", Duration::from_secs(5), |r| field(r, "peer_role") == "Secondary")?;
    c.haadm_ok(1, &["primary", "r0"])?;
    c.stop(0);
    c.start(0)?;
    c.wait_r0(0, "resynced", Duration::from_secs(60), |r| field(r, "disk") == "UpToDate" && field(r, "replication") == "Established")?;
    let (a, b) = (sha1_file(&c.path("node1-data.img"))?, sha1_file(&c.path("node2-data.img"))?);
    ensure!(a == b, "backing files differ after the repair: {a} vs {b}");
    Ok(())
}
