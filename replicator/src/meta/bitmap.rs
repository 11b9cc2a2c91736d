//! The out-of-sync bitmap: one bit per 4 KiB block, kept in memory with a running count and a set of
//! pages changed since they were last written. On disk it is a run of 4 KiB pages plus a CRC table; a
//! page whose CRC does not match loads as all ones (the safe direction: more resync, never less).
//!
//! Invariant: bits at or beyond `nbits` are always zero, so `count`, `to_words` and the on-disk pages
//! never claim blocks past the end of the device.

use super::layout::{BITS_PER_PAGE, BLOCK_SIZE, META_PAGE};
use std::collections::BTreeSet;

const WORDS_PER_PAGE: usize = (META_PAGE / 8) as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Padded to whole pages so every page encodes without bounds juggling.
    words: Vec<u64>,
    nbits: u64,
    count: u64,
    dirty: BTreeSet<u32>,
}

/// Result of loading one page from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageLoad {
    Ok,
    /// CRC mismatch (torn or corrupt): the page was set to all ones.
    Corrupt,
    /// The page number is beyond this bitmap; nothing changed.
    OutOfRange,
}

/// Mask of bits `lo..hi` (0 ≤ lo < hi ≤ 64) of one word.
fn mask(lo: u64, hi: u64) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & (u64::MAX << lo)
}

impl Bitmap {
    /// A clean bitmap covering `data_size` bytes (always at least one page, like the on-disk layout).
    pub fn new(data_size: u64) -> Bitmap {
        let nbits = data_size.div_ceil(BLOCK_SIZE);
        let pages = nbits.div_ceil(BITS_PER_PAGE).max(1);
        assert!(pages <= u64::from(u32::MAX), "bitmap of {pages} pages is beyond the supported size");
        Bitmap { words: vec![0; pages as usize * WORDS_PER_PAGE], nbits, count: 0, dirty: BTreeSet::new() }
    }

    /// Number of 4 KiB blocks covered.
    pub fn blocks(&self) -> u64 {
        self.nbits
    }

    pub fn pages(&self) -> u32 {
        (self.words.len() / WORDS_PER_PAGE) as u32
    }

