//! Carrying out an adjust in the daemon: re-read ha.yaml (the path clusterd was started with), plan
//! against the running configuration, and apply the plan — for `haadm adjust` and SIGHUP alike.

use super::{ChangeKind, Plan, RunState, plan};
use crate::config::{HaConfig, Manager, config_digest};
use crate::daemon::cluster::ClusterHandle;
use crate::daemon::resources::Resources;
use crate::monitor::MetricsListener;
use crate::daemon::targets::TargetHost;
use replicator::machine::state::Role;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// Why an adjust did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    /// ha.yaml does not load; nothing applied.
    #[error("{0}")]
    Invalid(String),
    /// Some fields cannot change now; nothing applied.
    #[error("refused, nothing changed:\n{}", .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<super::Refusal>),
    /// `adjust RES` for a resource neither configuration has.
    #[error("{0}")]
    UnknownResource(String),
    /// Applying failed part-way (an I/O error bringing a resource up, a LUN that cannot be opened).
    #[error("{0}")]
    Failed(String),
}

/// What an adjust did or, with `--dry-run`, would do.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One line per change.
    pub lines: Vec<String>,
    /// Digest of ha.yaml's effective configuration as read now.
    pub new_digest: String,
    pub applied: bool,
}

/// The daemon's side of `haadm adjust` (one at a time).
pub struct Adjuster {
    pub config_path: PathBuf,
    pub resources: Arc<Resources>,
    pub targets: Arc<TargetHost>,
    /// This node's configuration digest; the heartbeat sends what it holds.
    pub digest: watch::Sender<String>,
    /// Hashes of the CHAP secret files as the running configuration read them.
    secrets: std::sync::Mutex<BTreeMap<PathBuf, [u8; 32]>>,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The parts started after the adjuster (set once by the daemon).
    live: std::sync::OnceLock<LiveParts>,
}

/// The cluster loop (when this node runs one) and the metrics listener.
pub struct LiveParts {
    pub cluster: Option<Arc<ClusterHandle>>,
    pub metrics: Arc<MetricsListener>,
}

impl Adjuster {
    pub fn new(config_path: PathBuf, resources: Arc<Resources>, targets: Arc<TargetHost>) -> Adjuster {
        let running = resources.running_config();
        let digest = watch::Sender::new(config_digest(&running));
        let secrets = std::sync::Mutex::new(secret_hashes(&running));
        Adjuster { config_path, resources, targets, digest, secrets, one_at_a_time: Default::default(), live: Default::default() }
    }

    /// Hands over the cluster loop and the metrics listener once they run.
    pub fn set_live_parts(&self, parts: LiveParts) {
        if self.live.set(parts).is_err() {
            tracing::error!("adjust: live parts handed over twice; keeping the first");
        }
    }

