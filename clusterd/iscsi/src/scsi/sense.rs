//! Sense data (SPC-4 §4.5) and the failure type every command handler returns.
//!
//! Only fixed format (response code 0x70) is produced: D_SENSE in the control mode page is reported as
//! 0 and is not changeable, which keeps the transport contract ("fixed-format sense") simple.

use bytes::Bytes;

use super::{STATUS_BUSY, STATUS_CHECK_CONDITION, STATUS_RESERVATION_CONFLICT};

/// Sense keys used by this target.
pub mod key {
    pub const NO_SENSE: u8 = 0x00;
    pub const NOT_READY: u8 = 0x02;
    pub const MEDIUM_ERROR: u8 = 0x03;
    pub const HARDWARE_ERROR: u8 = 0x04;
    pub const ILLEGAL_REQUEST: u8 = 0x05;
    pub const UNIT_ATTENTION: u8 = 0x06;
    pub const DATA_PROTECT: u8 = 0x07;
    pub const COPY_ABORTED: u8 = 0x0A;
    pub const ABORTED_COMMAND: u8 = 0x0B;
    pub const MISCOMPARE: u8 = 0x0E;
}

/// Additional sense code + qualifier pairs, as `(asc, ascq)`.
pub mod asc {
    pub type Code = (u8, u8);
    pub const NO_ADDITIONAL: Code = (0x00, 0x00);
    pub const NOT_READY_MANUAL_INTERVENTION: Code = (0x04, 0x03);
    pub const NOT_READY_ALUA_TRANSITION: Code = (0x04, 0x0A);
    /// LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    pub const NOT_READY_ALUA_STANDBY: Code = (0x04, 0x0B);
    /// LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
    pub const NOT_READY_ALUA_UNAVAILABLE: Code = (0x04, 0x0C);
    pub const WRITE_ERROR: Code = (0x0C, 0x00);
    pub const UNRECOVERED_READ_ERROR: Code = (0x11, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Code = (0x1D, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Code = (0x1A, 0x00);
    pub const INVALID_OPCODE: Code = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Code = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Code = (0x24, 0x00);
    pub const INVALID_FIELD_IN_COMMAND_IU: Code = (0x0E, 0x03);
    pub const LUN_NOT_SUPPORTED: Code = (0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Code = (0x26, 0x00);
    pub const INVALID_RELEASE_OF_PR: Code = (0x26, 0x04);
    pub const TOO_MANY_TARGET_DESCRIPTORS: Code = (0x26, 0x06);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE: Code = (0x26, 0x07);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: Code = (0x26, 0x08);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE: Code = (0x26, 0x09);
    pub const UNREACHABLE_COPY_TARGET: Code = (0x08, 0x04);
    pub const WRITE_PROTECTED: Code = (0x27, 0x00);
    pub const SOFTWARE_WRITE_PROTECTED: Code = (0x27, 0x02);
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: Code = (0x27, 0x07);
    pub const POWER_ON_RESET: Code = (0x29, 0x00);
    pub const BUS_RESET: Code = (0x29, 0x02);
    pub const BUS_DEVICE_RESET: Code = (0x29, 0x03);
    pub const MODE_PARAMETERS_CHANGED: Code = (0x2A, 0x01);
    pub const RESERVATIONS_PREEMPTED: Code = (0x2A, 0x03);
    pub const RESERVATIONS_RELEASED: Code = (0x2A, 0x04);
    pub const REGISTRATIONS_PREEMPTED: Code = (0x2A, 0x05);
    pub const ASYMMETRIC_ACCESS_STATE_CHANGED: Code = (0x2A, 0x06);
    pub const CAPACITY_DATA_CHANGED: Code = (0x2A, 0x09);
    pub const REPORTED_LUNS_DATA_CHANGED: Code = (0x3F, 0x0E);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Code = (0x2F, 0x00);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Code = (0x39, 0x00);
    pub const INTERNAL_TARGET_FAILURE: Code = (0x44, 0x00);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: Code = (0x55, 0x04);
}

/// Sense-key-specific "field pointer" for ILLEGAL REQUEST (SPC-4 §4.5.2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPointer {
    /// True when the error is in the CDB, false when in the parameter list.
    pub in_cdb: bool,
    pub byte: u16,
    /// Bit number (0..=7) within the byte, if known.
    pub bit: Option<u8>,
}

/// One sense condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub code: asc::Code,
    /// INFORMATION field (e.g. the LBA of a medium error, the miscompare offset).
    pub information: Option<u64>,
    pub field: Option<FieldPointer>,
}

/// Length of the fixed-format sense we emit.
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    pub const fn new(key: u8, code: asc::Code) -> Self {
        Self {
            key,
            code,
            information: None,
            field: None,
        }
    }

