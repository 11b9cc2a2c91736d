//! `haadm`: the administration CLI. Online verbs talk gRPC to the local clusterd over its Unix
//! socket; `create-md`/`dump-md` work on the disks of resources clusterd does not have up.
//!
//! Exit codes: 0 success, 1 the verb failed (server's message printed), 2 usage error (clap),
//! 3 clusterd cannot be reached (or does not answer in time), 4 `wait-sync`/`wait-connect`
//! `--timeout` expired, 5 clusterd on this node is too old (or too new) for this haadm's verb
//! (rolling upgrade), 130 `wait-sync`/`wait-connect` interrupted by Ctrl-C.

pub mod adjust;
pub mod cli;
pub mod client;
pub mod compat;
pub mod offline;
pub mod render;
pub mod split_brain;
pub mod watch;

#[cfg(test)]
mod tests;

use crate::config::{ConfigError, HaConfig, NodeConfig};
use cli::{Cli, Command, TargetCommand};
use client::{ClientError, StartHint};
use compat::{CompatError, Daemon};
use offline::OfflineError;
use proto::control::control_client::ControlClient;
use proto::control::{EventsRequest, ResizeRequest, StatusRequest, TargetShowRequest, VerbRequest, VerbReply, VersionRequest};
use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

/// A status snapshot is cheap; a daemon that takes longer is wedged.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Verbs may wait for the peer (promotion, disconnect handshake), but not forever.
const VERB_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything that makes haadm exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum HaadmError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot determine this node's name from the host name ({0}); pass --node NAME")]
    NodeName(String),
    /// The server ran the verb and said no; its message is the whole story.
    #[error("{0}")]
    VerbFailed(String),
    #[error("clusterd: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("clusterd at {} did not answer {what} within {} s", socket.display(), timeout.as_secs())]
    Timeout { socket: PathBuf, what: &'static str, timeout: Duration },
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error("cannot write output: {0}")]
    Output(io::Error),
    #[error("{resource} is not {goal} after {}", crate::config::format_duration(*limit))]
    WaitTimeout { resource: String, limit: Duration, goal: &'static str },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Compat(#[from] CompatError),
}

impl HaadmError {
    /// Process exit status for this error (see module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            HaadmError::Client(_) | HaadmError::Timeout { .. } => 3,
            HaadmError::Rpc(status) if status.code() == tonic::Code::Unavailable => 3,
            HaadmError::WaitTimeout { .. } => 4,
            HaadmError::Compat(_) => 5,
            HaadmError::Interrupted => 130,
            _ => 1,
        }
    }
}

/// The host name as the kernel knows it; the node name defaults to it.
fn hostname() -> Result<String, HaadmError> {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    match read("/proc/sys/kernel/hostname").or_else(|_| read("/etc/hostname")) {
        Ok(name) if !name.is_empty() => Ok(name),
        Ok(_) => Err(HaadmError::NodeName("empty host name".into())),
        Err(e) => Err(HaadmError::NodeName(e.to_string())),
    }
}

/// This node's entry: `--node`, else the host name, else its first label (`node1.home.local` →
/// `node1`), since configurations usually use short names.
pub fn find_node<'a>(config: &'a HaConfig, cli_node: Option<&str>) -> Result<&'a NodeConfig, HaadmError> {
    if let Some(name) = cli_node {
        return Ok(config.node(name)?);
    }
    // A one-node config (a standalone target) needs no --node.
    if let Some(only) = config.local_node(None)? {
        return Ok(only);
    }
    let host = hostname()?;
    match config.node(&host) {
        Ok(node) => Ok(node),
        Err(err) => {
            let short = host.split('.').next().unwrap_or(&host);
            if short != host
                && let Ok(node) = config.node(short)
            {
                return Ok(node);
            }
            Err(err.into())
        }
    }
}

/// Where to connect and what to suggest if nobody is there.
struct Target {
    socket: PathBuf,
    hint: StartHint,
    /// The daemon's control protocol, once asked (see `compat.rs`).
    daemon: Option<Daemon>,
}

