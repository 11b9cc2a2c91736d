//! One failover group inside the cluster loop (issue 17: several groups, each moving on its own).
//!
//! A `GroupRun` owns the group's sequencer, its steps (volumes, VIP, port block, target), its I/O
//! fencing and its failover accounting. The loop in `cluster.rs` feeds every group the shared events
//! (heartbeat membership, uplink, the tick) and its own (the peer's state for this group, step results,
//! admin commands), and carries out the actions each returns; guards are shared (`guard_run.rs`), so a
//! peer failure is fenced once however many groups it held.

use super::group_steps::GroupSteps;
use super::io_fencing::IoFencing;
use super::resources::Resources;
use crate::config::{ClusterConfig, GroupConfig, HaConfig, LEGACY_GROUP_NAME};
use crate::failover::{
    Action, AdminCmd, GroupState, GuardKind, Input, Level, LocalVolumes, Phase, Sequencer, SequencerParams,
    SequencerStatus, Step, volumes_view,
};
use crate::monitor::counters::ClusterCounters;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub(super) type AdminReply = oneshot::Sender<Result<(), String>>;

/// What the group tasks (steps, guard, uplink probes) report back to the loop.
#[derive(Debug)]
pub(super) enum LoopMsg {
    /// An input for the group at this index (a step result).
    Group(usize, Input),
    /// The shared guard finished (see `guard_run.rs`).
    GuardDone { ok: bool, detail: String },
    /// Whether a ping node answers from here (every group publishes it).
    Uplink(bool),
}

pub(super) struct GroupRun {
    pub index: usize,
    pub config: GroupConfig,
    pub seq: Sequencer,
    pub steps: Arc<GroupSteps>,
    /// Admin commands waiting for this group's sequencer to answer.
    pub pending: Vec<(AdminCmd, AdminReply)>,
    /// I/O fencing of this group's volumes (`fencing resource-and-stonith`), see `io_fencing.rs`.
    pub io_fence: IoFencing,
    /// The peer's newest state for this group (decoded), for the fence delay.
    pub peer_last: Option<GroupState>,
    /// The peer's newest state bytes for this group, to feed only changes.
    pub peer_bytes: Option<Vec<u8>>,
    /// What this group last asked to publish.
    pub published: Vec<u8>,
    pub acquisition: Acquisition,
    pub last_volumes: Option<LocalVolumes>,
    pub epoch_file: PathBuf,
    pub persisted_epoch: u64,
}

