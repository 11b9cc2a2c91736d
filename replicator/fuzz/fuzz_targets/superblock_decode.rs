//! Superblock slots from arbitrary bytes: decoding and slot selection must return errors, never panic,
//! and whatever decodes must re-encode to a block that decodes to the same superblock.
//!
//! Random bytes almost never carry the magic and a matching CRC32C, so on their own they only reach the
//! first checks. The first byte's low bit picks a second mode in which the harness *signs* what it is
//! given (magic, version 1 unless the next bit says keep the fuzzed one, CRC32C over the block with the
//! crc field as zero, as `Superblock::encode` does): the field checks behind the checksum — insane sizes,
//! flags, names, the PR area — are then explored too.
#![no_main]

use replicator::meta::superblock::{pick_newest, Superblock, MAGIC};

const SB_SIZE: usize = 4096;

fn signed(body: &[u8], keep_version: bool) -> Vec<u8> {
    let mut b = vec![0u8; SB_SIZE];
    let n = body.len().min(SB_SIZE);
    b[..n].copy_from_slice(&body[..n]);
    b[0..8].copy_from_slice(MAGIC);
    if !keep_version {
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
    }
    let mut c = crc32c::crc32c(&b[..12]);
    c = crc32c::crc32c_append(c, &[0; 4]);
    c = crc32c::crc32c_append(c, &b[16..]);
    b[12..16].copy_from_slice(&c.to_le_bytes());
    b
}

fn check(slot_a: &[u8], slot_b: &[u8]) {
    for s in [slot_a, slot_b] {
        if let Ok(sb) = Superblock::decode(s) {
            assert_eq!(Superblock::decode(&sb.encode()).ok(), Some(sb));
        }
    }
    if let Ok((sb, report)) = pick_newest(slot_a, slot_b) {
        assert!(report.newest <= 1);
        assert_eq!(Superblock::decode(&sb.encode()).ok(), Some(sb));
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let (a, b) = rest.split_at(rest.len() / 2);
        check(a, b);
    } else {
        // Two signed slots (the second possibly torn: only its first `cut` bytes signed ones).
        let (a, b) = rest.split_at(rest.len() / 2);
        let (sa, sb) = (signed(a, mode & 2 != 0), signed(b, mode & 4 != 0));
        check(&sa, &sb);
        if mode & 8 != 0 {
            let cut = usize::from(mode >> 4) * 256;
            let mut torn = sa.clone();
            torn[..cut.min(SB_SIZE)].copy_from_slice(&sb[..cut.min(SB_SIZE)]);
            check(&torn, &sa);
        }
    }
});
