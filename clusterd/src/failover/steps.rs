//! The start and stop orders of the resource group.
//!
//! Start: volumes Primary → port blocked (DROP, so initiators retry instead of receiving RST) → VIP →
//! gratuitous ARP → target (same identity as on the peer) → port unblocked.
//! Stop: quiesce (sessions log out, in-flight writes complete and flush) → port blocked → target stopped →
//! VIP removed → port unblocked → volumes Secondary. A partial start is undone with the inverse of every
//! step that ran (including the failed one: stopping something that is not running must succeed).

use super::Step;

/// The full start order.
pub fn start_plan(portblock: bool) -> Vec<Step> {
    let mut plan = vec![Step::PromoteVolumes];
    if portblock {
        plan.push(Step::BlockPort);
    }
    plan.extend([Step::AddVip, Step::SendGarp, Step::StartTarget]);
    if portblock {
        plan.push(Step::UnblockPort);
    }
    plan
}

/// The stop order for a group whose start steps in `started` ran (fully or partly).
/// `started` = the whole start plan for a normal stop.
pub fn stop_plan(portblock: bool, started: &[Step]) -> Vec<Step> {
    let ran = |s: Step| started.contains(&s);
    let mut plan = Vec::new();
    if ran(Step::StartTarget) {
        plan.push(Step::QuiesceTarget);
    }
    // Block while the target goes away so reconnecting initiators are dropped, not reset. Only needed if
    // the port is open now (never blocked, or unblocked at the end of the start).
    let port_blocked_now = ran(Step::BlockPort) && !ran(Step::UnblockPort);
    if portblock && ran(Step::StartTarget) && !port_blocked_now {
        plan.push(Step::BlockPort);
    }
    if ran(Step::StartTarget) {
        plan.push(Step::StopTarget);
    }
    if ran(Step::AddVip) {
        plan.push(Step::RemoveVip);
    }
    if portblock && (ran(Step::BlockPort) || ran(Step::StartTarget)) {
        plan.push(Step::UnblockPort);
    }
    if ran(Step::PromoteVolumes) {
        plan.push(Step::DemoteVolumes);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    #[test]
    fn start_order_with_and_without_portblock() {
        assert_eq!(start_plan(true), vec![PromoteVolumes, BlockPort, AddVip, SendGarp, StartTarget, UnblockPort]);
        assert_eq!(start_plan(false), vec![PromoteVolumes, AddVip, SendGarp, StartTarget]);
    }

    #[test]
    fn full_stop_is_the_reverse_with_quiesce_first() {
        assert_eq!(
            stop_plan(true, &start_plan(true)),
            vec![QuiesceTarget, BlockPort, StopTarget, RemoveVip, UnblockPort, DemoteVolumes]
        );
        assert_eq!(stop_plan(false, &start_plan(false)), vec![QuiesceTarget, StopTarget, RemoveVip, DemoteVolumes]);
    }

    #[test]
    fn partial_start_undoes_only_what_ran() {
        assert_eq!(stop_plan(true, &[PromoteVolumes]), vec![DemoteVolumes]);
        assert_eq!(stop_plan(true, &[PromoteVolumes, BlockPort]), vec![UnblockPort, DemoteVolumes]);
        assert_eq!(
            stop_plan(true, &[PromoteVolumes, BlockPort, AddVip, SendGarp]),
            vec![RemoveVip, UnblockPort, DemoteVolumes]
        );
        // Target failed to start while the port is still blocked: no second BlockPort.
        assert_eq!(
            stop_plan(true, &[PromoteVolumes, BlockPort, AddVip, SendGarp, StartTarget]),
            vec![QuiesceTarget, StopTarget, RemoveVip, UnblockPort, DemoteVolumes]
        );
    }
}
