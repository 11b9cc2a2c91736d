//! Online resize of the metadata (`haadm resize`): a new layout for a new data size, written so that a
//! crash at any point leaves either the old or the new consistent metadata.
//!
//! Order of writes (each group synced before the next starts):
//! 1. Everything of the new layout that lies outside the bytes the old layout uses: for internal
//!    metadata (which moves to the new end of the grown device) that is all of it — a copy of the
//!    activity-log ring, every bitmap page, the CRC table and both superblock slots cleared; for
//!    external metadata the CRC table when it moves past the old one. Also (external) the old bitmap
//!    pages that change in place — the new area's marks in the old last page — each after its entry
//!    in the old CRC table: a page whose old CRC still matched after the switch would hide the marks.
//!    A crash here: the old superblock describes the old layout → old size, the old bitmap (a page
//!    torn between its CRC and its bytes reads as all ones; bits past the old end are masked).
//! 2. The commit: the new superblock (new size, seq + 1) — internal: slot A at the new end (slot B
//!    there is cleared, so a torn slot A means "no superblock here" and `open_at` falls back to the
//!    last known place, i.e. the old metadata); external: the older slot, as every superblock write.
//!    A crash after it: new size.
//! 3. What overlaps the old layout (external: new bitmap pages where the old CRC table was, the CRC
//!    table written in place). A crash before it completes leaves pages whose CRC does not match:
//!    they load as all ones — more resync, never less (the metadata invariant) — and the new area is
//!    marked out of sync anyway unless `--assume-clean`. Internal: the old superblocks (now inside the
//!    data area) are zeroed so they can never be mistaken for current metadata, and the old area reads
//!    the same (zeroes) on both nodes.
//!
//! Shrinking internal metadata in place would overwrite the old area before the commit, so it is
//! refused; external metadata shrinks by the same three steps.

use super::*;