/// `--socket` wins and needs no configuration (useful for tests and odd setups); otherwise the
/// node's `control-socket` from ha.yaml.
fn resolve_target(cli: &Cli) -> Result<Target, HaadmError> {
    if let Some(socket) = &cli.socket {
        let node = match &cli.node {
            Some(n) => n.clone(),
            None => hostname().unwrap_or_else(|_| "NAME".into()),
        };
        return Ok(Target { socket: socket.clone(), hint: StartHint { config: cli.config_path(), node }, daemon: None });
    }
    let config = HaConfig::load(&cli.config_path())?;
    let node = find_node(&config, cli.node.as_deref())?;
    Ok(Target {
        socket: node.control_socket.clone(),
        hint: StartHint { config: cli.config_path(), node: node.name.clone() },
        daemon: None,
    })
}

/// Parses nothing itself: runs an already-parsed command line, printing results to stdout and the
/// error (prefixed `haadm: `) to stderr.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haadm: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(execute(&cli, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(HaadmError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("haadm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn with_timeout<T>(
    target: &Target,
    what: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, HaadmError> {
    let daemon = target.daemon.clone().unwrap_or(Daemon::Legacy);
    if target.daemon.is_some() {
        compat::check(what, &daemon)?;
    }
    match tokio::time::timeout(timeout, call).await {
        Ok(Err(status)) if compat::is_unknown_rpc(&status, what, &daemon) => Err(compat::unimplemented(what, &daemon).into()),
        Ok(reply) => Ok(reply?.into_inner()),
        Err(_) => Err(HaadmError::Timeout { socket: target.socket.clone(), what, timeout }),
    }
}

/// Asks the daemon which control protocol it speaks; a daemon without the `Version` RPC is of
/// control protocol 1.
async fn probe_daemon(client: &mut ControlClient<Channel>, target: &Target) -> Result<(Daemon, Option<proto::control::VersionReply>), HaadmError> {
    match tokio::time::timeout(STATUS_TIMEOUT, client.version(VersionRequest {})).await {
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            Ok((Daemon::from_reply(&reply), Some(reply)))
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok((Daemon::Legacy, None)),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(HaadmError::Timeout { socket: target.socket.clone(), what: "version", timeout: STATUS_TIMEOUT }),
    }
}

