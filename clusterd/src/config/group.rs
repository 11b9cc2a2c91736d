//! The `group:` section: what moves between the nodes on failover (Heartbeat's haresources line
//! `node1 IPaddr::10.10.1.250/24/bond0 drbddisk::iscsi.target.0 iscsitarget`): the replicated
//! resources, promoted in order, then the VIP; the iSCSI target follows the group. `groups:` (issue 17)
//! holds several such groups by name, each moving on its own; `group:` is read as one group named
//! [`LEGACY_GROUP_NAME`].

use super::fields::{Fields, parse_cidr};
use super::raw::{RawGroup, RawVip};
use super::{ConfigError, NodeConfig, ResourceConfig, Source};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The name a single `group:` section gets (status, events, metrics, `standby GROUP`).
pub const LEGACY_GROUP_NAME: &str = "default";

/// How initiators reach a group's targets (`access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The VIP only: it moves with the group, the holder serves (the first wave's mode).
    Vip,
    /// ALUA multipath: each node serves the group's targets on its own portal (`node-portals`);
    /// REPORT TARGET PORT GROUPS says which node's port is active, the other's refuses I/O.
    Alua,
    /// Both: the VIP for simple initiators and the node portals for multipath ones.
    Both,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Vip => "vip",
            Access::Alua => "alua",
            Access::Both => "both",
        }
    }

    pub fn alua(self) -> bool {
        matches!(self, Access::Alua | Access::Both)
    }
}

/// Defaults of the `group` section.
pub mod group_defaults {
    use std::time::Duration;
    pub const PORTBLOCK: bool = true;
    pub const START_TIMEOUT: Duration = Duration::from_secs(30);
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
    pub const GARP_COUNT: u32 = 5;
    pub const GARP_INTERVAL: Duration = Duration::from_millis(200);
    pub const GARP_REPEAT_AFTER: Duration = Duration::from_secs(3);
}

/// Most gratuitous ARPs sent in one burst (more only floods the segment).
pub const MAX_GARP_COUNT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The key under `groups:`, or [`LEGACY_GROUP_NAME`] for a `group:` section.
    pub name: String,
    /// The node the group belongs on (haresources' first word): it returns there when
    /// `cluster.auto-failback` is on.
    pub preferred: Option<String>,
    /// Replicated resources, promoted in this order and demoted in reverse.
    pub resources: Vec<String>,
    pub vip: Option<VipConfig>,
    /// During a move, drop (not reset) packets to the iSCSI port, so initiators retry instead of
    /// failing I/O.
    pub portblock: bool,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    /// `unsafe-promote-without-guard`: take over without a guard confirming the peer is gone.
    pub allow_unguarded_split: bool,
    /// `auto-failback` of this group; `None` = `cluster.auto-failback`.
    pub auto_failback: Option<bool>,
    pub access: Access,
    /// `node-portals`: node name → the portal this node serves the group's targets on with ALUA
    /// (every node, with `access: alua | both`; empty with `vip`).
    pub node_portals: BTreeMap<String, SocketAddr>,
}

