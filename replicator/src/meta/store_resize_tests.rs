//! Tests of `store_resize.rs`: the layout math of a resize, and a crash (a torn write, then nothing) at
//! every write of the resize sequence, reopened: the old or the new size, with a consistent bitmap.

use super::super::activity_log::AlBegin;
use super::*;
use std::sync::{Arc, Mutex};

/// In-memory device that stops after a budget of writes: the write that exhausts it lands torn (its
/// first half) and fails, and every later write fails without landing (the process is dead).
#[derive(Clone)]
struct CrashMem {
    bytes: Arc<Mutex<Vec<u8>>>,
    budget: Arc<Mutex<Option<usize>>>,
    writes: Arc<Mutex<usize>>,
}

impl CrashMem {
    fn new(size: usize) -> CrashMem {
        CrashMem { bytes: Arc::new(Mutex::new(vec![0; size])), budget: Arc::new(Mutex::new(None)), writes: Arc::new(Mutex::new(0)) }
    }
    /// An independent copy of the bytes (no budget).
    fn image(&self) -> CrashMem {
        CrashMem { bytes: Arc::new(Mutex::new(self.bytes.lock().unwrap().clone())), budget: Arc::new(Mutex::new(None)), writes: Arc::new(Mutex::new(0)) }
    }
    fn grow(&self, size: usize) {
        self.bytes.lock().unwrap().resize(size, 0);
    }
    fn crash_after(&self, n: usize) {
        *self.budget.lock().unwrap() = Some(n);
    }
}

impl MetaDevice for CrashMem {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let b = self.bytes.lock().unwrap();
        buf.copy_from_slice(b.get(off as usize..off as usize + buf.len()).ok_or_else(|| io::Error::other("read past end"))?);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        *self.writes.lock().unwrap() += 1;
        let mut budget = self.budget.lock().unwrap();
        let land = match *budget {
            Some(0) => return Err(io::Error::other("crashed")),
            Some(1) => buf.len() / 2,
            _ => buf.len(),
        };
        if let Some(n) = budget.as_mut() {
            *n -= 1;
        }
        let mut b = self.bytes.lock().unwrap();
        b.get_mut(off as usize..off as usize + land).ok_or_else(|| io::Error::other("write past end"))?.copy_from_slice(&buf[..land]);
        if land < buf.len() { Err(io::Error::other("crashed mid-write")) } else { Ok(()) }
    }
    fn sync(&self) -> io::Result<()> {
        if *self.budget.lock().unwrap() == Some(0) { Err(io::Error::other("crashed")) } else { Ok(()) }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
}

fn flex() -> MetaLocation {
    MetaLocation::External { path: "mem".into(), index: None }
}

/// A store in use: some blocks out of sync, an unclean activity log with one hot extent (as on a
/// Primary that crashes), `data_dev` the data device size (external) or ignored (internal).
fn in_use(meta: &CrashMem, data_dev: u64, loc: &MetaLocation) -> MetaStore {
    create_md(data_dev, meta, loc, "r0", 7, false).unwrap();
    let (mut st, _) = MetaStore::open(Box::new(meta.clone()), data_dev, loc).unwrap();
    let mut bm = st.bitmap().clone();
    bm.set_range(5 * BLOCK_SIZE, 3 * BLOCK_SIZE);
    bm.set_range(st.layout().data_size - BLOCK_SIZE, BLOCK_SIZE);
    let pages = bm.take_dirty_pages();
    st.write_bitmap_pages(&bm, &pages).unwrap();
    let mut al = st.activity_log();
    match al.begin(2, 2) {
        AlBegin::NeedsTransaction(tx) => {
            st.write_al_transaction(&tx).unwrap();
            al.commit(tx);
        }
        other => panic!("{other:?}"),
    }
    let mut sb = st.superblock().clone();
    sb.flags &= !flags::AL_CLEAN;
    st.write_superblock(&mut sb).unwrap();
    st
}

/// Set bits of a bitmap, as block numbers.
fn bits(b: &Bitmap) -> Vec<u64> {
    (0..b.blocks()).filter(|&i| b.test(i)).collect()
}