/// Runs one command, writing its normal output to `out`.
pub async fn execute(cli: &Cli, out: &mut dyn Write) -> Result<(), HaadmError> {
    match &cli.command {
        Command::CreateMd(args) => return run_offline(cli, "create-md", &args.resource, Some(args.force), out).await,
        Command::DumpMd(args) => return run_offline(cli, "dump-md", &args.resource, None, out).await,
        Command::Completion(args) => return write_completion(args.shell, out),
        Command::Dump(args) => return adjust::dump(cli, args.resource.as_deref(), out),
        _ => {}
    }
    let mut target = resolve_target(cli)?;
    let mut client = client::connect(&target.socket, &target.hint).await?;
    let (daemon, version) = probe_daemon(&mut client, &target).await?;
    compat::check(if matches!(cli.command, Command::Version) { "version" } else { "" }, &daemon)?;
    target.daemon = Some(daemon);
    let verb = |resource: &str| VerbRequest { resource: resource.to_string(), force: false, discard_my_data: false, repair: false };
    let reply = match &cli.command {
        Command::Status(args) if args.watch => return watch::status_watch(&mut client, &target.socket, &args.resource, out).await,
        Command::WaitSync(args) => return watch::wait_sync(&mut client, &target.socket, &args.resource, args.timeout, out).await,
        Command::WaitConnect(args) => return watch::wait_connect(&mut client, &target.socket, &args.resource, args.timeout, out).await,
        Command::SplitBrain(args) => return split_brain::run(&mut client, &target.socket, args, out).await,
        Command::Status(args) => {
            let req = StatusRequest { resource: args.resource.clone() };
            let reply = with_timeout(&target, "status", STATUS_TIMEOUT, client.status(req)).await?;
            let text = if args.shell {
                render::render_status_shell(&reply, &args.resource).map_err(HaadmError::VerbFailed)?
            } else if args.json {
                render::render_status_json(&reply)
            } else {
                render::render_status(&reply, args.verbose)
            };
            return out.write_all(text.as_bytes()).map_err(HaadmError::Output);
        }
        Command::Version => {
            let text = render::render_version(version.as_ref());
            return out.write_all(text.as_bytes()).map_err(HaadmError::Output);
        }
        Command::Events(args) => return follow_events(&mut client, args.now, args.resource.as_deref(), out).await,
        Command::Adjust(args) => return adjust::adjust(&mut client, &target.socket, args, out).await,
        Command::Target { command: TargetCommand::Show { json } } => {
            let req = TargetShowRequest { json: *json };
            let reply = with_timeout(&target, "target show", STATUS_TIMEOUT, client.target_show(req)).await?;
            let mut text = if *json { reply.json } else { reply.text };
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            return out.write_all(text.as_bytes()).map_err(HaadmError::Output);
        }
        Command::Target { command: TargetCommand::State } => {
            let req = TargetShowRequest { json: false };
            let reply = with_timeout(&target, "target state", STATUS_TIMEOUT, client.target_show(req)).await?;
            let state = if reply.running { "running\n" } else { "stopped\n" };
            return out.write_all(state.as_bytes()).map_err(HaadmError::Output);
        }
        Command::Target { command: TargetCommand::Start } => {
            with_timeout(&target, "target start", VERB_TIMEOUT, client.target_start(verb("all"))).await?
        }
        Command::Target { command: TargetCommand::Stop } => {
            with_timeout(&target, "target stop", VERB_TIMEOUT, client.target_stop(verb("all"))).await?
        }
        Command::Up(a) => with_timeout(&target, "up", VERB_TIMEOUT, client.up(verb(&a.resource))).await?,
        Command::Down(a) => with_timeout(&target, "down", VERB_TIMEOUT, client.down(verb(&a.resource))).await?,
        Command::Primary(a) => {
            let req = VerbRequest { force: a.force, ..verb(&a.resource) };
            with_timeout(&target, "primary", VERB_TIMEOUT, client.primary(req)).await?
        }
        Command::Secondary(a) => {
            with_timeout(&target, "secondary", VERB_TIMEOUT, client.secondary(verb(&a.resource))).await?
        }
        Command::Connect(a) => {
            let req = VerbRequest { discard_my_data: a.discard_my_data, ..verb(&a.resource) };
            with_timeout(&target, "connect", VERB_TIMEOUT, client.connect(req)).await?
        }
        Command::Disconnect(a) => {
            with_timeout(&target, "disconnect", VERB_TIMEOUT, client.disconnect(verb(&a.resource))).await?
        }
        Command::Invalidate(a) => {
            with_timeout(&target, "invalidate", VERB_TIMEOUT, client.invalidate(verb(&a.resource))).await?
        }
        Command::InvalidateRemote(a) => {
            let req = verb(&a.resource);
            with_timeout(&target, "invalidate-remote", VERB_TIMEOUT, client.invalidate_remote(req)).await?
        }
        Command::Verify(a) => {
            let req = VerbRequest { repair: a.repair, ..verb(&a.resource) };
            with_timeout(&target, "verify", VERB_TIMEOUT, client.verify(req)).await?
        }
        Command::PauseSync(a) => {
            with_timeout(&target, "pause-sync", VERB_TIMEOUT, client.pause_sync(verb(&a.resource))).await?
        }
        Command::ResumeSync(a) => {
            with_timeout(&target, "resume-sync", VERB_TIMEOUT, client.resume_sync(verb(&a.resource))).await?
        }
        Command::Outdate(a) => {
            with_timeout(&target, "outdate", VERB_TIMEOUT, client.outdate(verb(&a.resource))).await?
        }
        Command::ResumeIo(a) => {
            with_timeout(&target, "resume-io", VERB_TIMEOUT, client.resume_io(verb(&a.resource))).await?
        }
        Command::Resize(a) => {
            let req = ResizeRequest { resource: a.resource.clone(), size: a.size.unwrap_or(0), assume_clean: a.assume_clean };
            with_timeout(&target, "resize", VERB_TIMEOUT, client.resize(req)).await?
        }
        Command::Standby(g) => with_timeout(&target, "standby", VERB_TIMEOUT, client.standby(verb(&g.group))).await?,
        Command::Takeover(g) => with_timeout(&target, "takeover", VERB_TIMEOUT, client.takeover(verb(&g.group))).await?,
        Command::NewCurrentUuid(a) => {
            let req = proto::control::NewCurrentUuidRequest { resource: a.resource.clone(), clear_bitmap: a.clear_bitmap };
            with_timeout(&target, "new-current-uuid", VERB_TIMEOUT, client.new_current_uuid(req)).await?
        }
        Command::Detach(a) => with_timeout(&target, "detach", VERB_TIMEOUT, client.detach(verb(&a.resource))).await?,
        Command::Attach(a) => with_timeout(&target, "attach", VERB_TIMEOUT, client.attach(verb(&a.resource))).await?,
        Command::CreateMd(_) | Command::DumpMd(_) | Command::Completion(_) | Command::Dump(_) => {
            unreachable!("offline verbs returned above")
        }
    };
    finish_verb(reply, out)
}

