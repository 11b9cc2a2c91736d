//! The group state each node publishes in its heartbeats, and its versioned binary encoding.
//! Decoding never panics: the bytes come from the network.

use super::DiskView;

/// Where a node is in the group's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not holding; nothing running.
    Idle,
    /// Waiting for the peer to acknowledge our claim before starting.
    Claiming,
    Starting,
    Holding,
    Stopping,
    /// A stop failed and escalation (self-fence) was requested; this node must not be trusted to hold.
    Failed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Claiming => "claiming",
            Phase::Starting => "starting",
            Phase::Holding => "holding",
            Phase::Stopping => "stopping",
            Phase::Failed => "failed",
        }
    }

    /// Resources may be (partly) active on a node in this phase.
    pub fn active(self) -> bool {
        matches!(self, Phase::Starting | Phase::Holding | Phase::Stopping | Phase::Failed)
    }
}

/// The handoff message a node publishes (standby, takeover, auto-failback).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Handoff {
    None,
    /// "Please release the group you hold at `epoch` to me."
    PleaseRelease { epoch: u64 },
    /// "I am stopping the group I held at `epoch` for `to`."
    Releasing { to: String, epoch: u64 },
    /// "I fully stopped the group I held at `epoch`; `to` may start it at `epoch + 1`."
    ReleasedTo { to: String, epoch: u64 },
}

/// What one node tells the other in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupState {
    pub node: String,
    /// The sender's daemon generation: states from an older generation are stale.
    pub generation: u64,
    /// Bumped on every change within a generation: a reordered older packet is ignored.
    pub seq: u64,
    pub phase: Phase,
    /// The epoch this node holds at (when active) or the highest epoch it knows of.
    pub epoch: u64,
    pub disk: DiskView,
    /// This node could take the group now (disk good enough, no failure backoff, not failed).
    pub can_take: bool,
    /// This node currently hears the peer's heartbeats (a one-way link shows up as `false` on one side).
    pub hears_peer: bool,
    /// A ping node answers from this node (`None` = no ping nodes configured/known yet).
    pub uplink: Option<bool>,
    /// This node asks to acquire the group at this epoch.
    pub claim: Option<u64>,
    /// This node acknowledges the peer's claim at this epoch and will not start meanwhile.
    pub ack: Option<u64>,
    pub handoff: Handoff,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("group state truncated")]
    Truncated,
    #[error("unsupported group state version {0}")]
    Version(u8),
    #[error("bad {field} tag {tag}")]
    Tag { field: &'static str, tag: u8 },
    #[error("node name is not UTF-8")]
    Utf8,
    #[error("{0} trailing bytes after the group state")]
    Trailing(usize),
}

const VERSION: u8 = 1;

fn phase_tag(p: Phase) -> u8 {
    match p {
        Phase::Idle => 0,
        Phase::Claiming => 1,
        Phase::Starting => 2,
        Phase::Holding => 3,
        Phase::Stopping => 4,
        Phase::Failed => 5,
    }
}

fn disk_tag(d: DiskView) -> u8 {
    match d {
        DiskView::UpToDate => 0,
        DiskView::Consistent => 1,
        DiskView::Outdated => 2,
        DiskView::Inconsistent => 3,
        DiskView::Diskless => 4,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        // Node names are short (config-validated); clamp rather than panic on absurd input.
        let bytes = s.as_bytes();
        let len = bytes.len().min(u16::MAX as usize);
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(bytes.get(..len).unwrap_or_default());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
        }
    }
}

/// Encodes `state` (version 1). Pure.
pub fn encode_state(state: &GroupState) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(VERSION);
    w.str(&state.node);
    w.u64(state.generation);
    w.u64(state.seq);
    w.u8(phase_tag(state.phase));
    w.u64(state.epoch);
    w.u8(disk_tag(state.disk));
    w.u8(u8::from(state.can_take));
    w.u8(u8::from(state.hears_peer));
    w.u8(match state.uplink {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    w.opt_u64(state.claim);
    w.opt_u64(state.ack);
    match &state.handoff {
        Handoff::None => w.u8(0),
        Handoff::PleaseRelease { epoch } => {
            w.u8(1);
            w.u64(*epoch);
        }
        Handoff::Releasing { to, epoch } => {
            w.u8(2);
            w.str(to);
            w.u64(*epoch);
        }
        Handoff::ReleasedTo { to, epoch } => {
            w.u8(3);
            w.str(to);
            w.u64(*epoch);
        }
    }
    w.0
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StateError> {
        self.take(1)?.first().copied().ok_or(StateError::Truncated)
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| StateError::Truncated)?;
        Ok(u64::from_be_bytes(b))
    }
    fn str(&mut self) -> Result<String, StateError> {
        let b: [u8; 2] = self.take(2)?.try_into().map_err(|_| StateError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(b));
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| StateError::Utf8)
    }
    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, StateError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            tag => Err(StateError::Tag { field, tag }),
        }
    }
}

