//! The I/O behind each step of the failover sequence: promoting and demoting the group's volumes,
//! blocking the iSCSI port, the virtual IP and its gratuitous ARP, the target. The sequencer decides
//! which step runs when; this file only does it and reports success or the reason it failed.

use super::resources::Resources;
use super::targets::TargetHost;
use crate::config::{GroupConfig, HaConfig, VipConfig};
use crate::failover::Step;
use crate::netops;
use replicator::engine::Verb;
use replicator::machine::state::Role;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a graceful hand-over waits for initiators to log out after the Async Message.
const LOGOUT_WAIT: Duration = Duration::from_secs(3);
/// How long a promotion waits for the replication link to report the peer's demotion.
const PEER_DEMOTE_WAIT: Duration = Duration::from_secs(2);
/// Time2Wait we ask initiators to respect before reconnecting (seconds): the peer needs a moment.
const LOGOUT_TIME2WAIT: u16 = 1;

pub struct GroupSteps {
    pub config: Arc<HaConfig>,
    /// The group these steps move (issue 17: one `GroupSteps` per group).
    pub group: GroupConfig,
    pub node: String,
    pub resources: Arc<Resources>,
    pub targets: Arc<TargetHost>,
    /// The rest of the current gratuitous-ARP burst, sent in the background; cancelled when the VIP is
    /// removed so that we never announce an address we no longer hold.
    pub garp_burst: std::sync::Mutex<Option<CancellationToken>>,
}

impl GroupSteps {
    fn group(&self) -> Result<&GroupConfig, String> {
        Ok(&self.group)
    }

    fn vip(&self) -> Result<Option<(&VipConfig, String)>, String> {
        let Some(vip) = self.group()?.vip.as_ref() else { return Ok(None) };
        let ifname = vip
            .interfaces
            .get(&self.node)
            .cloned()
            .ok_or_else(|| format!("{}.vip: no interface for node {}", self.config.group_field(&self.group), self.node))?;
        Ok(Some((vip, ifname)))
    }

    /// The portals on the VIP: the only ones a failover moves (and so the only ones to block).
    fn vip_portals(&self) -> Vec<SocketAddr> {
        let vip = self.group.vip.as_ref().map(|v| v.address);
        let mut out: Vec<SocketAddr> = Vec::new();
        for t in self.config.targets_of_group(Some(&self.group.name)) {
            for p in &t.portals {
                if Some(p.ip()) == vip && !out.contains(p) {
                    out.push(*p);
                }
            }
        }
        out
    }

    /// Carries out one step of the sequence.
    pub async fn run(&self, step: Step) -> Result<(), String> {
        match step {
            Step::PromoteVolumes => self.promote().await,
            Step::BlockPort => self.block_port().await,
            Step::AddVip => self.add_vip().await,
            Step::SendGarp => self.garp().await,
            Step::StartTarget => self.start_target().await,
            Step::UnblockPort => self.unblock_port().await,
            Step::QuiesceTarget => self.quiesce_target().await,
            Step::StopTarget => self.stop_target().await,
            Step::RemoveVip => self.remove_vip().await,
            Step::DemoteVolumes => self.demote().await,
        }
    }

