//! Arbitrary bytes as a stored persistent reservation blob: decoding never panics, and whatever it
//! accepts is a valid state that encodes again and reads back the same. With the first byte odd the
//! rest is signed with a correct CRC first, so the fuzzer explores the layout behind the checksum.
#![no_main]

use iscsi_target::scsi::{decode_pr_state, encode_pr_state};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut signed = rest.to_vec();
        signed.extend_from_slice(&crc32c::crc32c(rest).to_be_bytes());
        signed
    };
    if let Ok(state) = decode_pr_state(&blob) {
        let again = encode_pr_state(&state).expect("a decoded state encodes");
        assert_eq!(decode_pr_state(&again).expect("and decodes again"), state);
    }
});
