//! Serves a file (or block device) as LUN 0 of one iSCSI target, for trying real initiators:
//!
//! `cargo run -p iscsi-target --example serve_file -- <path> [port] [iqn]`
//!
//! Then e.g. `iscsi-ls iscsi://127.0.0.1:3260/` or `iscsi-inq iscsi://127.0.0.1:3260/<iqn>/0`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use iscsi_target::backend::FileBackend;
use iscsi_target::login::TargetParams;
use iscsi_target::scsi::{LogicalUnit, LunIdentity, MemPrStore, ScsiTarget};
use iscsi_target::server::{Acl, ServerConfig, TargetConfig, TargetServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: serve_file <path> [port] [iqn]")?);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(3260);
    let iqn = args
        .next()
        .unwrap_or_else(|| "iqn.2026-01.example.serve-file:disk0".to_string());

    let backend = Arc::new(FileBackend::open(&path, false)?);
    let identity = LunIdentity {
        vendor: "EXAMPLE".into(),
        product: "SERVE_FILE".into(),
        revision: "0001".into(),
        serial: "EXAMPLE0001".into(),
        naa: 0x6001_4050_0000_0001,
        naa_ext: 0x0000_0000_0000_0001,
        target_port_group: 1,
        // WRITE_CACHE=1 runs with a write-back cache (WCE=1, like tgt's default): writes complete
        // before they are durable and SYNCHRONIZE CACHE / FUA make them so.
        write_cache: std::env::var_os("WRITE_CACHE").is_some_and(|v| v == "1"),
        thin: true,
    };
    let lu = LogicalUnit::new(identity, backend, 512, Arc::new(MemPrStore::new()))?;
    let mut luns = BTreeMap::new();
    luns.insert(0, Arc::new(lu));
    let scsi = Arc::new(ScsiTarget::new(iqn.clone(), luns));

    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(addr).await?;
    let target = TargetConfig {
        iqn: iqn.clone(),
        alias: None,
        tpgt: 1,
        scsi,
        acl: Acl::default(),
        chap: None,
        mutual_chap: None,
        params: TargetParams {
            initial_r2t: std::env::var_os("INITIAL_R2T").is_some(),
            ..TargetParams::default()
        },
        portal_groups: Vec::new(),
    };
    let server = Arc::new(TargetServer::new(ServerConfig::new(
        vec![listener.local_addr()?],
        vec![target],
    )));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    eprintln!(
        "serving {} as {iqn} on {}",
        path.display(),
        listener.local_addr()?
    );
    server.serve(listener, shutdown).await?;
    Ok(())
}
