//! The activity log: the set of "hot" 4 MiB extents that may have writes in flight, so that after a
//! crash of a Primary only they are resynced (replication-anchors §1.4).
//!
//! In memory: `al_extents` slots, each holding an extent number, with per-extent in-flight reference
//! counts and LRU eviction of idle extents. On disk: a ring of `al_slots` 4 KiB transactions. Each
//! transaction carries the slot updates that made it necessary plus a rotating window of "context" (the
//! current slot→extent table, `AL_CONTEXT_PER_TR` slots at a time), so replaying the valid transactions
//! of the ring in `tr_number` order rebuilds the whole table even when the newest one is torn.
//!
//! Where a transaction lands in the ring and which `tr_number` it gets is decided by [`AlRing`], which
//! the store seeds from what it found in the ring at open. That is why a log built fresh after a
//! restart can never write a transaction that sorts before a stale one of the previous run.

use super::layout::{AL_CONTEXT_PER_TR, AL_EXTENTS_MAX, META_PAGE};
use super::MetaError;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const MAGIC: u32 = 0x6163_746c; // "actl"
const VERSION: u16 = 1;
/// Slot updates one transaction can carry (DRBD batches up to 64 as well).
pub const AL_MAX_UPDATES: usize = 64;
const EMPTY: u32 = u32::MAX;
const HEADER: usize = 32;
const UPDATES_AT: usize = HEADER;
const CONTEXT_AT: usize = HEADER + AL_MAX_UPDATES * 8;
const TR_SIZE: usize = META_PAGE as usize;

const TYPE_UPDATE: u16 = 1;
/// Written by create-md: a valid transaction that says nothing.
const TYPE_INITIALIZED: u16 = 0xffff;

const _: () = assert!(CONTEXT_AT + AL_CONTEXT_PER_TR as usize * 4 <= TR_SIZE);

// Header: magic u32 @0, version u16 @4, type u16 @6, tr_number u64 @8, crc u32 @16,
// n_updates u16 @20, context_len u16 @22, context_start u32 @24, al_extents u32 @28.
// Updates: (slot u32, extent u32) × 64 @32. Context: extent u32 × AL_CONTEXT_PER_TR @544.

/// One slot change carried by a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlUpdate {
    pub slot: u32,
    pub extent: u32,
    /// The extent that held the slot before (its bitmap pages must be on disk first).
    pub evicted: Option<u32>,
}

/// One transaction to persist (via the store) before the data writes that needed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlTransaction {
    pub updates: Vec<AlUpdate>,
    /// The request's extent range; references on all of it are taken at `commit`.
    pub first: u32,
    pub last: u32,
    /// Context window: `context[i]` is the extent in slot `context_start + i` after the updates.
    pub context_start: u32,
    pub context: Vec<u32>,
    pub al_extents: u32,
}

impl AlTransaction {
    /// Extents this transaction removes from the log.
    pub fn evicted(&self) -> Vec<u32> {
        self.updates.iter().filter_map(|u| u.evicted).collect()
    }

    /// The on-disk form, numbered `tr_number` (assigned by [`AlRing`]).
    pub fn encode(&self, tr_number: u64) -> [u8; TR_SIZE] {
        assert!(self.updates.len() <= AL_MAX_UPDATES && self.context.len() <= AL_CONTEXT_PER_TR as usize);
        let mut b = header(TYPE_UPDATE, tr_number, self.updates.len() as u16, self.context.len() as u16);
        b[24..28].copy_from_slice(&self.context_start.to_le_bytes());
        b[28..32].copy_from_slice(&self.al_extents.to_le_bytes());
        for (i, u) in self.updates.iter().enumerate() {
            let o = UPDATES_AT + i * 8;
            b[o..o + 4].copy_from_slice(&u.slot.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&u.extent.to_le_bytes());
        }
        for (i, e) in self.context.iter().enumerate() {
            let o = CONTEXT_AT + i * 4;
            b[o..o + 4].copy_from_slice(&e.to_le_bytes());
        }
        seal(&mut b);
        b
    }
}

