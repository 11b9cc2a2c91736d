//! SCSI command layer (SPC-4 / SBC-3) of the embedded iSCSI target.
//!
//! The transport hands each SCSI command to [`ScsiTarget::execute`] with the I_T nexus it arrived on;
//! everything SCSI-visible (unit attentions, reservations, mode pages, identity) lives here. Commands
//! may run concurrently; each [`LogicalUnit`] keeps its own small locks and never holds a lock across a
//! backend await, except the write gate that makes COMPARE AND WRITE atomic.

pub mod alua;
pub mod cdb;
mod inquiry;
mod lu;
mod mode;
pub mod opcodes;
mod pr_state;
pub mod reservation;
mod rw;
pub mod sense;
mod target;
mod task_set;
pub mod unit_attention;
mod xcopy;

use bytes::Bytes;

pub use cdb::{data_out_len, data_out_len_with_block_size};
pub use lu::{LogicalUnit, LunIdentity};
pub use pr_state::{
    FilePrStore, InitiatorPort, MemPrStore, PrRegistration, PrReservation, PrState, PrStore,
    Registrant, TargetPort, TargetPorts, decode_pr_state, encode_pr_state,
};
pub use target::ScsiTarget;
pub use task_set::TaskClaim;

/// SCSI status codes carried in [`ScsiResponse::status`].
pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;
pub const STATUS_BUSY: u8 = 0x08;
pub const STATUS_RESERVATION_CONFLICT: u8 = 0x18;

/// One I_T nexus: initiator port (IQN + ISID) and target port (IQN + TPGT). Registrations and unit
/// attentions are keyed by it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ItNexus {
    /// Initiator IQN.
    pub initiator: String,
    pub isid: [u8; 6],
    /// Target IQN.
    pub target: String,
    pub tpgt: u16,
    /// Relative target port identifier reported in VPD 0x83 and PR data.
    pub relative_port: u16,
}

impl ItNexus {
    /// iSCSI initiator port name as used in TransportIDs: `<iqn>,i,0x<isid>`.
    pub fn initiator_port_name(&self) -> String {
        format!("{},i,0x{}", self.initiator, hex::encode(self.isid))
    }
}

/// One SCSI command as received by the transport.
#[derive(Clone, Debug)]
pub struct ScsiCommand {
    /// Decoded LUN number.
    pub lun: u64,
    /// CDB, zero padded to 16 bytes.
    pub cdb: [u8; 16],
    pub cdb_len: usize,
    /// All Data-Out the initiator sent (at most EDTL); empty for reads.
    pub data_out: Bytes,
    /// Expected data transfer length from the iSCSI header.
    pub expected_len: u32,
    pub task_attr: u8,
    pub task_tag: u32,
}

/// Outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResponse {
    /// 0 GOOD, 2 CHECK CONDITION, 0x18 RESERVATION CONFLICT, 8 BUSY.
    pub status: u8,
    /// Data-In, already truncated to the CDB allocation length (the transport truncates to EDTL).
    pub data_in: Bytes,
    /// Fixed-format sense data (18 bytes) for CHECK CONDITION.
    pub sense: Option<Bytes>,
    /// Bytes the CDB asked to transfer (Data-Out for writes, Data-In for reads); the transport derives
    /// over/underflow residuals from EDTL versus this.
    pub transfer_len: u32,
}

impl ScsiResponse {
    pub fn good(data_in: Bytes, transfer_len: u32) -> Self {
        Self {
            status: STATUS_GOOD,
            data_in,
            sense: None,
            transfer_len,
        }
    }

    pub fn from_failure(f: &sense::Failure, transfer_len: u32) -> Self {
        Self {
            status: f.status(),
            data_in: Bytes::new(),
            sense: f.sense().map(|s| s.to_bytes()),
            transfer_len,
        }
    }

    /// (sense key, asc, ascq) if this is a CHECK CONDITION with sense (for logs and tests).
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        let s = self.sense.as_ref()?;
        Some((*s.get(2)? & 0x0F, *s.get(12)?, *s.get(13)?))
    }
}

/// Errors from constructing logical units and persisting reservation state.
#[derive(thiserror::Error, Debug)]
pub enum ScsiError {
    #[error("unsupported block size {0} (must be 512 or 4096)")]
    InvalidBlockSize(u32),
    #[error("backend size {size} is not a non-zero multiple of the block size {block_size}")]
    InvalidBackendSize { size: u64, block_size: u32 },
    #[error("invalid LU identity: {0}")]
    InvalidIdentity(String),
    #[error("persistent reservation store I/O failed: {0}")]
    PrStoreIo(#[from] std::io::Error),
    #[error("persistent reservation state is corrupt: {0}")]
    CorruptPrState(String),
    /// The state does not fit the on-store encoding (a PERSISTENT RESERVE OUT that would produce it
    /// gets INSUFFICIENT REGISTRATION RESOURCES).
    #[error("persistent reservation state cannot be encoded: {0}")]
    PrStateTooLarge(String),
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_alua;
#[cfg(test)]
mod tests_pr;
#[cfg(test)]
mod tests_pr_abort;
#[cfg(test)]
mod tests_pr_access;
#[cfg(test)]
mod tests_pr_params;
#[cfg(test)]
mod tests_pr_service;
#[cfg(test)]
mod tests_rw;
#[cfg(test)]
mod tests_xcopy;