    pub fn with_information(mut self, info: u64) -> Self {
        self.information = Some(info);
        self
    }

    /// Encodes fixed-format sense (response code 0x70, current error).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        b[2] = self.key & 0x0F;
        if let Some(info) = self.information {
            // The fixed INFORMATION field is 4 bytes; VALID may only be set if the value fits.
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.code.0;
        b[13] = self.code.1;
        if let Some(fp) = self.field {
            b[15] = 0x80 | if fp.in_cdb { 0x40 } else { 0 };
            if let Some(bit) = fp.bit {
                b[15] |= 0x08 | (bit & 0x07);
            }
            b[16..18].copy_from_slice(&fp.byte.to_be_bytes());
        }
        b
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.to_fixed())
    }
}

/// Why a command did not complete with GOOD status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Check(Sense),
    ReservationConflict,
    Busy,
}

impl Failure {
    pub fn status(&self) -> u8 {
        match self {
            Failure::Check(_) => STATUS_CHECK_CONDITION,
            Failure::ReservationConflict => STATUS_RESERVATION_CONFLICT,
            Failure::Busy => STATUS_BUSY,
        }
    }

    pub fn sense(&self) -> Option<&Sense> {
        match self {
            Failure::Check(s) => Some(s),
            _ => None,
        }
    }

    /// ASC/ASCQ if this is a CHECK CONDITION (handy in tests).
    pub fn code(&self) -> Option<asc::Code> {
        self.sense().map(|s| s.code)
    }
}

/// Result of a command handler: data-in bytes on success.
pub type CmdResult<T = Bytes> = Result<T, Failure>;

/// CHECK CONDITION with the given key and code.
pub fn check(key: u8, code: asc::Code) -> Failure {
    Failure::Check(Sense::new(key, code))
}

/// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and optionally a bit).
pub fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Failure {
    Failure::Check(Sense {
        field: Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        }),
        ..Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB)
    })
}

/// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte`.
pub fn invalid_param_field(byte: u16) -> Failure {
    Failure::Check(Sense {
        field: Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: None,
        }),
        ..Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST)
    })
}

pub fn illegal(code: asc::Code) -> Failure {
    check(key::ILLEGAL_REQUEST, code)
}

pub fn invalid_opcode() -> Failure {
    // SKSV clear: libiscsi counts 20/00 without a field pointer as "not implemented".
    illegal(asc::INVALID_OPCODE)
}

pub fn lba_out_of_range() -> Failure {
    illegal(asc::LBA_OUT_OF_RANGE)
}

pub fn param_list_length_error() -> Failure {
    illegal(asc::PARAMETER_LIST_LENGTH_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY).with_information(0x1234);
        let b = s.to_fixed();
        assert_eq!(b[0], 0xF0, "valid bit + current error");
        assert_eq!(b[2], 0x0E);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!(b[7], 10);
        assert_eq!((b[12], b[13]), (0x1D, 0x00));
        assert_eq!(b[15], 0);

        let s =
            Sense::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR).with_information(1 << 40);
        assert_eq!(
            s.to_fixed()[0],
            0x70,
            "INFORMATION too large for fixed format: VALID stays clear"
        );
    }

    #[test]
    fn field_pointer_encoding() {
        let Failure::Check(s) = invalid_cdb_field(1, Some(4)) else {
            panic!("not a check condition")
        };
        let b = s.to_fixed();
        assert_eq!(b[2], key::ILLEGAL_REQUEST);
        assert_eq!((b[12], b[13]), (0x24, 0x00));
        assert_eq!(b[15], 0x80 | 0x40 | 0x08 | 4);
        assert_eq!(&b[16..18], &[0, 1]);
        let Failure::Check(s) = invalid_param_field(300) else {
            panic!("not a check condition")
        };
        let b = s.to_fixed();
        assert_eq!(b[15], 0x80);
        assert_eq!(&b[16..18], &[1, 44]);
        let Failure::Check(s) = invalid_opcode() else {
            panic!("not a check condition")
        };
        assert_eq!(s.to_fixed()[15], 0, "no SKSV for invalid opcode");
    }

    #[test]
    fn statuses() {
        assert_eq!(Failure::ReservationConflict.status(), 0x18);
        assert_eq!(Failure::Busy.status(), 0x08);
        assert_eq!(lba_out_of_range().status(), 0x02);
        assert_eq!(lba_out_of_range().code(), Some(asc::LBA_OUT_OF_RANGE));
    }
}
