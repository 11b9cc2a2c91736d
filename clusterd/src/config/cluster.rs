//! The `cluster:` section: heartbeat timers, links, the split-brain guard. It plays the part of
//! Heartbeat's ha.cf, with the same timer rules (deadtime > 2 × keepalive, initdead ≥ deadtime), so
//! a tuned ha.cf carries over. The authkeys file is only named here; the heartbeat module reads it.

use super::fence_agent::{FenceAgentConfig, build_fence_agent};
use super::fields::Fields;
use super::raw::{RawCluster, RawGuard, RawLink, Scalar};
use super::{ConfigError, NodeConfig, Source, check_name, format_duration};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Defaults of the `cluster` section, named so the example file, the docs and the code agree.
pub mod cluster_defaults {
    use std::time::Duration;
    pub const KEEPALIVE: Duration = Duration::from_secs(1);
    pub const WARNTIME: Duration = Duration::from_secs(5);
    pub const DEADTIME: Duration = Duration::from_secs(10);
    pub const INITDEAD: Duration = Duration::from_secs(30);
    /// Heartbeat's `udpport` default (IANA `ha-cluster`).
    pub const PORT: u16 = 694;
    pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
}

/// Who decides where the resources run and when the target is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Manager {
    /// clusterd itself: heartbeats, the failover sequencer, the VIP (the `cluster` and `group` sections).
    #[default]
    Embedded,
    /// Pacemaker through the OCF agents: clusterd attaches, connects, promotes and serves the target only
    /// when an agent tells it to (haadm verbs); no heartbeat, no sequencer, no VIP of its own.
    Pacemaker,
}

/// Longest link name.
pub const MAX_LINK_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Interval between heartbeats.
    pub keepalive: Duration,
    /// A heartbeat later than this is logged as late (the data for tuning `deadtime`).
    pub warntime: Duration,
    /// Silence on every link after which the peer is declared dead.
    pub deadtime: Duration,
    /// `deadtime` used for a peer not yet heard from since start (NICs and switches are slow to come up).
    pub initdead: Duration,
    /// Move the group back to `group.preferred` when that node returns.
    pub auto_failback: bool,
    /// Heartbeat HMAC keys; read by the heartbeat module, not at load time.
    pub authkeys_file: PathBuf,
    /// At least one; every heartbeat goes out on all of them.
    pub links: Vec<HeartbeatLink>,
    pub guard: GuardConfig,
    /// Run when stopping the group failed and the data may still be in use (e.g. `systemctl reboot -f`).
    pub escalation_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatLink {
    pub name: String,
    pub mode: LinkMode,
    /// UDP port, the same on both nodes.
    pub port: u16,
    /// Node name → that node's side of the link. Has exactly the config's nodes.
    pub on: BTreeMap<String, LinkEndpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// `ucast`: sent to the peer's `address`.
    Unicast,
    /// `bcast`: sent to this node's `broadcast` address.
    Broadcast,
}

impl LinkMode {
    /// The ha.yaml (and ha.cf) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Unicast => "ucast",
            LinkMode::Broadcast => "bcast",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEndpoint {
    /// This node's address on the link; unicast peers send here.
    pub address: IpAddr,
    pub interface: Option<String>,
    /// The broadcast address heartbeats are sent to; always set for a `bcast` link.
    pub broadcast: Option<IpAddr>,
}

/// What must be true before this node takes the group over from a peer it cannot hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Addresses that must answer a ping (proof this node is not the isolated one).
    pub ping_nodes: Vec<IpAddr>,
    pub ping_timeout: Duration,
    /// Fences (powers off) the peer; must succeed before takeover.
    pub fence_command: Option<String>,
    /// A standard fence agent doing the same (`action=off`, then `status` until off).
    pub fence_agent: Option<FenceAgentConfig>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            ping_nodes: Vec::new(),
            ping_timeout: cluster_defaults::PING_TIMEOUT,
            fence_command: None,
            fence_agent: None,
        }
    }
}

impl GuardConfig {
    /// No ping node and no way to fence: nothing protects against a split brain.
    pub fn is_empty(&self) -> bool {
        self.ping_nodes.is_empty() && !self.can_fence()
    }

    /// A fence command or a fence agent is configured.
    pub fn can_fence(&self) -> bool {
        self.fence_command.is_some() || self.fence_agent.is_some()
    }
}

impl ClusterConfig {
    /// Settings that are valid but risky (Heartbeat's own advice), worded for an operator.
    pub(super) fn warnings(&self, file: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        if self.deadtime < self.keepalive.saturating_mul(10) {
            out.push(format!(
                "{}: cluster.deadtime: {} is less than 10 × keepalive ({}); a few lost or late heartbeats \
                 will declare the peer dead (Heartbeat advises a deadtime of at least 10 keepalives)",
                file.display(),
                format_duration(self.deadtime),
                format_duration(self.keepalive),
            ));
        }
        out
    }
}

