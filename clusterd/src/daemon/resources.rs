//! The resources of this node: turning ha.yaml into running replicated volumes, and the verbs on them.

use crate::config::{HaConfig, MetaDisk, ResourceConfig};
use replicator::engine::{IoErrorPolicy, Verb, Volume, VolumeSpec};
use replicator::machine::policy::{AfterSb0, AfterSb1, AfterSb2, Policies, RrConflict};
use replicator::machine::{NodeParams, Snapshot, Timing};
use replicator::meta::layout::MetaLocation;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Mutex;

/// One configured resource on this node: running or not, and why not.
pub struct Slot {
    pub name: String,
    pub volume: Option<Volume>,
    pub error: Option<String>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub peer_name: Option<String>,
}

/// A resource as status reports it: its engine snapshot and size when up, why not otherwise.
pub struct SlotStatus {
    pub name: String,
    pub running: Option<(Snapshot, u64)>,
    pub error: Option<String>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub peer_name: Option<String>,
}

/// A resource as monitoring sees it: the engine's published snapshot, size and counters when up.
pub struct Published {
    pub name: String,
    pub running: Option<(Snapshot, u64, replicator::engine::CountersSnapshot)>,
    pub error: Option<String>,
    pub peer_name: Option<String>,
}

/// All resources of this node.
pub struct Resources {
    /// The configuration clusterd started with.
    pub config: Arc<HaConfig>,
    pub node: String,
    pub slots: Mutex<BTreeMap<String, Slot>>,
    /// The configuration in force: the start-up one until `haadm adjust` installs another.
    running: std::sync::RwLock<Arc<HaConfig>>,
    /// Bumped by every [`install_config`](Self::install_config), for those who follow the resource set.
    installed: tokio::sync::watch::Sender<u64>,
}

impl Resources {
    pub fn new(config: Arc<HaConfig>, node: String) -> Resources {
        let mut slots = BTreeMap::new();
        for name in config.resources.keys() {
            slots.insert(name.clone(), new_slot(&config, name, &node));
        }
        let running = std::sync::RwLock::new(Arc::clone(&config));
        Resources { config, node, slots: Mutex::new(slots), running, installed: tokio::sync::watch::Sender::new(0) }
    }