    /// Every group volume Primary, in the configured order. A failure demotes what this call promoted.
    pub async fn promote(&self) -> Result<(), String> {
        let names = self.group()?.resources.clone();
        let mut done = Vec::new();
        for n in &names {
            self.wait_peer_demoted(n).await;
            match self.resources.verb(n, Verb::Primary { force: false }).await {
                Ok(_) => done.push(n.clone()),
                Err(e) => {
                    for d in done.iter().rev() {
                        let _ = self.resources.verb(d, Verb::Secondary).await;
                    }
                    return Err(format!("promote {n}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// A hand-over reaches us over the heartbeat while the peer's demotion travels on the replication
    /// link; the two race. Wait (bounded) until the replication link no longer reports the peer
    /// Primary, so a graceful hand-over never fails on stale news. A peer that really stays Primary
    /// makes the promotion fail afterwards, as it must.
    async fn wait_peer_demoted(&self, name: &str) {
        let Ok(v) = self.resources.volume(name).await else { return };
        let mut rx = v.subscribe();
        let demoted = tokio::time::timeout(PEER_DEMOTE_WAIT, rx.wait_for(|s| s.peer_role != Role::Primary)).await;
        if demoted.is_err() {
            tracing::warn!("{name}: the peer still reports Primary after {PEER_DEMOTE_WAIT:?}");
        }
    }

    /// Every group volume Secondary, in reverse order (after the target stopped, so nothing writes).
    pub async fn demote(&self) -> Result<(), String> {
        let names = self.group()?.resources.clone();
        let mut errors = Vec::new();
        for n in names.iter().rev() {
            let v = match self.resources.volume(n).await {
                Ok(v) => v,
                Err(_) => continue, // not up: nothing to demote
            };
            if v.snapshot().role != Role::Primary {
                continue;
            }
            if let Err(e) = v.verb(Verb::Secondary).await {
                errors.push(format!("demote {n}: {e}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    pub async fn block_port(&self) -> Result<(), String> {
        for p in self.vip_portals() {
            let (ip, port) = (p.ip(), p.port());
            tokio::task::spawn_blocking(move || netops::block(ip, port))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("block {p}: {e}"))?;
        }
        Ok(())
    }

    pub async fn unblock_port(&self) -> Result<(), String> {
        for p in self.vip_portals() {
            let (ip, port) = (p.ip(), p.port());
            tokio::task::spawn_blocking(move || netops::unblock(ip, port))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("unblock {p}: {e}"))?;
        }
        Ok(())
    }

    pub async fn add_vip(&self) -> Result<(), String> {
        let Some((vip, ifname)) = self.vip()? else { return Ok(()) };
        netops::vip_add(&ifname, vip.address, vip.prefix_len)
            .await
            .map(|_| ())
            .map_err(|e| format!("add VIP {}/{} on {ifname}: {e}", vip.address, vip.prefix_len))
    }

    pub async fn remove_vip(&self) -> Result<(), String> {
        if let Some(burst) = self.garp_slot().take() {
            burst.cancel();
        }
        let Some((vip, ifname)) = self.vip()? else { return Ok(()) };
        netops::vip_remove(&ifname, vip.address, vip.prefix_len)
            .await
            .map(|_| ())
            .map_err(|e| format!("remove VIP {}/{} from {ifname}: {e}", vip.address, vip.prefix_len))
    }

    /// One burst of gratuitous ARP for the VIP (the sequencer asks again a few seconds later). The
    /// step waits only for the first announcement: that one moves the neighbours' ARP entries, and the
    /// target must not wait `garp-count × garp-interval` to serve. The rest of the burst (for neighbours
    /// that lost the first frame) goes out in the background until the VIP is removed.
    pub async fn garp(&self) -> Result<(), String> {
        let Some((vip, ifname)) = self.vip()? else { return Ok(()) };
        let IpAddr::V4(v4) = vip.address else { return Ok(()) }; // IPv6 uses unsolicited NA; not sent yet
        let (count, interval) = (vip.garp_count, vip.garp_interval);
        let token = CancellationToken::new();
        if let Some(old) = self.garp_slot().replace(token.clone()) {
            old.cancel();
        }
        let first_if = ifname.clone();
        tokio::task::spawn_blocking(move || netops::send_garp(&first_if, v4, 1, Duration::ZERO))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("gratuitous ARP for {v4}: {e}"))?;
        if count > 1 {
            tokio::spawn(async move {
                for _ in 1..count {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let ifname = ifname.clone();
                    let sent = tokio::task::spawn_blocking(move || netops::send_garp(&ifname, v4, 1, Duration::ZERO)).await;
                    if let Ok(Err(e)) = sent {
                        tracing::warn!("gratuitous ARP for {v4} (rest of the burst): {e}");
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    fn garp_slot(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.garp_burst.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn start_target(&self) -> Result<(), String> {
        self.targets.start(Some(&self.group.name), &self.resources).await.map_err(|e| format!("start iSCSI target: {e:#}"))
    }

    /// Graceful hand-over, first half: every session is asked to log out (Async Message) and we wait
    /// (bounded) for them to go. The target keeps serving meanwhile, so nothing in flight fails; the port
    /// block that follows makes the initiators' reconnects wait (dropped SYNs) until the peer serves.
    pub async fn quiesce_target(&self) -> Result<(), String> {
        // ALUA: this node's ports stop serving first (NOT READY, transitioning); the sessions on
        // them stay logged in as the standby paths they become.
        if self.group.access.alua()
            && let Some(me) = self.config.nodes.iter().position(|n| n.name == self.node)
        {
            self.targets.set_access_states_now(&self.group.name, &super::alua_ports::leaving(&self.group, me)).await;
        }
        let asked = self.targets.request_logout(Some(&self.group.name), LOGOUT_TIME2WAIT).await;
        if !asked.is_empty() {
            tracing::info!("asked {} iSCSI session(s) to log out", asked.len());
            // Only the sessions asked count: an initiator that logs in again at once (before the port is
            // blocked) is closed with the target a moment later, and must not hold the hand-over up.
            let deadline = Instant::now() + LOGOUT_WAIT;
            while Instant::now() < deadline && self.targets.remaining(Some(&self.group.name), &asked).await > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = self.targets.remaining(Some(&self.group.name), &asked).await;
            if left > 0 {
                tracing::warn!("{left} iSCSI session(s) did not log out within {LOGOUT_WAIT:?}; they are closed with the target");
            }
        }
        Ok(())
    }

    /// Stops the target (sessions end after their in-flight commands) and flushes the volumes on both
    /// disks, so nothing acknowledged is only in a cache when the volumes are demoted.
    pub async fn stop_target(&self) -> Result<(), String> {
        self.targets.stop(Some(&self.group.name)).await;
        for n in &self.group()?.resources {
            if let Ok(v) = self.resources.volume(n).await
                && v.snapshot().role == Role::Primary
            {
                v.flush().await.map_err(|e| format!("flush {n}: {e}"))?;
            }
        }
        Ok(())
    }
}
