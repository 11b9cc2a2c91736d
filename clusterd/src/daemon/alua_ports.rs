//! ALUA access states of a failover group's target ports (issue 17, `access: alua | both`).
//!
//! Each node serves the group's targets on its own portal (`node-portals`), one target port group per
//! node; with `both` the VIP portal is a third group, served only where the group runs. Which port is
//! active follows the failover sequencers of both nodes, so this is a pure function of this node's
//! phase, its volumes, and the peer's published state; the cluster loop applies it every tick (an
//! unchanged answer changes nothing and raises no unit attention). Both nodes compute the same table
//! from the same facts, so an initiator's RTPG reads alike through either port.
//!
//! Identifiers, for a target with `tpgt` T (README "Multipath (ALUA)"):
//!
//! | port | TPGT = relative port id | target port group |
//! |---|---|---|
//! | the VIP portal (`both`) | T | [`VIP_GROUP`] |
//! | node i's portal | T + 1 + i | `2 + i` |
//!
//! The states are those SPC-4 gives: the holder's port active/optimized; a port whose node is
//! starting or stopping the group transitioning (nothing is served while the volumes change role);
//! the other node's port standby when its copy is UpToDate (it could take over), else unavailable;
//! a node that is not heard: unavailable.

use crate::config::GroupConfig;
use crate::failover::{DiskView, GroupState, Phase};
use iscsi_target::scsi::alua::{AccessState, PortGroupDef};

/// Every name [`state_name`] gives (the metric's state set).
pub const STATE_NAMES: [&str; 5] = ["active/optimized", "active/non-optimized", "standby", "unavailable", "transitioning"];

/// How status shows a state.
pub fn state_name(s: AccessState) -> &'static str {
    match s {
        AccessState::ActiveOptimized => "active/optimized",
        AccessState::ActiveNonOptimized => "active/non-optimized",
        AccessState::Standby => "standby",
        AccessState::Unavailable => "unavailable",
        AccessState::Transitioning => "transitioning",
    }
}

/// The states that take this node's ports out of service at once when it starts stopping the
/// group, before anything else of the stop happens (the loop's next tick says the same).
pub fn leaving(group: &GroupConfig, me: usize) -> Vec<(u16, AccessState)> {
    let mut out = vec![(node_group(me), AccessState::Transitioning)];
    if group.access == crate::config::Access::Both {
        out.push((VIP_GROUP, AccessState::Transitioning));
    }
    out
}

/// Target port group of the VIP portal (`access: both`).
pub const VIP_GROUP: u16 = 1;

/// Target port group of node `index` (its position in `nodes`).
pub fn node_group(index: usize) -> u16 {
    2u16.saturating_add(index as u16)
}

/// The target port groups of one target of `group`, whose VIP portals carry `tpgt`.
pub fn port_groups(group: &GroupConfig, nodes: &[String], tpgt: u16) -> Vec<PortGroupDef> {
    let mut out = Vec::new();
    if group.access == crate::config::Access::Both {
        out.push(PortGroupDef { id: VIP_GROUP, relative_ports: vec![tpgt], preferred: false });
    }
    // PREF stays clear: dm-multipath's alua prioritizer adds 80 to a PREF group that is not
    // active/optimized, so a preferred node that is standby after a failover would outrank the
    // active path and draw the I/O.
    for i in 0..nodes.len() {
        out.push(PortGroupDef { id: node_group(i), relative_ports: vec![GroupConfig::node_tpgt(tpgt, i)], preferred: false });
    }
    out
}

/// One node's side of the group, as far as port states go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub phase: Phase,
    /// Its copy of the group's volumes can serve (UpToDate everywhere).
    pub up_to_date: bool,
}

impl Side {
    /// What the peer published about itself, if it is heard.
    pub fn of_peer(state: Option<&GroupState>, alive: bool) -> Option<Side> {
        let s = state.filter(|_| alive)?;
        Some(Side { phase: s.phase, up_to_date: s.disk == DiskView::UpToDate })
    }

