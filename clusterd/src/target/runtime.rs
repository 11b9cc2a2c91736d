//! A running embedded target: its listeners, sessions and a clean stop.

use super::assemble::{Assembled, LunSummary};
use anyhow::{Context, Result};
use iscsi_target::server::{SessionInfo, TargetServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TargetRuntime {
    server: Arc<TargetServer>,
    luns: Vec<LunSummary>,
    /// ALUA states of its targets, by failover group (issue 17).
    alua: Vec<(String, Arc<iscsi_target::scsi::alua::Alua>)>,
    portals: Vec<SocketAddr>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

/// Listen on `addr` with SO_REUSEADDR, so a restart (or a failback) does not wait for TIME_WAIT.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .with_context(|| format!("socket for portal {addr}"))?;
    sock.set_reuseaddr(true).with_context(|| format!("SO_REUSEADDR on portal {addr}"))?;
    sock.set_nodelay(true).ok();
    sock.bind(addr).with_context(|| format!("bind iSCSI portal {addr}"))?;
    sock.listen(1024).with_context(|| format!("listen on iSCSI portal {addr}"))
}

impl TargetRuntime {
    /// Binds every portal first (all or nothing), then serves.
    pub fn start(assembled: Assembled) -> Result<TargetRuntime> {
        let portals = assembled.server.portals.clone();
        let listeners = portals.iter().map(|p| listen(*p)).collect::<Result<Vec<_>>>()?;
        let server = Arc::new(TargetServer::new(assembled.server));
        let cancel = CancellationToken::new();
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(Arc::clone(&server).serve(l, cancel.child_token())))
            .collect();
        for p in &portals {
            tracing::info!(portal = %p, "iSCSI target listening");
        }
        Ok(TargetRuntime { server, luns: assembled.luns, alua: assembled.alua, portals, cancel, tasks })
    }

    /// Stops accepting, closes every session after its in-flight commands, and waits (bounded).
    pub async fn stop(self, limit: Duration) {
        self.cancel.cancel();
        for t in self.tasks {
            match tokio::time::timeout(limit, t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!("iSCSI portal ended with an error: {e}"),
                Ok(Err(e)) => tracing::warn!("iSCSI portal task failed: {e}"),
                Err(_) => tracing::warn!("iSCSI sessions still draining after {limit:?}; leaving them to be dropped"),
            }
        }
        tracing::info!("iSCSI target stopped");
    }

    /// `haadm adjust`: new logins use `assembled` (the portals stay bound as they are).
    pub fn reconfigure(&mut self, assembled: Assembled) {
        self.server.reconfigure(assembled.server);
        self.luns = assembled.luns;
        self.alua = assembled.alua;
    }

    /// The configuration new logins use.
    pub fn server_config(&self) -> Arc<iscsi_target::server::ServerConfig> {
        self.server.config()
    }

    /// Async Message "logout requested" to every session (graceful hand-over).
    pub fn request_logout_all(&self, time2wait: u16) -> usize {
        self.server.request_logout_all(time2wait)
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.server.sessions()
    }

    pub fn luns(&self) -> &[LunSummary] {
        &self.luns
    }

    /// The ALUA states of this runtime's targets, by failover group.
    pub fn alua(&self) -> &[(String, Arc<iscsi_target::scsi::alua::Alua>)] {
        &self.alua
    }

    pub fn portals(&self) -> &[SocketAddr] {
        &self.portals
    }
}
