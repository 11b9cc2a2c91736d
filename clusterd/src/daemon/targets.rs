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
    /// Running targets by failover group (issue 17: each group's targets start and stop with it);
    /// the key "" is every target (a standalone node, or an external manager's `target start`).
    running: Mutex<BTreeMap<String, TargetRuntime>>,
    /// Monitoring counters, shared by every start of the target (they count for the process' life).
    stats: Arc<TargetStats>,
}

/// The running-map key of a group (`None` = every target).
fn key(group: Option<&str>) -> String {
    group.unwrap_or_default().to_string()
}

/// Sets the ALUA states of `group`'s targets in its node-portal runtime, if that runs.
fn apply_states(running: &BTreeMap<String, TargetRuntime>, group: &str, states: &[(u16, iscsi_target::scsi::alua::AccessState)]) {
    if let Some(r) = running.get(&alua_key(group)) {
        for (_, a) in r.alua().iter().filter(|(g, _)| g == group) {
            a.set_states(states);
        }
    }
}

/// The running-map key of an ALUA group's node-portal target (issue 17).
fn alua_key(group: &str) -> String {
    format!("alua:{group}")
}

impl TargetHost {
    pub fn new(config: Arc<HaConfig>, node: NodeConfig, stats: Arc<TargetStats>) -> TargetHost {
        TargetHost { config: std::sync::RwLock::new(config), node, running: Mutex::new(BTreeMap::new()), stats }
    }

    fn config(&self) -> Arc<HaConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The targets of running-map key `key` in `config`.
    fn scoped(config: &HaConfig, key: &str) -> HaConfig {
        match key.strip_prefix("alua:").unwrap_or(key) {
            "" => config.clone(),
            group => config.for_group(group),
        }
    }

