//! The checks: after every 10 ms step (1: one holder per group; 3: independence of an uncontested
//! admin command; 4 and 5 are checked where they happen, in `world.rs`: a second fence in one failure,
//! an acquisition at an epoch not above every earlier one) and at the end of a seed (2).

use super::world::{NAMES, World, other};
use clusterd::failover::{Handoff, Phase};

impl World {
    pub fn check_invariants(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        for g in 0..self.groups() {
            let mut warned_any = false;
            for i in 0..2 {
                let Some(st) = self.seq(i, g).map(|s| s.status()) else {
                    self.warned[g][i] = false;
                    continue;
                };
                let warned = st.split_brain_warning.is_some();
                if warned && !self.warned[g][i] {
                    self.stats.split_warnings += 1;
                }
                self.warned[g][i] = warned;
                warned_any |= warned;
                if self.nodes[i].primary[g] && !st.phase.active() {
                    return Err(format!("{} has group {g} Primary but its sequencer is {}", NAMES[i], st.phase.name()));
                }
            }
            // Check 1: never the group's volumes Primary on both nodes, except where the configuration
            // allows an unguarded takeover, and then a status must say so.
            if self.nodes[0].primary[g] && self.nodes[1].primary[g] && !(self.cfg.unguarded_split_allowed(g) && warned_any) {
                return Err(format!(
                    "check 1: group {} ({g}) Primary on both nodes (guard {:?}, unguarded split allowed {}, warning shown {warned_any})",
                    self.cfg.groups[g].name, self.cfg.guard, self.cfg.groups[g].allow_unguarded_split
                ));
            }
        }
        Ok(())
    }

    /// Every group is held by exactly one node and the other is idle, nothing is moving, and no group
    /// with auto-failback is about to move back (nor away from a holder without uplink): an admin
    /// command now is uncontested.
    pub fn steady(&self) -> bool {
        if !(0..2).all(|i| self.nodes[i].daemon.as_ref().is_some_and(|d| d.peer_alive)) {
            return false;
        }
        // A holder without uplink hands its groups to a peer that has one as soon as the peer can take.
        if self.cfg.guard.uses_ping() && !(self.nodes[0].uplink && self.nodes[1].uplink) {
            return false;
        }
        (0..self.groups()).all(|g| {
            let phases = [0, 1].map(|i| self.phase(i, g));
            let Some(h) = (0..2).find(|&i| phases[i] == Some(Phase::Holding)) else { return false };
            let quiet = (0..2).all(|i| {
                self.seq(i, g).is_some_and(|s| {
                    let st = s.status();
                    st.handoff == Handoff::None && st.split_brain_warning.is_none()
                })
            });
            let gc = &self.cfg.groups[g];
            let failback_due = gc.auto_failback && gc.preferred.is_some_and(|p| p != h);
            phases[other(h)] == Some(Phase::Idle) && quiet && !failback_due
        })
    }

    /// Accepted admin commands: their groups reach the target unless a fault intervened; an
    /// uncontested one moves no other group (check 3).
    pub fn check_expectations(&mut self) -> Result<(), String> {
        let mut keep = Vec::new();
        for mut e in std::mem::take(&mut self.expects) {
            if self.disturbances > e.disturbances {
                self.stats.handoffs_interrupted += 1;
                continue;
            }
            if let Some(others) = &e.others {
                for &(o, before) in others {
                    let now = self.active_on(o);
                    if now != before {
                        return Err(format!(
                            "check 3: {} of group(s) {:?} changed group {} ({o}): active on {before:?} before, {now:?} now, with no fault in between",
                            e.what, e.groups, self.cfg.groups[o].name
                        ));
                    }
                }
            }
            // A group counts once it got there (auto-failback may take it back before the others arrive).
            e.groups.retain(|&g| !self.holding(e.target, g));
            if e.groups.is_empty() {
                self.stats.handoffs += 1;
                self.stats.independence_checked += u64::from(e.others.is_some());
            } else if self.now >= e.deadline {
                return Err(format!("accepted {} left group(s) {:?} short of {}", e.what, e.groups, NAMES[e.target]));
            } else {
                keep.push(e);
            }
        }
        self.expects = keep;
        Ok(())
    }

    /// Check 2, after the faults stopped and the world settled: every group held by exactly one
    /// node (Primary there only), and a group with auto-failback on its preferred node.
    pub fn check_final(&mut self) -> Result<(), String> {
        if !(self.up(0) && self.up(1)) {
            return Err("a node is still down after the settle period".into());
        }
        for g in 0..self.groups() {
            let name = &self.cfg.groups[g].name;
            let holders: Vec<usize> = (0..2).filter(|&i| self.holding(i, g)).collect();
            let [h] = holders[..] else {
                let st: Vec<String> = (0..2).map(|i| format!("{}: {:?}", NAMES[i], self.seq(i, g).map(|s| s.status()))).collect();
                return Err(format!("check 2: group {name} has {} holders after the faults stopped; {}", holders.len(), st.join("; ")));
            };
            if self.phase(other(h), g) != Some(Phase::Idle) {
                return Err(format!("check 2: group {name} held by {} while {} is {:?}", NAMES[h], NAMES[other(h)], self.phase(other(h), g)));
            }
            if !self.nodes[h].primary[g] || self.nodes[other(h)].primary[g] {
                return Err(format!("check 2: group {name} held by {} but Primary on {:?}", NAMES[h], [0, 1].map(|i| self.nodes[i].primary[g])));
            }
            let gc = &self.cfg.groups[g];
            if gc.auto_failback
                && let Some(p) = gc.preferred
            {
                if h != p {
                    return Err(format!(
                        "check 2: group {name} has auto-failback to {} (alive) but is held by {}; {} is {:?}",
                        NAMES[p],
                        NAMES[h],
                        NAMES[p],
                        self.seq(p, g).map(|s| s.status())
                    ));
                }
                self.stats.failbacks_checked += 1;
            }
            self.stats.final_groups_checked += 1;
        }
        Ok(())
    }
}
