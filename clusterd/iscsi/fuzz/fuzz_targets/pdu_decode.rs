//! Arbitrary bytes through the PDU framing/decoder with every digest setting: must never panic, and
//! every decoded PDU must re-encode to a frame that decodes to the same PDU.
#![no_main]

use bytes::BytesMut;
use iscsi_target::pdu::{DigestConfig, decode_frame, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let digests = DigestConfig {
        header: flags & 1 != 0,
        data: flags & 2 != 0,
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(frame)) = decode_frame(&mut buf, digests, 1 << 16) {
        let out = encode(&frame.pdu, frame.data.clone(), digests).expect("re-encode");
        let mut again = BytesMut::from(&out.to_vec()[..]);
        let back = decode_frame(&mut again, digests, 1 << 16)
            .expect("decode")
            .expect("whole frame");
        assert_eq!(back.pdu, frame.pdu);
        assert_eq!(back.data, frame.data);
    }
});
