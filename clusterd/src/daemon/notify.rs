//! systemd's notify protocol (sd_notify(3)), spoken directly: one datagram per message to the Unix
//! socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). No libsystemd.
//!
//! The supervisor sends `READY=1` once this node's resources are all attached and (with a group) its
//! heartbeat service and group loop run; `STATUS=` whenever the one-line summary changes (group phase,
//! peer, attached resources); `WATCHDOG=1` every third of `WATCHDOG_USEC`, but only while the group
//! loop keeps making passes, so a daemon whose main loop hangs stops feeding the watchdog and systemd
//! restarts it; `STOPPING=1` at shutdown.

use super::cluster::ClusterHandle;
use super::resources::Resources;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A connection to the service manager's notification socket.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `None` when not started by a service manager that listens.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(raw) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(None) };
        let raw = raw.to_string_lossy().into_owned();
        let addr = if let Some(name) = raw.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if raw.starts_with('/') {
            SocketAddr::from_pathname(&raw)?
        } else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("NOTIFY_SOCKET={raw:?} is neither a path nor @abstract")));
        };
        Ok(Some(Notifier { sock: UnixDatagram::unbound()?, addr }))
    }

    /// Sends one message (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock.send_to_addr(msg.as_bytes(), &self.addr).map(|_| ())
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), when it is meant for this process
/// (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What the supervisor watches.
pub struct Supervised {
    pub resources: Arc<Resources>,
    pub cluster: Option<Arc<ClusterHandle>>,
    /// `cluster.manager: pacemaker`: the resource agents attach the resources, and they need this
    /// daemon's control socket to do it, so waiting for them here would hold systemd's start forever.
    pub external_manager: bool,
}

impl Supervised {
    /// (ready, one-line status).
    async fn state(&self) -> (bool, String) {
        let published = self.resources.published().await;
        let attached = published.iter().filter(|p| p.running.is_some()).count();
        let mut parts = Vec::new();
        if let Some(c) = &self.cluster {
            let v = c.view();
            match v.sequencer() {
                Some(s) => {
                    let holder = s.holder.as_ref().map_or("nobody".to_string(), |(n, _)| n.clone());
                    parts.push(format!("group {} (holder {holder}, epoch {})", s.phase.name(), s.epoch));
                }
                None => parts.push("group loop starting".into()),
            }
            if let Some(m) = &v.membership {
                parts.push(format!("peer {} {}", m.peer, if m.peer_alive() { "online" } else { "offline" }));
            }
        }
        parts.push(format!("{attached}/{} resources attached", published.len()));
        if let Some(p) = published.iter().find(|p| p.running.is_none()) {
            parts.push(format!("waiting for {}: {}", p.name, p.error.as_deref().unwrap_or("not up")));
        }
        // The group loop publishes its first view after its first pass: heartbeats run by then.
        let cluster_running = self.cluster.as_ref().is_none_or(|c| c.view().sequencer().is_some());
        if self.external_manager {
            parts.push("resources are Pacemaker's to bring up".into());
            return (true, parts.join("; "));
        }
        (attached == published.len() && cluster_running, parts.join("; "))
    }
}

/// Runs until `stop`: READY once, STATUS on change, WATCHDOG while the group loop is alive.
pub async fn supervise(notifier: Arc<Notifier>, watchdog: Option<Duration>, s: Supervised, stop: CancellationToken) {
    let period = watchdog.map_or(Duration::from_secs(1), |w| (w / 3).min(Duration::from_secs(1)).max(Duration::from_millis(10)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut ready, mut last_status) = (false, String::new());
    let mut last_passes = None;
    let mut stalled_warned = false;
    let mut send_failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (now_ready, status) = s.state().await;
        let mut msg = Vec::new();
        if now_ready && !ready {
            ready = true;
            msg.push("READY=1".to_string());
            tracing::info!("ready: {status}");
        }
        if status != last_status {
            msg.push(format!("STATUS={status}"));
            last_status = status;
        }
        if watchdog.is_some() {
            // Without a group there is no loop to watch; the supervisor's own pass shows the runtime works.
            let passes = s.cluster.as_ref().map(|c| c.loop_passes.load(Ordering::Relaxed));
            let alive = passes.is_none() || passes != last_passes;
            last_passes = passes;
            if alive {
                msg.push("WATCHDOG=1".into());
                stalled_warned = false;
            } else if !stalled_warned {
                stalled_warned = true;
                tracing::error!("the group loop made no pass for {period:?}: not feeding the systemd watchdog");
            }
        }
        if !msg.is_empty() {
            // Warned once per outage, not once a second.
            match notifier.send(&msg.join("\n")) {
                Err(e) if !send_failing => {
                    send_failing = true;
                    tracing::warn!("sd_notify: {e}");
                }
                Err(_) => {}
                Ok(()) => send_failing = false,
            }
        }
    }
}
