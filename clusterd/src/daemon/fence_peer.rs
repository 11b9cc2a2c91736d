//! `fencing resource-and-stonith` under `cluster.manager: pacemaker`, DRBD's way: a Primary that loses
//! its UpToDate peer holds every write acknowledgement (the replicator suspends I/O), and clusterd runs
//! the resource's `fence-peer` handler. The handler shipped for Pacemaker (`crm-fence-peer`, the job of
//! DRBD's crm-fence-peer.9.sh) adds a location constraint that keeps the peer from being promoted and
//! waits until the peer is either still a cluster member (so the constraint binds it) or fenced. Its
//! exit code says what it proved, with DRBD's numbers: 3 the peer's disk is Inconsistent, 4 the peer is
//! outdated (cannot be promoted), 7 the peer was fenced. On those I/O resumes; on anything else it stays
//! suspended and the handler runs again after [`RETRY`]. A reconnect resumes I/O too (in the replicator).
//! The constraint is removed by the volume agent once the peer is back and UpToDate.

use super::resources::Resources;
use crate::config::Fencing;
use replicator::engine::Verb;
use replicator::machine::state::Role;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Between two handler runs that did not confirm.
const RETRY: Duration = Duration::from_secs(5);
/// How often a resource is looked at.
const TICK: Duration = Duration::from_millis(100);
/// A handler that has not answered by then is killed and counts as not confirmed (crm-fence-peer
/// waits at most 90 s by default).
const HANDLER_LIMIT: Duration = Duration::from_secs(120);

/// One watcher per `resource-and-stonith` resource with a handler (loading requires one).
pub(super) fn spawn(resources: &Arc<Resources>, me: &str, peer: &str) -> Vec<JoinHandle<()>> {
    let config = Arc::clone(&resources.config);
    config
        .resources
        .values()
        .filter(|r| r.disk.fencing == Fencing::ResourceAndStonith)
        .filter_map(|r| r.handlers.get("fence-peer").map(|cmd| (r.name.clone(), cmd.clone())))
        .map(|(name, cmd)| {
            let (resources, me, peer) = (Arc::clone(resources), me.to_string(), peer.to_string());
            tokio::spawn(async move { watch(resources, name, cmd, me, peer).await })
        })
        .collect()
}

async fn watch(resources: Arc<Resources>, name: String, cmd: String, me: String, peer: String) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_run: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Ok(volume) = resources.volume(&name).await else { continue };
        let s = volume.snapshot();
        if s.suspended.is_none() || s.role != Role::Primary {
            last_run = None;
            continue;
        }
        if last_run.is_some_and(|t| t.elapsed() < RETRY) {
            continue;
        }
        last_run = Some(Instant::now());
        tracing::warn!(resource = %name, "I/O suspended after losing {peer}: running the fence-peer handler `{cmd}`");
        let reason = match run_handler(&cmd, &name, &me, &peer).await {
            Ok(3) => "the fence-peer handler reported the peer's disk Inconsistent",
            Ok(4) => "the fence-peer handler outdated the peer (it cannot be promoted)",
            Ok(7) => "the fence-peer handler reported the peer fenced",
            Ok(code) => {
                tracing::error!(resource = %name, "fence-peer handler exited with {code} (3, 4 or 7 confirm): I/O stays suspended, retry in {RETRY:?}");
                continue;
            }
            Err(e) => {
                tracing::error!(resource = %name, "fence-peer handler: {e}: I/O stays suspended, retry in {RETRY:?}");
                continue;
            }
        };
        if let Err(e) = volume.verb(Verb::Thaw { reason }).await {
            tracing::error!(resource = %name, "resume I/O failed: {e}");
        }
    }
}

/// The handler with DRBD's environment (the names crm-fence-peer.9.sh reads) and ours.
async fn run_handler(cmd: &str, resource: &str, me: &str, peer: &str) -> Result<i32, String> {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("HA_RESOURCE", resource)
        .env("DRBD_RESOURCE", resource)
        .env("HA_HANDLER", "fence-peer")
        .env("HA_NODE", me)
        .env("HA_PEER", peer)
        .env("DRBD_PEER", peer)
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(HANDLER_LIMIT, child).await {
        Err(_) => Err(format!("no answer within {HANDLER_LIMIT:?} (killed)")),
        Ok(Err(e)) => Err(format!("cannot run it: {e}")),
        Ok(Ok(st)) => st.code().ok_or_else(|| format!("killed by {st}")),
    }
}