fn header(kind: u16, tr_number: u64, n_updates: u16, n_context: u16) -> [u8; TR_SIZE] {
    let mut b = [0u8; TR_SIZE];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&kind.to_le_bytes());
    b[8..16].copy_from_slice(&tr_number.to_le_bytes());
    b[20..22].copy_from_slice(&n_updates.to_le_bytes());
    b[22..24].copy_from_slice(&n_context.to_le_bytes());
    b
}

fn seal(b: &mut [u8; TR_SIZE]) {
    let c = crc_of(b);
    b[16..20].copy_from_slice(&c.to_le_bytes());
}

/// CRC32C over the transaction with the crc field taken as zero.
fn crc_of(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(&b[..16]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &b[20..])
}

fn rd16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn rd64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// The ring create-md writes: every slot an "initialized" (empty, valid) transaction numbered 0.
pub fn encode_initialized_ring(al_slots: u32) -> Vec<u8> {
    let mut t = header(TYPE_INITIALIZED, 0, 0, 0);
    seal(&mut t);
    t.repeat(al_slots as usize)
}

/// Where the next transaction goes and its number: after the newest valid one in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlRing {
    pub al_slots: u32,
    pub next_tr: u64,
    pub next_slot: u32,
}

impl AlRing {
    /// For a freshly initialized ring.
    pub fn new(al_slots: u32) -> AlRing {
        assert!(al_slots >= 2, "an activity-log ring needs at least 2 transactions");
        AlRing { al_slots, next_tr: 1, next_slot: 0 }
    }

    /// Continue after what recovery found.
    pub fn after(rec: &AlRecovery, al_slots: u32) -> AlRing {
        let mut r = AlRing::new(al_slots);
        r.next_tr = rec.next_tr;
        r.next_slot = rec.next_ring_slot % al_slots;
        r
    }

    /// Byte offset inside the ring and encoded bytes of the next transaction. Call `advance` once it
    /// has been written.
    pub fn place(&self, tx: &AlTransaction) -> (u64, [u8; TR_SIZE]) {
        (u64::from(self.next_slot) * META_PAGE, tx.encode(self.next_tr))
    }

    pub fn advance(&mut self) {
        self.next_tr += 1;
        self.next_slot = (self.next_slot + 1) % self.al_slots;
    }
}

/// Outcome of [`ActivityLog::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlBegin {
    /// All extents were active; references are taken.
    Ready,
    /// Persist this transaction, then call `commit`, which takes the references. Nothing changed yet.
    NeedsTransaction(AlTransaction),
    /// Every candidate slot has writes in flight; nothing was changed. Retry after some `end`.
    Busy,
}

#[derive(Debug, Clone)]
pub struct ActivityLog {
    /// slot → extent (EMPTY when free).
    slots: Vec<u32>,
    where_is: HashMap<u32, u32>,
    /// Per active extent: writes in flight.
    refs: HashMap<u32, u32>,
    /// Idle occupied slots by last use: the eviction order (least recent first).
    idle: BTreeSet<(u64, u32)>,
    last_use: Vec<u64>,
    clock: u64,
    /// First slot of the next context window.
    context_cursor: u32,
}

impl ActivityLog {
    /// An empty log of `al_extents` slots. `al_slots` (the ring length) is checked against the table
    /// size: the ring must hold enough context to rebuild the table.
    pub fn new(al_extents: u32, al_slots: u32) -> ActivityLog {
        assert!((1..=AL_EXTENTS_MAX).contains(&al_extents), "al-extents {al_extents} out of range");
        assert!(al_slots >= 2 && al_slots > al_extents.div_ceil(AL_CONTEXT_PER_TR), "ring of {al_slots} too short");
        ActivityLog {
            slots: vec![EMPTY; al_extents as usize],
            where_is: HashMap::new(),
            refs: HashMap::new(),
            idle: BTreeSet::new(),
            last_use: vec![0; al_extents as usize],
            clock: 0,
            context_cursor: 0,
        }
    }

