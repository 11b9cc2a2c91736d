//! A small pool of reusable block buffers for the hot data paths (frames received from the peer, disk
//! reads for the resync and for the peer).
//!
//! WHY: every received 1 MiB write and every resync read used to get a freshly allocated buffer. Large
//! allocations come straight from the kernel (mmap, or a heap the allocator trims on free), so each one
//! costs 256 page faults plus the kernel zeroing the pages (and `BytesMut::zeroed` zeroed them once
//! more) — a measurable share of the CPU on the replication path. A pooled buffer stays mapped and
//! initialised: taking one costs a mutex and no zeroing. Buffers come back when the last [`Bytes`]
//! slice of them is dropped (via [`Bytes::from_owner`]).

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// Size of every pooled buffer: one 1 MiB block plus room for a frame's fixed fields.
pub const POOL_BUF: usize = 1024 * 1024 + 4096;

/// Alignment O_DIRECT needs for memory on every device we care about (4 KiB covers 512-byte and 4 KiB
/// logical blocks). Each pooled allocation carries this much slack so a window of [`POOL_BUF`] bytes can
/// start wherever the caller needs the block data to be aligned.
pub const DIRECT_ALIGN: usize = 4096;

/// Free buffers kept for reuse; more in flight than this are simply freed when done.
const MAX_FREE: usize = 32;

/// Shared pool; cheap to clone.
#[derive(Clone, Default)]
pub struct BufPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A pooled buffer being filled; [`PoolBuf::freeze`] turns it into [`Bytes`].
pub struct PoolBuf {
    buf: Vec<u8>,
    /// Where the caller's window starts in `buf` (chosen for alignment).
    start: usize,
    used: usize,
    pool: BufPool,
}

impl BufPool {
    pub fn new() -> BufPool {
        BufPool::default()
    }

    /// A buffer of exactly `len` bytes (contents unspecified: left over from an earlier use), or `None`
    /// if `len` is larger than [`POOL_BUF`].
    pub fn take(&self, len: usize) -> Option<PoolBuf> {
        self.take_aligned(len, 0)
    }

    /// Like [`BufPool::take`], with byte `lead` of the window at a [`DIRECT_ALIGN`]-aligned address: a
    /// frame whose block data follows `lead` bytes of fixed fields is received so that the data can go to
    /// an O_DIRECT descriptor without a copy.
    pub fn take_aligned(&self, len: usize, lead: usize) -> Option<PoolBuf> {
        if len > POOL_BUF {
            return None;
        }
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let buf = reused.unwrap_or_else(|| vec![0u8; POOL_BUF + DIRECT_ALIGN]);
        let at = (buf.as_ptr() as usize).wrapping_add(lead % DIRECT_ALIGN);
        let start = (DIRECT_ALIGN - at % DIRECT_ALIGN) % DIRECT_ALIGN;
        Some(PoolBuf { buf, start, used: len, pool: self.clone() })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() != POOL_BUF + DIRECT_ALIGN {
            return;
        }
        if let Ok(mut f) = self.free.lock()
            && f.len() < MAX_FREE
        {
            f.push(buf);
        }
    }

    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

impl PoolBuf {
    /// The `len` bytes asked for, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (start, used) = (self.start, self.used);
        &mut self.buf[start..start + used]
    }

    /// Shareable, zero-copy view; the buffer returns to the pool when the last slice is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.used]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool.give_back(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_the_last_slice_drops_and_are_reused() {
        let pool = BufPool::new();
        let mut b = pool.take(8192).unwrap();
        assert_eq!(b.as_mut_slice().len(), 8192);
        b.as_mut_slice()[..4].copy_from_slice(b"abcd");
        let bytes = b.freeze();
        let head = bytes.slice(0..4);
        drop(bytes);
        assert_eq!(pool.free_count(), 0, "a slice still holds the buffer");
        assert_eq!(&head[..], b"abcd");
        drop(head);
        assert_eq!(pool.free_count(), 1);
        let again = pool.take(100).unwrap();
        assert_eq!(again.as_ref().len(), 100);
        assert_eq!(pool.free_count(), 0, "the free buffer was reused");
    }

    #[test]
    fn aligned_windows_put_the_requested_byte_on_a_4k_boundary() {
        let pool = BufPool::new();
        for lead in [0usize, 9, 20, 4095, 4096, 5000] {
            let mut b = pool.take_aligned(POOL_BUF, lead).unwrap();
            let s = b.as_mut_slice();
            assert_eq!(s.len(), POOL_BUF);
            assert_eq!((s.as_ptr() as usize + lead) % DIRECT_ALIGN, 0, "lead {lead}");
        }
    }

    #[test]
    fn oversize_requests_are_not_pooled_and_the_free_list_is_bounded() {
        let pool = BufPool::new();
        assert!(pool.take(POOL_BUF + 1).is_none());
        let many: Vec<_> = (0..MAX_FREE + 5).map(|_| pool.take(POOL_BUF).unwrap()).collect();
        drop(many);
        assert_eq!(pool.free_count(), MAX_FREE);
    }
}
