//! The replicator's per-resource snapshots summarised into the one [`LocalVolumes`] view the sequencer
//! decides on. Pure, so the daemon (which gathers the snapshots from its running volumes) and the seeded
//! failover simulation (which takes them from the real replication state machines) map them the same way.

use super::{DiskView, LocalVolumes};
use replicator::machine::Snapshot;
use replicator::machine::state::{ConnState, DiskState, Role};

/// The sequencer's view of one replicator disk state. Transitional and unknown states count as
/// Inconsistent or Diskless: neither may ever be promoted.
pub fn disk_view(d: DiskState) -> DiskView {
    match d {
        DiskState::UpToDate => DiskView::UpToDate,
        DiskState::Consistent => DiskView::Consistent,
        DiskState::Outdated => DiskView::Outdated,
        DiskState::Diskless | DiskState::Attaching | DiskState::Failed => DiskView::Diskless,
        DiskState::Inconsistent | DiskState::DUnknown => DiskView::Inconsistent,
    }
}

/// The group's volumes summarised: the worst local disk, connected only if every resource is, the
/// worst peer disk known (`None` as soon as one resource does not know its peer's disk), the peer
/// Primary if any resource reports it. `None` entries are resources that are not running: Diskless and
/// disconnected, so a group with a missing volume is never promoted.
pub fn volumes_view(snapshots: &[Option<Snapshot>]) -> LocalVolumes {
    let mut out = LocalVolumes { disk: DiskView::UpToDate, connected: true, peer_disk: Some(DiskView::UpToDate), peer_primary: false };
    for snap in snapshots {
        let Some(s) = snap else {
            out.disk = DiskView::Diskless;
            out.connected = false;
            out.peer_disk = None;
            continue;
        };
        let mut d = disk_view(s.disk);
        // issue 18: an asynchronous (protocol A) Secondary that lost its peer may lack the last
        // acknowledged writes: not a failover target unless `net.allow-async-failover` (then the flag
        // is off). It still gets the group by `haadm primary --force` and a manual start.
        if s.async_promotion_needs_force && (d as u8) < (DiskView::Outdated as u8) {
            d = DiskView::Outdated;
        }
        if (d as u8) > (out.disk as u8) {
            out.disk = d;
        }
        if s.conn != ConnState::Connected {
            out.connected = false;
        }
        if s.peer_role == Role::Primary {
            out.peer_primary = true;
        }
        match (s.peer_disk, out.peer_disk) {
            (DiskState::DUnknown, _) => out.peer_disk = None,
            (pd, Some(cur)) if (disk_view(pd) as u8) > (cur as u8) => out.peer_disk = Some(disk_view(pd)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicator::machine::state::ReplState;
    use replicator::machine::uuids::Uuids;
    use replicator::machine::Stats;

    fn snap(disk: DiskState, conn: ConnState, peer_disk: DiskState, peer_role: Role) -> Snapshot {
        Snapshot {
            role: Role::Secondary,
            disk,
            peer_role,
            peer_disk,
            conn,
            repl: ReplState::Off,
            uuids: Uuids { current: 4, bitmap: 0, history: [0; 2] },
            out_of_sync_blocks: 0,
            sync: None,
            split_brain: false,
            split_brain_facts: None,
            last_error: None,
            stats: Stats::default(),
            pending_peer: 0,
            suspended: None,
            held_acks: 0,
            in_flight: Default::default(),
            peer_pr_stale: false,
            protocols: replicator::wire::frame::PROTOCOLS,
            peer_protocols: None,
            agreed_protocol: None,
            size: 64 << 20,
            last_verify: None,
            detached: None,
            async_promotion_needs_force: false,
            replication_protocol: 'C',
            async_lag: None,
            resync_controller: None,
        }
    }

    #[test]
    fn an_async_secondary_that_lost_its_peer_is_no_failover_target() {
        let mut s = snap(DiskState::UpToDate, ConnState::Connecting, DiskState::DUnknown, Role::Unknown);
        assert_eq!(volumes_view(&[Some(s.clone())]).disk, DiskView::UpToDate);
        s.async_promotion_needs_force = true;
        assert_eq!(volumes_view(&[Some(s)]).disk, DiskView::Outdated);
    }

    #[test]
    fn no_resources_is_all_good_and_a_missing_one_is_diskless() {
        assert_eq!(
            volumes_view(&[]),
            LocalVolumes { disk: DiskView::UpToDate, connected: true, peer_disk: Some(DiskView::UpToDate), peer_primary: false }
        );
        let up = snap(DiskState::UpToDate, ConnState::Connected, DiskState::UpToDate, Role::Secondary);
        let v = volumes_view(&[Some(up), None]);
        assert_eq!(v, LocalVolumes { disk: DiskView::Diskless, connected: false, peer_disk: None, peer_primary: false });
    }

    #[test]
    fn worst_disk_and_peer_disk_win_and_one_disconnected_resource_disconnects_the_group() {
        let a = snap(DiskState::UpToDate, ConnState::Connected, DiskState::UpToDate, Role::Primary);
        let b = snap(DiskState::Consistent, ConnState::Connected, DiskState::Outdated, Role::Secondary);
        let v = volumes_view(&[Some(a.clone()), Some(b)]);
        assert_eq!(v, LocalVolumes { disk: DiskView::Consistent, connected: true, peer_disk: Some(DiskView::Outdated), peer_primary: true });
        let c = snap(DiskState::Outdated, ConnState::Connecting, DiskState::DUnknown, Role::Unknown);
        let v = volumes_view(&[Some(c), Some(a)]);
        assert_eq!(v, LocalVolumes { disk: DiskView::Outdated, connected: false, peer_disk: None, peer_primary: true });
    }

    #[test]
    fn transitional_states_are_never_promotable() {
        for d in [DiskState::Attaching, DiskState::Failed, DiskState::Diskless] {
            assert_eq!(disk_view(d), DiskView::Diskless);
        }
        for d in [DiskState::Inconsistent, DiskState::DUnknown] {
            assert_eq!(disk_view(d), DiskView::Inconsistent);
        }
    }
}