/// Decodes bytes from [`encode_state`]. Pure; rejects unknown versions, tags and trailing bytes.
pub fn decode_state(bytes: &[u8]) -> Result<GroupState, StateError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let node = r.str()?;
    let generation = r.u64()?;
    let seq = r.u64()?;
    let phase = match r.u8()? {
        0 => Phase::Idle,
        1 => Phase::Claiming,
        2 => Phase::Starting,
        3 => Phase::Holding,
        4 => Phase::Stopping,
        5 => Phase::Failed,
        tag => return Err(StateError::Tag { field: "phase", tag }),
    };
    let epoch = r.u64()?;
    let disk = match r.u8()? {
        0 => DiskView::UpToDate,
        1 => DiskView::Consistent,
        2 => DiskView::Outdated,
        3 => DiskView::Inconsistent,
        4 => DiskView::Diskless,
        tag => return Err(StateError::Tag { field: "disk", tag }),
    };
    let can_take = match r.u8()? {
        0 => false,
        1 => true,
        tag => return Err(StateError::Tag { field: "can_take", tag }),
    };
    let hears_peer = match r.u8()? {
        0 => false,
        1 => true,
        tag => return Err(StateError::Tag { field: "hears_peer", tag }),
    };
    let uplink = match r.u8()? {
        0 => None,
        1 => Some(false),
        2 => Some(true),
        tag => return Err(StateError::Tag { field: "uplink", tag }),
    };
    let claim = r.opt_u64("claim")?;
    let ack = r.opt_u64("ack")?;
    let handoff = match r.u8()? {
        0 => Handoff::None,
        1 => Handoff::PleaseRelease { epoch: r.u64()? },
        2 => {
            let to = r.str()?;
            Handoff::Releasing { to, epoch: r.u64()? }
        }
        3 => {
            let to = r.str()?;
            Handoff::ReleasedTo { to, epoch: r.u64()? }
        }
        tag => return Err(StateError::Tag { field: "handoff", tag }),
    };
    if !r.0.is_empty() {
        return Err(StateError::Trailing(r.0.len()));
    }
    Ok(GroupState { node, generation, seq, phase, epoch, disk, can_take, hears_peer, uplink, claim, ack, handoff })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(handoff: Handoff) -> GroupState {
        GroupState {
            node: "alpha".into(),
            generation: 7,
            seq: 42,
            phase: Phase::Holding,
            epoch: 9,
            disk: DiskView::Consistent,
            can_take: true,
            hears_peer: true,
            uplink: Some(false),
            claim: Some(10),
            ack: None,
            handoff,
        }
    }

    #[test]
    fn round_trips_every_handoff() {
        for h in [
            Handoff::None,
            Handoff::PleaseRelease { epoch: 3 },
            Handoff::Releasing { to: "beta".into(), epoch: 4 },
            Handoff::ReleasedTo { to: "beta".into(), epoch: 5 },
        ] {
            let s = sample(h);
            assert_eq!(decode_state(&encode_state(&s)), Ok(s));
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_state(&sample(Handoff::ReleasedTo { to: "beta".into(), epoch: 5 }));
        for n in 0..bytes.len() {
            assert!(decode_state(bytes.get(..n).unwrap_or_default()).is_err(), "prefix {n} decoded");
        }
    }

    #[test]
    fn rejects_version_tags_and_trailing_bytes() {
        let mut bytes = encode_state(&sample(Handoff::None));
        bytes.push(0);
        assert_eq!(decode_state(&bytes), Err(StateError::Trailing(1)));
        bytes.pop();
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(decode_state(&v2), Err(StateError::Version(2)));
        // phase tag sits after version(1) + name(2+5) + generation(8) + seq(8).
        let mut bad = bytes.clone();
        bad[24] = 9;
        assert_eq!(decode_state(&bad), Err(StateError::Tag { field: "phase", tag: 9 }));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            let _ = decode_state(&bytes);
        }
    }
}