    pub fn al_extents(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Extents currently in the log (in flight or idle).
    pub fn active_extents(&self) -> BTreeSet<u32> {
        self.slots.iter().copied().filter(|&e| e != EMPTY).collect()
    }

    /// Writes in flight on `extent` (0 when not in the log).
    pub fn in_flight(&self, extent: u32) -> u32 {
        self.refs.get(&extent).copied().unwrap_or(0)
    }

    fn touch_ref(&mut self, e: u32) {
        let Some(&s) = self.where_is.get(&e) else { return };
        self.idle.remove(&(self.last_use[s as usize], s));
        self.last_use[s as usize] = self.clock;
        *self.refs.entry(e).or_insert(0) += 1;
    }

    /// Take references on extents `first..=last`, or say which transaction activates the missing ones.
    pub fn begin(&mut self, first: u32, last: u32) -> AlBegin {
        assert!(first <= last, "extent range {first}..={last} is reversed");
        let span = u64::from(last - first) + 1;
        assert!(
            span <= AL_MAX_UPDATES as u64 && span <= self.slots.len() as u64,
            "one request spans {span} extents, more than the activity log can hold at once"
        );
        self.clock += 1;
        let missing: Vec<u32> = (first..=last).filter(|e| !self.where_is.contains_key(e)).collect();
        if missing.is_empty() {
            for e in first..=last {
                self.touch_ref(e);
            }
            return AlBegin::Ready;
        }
        // Free slots first, then idle extents by least recent use, never one of this request's.
        let mut victims: Vec<u32> = Vec::with_capacity(missing.len());
        for (s, &e) in self.slots.iter().enumerate() {
            if victims.len() == missing.len() {
                break;
            }
            if e == EMPTY {
                victims.push(s as u32);
            }
        }
        for &(_, s) in &self.idle {
            if victims.len() == missing.len() {
                break;
            }
            if !(first..=last).contains(&self.slots[s as usize]) {
                victims.push(s);
            }
        }
        if victims.len() < missing.len() {
            return AlBegin::Busy;
        }
        let updates: Vec<AlUpdate> = missing
            .iter()
            .zip(&victims)
            .map(|(&extent, &slot)| {
                let old = self.slots[slot as usize];
                AlUpdate { slot, extent, evicted: (old != EMPTY).then_some(old) }
            })
            .collect();
        // The context shows the table as it will be after the updates.
        let n = self.slots.len() as u32;
        let start = self.context_cursor % n;
        let end = start.saturating_add(AL_CONTEXT_PER_TR).min(n);
        let mut context = self.slots[start as usize..end as usize].to_vec();
        for u in &updates {
            if (start..end).contains(&u.slot) {
                context[(u.slot - start) as usize] = u.extent;
            }
        }
        AlBegin::NeedsTransaction(AlTransaction { updates, first, last, context_start: start, context, al_extents: n })
    }

    /// The transaction from `begin` is on disk: apply it and take the references. It must be the
    /// transaction of the latest `begin`, committed before any other `begin` that needs one.
    pub fn commit(&mut self, tx: AlTransaction) {
        assert_eq!(tx.al_extents, self.al_extents(), "transaction of another activity log");
        for u in &tx.updates {
            let old = self.slots[u.slot as usize];
            assert_eq!(old, u.evicted.unwrap_or(EMPTY), "stale activity-log transaction (slot {} changed)", u.slot);
            assert!(!self.where_is.contains_key(&u.extent), "stale activity-log transaction (extent {} active)", u.extent);
            if old != EMPTY {
                assert_eq!(self.in_flight(old), 0, "activity-log transaction evicts extent {old} with writes in flight");
                self.idle.remove(&(self.last_use[u.slot as usize], u.slot));
                self.where_is.remove(&old);
                self.refs.remove(&old);
            }
            self.slots[u.slot as usize] = u.extent;
            self.where_is.insert(u.extent, u.slot);
        }
        let n = self.al_extents();
        self.context_cursor = (tx.context_start + tx.context.len() as u32) % n;
        for e in tx.first..=tx.last {
            self.touch_ref(e);
        }
    }

    /// Writes on `first..=last` completed: drop their references.
    pub fn end(&mut self, first: u32, last: u32) {
        for e in first..=last {
            let Some(&s) = self.where_is.get(&e) else { continue };
            let Some(r) = self.refs.get_mut(&e) else { continue };
            if *r == 0 {
                continue;
            }
            *r -= 1;
            if *r == 0 {
                self.idle.insert((self.last_use[s as usize], s));
            }
        }
    }
}

/// What recovery found in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlRecovery {
    /// Every extent that may have had writes in flight (a superset is possible, never a subset).
    pub extents: BTreeSet<u32>,
    pub valid_transactions: u32,
    /// Slots holding the create-md "initialized" marker.
    pub initialized: u32,
    /// Slots that failed magic/checksum/field checks: torn or corrupt writes.
    pub torn_or_corrupt: u32,
    pub newest_tr: Option<u64>,
    pub next_tr: u64,
    pub next_ring_slot: u32,
}