/// Crash at every write (torn) of a grow from `old_dev` to `new_dev`, reopen, check; then finish the
/// resize on the reopened store and check again.
fn crash_at_every_write(loc: &MetaLocation, old_dev: usize, new_dev: usize, meta_dev: Option<usize>) {
    let (meta, data_old, data_new) = match meta_dev {
        None => (CrashMem::new(old_dev), 0, 0),
        Some(m) => (CrashMem::new(m), old_dev as u64, new_dev as u64),
    };
    let st = in_use(&meta, data_old, loc);
    let old_size = st.layout().data_size;
    let old_sb = st.layout().sb_offset;
    drop(st);
    // What a reopen of the untouched metadata gives: the reference for "old".
    let (before, _) = MetaStore::open(Box::new(meta.image()), data_old, loc).unwrap();
    let old_bits = bits(before.bitmap());
    assert!(old_bits.contains(&(2 * AL_EXTENT_SIZE / BLOCK_SIZE)), "the hot AL extent is applied");
    if meta_dev.is_none() {
        meta.grow(new_dev);
    }

    let mut total = None;
    for budget in 0.. {
        let dev = meta.image();
        let (mut st, _) = MetaStore::open_at(Box::new(dev.clone()), data_new, loc, Some(old_sb)).unwrap();
        let cap = st.capacity(data_new).unwrap();
        assert!(cap > old_size, "{cap} > {old_size}");
        let mut bm = st.bitmap().resized(cap);
        bm.set_range(old_size, cap - old_size);
        if total.is_none() {
            *dev.writes.lock().unwrap() = 0;
            st.resize(&bm, data_new).unwrap();
            total = Some(*dev.writes.lock().unwrap());
            assert_eq!(st.superblock().data_size, cap);
            continue;
        }
        // Budget b: writes 1..b-2 land, write b-1 lands torn (its first half), nothing after; up
        // to the last write torn.
        if budget > total.unwrap() + 1 {
            break;
        }
        dev.crash_after(budget - 1);
        let r = st.resize(&bm, data_new);
        assert!(r.is_err(), "budget {budget}: {r:?}");
        drop(st);
        let after = dev.image();
        let (st2, rep) = MetaStore::open_at(Box::new(after.clone()), data_new, loc, Some(old_sb))
            .unwrap_or_else(|e| panic!("{loc:?} crash at write {budget}/{total:?}: reopen failed: {e}"));
        let got = bits(st2.bitmap());
        let size = st2.superblock().data_size;
        if size == old_size {
            // The old bitmap; a page torn in place reads as all ones (more resync, never less).
            for b in &old_bits {
                assert!(st2.bitmap().test(*b), "{loc:?} crash at write {budget}: old size, old bit {b} lost");
            }
            if rep.corrupt_bitmap_pages.is_empty() {
                assert_eq!(got, old_bits, "{loc:?} crash at write {budget}: old size, old bitmap");
            }
        } else {
            assert_eq!(size, cap, "{loc:?} crash at write {budget}: old or new size");
            // Every old bit and the whole new area are marked (torn pages may add more, never less).
            for b in &old_bits {
                assert!(st2.bitmap().test(*b), "{loc:?} crash at write {budget}: old bit {b} lost ({rep:?})");
            }
            for b in old_size / BLOCK_SIZE..cap / BLOCK_SIZE {
                assert!(st2.bitmap().test(b), "{loc:?} crash at write {budget}: new block {b} not marked");
            }
        }
        // A second resize completes from whatever the crash left.
        let (mut st3, _) = MetaStore::open_at(Box::new(after.clone()), data_new, loc, Some(old_sb)).unwrap();
        let mut bm = st3.bitmap().resized(cap);
        bm.set_range(old_size, cap - old_size);
        st3.resize(&bm, data_new).unwrap();
        let (st4, _) = MetaStore::open_at(Box::new(after), data_new, loc, Some(old_sb)).unwrap();
        assert_eq!(st4.superblock().data_size, cap);
        assert!(old_bits.iter().all(|b| st4.bitmap().test(*b)));
    }
    assert!(total.unwrap() >= 3, "a resize is several writes: {total:?}");
}

#[test]
fn internal_grow_survives_a_crash_at_every_write() {
    crash_at_every_write(&MetaLocation::Internal, 16 << 20, 24 << 20, None);
    // Across a bitmap page boundary (128 MiB): the bitmap gets a page more.
    crash_at_every_write(&MetaLocation::Internal, 127 << 20, 160 << 20, None);
}

