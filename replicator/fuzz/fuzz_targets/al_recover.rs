//! Activity-log rings from arbitrary bytes: recovery must return an error or a report, never panic,
//! and the report must account for every slot.
//!
//! Mode 0 (first byte even): the bytes are the ring, the next byte picks its length in slots. Random
//! bytes never pass a transaction's magic and CRC32C, so mode 1 builds each 4 KiB slot from a short
//! fuzzed description — kind, transaction number, update/context counts and slot numbers kept near the
//! limits the decoder checks — and seals it with a correct CRC, as the writer does: replay (ordering by
//! transaction number, slot table, context windows, torn slots among good ones) is explored then.
#![no_main]

use replicator::meta::activity_log::recover;

const TR: usize = 4096;
const UPDATES_AT: usize = 32;
const CONTEXT_AT: usize = 32 + 64 * 8;

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

fn seal(b: &mut [u8]) {
    let mut c = crc32c::crc32c(&b[..16]);
    c = crc32c::crc32c_append(c, &[0; 4]);
    c = crc32c::crc32c_append(c, &b[20..TR]);
    b[16..20].copy_from_slice(&c.to_le_bytes());
}

fn slot(f: &mut Bytes) -> Vec<u8> {
    let mut b = vec![0u8; TR];
    let shape = f.u8();
    b[0..4].copy_from_slice(&0x6163_746cu32.to_le_bytes());
    b[4..6].copy_from_slice(&(if shape & 0x80 != 0 { f.u16() } else { 1 }).to_le_bytes());
    let kind: u16 = match shape % 4 {
        0 | 1 => 1,
        2 => 0xffff,
        _ => f.u16(),
    };
    b[6..8].copy_from_slice(&kind.to_le_bytes());
    b[8..16].copy_from_slice(&u64::from(f.u8() % 16).to_le_bytes());
    let al_extents = u32::from(f.u16() % 300);
    let n_upd = f.u8() % 70;
    let n_ctx = f.u16() % 900;
    let start = u32::from(f.u16() % 320);
    b[20..22].copy_from_slice(&u16::from(n_upd).to_le_bytes());
    b[22..24].copy_from_slice(&n_ctx.to_le_bytes());
    b[24..28].copy_from_slice(&start.to_le_bytes());
    b[28..32].copy_from_slice(&al_extents.to_le_bytes());
    for i in 0..usize::from(n_upd.min(64)) {
        let s = u32::from(f.u8()) % (al_extents + 2);
        let e = u32::from(f.u16());
        b[UPDATES_AT + i * 8..UPDATES_AT + i * 8 + 4].copy_from_slice(&s.to_le_bytes());
        b[UPDATES_AT + i * 8 + 4..UPDATES_AT + i * 8 + 8].copy_from_slice(&e.to_le_bytes());
    }
    for i in 0..usize::from(n_ctx.min(16)) {
        let e = u32::from(f.u16());
        b[CONTEXT_AT + i * 4..CONTEXT_AT + i * 4 + 4].copy_from_slice(&e.to_le_bytes());
    }
    if shape & 0x40 == 0 {
        seal(&mut b);
    }
    b
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (al_slots, ring) = if mode & 1 == 0 {
        let Some((&n, ring)) = rest.split_first() else { return };
        (u32::from(n % 80), ring.to_vec())
    } else {
        let n = 1 + u32::from(mode >> 1) % 8;
        let mut f = Bytes(rest);
        let ring: Vec<u8> = (0..n).flat_map(|_| slot(&mut f)).collect();
        (n, ring)
    };
    if let Ok(rec) = recover(&ring, al_slots) {
        assert!(rec.valid_transactions + rec.initialized + rec.torn_or_corrupt == al_slots);
        assert!(rec.next_ring_slot < al_slots);
    }
});
