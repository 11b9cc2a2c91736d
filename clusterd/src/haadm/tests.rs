//! haadm end to end inside one process: online verbs against a scripted Control server on a Unix
//! socket in a temp dir, and the offline verbs against temp-file disks.

use super::cli::{Cli, normalize_args};
use super::{HaadmError, execute};
use crate::haadm::offline::OfflineError;
use proto::control::control_server::{Control, ControlServer};
use proto::control::{
    AdjustReply, AdjustRequest,
    Event, EventsRequest, KeyValue, ResourceStatus, StatusReply, StatusRequest, TargetShowReply, TargetShowRequest,
    VerbReply, VerbRequest,
};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// Records every verb call; `primary` without force fails like a real Inconsistent disk would.
#[derive(Default, Clone)]
struct ScriptedControl {
    calls: Arc<Mutex<Vec<(&'static str, VerbRequest)>>>,
    /// Behave like a daemon of control protocol 1 (no `Version` RPC).
    legacy: bool,
}

impl ScriptedControl {
    fn record(&self, verb: &'static str, req: VerbRequest) -> Result<Response<VerbReply>, Status> {
        let reply = if verb == "primary" && !req.force {
            VerbReply {
                ok: false,
                message: format!("{}: cannot promote: local disk is Inconsistent (use --force)", req.resource),
                warnings: vec!["peer disk is DUnknown".into()],
            }
        } else {
            VerbReply { ok: true, message: format!("{}: {verb} done", req.resource), warnings: vec![] }
        };
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((verb, req));
        }
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl Control for ScriptedControl {
    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let name = r.into_inner().resource;
        let resource = ResourceStatus {
            name: if name == "all" { "r0".into() } else { name },
            role: "Secondary".into(),
            disk: "UpToDate".into(),
            connection: "StandAlone".into(),
            replication: "Off".into(),
            peer_node: "node2".into(),
            ..Default::default()
        };
        Ok(Response::new(StatusReply { node: "node1".into(), resources: vec![resource], ..Default::default() }))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

    async fn events(&self, r: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        assert!(r.into_inner().now);
        let kv = |k: &str, v: &str| KeyValue { key: k.into(), value: v.into() };
        let events = vec![
            Ok(Event {
                seq: 1,
                kind: "exists".into(),
                object: "resource".into(),
                name: "r0".into(),
                fields: vec![kv("role", "Secondary")],
                ..Default::default()
            }),
            Ok(Event { seq: 2, kind: "exists".into(), object: "-".into(), ..Default::default() }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn up(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("up", r.into_inner())
    }
    async fn down(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("down", r.into_inner())
    }
    async fn primary(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("primary", r.into_inner())
    }
    async fn secondary(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("secondary", r.into_inner())
    }
    async fn connect(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("connect", r.into_inner())
    }
    async fn disconnect(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("disconnect", r.into_inner())
    }
    async fn invalidate(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("invalidate", r.into_inner())
    }
    async fn invalidate_remote(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("invalidate-remote", r.into_inner())
    }
    async fn verify(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("verify", r.into_inner())
    }
    async fn pause_sync(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("pause-sync", r.into_inner())
    }
    async fn resume_sync(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("resume-sync", r.into_inner())
    }
    async fn outdate(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("outdate", r.into_inner())
    }
    async fn resume_io(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("resume-io", r.into_inner())
    }
    async fn takeover(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("takeover", r.into_inner())
    }

    async fn standby(&self, _r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("standby needs the cluster layer"))
    }

    async fn target_show(&self, _r: Request<TargetShowRequest>) -> Result<Response<TargetShowReply>, Status> {
        Ok(Response::new(TargetShowReply { text: "no targets".into(), json: "{}".into(), running: false }))
    }
    async fn target_start(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("target start", r.into_inner())
    }
    async fn target_stop(&self, r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        self.record("target stop", r.into_inner())
    }
    // The diagnostic data path is not part of what haadm renders.
    async fn io_write(&self, _r: Request<proto::control::IoWriteRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("io_write"))
    }
    async fn io_read(&self, _r: Request<proto::control::IoReadRequest>) -> Result<Response<proto::control::IoReadReply>, Status> {
        Err(Status::unimplemented("io_read"))
    }
    async fn resize(&self, _r: Request<proto::control::ResizeRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("resize"))
    }
    async fn io_flush(&self, _r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("io_flush"))
    }
    async fn adjust(&self, _r: Request<AdjustRequest>) -> Result<Response<AdjustReply>, Status> {
        Err(Status::unimplemented("adjust"))
    }

    async fn version(&self, _r: Request<proto::control::VersionRequest>) -> Result<Response<proto::control::VersionReply>, Status> {
        if self.legacy {
            // A daemon of control protocol 1: tonic's answer to an unknown method.
            return Err(Status::new(tonic::Code::Unimplemented, ""));
        }
        Ok(Response::new(proto::control::VersionReply {
            software_version: "9.9.9".into(),
            node: "node1".into(),
            control_min: 1,
            control_max: 2,
            replication_min: 1,
            replication_max: 2,
            heartbeat_min: 1,
            heartbeat_max: 1,
        }))
    }