#[test]
fn external_grow_survives_a_crash_at_every_write() {
    // Same number of bitmap pages: a bitmap page and the superblock.
    crash_at_every_write(&flex(), 16 << 20, 24 << 20, Some(1 << 20));
    // 3 → 5 pages: the CRC table moves past the old one, new pages land where it was.
    crash_at_every_write(&flex(), 300 << 20, 600 << 20, Some(1 << 20));
}

#[test]
fn internal_metadata_is_found_at_its_last_known_place_after_the_device_grew() {
    let m = CrashMem::new(16 << 20);
    let st = in_use(&m, 0, &MetaLocation::Internal);
    let (size, sb_off) = (st.layout().data_size, st.layout().sb_offset);
    drop(st);
    m.grow(32 << 20);
    let e = MetaStore::open(Box::new(m.clone()), 0, &MetaLocation::Internal).err().unwrap();
    assert!(matches!(e, MetaError::BadMagic { .. }), "{e}");
    let (st, rep) = MetaStore::open_at(Box::new(m.clone()), 0, &MetaLocation::Internal, Some(sb_off)).unwrap();
    assert_eq!((st.superblock().data_size, rep.found_at_last_known_place), (size, Some(sb_off)));
    assert!(rep.lines().iter().any(|l| l.contains("haadm resize")), "{:?}", rep.lines());
    assert!(st.capacity(0).unwrap() > size);
}

#[test]
fn refused_resizes_name_the_reason_and_write_nothing() {
    // Internal: growth smaller than the new metadata area.
    let m = CrashMem::new(16 << 20);
    let st = in_use(&m, 0, &MetaLocation::Internal);
    let sb_off = st.layout().sb_offset;
    drop(st);
    m.grow((16 << 20) + (8 << 10));
    let (st, _) = MetaStore::open_at(Box::new(m.clone()), 0, &MetaLocation::Internal, Some(sb_off)).unwrap();
    let cap = st.capacity(0).unwrap();
    let e = st.plan_resize(cap, 0).unwrap_err().to_string();
    assert!(e.contains("must not overlap") && e.contains("more"), "{e}");
    // Internal shrink in place.
    let e = st.plan_resize(st.layout().data_size - BLOCK_SIZE, 0).unwrap_err().to_string();
    assert!(e.contains("cannot shrink"), "{e}");
    // Beyond the device.
    let e = st.plan_resize(cap + BLOCK_SIZE, 0).unwrap_err();
    assert!(matches!(e, MetaError::DeviceShrank { .. }), "{e}");
    // External shrink works and reopens at the smaller size.
    let m = CrashMem::new(1 << 20);
    let mut st = in_use(&m, 300 << 20, &flex());
    let bm = st.bitmap().resized(100 << 20);
    let pages = st.layout().bm_pages;
    st.resize(&bm, 300 << 20).unwrap();
    assert!(st.layout().bm_pages < pages);
    let (st, _) = MetaStore::open(Box::new(m), 300 << 20, &flex()).unwrap();
    assert_eq!(st.superblock().data_size, 100 << 20);
    assert!(st.bitmap().test(5));
}

#[test]
fn layout_for_a_given_size_matches_compute_at_the_maximum() {
    for loc in [MetaLocation::Internal, flex(), MetaLocation::External { path: "x".into(), index: Some(1) }] {
        let max = Layout::compute(1 << 30, 1 << 30, &loc, 1237).unwrap();
        assert_eq!(Layout::with_data_size(max.data_size, 1 << 30, 1 << 30, &loc, 1237).unwrap(), max);
        let small = Layout::with_data_size(100 << 20, 1 << 30, 1 << 30, &loc, 1237).unwrap();
        assert_eq!((small.data_size, small.bm_pages), (100 << 20, 1));
        assert!(small.used_range().end <= (1 << 30) && small.data_size <= small.md_offset.max(small.data_size));
        if loc == MetaLocation::Internal {
            // Still at the very end, so it is found from the device size.
            assert_eq!(small.sb_offset, max.sb_offset);
            assert!(small.md_offset > max.md_offset);
        }
        assert!(Layout::with_data_size(max.data_size + BLOCK_SIZE, 1 << 30, 1 << 30, &loc, 1237).is_err());
        assert!(Layout::with_data_size(4097, 1 << 30, 1 << 30, &loc, 1237).is_err());
    }
}