    /// The configuration the next start assembles from, the running targets left as they are
    /// (nothing of the targets changed).
    pub fn set_config(&self, config: Arc<HaConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// `haadm adjust`: from now on the targets are assembled from `config`; those served here take it
    /// at once for new logins and discovery (sessions logged in keep their target and LUNs; LUNs
    /// defined as before stay the same objects). All or nothing per running group: a LUN that cannot
    /// be opened leaves the running target and the configuration as they were.
    pub async fn reconfigure(&self, config: Arc<HaConfig>, resources: &Resources) -> Result<()> {
        let mut running = self.running.lock().await;
        let old = self.config();
        let mut assembled_all = Vec::new();
        for (k, r) in running.iter() {
            let (old_scoped, new_scoped) = (Self::scoped(&old, k), Self::scoped(&config, k));
            let volumes = volumes_for(&new_scoped, resources).await?;
            let server = r.server_config();
            let luns = r.luns().to_vec();
            let reuse = Reuse { old: &old_scoped, server: &server, luns: &luns };
            let mut assembled = assemble_reusing(&new_scoped, &self.node, &volumes, Some(&reuse))?;
            assembled.server.portals = r.portals().to_vec();
            assembled_all.push((k.clone(), assembled));
        }
        for (k, assembled) in assembled_all {
            if let Some(r) = running.get_mut(&k) {
                r.reconfigure(assembled);
            }
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// For monitoring: whether a target is served here and its sessions; `None` while a start or
    /// stop holds the targets (a scrape does not wait for a drain).
    pub fn monitor_view(&self) -> Option<(bool, Vec<SessionInfo>)> {
        let running = self.running.try_lock().ok()?;
        Some((!running.is_empty(), running.values().flat_map(|r| r.sessions()).collect()))
    }

    pub fn configured(&self) -> bool {
        !self.config().targets.is_empty()
    }

    /// Assembles the LUNs of `group`'s targets (all targets for `None`; replicated ones from the
    /// running volumes) and binds the portals. For an ALUA group (issue 17) the targets already run
    /// on this node's own portal (`start_alua`): the holder re-reads their reservations (the peer
    /// changed them while it held the group) and serves the same LUs on the VIP too (`both`).
    pub async fn start(&self, group: Option<&str>, resources: &Resources) -> Result<()> {
        let k = key(group);
        if let Some(g) = group
            && self.config().group(g).is_some_and(|g| g.access.alua())
        {
            return self.start_alua_holder(g, resources).await;
        }
        let mut running = self.running.lock().await;
        let config = Self::scoped(&self.config(), &k);
        if running.contains_key(&k) || config.targets.is_empty() {
            return Ok(());
        }
        let volumes = volumes_for(&config, resources).await?;
        let mut assembled = assemble(&config, &self.node, &volumes)?;
        assembled.server.stats = Arc::clone(&self.stats);
        running.insert(k, TargetRuntime::start(assembled)?);
        Ok(())
    }

    /// Issue 17: serves `group`'s targets on this node's own portal (`node-portals`) from start-up
    /// on, whether or not this node holds the group; ALUA says whether the port is active. Its key is
    /// `alua:GROUP`.
    pub async fn start_alua(&self, group: &str, resources: &Resources) -> Result<()> {
        let k = alua_key(group);
        let mut running = self.running.lock().await;
        let config = Self::scoped(&self.config(), group);
        let Some(g) = config.group(group) else { return Ok(()) };
        if running.contains_key(&k) || config.targets.is_empty() {
            return Ok(());
        }
        let portal = *g.node_portals.get(&self.node.name).ok_or_else(|| anyhow::anyhow!("groups.{group}.node-portals: no portal for {}", self.node.name))?;
        let volumes = volumes_for(&config, resources).await?;
        let mut assembled = assemble(&config, &self.node, &volumes)?;
        assembled.server.stats = Arc::clone(&self.stats);
        assembled.server.portals = vec![portal];
        running.insert(k, TargetRuntime::start(assembled)?);
        Ok(())
    }

    /// The holder's part of an ALUA group: reservations re-read, and the VIP portals served with the
    /// very same LUs (one reservation state, one task set per LU on this node).
    async fn start_alua_holder(&self, group: &str, resources: &Resources) -> Result<()> {
        if !self.running.lock().await.contains_key(&alua_key(group)) {
            self.start_alua(group, resources).await?;
        }
        let mut running = self.running.lock().await;
        let config = Self::scoped(&self.config(), group);
        let base = running.get(&alua_key(group)).ok_or_else(|| anyhow::anyhow!("group {group}: the target is not served on the node portal"))?;
        for lun in base.server_config().targets.iter().flat_map(|t| t.scsi.luns()) {
            lun.1.reload_reservations().map_err(|e| anyhow::anyhow!("group {group}: reload reservations: {e}"))?;
        }
        let vip_portals: Vec<std::net::SocketAddr> = config.targets.iter().flat_map(|t| t.portals.iter().copied()).collect();
        if vip_portals.is_empty() || running.contains_key(group) {
            return Ok(());
        }
        let volumes = volumes_for(&config, resources).await?;
        let server = base.server_config();
        let luns = base.luns().to_vec();
        let reuse = Reuse { old: &config, server: &server, luns: &luns };
        let mut assembled = assemble_reusing(&config, &self.node, &volumes, Some(&reuse))?;
        assembled.server.stats = Arc::clone(&self.stats);
        assembled.server.portals = vip_portals;
        // The ALUA states belong to the node-portal runtime; the VIP one only shares them.
        assembled.alua.clear();
        running.insert(group.to_string(), TargetRuntime::start(assembled)?);
        Ok(())
    }

    /// Issue 17: sets the ALUA states of `group`'s target ports (every target of the group). An
    /// unchanged state changes nothing; a change gives every nexus UA 2A/06.
    pub fn set_access_states(&self, group: &str, states: &[(u16, iscsi_target::scsi::alua::AccessState)]) {
        let Ok(running) = self.running.try_lock() else { return };
        apply_states(&running, group, states);
    }

    /// [`set_access_states`](Self::set_access_states) for a step, which must not be skipped: waits
    /// for a start or stop that holds the targets.
    pub async fn set_access_states_now(&self, group: &str, states: &[(u16, iscsi_target::scsi::alua::AccessState)]) {
        apply_states(&*self.running.lock().await, group, states);
    }

    /// ALUA group not held here: its LUs re-read the reservations the holder replicates, so PERSISTENT
    /// RESERVE IN through this node's standby port answers what the holder has (cheap: the state is
    /// the volume's in-memory copy).
    pub fn refresh_standby_reservations(&self, group: &str) {
        let Ok(running) = self.running.try_lock() else { return };
        if let Some(r) = running.get(&alua_key(group)) {
            for (_, lu) in r.server_config().targets.iter().flat_map(|t| t.scsi.luns()) {
                if let Err(e) = lu.reload_reservations() {
                    tracing::debug!("group {group}: reservations not re-read: {e}");
                }
            }
        }
    }

    /// The ALUA states of `group`'s first target, for status (empty: not an ALUA group or not served).
    pub fn access_states(&self, group: &str) -> Vec<(u16, iscsi_target::scsi::alua::AccessState)> {
        let Ok(running) = self.running.try_lock() else { return Vec::new() };
        running.get(&alua_key(group)).and_then(|r| r.alua().iter().find(|(g, _)| g == group).map(|(_, a)| a.states())).unwrap_or_default()
    }

    /// Asks every session of `group`'s target to log out (Async Message) and returns the TSIHs asked.
    pub async fn request_logout(&self, group: Option<&str>, time2wait: u16) -> Vec<u16> {
        let running = self.running.lock().await;
        let Some(r) = running.get(&key(group)) else { return Vec::new() };
        let asked: Vec<u16> = r.sessions().iter().map(|s| s.tsih).collect();
        r.request_logout_all(time2wait);
        asked
    }

    /// How many of `tsihs` are still logged in to `group`'s target.
    pub async fn remaining(&self, group: Option<&str>, tsihs: &[u16]) -> usize {
        let running = self.running.lock().await;
        running.get(&key(group)).map_or(0, |r| r.sessions().iter().filter(|s| tsihs.contains(&s.tsih)).count())
    }

    /// Stops `group`'s target, or every running target for `None` (daemon shutdown).
    pub async fn stop(&self, group: Option<&str>) {
        let taken: Vec<TargetRuntime> = {
            let mut running = self.running.lock().await;
            match group {
                Some(g) => running.remove(g).into_iter().collect(),
                None => std::mem::take(&mut *running).into_values().collect(),
            }
        };
        for r in taken {
            r.stop(DRAIN_LIMIT).await;
        }
    }

    /// Sessions for `haadm status`.
    pub async fn sessions(&self) -> Vec<proto::control::TargetSessionStatus> {
        let running = self.running.lock().await;
        running
            .values()
            .flat_map(|r| r.sessions())
            .map(|s| proto::control::TargetSessionStatus {
                initiator: s.initiator,
                target: s.target,
                peer_address: s.peer.to_string(),
                connections: 1,
            })
            .collect()
    }

    pub async fn is_running(&self) -> bool {
        !self.running.lock().await.is_empty()
    }

    /// `haadm target show`: one block per running group's target (or the configuration when none runs).
    pub async fn show(&self, json: bool) -> (String, String) {
        let running = self.running.lock().await;
        let config = self.config();
        if running.len() <= 1 {
            let r = running.values().next();
            let state = if r.is_some() { "ready" } else { "stopped (not served on this node)" };
            let scoped = running.keys().next().map_or_else(|| (*config).clone(), |k| Self::scoped(&config, k));
            let text = render_text(&scoped, r, state);
            let json = if json { render_json(&scoped, r, state) } else { String::new() };
            return (text, json);
        }
        let (mut text, mut docs) = (String::new(), Vec::new());
        for (k, r) in running.iter() {
            let scoped = Self::scoped(&config, k);
            text.push_str(&format!("group {k}:\n{}", render_text(&scoped, Some(r), "ready")));
            if json {
                docs.push(render_json(&scoped, Some(r), "ready"));
            }
        }
        let json = if json { format!("[{}]", docs.join(",")) } else { String::new() };
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
