//! The iSCSI target server: listener, target registry, ACLs, SendTargets discovery and the session
//! registry used for reinstatement, `haadm target show` and planned switch-over (Async logout request).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::login::{
    ChapAccount, LoginDirectory, LoginTarget, SessionParams, TargetLookup, TargetParams,
};
use crate::pdu::{AsyncMessage, Pdu};
use crate::scsi::{ScsiTarget, TargetPort};
use crate::session::{self, Outbound, SessionIo, Stat};
use crate::stats::TargetStats;

/// Which initiators may log in to a target. Both lists empty = everyone; a non-empty list must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Allowed initiator IQNs (exact, case-insensitive as iSCSI names are normalised lower case).
    pub initiators: Vec<String>,
    /// Allowed source networks as (address, prefix length).
    pub networks: Vec<(IpAddr, u8)>,
}

fn in_network(peer: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let peer = match (peer, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        _ => peer,
    };
    match (peer, net) {
        (IpAddr::V4(p), IpAddr::V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(p) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(p) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Acl {
    pub fn allows(&self, initiator: &str, peer: IpAddr) -> bool {
        let name_ok = self.initiators.is_empty()
            || self
                .initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(initiator));
        let net_ok =
            self.networks.is_empty() || self.networks.iter().any(|(n, p)| in_network(peer, *n, *p));
        name_ok && net_ok
    }
}

/// One target portal group (RFC 7143 §4.4.1): the portals a target is reached through with one TPGT.
/// In an HA pair each node's portals form a group, so the two paths are two SCSI target ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalGroup {
    pub tpgt: u16,
    /// `ip:port` portals; an unspecified IP matches a connection on that port at any address (and is
    /// advertised as the address a discovery connection arrived on).
    pub portals: Vec<SocketAddr>,
}

/// One exported target.
#[derive(Clone)]
pub struct TargetConfig {
    pub iqn: String,
    pub alias: Option<String>,
    /// The TPGT of every login when `portal_groups` is empty.
    pub tpgt: u16,
    pub scsi: Arc<ScsiTarget>,
    pub acl: Acl,
    pub chap: Option<ChapAccount>,
    pub mutual_chap: Option<ChapAccount>,
    pub params: TargetParams,
    /// Empty: one portal group, `tpgt`, reached through every portal of [`ServerConfig::portals`].
    /// Non-empty: SendTargets lists every portal of every group (including the peer node's, which
    /// this node does not bind) with its group's TPGT, a login takes the TPGT of the group holding
    /// the local address it arrived on, and a login on an address in no group is refused (status
    /// 02/03 "not found": the target does not exist at that address, RFC 7143 §11.13.5).
    pub portal_groups: Vec<PortalGroup>,
}

impl TargetConfig {
    /// The TPGT of a connection arriving on `local`: `tpgt` without portal groups, else the group
    /// with `local` as a portal (exact `ip:port` first, then an unspecified-IP portal on that port);
    /// None if no group has it.
    pub fn tpgt_for_local(&self, local: SocketAddr) -> Option<u16> {
        if self.portal_groups.is_empty() {
            return Some(self.tpgt);
        }
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let exact =
            |p: &SocketAddr| p.ip().to_canonical() == local.ip() && p.port() == local.port();
        let wildcard = |p: &SocketAddr| p.ip().is_unspecified() && p.port() == local.port();
        self.portal_groups
            .iter()
            .find(|g| g.portals.iter().any(exact))
            .or_else(|| {
                self.portal_groups
                    .iter()
                    .find(|g| g.portals.iter().any(wildcard))
            })
            .map(|g| g.tpgt)
    }

    /// Every SCSI target port of this target, on both nodes: one per portal group (or the one of
    /// `tpgt`). Every LU knows all of them, so persistent reservations can name the peer's port.
    pub fn target_ports(&self) -> Vec<TargetPort> {
        if self.portal_groups.is_empty() {
            return vec![TargetPort::for_tpgt(&self.iqn, self.tpgt)];
        }
        let mut ports: Vec<TargetPort> = Vec::new();
        for g in &self.portal_groups {
            let port = TargetPort::for_tpgt(&self.iqn, g.tpgt);
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// `TargetAddress` values for SendTargets (`ip:port,tpgt`); an unspecified IP is replaced by
    /// `local`'s.
    fn target_addresses(&self, server_portals: &[SocketAddr], local: SocketAddr) -> Vec<String> {
        let advertised = |p: &SocketAddr, tpgt: u16| {
            let addr = if p.ip().is_unspecified() {
                SocketAddr::new(local.ip(), p.port())
            } else {
                *p
            };
            format!("{addr},{tpgt}")
        };
        if self.portal_groups.is_empty() {
            return server_portals
                .iter()
                .map(|p| advertised(p, self.tpgt))
                .collect();
        }
        self.portal_groups
            .iter()
            .flat_map(|g| g.portals.iter().map(move |p| advertised(p, g.tpgt)))
            .collect()
    }
}

/// Server configuration.
#[derive(Clone)]
pub struct ServerConfig {
    /// Addresses advertised in SendTargets (`TargetAddress=ip:port,tpgt`); an unspecified address is
    /// replaced by the address the discovery connection arrived on.
    pub portals: Vec<SocketAddr>,
    pub targets: Vec<TargetConfig>,
    pub discovery_chap: Option<ChapAccount>,
    /// Idle time before the target pings with NOP-In; zero disables pings.
    pub nop_interval: Duration,
    /// How long a ping may stay unanswered before the connection is dropped.
    pub nop_timeout: Duration,
    /// CmdSN window depth = commands in flight per session.
    pub cmdsn_depth: u32,
    /// Limit for the whole login phase.
    pub login_timeout: Duration,
    /// Bound on how long a PDU that needs an answer may wait on the initiator (a CmdSN gap, an ignored
    /// out-of-window PDU the initiator keeps waiting for, Data-Out that stops): then the connection is
    /// closed with the reason logged. Zero disables the bound.
    pub reply_timeout: Duration,
    /// Counters for monitoring; owned by the caller so they outlive a restart of the server (a
    /// failover stops and starts the target, the process-lifetime counters go on).
    pub stats: Arc<TargetStats>,
}

impl ServerConfig {
    pub fn new(portals: Vec<SocketAddr>, targets: Vec<TargetConfig>) -> Self {
        ServerConfig {
            portals,
            targets,
            discovery_chap: None,
            nop_interval: Duration::from_secs(15),
            nop_timeout: Duration::from_secs(30),
            cmdsn_depth: 128,
            login_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(10),
            stats: Arc::new(TargetStats::disabled()),
        }
    }
}

/// A logged-in session, as shown by `haadm target show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub initiator: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub target: String,
    pub tpgt: u16,
    pub peer: SocketAddr,
    pub params: SessionParams,
}

pub(crate) struct SessionEntry {
    pub(crate) info: SessionInfo,
    pub(crate) cancel: CancellationToken,
    pub(crate) finished: watch::Receiver<bool>,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    /// Distinguishes this session from a later one that reuses the TSIH.
    pub(crate) serial: u64,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) sessions: HashMap<u16, SessionEntry>,
    next_tsih: u16,
}

impl Registry {
    /// A TSIH not in use (never 0).
    pub(crate) fn allocate_tsih(&mut self) -> u16 {
        loop {
            self.next_tsih = self.next_tsih.wrapping_add(1);
            if self.next_tsih != 0 && !self.sessions.contains_key(&self.next_tsih) {
                return self.next_tsih;
            }
        }
    }
}

/// The iSCSI target server.
pub struct TargetServer {
    /// Swapped whole by [`TargetServer::reconfigure`]; a login reads the current one, a session keeps
    /// the target (and LUNs) it logged in to.
    config: std::sync::RwLock<Arc<ServerConfig>>,
    pub(crate) registry: Mutex<Registry>,
}

impl TargetServer {
    pub fn new(config: ServerConfig) -> Self {
        for t in &config.targets {
            for port in t.target_ports() {
                t.scsi.add_target_port(port);
            }
        }
        TargetServer {
            config: std::sync::RwLock::new(Arc::new(config)),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// The configuration new logins use.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Live reconfiguration (targets, LUNs, ACLs, CHAP accounts, timers): new logins and discovery use
    /// `config` from now on; logged-in sessions keep the target and LUNs they logged in to, so their
    /// I/O is not disturbed. The listeners are not rebound: `config.portals` only changes what
    /// SendTargets advertises, and the monitoring counters stay the running ones.
    pub fn reconfigure(&self, mut config: ServerConfig) {
        for t in &config.targets {
            for port in t.target_ports() {
                t.scsi.add_target_port(port);
            }
        }
        let mut current = self.config.write().unwrap_or_else(|p| p.into_inner());
        config.stats = Arc::clone(&current.stats);
        *current = Arc::new(config);
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts/removes).
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn target(&self, iqn: &str) -> Option<TargetConfig> {
        self.config()
            .targets
            .iter()
            .find(|t| t.iqn.eq_ignore_ascii_case(iqn))
            .cloned()
    }

    /// Accepts connections until `shutdown` is cancelled, then closes every session (draining their
    /// in-flight commands) before returning.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let tracker = TaskTracker::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Per-connection errors (e.g. ECONNABORTED, EMFILE) must not stop the server.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let server = Arc::clone(&self);
                    let token = shutdown.child_token();
                    tracker.spawn(session::run_connection(server, stream, peer, local, token));
                }
            }
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    /// Serves one already accepted connection (any [`SessionIo`] stream) until it closes or `shutdown`
    /// is cancelled. [`TargetServer::serve`] does this for every TCP connection; tests use it to run
    /// whole sessions over in-memory pipes.
    pub async fn serve_stream<S: SessionIo>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        local: SocketAddr,
        shutdown: CancellationToken,
    ) {
        session::run_connection(self, stream, peer, local, shutdown).await;
    }

    /// Every logged-in normal session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .registry()
            .sessions
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|s| s.tsih);
        v
    }

    /// Sends Async Message event 1 ("target requests logout", RFC 7143 §11.9.1) to every session, with
    /// `time2wait` seconds in Parameter3. Returns how many sessions were asked.
    pub fn request_logout_all(&self, time2wait: u16) -> usize {
        let reg = self.registry();
        let mut asked = 0;
        for entry in reg.sessions.values() {
            let msg = Pdu::AsyncMessage(AsyncMessage {
                event: 1,
                param3: time2wait,
                ..AsyncMessage::default()
            });
            if entry
                .outbound
                .try_send(Outbound::Pdu {
                    pdu: msg,
                    data: bytes::Bytes::new(),
                    stat: Stat::Advance,
                })
                .is_ok()
            {
                asked += 1;
            }
        }
        asked
    }

    /// SendTargets answer (RFC 7143 §13.3, Appendix C): `TargetName=` followed by one `TargetAddress=`
    /// per portal, for every target the initiator may see. `value` is `All`, a target name, or empty
    /// (= `current`, only valid in a normal session).
    pub(crate) fn send_targets(
        &self,
        value: &str,
        initiator: &str,
        peer: IpAddr,
        local: SocketAddr,
        current: Option<&str>,
    ) -> Vec<(String, String)> {
        let wanted = |iqn: &str| match value {
            "All" => true,
            "" => current.is_some_and(|c| c.eq_ignore_ascii_case(iqn)),
            name => name.eq_ignore_ascii_case(iqn),
        };
        let mut out = Vec::new();
        let config = self.config();
        for t in &config.targets {
            if !wanted(&t.iqn) || !t.acl.allows(initiator, peer) {
                continue;
            }
            out.push(("TargetName".to_string(), t.iqn.clone()));
            for addr in t.target_addresses(&config.portals, local) {
                out.push(("TargetAddress".to_string(), addr));
            }
        }
        out
    }
}

