//! Several failover groups' states in the one `group_state` field of a heartbeat (issue 17).
//!
//! Each group has its own sequencer and so its own [`GroupState`](super::GroupState) bytes; the
//! heartbeat carries them all, keyed by group name. A node whose configuration has a single `group:`
//! section publishes its one state exactly as before (first byte 1, [`super::encode_state`]), so an
//! older peer keeps understanding it; a `groups:` configuration publishes a set:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | [`SET_VERSION`] (2; a single state starts with 1) |
//! | 1 | count N (at most [`MAX_GROUPS`]) |
//! | N × (2 + name + 2 + state) | group name (u16 length, UTF-8), state bytes (u16 length) |
//!
//! Pure: no I/O. The receiver takes a single state as the state of its first group.

use super::state::StateError;

/// First byte of a group-state set.
pub const SET_VERSION: u8 = 2;
/// The most groups one heartbeat carries (a heartbeat body is at most 64 KiB; a state is ~60 bytes).
pub const MAX_GROUPS: usize = 64;

/// One group's name and its encoded state.
pub type NamedState = (String, Vec<u8>);

/// Encodes the states of several groups. Names longer than 255 bytes or more than [`MAX_GROUPS`]
/// groups are a configuration error caught at load time; here they are clamped, never a panic.
pub fn encode_state_set(states: &[NamedState]) -> Vec<u8> {
    let states = states.get(..states.len().min(MAX_GROUPS)).unwrap_or_default();
    let mut out = Vec::with_capacity(2 + states.iter().map(|(n, s)| 4 + n.len() + s.len()).sum::<usize>());
    out.push(SET_VERSION);
    out.push(states.len() as u8);
    for (name, state) in states {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, state);
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(b.get(..len).unwrap_or_default());
}

/// What a peer's `group_state` field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerStates {
    /// One state of a single-group configuration (or an older release).
    Single(Vec<u8>),
    /// A state per named group.
    Set(Vec<NamedState>),
}

impl PeerStates {
    /// The state bytes meant for group `name`; `first` says whether `name` is this node's first
    /// group, which is where a single state goes.
    pub fn for_group(&self, name: &str, first: bool) -> Option<&[u8]> {
        match self {
            PeerStates::Single(b) => first.then_some(b.as_slice()),
            PeerStates::Set(v) => v.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice()),
        }
    }
}

/// Splits a peer's `group_state` field. Rejects truncation, trailing bytes, duplicate names and
/// unknown versions; the states inside are decoded by [`super::decode_state`] per group.
pub fn decode_state_set(bytes: &[u8]) -> Result<PeerStates, StateError> {
    match bytes.first() {
        None => Err(StateError::Truncated),
        Some(1) => Ok(PeerStates::Single(bytes.to_vec())),
        Some(&SET_VERSION) => {
            let mut rest = bytes.get(1..).unwrap_or_default();
            let count = usize::from(*rest.first().ok_or(StateError::Truncated)?);
            rest = rest.get(1..).unwrap_or_default();
            let mut out: Vec<NamedState> = Vec::with_capacity(count);
            for _ in 0..count {
                let name = take(&mut rest)?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| StateError::Utf8)?;
                let state = take(&mut rest)?.to_vec();
                if out.iter().any(|(n, _)| *n == name) {
                    return Err(StateError::Tag { field: "group name (listed twice)", tag: 0 });
                }
                out.push((name, state));
            }
            if !rest.is_empty() {
                return Err(StateError::Trailing(rest.len()));
            }
            Ok(PeerStates::Set(out))
        }
        Some(v) => Err(StateError::Version(*v)),
    }
}

fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], StateError> {
    let len_bytes: [u8; 2] = rest.get(..2).ok_or(StateError::Truncated)?.try_into().map_err(|_| StateError::Truncated)?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let body = rest.get(2..2 + len).ok_or(StateError::Truncated)?;
    *rest = rest.get(2 + len..).unwrap_or_default();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::{DiskView, GroupState, Handoff, Phase, decode_state, encode_state};
    use proptest::prelude::*;

    fn state(node: &str, epoch: u64) -> Vec<u8> {
        encode_state(&GroupState {
            node: node.into(),
            generation: 3,
            seq: 9,
            phase: Phase::Holding,
            epoch,
            disk: DiskView::UpToDate,
            can_take: true,
            hears_peer: true,
            uplink: None,
            claim: None,
            ack: Some(epoch),
            handoff: Handoff::None,
        })
    }

    #[test]
    fn a_set_round_trips_and_each_state_decodes() {
        let set = vec![("web".to_string(), state("node1", 4)), ("db".to_string(), state("node2", 7))];
        let bytes = encode_state_set(&set);
        let PeerStates::Set(back) = decode_state_set(&bytes).unwrap() else { panic!("not a set") };
        assert_eq!(back, set);
        let peer = PeerStates::Set(back);
        assert_eq!(decode_state(peer.for_group("db", false).unwrap()).unwrap().epoch, 7);
        assert!(peer.for_group("other", true).is_none());
    }

    #[test]
    fn a_single_state_goes_to_the_first_group_only() {
        let one = state("node1", 2);
        let peer = decode_state_set(&one).unwrap();
        assert_eq!(peer, PeerStates::Single(one.clone()));
        assert_eq!(peer.for_group("default", true), Some(one.as_slice()));
        assert_eq!(peer.for_group("db", false), None);
    }

    #[test]
    fn damage_is_refused() {
        let bytes = encode_state_set(&[("web".to_string(), state("node1", 4))]);
        for cut in 1..bytes.len() {
            assert!(decode_state_set(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode_state_set(&extra), Err(StateError::Trailing(1)));
        assert_eq!(decode_state_set(&[7]), Err(StateError::Version(7)));
        assert_eq!(decode_state_set(&[]), Err(StateError::Truncated));
        let twice = encode_state_set(&[("a".into(), vec![1]), ("a".into(), vec![1])]);
        assert!(decode_state_set(&twice).is_err());
    }

    proptest! {
        #[test]
        fn any_set_round_trips(set in proptest::collection::btree_map("[a-z]{1,12}", proptest::collection::vec(any::<u8>(), 0..80), 0..8)) {
            let set: Vec<NamedState> = set.into_iter().collect();
            prop_assert_eq!(decode_state_set(&encode_state_set(&set)), Ok(PeerStates::Set(set)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_state_set(&bytes);
        }
    }
}
