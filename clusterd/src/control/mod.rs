//! The gRPC control API server (proto/control.proto) on the node's Unix socket: status, the events
//! stream, the verbs, and the diagnostic data path. It only calls into [`Resources`]; it never holds a
//! lock across I/O on a volume, so a slow verb cannot stall the data path.

mod convert;
pub mod split_brain;

use crate::daemon::resources::Resources;
use crate::daemon::targets::TargetHost;
use crate::daemon::cluster::ClusterHandle;
use crate::failover::AdminCmd;
use proto::control::control_server::Control;
use proto::control::*;
use replicator::engine::Verb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub use convert::Speedometer;

pub struct ControlService {
    pub resources: Arc<Resources>,
    pub speedo: Arc<Speedometer>,
    /// issue 18 verify: the last verify and the schedule of each resource.
    pub verify: Arc<crate::daemon::verify_schedule::VerifyBook>,
    pub targets: Arc<TargetHost>,
    /// The HA group's loop; `None` without a `group` section.
    pub cluster: Option<Arc<ClusterHandle>>,
    /// `haadm adjust` (issue 15).
    pub adjuster: Arc<crate::adjust::apply::Adjuster>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

fn reply(results: Vec<Result<String, String>>) -> Response<VerbReply> {
    let ok = results.iter().all(Result::is_ok);
    let message = results.into_iter().map(|r| r.unwrap_or_else(|e| e)).collect::<Vec<_>>().join("\n");
    Response::new(VerbReply { ok, message, warnings: Vec::new() })
}

impl ControlService {
    async fn each(&self, which: &str, verb: Option<Verb>, kind: &'static str) -> Result<Response<VerbReply>, Status> {
        let names = self.resources.select(which).await.map_err(Status::not_found)?;
        let mut out = Vec::new();
        for n in names {
            let r = match (kind, verb) {
                ("up", _) => self.resources.up(&n).await,
                ("down", _) => self.resources.down(&n).await,
                ("attach", _) => self.resources.attach(&n).await,
                (_, Some(v)) => self.resources.verb(&n, v).await,
                _ => Err(format!("{n}: unsupported")),
            };
            if let Err(e) = &r {
                tracing::warn!(resource = %n, "{kind} refused: {e}");
            } else {
                tracing::info!(resource = %n, "{kind}");
            }
            out.push(r);
        }
        Ok(reply(out))
    }

    /// Issue 15: this node's configuration digest against the peer's (from its heartbeats).
    fn config_digests(&self) -> ConfigDigests {
        let local = self.adjuster.digest.borrow().clone();
        let membership = self.cluster.as_ref().and_then(|c| c.view().membership);
        let peer = membership.as_ref().and_then(|m| m.peer_config_digest.clone()).unwrap_or_default();
        let peer_node = membership.map(|m| m.peer).unwrap_or_default();
        ConfigDigests { mismatch: !peer.is_empty() && peer != local, local, peer, peer_node }
    }

    /// `target start` / `target stop` for an external manager (Pacemaker's target agent), or on a
    /// standalone node. The embedded sequencer owns the target of its group: starting it behind the
    /// sequencer's back would serve it without the VIP, the port block and the promotion order.
    async fn target_verb(&self, start: bool) -> Result<Response<VerbReply>, Status> {
        let what = if start { "target start" } else { "target stop" };
        if self.cluster.is_some() {
            return Err(Status::failed_precondition(format!(
                "`{what}`: the failover group of {} serves the target where it runs (use standby/takeover, \
                 or `cluster.manager: pacemaker` and the target agent)",
                self.resources.config.path.display()
            )));
        }
        if !self.targets.configured() {
            return Err(Status::failed_precondition(format!("`{what}`: no targets in {}", self.resources.config.path.display())));
        }
        let r = if start {
            self.targets.start(None, &self.resources).await.map(|()| "target: serving".to_string()).map_err(|e| format!("target start failed: {e:#}"))
        } else {
            self.targets.stop(None).await;
            Ok("target: stopped".to_string())
        };
        match &r {
            Ok(m) => tracing::info!("{m}"),
            Err(e) => tracing::warn!("{e}"),
        }
        Ok(reply(vec![r]))
    }

