//! What the schedule does to the world: link cuts one way and both ways (heartbeat links, the
//! replication link, both at once), flapping links, uplink loss, crashes; admin standby/takeover; and
//! the end of all faults.

use super::world::{Expect, Flap, NAMES, World, other};
use clusterd::failover::{AdminCmd, Input};

impl World {
    /// One random fault (most draws do nothing), called once a second in stormy windows.
    pub fn inject_faults(&mut self) {
        let r = self.rng.next() % 100;
        match r {
            0..=2 => {
                let link = self.rng.range(0, 2) as usize;
                let dir = self.rng.range(0, 2) as usize;
                self.hb.up[link][dir] = !self.hb.up[link][dir];
                self.note_fault(format!("heartbeat link {link} from {} up={}", NAMES[dir], self.hb.up[link][dir]));
            }
            3 => {
                let up = !(self.hb.up[0][0] && self.hb.up[0][1]);
                self.hb.up = [[up; 2]; 2];
                self.note_fault(format!("all heartbeat links up={up}"));
            }
            4..=5 => {
                let dir = self.rng.range(0, 2) as usize;
                let up = !self.store.repl.path[dir][other(dir)];
                self.store.repl.set_path(dir, up);
                self.note_fault(format!("replication from {} up={up}", NAMES[dir]));
            }
            6 => {
                let up = !(self.store.repl.path[0][1] && self.store.repl.path[1][0]);
                self.store.repl.set_path(0, up);
                self.store.repl.set_path(1, up);
                self.hb.up = [[up; 2]; 2];
                self.note_fault(format!("full partition up={up}"));
            }
            7 => {
                let i = self.rng.range(0, 2) as usize;
                self.nodes[i].uplink = !self.nodes[i].uplink;
                self.note_fault(format!("{} uplink={}", NAMES[i], self.nodes[i].uplink));
            }
            8 => {
                let i = self.rng.range(0, 2) as usize;
                self.crash(i, "injected");
            }
            9 if self.flap.is_none() => {
                let what = if self.rng.chance(0.5) { Flap::Replication } else { Flap::Heartbeat(self.rng.range(0, 2) as usize) };
                let until = self.now + self.rng.range(2000, 6000);
                self.flap = Some((what, until));
                self.stats.flaps += 1;
                self.note_fault(format!("{what:?} starts flapping until {until}"));
            }
            _ => {}
        }
    }

    /// A flapping link goes down and up every few hundred ms (both directions), up again at the end.
    pub fn flapping(&mut self) {
        let Some((what, until)) = self.flap else { return };
        let end = self.now >= until;
        if !end && (!self.now.is_multiple_of(150) || !self.rng.chance(0.5)) {
            return;
        }
        match what {
            Flap::Heartbeat(link) => {
                let up = end || !self.hb.up[link][0];
                self.hb.up[link] = [up; 2];
            }
            Flap::Replication => {
                let up = end || !self.store.repl.path[0][1];
                self.store.repl.set_path(0, up);
                self.store.repl.set_path(1, up);
            }
        }
        if end {
            self.flap = None;
            self.log(format!("{what:?} stops flapping (up)"));
        }
    }

    fn note_fault(&mut self, what: String) {
        self.stats.partitions += 1;
        self.disturbances += 1;
        self.log(format!("FAULT {what}"));
    }

    pub fn admin(&mut self) {
        let i = self.rng.range(0, 2) as usize;
        let input = if self.rng.chance(0.5) { Input::Standby } else { Input::Takeover };
        self.log(format!("ADMIN {} {input:?}", NAMES[i]));
        for (cmd, result) in self.feed(i, input) {
            match result {
                Err(reason) => {
                    assert!(!reason.is_empty(), "a refusal must give a reason");
                    self.stats.refusals += 1;
                    self.log(format!("{} {cmd:?} refused: {reason}", NAMES[i]));
                }
                Ok(()) => {
                    self.disturbances += 1;
                    let target = if cmd == AdminCmd::Standby { other(i) } else { i };
                    let what = if cmd == AdminCmd::Standby { "standby" } else { "takeover" };
                    self.expects.push(Expect { target, deadline: self.now + 40_000, disturbances: self.disturbances, what });
                }
            }
        }
    }

    /// Faults stop: every link and node comes back, nothing fails any more.
    pub fn heal(&mut self) {
        self.faults_on = false;
        self.flap = None;
        self.hb.heal();
        self.store.repl.set_path(0, true);
        self.store.repl.set_path(1, true);
        for i in 0..2 {
            self.nodes[i].uplink = true;
            if !self.nodes[i].up {
                self.nodes[i].restart_at = Some(self.now + 10);
            }
        }
        self.log("HEAL: faults stop".into());
    }
}
