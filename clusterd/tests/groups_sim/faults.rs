//! What the schedule does to the world: heartbeat links cut one way or both ways, the replication
//! network or one group's replication link cut, full partitions, uplink loss, crashes and clean daemon
//! restarts; admin standby/takeover of one group or `all`; and the end of all faults.

use super::world::{Expect, NAMES, World, other};
use clusterd::failover::{AdminCmd, Input};

impl World {
    /// One random fault (most draws do nothing), called once a second in stormy windows.
    pub fn inject_faults(&mut self) {
        match self.rng.next() % 100 {
            0..=2 => {
                let link = self.rng.range(0, 2) as usize;
                let from = self.rng.range(0, 2) as usize;
                self.hb.up[link][from] = !self.hb.up[link][from];
                self.note_fault(format!("heartbeat link {link} from {} up={}", NAMES[from], self.hb.up[link][from]));
            }
            3 => {
                let up = !(self.hb.up[0][0] && self.hb.up[0][1]);
                self.hb.up = [[up; 2]; 2];
                self.note_fault(format!("all heartbeat links up={up}"));
            }
            4..=5 => {
                self.repl_cut = !self.repl_cut;
                self.note_fault(format!("replication network cut={}", self.repl_cut));
            }
            6..=7 => {
                let g = self.rng.range(0, self.groups() as u64) as usize;
                self.group_cut[g] = !self.group_cut[g];
                self.note_fault(format!("replication of group {} cut={}", self.cfg.groups[g].name, self.group_cut[g]));
            }
            8 => {
                let up = self.repl_cut || !(self.hb.up[0][0] && self.hb.up[0][1]);
                self.repl_cut = !up;
                self.hb.up = [[up; 2]; 2];
                self.note_fault(format!("full partition up={up}"));
            }
            9 => {
                let i = self.rng.range(0, 2) as usize;
                self.nodes[i].uplink = !self.nodes[i].uplink;
                self.note_fault(format!("{} uplink={}", NAMES[i], self.nodes[i].uplink));
            }
            10 => {
                let i = self.rng.range(0, 2) as usize;
                self.crash(i, "injected");
            }
            11 => {
                let i = self.rng.range(0, 2) as usize;
                self.clean_restart(i);
            }
            _ => {}
        }
    }

    fn note_fault(&mut self, what: String) {
        self.stats.faults += 1;
        self.disturbances += 1;
        self.log(format!("FAULT {what}"));
    }

    /// `haadm standby|takeover GROUP|all` on a random node, dispatched as `ClusterHandle::admin` does:
    /// `all` = for standby the groups active here, for takeover the groups not active here.
    pub fn admin(&mut self) {
        let i = self.rng.range(0, 2) as usize;
        if !self.up(i) {
            return;
        }
        let cmd = if self.rng.chance(0.5) { AdminCmd::Standby } else { AdminCmd::Takeover };
        let all = self.rng.chance(0.25);
        let picked: Vec<usize> = if all {
            (0..self.groups())
                .filter(|&g| {
                    let active = self.phase(i, g).is_some_and(|p| p.active());
                    match cmd {
                        AdminCmd::Standby => active,
                        AdminCmd::Takeover => !active,
                    }
                })
                .collect()
        } else {
            vec![self.rng.range(0, self.groups() as u64) as usize]
        };
        let what = format!("{} {cmd:?} {}", NAMES[i], if all { "all".to_string() } else { format!("{picked:?}") });
        if picked.is_empty() {
            self.stats.refusals += 1;
            self.log(format!("ADMIN {what}: refused before reaching a group (nothing applies)"));
            return;
        }
        let steady = self.steady();
        self.log(format!("ADMIN {what} (steady={steady})"));
        let mut accepted = Vec::new();
        for g in picked {
            let input = if cmd == AdminCmd::Standby { Input::Standby } else { Input::Takeover };
            for (c, result) in self.feed(i, g, input) {
                match result {
                    Err(reason) => {
                        assert!(!reason.is_empty(), "a refusal must give a reason");
                        self.stats.refusals += 1;
                        self.log(format!("{} {c:?} of group {} refused: {reason}", NAMES[i], self.cfg.groups[g].name));
                    }
                    Ok(()) => accepted.push(g),
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        // Earlier expectations are contested from here on.
        self.disturbances += 1;
        let others = steady.then(|| (0..self.groups()).filter(|g| !accepted.contains(g)).map(|g| (g, self.active_on(g))).collect());
        let target = if cmd == AdminCmd::Standby { other(i) } else { i };
        self.expects.push(Expect { groups: accepted, target, others, deadline: self.now + 45_000, disturbances: self.disturbances, what });
    }

    /// Faults stop: every link and node comes back, steps and fences no longer fail.
    pub fn heal(&mut self) {
        self.faults_on = false;
        self.hb.heal();
        self.repl_cut = false;
        self.group_cut.iter_mut().for_each(|c| *c = false);
        self.cfg.fence_fail = 0.0;
        for i in 0..2 {
            self.nodes[i].uplink = true;
            if !self.up(i) {
                self.nodes[i].restart_at = Some(self.now + 10);
            }
        }
        self.log("HEAL: faults stop".into());
    }
}
