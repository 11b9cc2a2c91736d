//! Two simulated heartbeat links between the nodes. Every packet is a real datagram: built by the real
//! codec (`encode_packet`, HMAC with a shared key), checked by `decode_packet` on arrival and fed to the
//! receiver's real `Membership` core, exactly as the heartbeat service does. The links lose, delay
//! (spikes reorder), duplicate and now and then corrupt datagrams, and each direction of each link can
//! be cut on its own.

use super::world::Rng;
use clusterd::heartbeat::{
    AuthKeys, Heartbeat, MembershipInput, MembershipParams, RejectReason, decode_packet, encode_packet,
};
use std::time::{Duration, Instant};

pub const LINKS: [&str; 2] = ["hb0", "hb1"];
pub const CLUSTER: &str = "sim";
pub const KEEPALIVE_MS: u64 = 500;
const KEY_ID: u8 = 1;
const KEY: &[u8] = b"failover-sim-heartbeat-key";

/// The membership timers of every simulated node (deadtime 3 s, initdead 6 s).
pub fn membership_params() -> MembershipParams {
    let p = MembershipParams {
        keepalive: Duration::from_millis(KEEPALIVE_MS),
        warntime: Duration::from_millis(1500),
        deadtime: Duration::from_millis(3000),
        initdead: Duration::from_millis(6000),
        links: LINKS.iter().map(|l| l.to_string()).collect(),
    };
    assert!(p.validate().is_ok(), "the simulation's membership timers must be valid");
    p
}

/// Fault knobs drawn per seed.
#[derive(Debug, Clone, Copy)]
pub struct LinkFaults {
    pub loss: f64,
    pub dup: f64,
    pub spike: f64,
    pub corrupt: f64,
}

struct Datagram {
    at: u64,
    to: usize,
    link: usize,
    bytes: Vec<u8>,
}

pub struct HeartbeatNet {
    /// `up[link][from]`: link `link` carries datagrams sent by node `from`.
    pub up: [[bool; 2]; 2],
    pub faults: LinkFaults,
    in_flight: Vec<Datagram>,
    keys: AuthKeys,
    pub rejected: u64,
}

impl HeartbeatNet {
    pub fn new(faults: LinkFaults) -> HeartbeatNet {
        let keys = AuthKeys::from_keys(KEY_ID, [(KEY_ID, KEY.to_vec())]).expect("a valid simulation key");
        HeartbeatNet { up: [[true; 2]; 2], faults, in_flight: Vec::new(), keys, rejected: 0 }
    }

    /// Node `from` sends its keepalive on every link (one datagram per link, as the service does).
    #[allow(clippy::too_many_arguments)]
    pub fn send(&mut self, rng: &mut Rng, now: u64, from: usize, names: [&str; 2], generation: u64, seq: u64, state: &[u8]) {
        for link in 0..2 {
            if !self.up[link][from] || rng.chance(self.faults.loss) {
                continue;
            }
            let hb = Heartbeat {
                cluster: CLUSTER.into(),
                node: names[from].into(),
                generation,
                seq,
                link: LINKS[link].into(),
                sent_unix_ms: now,
                group_state: state.to_vec(),
                ..Heartbeat::default()
            };
            let Ok(mut bytes) = encode_packet(&hb, KEY_ID, KEY) else { continue };
            if rng.chance(self.faults.corrupt) {
                let k = rng.range(0, bytes.len() as u64) as usize;
                if let Some(b) = bytes.get_mut(k) {
                    *b ^= 0x5A;
                }
            }
            let copies = if rng.chance(self.faults.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = if rng.chance(self.faults.spike) { rng.range(200, 2500) } else { rng.range(1, 30) };
                self.in_flight.push(Datagram { at: now + delay, to: 1 - from, link, bytes: bytes.clone() });
            }
        }
    }

    /// Datagrams arriving by `now`, decoded by the real codec into membership inputs.
    pub fn deliver(&mut self, now: u64, at: Instant) -> Vec<(usize, MembershipInput)> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for d in std::mem::take(&mut self.in_flight) {
            if d.at > now {
                rest.push(d);
                continue;
            }
            let link = LINKS[d.link].to_string();
            let input = match decode_packet(&d.bytes, &self.keys) {
                Ok(from) => MembershipInput::Packet { link, from, at },
                Err(e) => {
                    self.rejected += 1;
                    MembershipInput::Rejected { link, reason: RejectReason::from_packet_error(&e), at }
                }
            };
            out.push((d.to, input));
        }
        self.in_flight = rest;
        out
    }

    /// Faults stop: links up, no more loss, spikes or corruption (duplicates stay: they are harmless).
    pub fn heal(&mut self) {
        self.up = [[true; 2]; 2];
        self.faults.loss = 0.0;
        self.faults.spike = 0.0;
        self.faults.corrupt = 0.0;
    }
}
