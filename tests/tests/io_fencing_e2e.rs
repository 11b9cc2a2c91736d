//! `fencing: resource-and-stonith` on a resource outside any failover group, two real `clusterd`
//! processes on loopback: when the Secondary dies, the Primary suspends I/O (a write is not acknowledged
//! while no one can vouch that the peer will not be promoted with stale data), status says so, and
//! `haadm resume-io` releases it.

use anyhow::{Context, ensure, Result};
use clusterd::haadm::client::{connect, StartHint};
use ha_tests::{field, Cluster, NODES};
use proto::control::IoWriteRequest;
use std::time::Duration;

#[test]
fn primary_suspends_io_when_the_peer_dies_until_resume_io() -> Result<()> {
    let mut c = Cluster::new(32 << 20, "s3cret-fence", None)?;
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replacen("    protocol: C\n", "    protocol: C\n    disk:\n      fencing: resource-and-stonith\n", 1))?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "in sync", Duration::from_secs(30), |r| field(r, "disk") == "UpToDate")?;
    let out = c.haadm_ok(0, &["resume-io", "r0"])?;
    ensure!(out.contains("not suspended"), "{out}");

    c.kill9(1);
    c.wait_r0(0, "peer lost", Duration::from_secs(20), |r| field(r, "connection") != "Connected")?;
    let socket = c.path(&format!("{}.sock", NODES[0]));
    let hint = StartHint { config: c.config.clone(), node: NODES[0].into() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let write = rt.spawn(async move {
        let mut client = connect(&socket, &hint).await?;
        client.io_write(IoWriteRequest { resource: "r0".into(), offset: 8192, data: vec![0x5A; 4096], fua: false }).await?;
        anyhow::Ok(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(!write.is_finished(), "a write was acknowledged while the peer was lost with fencing resource-and-stonith");
    let r = c.wait_r0(0, "suspended in status", Duration::from_secs(5), |r| r["suspended"] == serde_json::Value::Bool(true))?;
    ensure!(field(&r, "role") == "Primary", "{r:#}");
    ensure!(c.log(0).contains("I/O suspended"), "{}", c.log(0));

    let out = c.haadm_ok(0, &["resume-io", "r0"])?;
    ensure!(out.contains("I/O resumed") && out.contains("1 held"), "{out}");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), write).await })
        .context("the held write did not complete after resume-io")???;
    c.wait_r0(0, "resumed in status", Duration::from_secs(5), |r| r["suspended"] != serde_json::Value::Bool(true))?;
    Ok(())
}