/// Half-open byte ranges overlap.
fn overlaps(a: &std::ops::Range<u64>, b: &std::ops::Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

impl MetaStore {
    /// Largest data size the devices give now (they may have grown since the metadata was opened).
    pub fn capacity(&self, data_dev_size: u64) -> Result<u64, MetaError> {
        let (backing, meta_size) = backing_size(self.dev.as_ref(), data_dev_size, &self.loc)?;
        Ok(Layout::compute(backing, meta_size, &self.loc, self.sb.al_extents)?.data_size)
    }

    /// The layout a resize to `data_size` would write, or why it cannot be done; writes nothing.
    pub fn plan_resize(&self, data_size: u64, data_dev_size: u64) -> Result<Layout, MetaError> {
        let (backing, meta_size) = backing_size(self.dev.as_ref(), data_dev_size, &self.loc)?;
        let new = Layout::with_data_size(data_size, backing, meta_size, &self.loc, self.sb.al_extents)?;
        if new == self.layout {
            return Ok(new);
        }
        if matches!(self.loc, MetaLocation::Internal) {
            let old = self.layout.used_range();
            if new.data_size < self.layout.data_size {
                return Err(MetaError::Geometry(format!(
                    "internal metadata cannot shrink in place (from {} to {} bytes): its new area would overwrite the old one before the switch",
                    self.layout.data_size, new.data_size
                )));
            }
            if overlaps(&new.used_range(), &old) {
                return Err(MetaError::Geometry(format!(
                    "internal metadata moves to the new end of the backing device and must not overlap its old area ({}..{}) while it is written: the device grew by {} bytes, it needs {} more",
                    old.start,
                    old.end,
                    (backing & !(META_PAGE - 1)).saturating_sub(old.end),
                    old.end - new.md_offset
                )));
            }
        }
        Ok(new)
    }

    /// Resize to `bm.blocks()` × 4 KiB of data, storing `bm` (the caller's bitmap for the new size: the
    /// new area marked or not) as the bitmap. Crash-safe: see the module comment for the order.
    pub fn resize(&mut self, bm: &Bitmap, data_dev_size: u64) -> Result<(), MetaError> {
        let data_size = bm.blocks() * BLOCK_SIZE;
        let new = self.plan_resize(data_size, data_dev_size)?;
        if new == self.layout {
            return Ok(());
        }
        let old = self.layout;
        let old_used = old.used_range();
        let internal = matches!(self.loc, MetaLocation::Internal);
        let dev = self.dev.as_ref();

        // The new layout's writes: (offset, bytes, what).
        let mut writes: Vec<(u64, Vec<u8>, &'static str)> = Vec::new();
        if new.al_offset != old.al_offset {
            // The ring as it is: its transactions keep their numbers and slots, so recovery after a
            // crash reads the same extents, and the next transaction goes where it would have gone.
            let ring = read(dev, old.al_offset, old.al_slots as usize * META_PAGE as usize, "activity log")?;
            writes.push((new.al_offset, ring, "activity log (moved)"));
        }
        let crcs: Vec<u32> = (0..new.bm_pages).map(|p| bm.page_crc(p)).collect();
        let moved = new.bm_offset != old.bm_offset;
        let mut changed: Vec<u32> =
            (0..new.bm_pages).filter(|&p| moved || p >= old.bm_pages || bm.encode_page(p) != self.bitmap.encode_page(p)).collect();
        // Pages of the old bitmap that change in place (the new area's marks in the old last page):
        // written before the commit, their CRCs in the old table first, so the old layout reads them
        // right (bits past its end are masked) or, torn in between, as all ones — never a page whose
        // old CRC still matches after the switch, which would hide the new area's marks.
        let mut in_place: Vec<(u64, Vec<u8>, &'static str)> = Vec::new();
        if !moved {
            let mut old_table = self.crcs.clone();
            let here: Vec<u32> = changed.iter().copied().filter(|&p| p < old.bm_pages).collect();
            changed.retain(|&p| p >= old.bm_pages);
            for &p in &here {
                old_table[p as usize] = crcs[p as usize];
            }
            let per_crc_page = (META_PAGE / 4) as u32;
            let mut crc_pages: Vec<u32> = here.iter().map(|p| p / per_crc_page).collect();
            crc_pages.dedup();
            for cp in crc_pages {
                let start = (cp * per_crc_page) as usize;
                let end = (start + per_crc_page as usize).min(old_table.len());
                let mut page = vec![0u8; META_PAGE as usize];
                for (o, c) in page.chunks_exact_mut(4).zip(&old_table[start..end]) {
                    o.copy_from_slice(&c.to_le_bytes());
                }
                in_place.push((old.crc_offset + u64::from(cp) * META_PAGE, page, "bitmap checksums (in place)"));
            }
            for &p in &here {
                in_place.push((old.bm_offset + u64::from(p) * META_PAGE, bm.encode_page(p).to_vec(), "bitmap page (in place)"));
            }
        }
        let max_run = IO_CHUNK / META_PAGE as usize;
        let mut i = 0;
        while i < changed.len() {
            let first = changed[i];
            let mut buf = Vec::new();
            while i < changed.len() && changed[i] == first + (buf.len() / META_PAGE as usize) as u32 && buf.len() / (META_PAGE as usize) < max_run {
                buf.extend_from_slice(&bm.encode_page(changed[i]));
                i += 1;
            }
            writes.push((new.bm_offset + u64::from(first) * META_PAGE, buf, "bitmap pages"));
        }
        let mut table = vec![0u8; new.crc_size as usize];
        for (o, c) in table.chunks_exact_mut(4).zip(&crcs) {
            o.copy_from_slice(&c.to_le_bytes());
        }
        writes.push((new.crc_offset, table, "bitmap checksums"));
        if new.sb_offset != old.sb_offset {
            writes.push((new.sb_offset, vec![0u8; 2 * META_PAGE as usize], "superblocks (cleared)"));
        }
        let (pre, post): (Vec<_>, Vec<_>) = writes.into_iter().partition(|(off, b, _)| !overlaps(&(*off..*off + b.len() as u64), &old_used));
        if internal && !post.is_empty() {
            return Err(MetaError::Geometry("internal metadata: the new area overlaps the old one".into()));
        }

        // 1. Outside the old layout (and the old pages that change in place, CRC first).
        for (off, b, what) in in_place.iter().chain(&pre) {
            write(dev, b, *off, what)?;
        }
        sync(dev, "resized metadata")?;

        // 2. Commit.
        let mut sb = self.sb.clone();
        sb.version = FORMAT_VERSION;
        sb.seq = self.sb.seq + 1;
        sb.data_size = data_size;
        sb.bitmap_bytes = new.bitmap_bytes;
        sb.md_size = new.md_size;
        let slot = if new.sb_offset != old.sb_offset { 0 } else { 1 - self.newest_slot };
        write(dev, &sb.encode(), new.sb_offset + slot as u64 * META_PAGE, "superblock (resize)")?;
        sync(dev, "superblock (resize)")?;
        self.layout = new;
        self.sb = sb;
        self.newest_slot = slot;
        self.crcs = crcs;
        self.bitmap = bm.resized(data_size);

        // 3. Over the old layout.
        for (off, b, what) in &post {
            write(dev, b, *off, what)?;
        }
        if internal {
            let zero = vec![0u8; IO_CHUNK];
            let mut off = old_used.start;
            while off < old_used.end {
                let n = (old_used.end - off).min(IO_CHUNK as u64);
                write(dev, &zero[..n as usize], off, "old metadata area (now data)")?;
                off += n;
            }
        }
        sync(dev, "resized metadata")
    }
}