    fn port(self) -> AccessState {
        match self.phase {
            Phase::Holding => AccessState::ActiveOptimized,
            Phase::Claiming | Phase::Starting | Phase::Stopping => AccessState::Transitioning,
            Phase::Idle | Phase::Failed if self.up_to_date => AccessState::Standby,
            Phase::Idle | Phase::Failed => AccessState::Unavailable,
        }
    }
}

/// The state of every target port group of the group: this node is `me` (index in `nodes`), the
/// peer `peer` (None = not heard).
pub fn port_states(group: &GroupConfig, me: usize, mine: Side, peer: Option<Side>) -> Vec<(u16, AccessState)> {
    let peer_state = peer.map_or(AccessState::Unavailable, Side::port);
    let mut out = vec![(node_group(me), mine.port()), (node_group(1 - me.min(1)), peer_state)];
    if group.access == crate::config::Access::Both {
        // The VIP is where the group runs: active while someone holds, transitioning while it moves.
        let vip = match (mine.port(), peer_state) {
            (AccessState::ActiveOptimized, _) | (_, AccessState::ActiveOptimized) => AccessState::ActiveOptimized,
            (AccessState::Transitioning, _) | (_, AccessState::Transitioning) => AccessState::Transitioning,
            _ => AccessState::Unavailable,
        };
        out.push((VIP_GROUP, vip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Access;
    use std::collections::BTreeMap;

    fn group(access: Access) -> GroupConfig {
        GroupConfig {
            name: "g".into(),
            preferred: Some("node2".into()),
            resources: vec!["r0".into()],
            vip: None,
            portblock: true,
            start_timeout: std::time::Duration::from_secs(1),
            stop_timeout: std::time::Duration::from_secs(1),
            allow_unguarded_split: false,
            auto_failback: None,
            access,
            node_portals: BTreeMap::new(),
        }
    }

    fn side(phase: Phase, up_to_date: bool) -> Side {
        Side { phase, up_to_date }
    }

    #[test]
    fn holder_active_peer_standby_and_both_nodes_agree() {
        let g = group(Access::Alua);
        let on_holder = port_states(&g, 0, side(Phase::Holding, true), Some(side(Phase::Idle, true)));
        let on_peer = port_states(&g, 1, side(Phase::Idle, true), Some(side(Phase::Holding, true)));
        let sorted = |mut v: Vec<(u16, AccessState)>| {
            v.sort_by_key(|(id, _)| *id);
            v
        };
        assert_eq!(sorted(on_holder.clone()), vec![(2, AccessState::ActiveOptimized), (3, AccessState::Standby)]);
        assert_eq!(sorted(on_holder), sorted(on_peer));
    }

    #[test]
    fn moving_is_transitioning_and_a_silent_or_stale_peer_unavailable() {
        let g = group(Access::Alua);
        let s = port_states(&g, 0, side(Phase::Stopping, true), None);
        assert_eq!(s, vec![(2, AccessState::Transitioning), (3, AccessState::Unavailable)]);
        let s = port_states(&g, 1, side(Phase::Idle, false), Some(side(Phase::Starting, true)));
        assert_eq!(s, vec![(3, AccessState::Unavailable), (2, AccessState::Transitioning)]);
    }

    #[test]
    fn the_vip_group_follows_the_holder_with_both() {
        let g = group(Access::Both);
        let s = port_states(&g, 0, side(Phase::Idle, true), Some(side(Phase::Holding, true)));
        assert!(s.contains(&(VIP_GROUP, AccessState::ActiveOptimized)));
        let s = port_states(&g, 0, side(Phase::Idle, true), None);
        assert!(s.contains(&(VIP_GROUP, AccessState::Unavailable)));
        let defs = port_groups(&g, &["node1".into(), "node2".into()], 1);
        assert_eq!(defs.iter().map(|d| (d.id, d.relative_ports.clone(), d.preferred)).collect::<Vec<_>>(), vec![
            (1, vec![1], false),
            (2, vec![2], false),
            (3, vec![3], false)
        ]);
    }
}
