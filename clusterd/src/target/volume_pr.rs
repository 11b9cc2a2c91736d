//! A replicated resource as the persistent-reservation store of its LUN.
//!
//! The PR state is replicated state of the resource, exactly like its data (replicator `machine/pr.rs`):
//! a PERSISTENT RESERVE OUT completes only when the new state is stored on both nodes, or on this node
//! with the peer recorded as owed it; whichever node serves the LUN next loads the acknowledged state.
//!
//! Upgrade: the previous release kept the PR state of replicated LUNs in a node-local file
//! (`state-dir/pr/<serial>.pr`). While the resource holds no PR state yet, that file is read instead, so
//! registrations made before the upgrade are not lost; the first PERSISTENT RESERVE OUT after it stores
//! the state in the resource (both nodes), and the file is never written again.

use bytes::Bytes;
use iscsi_target::backend::BoxFut;
use iscsi_target::scsi::{PrStore, ScsiError};
use replicator::engine::Volume;
use std::path::PathBuf;

pub struct VolumePrStore {
    volume: Volume,
    legacy_file: Option<PathBuf>,
}

impl VolumePrStore {
    pub fn new(volume: Volume, legacy_file: Option<PathBuf>) -> Self {
        VolumePrStore { volume, legacy_file }
    }
}

impl PrStore for VolumePrStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ScsiError> {
        let blob = self.volume.pr_state();
        if !blob.is_empty() {
            return Ok(Some(blob.to_vec()));
        }
        let Some(path) = &self.legacy_file else { return Ok(None) };
        match std::fs::read(path) {
            Ok(b) => {
                tracing::warn!(
                    resource = %self.volume.name(),
                    file = %path.display(),
                    "persistent reservations taken from the node-local file of an older release; the next \
                     PERSISTENT RESERVE OUT stores them in the replicated resource"
                );
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ScsiError::PrStoreIo(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))),
        }
    }

    fn save(&self, blob: Bytes) -> BoxFut<'_, Result<(), ScsiError>> {
        Box::pin(async move {
            self.volume
                .pr_update(blob)
                .await
                .map_err(|e| ScsiError::PrStoreIo(std::io::Error::other(format!("{}: {e}", self.volume.name()))))
        })
    }

    fn capacity(&self) -> usize {
        Volume::PR_CAPACITY
    }
}
