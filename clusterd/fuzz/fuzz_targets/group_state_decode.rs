//! Arbitrary bytes as a peer's `group_state` heartbeat field (issue 17: one state, or a set of
//! named states): splitting and decoding must return an error or values, never panic; a set that
//! splits must re-encode to the same bytes, and every state inside that decodes must re-encode to
//! its own bytes.
#![no_main]

use clusterd::failover::{PeerStates, decode_state, decode_state_set, encode_state, encode_state_set};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(peer) = decode_state_set(data) else { return };
    let states: Vec<&[u8]> = match &peer {
        PeerStates::Single(b) => vec![b.as_slice()],
        PeerStates::Set(v) => {
            assert_eq!(encode_state_set(v), data, "a set re-encodes to its bytes");
            v.iter().map(|(_, b)| b.as_slice()).collect()
        }
    };
    for bytes in states {
        if let Ok(st) = decode_state(bytes) {
            assert_eq!(encode_state(&st), bytes, "a state re-encodes to its bytes");
        }
    }
});
