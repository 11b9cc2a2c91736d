//! The `group:` section: what moves between the nodes on failover (Heartbeat's haresources line
//! `node1 IPaddr::10.10.1.250/24/bond0 drbddisk::iscsi.target.0 iscsitarget`): the replicated
//! resources, promoted in order, then the VIP; the iSCSI target follows the group.

use super::fields::{Fields, parse_cidr};
use super::raw::{RawGroup, RawVip};
use super::{ConfigError, NodeConfig, ResourceConfig, Source};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

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
    raw: &RawGroup,
    nodes: &[NodeConfig],
    resources: &BTreeMap<String, ResourceConfig>,
) -> Result<GroupConfig, ConfigError> {
    use group_defaults as d;
    let f = Fields::new(src, "group");
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
    Ok(GroupConfig {
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