/// The `cluster` section: the manager, and with the embedded one its heartbeat settings.
pub(super) fn build_cluster(
    src: &Source<'_>,
    raw: &RawCluster,
    nodes: &[NodeConfig],
) -> Result<(Manager, Option<ClusterConfig>), ConfigError> {
    let f = Fields::new(src, "cluster");
    let manager = match raw.manager.as_ref().map(|m| m.text.as_str()) {
        None | Some("embedded") => Manager::Embedded,
        Some("pacemaker") => Manager::Pacemaker,
        Some(_) => {
            return Err(f.invalid(
                "manager",
                format_args!(
                    "unknown manager {}; expected `embedded` (clusterd's heartbeats and failover) or `pacemaker`",
                    raw.manager.as_ref().map(Scalar::shown).unwrap_or_default()
                ),
            ));
        }
    };
    if manager == Manager::Pacemaker {
        refuse_embedded_settings(&f, raw)?;
        return Ok((manager, None));
    }
    build_embedded(&f, raw, nodes).map(|c| (manager, Some(c)))
}

/// Under Pacemaker, Corosync's totem settings and Pacemaker's STONITH take these jobs: a value left
/// here would look like it does something.
fn refuse_embedded_settings(f: &Fields<'_>, raw: &RawCluster) -> Result<(), ConfigError> {
    let set = [
        ("keepalive", raw.keepalive.is_some()),
        ("warntime", raw.warntime.is_some()),
        ("deadtime", raw.deadtime.is_some()),
        ("initdead", raw.initdead.is_some()),
        ("auto-failback", raw.auto_failback.is_some()),
        ("authkeys-file", raw.authkeys_file.is_some()),
        ("links", !raw.links.is_empty()),
        ("guard", raw.guard.fence_command.is_some() || raw.guard.fence_agent.is_some() || !raw.guard.ping_nodes.is_empty() || raw.guard.ping_timeout.is_some()),
        ("escalation-command", raw.escalation_command.is_some()),
    ];
    if let Some((field, _)) = set.iter().find(|(_, s)| *s) {
        return Err(f.invalid(
            field,
            "not used with `manager: pacemaker` (Corosync's totem settings detect a dead node and Pacemaker's \
             STONITH fences it); remove it",
        ));
    }
    Ok(())
}

fn build_embedded(f: &Fields<'_>, raw: &RawCluster, nodes: &[NodeConfig]) -> Result<ClusterConfig, ConfigError> {
    use cluster_defaults as d;
    let keepalive = f.positive_duration("keepalive", raw.keepalive.as_ref(), d::KEEPALIVE)?;
    let warntime = f.positive_duration("warntime", raw.warntime.as_ref(), d::WARNTIME)?;
    let deadtime = f.positive_duration("deadtime", raw.deadtime.as_ref(), d::DEADTIME)?;
    let initdead = f.positive_duration("initdead", raw.initdead.as_ref(), d::INITDEAD)?;
    // Name unset values as defaults, so an error about a line the operator never wrote makes sense.
    let shown = |value: &Option<Scalar>, d: Duration| match value {
        Some(_) => format_duration(d),
        None => format!("{} (the default)", format_duration(d)),
    };
    if deadtime <= keepalive.saturating_mul(2) {
        return Err(f.invalid(
            "deadtime",
            format_args!(
                "{} must be more than 2 × keepalive ({}), or one lost heartbeat declares the peer dead",
                shown(&raw.deadtime, deadtime),
                format_duration(keepalive)
            ),
        ));
    }
    if initdead < deadtime {
        return Err(f.invalid(
            "initdead",
            format_args!(
                "{} must be at least deadtime ({})",
                shown(&raw.initdead, initdead),
                format_duration(deadtime)
            ),
        ));
    }
    if warntime <= keepalive || warntime >= deadtime {
        return Err(f.invalid(
            "warntime",
            format_args!(
                "{} must be more than keepalive ({}) and less than deadtime ({})",
                shown(&raw.warntime, warntime),
                format_duration(keepalive),
                format_duration(deadtime)
            ),
        ));
    }
    let auto_failback = f.flag("auto-failback", raw.auto_failback.as_ref(), false)?;
    let authkeys_file = match &raw.authkeys_file {
        Some(s) => f.path_value("authkeys-file", s)?,
        None => {
            return Err(f.invalid(
                "authkeys-file",
                "required: the file with the heartbeat keys (like Heartbeat's authkeys, mode 0600)",
            ));
        }
    };
    if raw.links.is_empty() {
        return Err(f.invalid(
            "links",
            "at least one heartbeat link is required (two independent ones are advised)",
        ));
    }
    let mut links: Vec<HeartbeatLink> = Vec::with_capacity(raw.links.len());
    for (i, raw_link) in raw.links.iter().enumerate() {
        let link = build_link(&f.nested(&format!("links[{i}]")), raw_link, nodes)?;
        if links.iter().any(|l| l.name == link.name) {
            return Err(f.invalid(
                &format!("links[{i}].name"),
                format_args!(
                    "`{}` is used by another link; link names must be unique",
                    link.name
                ),
            ));
        }
        links.push(link);
    }
    let guard = build_guard(&f.nested("guard"), &raw.guard, nodes)?;
    let escalation_command = raw
        .escalation_command
        .as_ref()
        .map(|s| f.text("escalation-command", s))
        .transpose()?;
    Ok(ClusterConfig {
        keepalive,
        warntime,
        deadtime,
        initdead,
        auto_failback,
        authkeys_file,
        links,
        guard,
        escalation_command,
    })
}

