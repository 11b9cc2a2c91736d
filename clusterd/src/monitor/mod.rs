//! Monitoring over HTTP on `metrics.listen`: Prometheus `/metrics` (OpenMetrics text from the
//! `prometheus-client` crate), the read-only status page at `/` (with `/page.js`, which refreshes it in
//! place) and `/status.json`. Off unless ha.yaml sets `metrics`.
//!
//! Every request takes one [`Sample`] of the node: the engines' published snapshots (never a message to
//! a resource's actor thread), the cluster loop's last view and the target's counters. Nothing here
//! holds a lock the data path takes; a target start or stop in progress is reported, not waited for.
//! There are no write actions and no secrets: the page and the metrics show states, names and counts.

pub mod counters;
mod families;
mod families_cluster;
mod page;
pub mod sample;

use crate::config::HaConfig;
use crate::control::Speedometer;
use crate::daemon::cluster::ClusterHandle;
use crate::daemon::resources::Resources;
use crate::daemon::targets::TargetHost;
use anyhow::{Context, Result};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use iscsi_target::stats::TargetStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use sample::{ClusterSample, ResourceSample, Running, Sample, SessionSample, TargetSample};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Everything a sample is taken from.
pub struct Monitor {
    pub node: String,
    pub config: Arc<HaConfig>,
    pub resources: Arc<Resources>,
    pub targets: Arc<TargetHost>,
    pub cluster: Option<Arc<ClusterHandle>>,
    pub target_stats: Arc<TargetStats>,
    pub speedo: Arc<Speedometer>,
    /// issue 18 verify: the last verify of each resource (its gauges).
    pub verify: Arc<crate::daemon::verify_schedule::VerifyBook>,
    pub started: Instant,
}

impl Monitor {
    pub async fn sample(&self) -> Sample {
        let peer = self.config.peer_of(&self.node).map(|p| p.name.clone());
        let peer_node_id = peer.as_ref().and_then(|p| self.config.nodes.iter().position(|n| &n.name == p)).unwrap_or(0);
        // The rate in force: `haadm adjust` may have changed it since start.
        let running = self.resources.running_config();
        let resources = self
            .resources
            .published()
            .await
            .into_iter()
            .enumerate()
            .map(|(minor, p)| ResourceSample {
                rate_limit: running.resources.get(&p.name).and_then(|r| r.syncer.rate.0),
                speed: self.speedo.peek(&p.name),
                last_verify: self.verify.last(&p.name),
                next_verify_unix: self.verify.next_due_unix(&p.name),
                minor,
                running: p.running.map(|(snap, size, counters)| Running { snap, size, counters }),
                error: p.error,
                peer: p.peer_name,
                name: p.name,
            })
            .collect();
        let (running, sessions) = self.targets.monitor_view().unwrap_or_default();
        let target = TargetSample {
            running,
            sessions: sessions
                .into_iter()
                .map(|s| SessionSample { target: s.target, initiator: s.initiator, peer_address: s.peer.to_string() })
                .collect(),
            totals: self.target_stats.totals(),
            refusals: if self.target_stats.is_enabled() { self.target_stats.refusals() } else { Vec::new() },
        };
        let cluster = self.cluster.as_ref().map(|c| ClusterSample {
            view: c.view(),
            counts: c.counters.read(),
            failovers: c.counters.failover_seconds.clone(),
        });
        Sample {
            node: self.node.clone(),
            nodes: self.config.nodes.iter().map(|n| n.name.clone()).collect(),
            peer,
            peer_node_id,
            uptime_seconds: self.started.elapsed().as_secs(),
            resources,
            cluster,
            target,
        }
    }
}

/// The sample as a prometheus-client collector (one registry per scrape: every value is read at
/// scrape time, nothing is kept between scrapes).
struct SampleCollector(Sample);

impl std::fmt::Debug for SampleCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SampleCollector")
    }
}

impl Collector for SampleCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        families_cluster::encode_node(&mut e, &self.0)?;
        families::encode_resources(&mut e, &self.0)?;
        families_cluster::encode_cluster(&mut e, &self.0)?;
        families_cluster::encode_target(&mut e, &self.0)
    }
}

