//! `haadm status --watch` and `haadm wait-sync`: a live view polled from the control API every
//! interval. On a terminal it is redrawn in place with a progress bar per resync or verify (the
//! `indicatif` crate: percent, the daemon's speed and ETA); piped, it prints a plain timestamped line
//! whenever something changed. Ctrl-C (or SIGTERM) clears the bars and restores the cursor.

use super::render::is_syncing;
use super::{HaadmError, STATUS_TIMEOUT};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::control::control_client::ControlClient;
use proto::control::{ResourceStatus, StatusReply, StatusRequest};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How often the view polls clusterd.
pub const POLL: Duration = Duration::from_millis(500);

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn hms(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// The cluster summary line (empty without a group).
fn cluster_line(r: &StatusReply) -> String {
    let Some(c) = r.cluster.as_ref().filter(|c| c.configured) else { return format!("{}: no failover group", r.node) };
    let holder = if c.group_holder.is_empty() { "nobody" } else { &c.group_holder };
    let mut s = format!("{}: group {} (holder {holder}, epoch {})", r.node, c.phase, c.epoch);
    for n in c.nodes.iter().filter(|n| n.name != r.node) {
        s.push_str(&format!(", peer {} {}", n.name, if n.online { "online" } else { "offline" }));
    }
    for l in &c.links {
        s.push_str(&format!(", link {} {}", l.name, if l.up { "up" } else { "down" }));
    }
    if !c.split_brain_warning.is_empty() {
        s.push_str(", SPLIT BRAIN WARNING");
    }
    s
}

/// One resource's state without the progress numbers.
fn state_text(r: &ResourceStatus) -> String {
    if !r.last_error.is_empty() && r.disk == "Diskless" && r.connection == "StandAlone" {
        return format!("down: {}", r.last_error);
    }
    let mut s = format!("{} {}", r.role, r.disk);
    if !r.peer_node.is_empty() {
        s.push_str(&format!(" · {} {} {} · {}", r.peer_node, r.peer_role, r.peer_disk, r.connection));
        if r.replication != "Off" && r.replication != "Established" {
            s.push_str(&format!(" {}", r.replication));
        }
    }
    if r.suspended {
        s.push_str(" · I/O suspended");
    }
    if r.split_brain {
        s.push_str(" · split brain");
    }
    s
}

/// The progress part: `42.1% 40.0 MiB/s ETA 0:00:12` (or `paused`), when a resync/verify runs.
fn progress_text(r: &ResourceStatus) -> Option<(f64, String)> {
    let p = r.sync.as_ref().filter(|_| is_syncing(&r.replication))?;
    let done = if p.total_bytes > 0 { 100.0 * (p.total_bytes - p.remaining_bytes.min(p.total_bytes)) as f64 / p.total_bytes as f64 } else { p.done_percent };
    let mut s = format!("{done:.1}% {} left", human_bytes(p.remaining_bytes));
    if p.paused {
        s.push_str(" paused");
    } else if p.speed_bytes_per_sec > 0 {
        s.push_str(&format!(" {}/s ETA {}", human_bytes(p.speed_bytes_per_sec), hms(p.eta_seconds)));
    }
    Some((done, s))
}

/// A plain line for pipes: state, and progress to a tenth of a percent (so a line per visible step).
fn plain_line(r: &ResourceStatus) -> String {
    match progress_text(r) {
        Some((_, p)) => format!("{}: {} {p}", r.name, state_text(r)),
        None => format!("{}: {}", r.name, state_text(r)),
    }
}

fn clock() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02}", t / 3600 % 24, t / 60 % 60, t % 60)
}

/// Either bars redrawn in place (terminal) or changed lines (pipe).
enum View {
    Bars { multi: MultiProgress, header: ProgressBar, lines: Vec<(String, ProgressBar)> },
    Plain { last: Vec<String> },
}

