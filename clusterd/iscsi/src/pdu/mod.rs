//! iSCSI PDU codec (RFC 7143 §11): pure functions over bytes.
//!
//! A PDU on the wire is a 48-byte Basic Header Segment (BHS), optional Additional Header Segments (AHS),
//! an optional header digest, a data segment padded to a multiple of 4 and an optional data digest.
//! [`parse_bhs`] decodes the fixed header into a typed [`Pdu`]; [`frame::decode_frame`] cuts whole PDUs out
//! of a receive buffer without copying the data segment; [`frame::encode`] produces header and trailer
//! buffers so that a data segment can be sent with a vectored write instead of being copied.

pub mod frame;
pub mod types;

pub use frame::{DigestConfig, Frame, OutgoingPdu, decode_frame, encode, peek_data_out};
pub use types::*;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Length of a CRC32C digest on the wire.
pub const DIGEST_LEN: usize = 4;
/// The "reserved" tag value (ITT/TTT 0xffffffff) meaning "no task" or "unsolicited".
pub const RESERVED_TAG: u32 = 0xffff_ffff;
/// Largest data segment the 24-bit DataSegmentLength field can describe.
pub const MAX_DATA_SEGMENT_LEN: u32 = 0x00ff_ffff;

/// Errors of the PDU codec. Every error on input bytes is returned, never panicked on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PduError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("data segment of {len} bytes exceeds the limit of {limit}")]
    DataSegmentTooLong { len: u32, limit: u32 },
    #[error("AHS of {0} bytes is not supported")]
    AhsTooLong(usize),
    #[error("header digest mismatch (got {got:#010x}, computed {computed:#010x})")]
    HeaderDigest { got: u32, computed: u32 },
    #[error("data digest mismatch (got {got:#010x}, computed {computed:#010x})")]
    DataDigest { got: u32, computed: u32 },
    #[error("invalid field in {pdu}: {what}")]
    InvalidField {
        pdu: &'static str,
        what: &'static str,
    },
}

/// Opcodes (RFC 7143 §11.2.1.2). Initiator opcodes are 0x00..0x1f, target opcodes 0x20..0x3f.
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK_REQUEST: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Length fields of a BHS, needed by framing before the PDU is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BhsLengths {
    /// Total AHS length in bytes (the wire field counts 4-byte words).
    pub ahs_len: usize,
    /// Data segment length without padding.
    pub data_len: u32,
}

/// Reads the AHS and data segment lengths of a BHS.
pub fn bhs_lengths(bhs: &[u8; BHS_LEN]) -> BhsLengths {
    BhsLengths {
        ahs_len: usize::from(bhs[4]) * 4,
        data_len: u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]),
    }
}

/// Decodes a BHS into its typed form. The data segment length is not part of the typed structs: it is
/// always derived from the data actually carried.
pub fn parse_bhs(bhs: &[u8; BHS_LEN]) -> Result<Pdu, PduError> {
    Pdu::from_bhs(bhs)
}

/// Number of padding bytes needed to round `len` up to a multiple of 4.
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests;