impl GroupConfig {
    /// The ALUA target port group id (= relative port id = TPGT offset) of `node`'s own portal: the
    /// target's tpgt + 1 + the node's index in `nodes`, so the VIP portal keeps the target's tpgt and
    /// the two nodes' ports never share a tag (open-iscsi refuses a portal whose tag changes).
    pub fn node_tpgt(tpgt: u16, node_index: usize) -> u16 {
        tpgt.saturating_add(1).saturating_add(node_index as u16)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    /// Node name → interface the VIP is added to. Has exactly the config's nodes.
    pub interfaces: BTreeMap<String, String>,
    /// Gratuitous ARPs (unsolicited neighbour advertisements for IPv6) sent after adding the VIP.
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// A second burst this long after the first, for switches that missed it; zero = no second burst.
    pub garp_repeat_after: Duration,
}

pub(super) fn build_group(
    src: &Source<'_>,
    name: Option<&str>,
    raw: &RawGroup,
    nodes: &[NodeConfig],
    resources: &BTreeMap<String, ResourceConfig>,
) -> Result<GroupConfig, ConfigError> {
    use group_defaults as d;
    let f = match name {
        Some(n) => Fields::new(src, format!("groups.{n}")),
        None => Fields::new(src, "group"),
    };
    if let Some(n) = name {
        super::check_name(n, 63).map_err(|p| f.invalid("", format_args!("`{n}`: {p}")))?;
        if n == "all" {
            return Err(f.invalid("", "`all` is reserved (`haadm standby all`); choose another group name"));
        }
    }
    let preferred = match &raw.preferred {
        None => None,
        Some(s) if nodes.iter().any(|n| n.name == s.text) => Some(s.text.clone()),
        Some(s) => {
            return Err(f.invalid(
                "preferred",
                format_args!(
                    "{} is not a node in `nodes` ({})",
                    s.shown(),
                    super::resource::node_list(nodes)
                ),
            ));
        }
    };
    let mut members: Vec<String> = Vec::with_capacity(raw.resources.len());
    for (i, s) in raw.resources.iter().enumerate() {
        let field = format!("resources[{i}]");
        if !resources.contains_key(&s.text) {
            let known = resources.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(f.invalid(
                &field,
                format_args!(
                    "{} is not a resource in `resources` ({})",
                    s.shown(),
                    if known.is_empty() {
                        "none defined"
                    } else {
                        &known
                    }
                ),
            ));
        }
        if members.contains(&s.text) {
            return Err(f.invalid(&field, format_args!("{} is listed twice", s.shown())));
        }
        members.push(s.text.clone());
    }
    let vip = raw
        .vip
        .as_ref()
        .map(|v| build_vip(&f.nested("vip"), v, nodes))
        .transpose()?;
    let access = match raw.access.as_ref().map(|s| (s.text.as_str(), s)) {
        None | Some(("vip", _)) => Access::Vip,
        Some(("alua", _)) => Access::Alua,
        Some(("both", _)) => Access::Both,
        Some((_, s)) => return Err(f.invalid("access", format_args!("{} is not vip, alua or both", s.shown()))),
    };
    if access == Access::Both && vip.is_none() {
        return Err(f.invalid("vip", "required with `access: both` (the VIP is one of the two ways in); or use `access: alua`"));
    }
    let node_portals = build_node_portals(&f, raw.node_portals.as_ref(), nodes, access)?;
    let auto_failback = raw.auto_failback.as_ref().map(|s| f.flag("auto-failback", Some(s), false)).transpose()?;
    Ok(GroupConfig {
        name: name.unwrap_or(LEGACY_GROUP_NAME).to_string(),
        auto_failback,
        access,
        node_portals,
        preferred,
        resources: members,
        vip,
        portblock: f.flag("portblock", raw.portblock.as_ref(), d::PORTBLOCK)?,
        start_timeout: f.positive_duration(
            "start-timeout",
            raw.start_timeout.as_ref(),
            d::START_TIMEOUT,
        )?,
        stop_timeout: f.positive_duration(
            "stop-timeout",
            raw.stop_timeout.as_ref(),
            d::STOP_TIMEOUT,
        )?,
        allow_unguarded_split: f.flag(
            "unsafe-promote-without-guard",
            raw.unsafe_promote_without_guard.as_ref(),
            false,
        )?,
    })
}

/// `node-portals: { node1: "10.10.1.251:3260", node2: ... }` (a bare IP means port 3260): required
/// with every node for ALUA access, refused without it (it would be served by nobody).
fn build_node_portals(
    f: &Fields<'_>,
    raw: Option<&super::raw::UniqueMap<super::raw::Scalar>>,
    nodes: &[NodeConfig],
    access: Access,
) -> Result<BTreeMap<String, SocketAddr>, ConfigError> {
    let Some(raw) = raw else {
        if access.alua() {
            return Err(f.invalid(
                "node-portals",
                format_args!(
                    "required with `access: {}`: the portal each node serves the group's targets on, like {{ {} }}",
                    access.name(),
                    nodes.iter().map(|n| format!("{}: \"IP:3260\"", n.name)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        return Ok(BTreeMap::new());
    };
    if !access.alua() {
        return Err(f.invalid("node-portals", "only used with `access: alua` or `access: both`; set `access` or remove this key"));
    }
    let mut out = BTreeMap::new();
    for key in raw.0.keys() {
        if !nodes.iter().any(|n| &n.name == key) {
            return Err(f.invalid(
                &format!("node-portals.{key}"),
                format_args!("`{key}` is not a node in `nodes` ({})", super::resource::node_list(nodes)),
            ));
        }
    }
    for node in nodes {
        let Some(s) = raw.0.get(&node.name) else {
            return Err(f.invalid("node-portals", format_args!("no portal for node `{}` (every node needs one)", node.name)));
        };
        let field = format!("node-portals.{}", node.name);
        let text = s.text.trim();
        let addr = match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 3260),
            Err(_) => super::units::parse_address(text, &s.shown()).map_err(|e| f.invalid(&field, e))?,
        };
        if addr.ip().is_unspecified() {
            return Err(f.invalid(&field, "a node portal needs the node's own address, not 0.0.0.0 (the peer advertises it)"));
        }
        if out.values().any(|a| *a == addr) {
            return Err(f.invalid(&field, format_args!("{addr} is already the portal of another node")));
        }
        out.insert(node.name.clone(), addr);
    }
    Ok(out)
}

fn build_vip(f: &Fields<'_>, raw: &RawVip, nodes: &[NodeConfig]) -> Result<VipConfig, ConfigError> {
    use group_defaults as d;
    let (address, prefix_len) = parse_cidr(&raw.address.text, &raw.address.shown(), false)
        .map_err(|p| {
            f.invalid(
                "address",
                format_args!("{p}; write the VIP with its prefix length, like 10.10.1.250/24"),
            )
        })?;
    let interfaces = match (&raw.interface, &raw.on) {
        (Some(s), None) => {
            let name = f.interface("interface", s)?;
            nodes
                .iter()
                .map(|n| (n.name.clone(), name.clone()))
                .collect()
        }
        (None, Some(on)) => {
            for node_name in on.0.keys() {
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
            let mut map = BTreeMap::new();
            for node in nodes {
                let Some(s) = on.0.get(&node.name) else {
                    return Err(f.invalid(
                        "on",
                        format_args!(
                            "no interface for node `{}` (every node needs one)",
                            node.name
                        ),
                    ));
                };
                map.insert(
                    node.name.clone(),
                    f.interface(&format!("on.{}", node.name), s)?,
                );
            }
            map
        }
        (Some(_), Some(_)) => {
            return Err(f.invalid(
                "",
                "both `interface` and `on` are set; use `interface` when it is the same on every node, else `on`",
            ));
        }
        (None, None) => {
            return Err(f.invalid(
                "interface",
                "required: the interface the VIP goes on (`interface: bond0`, or `on: {node1: eth0, node2: eth1}`)",
            ));
        }
    };
    Ok(VipConfig {
        address,
        prefix_len,
        interfaces,
        garp_count: f.number_or(
            "garp-count",
            raw.garp_count.as_ref(),
            d::GARP_COUNT,
            0..=MAX_GARP_COUNT,
        )?,
        garp_interval: f.positive_duration(
            "garp-interval",
            raw.garp_interval.as_ref(),
            d::GARP_INTERVAL,
        )?,
        garp_repeat_after: f.duration(
            "garp-repeat-after",
            raw.garp_repeat_after.as_ref(),
            d::GARP_REPEAT_AFTER,
        )?,
    })
}