impl View {
    fn new(tty: bool) -> View {
        if !tty {
            return View::Plain { last: Vec::new() };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new(1).with_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())));
        View::Bars { multi, header, lines: Vec::new() }
    }

    fn show(&mut self, reply: &StatusReply, header: bool, out: &mut dyn Write) -> Result<(), HaadmError> {
        match self {
            View::Plain { last } => {
                let mut now: Vec<String> = Vec::new();
                if header {
                    now.push(cluster_line(reply));
                }
                now.extend(reply.resources.iter().map(plain_line));
                for line in now.iter().filter(|l| !last.contains(l)) {
                    writeln!(out, "{} {line}", clock()).map_err(HaadmError::Output)?;
                }
                out.flush().map_err(HaadmError::Output)?;
                *last = now;
            }
            View::Bars { multi, header: h, lines } => {
                if header {
                    h.set_message(cluster_line(reply));
                } else {
                    h.finish_and_clear();
                }
                let names: Vec<&str> = reply.resources.iter().map(|r| r.name.as_str()).collect();
                if lines.iter().map(|(n, _)| n.as_str()).ne(names.iter().copied()) {
                    for (_, b) in lines.drain(..) {
                        multi.remove(&b);
                    }
                    for n in &names {
                        lines.push((n.to_string(), multi.add(ProgressBar::new(1))));
                    }
                }
                let width = names.iter().map(|n| n.len()).max().unwrap_or(1);
                for ((_, bar), r) in lines.iter().zip(&reply.resources) {
                    show_bar(bar, r, width);
                }
            }
        }
        Ok(())
    }

    /// Leaves the terminal as it was: bars cleared, cursor visible.
    fn close(self) {
        if let View::Bars { multi, .. } = self {
            let _ = multi.clear();
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(b"\x1b[?25h");
            let _ = stdout.flush();
        }
    }
}

