//! A replicated volume as the block backend of a LUN.
//!
//! The SCSI layer speaks [`BlockBackend`]; this adapter sends every request through the replication
//! engine, so a WRITE completes only when both disks have it (protocol C) and SYNCHRONIZE CACHE waits for
//! the peer. The engine has no discard, so UNMAP is not advertised; [`BlockBackend::unmap`] still keeps
//! its contract (reads as zeroes afterwards) by writing zeroes through the engine, replicated like any
//! other write.

use bytes::Bytes;
use iscsi_target::backend::{BackendError, BlockBackend, BoxFut, Extent};
use replicator::engine::Volume;
use replicator::machine::IoFailure;

/// Keeps a replicated LUN's capacity equal to its volume's size (issue 15 resize): after an online
/// resize — run here or adopted from the peer — the LU re-reads the size, so READ CAPACITY reports it,
/// and queues CAPACITY DATA HAS CHANGED (2A/09) for every I_T nexus. The volume publishes the new
/// size only after its metadata has it. Ends when the LU is dropped (target stopped) or the volume
/// goes down.
pub fn follow_size(lu: std::sync::Weak<iscsi_target::scsi::LogicalUnit>, volume: &Volume) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let mut rx = volume.subscribe();
    let name = volume.name().to_string();
    rt.spawn(async move {
        let mut last = rx.borrow_and_update().size;
        while rx.changed().await.is_ok() {
            let size = rx.borrow_and_update().size;
            if size == last {
                continue;
            }
            let Some(lu) = lu.upgrade() else { return };
            lu.capacity_changed();
            tracing::info!(resource = %name, "LUN capacity {last} -> {size} bytes: unit attention CAPACITY DATA HAS CHANGED queued for every nexus");
            last = size;
        }
    });
}

/// Zero-fill granularity for `unmap`.
const ZERO_CHUNK: u64 = 1 << 20;

pub struct VolumeBackend {
    volume: Volume,
}

impl VolumeBackend {
    pub fn new(volume: Volume) -> Self {
        VolumeBackend { volume }
    }
}

/// Maps engine failures to the backend errors the SCSI layer turns into sense codes: a Secondary or a
/// volume going down is NOT READY (the initiator retries, which is what a failover needs), the rest are
/// medium errors.
fn map_failure(e: IoFailure) -> BackendError {
    match e {
        IoFailure::NotPrimary | IoFailure::Down => BackendError::NotReady(e.to_string()),
        IoFailure::OutOfRange { .. } => BackendError::OutOfRange,
        IoFailure::NoData(_) | IoFailure::Io(_) => BackendError::Io(std::io::Error::other(e.to_string())),
    }
}

impl BlockBackend for VolumeBackend {
    fn size(&self) -> u64 {
        self.volume.size()
    }

    fn read(&self, offset: u64, len: u32) -> BoxFut<'_, Result<Bytes, BackendError>> {
        Box::pin(async move { self.volume.read(offset, u64::from(len)).await.map_err(map_failure) })
    }

    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move { self.volume.write(offset, data, fua).await.map_err(map_failure) })
    }

    fn flush(&self) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move { self.volume.flush().await.map_err(map_failure) })
    }

    fn unmap(&self, offset: u64, len: u64) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let end = offset.checked_add(len).filter(|e| *e <= self.size()).ok_or(BackendError::OutOfRange)?;
            let zeroes = Bytes::from(vec![0u8; ZERO_CHUNK as usize]);
            let mut at = offset;
            while at < end {
                let n = (end - at).min(ZERO_CHUNK);
                self.volume.write(at, zeroes.slice(..n as usize), false).await.map_err(map_failure)?;
                at += n;
            }
            Ok(())
        })
    }

    fn supports_unmap(&self) -> bool {
        false
    }

    fn lba_status(&self, offset: u64, len: u64) -> BoxFut<'_, Result<Vec<Extent>, BackendError>> {
        // Replicated volumes are fully provisioned: everything is mapped.
        Box::pin(async move { Ok(vec![(offset, len, true)]) })
    }

    fn describe(&self) -> String {
        format!("replicated:{}", self.volume.name())
    }
}