fn build_link(
    f: &Fields<'_>,
    raw: &RawLink,
    nodes: &[NodeConfig],
) -> Result<HeartbeatLink, ConfigError> {
    let name = raw.name.text.clone();
    check_name(&name, MAX_LINK_NAME_LEN)
        .map_err(|p| f.invalid("name", format_args!("{}: {p}", raw.name.shown())))?;
    let mode = match raw.mode.text.as_str() {
        "ucast" => LinkMode::Unicast,
        "bcast" => LinkMode::Broadcast,
        _ => {
            return Err(f.invalid(
                "mode",
                format_args!(
                    "unknown mode {}; expected one of: ucast, bcast",
                    raw.mode.shown()
                ),
            ));
        }
    };
    let port = f.number_or(
        "port",
        raw.port.as_ref(),
        cluster_defaults::PORT,
        1..=u16::MAX,
    )?;
    for node_name in raw.on.0.keys() {
        if !nodes.iter().any(|n| &n.name == node_name) {
            return Err(f.invalid(
                &format!("on.{node_name}"),
                format_args!(
                    "`{node_name}` is not a node in `nodes` ({})",
                    super::resource::node_list(nodes)
                ),
            ));
        }
    }
    let mut on: BTreeMap<String, LinkEndpoint> = BTreeMap::new();
    for node in nodes {
        let Some(end) = raw.on.0.get(&node.name) else {
            return Err(f.invalid(
                "on",
                format_args!(
                    "no entry for node `{}` (every node in `nodes` needs one)",
                    node.name
                ),
            ));
        };
        let ef = f.nested(&format!("on.{}", node.name));
        let address = ef.ip("address", &end.address)?;
        let interface = end
            .interface
            .as_ref()
            .map(|s| ef.interface("interface", s))
            .transpose()?;
        let broadcast = end
            .broadcast
            .as_ref()
            .map(|s| ef.ip("broadcast", s))
            .transpose()?;
        match (mode, broadcast) {
            (LinkMode::Broadcast, None) => {
                return Err(ef.invalid(
                    "broadcast",
                    "required for a bcast link (the subnet's broadcast address, like 10.10.1.255)",
                ));
            }
            (LinkMode::Unicast, Some(_)) => {
                return Err(ef.invalid(
                    "broadcast",
                    "only used by bcast links; remove it or set `mode: bcast`",
                ));
            }
            _ => {}
        }
        if let Some((other, _)) = on.iter().find(|(_, e)| e.address == address) {
            return Err(ef.invalid(
                "address",
                format_args!("{address} is also the address of `{other}`; each node needs its own"),
            ));
        }
        on.insert(
            node.name.clone(),
            LinkEndpoint {
                address,
                interface,
                broadcast,
            },
        );
    }
    Ok(HeartbeatLink {
        name,
        mode,
        port,
        on,
    })
}

fn build_guard(f: &Fields<'_>, raw: &RawGuard, nodes: &[NodeConfig]) -> Result<GuardConfig, ConfigError> {
    if raw.fence_command.is_some() && raw.fence_agent.is_some() {
        return Err(f.invalid("fence-agent", "set `fence-command` or `fence-agent`, not both (one way to power the peer off)"));
    }
    let mut ping_nodes = Vec::with_capacity(raw.ping_nodes.len());
    for (i, s) in raw.ping_nodes.iter().enumerate() {
        let ip = f.ip(&format!("ping-nodes[{i}]"), s)?;
        if ping_nodes.contains(&ip) {
            return Err(f.invalid(
                &format!("ping-nodes[{i}]"),
                format_args!("{ip} is listed twice"),
            ));
        }
        ping_nodes.push(ip);
    }
    Ok(GuardConfig {
        ping_nodes,
        ping_timeout: f.positive_duration(
            "ping-timeout",
            raw.ping_timeout.as_ref(),
            cluster_defaults::PING_TIMEOUT,
        )?,
        fence_command: raw
            .fence_command
            .as_ref()
            .map(|s| f.text("fence-command", s))
            .transpose()?,
        fence_agent: raw
            .fence_agent
            .as_ref()
            .map(|a| build_fence_agent(&f.nested("fence-agent"), a, nodes))
            .transpose()?,
    })
}
