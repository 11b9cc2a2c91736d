//! The embedded target of this node: started and stopped as a whole (the standalone target at start-up;
//! the HA group's target by the failover sequence), and described for `haadm target show`.

use super::resources::Resources;
use crate::config::{HaConfig, LunSource, NodeConfig};
use crate::target::{Reuse, TargetRuntime, assemble, assemble_reusing, render_json, render_text};
use anyhow::Result;
use iscsi_target::server::SessionInfo;
use iscsi_target::stats::TargetStats;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long a stop waits for sessions to finish their in-flight commands.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub struct TargetHost {
    /// The configuration in force (replaced by `haadm adjust`).
    config: std::sync::RwLock<Arc<HaConfig>>,
    node: NodeConfig,
    running: Mutex<Option<TargetRuntime>>,
    /// Monitoring counters, shared by every start of the target (they count for the process' life).
    stats: Arc<TargetStats>,
}

impl TargetHost {
    pub fn new(config: Arc<HaConfig>, node: NodeConfig, stats: Arc<TargetStats>) -> TargetHost {
        TargetHost { config: std::sync::RwLock::new(config), node, running: Mutex::new(None), stats }
    }

    fn config(&self) -> Arc<HaConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// `haadm adjust`: from now on the target is assembled from `config`; if it is served here, the
    /// running target takes it at once for new logins and discovery (sessions logged in keep their
    /// target and LUNs; LUNs defined as before stay the same objects). All or nothing: a LUN that
    /// cannot be opened leaves the running target and the configuration as they were.
    /// The configuration the next start assembles from, the running target left as it is (nothing of
    /// the targets changed).
    pub fn set_config(&self, config: Arc<HaConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub async fn reconfigure(&self, config: Arc<HaConfig>, resources: &Resources) -> Result<()> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_mut() {
            let old = self.config();
            let volumes = volumes_for(&config, resources).await?;
            let server = r.server_config();
            let luns = r.luns().to_vec();
            let reuse = Reuse { old: &old, server: &server, luns: &luns };
            let mut assembled = assemble_reusing(&config, &self.node, &volumes, Some(&reuse))?;
            assembled.server.portals = r.portals().to_vec();
            r.reconfigure(assembled);
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// For monitoring: whether the target is served here and its sessions; `None` while a start or
    /// stop holds the target (a scrape does not wait for a drain).
    pub fn monitor_view(&self) -> Option<(bool, Vec<SessionInfo>)> {
        let running = self.running.try_lock().ok()?;
        Some((running.is_some(), running.as_ref().map(|r| r.sessions()).unwrap_or_default()))
    }

    pub fn configured(&self) -> bool {
        !self.config().targets.is_empty()
    }

    /// Assembles the LUNs (replicated ones from the running volumes) and binds the portals.
    pub async fn start(&self, resources: &Resources) -> Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() || !self.configured() {
            return Ok(());
        }
        let config = self.config();
        let volumes = volumes_for(&config, resources).await?;
        let mut assembled = assemble(&config, &self.node, &volumes)?;
        assembled.server.stats = Arc::clone(&self.stats);
        *running = Some(TargetRuntime::start(assembled)?);
        Ok(())
    }

    /// Asks every session to log out (Async Message) and returns the TSIHs of the sessions asked.
    pub async fn request_logout(&self, time2wait: u16) -> Vec<u16> {
        let running = self.running.lock().await;
        let Some(r) = running.as_ref() else { return Vec::new() };
        let asked: Vec<u16> = r.sessions().iter().map(|s| s.tsih).collect();
        r.request_logout_all(time2wait);
        asked
    }

    /// How many of `tsihs` are still logged in.
    pub async fn remaining(&self, tsihs: &[u16]) -> usize {
        let running = self.running.lock().await;
        running.as_ref().map_or(0, |r| r.sessions().iter().filter(|s| tsihs.contains(&s.tsih)).count())
    }

    pub async fn stop(&self) {
        let taken = self.running.lock().await.take();
        if let Some(r) = taken {
            r.stop(DRAIN_LIMIT).await;
        }
    }

    /// Sessions for `haadm status`.
    pub async fn sessions(&self) -> Vec<proto::control::TargetSessionStatus> {
        let running = self.running.lock().await;
        running
            .as_ref()
            .map(|r| r.sessions())
            .unwrap_or_default()
            .into_iter()
            .map(|s| proto::control::TargetSessionStatus {
                initiator: s.initiator,
                target: s.target,
                peer_address: s.peer.to_string(),
                connections: 1,
            })
            .collect()
    }

    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    pub async fn show(&self, json: bool) -> (String, String) {
        let running = self.running.lock().await;
        let state = if running.is_some() { "ready" } else { "stopped (not served on this node)" };
        let config = self.config();
        let text = render_text(&config, running.as_ref(), state);
        let json = if json { render_json(&config, running.as_ref(), state) } else { String::new() };
        (text, json)
    }
}

/// The running volumes the replicated LUNs of `config` need.
async fn volumes_for(config: &HaConfig, resources: &Resources) -> Result<BTreeMap<String, replicator::engine::Volume>> {
    let mut volumes = BTreeMap::new();
    for t in &config.targets {
        for lun in t.luns.values() {
            if let LunSource::Resource(name) = &lun.source {
                let v = resources.volume(name).await.map_err(anyhow::Error::msg)?;
                volumes.insert(name.clone(), v);
            }
        }
    }
    Ok(volumes)
}