    pub async fn adjust(&self, which: &str, dry_run: bool) -> Result<Outcome, AdjustError> {
        let _one = self.one_at_a_time.lock().await;
        let new = HaConfig::load(&self.config_path).map_err(|e| AdjustError::Invalid(format!("{e}; nothing changed")))?;
        let old = self.resources.running_config();
        let new_digest = config_digest(&new);
        let st = self.run_state(&old, &new).await;
        let plan = plan(&old, &new, which, &st).map_err(|refusals| match refusals.as_slice() {
            [r] if r.reason.starts_with("no such resource") => AdjustError::UnknownResource(format!(
                "no resource `{which}` in {} (resources: {})",
                new.path.display(),
                new.resources.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            _ => AdjustError::Refused(refusals),
        })?;
        let lines: Vec<String> = plan.changes.iter().map(|c| c.line.clone()).collect();
        if dry_run {
            return Ok(Outcome { lines, new_digest, applied: false });
        }
        if plan.is_empty() && old.as_ref() == &plan.config {
            return Ok(Outcome { lines, new_digest, applied: true });
        }
        for l in &lines {
            tracing::info!("adjust: {l}");
        }
        self.apply(plan).await?;
        Ok(Outcome { lines, new_digest, applied: true })
    }

    async fn run_state(&self, old: &HaConfig, new: &HaConfig) -> RunState {
        let mut st = RunState { node: self.resources.node.clone(), target_running: self.targets.is_running().await, ..Default::default() };
        if let Some(c) = self.live.get().and_then(|l| l.cluster.as_ref()) {
            st.cluster_running = true;
            if let Some(m) = c.view().membership {
                st.peer_alive = m.peer_alive();
                st.links_up = m.links.iter().filter(|l| l.up).map(|l| l.name.clone()).collect();
            }
        }
        for s in self.resources.published().await {
            if let Some((snap, _, _)) = s.running {
                st.attached.insert(s.name.clone());
                if snap.role == Role::Primary {
                    st.primary.insert(s.name);
                }
            }
        }
        let known = self.secrets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = secret_hashes(new);
        st.changed_secrets = now
            .iter()
            .filter(|(path, hash)| chap_files(old).contains(*path) && known.get(*path).is_some_and(|h| h != *hash))
            .map(|(p, _)| p.clone())
            .collect();
        st
    }

    async fn apply(&self, plan: Plan) -> Result<(), AdjustError> {
        let config = Arc::new(plan.config);
        let external = config.manager == Manager::Pacemaker;
        // What can fail on its own (binding sockets, loading keys) goes first and, failing, leaves
        // everything as it was.
        self.apply_cluster_and_metrics(&plan.changes, &config).await?;
        // New slots first (added resources appear, down), so `up` finds them.
        self.resources.install_config(Arc::clone(&config)).await;
        let mut failures = Vec::new();
        let mut pushed = BTreeSet::new();
        for change in &plan.changes {
            let r = match &change.kind {
                ChangeKind::AddResource(name) if !external => self.resources.up(name).await.map(|_| ()),
                ChangeKind::ResourceOptions(name) if pushed.insert(name.clone()) => self.resources.push_options(name).await,
                ChangeKind::Targets if pushed.insert("/targets".into()) => {
                    self.targets.reconfigure(Arc::clone(&config), &self.resources).await.map_err(|e| format!("{e:#}"))
                }
                ChangeKind::RemoveResource(name) => self.resources.down(name).await.map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::error!("adjust: {}: {e}", change.line);
                failures.push(format!("{}: {e}", change.line));
            }
        }
        if !pushed.contains("/targets") {
            self.targets.set_config(Arc::clone(&config));
        }
        // Slots of removed resources that went down are dropped now.
        self.resources.install_config(Arc::clone(&config)).await;
        *self.secrets.lock().unwrap_or_else(|e| e.into_inner()) = secret_hashes(&config);
        self.digest.send_replace(config_digest(&config));
        if failures.is_empty() { Ok(()) } else { Err(AdjustError::Failed(failures.join("\n"))) }
    }
}

impl Adjuster {
    async fn apply_cluster_and_metrics(&self, changes: &[super::Change], config: &Arc<HaConfig>) -> Result<(), AdjustError> {
        let wants = |k: ChangeKind| changes.iter().any(|c| c.kind == k);
        let Some(live) = self.live.get() else {
            return match wants(ChangeKind::Cluster) || wants(ChangeKind::Metrics) {
                true => Err(AdjustError::Failed("clusterd is still starting; nothing changed, try again".into())),
                false => Ok(()),
            };
        };
        let node = &self.resources.node;
        let old_metrics = self.resources.running_config().metrics.listen_for(node);
        let new_metrics = config.metrics.listen_for(node);
        if wants(ChangeKind::Metrics) {
            live.metrics.set(new_metrics).await.map_err(|e| AdjustError::Failed(format!("{e:#}; nothing changed")))?;
        }
        if wants(ChangeKind::Cluster) {
            let Some(cluster) = &live.cluster else {
                return Err(AdjustError::Failed("no cluster layer runs on this node; nothing changed".into()));
            };
            match cluster.adjust(Arc::clone(config)).await {
                Ok(lines) => lines.iter().for_each(|l| tracing::info!("adjust: {l}")),
                Err(e) => {
                    if wants(ChangeKind::Metrics)
                        && let Err(back) = live.metrics.set(old_metrics).await
                    {
                        tracing::error!("adjust: cannot move the metrics listener back to {old_metrics:?}: {back:#}");
                    }
                    return Err(AdjustError::Failed(e));
                }
            }
        }
        Ok(())
    }
}

fn chap_files(cfg: &HaConfig) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    // Not CHAP, but followed the same way: a changed heartbeat key file is reloaded by adjust.
    out.extend(cfg.cluster.iter().map(|c| c.authkeys_file.clone()));
    out.extend(cfg.iscsi.discovery_user.iter().map(|u| u.secret_file.clone()));
    for t in &cfg.targets {
        out.extend(t.incoming_user.iter().chain(t.outgoing_user.iter()).map(|u| u.secret_file.clone()));
    }
    out
}

/// SHA-256 of every CHAP secret file of `cfg` that can be read now (only compared, never shown).
fn secret_hashes(cfg: &HaConfig) -> BTreeMap<PathBuf, [u8; 32]> {
    chap_files(cfg).into_iter().filter_map(|p| hash_file(&p).map(|h| (p, h))).collect()
}

fn hash_file(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(&bytes));
    Some(out)
}