fn show_bar(bar: &ProgressBar, r: &ResourceStatus, width: usize) {
    let prefix = format!("{:width$}", r.name);
    match (progress_text(r), r.sync.as_ref()) {
        (Some((_, text)), Some(p)) if p.total_bytes > 0 => {
            let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30.cyan/blue}] {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_length(p.total_bytes);
            bar.set_position(p.total_bytes - p.remaining_bytes.min(p.total_bytes));
            bar.set_message(format!("{} {text}", r.replication));
        }
        _ => {
            bar.set_style(ProgressStyle::with_template("{prefix:.bold} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar.set_message(state_text(r));
        }
    }
    bar.set_prefix(prefix);
}

async fn poll(client: &mut ControlClient<Channel>, socket: &Path, resource: &str) -> Result<StatusReply, HaadmError> {
    let req = StatusRequest { resource: resource.to_string() };
    match tokio::time::timeout(STATUS_TIMEOUT, client.status(req)).await {
        Ok(reply) => Ok(reply?.into_inner()),
        Err(_) => Err(HaadmError::Timeout { socket: socket.to_path_buf(), what: "status", timeout: STATUS_TIMEOUT }),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, listened to for the whole command: a signal that arrives while a
/// status call is in flight is kept until the loop looks again (a listener created per wait could
/// miss it, and the default action is gone once tokio handles the signal).
struct Interrupts {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Interrupts {
        use tokio::signal::unix::{SignalKind, signal};
        Interrupts { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    async fn wait(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => {}
            _ = recv(&mut self.term) => {}
        }
    }
}

/// `haadm status --watch`: until Ctrl-C (exit 0).
pub async fn status_watch(client: &mut ControlClient<Channel>, socket: &Path, resource: &str, out: &mut dyn Write) -> Result<(), HaadmError> {
    let mut view = View::new(std::io::stdout().is_terminal());
    let mut signals = Interrupts::new();
    let result = async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = signals.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let reply = tokio::select! {
                _ = signals.wait() => return Ok(()),
                r = poll(client, socket, resource) => r?,
            };
            view.show(&reply, true, out)?;
        }
    }
    .await;
    view.close();
    result
}

/// Where a resource stands for `wait-sync`.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncVerdict {
    /// Connected, both disks UpToDate, no resync running.
    InSync,
    /// Still connecting or syncing.
    Waiting,
    /// It will not get there without an operator (down, StandAlone, split brain).
    Stuck(String),
}

pub fn sync_verdict(r: &ResourceStatus) -> SyncVerdict {
    if r.peer_node.is_empty() {
        return if r.disk == "UpToDate" { SyncVerdict::InSync } else { SyncVerdict::Stuck(format!("{}: no peer, and the disk is {}", r.name, r.disk)) };
    }
    if r.split_brain {
        return SyncVerdict::Stuck(format!("{}: split brain; resolve it first (connect --discard-my-data on the victim)", r.name));
    }
    if r.connection == "StandAlone" {
        let why = if r.last_error.is_empty() { "not connecting (run `haadm connect` or `haadm up`)".to_string() } else { r.last_error.clone() };
        return SyncVerdict::Stuck(format!("{}: StandAlone: {why}", r.name));
    }
    let syncing = matches!(r.replication.as_str(), "SyncSource" | "SyncTarget" | "PausedSyncS" | "PausedSyncT" | "WFBitMapS" | "WFBitMapT");
    if r.connection == "Connected" && !syncing && r.disk == "UpToDate" && r.peer_disk == "UpToDate" {
        SyncVerdict::InSync
    } else {
        SyncVerdict::Waiting
    }
}

/// Where a resource stands for `wait-connect` (issue 15): the same verdicts, `InSync` meaning
/// Connected.
pub fn connect_verdict(r: &ResourceStatus) -> SyncVerdict {
    if r.peer_node.is_empty() {
        return SyncVerdict::Stuck(format!("{}: no peer configured: there is no link to wait for", r.name));
    }
    if r.split_brain {
        return SyncVerdict::Stuck(format!("{}: split brain; see `haadm split-brain {}`", r.name, r.name));
    }
    match r.connection.as_str() {
        "Connected" => SyncVerdict::InSync,
        "StandAlone" => {
            let why = if r.last_error.is_empty() { "not connecting (run `haadm connect` or `haadm up`)".to_string() } else { r.last_error.clone() };
            SyncVerdict::Stuck(format!("{}: StandAlone: {why}", r.name))
        }
        _ => SyncVerdict::Waiting,
    }
}

/// `haadm wait-sync RES [--timeout D]`: 0 once in sync, 4 on timeout, 1 when it cannot get there
/// without an operator, 130 on Ctrl-C.
pub async fn wait_sync(
    client: &mut ControlClient<Channel>,
    socket: &Path,
    resource: &str,
    timeout: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    wait_for(client, socket, resource, timeout, out, sync_verdict, "in sync").await
}

/// `haadm wait-connect RES [--timeout D]`: 0 once Connected, 4 on timeout, 1 when it cannot get
/// there without an operator, 130 on Ctrl-C.
pub async fn wait_connect(
    client: &mut ControlClient<Channel>,
    socket: &Path,
    resource: &str,
    timeout: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    wait_for(client, socket, resource, timeout, out, connect_verdict, "connected").await
}

async fn wait_for(
    client: &mut ControlClient<Channel>,
    socket: &Path,
    resource: &str,
    timeout: Option<Duration>,
    out: &mut dyn Write,
    verdict: fn(&ResourceStatus) -> SyncVerdict,
    goal: &'static str,
) -> Result<(), HaadmError> {
    let started = Instant::now();
    let mut view = View::new(std::io::stdout().is_terminal());
    let mut signals = Interrupts::new();
    let result = async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = signals.wait() => return Err(HaadmError::Interrupted),
                _ = tick.tick() => {}
            }
            let reply = tokio::select! {
                _ = signals.wait() => return Err(HaadmError::Interrupted),
                r = poll(client, socket, resource) => r?,
            };
            view.show(&reply, false, out)?;
            let verdicts: Vec<SyncVerdict> = reply.resources.iter().map(verdict).collect();
            if let Some(SyncVerdict::Stuck(why)) = verdicts.iter().find(|v| matches!(v, SyncVerdict::Stuck(_))) {
                return Err(HaadmError::VerbFailed(why.clone()));
            }
            if !verdicts.is_empty() && verdicts.iter().all(|v| *v == SyncVerdict::InSync) {
                return Ok(reply);
            }
            if let Some(limit) = timeout
                && started.elapsed() >= limit
            {
                return Err(HaadmError::WaitTimeout { resource: resource.to_string(), limit, goal });
            }
        }
    }
    .await;
    view.close();
    let reply = result?;
    for r in &reply.resources {
        writeln!(out, "{}: {goal} ({}) after {:.1} s", r.name, state_text(r), started.elapsed().as_secs_f64()).map_err(HaadmError::Output)?;
    }
    Ok(())
}

/// `--timeout` values: ha.yaml's duration syntax (`90s`, `5m`, `500ms`, bare seconds).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text, text).map_err(|e| e.to_string())
}
