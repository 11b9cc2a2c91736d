//! Where each metadata area lives, for internal, flexible external and indexed external metadata.

use super::MetaError;
use std::path::PathBuf;

/// Bytes of data per bitmap bit.
pub const BLOCK_SIZE: u64 = 4096;
/// Activity-log extent (DRBD's 4 MiB).
pub const AL_EXTENT_SIZE: u64 = 4 << 20;
/// Unit of metadata I/O: superblock slot, AL transaction, bitmap page.
pub const META_PAGE: u64 = 4096;
/// Bits in one bitmap page.
pub const BITS_PER_PAGE: u64 = META_PAGE * 8;
/// Slot size of indexed external metadata (DRBD's 128 MiB).
pub const INDEXED_SLOT: u64 = 128 << 20;
/// Activity-log context entries carried per transaction (see `activity_log`).
pub const AL_CONTEXT_PER_TR: u32 = 800;
/// DRBD's limits for al-extents.
pub const AL_EXTENTS_MIN: u32 = 7;
pub const AL_EXTENTS_MAX: u32 = 6433;

const _: () = assert!(BITS_PER_PAGE * BLOCK_SIZE == 128 << 20, "one bitmap page covers 128 MiB");
const _: () = assert!(AL_EXTENT_SIZE.is_multiple_of(BLOCK_SIZE));

/// Where a resource keeps its metadata (the `meta-disk` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaLocation {
    /// At the end of the backing device, which shrinks the data.
    Internal,
    /// On another device or file. `index: Some(i)`: DRBD-style indexed, the fixed 128 MiB slot `i`;
    /// `None`: flexible, at offset 0, sized to need.
    External { path: PathBuf, index: Option<u32> },
}

/// Where the metadata lives. All `*_offset` fields are absolute byte offsets on the metadata device
/// (for internal metadata, the backing device itself).
///
/// External: `[sb A][sb B][AL ring][bitmap pages][crc table]` from `md_offset`.
/// Internal: `[data][AL ring][bitmap pages][crc table][sb A][sb B]`, the superblocks in the last
/// 8 KiB so they can be found from the device size alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Usable data bytes (a multiple of 4096).
    pub data_size: u64,
    pub md_offset: u64,
    /// Bytes reserved for metadata (the whole 128 MiB slot for indexed external metadata).
    pub md_size: u64,
    /// Superblock slot A (slot B follows at +4096).
    pub sb_offset: u64,
    pub al_offset: u64,
    /// Transactions in the activity-log ring (4 KiB each).
    pub al_slots: u32,
    pub al_extents: u32,
    pub bm_offset: u64,
    pub bm_pages: u32,
    pub bitmap_bytes: u64,
    /// Page-CRC table: one u32 per bitmap page, `crc_size` bytes (whole pages).
    pub crc_offset: u64,
    pub crc_size: u64,
}

/// Largest data size we accept (4 PiB): keeps page numbers in u32 and the bitmap (128 GiB of RAM at
/// that size) the only limit worth discussing.
pub const MAX_DATA_SIZE: u64 = 1 << 52;

/// Ring length that lets recovery rebuild the whole table even if one transaction is torn: the context
/// windows of `al_slots - 1` transactions must cover every slot; a little slack on top, and never less
/// than DRBD's 8 (32 KiB).
pub fn al_slots_for(al_extents: u32) -> u32 {
    (al_extents.div_ceil(AL_CONTEXT_PER_TR) + 3).max(8)
}

/// Bitmap pages for `data_size` bytes (at least one).
pub fn pages_for(data_size: u64) -> u64 {
    data_size.div_ceil(BLOCK_SIZE).div_ceil(BITS_PER_PAGE).max(1)
}

/// Bytes of bitmap on disk (whole pages): 32 MiB per TiB.
pub fn bitmap_bytes_for(data_size: u64) -> u64 {
    pages_for(data_size) * META_PAGE
}

/// Bytes of the page-CRC table (u32 per page), rounded to whole pages.
fn crc_bytes_for(pages: u64) -> u64 {
    (pages * 4).div_ceil(META_PAGE) * META_PAGE
}