    // issue 15: covered end to end in tests/tests/split_brain_e2e.rs and new_current_uuid_e2e.rs.
    async fn split_brain(&self, _r: Request<proto::control::SplitBrainRequest>) -> Result<Response<proto::control::SplitBrainReply>, Status> {
        Err(Status::unimplemented("split_brain"))
    }
    async fn new_current_uuid(&self, _r: Request<proto::control::NewCurrentUuidRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("new_current_uuid"))
    }
    async fn detach(&self, _r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("detach"))
    }
    async fn attach(&self, _r: Request<VerbRequest>) -> Result<Response<VerbReply>, Status> {
        Err(Status::unimplemented("attach"))
    }
}

fn cli(args: &[&str]) -> Cli {
    use clap::Parser;
    let args: Vec<OsString> = std::iter::once("haadm").chain(args.iter().copied()).map(OsString::from).collect();
    Cli::try_parse_from(normalize_args(args)).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(args: &[&str]) -> (Result<(), HaadmError>, String) {
    let mut out = Vec::new();
    let result = execute(&cli(args), &mut out).await;
    (result, String::from_utf8_lossy(&out).into_owned())
}

fn start_server(dir: &Path) -> (PathBuf, ScriptedControl) {
    start_server_as(dir, false)
}

fn start_server_as(dir: &Path, legacy: bool) -> (PathBuf, ScriptedControl) {
    let socket = dir.join("control.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind control socket");
    let control = ScriptedControl { legacy, ..ScriptedControl::default() };
    let service = ControlServer::new(control.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    (socket, control)
}

#[tokio::test]
async fn online_verbs_over_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, control) = start_server(dir.path());
    let s = socket.to_str().expect("utf-8 path");

    let (result, out) = run(&["--socket", s, "status", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(out, "r0 role:Secondary\n  disk:UpToDate\n  node2 connection:StandAlone\n");

    // The OCF agents read one resource as key=value lines.
    let (result, out) = run(&["--socket", s, "status", "r0", "--shell"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.starts_with("resource=r0\nattached=no\nrole=Secondary\ndisk=UpToDate\nconnection=StandAlone\n"), "{out}");
    assert!(out.contains("\nsplit_brain=no\n") && out.contains("\nfencing=-\n"), "{out}");
    let (result, out) = run(&["--socket", s, "target", "state"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(out, "stopped\n");
    let (result, _) = run(&["--socket", s, "target", "start"]).await;
    assert!(result.is_ok(), "{result:?}");

    let (result, out) = run(&["--socket", s, "status", "--json"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.contains("\"node\": \"node1\""), "{out}");

    // Seed 004's drbdadm order reaches the server as force = true.
    let (result, out) = run(&["--socket", s, "--", "--overwrite-data-of-peer", "primary", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(out, "r0: primary done\n");

    // Refused verb: warnings on stdout, the server's message as the error, exit 1.
    let (result, out) = run(&["--socket", s, "primary", "r0"]).await;
    assert_eq!(out, "warning: peer disk is DUnknown\n");
    let err = result.expect_err("primary without force is refused");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(err.to_string(), "r0: cannot promote: local disk is Inconsistent (use --force)");

    let (result, _) = run(&["--socket", s, "connect", "--discard-my-data", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    let (result, _) = run(&["--socket", s, "invalidate-remote", "all"]).await;
    assert!(result.is_ok(), "{result:?}");
    // issue 18 verify: `--repair` reaches the server; plain verify does not ask for it.
    let (result, _) = run(&["--socket", s, "verify", "--repair", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    let (result, _) = run(&["--socket", s, "verify", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    let (result, _) = run(&["--socket", s, "takeover"]).await;
    assert!(result.is_ok(), "{result:?}");

    let (result, out) = run(&["--socket", s, "events", "--now"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(out, "exists resource name:r0 role:Secondary\nexists -\n");

    let (result, out) = run(&["--socket", s, "target", "show"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(out, "no targets\n");

    let (result, _) = run(&["--socket", s, "standby"]).await;
    let err = result.expect_err("unimplemented");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("standby needs the cluster layer"), "{err}");

    let calls = control.calls.lock().expect("calls").clone();
    let summary: Vec<(&str, &str, bool, bool)> =
        calls.iter().map(|(v, r)| (*v, r.resource.as_str(), r.force, r.discard_my_data)).collect();
    assert_eq!(
        summary,
        vec![
            ("target start", "all", false, false),
            ("primary", "r0", true, false),
            ("primary", "r0", false, false),
            ("connect", "r0", false, true),
            ("invalidate-remote", "all", false, false),
            ("verify", "r0", false, false),
            ("verify", "r0", false, false),
            ("takeover", "all", false, false),
        ]
    );
    let repairs: Vec<bool> = calls.iter().filter(|(v, _)| *v == "verify").map(|(_, r)| r.repair).collect();
    assert_eq!(repairs, vec![true, false]);
}

#[tokio::test]
async fn unreachable_daemon_exits_3_with_start_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let c = config.to_str().expect("utf-8 path");
    let (result, out) = run(&["--config", c, "--node", "node1", "status"]).await;
    assert_eq!(out, "");
    let err = result.expect_err("nothing listens");
    assert_eq!(err.exit_code(), 3);
    let text = err.to_string();
    let socket = dir.path().join("node1.sock");
    assert!(text.starts_with(&format!("cannot reach clusterd at {}: ", socket.display())), "{text}");
    assert!(text.ends_with(&format!("(is clusterd running? start it with: clusterd --config {c} --node node1)")), "{text}");
}

/// A two-node config whose node1 disk is an 8 MiB file with internal metadata; node sockets live
/// in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    let disk = dir.join("node1-data.img");
    let file = std::fs::File::create(&disk).expect("create disk");
    file.set_len(8 << 20).expect("size disk");
    let yaml = format!(
        "nodes:\n  - name: node1\n    control-socket: {d}/node1.sock\n  - name: node2\n    control-socket: {d}/node2.sock\n\
         resources:\n  r0:\n    device: ha0\n    syncer: {{ al-extents: 7 }}\n    on:\n\
         \x20     node1: {{ disk: node1-data.img, address: \"127.0.0.1:7789\", meta-disk: internal }}\n\
         \x20     node2: {{ disk: node2-data.img, address: \"127.0.0.2:7789\", meta-disk: internal }}\n",
        d = dir.display()
    );
    let path = dir.join("ha.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[tokio::test]
async fn offline_create_md_and_dump_md() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let c = config.to_str().expect("utf-8 path");

    let (result, out) = run(&["--config", c, "--node", "node1", "create-md", "all"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.starts_with("r0: metadata written to "), "{out}");

    // Existing metadata is kept unless --force.
    let (result, _) = run(&["--config", c, "--node", "node1", "create-md", "r0"]).await;
    assert!(matches!(result, Err(HaadmError::Offline(OfflineError::SomeFailed { failed: 1, total: 1 }))), "{result:?}");
    let (result, _) = run(&["--config", c, "--node", "node1", "create-md", "--force", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");

    let (result, out) = run(&["--config", c, "--node", "node1", "dump-md", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.contains("resource        r0"), "{out}");
    assert!(!out.contains("warning:"), "fresh metadata needs no repair: {out}");

    let (result, _) = run(&["--config", c, "--node", "node1", "dump-md", "r9"]).await;
    let err = result.expect_err("unknown resource");
    assert!(err.to_string().contains("unknown resource `r9` (configured: r0)"), "{err}");

    // Something answering on this node's socket that cannot tell whether r0 is attached (not a
    // control server): the offline verbs refuse rather than touch the disks. (A real daemon that
    // has r0 up, or does not, is tested in tests/tests/adjust_e2e.rs.)
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("node1.sock")).expect("bind");
    let closer = std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            drop(stream);
        }
    });
    let (result, _) = run(&["--config", c, "--node", "node1", "create-md", "--force", "r0"]).await;
    assert!(result.is_err(), "{result:?}");
    let _ = closer.join();
}

#[tokio::test]
async fn offline_dump_md_without_metadata_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let c = config.to_str().expect("utf-8 path");
    let (result, _) = run(&["--config", c, "--node", "node1", "dump-md", "r0"]).await;
    let err = result.expect_err("no metadata yet");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().starts_with("r0: "), "{err}");
}

// issue 15 upgrade: haadm against a daemon of control protocol 1 and of this release.
#[tokio::test]
async fn version_checks_against_old_and_current_daemons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, _) = start_server_as(dir.path(), true);
    let s = socket.to_str().expect("utf-8 path");
    // Verbs of the first release work against the old daemon.
    let (result, _) = run(&["--socket", s, "status", "r0"]).await;
    assert!(result.is_ok(), "{result:?}");
    let (result, _) = run(&["--socket", s, "version"]).await;
    let err = result.expect_err("an old daemon has no Version RPC");
    assert_eq!(err.exit_code(), 5);
    assert!(err.to_string().starts_with("clusterd on this node is an older release (control protocol 1); this haadm"), "{err}");
    assert!(err.to_string().ends_with("needs control protocol 2 for `version`; upgrade clusterd on this node"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, _) = start_server_as(dir.path(), false);
    let s = socket.to_str().expect("utf-8 path");
    let (result, out) = run(&["--socket", s, "version"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.starts_with(&format!("haadm {} control-protocol:1..=2\n", crate::versions::SOFTWARE_VERSION)), "{out}");
    assert!(out.contains("clusterd 9.9.9 node:node1 control-protocol:1..=2 replication-protocol:1..=2 heartbeat-protocol:1..=1"), "{out}");
}
