//! Options a running resource takes without a restart (`haadm adjust`): the resync rate, the link
//! timers, c-min-rate, the resync controller (c-plan-ahead, c-fill-target, c-max-rate), the split-brain
//! policies, peer authentication, verify-alg, csums-alg, the fencing flags and protocol A's lag bound
//! and failover permission (from the next write and tick; the protocol itself is agreed in the
//! handshake and never changes on a running resource). The rate
//! and the timers count from the next tick; what the handshake exchanges (policies, verify-alg, the
//! secret) is used from the next connection, so an established link is never renegotiated under I/O.

use super::node::{Node, Timing};
use super::policy::Policies;
use crate::wire::auth::Secret;

/// The live part of [`super::NodeParams`].
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub policies: Policies,
    pub secret: Option<Secret>,
    pub fencing_dont_care: bool,
    pub freeze_io_on_peer_loss: bool,
    pub resync_rate: Option<u64>,
    /// `syncer.verify-rate` (issue 18): counts from the next verify request.
    pub verify_rate: Option<u64>,
    /// `syncer.c-min-rate`, from the next resync request.
    pub c_min_rate: Option<u64>,
    /// `c-plan-ahead` / `c-fill-target` / `c-max-rate`: from the next controller step.
    pub resync_control: super::resync_controller::ControllerOptions,
    pub timing: Timing,
    pub verify_alg: String,
    /// Taken by the next resync this node runs as SyncSource (a running one keeps its choice).
    pub csums: super::csums::CsumsOptions,
    /// Only the settings of protocol A are taken (`max-lag`, `on-lag`, ...): a change between C and A
    /// is ignored here (clusterd refuses it while the resource is attached).
    pub protocol: super::protocol_a::ReplProtocol,
}

impl LiveOptions {
    /// The live part of `p` (what a running volume takes from a re-read configuration).
    pub fn of(p: &super::NodeParams) -> LiveOptions {
        LiveOptions {
            policies: p.policies,
            secret: p.secret.clone(),
            fencing_dont_care: p.fencing_dont_care,
            freeze_io_on_peer_loss: p.freeze_io_on_peer_loss,
            resync_rate: p.resync_rate,
            verify_rate: p.verify_rate,
            c_min_rate: p.c_min_rate,
            resync_control: p.resync_control,
            timing: p.timing,
            verify_alg: p.verify_alg.clone(),
            csums: p.csums,
            protocol: p.protocol,
        }
    }
}

impl Node {
    pub(crate) fn set_options(&mut self, o: LiveOptions) {
        let before = (self.p.resync_rate, self.p.timing);
        self.p.policies = o.policies;
        self.p.secret = o.secret;
        self.p.fencing_dont_care = o.fencing_dont_care;
        self.p.freeze_io_on_peer_loss = o.freeze_io_on_peer_loss;
        self.p.resync_rate = o.resync_rate;
        self.p.verify_rate = o.verify_rate;
        self.p.c_min_rate = o.c_min_rate;
        if self.p.resync_control != o.resync_control {
            let c = o.resync_control;
            let max = c.max_rate.map_or("none".to_string(), |r| format!("{} KiB/s", r / 1024));
            self.log(false, format!(
                "{}: resync controller {} (plan-ahead {} ms, fill-target {} KiB, max-rate {max})",
                self.p.resource,
                if c.enabled() { "on" } else { "off" },
                c.plan_ahead_ms,
                c.fill_target / 1024
            ));
        }
        self.p.resync_control = o.resync_control;
        self.rs_ctl.set_options(o.resync_control);
        self.p.timing = o.timing;
        self.p.verify_alg = o.verify_alg;
        self.p.csums = o.csums;
        if o.protocol.is_async() == self.p.protocol.is_async() {
            self.p.protocol = o.protocol;
        } else if o.protocol != self.p.protocol {
            self.log(true, format!("{}: protocol {} -> {} ignored on a running resource (agreed at connect; take the resource down and up)", self.p.resource, self.p.protocol.name(), o.protocol.name()));
        }
        if before != (self.p.resync_rate, self.p.timing) {
            let rate = self.p.resync_rate.map_or("unlimited".to_string(), |r| format!("{} KiB/s", r / 1024));
            self.log(false, format!("{}: options adjusted (resync rate {rate})", self.p.resource));
        }
        // A raised rate takes effect now rather than at the next tick.
        self.pump_resync();
    }

    /// The options in force, for tests and status.
    pub fn live_options(&self) -> LiveOptions {
        LiveOptions::of(&self.p)
    }
}
