//! The embedded target of this node: started and stopped as a whole (the standalone target at start-up;
//! the HA group's target by the failover sequence), and described for `haadm target show`.

use super::resources::Resources;
use crate::config::{HaConfig, LunSource, NodeConfig};
use crate::target::{TargetRuntime, assemble, render_json, render_text};
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
    config: Arc<HaConfig>,
    node: NodeConfig,
    running: Mutex<Option<TargetRuntime>>,
    /// Monitoring counters, shared by every start of the target (they count for the process' life).
    stats: Arc<TargetStats>,
}

impl TargetHost {
    pub fn new(config: Arc<HaConfig>, node: NodeConfig, stats: Arc<TargetStats>) -> TargetHost {
        TargetHost { config, node, running: Mutex::new(None), stats }
    }

    /// For monitoring: whether the target is served here and its sessions; `None` while a start or
    /// stop holds the target (a scrape does not wait for a drain).
    pub fn monitor_view(&self) -> Option<(bool, Vec<SessionInfo>)> {
        let running = self.running.try_lock().ok()?;
        Some((running.is_some(), running.as_ref().map(|r| r.sessions()).unwrap_or_default()))
    }

    pub fn configured(&self) -> bool {
        !self.config.targets.is_empty()
    }

    /// Assembles the LUNs (replicated ones from the running volumes) and binds the portals.
    pub async fn start(&self, resources: &Resources) -> Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() || !self.configured() {
            return Ok(());
        }
        let mut volumes = BTreeMap::new();
        for t in &self.config.targets {
            for lun in t.luns.values() {
                if let LunSource::Resource(name) = &lun.source {
                    let v = resources.volume(name).await.map_err(anyhow::Error::msg)?;
                    volumes.insert(name.clone(), v);
                }
            }
        }
        let mut assembled = assemble(&self.config, &self.node, &volumes)?;
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
        let text = render_text(&self.config, running.as_ref(), state);
        let json = if json { render_json(&self.config, running.as_ref(), state) } else { String::new() };
        (text, json)
    }
}
