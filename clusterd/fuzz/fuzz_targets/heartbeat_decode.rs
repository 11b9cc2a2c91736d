//! Arbitrary bytes as a heartbeat datagram: decoding must return an error or a heartbeat, never
//! panic. Because the MAC makes random inputs almost always fail early, the input is also tried as
//! a BODY inside a correctly signed envelope, so the protobuf decoder behind the MAC is reached;
//! every body that decodes must re-encode into a packet that decodes to the same heartbeat.
#![no_main]

use clusterd::heartbeat::packet::{FORMAT_VERSION, MAGIC};
use clusterd::heartbeat::{AuthKeys, decode_packet, encode_packet};
use hmac::{Hmac, KeyInit, Mac};

const KEY: &[u8] = b"fuzz key";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(keys) = AuthKeys::from_keys(1, [(1, KEY.to_vec()), (2, b"other".to_vec())]) else {
        return;
    };
    let _ = decode_packet(data, &keys);

    let Ok(len) = u16::try_from(data.len()) else { return };
    let mut wire = MAGIC.to_vec();
    wire.push(FORMAT_VERSION);
    wire.push(1);
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(data);
    let Ok(mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(KEY) else {
        return;
    };
    let tag = mac.chain_update(&wire).finalize().into_bytes();
    wire.extend_from_slice(&tag);
    if let Ok(hb) = decode_packet(&wire, &keys) {
        let again = encode_packet(&hb, 1, KEY).expect("a decoded body fits the length field again");
        let back = decode_packet(&again, &keys).expect("re-encoded packet decodes");
        assert_eq!(back, hb);
    }
});
