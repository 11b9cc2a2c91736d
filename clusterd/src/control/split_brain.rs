//! `haadm split-brain [RES]` and `haadm split-brain RES --keep NODE [--save-victim FILE]` (issue 15).
//!
//! Showing: both sides as the handshake that found the split brain saw them (the replicator keeps
//! them, `replicator/src/machine/split_brain.rs`), the common generation, and a recommended victim.
//!
//! Resolving from either node. On the victim: demote it (a Primary victim's writes are what is
//! discarded), copy its changed blocks if asked, then `connect --discard-my-data`; the survivor
//! needs no verb: a node left StandAlone by a split brain stays reachable for resolution and accepts
//! exactly that offer when both sides' generations are still the recorded ones. On the survivor:
//! connect asking the peer to discard; the victim, reachable the same way, checks the generations
//! and refuses while it is Primary (its writes are being served: demoting it under its users is its
//! own node's call). `--save-victim` needs the victim's disk, so it runs on the victim only.

use crate::daemon::resources::Resources;
use proto::control::{GenerationUuids, SplitBrainReply, SplitBrainRequest, SplitBrainSide, SplitBrainView};
use replicator::engine::Verb;
use replicator::machine::split_brain::{SplitBrainFacts, SplitBrainSide as Side};
use replicator::machine::state::{ConnState, ReplState, Role};
use replicator::machine::uuids::Uuids;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Status;

/// How long a resolution waits for the link to come up with the survivor.
const RESOLVE_WAIT: Duration = Duration::from_secs(30);

fn uuids(u: &Uuids) -> GenerationUuids {
    GenerationUuids { current: u.current, bitmap: u.bitmap, history0: u.history[0], history1: u.history[1] }
}

fn side(node: &str, s: &Side) -> SplitBrainSide {
    SplitBrainSide { node: node.to_string(), uuids: Some(uuids(&s.uuids)), role: s.role.to_string(), changed_blocks: s.changed_blocks }
}

/// The recommended victim and why: a side that was not Primary (not serving: nobody read its
/// changes), else the side that changed fewer blocks (less to lose), else — a tie — the peer
/// of the node that sorts first, so both nodes recommend the same one.
pub fn recommend(local: &str, peer: &str, facts: &SplitBrainFacts) -> (String, String) {
    let (me, them) = (&facts.me, &facts.peer);
    let mib = |b: u64| format!("{:.1} MiB", (b * 4096) as f64 / (1 << 20) as f64);
    match (me.role == Role::Primary, them.role == Role::Primary) {
        (false, true) => return (local.into(), format!("{local} was not Primary (not serving); {peer} was")),
        (true, false) => return (peer.into(), format!("{peer} was not Primary (not serving); {local} was")),
        _ => {}
    }
    let both = if me.role == Role::Primary { "both were Primary" } else { "neither was Primary" };
    let (victim, fewer, more) = match me.changed_blocks.cmp(&them.changed_blocks) {
        std::cmp::Ordering::Less => (local, me.changed_blocks, them.changed_blocks),
        std::cmp::Ordering::Greater => (peer, them.changed_blocks, me.changed_blocks),
        std::cmp::Ordering::Equal => {
            let v = if local < peer { peer } else { local };
            return (v.into(), format!("{both} and both changed {} blocks; {v} by name order", me.changed_blocks));
        }
    };
    (victim.into(), format!("{both}; {victim} changed less ({fewer} blocks, {} vs {more} blocks, {})", mib(fewer), mib(more)))
}