/// The OpenMetrics text of one sample.
pub fn metrics_text(sample: Sample) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The same exposition in Prometheus' classic text format (what drbd-reactor serves, and what a plain
/// `curl` or `promtool check metrics` reads): counters are named with their `_total` in HELP/TYPE,
/// `unknown` is `untyped`, and there is no `# EOF`. Prometheus itself asks for OpenMetrics.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let ty = lines.peek().and_then(|t| t.strip_prefix("# TYPE ")).and_then(|t| t.split_once(' ')).map(|(_, ty)| ty);
            let name = if ty == Some("counter") { format!("{name}_total") } else { name.to_string() };
            out.push_str(&format!("# HELP {name} {help}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            let line = match ty {
                "counter" => format!("# TYPE {name}_total counter"),
                "unknown" => format!("# TYPE {name} untyped"),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
/// The page's own script is its only code; nothing else may load or run (no secrets to steal, but no
/// reason to allow anything either).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_headers(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    r
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format otherwise.
async fn metrics(m: Arc<Monitor>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    match metrics_text(m.sample().await) {
        Ok(text) if openmetrics => with_headers(text.into_response(), OPENMETRICS),
        Ok(text) => with_headers(to_classic_text(&text).into_response(), PROMETHEUS_TEXT),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed").into_response(),
    }
}

async fn status_page(m: Arc<Monitor>) -> Response {
    let doc = m.sample().await.doc();
    with_headers(page::render(&doc).into_response(), "text/html; charset=utf-8")
}

async fn status_json(m: Arc<Monitor>) -> Response {
    let doc = m.sample().await.doc();
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => with_headers(text.into_response(), "application/json"),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr` now (so a wrong address stops clusterd at start with a clear error) and serves until
/// `shutdown`.
/// This node's metrics listener, which `haadm adjust` may start, move or stop while clusterd runs.
pub struct MetricsListener {
    monitor: Arc<Monitor>,
    /// Cancelled at daemon shutdown: stops whatever listener runs then.
    shutdown: CancellationToken,
    running: tokio::sync::Mutex<Option<(SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)>>,
}

impl MetricsListener {
    pub fn new(monitor: Arc<Monitor>, shutdown: CancellationToken) -> MetricsListener {
        MetricsListener { monitor, shutdown, running: Default::default() }
    }

    /// Listens on `addr` (or nowhere). The new address is bound before the old listener stops, so a
    /// move to an address that cannot be bound keeps the old one; only when the new address
    /// collides with the old one (same port, one of them a wildcard) is the old one stopped first.
    pub async fn set(&self, addr: Option<SocketAddr>) -> Result<()> {
        let mut running = self.running.lock().await;
        if running.as_ref().map(|r| r.0) == addr {
            return Ok(());
        }
        let Some(addr) = addr else {
            if let Some(old) = running.take() {
                stop_listener(old).await;
            }
            self.monitor.target_stats.set_enabled(false);
            return Ok(());
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && running.is_some() => {
                if let Some(old) = running.take() {
                    stop_listener(old).await;
                }
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics.listen: bind {addr}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("metrics.listen: bind {addr}")),
        };
        let token = self.shutdown.child_token();
        let task = serve_on(listener, addr, Arc::clone(&self.monitor), token.clone());
        if let Some(old) = running.replace((addr, token, task)) {
            stop_listener(old).await;
        }
        self.monitor.target_stats.set_enabled(true);
        Ok(())
    }

    /// Stops the listener (daemon shutdown), waiting a little for open requests.
    pub async fn stop(&self) {
        if let Some(old) = self.running.lock().await.take() {
            stop_listener(old).await;
        }
    }
}

async fn stop_listener((addr, token, mut task): (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)) {
    token.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task).await.is_err() {
        task.abort();
    }
    tracing::info!(%addr, "metrics listener stopped");
}

fn serve_on(listener: tokio::net::TcpListener, addr: SocketAddr, monitor: Arc<Monitor>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let (m1, m2, m3) = (Arc::clone(&monitor), Arc::clone(&monitor), monitor);
    let app = axum::Router::new()
        .route("/metrics", get(move |headers| metrics(Arc::clone(&m1), headers)))
        .route("/", get(move || status_page(Arc::clone(&m2))))
        .route("/status.json", get(move || status_json(Arc::clone(&m3))))
        .route("/page.js", get(|| async { with_headers(page::SCRIPT.into_response(), "text/javascript; charset=utf-8") }));
    tracing::info!(%addr, "serving /metrics and the status page");
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(%addr, "metrics listener failed: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::to_classic_text;

    #[test]
    fn classic_text_names_counters_with_total_and_drops_eof() {
        let om = "# HELP a_bytes Bytes.\n# TYPE a_bytes counter\na_bytes_total{x=\"1\"} 3\n# HELP b Untyped.\n# TYPE b unknown\nb 1\n# HELP c A gauge.\n# TYPE c gauge\nc 2\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP a_bytes_total Bytes.\n# TYPE a_bytes_total counter\na_bytes_total{x=\"1\"} 3\n# HELP b Untyped.\n# TYPE b untyped\nb 1\n# HELP c A gauge.\n# TYPE c gauge\nc 2\n"
        );
    }
}