/// Size of everything but the data, for `data_size` bytes of data.
fn md_size_for(data_size: u64, al_slots: u32) -> u64 {
    let pages = pages_for(data_size);
    2 * META_PAGE + u64::from(al_slots) * META_PAGE + pages * META_PAGE + crc_bytes_for(pages)
}

fn too_small(what: &str, need: u64, have: u64) -> MetaError {
    MetaError::TooSmall { what: format!("{what} (short by {} bytes)", need.saturating_sub(have)), need, have }
}

impl Layout {
    /// `backing_size`: the data device; `meta_dev_size`: the metadata device (the same for internal).
    pub fn compute(backing_size: u64, meta_dev_size: u64, loc: &MetaLocation, al_extents: u32) -> Result<Layout, MetaError> {
        if !(AL_EXTENTS_MIN..=AL_EXTENTS_MAX).contains(&al_extents) {
            return Err(MetaError::Geometry(format!("al-extents {al_extents} is outside {AL_EXTENTS_MIN}..={AL_EXTENTS_MAX}")));
        }
        let al_slots = al_slots_for(al_extents);
        let (data_size, md_offset, md_size) = match loc {
            MetaLocation::Internal => {
                let usable = backing_size & !(META_PAGE - 1);
                let min_md = md_size_for(BLOCK_SIZE, al_slots);
                if usable < min_md + BLOCK_SIZE {
                    return Err(too_small("backing device for internal metadata plus 4 KiB of data", min_md + BLOCK_SIZE, backing_size));
                }
                // The metadata shrinks the data and a smaller bitmap shrinks the metadata: find the
                // largest data size (in blocks) that fits together with its own metadata.
                let (mut lo, mut hi) = (1u64, usable / BLOCK_SIZE);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if mid * BLOCK_SIZE + md_size_for(mid * BLOCK_SIZE, al_slots) <= usable {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                let data = (lo * BLOCK_SIZE).min(MAX_DATA_SIZE);
                let md = md_size_for(data, al_slots);
                (data, usable - md, md)
            }
            MetaLocation::External { index, .. } => {
                let data = (backing_size & !(BLOCK_SIZE - 1)).min(MAX_DATA_SIZE);
                if data == 0 {
                    return Err(too_small("data device", BLOCK_SIZE, backing_size));
                }
                let md = md_size_for(data, al_slots);
                match index {
                    Some(i) => {
                        if md > INDEXED_SLOT {
                            return Err(MetaError::Geometry(format!(
                                "indexed meta-disk slots are 128 MiB; {} MiB of data needs {} MiB of metadata, {} KiB too much (use flexible external metadata)",
                                data >> 20,
                                md.div_ceil(1 << 20),
                                (md - INDEXED_SLOT).div_ceil(1024)
                            )));
                        }
                        let off = u64::from(*i) * INDEXED_SLOT;
                        if meta_dev_size < off + INDEXED_SLOT {
                            return Err(too_small(&format!("meta-disk for index {i} (slot {off}..{})", off + INDEXED_SLOT), off + INDEXED_SLOT, meta_dev_size));
                        }
                        (data, off, INDEXED_SLOT)
                    }
                    None => {
                        if meta_dev_size < md {
                            return Err(too_small("meta-disk", md, meta_dev_size));
                        }
                        (data, 0, md)
                    }
                }
            }
        };
        Ok(Layout::place(data_size, md_offset, md_size, loc, al_extents, al_slots))
    }

    /// The layout for exactly `data_size` bytes of data (at most what [`Layout::compute`] gives for
    /// this device): an online resize's target, or the recorded size of a device that grew while the
    /// volume kept its size. Internal metadata still ends at the end of `backing_size`.
    pub fn with_data_size(data_size: u64, backing_size: u64, meta_dev_size: u64, loc: &MetaLocation, al_extents: u32) -> Result<Layout, MetaError> {
        if data_size == 0 || !data_size.is_multiple_of(BLOCK_SIZE) || data_size > MAX_DATA_SIZE {
            return Err(MetaError::Geometry(format!("data size {data_size} is not a non-zero multiple of 4096 up to {MAX_DATA_SIZE}")));
        }
        let max = Layout::compute(backing_size, meta_dev_size, loc, al_extents)?;
        if data_size > max.data_size {
            return Err(MetaError::DeviceShrank { recorded: data_size, available: max.data_size });
        }
        let al_slots = al_slots_for(al_extents);
        let md = md_size_for(data_size, al_slots);
        let (md_offset, md_size) = match loc {
            MetaLocation::Internal => ((backing_size & !(META_PAGE - 1)) - md, md),
            // Indexed slots keep their fixed place and size; flexible metadata starts at 0.
            MetaLocation::External { index, .. } => (max.md_offset, if index.is_some() { INDEXED_SLOT } else { md }),
        };
        Ok(Layout::place(data_size, md_offset, md_size, loc, al_extents, al_slots))
    }

    /// Fill in every area from the data size and the metadata area.
    fn place(data_size: u64, md_offset: u64, md_size: u64, loc: &MetaLocation, al_extents: u32, al_slots: u32) -> Layout {
        let pages = pages_for(data_size);
        // Internal: superblocks at the very end (findable without knowing the geometry); external: first.
        let (sb_offset, al_offset) = match loc {
            MetaLocation::Internal => (md_offset + md_size - 2 * META_PAGE, md_offset),
            MetaLocation::External { .. } => (md_offset, md_offset + 2 * META_PAGE),
        };
        let bm_offset = al_offset + u64::from(al_slots) * META_PAGE;
        let crc_offset = bm_offset + pages * META_PAGE;
        Layout {
            data_size,
            md_offset,
            md_size,
            sb_offset,
            al_offset,
            al_slots,
            al_extents,
            bm_offset,
            bm_pages: pages as u32,
            bitmap_bytes: pages * META_PAGE,
            crc_offset,
            crc_size: crc_bytes_for(pages),
        }
    }

    /// The bytes of the metadata device this layout uses (superblocks, activity log, bitmap, CRC
    /// table; for indexed metadata not the unused rest of the slot). A resize writes nothing here
    /// before its new superblock is committed.
    pub fn used_range(&self) -> std::ops::Range<u64> {
        let end = (self.crc_offset + self.crc_size).max(self.sb_offset + 2 * META_PAGE);
        self.md_offset.min(self.sb_offset)..end
    }

    /// Where slot A of the superblock is, before the geometry is known.
    pub fn superblock_offset(backing_size: u64, loc: &MetaLocation) -> Result<u64, MetaError> {
        match loc {
            MetaLocation::Internal => backing_size.checked_sub(2 * META_PAGE).map(|o| o & !(META_PAGE - 1)).ok_or(MetaError::TooSmall {
                what: "backing device".into(),
                need: 2 * META_PAGE,
                have: backing_size,
            }),
            MetaLocation::External { index, .. } => Ok(u64::from(index.unwrap_or(0)) * INDEXED_SLOT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(index: Option<u32>) -> MetaLocation {
        MetaLocation::External { path: "/dev/vdb1".into(), index }
    }

    /// Areas are page aligned, in order, inside the metadata area and never overlap.
    fn check_areas(l: &Layout, loc: &MetaLocation) {
        let al_end = l.al_offset + u64::from(l.al_slots) * META_PAGE;
        assert_eq!(l.bm_offset, al_end);
        assert_eq!(l.crc_offset, l.bm_offset + u64::from(l.bm_pages) * META_PAGE);
        assert!(u64::from(l.bm_pages) * 4 <= l.crc_size);
        let end = l.crc_offset + l.crc_size;
        match loc {
            MetaLocation::Internal => {
                assert!(end <= l.sb_offset && l.al_offset == l.md_offset && l.data_size <= l.md_offset);
                assert_eq!(l.sb_offset + 2 * META_PAGE, l.md_offset + l.md_size);
            }
            MetaLocation::External { .. } => {
                assert_eq!((l.sb_offset, l.al_offset), (l.md_offset, l.md_offset + 2 * META_PAGE));
                assert!(end <= l.md_offset + l.md_size);
            }
        }
        for o in [l.md_offset, l.sb_offset, l.al_offset, l.bm_offset, l.crc_offset] {
            assert_eq!(o % META_PAGE, 0);
        }
        assert_eq!(l.bitmap_bytes, bitmap_bytes_for(l.data_size));
        assert!(u64::from(l.bm_pages) * BITS_PER_PAGE >= l.data_size / BLOCK_SIZE);
    }

    #[test]
    fn bitmap_is_32_mib_per_tib() {
        assert_eq!(bitmap_bytes_for(1 << 40), 32 << 20);
        let l = Layout::compute(1 << 40, 1 << 30, &ext(None), 1237).unwrap();
        assert_eq!(l.bitmap_bytes, 32 << 20);
        // superblocks + 8 AL transactions + 32 MiB bitmap + 32 KiB crc table
        assert_eq!(l.md_size, 2 * 4096 + 8 * 4096 + (32 << 20) + 32 * 1024);
    }

    #[test]
    fn internal_shrinks_data_and_uses_the_largest_fit() {
        for backing in [1u64 << 30, (1 << 30) + 12345, 3 << 40, 64 << 20, 128 << 20 | 4096] {
            let l = Layout::compute(backing, backing, &MetaLocation::Internal, 1237).unwrap();
            check_areas(&l, &MetaLocation::Internal);
            assert!(l.data_size < backing && l.data_size.is_multiple_of(BLOCK_SIZE));
            assert!(l.md_offset + l.md_size <= backing);
            // One more block would not fit with its own metadata.
            let more = l.data_size + BLOCK_SIZE;
            assert!(more + md_size_for(more, l.al_slots) > backing & !(META_PAGE - 1), "{backing}");
            assert_eq!(l.sb_offset, Layout::superblock_offset(backing, &MetaLocation::Internal).unwrap());
        }
        assert!(matches!(Layout::compute(40960, 40960, &MetaLocation::Internal, 7), Err(MetaError::TooSmall { .. })));
    }

    #[test]
    fn indexed_refuses_too_big_and_places_slots() {
        let l = Layout::compute(10 << 30, 1 << 30, &ext(Some(1)), 257).unwrap();
        check_areas(&l, &ext(Some(1)));
        assert_eq!((l.md_offset, l.md_size), (INDEXED_SLOT, INDEXED_SLOT));
        assert_eq!(Layout::superblock_offset(10 << 30, &ext(Some(1))).unwrap(), INDEXED_SLOT);
        // 4 TiB of data needs 128 MiB of bitmap alone: more than a slot.
        let e = Layout::compute(4 << 40, 1 << 40, &ext(Some(0)), 257).unwrap_err().to_string();
        assert!(e.contains("128 MiB") && e.contains("too much"), "{e}");
        assert!(Layout::compute(3 << 40, 1 << 40, &ext(Some(0)), 257).is_ok());
        // Slot 8 of a 1 GiB meta device does not exist.
        let e = Layout::compute(1 << 30, 1 << 30, &ext(Some(8)), 257).unwrap_err().to_string();
        assert!(e.contains("index 8") && e.contains("short by"), "{e}");
    }

    #[test]
    fn flexible_starts_at_zero_and_names_the_shortfall() {
        let l = Layout::compute((100 << 30) + 100, 4 << 20, &ext(None), 1237).unwrap();
        check_areas(&l, &ext(None));
        assert_eq!((l.md_offset, l.data_size), (0, 100 << 30));
        match Layout::compute(1 << 40, 1 << 20, &ext(None), 1237) {
            Err(MetaError::TooSmall { need, have, what }) => {
                assert_eq!(have, 1 << 20);
                assert!(need > 32 << 20 && what.contains(&format!("short by {}", need - have)), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn al_ring_holds_the_whole_table_in_context() {
        assert!(Layout::compute(1 << 30, 1 << 30, &MetaLocation::Internal, 3).is_err());
        assert!(Layout::compute(1 << 30, 1 << 30, &MetaLocation::Internal, AL_EXTENTS_MAX + 1).is_err());
        for n in [AL_EXTENTS_MIN, 1237, 1601, AL_EXTENTS_MAX] {
            let slots = al_slots_for(n);
            assert!((slots - 1) * AL_CONTEXT_PER_TR >= n && slots >= 8, "{n}");
        }
    }
}