/// `haadm completion SHELL`: needs neither the configuration nor clusterd, so it works on a
/// freshly installed node (install.sh runs it before ha.yaml is edited).
pub(crate) fn write_completion(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<(), HaadmError> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "haadm", &mut script);
    out.write_all(&script).map_err(HaadmError::Output)
}

/// Success: warnings and message on stdout. Failure: warnings on stdout, the message becomes the
/// error (stderr, exit 1).
fn finish_verb(reply: VerbReply, out: &mut dyn Write) -> Result<(), HaadmError> {
    if reply.ok {
        return out.write_all(render::render_verb_reply(&reply).as_bytes()).map_err(HaadmError::Output);
    }
    let warnings_only = VerbReply { message: String::new(), ..reply.clone() };
    out.write_all(render::render_verb_reply(&warnings_only).as_bytes()).map_err(HaadmError::Output)?;
    let message = if reply.message.is_empty() { "the verb failed (no reason given)".into() } else { reply.message };
    Err(HaadmError::VerbFailed(message))
}

/// Prints the event stream line by line, flushing each so `haadm events | grep` sees events live.
async fn follow_events(
    client: &mut ControlClient<Channel>,
    now: bool,
    resource: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    let req = EventsRequest { now, resource: resource.unwrap_or_default().to_string() };
    let mut stream = client.events(req).await?.into_inner();
    while let Some(event) = stream.message().await? {
        writeln!(out, "{}", render::render_event(&event)).map_err(HaadmError::Output)?;
        out.flush().map_err(HaadmError::Output)?;
    }
    Ok(())
}

/// `create-md` / `dump-md`: load the configuration, refuse if clusterd has the resource attached
/// on this node, then work on the disks.
async fn run_offline(
    cli: &Cli,
    verb: &'static str,
    resource: &str,
    create_force: Option<bool>,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    let config = HaConfig::load(&cli.config_path())?;
    let node = find_node(&config, cli.node.as_deref())?;
    let socket = cli.socket.clone().unwrap_or_else(|| node.control_socket.clone());
    if client::socket_answers(&socket) {
        // A running daemon leaves alone the disks of resources it does not have up: one added to
        // ha.yaml for `adjust` gets its metadata here first, one taken `down` can be inspected.
        let names: Vec<String> = offline::select_resources(&config, resource)?.into_iter().map(|(n, _)| n.clone()).collect();
        let hint = client::StartHint { config: cli.config_path(), node: node.name.clone() };
        let mut client = client::connect(&socket, &hint).await?;
        for name in names {
            let req = StatusRequest { resource: name.clone() };
            let attached = match tokio::time::timeout(STATUS_TIMEOUT, client.status(req)).await {
                // A detached disk (Diskless while up) is the daemon's no more: its replacement gets
                // metadata here before `attach`.
                Ok(Ok(reply)) => reply.into_inner().resources.iter().any(|r| r.name == name && r.attached && r.disk != "Diskless"),
                // The daemon does not know it: its running config predates the resource.
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => false,
                Ok(Err(status)) => return Err(status.into()),
                Err(_) => return Err(HaadmError::Timeout { socket: socket.clone(), what: "status", timeout: STATUS_TIMEOUT }),
            };
            if attached {
                return Err(OfflineError::DaemonRunning { node: node.name.clone(), socket, verb, resource: name }.into());
            }
        }
    }
    match create_force {
        Some(force) => {
            let mut report = |e: &OfflineError| eprintln!("haadm: {e}");
            offline::create_md_selected(&config, resource, &node.name, force, out, &mut report)?;
            Ok(())
        }
        None => {
            let text = offline::dump_md(&config, resource, &node.name)?;
            out.write_all(text.as_bytes()).map_err(HaadmError::Output)
        }
    }
}