struct Decoded {
    tr: u64,
    updates: Vec<(u32, u32)>,
    context_start: u32,
    context: Vec<u32>,
}

enum Slot {
    Initialized,
    Update(Decoded),
}

fn decode(b: &[u8]) -> Option<Slot> {
    if b.len() < TR_SIZE || rd32(b, 0) != MAGIC || rd16(b, 4) != VERSION || crc_of(&b[..TR_SIZE]) != rd32(b, 16) {
        return None;
    }
    let kind = rd16(b, 6);
    if kind == TYPE_INITIALIZED {
        return Some(Slot::Initialized);
    }
    let n_upd = usize::from(rd16(b, 20));
    let n_ctx = rd16(b, 22);
    let start = rd32(b, 24);
    let al_extents = rd32(b, 28);
    let ctx_end = u64::from(start) + u64::from(n_ctx);
    if kind != TYPE_UPDATE
        || n_upd > AL_MAX_UPDATES
        || u32::from(n_ctx) > AL_CONTEXT_PER_TR
        || al_extents == 0
        || al_extents > AL_EXTENTS_MAX
        || ctx_end > u64::from(al_extents)
    {
        return None;
    }
    let updates: Vec<(u32, u32)> = (0..n_upd).map(|i| (rd32(b, UPDATES_AT + i * 8), rd32(b, UPDATES_AT + i * 8 + 4))).collect();
    if updates.iter().any(|&(s, _)| s >= al_extents) {
        return None;
    }
    let context = (0..usize::from(n_ctx)).map(|i| rd32(b, CONTEXT_AT + i * 4)).collect();
    Some(Slot::Update(Decoded { tr: rd64(b, 8), updates, context_start: start, context }))
}