impl LoginDirectory for TargetServer {
    fn lookup(&self, target_name: &str, initiator_name: &str, peer: IpAddr) -> TargetLookup {
        self.lookup_at(target_name, initiator_name, peer, None)
    }

    /// The TPGT comes from the portal group of `local` (see [`TargetConfig::tpgt_for_local`]);
    /// without a local address, `tpgt`.
    fn lookup_at(
        &self,
        target_name: &str,
        initiator_name: &str,
        peer: IpAddr,
        local: Option<SocketAddr>,
    ) -> TargetLookup {
        let Some(t) = self.target(target_name) else {
            return TargetLookup::NotFound;
        };
        let tpgt = match local {
            Some(local) => t.tpgt_for_local(local),
            None => Some(t.tpgt),
        };
        let Some(tpgt) = tpgt else {
            tracing::info!(target = %t.iqn, local = ?local,
                "login refused: the target has no portal group with this address");
            return TargetLookup::NotFound;
        };
        if !t.acl.allows(initiator_name, peer) {
            return TargetLookup::Denied;
        }
        TargetLookup::Found(Box::new(LoginTarget {
            name: t.iqn.clone(),
            alias: t.alias.clone(),
            tpgt,
            chap: t.chap.clone(),
            mutual_chap: t.mutual_chap.clone(),
            params: t.params.clone(),
        }))
    }

