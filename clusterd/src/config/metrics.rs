//! The `metrics:` section: where each node serves `/metrics` (Prometheus) and its status page. Off
//! unless set; one file for both nodes, so `listen` applies to every node and `on.NODE` gives a node
//! its own address (typically its management address).

use super::fields::Fields;
use super::raw::RawMetrics;
use super::{ConfigError, NodeConfig, ResourceConfig, Source, TargetDef, units};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// drbd-reactor's Prometheus exporter listens on 9942; ours uses the same port by default so a DRBD
/// user's scrape config carries over.
pub const DEFAULT_METRICS_PORT: u16 = 9942;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Listen address per node; a node that is not listed serves no metrics.
    pub listen: BTreeMap<String, SocketAddr>,
}

impl MetricsConfig {
    pub fn listen_for(&self, node: &str) -> Option<SocketAddr> {
        self.listen.get(node).copied()
    }
}

/// Two TCP listeners collide when they share a port and one address covers the other.
fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

pub(super) struct Others<'a> {
    pub nodes: &'a [NodeConfig],
    pub resources: &'a BTreeMap<String, ResourceConfig>,
    pub targets: &'a [TargetDef],
}

pub(super) fn build_metrics(src: &Source<'_>, raw: &RawMetrics, o: &Others<'_>) -> Result<MetricsConfig, ConfigError> {
    let f = Fields::new(src, "metrics");
    let address = |suffix: &str, s: &super::raw::Scalar| -> Result<SocketAddr, ConfigError> {
        units::parse_address(&s.text, &s.shown()).map_err(|e| {
            f.invalid(suffix, format_args!("{e}; write IP:PORT, like \"127.0.0.1:{DEFAULT_METRICS_PORT}\""))
        })
    };
    let default = raw.listen.as_ref().map(|s| address("listen", s)).transpose()?;
    let mut listen = BTreeMap::new();
    if let Some(on) = &raw.on {
        for (node, s) in &on.0 {
            if !o.nodes.iter().any(|n| &n.name == node) {
                return Err(f.invalid(
                    &format!("on.{node}"),
                    format_args!("`{node}` is not a node in `nodes` ({})", super::resource::node_list(o.nodes)),
                ));
            }
            listen.insert(node.clone(), address(&format!("on.{node}"), s)?);
        }
    }
    if default.is_none() && listen.is_empty() {
        return Err(f.invalid(
            "",
            format_args!("set `listen` (IP:PORT for every node) or `on.NODE` (per node), or remove the section to serve no metrics"),
        ));
    }
    for n in o.nodes {
        if let Some(d) = default {
            listen.entry(n.name.clone()).or_insert(d);
        }
    }
    for (node, &addr) in &listen {
        let field = if raw.on.as_ref().is_some_and(|on| on.0.contains_key(node)) { format!("on.{node}") } else { "listen".to_string() };
        for r in o.resources.values() {
            if let Some(on) = r.on.get(node)
                && collides(addr, on.address)
            {
                return Err(f.invalid(
                    &field,
                    format_args!("{addr} collides with resources.{}.on.{node}.address {}", r.name, on.address),
                ));
            }
        }
        for t in o.targets {
            if let Some(p) = t.portals.iter().find(|p| collides(addr, **p)) {
                return Err(f.invalid(&field, format_args!("{addr} collides with the portal {p} of target {}", t.iqn)));
            }
        }
    }
    Ok(MetricsConfig { listen })
}
