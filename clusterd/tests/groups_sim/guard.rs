//! The node-wide guard, restated from `daemon/cluster.rs` (`SharedGuard`, `Driver::guard`,
//! `guard_done`, `peer_liveness`, `run_guard`): one run per peer failure whatever the number of groups
//! asking, its answer to every waiting group, a confirmation made while the peer is silent answering
//! later requests until the peer is heard again. Modelled: ping = the node's uplink flag, fence = crash
//! the peer (failing at the seed's rate). Check 4 (one fence per failure episode) is counted here.

use super::world::{NAMES, World, other};
use clusterd::failover::{GuardKind, Input};

/// The node-wide guard (`cluster.rs` `SharedGuard`).
#[derive(Default)]
pub struct SharedGuard {
    /// The running guard answers at this time.
    pub running_until: Option<u64>,
    /// The failure episode (`Daemon::episode`) in which the running guard started.
    pub started_in: u64,
    pub waiters: Vec<usize>,
    pub confirmed: Option<String>,
    /// Groups given the current confirmation (waiters of the confirming run plus cached answers).
    pub confirmed_for: Vec<usize>,
}

impl World {
    /// `Driver::guard`: answered from this failure's confirmation, joined to the running guard, or a
    /// new run.
    pub fn guard(&mut self, i: usize, g: usize) {
        let latency = self.rng.range(100, 1500);
        let Some(d) = self.nodes[i].daemon.as_mut() else { return };
        if let Some(detail) = d.guard.confirmed.clone() {
            if !d.guard.confirmed_for.contains(&g) {
                d.guard.confirmed_for.push(g);
            }
            self.stats.guard_cached += 1;
            self.log(format!("{} [{}] guard answered from this failure's confirmation", NAMES[i], self.cfg.groups[g].name));
            self.feed(i, g, Input::GuardResult { ok: true, detail: format!("{detail} (confirmed for another group in this failure)") });
            return;
        }
        if !d.guard.waiters.contains(&g) {
            d.guard.waiters.push(g);
        }
        if d.guard.running_until.is_some() {
            self.stats.guard_joined += 1;
            return;
        }
        d.guard.running_until = Some(self.now + latency);
        d.guard.started_in = d.episode;
        self.stats.guard_runs += 1;
        self.log(format!("{} runs the guard for group {} (answer in {latency} ms)", NAMES[i], self.cfg.groups[g].name));
    }

    /// Finishes due guards (`run_guard` then `Driver::guard_done`).
    pub fn run_guards(&mut self) {
        for i in 0..2 {
            let due = self.nodes[i].daemon.as_ref().and_then(|d| d.guard.running_until).is_some_and(|t| t <= self.now);
            if !due {
                continue;
            }
            let uplink = self.nodes[i].uplink;
            let (ok, detail) = match self.cfg.guard {
                GuardKind::PingNodes => (uplink, format!("ping nodes {}", if uplink { "reachable" } else { "unreachable" })),
                GuardKind::Both if !uplink => (false, "ping nodes unreachable".to_string()),
                GuardKind::FenceCommand | GuardKind::Both => self.fence(i),
                GuardKind::None => (false, "no guard configured".to_string()),
            };
            self.guard_done(i, ok, detail);
        }
    }

    /// The fence command: powers the peer off (a crash), or fails.
    fn fence(&mut self, i: usize) -> (bool, String) {
        if self.rng.chance(self.cfg.fence_fail) {
            self.stats.fence_failures += 1;
            self.log(format!("{} fence of {} FAILED (device timeout)", NAMES[i], NAMES[other(i)]));
            return (false, "fence device timed out".into());
        }
        self.stats.fences += 1;
        self.log(format!("{} FENCES {}", NAMES[i], NAMES[other(i)]));
        self.crash(other(i), "fenced");
        let Some(d) = self.nodes[i].daemon.as_mut() else { return (true, "peer powered off".into()) };
        if d.guard.started_in != d.episode || d.peer_alive {
            // `run_guard` re-checks the peer only after a resource-and-stonith delay: a fence under
            // way when the peer is heard again still lands.
            self.stats.stale_fences += 1;
            self.log(format!("{} fenced {} although it was heard again since the guard started", NAMES[i], NAMES[other(i)]));
        } else {
            d.fences_this_episode += 1;
            if d.fences_this_episode > 1 && self.violation.is_none() {
                self.violation = Some(format!(
                    "check 4: {} fenced {} {} times in one failure (declared dead once, not heard since)",
                    NAMES[i],
                    NAMES[other(i)],
                    d.fences_this_episode
                ));
            }
        }
        (true, "peer powered off".into())
    }

    fn guard_done(&mut self, i: usize, ok: bool, detail: String) {
        let Some(d) = self.nodes[i].daemon.as_mut() else { return };
        d.guard.running_until = None;
        let waiters = std::mem::take(&mut d.guard.waiters);
        if ok && !d.peer_alive {
            d.guard.confirmed = Some(detail.clone());
            d.guard.confirmed_for.clone_from(&waiters);
        }
        if waiters.len() >= 2 {
            self.stats.guard_runs_shared += 1;
        }
        self.log(format!("{} guard done: ok={ok} ({detail}) for groups {waiters:?}", NAMES[i]));
        for g in waiters {
            self.feed(i, g, Input::GuardResult { ok, detail: detail.clone() });
        }
    }

    /// `Driver::peer_liveness`: heard again = a new failure needs a new guard (and check 4's episode ends).
    pub fn peer_liveness(&mut self, i: usize, alive: bool) {
        let Some(d) = self.nodes[i].daemon.as_mut() else { return };
        if alive {
            if d.fences_this_episode > 0 && d.guard.confirmed_for.len() >= 2 {
                self.stats.multi_group_fence_episodes += 1;
            }
            d.guard.confirmed = None;
            d.guard.confirmed_for.clear();
        } else if d.peer_alive {
            d.episode += 1;
            d.fences_this_episode = 0;
        }
        d.peer_alive = alive;
    }
}