/// Views of the selected resources.
pub async fn views(resources: &Resources, which: &str) -> Result<Vec<SplitBrainView>, Status> {
    let names = resources.select(which).await.map_err(Status::not_found)?;
    let peer = resources.config.peer_of(&resources.node).map(|n| n.name.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for n in names {
        let mut v = SplitBrainView { resource: n.clone(), connection: "down".into(), ..Default::default() };
        if let Ok(vol) = resources.volume(&n).await {
            let s = vol.current().await;
            v.split_brain = s.split_brain;
            v.connection = s.conn.to_string();
            if let Some(f) = s.split_brain_facts {
                v.recorded = true;
                v.local = Some(side(&resources.node, &f.me));
                v.peer = Some(side(&peer, &f.peer));
                v.common_ancestor = f.common_ancestor().unwrap_or(0);
                (v.victim, v.reason) = recommend(&resources.node, &peer, &f);
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// `--keep NODE` on the victim.
pub async fn resolve(resources: &Resources, req: &SplitBrainRequest) -> Result<SplitBrainReply, Status> {
    let name = req.resource.as_str();
    if name.is_empty() || name == "all" {
        return Err(Status::invalid_argument("--keep resolves one resource: name it (haadm split-brain RES --keep NODE)"));
    }
    let view = views(resources, name).await?.pop().ok_or_else(|| Status::not_found(format!("no resource `{name}`")))?;
    let me = resources.node.clone();
    let peer = view.peer.as_ref().map(|p| p.node.clone()).unwrap_or_default();
    if !view.recorded || !view.split_brain {
        return Err(Status::failed_precondition(format!(
            "{name}: no unresolved split brain on {me} (connection {}); `haadm split-brain {name}` shows what was recorded",
            view.connection
        )));
    }
    if req.keep != peer && req.keep != me {
        return Err(Status::invalid_argument(format!("--keep {}: not a node of {name} (this node is {me}, its peer {peer})", req.keep)));
    }
    if !req.save_victim.is_empty() && !Path::new(&req.save_victim).is_absolute() {
        return Err(Status::invalid_argument(format!("--save-victim {}: needs an absolute path", req.save_victim)));
    }
    let vol = resources.volume(name).await.map_err(Status::failed_precondition)?;
    if req.keep == me {
        return keep_this_node(&vol, view, &me, &peer, req).await;
    }
    let mut steps = Vec::new();
    if vol.current().await.role == Role::Primary {
        vol.verb(Verb::Secondary).await.map_err(|e| Status::failed_precondition(format!("{name}: cannot demote the victim {me}: {e}")))?;
        steps.push(format!("{me} demoted to Secondary"));
    }
    if !req.save_victim.is_empty() {
        let n = vol.save_out_of_sync(Path::new(&req.save_victim)).await.map_err(|e| Status::failed_precondition(format!("{name}: --save-victim: {e}")))?;
        steps.push(format!("{n} changed block(s) of {me} saved to {} (sparse image)", req.save_victim));
    }
    tracing::warn!(resource = %name, keep = %peer, "split brain: discarding this node's changes ({})", steps.join("; "));
    vol.verb(Verb::Connect { discard_my_data: true }).await.map_err(Status::failed_precondition)?;
    steps.push(format!("{me} connects with --discard-my-data"));
    wait_resolved(&vol, view, name, &peer, steps, &[ReplState::SyncTarget, ReplState::PausedSyncT]).await
}

/// `--keep THIS-NODE` on the survivor: connect asking the peer to discard; the peer (reachable for
/// resolution) checks the generations and refuses while it is Primary.
async fn keep_this_node(vol: &replicator::engine::Volume, view: SplitBrainView, me: &str, peer: &str, req: &SplitBrainRequest) -> Result<SplitBrainReply, Status> {
    let name = req.resource.as_str();
    if !req.save_victim.is_empty() {
        return Err(Status::failed_precondition(format!(
            "{name}: --save-victim copies the victim's blocks from its own disk: run `haadm split-brain {name} --keep {me} --save-victim FILE` on the victim {peer}"
        )));
    }
    tracing::warn!(resource = %name, victim = %peer, "split brain: keeping this node's data, asking the peer to discard");
    vol.verb(Verb::ResolveKeepMe).await.map_err(Status::failed_precondition)?;
    let steps = vec![format!("{me} connects as the survivor, {peer} asked to discard its changes")];
    wait_resolved(vol, view, name, peer, steps, &[ReplState::SyncSource, ReplState::PausedSyncS]).await
}

/// Wait (bounded) until the link is up after a resolution, or report why not.
async fn wait_resolved(
    vol: &replicator::engine::Volume,
    view: SplitBrainView,
    name: &str,
    peer: &str,
    mut steps: Vec<String>,
    syncing: &[ReplState],
) -> Result<SplitBrainReply, Status> {
    let me = view.local.as_ref().map(|l| l.node.clone()).unwrap_or_default();
    let deadline = Instant::now() + RESOLVE_WAIT;
    loop {
        let s = vol.current().await;
        let synced = s.repl == ReplState::Established || syncing.contains(&s.repl);
        if s.conn == ConnState::Connected && synced {
            steps.push(format!("connected to {peer}, replication {} (resync from {peer})", s.repl));
            return Ok(SplitBrainReply { views: vec![view], ok: true, message: format!("{name}: split brain resolved, {peer} kept: {}", steps.join("; ")) });
        }
        if s.conn == ConnState::StandAlone {
            let why = s.last_error.unwrap_or_else(|| "StandAlone again".into());
            return Ok(SplitBrainReply { views: vec![view], ok: false, message: format!("{name}: resolution failed: {why} ({})", steps.join("; ")) });
        }
        if Instant::now() > deadline {
            return Ok(SplitBrainReply {
                views: vec![view],
                ok: false,
                message: format!(
                    "{name}: {peer} did not accept within {} s (connection {}); {me} stays Connecting ({})",
                    RESOLVE_WAIT.as_secs(),
                    s.conn,
                    steps.join("; ")
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(me: (Role, u64), peer: (Role, u64)) -> SplitBrainFacts {
        let u = Uuids::default();
        SplitBrainFacts {
            me: Side { uuids: u, role: me.0, changed_blocks: me.1 },
            peer: Side { uuids: u, role: peer.0, changed_blocks: peer.1 },
        }
    }

    #[test]
    fn the_side_not_serving_is_the_victim_whatever_it_changed() {
        let (v, why) = recommend("node1", "node2", &facts((Role::Secondary, 1), (Role::Primary, 500)));
        assert_eq!(v, "node1");
        assert!(why.contains("not Primary"), "{why}");
        let (v, _) = recommend("node1", "node2", &facts((Role::Primary, 1), (Role::Secondary, 500)));
        assert_eq!(v, "node2");
    }

    #[test]
    fn otherwise_the_side_that_changed_less_and_a_tie_agrees_on_both_nodes() {
        let (v, why) = recommend("node1", "node2", &facts((Role::Primary, 10), (Role::Primary, 300)));
        assert_eq!(v, "node1");
        assert!(why.contains("changed less") && why.contains("10 blocks"), "{why}");
        let (v, _) = recommend("node2", "node1", &facts((Role::Primary, 300), (Role::Primary, 10)));
        assert_eq!(v, "node1");
        let (a, _) = recommend("node1", "node2", &facts((Role::Primary, 5), (Role::Primary, 5)));
        let (b, _) = recommend("node2", "node1", &facts((Role::Primary, 5), (Role::Primary, 5)));
        assert_eq!((a.as_str(), b.as_str()), ("node2", "node2"));
    }
}