pub(super) fn sequencer_params(
    cfg: &HaConfig,
    c: &ClusterConfig,
    g: &GroupConfig,
    me: &str,
    peer: Option<&str>,
    generation: u64,
) -> SequencerParams {
    let mut p = SequencerParams::new(me, peer);
    p.auto_failback = g.auto_failback.unwrap_or(c.auto_failback);
    p.preferred = g.preferred.clone();
    p.initdead = c.initdead;
    p.degr_wfc_timeout = g
        .resources
        .iter()
        .filter_map(|r| cfg.resources.get(r))
        .map(|r| r.startup.degr_wfc_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    p.start_timeout = g.start_timeout;
    p.stop_timeout = g.stop_timeout;
    p.guard = match (!c.guard.ping_nodes.is_empty(), c.guard.can_fence()) {
        (false, false) => GuardKind::None,
        (true, false) => GuardKind::PingNodes,
        (false, true) => GuardKind::FenceCommand,
        (true, true) => GuardKind::Both,
    };
    p.allow_unguarded_split = g.allow_unguarded_split;
    p.garp_repeat_after = g.vip.as_ref().map_or(Duration::from_secs(3), |v| v.garp_repeat_after);
    p.portblock = g.portblock;
    p.generation = generation;
    p
}

/// The file holding a group's highest epoch: `group-epoch` for the single `group:` (as before),
/// `group-epoch.NAME` for a named group.
pub(super) fn epoch_file(state_dir: &Path, group: &str) -> PathBuf {
    if group == LEGACY_GROUP_NAME { state_dir.join("group-epoch") } else { state_dir.join(format!("group-epoch.{group}")) }
}

/// The highest group epoch this node used or saw, persisted in the state directory (missing = 0).
pub(super) fn read_epoch(path: &Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().with_context(|| format!("{}: not an epoch number (remove it only if you know why)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Temp file, fsync, rename, fsync the directory: a crash leaves the old or the new number.
pub(super) fn write_epoch(path: &Path, epoch: u64) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    writeln!(f, "{epoch}").with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync {}", dir.display()))?;
    }
    Ok(())
}

/// The group's volumes summarised for the sequencer (see [`volumes_view`]); a resource that is not
/// running counts as Diskless and disconnected.
pub(super) async fn local_volumes(resources: &Resources, names: &[String]) -> LocalVolumes {
    let mut snapshots = Vec::with_capacity(names.len());
    for n in names {
        snapshots.push(resources.volume(n).await.ok().map(|v| v.snapshot()));
    }
    volumes_view(&snapshots)
}

/// Failover accounting for `/metrics`: an acquisition that moved the group here from the peer is a
/// failover; its duration runs from the peer being declared dead (or, for a hand-over, from leaving
/// `idle`) to `holding`.
#[derive(Debug, Default)]
pub(super) struct Acquisition {
    previous: Option<Phase>,
    /// The group was last known held by the peer.
    from_peer: bool,
    started: Option<Instant>,
    peer_lost_at: Option<Instant>,
}

impl Acquisition {
    pub(super) fn observe(&mut self, st: &SequencerStatus, me: &str, counters: &ClusterCounters) {
        let was = self.previous.replace(st.phase);
        match st.phase {
            Phase::Idle => {
                self.started = None;
                if let Some((holder, _)) = &st.holder {
                    self.from_peer = holder != me;
                }
            }
            Phase::Holding if was != Some(Phase::Holding) => {
                if let (Some(t0), true) = (self.started.take(), self.from_peer) {
                    let t0 = self.peer_lost_at.take().map_or(t0, |lost| lost.min(t0));
                    counters.failover(t0.elapsed());
                }
                self.from_peer = false;
            }
            Phase::Claiming | Phase::Starting if was == Some(Phase::Idle) => self.started = Some(Instant::now()),
            _ => {}
        }
    }

    pub(super) fn peer_liveness(&mut self, alive: bool) {
        self.peer_lost_at = if alive { None } else { self.peer_lost_at.or(Some(Instant::now())) };
    }
}

/// What applying a group's actions asks of the loop beyond the group itself.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// The group asked for the guard (shared: one run per failure).
    pub guard: bool,
    /// The group published new state bytes.
    pub published: bool,
}

impl GroupRun {
    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    /// Feeds one input and carries out what the sequencer returns.
    pub(super) fn feed(&mut self, input: Input, tx: &mpsc::Sender<LoopMsg>, counters: &ClusterCounters, escalation: Option<&str>) -> Requests {
        let actions = self.seq.step(Instant::now(), input);
        let r = self.apply(actions, tx, escalation);
        // Seen at every step, not only at the next tick: a peer that takes the group and dies
        // within one tick must still make our acquisition count as a failover.
        let status = self.seq.status();
        self.acquisition.observe(&status, &self.steps.node, counters);
        r
    }

    pub(super) fn apply(&mut self, actions: Vec<Action>, tx: &mpsc::Sender<LoopMsg>, escalation: Option<&str>) -> Requests {
        let mut out = Requests::default();
        for a in actions {
            match a {
                Action::Run(step) => self.run_step(step, tx),
                Action::RunGuard => out.guard = true,
                Action::Escalate(why) => self.escalate(why, escalation),
                Action::Publish(bytes) => {
                    self.published = bytes;
                    out.published = true;
                }
                Action::Reply { cmd, result } => {
                    let mut keep = Vec::new();
                    for (c, reply) in self.pending.drain(..) {
                        if c == cmd {
                            let _ = reply.send(result.clone());
                        } else {
                            keep.push((c, reply));
                        }
                    }
                    self.pending = keep;
                }
                Action::Log(level, msg) => {
                    let g = &self.config.name;
                    match level {
                        Level::Debug => tracing::debug!(target: "failover", group = %g, "{msg}"),
                        Level::Info => tracing::info!(target: "failover", group = %g, "{msg}"),
                        Level::Warn => tracing::warn!(target: "failover", group = %g, "{msg}"),
                        Level::Error => tracing::error!(target: "failover", group = %g, "{msg}"),
                    }
                }
            }
        }
        out
    }

    fn run_step(&self, step: Step, tx: &mpsc::Sender<LoopMsg>) {
        let steps = Arc::clone(&self.steps);
        let tx = tx.clone();
        let (index, group) = (self.index, self.config.name.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = steps.run(step).await;
            tracing::info!(target: "failover", group = %group, "step {step:?}: {} in {:?}", if r.is_ok() { "done" } else { "FAILED" }, started.elapsed());
            let input = match r {
                Ok(()) => Input::StepDone(step),
                Err(e) => Input::StepFailed(step, e),
            };
            let _ = tx.send(LoopMsg::Group(index, input)).await;
        });
    }

    fn escalate(&self, why: String, escalation: Option<&str>) {
        let g = &self.config.name;
        match escalation {
            Some(cmd) => {
                tracing::error!(target: "failover", "stopping group {g} failed ({why}); running the escalation command `{cmd}`");
                let cmd = cmd.to_string();
                tokio::spawn(async move {
                    let st = tokio::process::Command::new("/bin/sh").arg("-c").arg(&cmd).status().await;
                    tracing::error!(target: "failover", "escalation command `{cmd}` finished: {st:?}");
                });
            }
            None => tracing::error!(
                target: "failover",
                "stopping group {g} failed ({why}) and no cluster.escalation-command is configured: \
                 this node may still hold resources; intervene by hand"
            ),
        }
    }

    /// Persists a grown epoch: epochs only grow, across restarts too, so a restarted node never claims
    /// an epoch it (or its peer) already used.
    pub(super) fn persist_epoch(&mut self) {
        let epoch = self.seq.status().epoch;
        if epoch > self.persisted_epoch {
            match write_epoch(&self.epoch_file, epoch) {
                Ok(()) => self.persisted_epoch = epoch,
                Err(e) => tracing::error!("cannot persist the epoch {epoch} of group {}: {e:#}", self.config.name),
            }
        }
    }
}
