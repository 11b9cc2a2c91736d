//! Arbitrary bytes as an activity-log ring: recovery must return an error or a report, never panic.
//! The first byte picks the ring length so short and long rings are both explored.
#![no_main]

use replicator::meta::activity_log::recover;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&n, ring)) = data.split_first() else { return };
    let al_slots = u32::from(n % 80);
    if let Ok(rec) = recover(ring, al_slots) {
        assert!(rec.valid_transactions + rec.initialized + rec.torn_or_corrupt == al_slots);
        assert!(rec.next_ring_slot < al_slots);
    }
});
