//! The per-node daemon: brings this node's resources up, serves the control API on the node's Unix
//! socket (root only), and shuts down cleanly on SIGTERM/SIGINT (idle Primaries demoted, metadata
//! marked clean, socket removed).

pub mod resources;
pub mod targets;
pub mod group_steps;
pub mod cluster;
mod io_fencing;
mod group_run;
pub mod alua_ports;
pub mod notify;
mod state_log;
mod fence_peer;
pub mod verify_schedule;

use crate::config::{HaConfig, Manager};
use crate::control::{ControlService, Speedometer};
use crate::monitor::{MetricsListener, Monitor};
use iscsi_target::stats::TargetStats;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use anyhow::{bail, Context, Result};
use proto::control::control_server::ControlServer;
use resources::Resources;
use targets::TargetHost;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// Run until a termination signal.
pub async fn run(config_path: PathBuf, node: Option<String>) -> Result<()> {
    let config = HaConfig::load(&config_path)?;
    let release = crate::versions::release().map_err(anyhow::Error::msg)?;
    if release != crate::versions::Release::CURRENT {
        tracing::warn!(
            "TEST ONLY: {} is set: emulating the previous release (replication protocol {})",
            crate::versions::TEST_MAX_PROTOCOL_ENV,
            release.replication
        );
    }
    let me = crate::haadm::find_node(&config, node.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    std::fs::create_dir_all(&me.state_dir).with_context(|| format!("create state-dir {}", me.state_dir.display()))?;
    std::fs::set_permissions(&me.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", me.state_dir.display()))?;
    let socket = me.control_socket.clone();
    let listener = bind_control_socket(&socket)?;
    tracing::info!(node = %me.name, config = %config_path.display(), socket = %socket.display(), "clusterd starting");
    // Under Pacemaker, the agents bring resources up, promote them and serve the target; clusterd
    // only does what it is told (and its fence-peer handling), so a node started outside the cluster
    // touches nothing.
    let external = config.manager == Manager::Pacemaker;
    let peer = config.peer_of(&me.name).map(|p| p.name.clone());
    let resources = Arc::new(Resources::new(Arc::new(config), me.name.clone()));
    if external {
        tracing::info!("cluster.manager: pacemaker: resources and targets wait for the resource agents");
    } else {
        for name in resources.select("all").await.map_err(anyhow::Error::msg)? {
            match resources.up(&name).await {
                Ok(m) => tracing::info!("{m}"),
                // Keep serving: status shows the reason, the operator fixes it and runs `haadm up`.
                Err(e) => tracing::error!("{e}"),
            }
        }
    }
    // Counting on the data path is off unless this node serves metrics (the benchmark's reference).
    let metrics_addr = resources.config.metrics.listen_for(&me.name);
    let target_stats = Arc::new(if metrics_addr.is_some() { TargetStats::enabled() } else { TargetStats::disabled() });
    let targets = Arc::new(TargetHost::new(Arc::clone(&resources.config), me.clone(), Arc::clone(&target_stats)));
    // Without an HA group the node serves its targets from the start (the standalone target); with
    // one, the failover sequence starts them when this node takes the group.
    if !external && resources.config.groups.is_empty() && targets.configured() {
        targets.start(None, &resources).await.context("start the iSCSI target")?;
    }
    let fence_watchers = match (&peer, external) {
        (Some(peer), true) => fence_peer::spawn(&resources, &me.name, peer),
        _ => Vec::new(),
    };
    let adjuster = Arc::new(crate::adjust::apply::Adjuster::new(config_path.clone(), Arc::clone(&resources), Arc::clone(&targets)));
    let cluster = cluster::start(Arc::clone(&resources.config), &me, Arc::clone(&resources), Arc::clone(&targets), adjuster.digest.subscribe())
        .await
        .context("start the cluster layer (heartbeats, failover)")?
        .map(Arc::new);
    let speedo = Arc::new(Speedometer::default());
    // issue 18 verify: scheduled verify and the last verify's record.
    let verify_book = Arc::new(verify_schedule::VerifyBook::default());
    let verify_task = tokio::spawn(verify_schedule::run(Arc::clone(&resources), Arc::clone(&verify_book)));
    let background = CancellationToken::new();
    state_log::start(&resources, cluster.as_ref(), &background);
    let monitor = Monitor {
        node: me.name.clone(),
        config: Arc::clone(&resources.config),
        resources: Arc::clone(&resources),
        targets: Arc::clone(&targets),
        cluster: cluster.clone(),
        target_stats,
        speedo: Arc::clone(&speedo),
        verify: Arc::clone(&verify_book),
        started: Instant::now(),
    };
    let metrics = Arc::new(MetricsListener::new(Arc::new(monitor), background.clone()));
    metrics.set(metrics_addr).await?;
    adjuster.set_live_parts(crate::adjust::apply::LiveParts { cluster: cluster.clone(), metrics: Arc::clone(&metrics) });
    let notifier = match notify::Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            tracing::warn!("NOTIFY_SOCKET: {e}; not notifying the service manager");
            None
        }
    };
    if let Some(n) = &notifier {
        let watched = notify::Supervised { resources: Arc::clone(&resources), cluster: cluster.clone(), external_manager: external };
        tokio::spawn(notify::supervise(Arc::clone(n), notify::watchdog_interval(), watched, background.clone()));
    }
    let service = ControlService {
        resources: Arc::clone(&resources),
        speedo: Arc::clone(&speedo),
        verify: Arc::clone(&verify_book),
        targets: Arc::clone(&targets),
        cluster: cluster.clone(),
        adjuster: Arc::clone(&adjuster),
    };
    let reload = tokio::spawn(adjust_on_sighup(Arc::clone(&adjuster)));
    // Sample resync progress every second so `status` reports a speed even when polled rarely.
    let sampler = {
        let (resources, speedo) = (Arc::clone(&resources), Arc::clone(&speedo));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                for st in resources.status().await {
                    let rem = st.running.and_then(|(s, _)| s.sync.map(|p| p.remaining_blocks * 4096));
                    speedo.observe(&st.name, rem);
                }
            }
        })
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("termination signal: shutting down");
    };
    let served = tonic::transport::Server::builder()
        .add_service(ControlServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    sampler.abort();
    verify_task.abort();
    reload.abort();
    if let Some(n) = &notifier
        && let Err(e) = n.send("STOPPING=1\nSTATUS=stopping: releasing the group and the resources")
    {
        tracing::warn!("sd_notify: {e}");
    }
    background.cancel();
    metrics.stop().await;
    for w in &fence_watchers {
        w.abort();
    }
    if let Some(c) = &cluster {
        c.shutdown().await;
    }
    targets.stop(None).await;
    resources.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    served.context("control API server")?;
    tracing::info!("clusterd stopped");
    Ok(())
}

/// SIGHUP = `haadm adjust all`: the outcome goes to the log (there is nobody to answer).
async fn adjust_on_sighup(adjuster: Arc<crate::adjust::apply::Adjuster>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; use `haadm adjust` to apply configuration changes");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: re-reading {} (adjust all)", adjuster.config_path.display());
        match adjuster.adjust("all", false).await {
            Ok(o) if o.lines.is_empty() => tracing::info!("SIGHUP: nothing to adjust"),
            Ok(o) => tracing::info!("SIGHUP: adjusted: {}", o.lines.join("; ")),
            Err(e) => tracing::error!("SIGHUP: adjust: {e}"),
        }
    }
}

/// Bind the control socket: refuse if another clusterd answers there, replace a stale file, 0600.
fn bind_control_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another clusterd is already serving {} (stop it first)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(l)
}