    /// The configuration in force (see [`crate::adjust`]).
    pub fn running_config(&self) -> Arc<HaConfig> {
        Arc::clone(&self.running.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// `haadm adjust`: the configuration in force from now on. Slots of resources it adds are created
    /// (down); those of resources it drops must have been taken down by the caller.
    pub async fn install_config(&self, config: Arc<HaConfig>) {
        let mut slots = self.slots.lock().await;
        for name in config.resources.keys() {
            let slot = new_slot(&config, name, &self.node);
            slots.entry(name.clone()).and_modify(|s| (s.local, s.peer) = (slot.local, slot.peer)).or_insert(slot);
        }
        slots.retain(|name, s| config.resources.contains_key(name) || s.volume.is_some());
        *self.running.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.installed.send_modify(|n| *n += 1);
    }

    /// Changes whenever `adjust` installs a configuration.
    pub fn installed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// `haadm adjust`: pushes the running configuration's live options (rate, timers, policies,
    /// secret, verify-alg, csums-alg, fencing, handlers) of `name` into its volume, if it is up.
    pub async fn push_options(&self, name: &str) -> Result<(), String> {
        let cfg = self.running_config();
        let Ok(volume) = self.volume(name).await else { return Ok(()) };
        let r = cfg.resources.get(name).ok_or_else(|| format!("no resource `{name}`"))?;
        let spec = volume_spec(&cfg, r, name, &self.node)?;
        let options = replicator::machine::LiveOptions::of(&spec.params);
        volume.set_options(options, spec.handlers).await.map_err(|e| format!("{name}: {e}"))
    }

    /// Names matching `which` ("all" or a resource name).
    pub async fn select(&self, which: &str) -> Result<Vec<String>, String> {
        let slots = self.slots.lock().await;
        if which.is_empty() || which == "all" {
            return Ok(slots.keys().cloned().collect());
        }
        if slots.contains_key(which) {
            Ok(vec![which.to_string()])
        } else {
            Err(format!("no resource `{which}` in {} (resources: {})", self.running_config().path.display(), slots.keys().cloned().collect::<Vec<_>>().join(", ")))
        }
    }

    /// `up`: attach metadata and data, start replication (idempotent).
    pub async fn up(&self, name: &str) -> Result<String, String> {
        let mut slots = self.slots.lock().await;
        let slot = slots.get_mut(name).ok_or_else(|| format!("no resource `{name}`"))?;
        if slot.volume.is_some() {
            return Ok(format!("{name}: already up"));
        }
        let cfg = self.running_config();
        let r = cfg.resources.get(name).ok_or_else(|| format!("no resource `{name}`"))?;
        let spec = match volume_spec(&cfg, r, name, &self.node) {
            Ok(s) => s,
            Err(e) => {
                slot.error = Some(e.clone());
                return Err(e);
            }
        };
        match Volume::start(spec).await {
            Ok(v) => {
                slot.volume = Some(v);
                slot.error = None;
                Ok(format!("{name}: up"))
            }
            Err(e) => {
                let msg = format!("{name}: cannot attach: {e}");
                slot.error = Some(msg.clone());
                Err(msg)
            }
        }
    }

    pub async fn down(&self, name: &str) -> Result<String, String> {
        let vol = {
            let mut slots = self.slots.lock().await;
            let slot = slots.get_mut(name).ok_or_else(|| format!("no resource `{name}`"))?;
            slot.volume.take()
        };
        match vol {
            Some(v) => {
                if v.snapshot().role == replicator::machine::state::Role::Primary {
                    // Put it back: a Primary in use must be demoted first (drbdadm does the same).
                    let mut slots = self.slots.lock().await;
                    if let Some(s) = slots.get_mut(name) {
                        s.volume = Some(v);
                    }
                    return Err(format!("{name}: is Primary; run `haadm secondary {name}` first"));
                }
                v.down().await;
                Ok(format!("{name}: down"))
            }
            None => Ok(format!("{name}: already down")),
        }
    }

    /// `attach` (issue 15): a resource whose disk is detached is taken down and brought up again
    /// from the configuration — the same disk (its bitmap resync: only what the peer wrote meanwhile)
    /// or a replaced one with fresh metadata (a full sync) — and connects; the handshake makes it the
    /// SyncTarget. Only on a Secondary: a Primary would serve from a disk being resynced.
    pub async fn attach(&self, name: &str) -> Result<String, String> {
        let v = self.volume(name).await.map_err(|e| {
            if e.starts_with("no resource") { e } else { format!("{name} is down: `haadm up {name}` attaches its disk and connects") }
        })?;
        let s = v.current().await;
        if s.disk != replicator::machine::state::DiskState::Diskless {
            return Err(format!("{name}: already attached (disk {})", s.disk));
        }
        if s.role == replicator::machine::state::Role::Primary {
            return Err(format!("{name}: attach needs this node Secondary: move the group first with `haadm standby` (or `haadm secondary {name}`)"));
        }
        self.down(name).await?;
        // The old engine's transport task lets go of the replication address when it sees its
        // cancellation, a moment after `down` returned: retry a bind refused meanwhile (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match self.up(name).await {
                Ok(_) => break,
                Err(e) if e.contains("Address already in use") && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let s = self.volume(name).await?.current().await;
        Ok(format!("{name}: attached (disk {}); connecting: the peer resyncs what changed meanwhile (`haadm wait-sync {name}`)", s.disk))
    }

    pub async fn verb(&self, name: &str, verb: Verb) -> Result<String, String> {
        let v = self.volume(name).await?;
        v.verb(verb).await
    }

    pub async fn volume(&self, name: &str) -> Result<Volume, String> {
        let slots = self.slots.lock().await;
        let slot = slots.get(name).ok_or_else(|| format!("no resource `{name}`"))?;
        slot.volume.clone().ok_or_else(|| match &slot.error {
            Some(e) => format!("{name} is down: {e}"),
            None => format!("{name} is down (run `haadm up {name}`)"),
        })
    }

    /// Status of every resource.
    pub async fn status(&self) -> Vec<SlotStatus> {
        // Copy out under the lock, ask the engines afterwards: no lock is held while waiting on one.
        let listed: Vec<(SlotStatus, Option<Volume>)> = {
            let slots = self.slots.lock().await;
            slots
                .values()
                .map(|s| {
                    let st = SlotStatus {
                        name: s.name.clone(),
                        running: None,
                        error: s.error.clone(),
                        local: s.local,
                        peer: s.peer,
                        peer_name: s.peer_name.clone(),
                    };
                    (st, s.volume.clone())
                })
                .collect()
        };
        let mut out = Vec::with_capacity(listed.len());
        for (mut st, vol) in listed {
            if let Some(v) = vol {
                st.running = Some((v.current().await, v.size()));
            }
            out.push(st);
        }
        out
    }

    /// Every resource with its last published state (refreshed by the engine every 20 ms and on each
    /// change): for monitoring, which must never queue work on a resource's actor thread.
    pub async fn published(&self) -> Vec<Published> {
        let slots = self.slots.lock().await;
        slots
            .values()
            .map(|s| Published {
                name: s.name.clone(),
                running: s.volume.as_ref().map(|v| (v.snapshot(), v.size(), v.counters())),
                error: s.error.clone(),
                peer_name: s.peer_name.clone(),
            })
            .collect()
    }

    /// Stop everything (daemon shutdown): demote idle Primaries and write clean metadata.
    pub async fn shutdown(&self) {
        let vols: Vec<Volume> = {
            let mut slots = self.slots.lock().await;
            slots.values_mut().filter_map(|s| s.volume.take()).collect()
        };
        for v in vols {
            v.down().await;
        }
    }
}

fn new_slot(config: &HaConfig, name: &str, node: &str) -> Slot {
    let r = &config.resources[name];
    let peer_name = config.peer_of(node).map(|n| n.name.clone());
    let local = r.on(node).ok().map(|o| o.address);
    let peer = peer_name.as_deref().and_then(|p| r.on(p).ok()).map(|o| o.address);
    Slot { name: name.to_string(), volume: None, error: None, local, peer, peer_name }
}

/// Build the engine's spec for `name` on `node` from the configuration.
pub fn volume_spec(cfg: &HaConfig, r: &ResourceConfig, name: &str, node: &str) -> Result<VolumeSpec, String> {
    let me = r.on(node).map_err(|e| e.to_string())?;
    let peer = cfg.peer_of(node);
    let peer_on = match peer {
        Some(p) => Some(r.on(&p.name).map_err(|e| e.to_string())?),
        None => None,
    };
    let secret = match r.secret_file() {
        Some(path) => {
            let bytes = crate::config::read_secret_file(path).map_err(|e| e.to_string())?;
            Some(replicator::wire::auth::Secret::new(bytes).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let policies = policies(r, node, peer.map(|p| p.name.as_str()));
    let net = &r.net;
    let params = NodeParams {
        node: node.to_string(),
        peer: peer.map(|p| p.name.clone()),
        resource: name.to_string(),
        data_size: 0,
        policies,
        secret,
        fencing_dont_care: r.disk.fencing == crate::config::Fencing::DontCare,
        freeze_io_on_peer_loss: r.disk.fencing == crate::config::Fencing::ResourceAndStonith,
        resync_rate: r.syncer.rate.0,
        verify_rate: r.syncer.effective_verify_rate().0,
        c_min_rate: r.syncer.c_min_rate.0,
        resync_control: replicator::machine::ControllerOptions {
            plan_ahead_ms: r.syncer.c_plan_ahead.as_millis() as u64,
            fill_target: r.syncer.c_fill_target,
            max_rate: r.syncer.c_max_rate.0,
        },
        timing: Timing {
            ping_int_ms: net.ping_int.as_millis() as u64,
            ping_timeout_ms: net.ping_timeout.as_millis() as u64,
            timeout_ms: net.timeout.as_millis() as u64,
            ko_count: 7,
            connect_int_ms: net.connect_int.as_millis() as u64,
        },
        verify_alg: r.syncer.verify_alg.to_string(),
        csums: csums_options(&r.syncer),
        detach_on_io_error: r.disk.on_io_error == crate::config::OnIoError::Detach,
        protocols: crate::versions::release_or_current().replication,
        protocol: r.replication_protocol(),
    };
    let meta = match &me.meta_disk {
        MetaDisk::Internal => MetaLocation::Internal,
        MetaDisk::External { path, index } => MetaLocation::External { path: path.clone(), index: *index },
    };
    Ok(VolumeSpec {
        params,
        data_path: me.disk.clone(),
        meta,
        local_addr: peer_on.map(|_| me.address),
        peer_addr: peer_on.map(|p| p.address),
        handlers: r.handlers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        disk_threads: 4,
        direct_io: r.disk.direct_io,
        connect: peer_on.is_some(),
        on_io_error: match r.disk.on_io_error {
            crate::config::OnIoError::CallLocalIoError => IoErrorPolicy::CallLocalIoErrorHandler,
            crate::config::OnIoError::PassOn => IoErrorPolicy::PassOn,
            crate::config::OnIoError::Detach => IoErrorPolicy::Detach,
        },
        // issue 15 resize: where internal metadata was last found (it moves when the device grows).
        meta_locator: cfg.nodes.iter().find(|n| n.name == node).map(|n| n.state_dir.join("meta").join(format!("{name}.sb-offset"))),
    })
}

fn policies(r: &ResourceConfig, node: &str, peer: Option<&str>) -> Policies {
    use crate::config::AfterSb0Pri as C0;
    let zero = match &r.net.after_sb_0pri {
        C0::Disconnect => AfterSb0::Disconnect,
        C0::DiscardYoungerPrimary => AfterSb0::DiscardYoungerPrimary,
        C0::DiscardOlderPrimary => AfterSb0::DiscardOlderPrimary,
        C0::DiscardZeroChanges => AfterSb0::DiscardZeroChanges,
        C0::DiscardLeastChanges => AfterSb0::DiscardLeastChanges,
        C0::DiscardNode(n) if n == node => AfterSb0::DiscardLocal,
        C0::DiscardNode(n) if Some(n.as_str()) == peer => AfterSb0::DiscardRemote,
        C0::DiscardNode(_) => AfterSb0::Disconnect,
    };
    Policies {
        after_sb_0pri: zero,
        after_sb_1pri: AfterSb1::parse(&r.net.after_sb_1pri.to_string()).unwrap_or(AfterSb1::Disconnect),
        after_sb_2pri: AfterSb2::parse(&r.net.after_sb_2pri.to_string()).unwrap_or(AfterSb2::Disconnect),
        rr_conflict: RrConflict::parse(&r.net.rr_conflict.to_string()).unwrap_or(RrConflict::Disconnect),
    }
}

/// `syncer.csums-alg` / `csums-for` as the replicator takes them (issue 18).
fn csums_options(s: &crate::config::SyncerConfig) -> replicator::machine::CsumsOptions {
    use crate::config::{CsumsAlg, CsumsFor};
    use replicator::machine::CsumAlg;
    let alg = match s.csums_alg {
        CsumsAlg::Off => None,
        CsumsAlg::Sha1 => Some(CsumAlg::Sha1),
        CsumsAlg::Md5 => Some(CsumAlg::Md5),
        CsumsAlg::Crc32c => Some(CsumAlg::Crc32c),
    };
    replicator::machine::CsumsOptions { alg, every_resync: s.csums_for == CsumsFor::All }
}