    /// Set bits, kept incrementally.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn test(&self, block: u64) -> bool {
        block < self.nbits && self.words[(block / 64) as usize] & (1 << (block % 64)) != 0
    }

    /// Apply `f(word, mask) -> new word` over blocks `first..=last` (clipped to the end); returns the
    /// change in set bits and marks changed pages dirty.
    fn apply(&mut self, first: u64, last: u64, set: bool) -> u64 {
        if self.nbits == 0 || first >= self.nbits {
            return 0;
        }
        let last = last.min(self.nbits - 1);
        let mut changed = 0u64;
        let mut b = first;
        while b <= last {
            let wi = (b / 64) as usize;
            let lo = b % 64;
            let hi = (last - (b - lo)).min(63) + 1;
            let m = mask(lo, hi);
            let w = self.words[wi];
            let new = if set { w | m } else { w & !m };
            if new != w {
                changed += u64::from((new ^ w).count_ones());
                self.words[wi] = new;
                self.dirty.insert((wi / WORDS_PER_PAGE) as u32);
            }
            b = (b - lo) + 64;
        }
        if set {
            self.count += changed;
        } else {
            self.count -= changed;
        }
        changed
    }

    pub fn set_block(&mut self, block: u64) -> bool {
        self.apply(block, block, true) == 1
    }

    pub fn clear_block(&mut self, block: u64) -> bool {
        self.apply(block, block, false) == 1
    }

    /// Mark every block the byte range touches; returns how many bits went from 0 to 1.
    pub fn set_range(&mut self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let last = offset.saturating_add(len - 1) / BLOCK_SIZE;
        self.apply(offset / BLOCK_SIZE, last, true)
    }

    /// Clear the blocks the byte range covers completely; returns how many bits went from 1 to 0. A
    /// block only partly covered keeps its bit: the rest of it may still differ from the peer.
    pub fn clear_range(&mut self, offset: u64, len: u64) -> u64 {
        let first = offset.div_ceil(BLOCK_SIZE);
        let end = offset.saturating_add(len) / BLOCK_SIZE;
        if end <= first {
            return 0;
        }
        self.apply(first, end - 1, false)
    }

    /// First set block at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.nbits {
            return None;
        }
        let mut wi = (from / 64) as usize;
        let mut w = self.words[wi] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                let b = wi as u64 * 64 + u64::from(w.trailing_zeros());
                return (b < self.nbits).then_some(b);
            }
            wi += 1;
            w = *self.words.get(wi)?;
        }
    }

    /// Mark the whole device out of sync (full sync).
    pub fn set_all(&mut self) {
        if self.nbits > 0 {
            self.apply(0, self.nbits - 1, true);
        }
    }

    /// OR another bitmap of the same device into this one (bits past our end are ignored).
    pub fn merge_or(&mut self, other: &Bitmap) {
        let n = self.nbits.min(other.nbits).div_ceil(64) as usize;
        for i in 0..n {
            let added = other.words[i] & !self.words[i];
            if added != 0 {
                self.words[i] |= added;
                self.count += u64::from(added.count_ones());
                self.dirty.insert((i / WORDS_PER_PAGE) as u32);
            }
        }
        self.mask_tail();
    }

    /// Enforce the invariant after bulk loads: zero everything at or past `nbits`, fix `count`.
    fn mask_tail(&mut self) {
        let full = (self.nbits / 64) as usize;
        let mut removed = 0u64;
        if !self.nbits.is_multiple_of(64) {
            let keep = mask(0, self.nbits % 64);
            removed += u64::from((self.words[full] & !keep).count_ones());
            self.words[full] &= keep;
        }
        let from = full + usize::from(!self.nbits.is_multiple_of(64));
        for w in &mut self.words[from..] {
            removed += u64::from(w.count_ones());
            *w = 0;
        }
        self.count -= removed;
    }

    /// The bits as words (bit `b` is bit `b % 64` of word `b / 64`), for sending to the peer.
    pub fn to_words(&self) -> Vec<u64> {
        self.words[..self.nbits.div_ceil(64) as usize].to_vec()
    }

    /// Build from words received from the peer; missing words are zero, extra words and bits past
    /// the end are ignored. No page is dirty.
    pub fn from_words(data_size: u64, words: &[u64]) -> Bitmap {
        let mut b = Bitmap::new(data_size);
        for (d, s) in b.words.iter_mut().zip(words) {
            *d = *s;
        }
        b.count = b.words.iter().map(|w| u64::from(w.count_ones())).sum();
        b.mask_tail();
        b
    }

    /// A copy covering `data_size` bytes (an online resize): the bits of the common blocks are kept,
    /// blocks past a shrunken end dropped, new blocks clean. No page is dirty.
    pub fn resized(&self, data_size: u64) -> Bitmap {
        let mut b = Bitmap::new(data_size);
        for (d, s) in b.words.iter_mut().zip(&self.words) {
            *d = *s;
        }
        b.count = b.words.iter().map(|w| u64::from(w.count_ones())).sum();
        b.mask_tail();
        b
    }

    /// Pages changed since the last call, ascending.
    pub fn take_dirty_pages(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    pub fn mark_all_pages_dirty(&mut self) {
        self.dirty = (0..self.pages()).collect();
    }

    /// On-disk form of one page (little-endian words); all zeros for a page past the end.
    pub fn encode_page(&self, page: u32) -> [u8; META_PAGE as usize] {
        let mut out = [0u8; META_PAGE as usize];
        let start = page as usize * WORDS_PER_PAGE;
        if let Some(words) = self.words.get(start..start + WORDS_PER_PAGE) {
            for (o, w) in out.chunks_exact_mut(8).zip(words) {
                o.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    pub fn page_crc(&self, page: u32) -> u32 {
        crc32c::crc32c(&self.encode_page(page))
    }

    /// Copy one page of `other` (a bitmap of the same size) into this one.
    pub fn copy_page_from(&mut self, other: &Bitmap, page: u32) {
        if other.nbits != self.nbits {
            return;
        }
        let start = page as usize * WORDS_PER_PAGE;
        let Some(src) = other.words.get(start..start + WORDS_PER_PAGE) else { return };
        let old: u64 = self.words[start..start + WORDS_PER_PAGE].iter().map(|w| u64::from(w.count_ones())).sum();
        let new: u64 = src.iter().map(|w| u64::from(w.count_ones())).sum();
        self.words[start..start + WORDS_PER_PAGE].copy_from_slice(src);
        self.count = self.count - old + new;
    }

    /// Load a page read from disk. A CRC mismatch (or a short buffer) sets the page to all ones and
    /// marks it dirty, so it is rewritten with a good CRC.
    pub fn load_page(&mut self, page: u32, bytes: &[u8], stored_crc: u32) -> PageLoad {
        let start = page as usize * WORDS_PER_PAGE;
        if start >= self.words.len() {
            return PageLoad::OutOfRange;
        }
        let ok = bytes.len() == META_PAGE as usize && crc32c::crc32c(bytes) == stored_crc;
        let old: u64 = self.words[start..start + WORDS_PER_PAGE].iter().map(|w| u64::from(w.count_ones())).sum();
        for (i, w) in self.words[start..start + WORDS_PER_PAGE].iter_mut().enumerate() {
            *w = if ok {
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                u64::from_le_bytes(a)
            } else {
                u64::MAX
            };
        }
        let new: u64 = self.words[start..start + WORDS_PER_PAGE].iter().map(|w| u64::from(w.count_ones())).sum();
        self.count = self.count - old + new;
        self.mask_tail();
        if ok {
            PageLoad::Ok
        } else {
            self.dirty.insert(page);
            PageLoad::Corrupt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const SIZE: u64 = 1_000_000_000; // 244141 blocks, 8 pages, the last one partial

    fn byte_range() -> impl Strategy<Value = (u64, u64)> {
        (0u64..SIZE + 10_000, 1u64..600_000)
    }

    proptest! {
        /// Against a BTreeSet model: set/clear ranges and blocks, merges, word round trips, and the
        /// count, next_set and dirty pages that follow from them.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((0u8..6, byte_range()), 1..80)) {
            let mut bm = Bitmap::new(SIZE);
            let mut model = BTreeSet::new();
            let blocks = bm.blocks();
            for (op, (off, len)) in ops {
                let before = bm.count();
                match op {
                    0 => {
                        let added = bm.set_range(off, len);
                        let l = ((off + len - 1) / 4096).min(blocks - 1);
                        let mut want = 0;
                        for b in off / 4096..=l { want += u64::from(model.insert(b)); }
                        prop_assert_eq!(added, want);
                    }
                    1 => {
                        bm.clear_range(off, len);
                        for b in off.div_ceil(4096)..(off + len) / 4096 { model.remove(&b); }
                    }
                    2 => { let b = off / 4096; prop_assert_eq!(bm.clear_block(b), model.remove(&b)); }
                    3 => { let b = off / 4096; prop_assert_eq!(bm.test(b), model.contains(&b)); }
                    4 => {
                        let mut other = Bitmap::new(SIZE);
                        other.set_range(len * 4096 % SIZE, off % 300_000 + 1);
                        let mut b = 0;
                        while let Some(x) = other.next_set(b) { model.insert(x); b = x + 1; }
                        bm.merge_or(&other);
                    }
                    _ => {
                        let o = Bitmap::from_words(SIZE, &bm.to_words());
                        prop_assert_eq!(o.count(), bm.count());
                        prop_assert_eq!(o.to_words(), bm.to_words());
                    }
                }
                prop_assert_eq!(bm.count(), model.len() as u64);
                if bm.count() != before {
                    prop_assert!(!bm.dirty.is_empty());
                }
            }
            let mut from = 0;
            for &b in &model {
                prop_assert_eq!(bm.next_set(from), Some(b));
                from = b + 1;
            }
            prop_assert_eq!(bm.next_set(from), None);
            // Every page round-trips through its on-disk form.
            let mut copy = Bitmap::new(SIZE);
            for p in 0..bm.pages() {
                prop_assert_eq!(copy.load_page(p, &bm.encode_page(p), bm.page_crc(p)), PageLoad::Ok);
            }
            prop_assert_eq!(copy.to_words(), bm.to_words());
            prop_assert_eq!(copy.count(), bm.count());
        }
    }

    #[test]
    fn torn_page_loads_as_all_ones_within_the_device() {
        let size = 128 << 20 | 40960; // one full page and 10 blocks of a second
        let mut bm = Bitmap::new(size);
        bm.set_range(0, 8192);
        let mut other = Bitmap::new(size);
        assert_eq!(other.load_page(0, &bm.encode_page(0), bm.page_crc(0)), PageLoad::Ok);
        assert_eq!(other.count(), 2);
        let mut torn = bm.encode_page(1);
        torn[100] = 0xff;
        assert_eq!(other.load_page(1, &torn, bm.page_crc(1)), PageLoad::Corrupt);
        assert_eq!(other.count(), 2 + 10);
        assert_eq!(other.next_set(2), Some(BITS_PER_PAGE));
        assert_eq!(other.take_dirty_pages(), vec![1]);
        assert_eq!(other.load_page(2, &torn, 0), PageLoad::OutOfRange);
        assert_eq!(other.load_page(0, &[0u8; 10], 0), PageLoad::Corrupt, "a short read is not trusted");
    }

    #[test]
    fn set_all_and_merge_respect_the_end() {
        let size = 10 * 4096 + 100;
        let mut bm = Bitmap::new(size);
        bm.set_all();
        assert_eq!(bm.count(), 11);
        assert_eq!(bm.next_set(11), None);
        assert_eq!(bm.to_words(), vec![(1 << 11) - 1]);
        let mut m = Bitmap::new(size);
        m.merge_or(&Bitmap::from_words(size, &[u64::MAX, u64::MAX]));
        assert_eq!(m.count(), 11);
        assert_eq!(m.set_range(u64::MAX - 10, 100), 0, "ranges past the end are clipped, not wrapped");
        assert_eq!(Bitmap::new(0).set_range(0, 4096), 0);
    }

    #[test]
    fn dirty_pages_follow_changes() {
        let mut bm = Bitmap::new(1 << 30);
        bm.set_range(0, 4096);
        bm.set_range(300 << 20, 4096);
        assert_eq!(bm.take_dirty_pages(), vec![0, 2]);
        bm.set_range(0, 4096);
        assert!(bm.take_dirty_pages().is_empty(), "no change, no dirty page");
        bm.clear_range(1, 4096);
        assert!(bm.test(0), "a partly covered block stays out of sync");
        bm.mark_all_pages_dirty();
        assert_eq!(bm.take_dirty_pages().len(), 8);
    }
}
