//! Tests of `store.rs`: create/open on real files (tempfile) and on an in-memory device that can tear.

use super::super::activity_log::AlBegin;
use super::*;
use std::sync::{Arc, Mutex};

/// In-memory device; clones share the bytes.
#[derive(Clone)]
struct Mem(Arc<Mutex<Vec<u8>>>);

impl Mem {
    fn new(size: usize) -> Mem {
        Mem(Arc::new(Mutex::new(vec![0; size])))
    }
    fn poke(&self, off: u64, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap();
        b[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn peek(&self, off: u64, len: usize) -> Vec<u8> {
        self.0.lock().unwrap()[off as usize..off as usize + len].to_vec()
    }
}

impl MetaDevice for Mem {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let b = self.0.lock().unwrap();
        let src = b.get(off as usize..off as usize + buf.len()).ok_or_else(|| io::Error::other("read past end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut b = self.0.lock().unwrap();
        let dst = b.get_mut(off as usize..off as usize + buf.len()).ok_or_else(|| io::Error::other("write past end"))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
}

const DATA: u64 = 300 << 20; // 3 bitmap pages, the last partial
fn flex() -> MetaLocation {
    MetaLocation::External { path: "mem".into(), index: None }
}

fn open(m: &Mem) -> Result<(MetaStore, OpenReport), MetaError> {
    MetaStore::open(Box::new(m.clone()), DATA, &flex())
}

fn fresh() -> (Mem, MetaStore) {
    let m = Mem::new(1 << 20);
    create_md(DATA, &m, &flex(), "r0", 7, false).unwrap();
    let (st, rep) = open(&m).unwrap();
    assert!(rep.lines().is_empty(), "{rep:?}");
    (m, st)
}

fn file(size: u64) -> (tempfile::NamedTempFile, FileDevice) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let d = FileDevice::open(f.path()).unwrap();
    (f, d)
}

#[test]
fn create_refuses_without_force_and_opens_clean_on_a_file() {
    let (f, d) = file(64 << 20);
    let sb = create_md(0, &d, &MetaLocation::Internal, "r0", 257, false).unwrap();
    assert_eq!((sb.current_uuid, sb.flags), (UUID_JUST_CREATED, flags::AL_CLEAN));
    let e = create_md(0, &d, &MetaLocation::Internal, "other", 257, false).unwrap_err();
    assert!(matches!(&e, MetaError::AlreadyExists { resource } if resource == "r0"), "{e}");
    let again = create_md(0, &d, &MetaLocation::Internal, "r1", 257, true).unwrap();
    assert_ne!(again.device_uuid, sb.device_uuid, "device uuid is random");
    let (st, rep) = MetaStore::open(Box::new(FileDevice::open(f.path()).unwrap()), 0, &MetaLocation::Internal).unwrap();
    assert_eq!(st.superblock().resource, "r1");
    assert_eq!(st.superblock().data_size, Layout::compute(64 << 20, 64 << 20, &MetaLocation::Internal, 257).unwrap().data_size);
    assert!(rep.lines().is_empty(), "{rep:?}");
    assert_eq!(st.bitmap().count(), 0);
    let dump = st.dump();
    for want in ["resource        r1", "flags           al-clean", "current-uuid    0000000000000004", "out-of-sync     0 blocks (0 KiB)", "8 initialized"] {
        assert!(dump.contains(want), "missing `{want}` in\n{dump}");
    }
    assert!(matches!(create_md(0, &d, &MetaLocation::Internal, &"x".repeat(64), 257, true), Err(MetaError::BadResourceName(_))));
}

#[test]
fn indexed_slots_are_independent() {
    let (f, d) = file((2 * 128) << 20);
    for (i, name) in [(0, "a"), (1, "b")] {
        let loc = MetaLocation::External { path: f.path().into(), index: Some(i) };
        create_md(10 << 30, &d, &loc, name, 1237, false).unwrap();
    }
    for (i, name) in [(0, "a"), (1, "b")] {
        let loc = MetaLocation::External { path: f.path().into(), index: Some(i) };
        let (st, _) = MetaStore::open(Box::new(FileDevice::open(f.path()).unwrap()), 10 << 30, &loc).unwrap();
        assert_eq!(st.superblock().resource, name);
    }
}

#[test]
fn superblock_writes_alternate_and_a_torn_one_falls_back() {
    let (m, mut st) = fresh();
    let sb_off = st.layout().sb_offset;
    let mut sb = st.superblock().clone();
    assert_eq!(sb.seq, 2, "create-md leaves slot B newest");
    sb.current_uuid = 0x1111;
    st.write_superblock(&mut sb).unwrap();
    assert_eq!(sb.seq, 3);
    let (st2, rep) = open(&m).unwrap();
    assert_eq!((st2.superblock().current_uuid, rep.superblock_slot), (0x1111, 'A'));
    // The next write goes to B; tear it (only its first sectors land).
    let before_b = m.peek(sb_off + 4096, 4096);
    sb.current_uuid = 0x2222;
    st.write_superblock(&mut sb).unwrap();
    let written = m.peek(sb_off + 4096, 4096);
    let mut torn = before_b.clone();
    torn[..40].copy_from_slice(&written[..40]); // seq and crc new, current_uuid still old
    m.poke(sb_off + 4096, &torn);
    let (st3, rep) = open(&m).unwrap();
    assert_eq!((st3.superblock().current_uuid, st3.superblock().seq), (0x1111, 3));
    let lines = rep.lines().join("\n");
    assert!(lines.contains("slot B") && lines.contains("using slot A seq 3"), "{lines}");
}

#[test]
fn open_detects_corrupt_superblocks() {
    let (m, st) = fresh();
    let off = st.layout().sb_offset;
    m.poke(off + 300, &[0xAB; 4]);
    let (_, rep) = open(&m).unwrap();
    assert!(rep.superblock_slot_problem.as_deref().unwrap().contains("checksum"), "{rep:?}");
    m.poke(off + 4096, &[0; 8]);
    let e = open(&m).err().unwrap().to_string();
    assert!(e.contains("slot A") && e.contains("checksum") && e.contains("slot B") && e.contains("magic"), "{e}");
    assert!(matches!(open(&Mem::new(1 << 20)), Err(MetaError::BadMagic { .. })), "blank device: no metadata");
}

#[test]
fn geometry_is_checked_against_the_devices() {
    let (m, _) = fresh();
    let e = MetaStore::open(Box::new(m.clone()), DATA - 4096, &flex()).err().unwrap();
    assert!(matches!(e, MetaError::DeviceShrank { recorded: DATA, available } if available == DATA - 4096), "{e}");
    assert!(e.to_string().contains("short by 4096"), "{e}");
    let (st, _) = MetaStore::open(Box::new(m.clone()), DATA + (1 << 30), &flex()).unwrap();
    assert_eq!(st.superblock().data_size, DATA, "a grown device keeps its recorded size");
    let mut sb = st.superblock().clone();
    sb.data_size += 4096;
    let (mut st, _) = open(&m).unwrap();
    assert!(matches!(st.write_superblock(&mut sb), Err(MetaError::GeometryMismatch { field: "data_size", .. })));
}

#[test]
fn bitmap_pages_round_trip_and_torn_pages_read_as_ones() {
    let (m, mut st) = fresh();
    let mut bm = st.bitmap().clone();
    bm.set_range(0, 3 * 4096);
    bm.set_range(200 << 20, 4096);
    let pages = bm.take_dirty_pages();
    assert_eq!(pages, vec![0, 1]);
    st.write_bitmap_pages(&bm, &pages).unwrap();
    assert_eq!(st.bitmap().count(), 4);
    let (st2, rep) = open(&m).unwrap();
    assert_eq!(st2.bitmap().to_words(), bm.to_words());
    assert!(rep.corrupt_bitmap_pages.is_empty());
    // A torn rewrite of page 2 (the partial last page): new bytes landed, CRC table not yet.
    let off = st.layout().bm_offset + 2 * 4096;
    m.poke(off + 8, &[0x01]);
    let (st3, rep) = open(&m).unwrap();
    assert_eq!(rep.corrupt_bitmap_pages, vec![2]);
    let page2_blocks = DATA / 4096 - 2 * 32768;
    assert_eq!(st3.bitmap().count(), 4 + page2_blocks, "page 2 is all ones, up to the end of the device");
    assert!(rep.lines().iter().any(|l| l.contains("checksum")));
    assert!(matches!(st.write_bitmap_pages(&bm, &[3]), Err(MetaError::GeometryMismatch { .. })));
}

fn tx(al: &mut ActivityLog, e: u32) -> AlTransaction {
    match al.begin(e, e) {
        AlBegin::NeedsTransaction(tx) => tx,
        other => panic!("{other:?}"),
    }
}

#[test]
fn unclean_stop_applies_the_activity_log_clean_stop_does_not() {
    let (m, mut st) = fresh();
    let mut al = st.activity_log();
    let t = tx(&mut al, 3);
    st.write_al_transaction(&t).unwrap();
    al.commit(t);
    let mut sb = st.superblock().clone();
    sb.flags = (sb.flags & !flags::AL_CLEAN) | flags::PRIMARY_IND;
    st.write_superblock(&mut sb).unwrap();
    let (st2, rep) = open(&m).unwrap();
    assert_eq!(rep.al_extents_applied, 1);
    assert_eq!(st2.bitmap().count(), 1024, "one 4 MiB extent");
    assert!(st2.bitmap().test(3 * 1024) && !st2.bitmap().test(4 * 1024));
    assert!(rep.lines().iter().any(|l| l.contains("unclean")));
    assert!(st2.dump().contains("al-extents-in-log 3"));
    sb.flags |= flags::AL_CLEAN;
    st.write_superblock(&mut sb).unwrap();
    let (st3, rep) = open(&m).unwrap();
    assert_eq!((rep.al_extents_applied, st3.bitmap().count()), (0, 0));
}

#[test]
fn a_restarted_log_continues_the_ring_after_the_old_run() {
    let (m, mut st) = fresh();
    let mut sb = st.superblock().clone();
    sb.flags &= !flags::AL_CLEAN;
    st.write_superblock(&mut sb).unwrap();
    // Run 1 fills more than the ring with transactions for extents 0..12.
    let mut al = st.activity_log();
    for e in 0..12 {
        let t = tx(&mut al, e);
        st.write_al_transaction(&t).unwrap();
        al.commit(t);
        al.end(e, e);
    }
    // Run 2: a fresh log; one write to extent 40 in flight at the crash.
    let (mut st, _) = open(&m).unwrap();
    let newest = st.al_found().newest_tr.unwrap();
    let mut al = st.activity_log();
    let t = tx(&mut al, 40);
    st.write_al_transaction(&t).unwrap();
    al.commit(t);
    let (st, rep) = open(&m).unwrap();
    assert_eq!(st.al_found().newest_tr, Some(newest + 1));
    assert!(st.al_found().extents.contains(&40), "{:?}", st.al_found().extents);
    assert!(st.bitmap().test(40 * 1024));
    assert!(rep.al_extents_applied >= 1);
}

#[test]
fn torn_al_transaction_is_skipped_and_reported() {
    let (m, mut st) = fresh();
    let mut sb = st.superblock().clone();
    sb.flags &= !flags::AL_CLEAN;
    st.write_superblock(&mut sb).unwrap();
    let mut al = st.activity_log();
    for e in [1, 2] {
        let t = tx(&mut al, e);
        st.write_al_transaction(&t).unwrap();
        al.commit(t);
    }
    // Tear the second transaction (ring slot 1).
    let off = st.layout().al_offset + 4096 + 100;
    m.poke(off, &[0u8; 3996]);
    let (st2, rep) = open(&m).unwrap();
    assert_eq!(rep.al_torn_transactions, 1);
    assert_eq!(st2.al_found().extents.iter().copied().collect::<Vec<_>>(), vec![1]);
}