    fn discovery_chap(&self) -> Option<ChapAccount> {
        self.config().discovery_chap.clone()
    }

    fn discovery_params(&self) -> TargetParams {
        TargetParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_rules() {
        let everyone = Acl::default();
        assert!(everyone.allows("iqn.a", "10.0.0.1".parse().unwrap()));
        let acl = Acl {
            initiators: vec!["iqn.A".into()],
            networks: vec![("10.1.0.0".parse().unwrap(), 16)],
        };
        assert!(acl.allows("iqn.a", "10.1.2.3".parse().unwrap()));
        assert!(!acl.allows("iqn.b", "10.1.2.3".parse().unwrap()));
        assert!(!acl.allows("iqn.a", "10.2.0.1".parse().unwrap()));
        assert!(acl.allows("iqn.a", "::ffff:10.1.0.9".parse().unwrap()));
        let v6 = Acl {
            initiators: vec![],
            networks: vec![("fd00::".parse().unwrap(), 8)],
        };
        assert!(v6.allows("x", "fd12::1".parse().unwrap()));
        assert!(!v6.allows("x", "fe80::1".parse().unwrap()));
        let all = Acl {
            initiators: vec![],
            networks: vec![("0.0.0.0".parse().unwrap(), 0)],
        };
        assert!(all.allows("x", "192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn tsih_allocation_skips_zero_and_used() {
        let mut r = Registry {
            next_tsih: u16::MAX - 1,
            ..Registry::default()
        };
        assert_eq!(r.allocate_tsih(), u16::MAX);
        assert_eq!(r.allocate_tsih(), 1);
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod portal_group_tests;
