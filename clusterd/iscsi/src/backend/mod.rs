//! Block backends behind a logical unit.
//!
//! The SCSI layer speaks only to [`BlockBackend`], so the same command code serves a plain file, a block
//! device, or (later) the replicated volume. All offsets and lengths are in bytes; the SCSI layer has
//! already range-checked them against [`BlockBackend::size`], but implementations still check so a bug
//! upstream cannot turn into an out-of-bounds access.

mod file;
mod mem;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use file::FileBackend;
pub use mem::MemBackend;

/// Boxed future so the trait stays object safe (`Arc<dyn BlockBackend>`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a backend operation failed; the SCSI layer maps each variant to a sense code.
#[derive(thiserror::Error, Debug)]
pub enum BackendError {
    /// The volume cannot serve I/O right now (e.g. it is Secondary during a role change).
    #[error("backend not ready: {0}")]
    NotReady(String),
    /// An I/O error from the OS; ENOSPC is reported to the initiator as a space allocation failure.
    #[error("backend I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The request reaches beyond the end of the backend.
    #[error("request beyond end of backend")]
    OutOfRange,
    /// The backend refuses writes.
    #[error("backend is read-only")]
    ReadOnly,
}

/// One contiguous extent reported by [`BlockBackend::lba_status`]: byte offset, byte length, mapped.
pub type Extent = (u64, u64, bool);

/// Storage for one logical unit. Implementations must be safe to call concurrently.
pub trait BlockBackend: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Read exactly `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u32) -> BoxFut<'_, Result<Bytes, BackendError>>;
    /// Write `data` at `offset`; `fua` asks for the data to be durable before completion.
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFut<'_, Result<(), BackendError>>;
    /// Make every completed write durable.
    fn flush(&self) -> BoxFut<'_, Result<(), BackendError>>;
    /// Deallocate a range; afterwards it reads as zeroes.
    fn unmap(&self, offset: u64, len: u64) -> BoxFut<'_, Result<(), BackendError>>;
    /// Whether [`BlockBackend::unmap`] really deallocates (drives the thin-provisioning advertisement).
    fn supports_unmap(&self) -> bool;
    /// Allocation status of `[offset, offset+len)` as consecutive extents starting at `offset`.
    fn lba_status(&self, offset: u64, len: u64) -> BoxFut<'_, Result<Vec<Extent>, BackendError>>;
    /// Human-readable description, e.g. `file:/path/x.img`.
    fn describe(&self) -> String;
}

/// Checks `offset + len <= size` without overflow.
pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> Result<(), BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange),
    }
}
