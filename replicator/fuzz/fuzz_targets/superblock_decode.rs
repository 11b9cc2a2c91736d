//! Arbitrary bytes as superblock slots: decoding and slot selection must return errors, never panic,
//! and whatever decodes must re-encode to a block that decodes to the same superblock.
#![no_main]

use replicator::meta::superblock::{pick_newest, Superblock};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        assert_eq!(Superblock::decode(&sb.encode()).ok(), Some(sb));
    }
    let mid = data.len() / 2;
    let (a, b) = data.split_at(mid);
    if let Ok((sb, report)) = pick_newest(a, b) {
        assert!(report.newest <= 1);
        let _ = sb.encode();
    }
});