    /// `standby` / `takeover` of `group` (a group name, or `all`/"": every group it applies to).
    async fn admin(&self, group: &str, cmd: AdminCmd) -> Result<Response<VerbReply>, Status> {
        let what = match cmd { AdminCmd::Standby => "standby", AdminCmd::Takeover => "takeover" };
        let Some(c) = &self.cluster else {
            return Err(Status::failed_precondition(format!(
                "`{what}` needs a `cluster` and a `group` (or `groups`) section in {}",
                self.resources.config.path.display()
            )));
        };
        let r = c.admin(group, cmd, std::time::Duration::from_secs(90)).await;
        // A single `group:` answers as before; named groups say which moved.
        let legacy = self.resources.running_config().legacy_group;
        let (ok, message) = match r {
            Ok(_) if legacy => (true, format!("{what}: done")),
            Ok(lines) => (true, format!("{what}: done ({})", lines.join(", "))),
            Err(e) => (false, format!("{what} refused: {e}")),
        };
        if ok { tracing::info!("{message}") } else { tracing::warn!("{message}") }
        Ok(Response::new(VerbReply { ok, message, warnings: Vec::new() }))
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let which = req.into_inner().resource;
        let names = self.resources.select(&which).await.map_err(Status::not_found)?;
        let mut resources = Vec::new();
        let running = self.resources.running_config();
        for st in self.resources.status().await {
            if !names.contains(&st.name) {
                continue;
            }
            let cfg = running.resources.get(&st.name);
            let verifying = st.running.as_ref().is_some_and(|(s, _)| s.repl == replicator::machine::state::ReplState::VerifyS);
            let rate = cfg.and_then(|r| if verifying { r.syncer.effective_verify_rate().0 } else { r.syncer.rate.0 });
            let name = st.name.clone();
            let mut status = convert::resource_status(st, rate, &self.speedo);
            status.last_verify = self.verify.last(&name).map(convert::last_verify);
            status.next_verify_unix = self.verify.next_due_unix(&name).unwrap_or(0);
            status.fencing = cfg.map(|r| r.disk.fencing.as_str().to_string()).unwrap_or_default();
            resources.push(status);
        }
        let cluster = self.cluster.as_ref().map(|c| convert::cluster_status(&c.view(), &self.resources.node));
        let config = Some(self.config_digests());
        let sessions = self.targets.sessions().await;
        // The previous release (emulated by the test knob) had no version in its status.
        let previous = crate::versions::release_or_current().previous;
        let software_version = if previous { String::new() } else { crate::versions::SOFTWARE_VERSION.to_string() };
        Ok(Response::new(StatusReply { node: self.resources.node.clone(), resources, cluster, sessions, config, software_version }))
    }

    type EventsStream = EventStream;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let names = self.resources.select(&r.resource).await.map_err(Status::not_found)?;
        let mut map = tokio_stream::StreamMap::new();
        let mut initial = Vec::new();
        for n in &names {
            if let Ok(v) = self.resources.volume(n).await {
                let rx = v.subscribe();
                initial.push(convert::event("exists", n, &rx.borrow()));
                map.insert(n.clone(), tokio_stream::wrappers::WatchStream::from_changes(rx));
            }
        }
        let cluster_rx = self.cluster.as_ref().map(|c| c.subscribe());
        if let Some(rx) = &cluster_rx {
            initial.push(convert::cluster_event("exists", &rx.borrow()));
        }
        initial.push(Event { kind: "exists".into(), object: "-".into(), ..Default::default() });
        let now_only = r.now;
        let head = tokio_stream::iter(initial.into_iter().map(Ok));
        if now_only {
            return Ok(Response::new(Box::pin(head)));
        }
        let changes = map.map(|(name, snap)| Ok(convert::event("change", &name, &snap)));
        let Some(rx) = cluster_rx else {
            return Ok(Response::new(Box::pin(head.chain(changes))));
        };
        // The view is republished every tick; only a changed state is an event.
        let mut last = convert::cluster_event("exists", &rx.borrow()).fields;
        let group = tokio_stream::wrappers::WatchStream::from_changes(rx).filter_map(move |view| {
            let ev = convert::cluster_event("change", &view);
            if ev.fields == last {
                return None;
            }
            last = ev.fields.clone();
            Some(Ok(ev))
        });
        Ok(Response::new(Box::pin(head.chain(changes.merge(group)))))
    }

