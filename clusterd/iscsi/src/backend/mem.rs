//! In-memory backend for tests: a byte vector plus a per-block "mapped" bitmap so thin-provisioning
//! commands (UNMAP, GET LBA STATUS) have something observable to act on.

use std::sync::Mutex;

use bytes::Bytes;

use super::{BackendError, BlockBackend, BoxFut, Extent, check_range};

/// Granularity of the mapped bitmap.
const MAP_CHUNK: u64 = 512;

struct MemState {
    data: Vec<u8>,
    /// One entry per MAP_CHUNK bytes: true once written, false after unmap.
    mapped: Vec<bool>,
}

/// A RAM disk. Size must be a multiple of 512.
pub struct MemBackend {
    state: Mutex<MemState>,
    size: u64,
    read_only: bool,
}

impl MemBackend {
    /// A zero-filled, fully unmapped RAM disk of `size` bytes (rounded down to 512).
    pub fn new(size: u64) -> Self {
        let size = size - size % MAP_CHUNK;
        let chunks = usize::try_from(size / MAP_CHUNK).unwrap_or(0);
        let data_len = usize::try_from(size).unwrap_or(0);
        Self {
            state: Mutex::new(MemState {
                data: vec![0; data_len],
                mapped: vec![false; chunks],
            }),
            size,
            read_only: false,
        }
    }

    /// A RAM disk that rejects writes.
    pub fn new_read_only(size: u64) -> Self {
        Self {
            read_only: true,
            ..Self::new(size)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A poisoned lock only means a test panicked while holding it; the bytes are still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn to_usize(v: u64) -> Result<usize, BackendError> {
    usize::try_from(v).map_err(|_| BackendError::OutOfRange)
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, len: u32) -> BoxFut<'_, Result<Bytes, BackendError>> {
        Box::pin(async move {
            check_range(offset, u64::from(len), self.size)?;
            let start = to_usize(offset)?;
            let end = start + to_usize(u64::from(len))?;
            let st = self.lock();
            let slice = st.data.get(start..end).ok_or(BackendError::OutOfRange)?;
            Ok(Bytes::copy_from_slice(slice))
        })
    }

    fn write(&self, offset: u64, data: Bytes, _fua: bool) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if self.read_only {
                return Err(BackendError::ReadOnly);
            }
            check_range(offset, data.len() as u64, self.size)?;
            let start = to_usize(offset)?;
            let end = start + data.len();
            let mut st = self.lock();
            st.data
                .get_mut(start..end)
                .ok_or(BackendError::OutOfRange)?
                .copy_from_slice(&data);
            if !data.is_empty() {
                let first = to_usize(offset / MAP_CHUNK)?;
                let last = to_usize((offset + data.len() as u64 - 1) / MAP_CHUNK)?;
                for m in st
                    .mapped
                    .get_mut(first..=last)
                    .ok_or(BackendError::OutOfRange)?
                {
                    *m = true;
                }
            }
            Ok(())
        })
    }

    fn flush(&self) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn unmap(&self, offset: u64, len: u64) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if self.read_only {
                return Err(BackendError::ReadOnly);
            }
            check_range(offset, len, self.size)?;
            let start = to_usize(offset)?;
            let end = to_usize(offset + len)?;
            let mut st = self.lock();
            st.data
                .get_mut(start..end)
                .ok_or(BackendError::OutOfRange)?
                .fill(0);
            // Only chunks wholly inside the range become unmapped, like a filesystem hole punch.
            let first = offset.div_ceil(MAP_CHUNK);
            let last = (offset + len) / MAP_CHUNK;
            for c in first..last {
                if let Some(m) = st.mapped.get_mut(to_usize(c)?) {
                    *m = false;
                }
            }
            Ok(())
        })
    }

    fn supports_unmap(&self) -> bool {
        true
    }

    fn lba_status(&self, offset: u64, len: u64) -> BoxFut<'_, Result<Vec<Extent>, BackendError>> {
        Box::pin(async move {
            check_range(offset, len, self.size)?;
            let st = self.lock();
            let mut out: Vec<Extent> = Vec::new();
            let end = offset + len;
            let mut pos = offset;
            while pos < end {
                let chunk_end = ((pos / MAP_CHUNK) + 1) * MAP_CHUNK;
                let seg_end = chunk_end.min(end);
                let mapped = st
                    .mapped
                    .get(to_usize(pos / MAP_CHUNK)?)
                    .copied()
                    .unwrap_or(false);
                match out.last_mut() {
                    Some(last) if last.2 == mapped => last.1 += seg_end - pos,
                    _ => out.push((pos, seg_end - pos, mapped)),
                }
                pos = seg_end;
            }
            Ok(out)
        })
    }

    fn describe(&self) -> String {
        format!("mem:{}", self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_read_unmap_status() {
        let b = MemBackend::new(8192);
        b.write(1024, Bytes::from(vec![7u8; 1024]), false)
            .await
            .unwrap();
        assert_eq!(&b.read(1024, 4).await.unwrap()[..], &[7, 7, 7, 7]);
        let st = b.lba_status(0, 8192).await.unwrap();
        assert_eq!(
            st,
            vec![(0, 1024, false), (1024, 1024, true), (2048, 6144, false)]
        );
        b.unmap(1024, 512).await.unwrap();
        assert_eq!(&b.read(1024, 4).await.unwrap()[..], &[0, 0, 0, 0]);
        let st = b.lba_status(1024, 1024).await.unwrap();
        assert_eq!(st, vec![(1024, 512, false), (1536, 512, true)]);
        assert!(matches!(
            b.read(8000, 512).await,
            Err(BackendError::OutOfRange)
        ));
        assert!(matches!(
            b.read(u64::MAX, 512).await,
            Err(BackendError::OutOfRange)
        ));
    }
}