/// Replay the ring (`al_slots` × 4 KiB): valid transactions in `tr_number` order, torn or corrupt ones
/// skipped and counted.
pub fn recover(ring: &[u8], al_slots: u32) -> Result<AlRecovery, MetaError> {
    let need = (al_slots as usize).checked_mul(TR_SIZE).ok_or(MetaError::Truncated { need: usize::MAX, got: ring.len() })?;
    if al_slots == 0 || ring.len() < need {
        return Err(MetaError::Truncated { need: need.max(TR_SIZE), got: ring.len() });
    }
    let mut rec = AlRecovery { next_tr: 1, ..Default::default() };
    let mut txs: Vec<(u64, u32, Decoded)> = Vec::new();
    for (k, b) in ring[..need].chunks_exact(TR_SIZE).enumerate() {
        match decode(b) {
            None => rec.torn_or_corrupt += 1,
            Some(Slot::Initialized) => rec.initialized += 1,
            Some(Slot::Update(d)) => txs.push((d.tr, k as u32, d)),
        }
    }
    txs.sort_by_key(|t| (t.0, t.1));
    let mut table: BTreeMap<u32, u32> = BTreeMap::new();
    for (_, _, d) in &txs {
        for (i, &e) in d.context.iter().enumerate() {
            table.insert(d.context_start + i as u32, e);
        }
        for &(s, e) in &d.updates {
            table.insert(s, e);
        }
    }
    if let Some((tr, slot, _)) = txs.last() {
        rec.newest_tr = Some(*tr);
        rec.next_tr = tr.saturating_add(1);
        rec.next_ring_slot = (slot + 1) % al_slots;
    }
    rec.valid_transactions = txs.len() as u32;
    rec.extents = table.into_values().filter(|&e| e != EMPTY).collect();
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::super::layout::al_slots_for;
    use super::*;
    use proptest::prelude::*;

    /// A ring in memory plus the cursor the store would keep.
    struct Ring {
        bytes: Vec<u8>,
        cur: AlRing,
    }

    impl Ring {
        fn fresh(slots: u32) -> Ring {
            Ring { bytes: encode_initialized_ring(slots), cur: AlRing::new(slots) }
        }
        fn reopen(&mut self) -> AlRecovery {
            let rec = recover(&self.bytes, self.cur.al_slots).unwrap();
            self.cur = AlRing::after(&rec, self.cur.al_slots);
            rec
        }
        /// Write a transaction; `tear` keeps only a prefix of it (the crash hit mid-write).
        fn write(&mut self, tx: &AlTransaction, tear: Option<usize>) {
            let (o, b) = self.cur.place(tx);
            let o = o as usize;
            let keep = tear.unwrap_or(TR_SIZE).min(TR_SIZE);
            self.bytes[o..o + keep].copy_from_slice(&b[..keep]);
            self.cur.advance();
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { first: u32, span: u32 },
        Finish(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..30, 0u32..3).prop_map(|(first, span)| Op::Write { first, span }),
            (0usize..8).prop_map(Op::Finish),
        ]
    }

    /// Run one incarnation until a crash; returns the extents with references at the crash.
    fn run(ring: &mut Ring, al_extents: u32, ops: &[Op], tear_last: Option<usize>) -> BTreeSet<u32> {
        let mut al = ActivityLog::new(al_extents, ring.cur.al_slots);
        let mut inflight: Vec<(u32, u32)> = Vec::new();
        let last_tx = ops.iter().rposition(|o| matches!(o, Op::Write { .. }));
        for (i, o) in ops.iter().enumerate() {
            match *o {
                Op::Finish(k) if !inflight.is_empty() => {
                    let (f, l) = inflight.remove(k % inflight.len());
                    al.end(f, l);
                }
                Op::Finish(_) => {}
                Op::Write { first, span } => match al.begin(first, first + span) {
                    AlBegin::Ready => inflight.push((first, first + span)),
                    AlBegin::Busy => {}
                    AlBegin::NeedsTransaction(tx) => {
                        if Some(i) == last_tx && tear_last.is_some() {
                            // Crash while writing this transaction: its data write never started.
                            ring.write(&tx, tear_last);
                            break;
                        }
                        ring.write(&tx, None);
                        al.commit(tx);
                        inflight.push((first, first + span));
                    }
                },
            }
        }
        inflight.iter().flat_map(|&(f, l)| f..=l).collect()
    }

    proptest! {
        /// Across two incarnations (the second starts with a fresh log on the first one's ring), and
        /// with a torn last transaction, recovery covers every extent that held a reference.
        #[test]
        fn recovery_covers_every_extent_in_flight(
            al_extents in prop_oneof![Just(7u32), Just(13), Just(1700)],
            run1 in proptest::collection::vec(op(), 0..120),
            run2 in proptest::collection::vec(op(), 0..120),
            tear1 in proptest::option::of(0usize..TR_SIZE),
            tear2 in proptest::option::of(0usize..TR_SIZE),
        ) {
            let slots = al_slots_for(al_extents);
            let mut ring = Ring::fresh(slots);
            let held = run(&mut ring, al_extents, &run1, tear1);
            let rec = ring.reopen();
            for e in &held {
                prop_assert!(rec.extents.contains(e), "run 1: extent {} in flight, recovered {:?}", e, rec.extents);
            }
            let held = run(&mut ring, al_extents, &run2, tear2);
            let rec = ring.reopen();
            for e in &held {
                prop_assert!(rec.extents.contains(e), "run 2: extent {} in flight, recovered {:?}", e, rec.extents);
            }
        }
    }

    proptest! {
        /// Damaged rings (random bytes overwritten in a valid one, or pure noise) never panic, and
        /// every slot is accounted for.
        #[test]
        fn damaged_rings_never_panic(hits in proptest::collection::vec((0usize..8 * 4096, any::<u8>()), 0..40), noise in any::<bool>()) {
            let mut ring = Ring::fresh(8);
            let mut al = ActivityLog::new(7, 8);
            for e in 0..10 {
                if let AlBegin::NeedsTransaction(tx) = al.begin(e, e) {
                    ring.write(&tx, None);
                    al.commit(tx);
                    al.end(e, e);
                }
            }
            for (o, v) in hits {
                ring.bytes[o] = if noise { v } else { ring.bytes[o] ^ v.max(1) };
            }
            let rec = recover(&ring.bytes, 8).unwrap();
            prop_assert_eq!(rec.valid_transactions + rec.initialized + rec.torn_or_corrupt, 8);
        }
    }

    #[test]
    fn large_table_is_rebuilt_from_context_windows() {
        // 1700 extents need three context windows; after many transactions the oldest updates are
        // gone from the ring and only context can bring the table back.
        let slots = al_slots_for(1700);
        let mut ring = Ring::fresh(slots);
        let mut al = ActivityLog::new(1700, slots);
        for e in 0..1700 {
            match al.begin(e, e) {
                AlBegin::NeedsTransaction(tx) => {
                    ring.write(&tx, None);
                    al.commit(tx);
                }
                other => panic!("{other:?}"),
            }
        }
        let rec = ring.reopen();
        assert_eq!(rec.extents, al.active_extents());
        assert_eq!(rec.valid_transactions, slots);
    }

    #[test]
    fn busy_when_all_slots_in_flight_then_lru_eviction() {
        let mut al = ActivityLog::new(7, 8);
        for e in 0..7 {
            match al.begin(e, e) {
                AlBegin::NeedsTransaction(tx) => al.commit(tx),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(al.begin(9, 9), AlBegin::Busy);
        al.end(5, 5);
        al.end(3, 3);
        match al.begin(9, 9) {
            AlBegin::NeedsTransaction(tx) => {
                assert_eq!(tx.evicted(), vec![3], "least recently used idle extent goes first");
                al.commit(tx);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(al.begin(9, 9), AlBegin::Ready);
        assert_eq!(al.in_flight(9), 2);
        assert!(!al.active_extents().contains(&3));
    }

    #[test]
    fn a_request_never_evicts_its_own_extents_and_batches_updates() {
        let mut al = ActivityLog::new(7, 8);
        match al.begin(0, 2) {
            AlBegin::NeedsTransaction(tx) => {
                assert_eq!(tx.updates.len(), 3);
                al.commit(tx);
            }
            other => panic!("{other:?}"),
        }
        al.end(0, 2);
        match al.begin(1, 5) {
            AlBegin::NeedsTransaction(tx) => {
                assert_eq!(tx.updates.len(), 3);
                assert!(tx.evicted().is_empty(), "free slots first: {:?}", tx.evicted());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn initialized_and_zero_rings() {
        let rec = recover(&encode_initialized_ring(8), 8).unwrap();
        assert!(rec.extents.is_empty());
        assert_eq!((rec.initialized, rec.torn_or_corrupt, rec.next_tr, rec.next_ring_slot), (8, 0, 1, 0));
        let rec = recover(&[0u8; 8 * 4096], 8).unwrap();
        assert_eq!(rec.torn_or_corrupt, 8);
        assert!(matches!(recover(&[0u8; 100], 8), Err(MetaError::Truncated { .. })));
        assert!(matches!(recover(&[], 0), Err(MetaError::Truncated { .. })));
    }

    #[test]
    fn corrupt_transaction_is_skipped_and_counted() {
        let mut ring = Ring::fresh(8);
        let mut al = ActivityLog::new(7, 8);
        for e in [4, 9] {
            if let AlBegin::NeedsTransaction(tx) = al.begin(e, e) {
                ring.write(&tx, None);
                al.commit(tx);
            }
        }
        ring.bytes[4096 + 600] ^= 1; // the second transaction
        let rec = ring.reopen();
        assert_eq!(rec.torn_or_corrupt, 1);
        assert_eq!(rec.extents, BTreeSet::from([4]));
        assert_eq!((rec.newest_tr, rec.next_ring_slot), (Some(1), 1));
    }
}