    async fn up(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, None, "up").await
    }
    async fn down(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, None, "down").await
    }
    async fn primary(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        self.each(&r.resource, Some(Verb::Primary { force: r.force }), "primary").await
    }
    async fn secondary(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Secondary), "secondary").await
    }
    async fn connect(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        self.each(&r.resource, Some(Verb::Connect { discard_my_data: r.discard_my_data }), "connect").await
    }
    async fn disconnect(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Disconnect), "disconnect").await
    }
    async fn resume_io(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Thaw { reason: "resume-io by the administrator" }), "resume-io").await
    }
    async fn outdate(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Outdate), "outdate").await
    }
    async fn invalidate(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Invalidate { remote: false }), "invalidate").await
    }
    async fn invalidate_remote(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Invalidate { remote: true }), "invalidate-remote").await
    }
    async fn verify(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        // issue 18 verify: `--repair`, or the resource's `syncer.verify-repair`.
        let req = req.into_inner();
        let names = self.resources.select(&req.resource).await.map_err(Status::not_found)?;
        let cfg = self.resources.running_config();
        let mut out = Vec::new();
        for n in names {
            let repair = req.repair || cfg.resources.get(&n).is_some_and(|r| r.syncer.verify_repair);
            let r = self.resources.verb(&n, Verb::Verify { repair }).await;
            match &r {
                Err(e) => tracing::warn!(resource = %n, "verify refused: {e}"),
                Ok(_) => tracing::info!(resource = %n, repair, "verify"),
            }
            out.push(r);
        }
        Ok(reply(out))
    }
    async fn pause_sync(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::PauseSync), "pause-sync").await
    }
    async fn resume_sync(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::ResumeSync), "resume-sync").await
    }
    async fn standby(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.admin(&req.into_inner().resource, AdminCmd::Standby).await
    }
    async fn takeover(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.admin(&req.into_inner().resource, AdminCmd::Takeover).await
    }
    async fn target_show(&self, req: Request<TargetShowRequest>) -> Result<Response<TargetShowReply>, Status> {
        let (text, json) = self.targets.show(req.into_inner().json).await;
        let running = self.targets.is_running().await;
        Ok(Response::new(TargetShowReply { text, json, running }))
    }
    async fn target_start(&self, _: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.target_verb(true).await
    }
    async fn target_stop(&self, _: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.target_verb(false).await
    }

    async fn adjust(&self, req: Request<AdjustRequest>) -> Result<Response<AdjustReply>, Status> {
        use crate::adjust::apply::AdjustError;
        let r = req.into_inner();
        let which = if r.resource.is_empty() { "all" } else { r.resource.as_str() };
        let outcome = self.adjuster.adjust(which, r.dry_run).await.map_err(|e| match &e {
            AdjustError::UnknownResource(m) => Status::not_found(m.clone()),
            AdjustError::Invalid(_) | AdjustError::Refused(_) => Status::failed_precondition(e.to_string()),
            AdjustError::Failed(_) => Status::aborted(e.to_string()),
        })?;
        let membership = self.cluster.as_ref().and_then(|c| c.view().membership);
        Ok(Response::new(AdjustReply {
            changes: outcome.lines,
            new_digest: outcome.new_digest,
            peer_digest: membership.as_ref().and_then(|m| m.peer_config_digest.clone()).unwrap_or_default(),
            peer: membership.map(|m| m.peer).unwrap_or_default(),
            applied: outcome.applied,
        }))
    }

    async fn io_write(&self, req: Request<IoWriteRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        let v = self.resources.volume(&r.resource).await.map_err(Status::failed_precondition)?;
        let n = r.data.len();
        v.write(r.offset, r.data.into(), r.fua).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(reply(vec![Ok(format!("{}: wrote {n} bytes at {}", r.resource, r.offset))]))
    }

    async fn io_read(&self, req: Request<IoReadRequest>) -> Result<Response<IoReadReply>, Status> {
        let r = req.into_inner();
        if r.length > 16 << 20 {
            return Err(Status::invalid_argument("at most 16 MiB per read"));
        }
        let v = self.resources.volume(&r.resource).await.map_err(Status::failed_precondition)?;
        let data = v.read(r.offset, r.length).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(IoReadReply { data: data.to_vec() }))
    }

    async fn resize(&self, req: Request<ResizeRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        let names = self.resources.select(&r.resource).await.map_err(Status::not_found)?;
        let size = (r.size > 0).then_some(r.size);
        let mut out = Vec::new();
        for n in names {
            let res = match self.resources.volume(&n).await {
                Err(e) => Err(e),
                // A shrink takes blocks away from under whoever uses them: only with no target serving.
                Ok(v) if size.is_some_and(|s| s < v.size()) && self.targets.is_running().await => Err(format!(
                    "{n}: shrinking refused: the iSCSI target is serving on this node (stop it and demote both nodes first)"
                )),
                Ok(v) => {
                    let old = v.size();
                    v.resize(size, r.assume_clean).await.map(|new| {
                        let how = if r.assume_clean { "new area assumed clean" } else { "new area resyncs from the Primary" };
                        format!("{n}: resized from {old} to {new} bytes on both nodes ({how})")
                    })
                }
            };
            match &res {
                Ok(m) => tracing::info!(resource = %n, "{m}"),
                Err(e) => tracing::warn!(resource = %n, "resize refused: {e}"),
            }
            out.push(res);
        }
        Ok(reply(out))
    }

    async fn split_brain(&self, req: Request<SplitBrainRequest>) -> Result<Response<SplitBrainReply>, Status> {
        let r = req.into_inner();
        if r.keep.is_empty() {
            let views = split_brain::views(&self.resources, &r.resource).await?;
            return Ok(Response::new(SplitBrainReply { views, ok: true, message: String::new() }));
        }
        split_brain::resolve(&self.resources, &r).await.map(Response::new)
    }

    async fn new_current_uuid(&self, req: Request<NewCurrentUuidRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        let verb = Verb::NewCurrentUuid { clear_bitmap: r.clear_bitmap };
        self.each(&r.resource, Some(verb), if r.clear_bitmap { "new-current-uuid --clear-bitmap" } else { "new-current-uuid" }).await
    }

    // issue 15 detach
    async fn detach(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, Some(Verb::Detach), "detach").await
    }

    async fn attach(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.each(&req.into_inner().resource, None, "attach").await
    }

    async fn io_flush(&self, req: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        let r = req.into_inner();
        let v = self.resources.volume(&r.resource).await.map_err(Status::failed_precondition)?;
        v.flush().await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(reply(vec![Ok(format!("{}: flushed on both disks", r.resource))]))
    }

    // issue 15 upgrade
    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionReply>, Status> {
        let release = crate::versions::release_or_current();
        if release.previous {
            // What a daemon of control protocol 1 answers: it has no such RPC (tonic answers an
            // unknown method with Unimplemented and no message).
            return Err(Status::new(tonic::Code::Unimplemented, ""));
        }
        let control = crate::versions::CONTROL_PROTOCOL;
        let heartbeat = crate::heartbeat::packet::VERSIONS;
        Ok(Response::new(VersionReply {
            software_version: crate::versions::SOFTWARE_VERSION.to_string(),
            node: self.resources.node.clone(),
            control_min: control.min,
            control_max: control.max,
            replication_min: release.replication.min,
            replication_max: release.replication.max,
            heartbeat_min: heartbeat.min,
            heartbeat_max: heartbeat.max,
        }))
    }
}
