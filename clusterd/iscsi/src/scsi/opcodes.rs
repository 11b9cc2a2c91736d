//! The one command table: dispatch, reservation-conflict class and REPORT SUPPORTED OPERATION CODES
//! are all driven from [`COMMANDS`], so what we advertise is exactly what we execute.

use bytes::Bytes;

use super::cdb::{be16, be32};
use super::sense::{CmdResult, invalid_cdb_field};

/// Operation codes.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW: u8 = 0x1E;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const WRITE_VERIFY_10: u8 = 0x2E;
    pub const VERIFY_10: u8 = 0x2F;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const ORWRITE_16: u8 = 0x8B;
    pub const WRITE_16: u8 = 0x8A;
    pub const WRITE_VERIFY_16: u8 = 0x8E;
    pub const VERIFY_16: u8 = 0x8F;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const MAINTENANCE_IN: u8 = 0xA3;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const WRITE_VERIFY_12: u8 = 0xAE;
    pub const VERIFY_12: u8 = 0xAF;
    pub const READ_DEFECT_DATA_12: u8 = 0xB7;

    /// Service actions.
    pub const SAI_READ_CAPACITY_16: u16 = 0x10;
    pub const SAI_GET_LBA_STATUS: u16 = 0x12;
    pub const MI_REPORT_TARGET_PORT_GROUPS: u16 = 0x0A;
    pub const MI_REPORT_SUPPORTED_OPCODES: u16 = 0x0C;
    pub const XCOPY_LID1: u16 = 0x00;
    pub const RCR_COPY_STATUS: u16 = 0x00;
    pub const RCR_OPERATING_PARAMETERS: u16 = 0x03;
}

/// Which handler runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handler {
    TestUnitReady,
    RequestSense,
    Inquiry,
    ModeSense,
    ModeSelect,
    StartStopUnit,
    PreventAllow,
    ReadCapacity10,
    ReadCapacity16,
    Read,
    Write,
    WriteAndVerify,
    Verify,
    PreFetch,
    SynchronizeCache,
    WriteSame,
    Unmap,
    CompareAndWrite,
    OrWrite,
    ReadDefectData,
    ExtendedCopy,
    ReceiveCopyResults,
    GetLbaStatus,
    Reserve,
    Release,
    PrIn,
    PrOut,
    ReportLuns,
    ReportTargetPortGroups,
    ReportSupportedOpcodes,
}

/// How a command interacts with reservations held by another I_T nexus (SPC-4 §5.13.1 table,
/// SBC-3 table of commands allowed in the presence of reservations; see `reservation::access`, which
/// also refines PREVENT ALLOW MEDIUM REMOVAL and START STOP UNIT by their CDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts (INQUIRY, REPORT LUNS, TUR, READ CAPACITY, PR commands, ...).
    Always,
    /// Allowed under Write Exclusive types and for registrants under registrants-only /
    /// all-registrants types; conflicts otherwise (reads, MODE SENSE, REPORT SUPPORTED OPERATION
    /// CODES, ...).
    Read,
    /// Allowed only for registrants under registrants-only / all-registrants types.
    Write,
    /// RESERVE/RELEASE(6/10): their own rules.
    Legacy,
}

/// Whether the unit-attention check applies (SPC-4: INQUIRY, REPORT LUNS and REQUEST SENSE skip it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaPolicy {
    Report,
    Skip,
}

/// One supported command (or one service action of a command).
#[derive(Clone, Copy, Debug)]
pub struct CommandInfo {
    pub opcode: u8,
    pub service_action: Option<u16>,
    pub handler: Handler,
    pub access: Access,
    pub ua: UaPolicy,
    /// CDB USAGE DATA for REPORT SUPPORTED OPERATION CODES; its length is the CDB length.
    pub usage: &'static [u8],
}

use Access::*;
use Handler as H;
use UaPolicy::*;

const fn c(opcode: u8, handler: Handler, access: Access, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: None,
        handler,
        access,
        ua: Report,
        usage,
    }
}

const fn sa(
    opcode: u8,
    sa: u16,
    handler: Handler,
    access: Access,
    usage: &'static [u8],
) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: Some(sa),
        handler,
        access,
        ua: Report,
        usage,
    }
}

const fn no_ua(mut i: CommandInfo) -> CommandInfo {
    i.ua = Skip;
    i
}

const RW10: &[u8] = &[0, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x00];
const RW12: &[u8] = &[
    0, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00,
];
const RW16: &[u8] = &[
    0, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00,
];
const VER10: &[u8] = &[0, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x00];
const VER12: &[u8] = &[
    0, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00,
];
const VER16: &[u8] = &[
    0, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00,
];

/// Every command this target implements. The opcode byte of each usage array is patched in by
/// [`usage_data`], so the arrays above can be shared.
pub static COMMANDS: &[CommandInfo] = &[
    c(
        op::TEST_UNIT_READY,
        H::TestUnitReady,
        Always,
        &[0, 0, 0, 0, 0, 0],
    ),
    no_ua(c(
        op::REQUEST_SENSE,
        H::RequestSense,
        Always,
        &[0, 0x01, 0, 0, 0xFF, 0],
    )),
    c(op::READ_6, H::Read, Read, &[0, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
    c(
        op::WRITE_6,
        H::Write,
        Write,
        &[0, 0x1F, 0xFF, 0xFF, 0xFF, 0],
    ),
    no_ua(c(
        op::INQUIRY,
        H::Inquiry,
        Always,
        &[0, 0x01, 0xFF, 0xFF, 0xFF, 0],
    )),
    c(
        op::MODE_SELECT_6,
        H::ModeSelect,
        Write,
        &[0, 0x11, 0, 0, 0xFF, 0],
    ),
    c(op::RESERVE_6, H::Reserve, Legacy, &[0, 0, 0, 0, 0, 0]),
    c(op::RELEASE_6, H::Release, Legacy, &[0, 0, 0, 0, 0, 0]),
    c(
        op::MODE_SENSE_6,
        H::ModeSense,
        Read,
        &[0, 0x08, 0xFF, 0xFF, 0xFF, 0],
    ),
    c(
        op::START_STOP_UNIT,
        H::StartStopUnit,
        Write,
        &[0, 0x01, 0, 0x0F, 0xF7, 0],
    ),
    c(
        op::PREVENT_ALLOW,
        H::PreventAllow,
        Write,
        &[0, 0, 0, 0, 0x03, 0],
    ),
    c(
        op::READ_CAPACITY_10,
        H::ReadCapacity10,
        Always,
        &[0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0],
    ),
    c(op::READ_10, H::Read, Read, RW10),
    c(op::WRITE_10, H::Write, Write, RW10),
    c(op::WRITE_VERIFY_10, H::WriteAndVerify, Write, VER10),
    c(op::VERIFY_10, H::Verify, Read, VER10),
    c(
        op::PRE_FETCH_10,
        H::PreFetch,
        Read,
        &[0, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0],
    ),
    c(
        op::SYNCHRONIZE_CACHE_10,
        H::SynchronizeCache,
        Write,
        &[0, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0],
    ),
    c(
        op::WRITE_SAME_10,
        H::WriteSame,
        Write,
        &[0, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0],
    ),
    c(
        op::UNMAP,
        H::Unmap,
        Write,
        &[0, 0, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0],
    ),
    c(
        op::MODE_SELECT_10,
        H::ModeSelect,
        Write,
        &[0, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    c(
        op::RESERVE_10,
        H::Reserve,
        Legacy,
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    c(
        op::RELEASE_10,
        H::Release,
        Legacy,
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    c(
        op::MODE_SENSE_10,
        H::ModeSense,
        Read,
        &[0, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_IN,
        0,
        H::PrIn,
        Always,
        &[0, 0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_IN,
        1,
        H::PrIn,
        Always,
        &[0, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_IN,
        2,
        H::PrIn,
        Always,
        &[0, 0x02, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_IN,
        3,
        H::PrIn,
        Always,
        &[0, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        0,
        H::PrOut,
        Always,
        &[0, 0x00, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        1,
        H::PrOut,
        Always,
        &[0, 0x01, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        2,
        H::PrOut,
        Always,
        &[0, 0x02, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        3,
        H::PrOut,
        Always,
        &[0, 0x03, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        4,
        H::PrOut,
        Always,
        &[0, 0x04, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        5,
        H::PrOut,
        Always,
        &[0, 0x05, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        6,
        H::PrOut,
        Always,
        &[0, 0x06, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::PERSISTENT_RESERVE_OUT,
        7,
        H::PrOut,
        Always,
        &[0, 0x07, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ),
    sa(
        op::EXTENDED_COPY,
        op::XCOPY_LID1,
        H::ExtendedCopy,
        Write,
        &[
            0, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    sa(
        op::RECEIVE_COPY_RESULTS,
        op::RCR_COPY_STATUS,
        H::ReceiveCopyResults,
        Read,
        &[
            0, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    sa(
        op::RECEIVE_COPY_RESULTS,
        op::RCR_OPERATING_PARAMETERS,
        H::ReceiveCopyResults,
        Read,
        &[
            0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    c(op::READ_16, H::Read, Read, RW16),
    c(
        op::COMPARE_AND_WRITE,
        H::CompareAndWrite,
        Write,
        &[
            0, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, 0,
        ],
    ),
    c(
        op::ORWRITE_16,
        H::OrWrite,
        Write,
        &[
            0, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F,
            0,
        ],
    ),
    c(op::WRITE_16, H::Write, Write, RW16),
    c(op::WRITE_VERIFY_16, H::WriteAndVerify, Write, VER16),
    c(op::VERIFY_16, H::Verify, Read, VER16),
    c(
        op::PRE_FETCH_16,
        H::PreFetch,
        Read,
        &[
            0, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F,
            0,
        ],
    ),
    c(
        op::SYNCHRONIZE_CACHE_16,
        H::SynchronizeCache,
        Write,
        &[
            0, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F,
            0,
        ],
    ),
    c(
        op::WRITE_SAME_16,
        H::WriteSame,
        Write,
        &[
            0, 0x09, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F,
            0,
        ],
    ),
    sa(
        op::SERVICE_ACTION_IN_16,
        op::SAI_READ_CAPACITY_16,
        H::ReadCapacity16,
        Always,
        &[
            0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    sa(
        op::SERVICE_ACTION_IN_16,
        op::SAI_GET_LBA_STATUS,
        H::GetLbaStatus,
        Read,
        &[
            0, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    no_ua(c(
        op::REPORT_LUNS,
        H::ReportLuns,
        Always,
        &[0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
    )),
    sa(
        op::MAINTENANCE_IN,
        op::MI_REPORT_TARGET_PORT_GROUPS,
        H::ReportTargetPortGroups,
        Always,
        &[0, 0x0A, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
    ),
    sa(
        op::MAINTENANCE_IN,
        op::MI_REPORT_SUPPORTED_OPCODES,
        H::ReportSupportedOpcodes,
        Read,
        &[
            0, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
        ],
    ),
    c(op::READ_12, H::Read, Read, RW12),
    c(op::WRITE_12, H::Write, Write, RW12),
    c(op::WRITE_VERIFY_12, H::WriteAndVerify, Write, VER12),
    c(op::VERIFY_12, H::Verify, Read, VER12),
    c(
        op::READ_DEFECT_DATA_10,
        H::ReadDefectData,
        Read,
        &[0, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0],
    ),
    c(
        op::READ_DEFECT_DATA_12,
        H::ReadDefectData,
        Read,
        &[0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
    ),
];

/// Whether any table entry uses `opcode` with service actions.
pub fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.opcode == opcode && c.service_action.is_some())
}

/// Service action field of a CDB for opcodes that have one.
pub fn service_action_of(cdb: &[u8; 16]) -> u16 {
    u16::from(cdb[1] & 0x1F)
}

/// Looks a CDB up in the table.
pub enum Lookup {
    Found(&'static CommandInfo),
    /// Opcode unknown: 05/20/00.
    UnknownOpcode,
    /// Opcode known but service action unknown: 05/24/00 pointing at byte 1.
    UnknownServiceAction,
}

pub fn lookup(cdb: &[u8; 16]) -> Lookup {
    let opcode = cdb[0];
    if has_service_actions(opcode) {
        let sa = service_action_of(cdb);
        match COMMANDS
            .iter()
            .find(|c| c.opcode == opcode && c.service_action == Some(sa))
        {
            Some(c) => Lookup::Found(c),
            None => Lookup::UnknownServiceAction,
        }
    } else {
        match COMMANDS.iter().find(|c| c.opcode == opcode) {
            Some(c) => Lookup::Found(c),
            None => Lookup::UnknownOpcode,
        }
    }
}

/// CDB usage data with the opcode byte filled in.
pub fn usage_data(info: &CommandInfo) -> Vec<u8> {
    let mut u = info.usage.to_vec();
    if let Some(first) = u.first_mut() {
        *first = info.opcode;
    }
    u
}

/// Command timeouts descriptor (all zero: "no timeout information"), 12 bytes.
fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0A;
    t
}

/// What a LU implements of a table entry: None when the command is not implemented there (UNMAP on a
/// fully provisioned LU), else the CDB usage data (WRITE SAME's UNMAP bit only where it is honoured).
fn implemented_usage(info: &CommandInfo, thin: bool) -> Option<Vec<u8>> {
    let mut u = usage_data(info);
    if !thin {
        match info.opcode {
            op::UNMAP => return None,
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => u[1] &= !0x08,
            _ => {}
        }
    }
    Some(u)
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35). `thin`: the LU implements UNMAP and WRITE SAME with
/// UNMAP; otherwise they are left out, so what is reported equals what the LU executes.
pub fn report_supported_opcodes(cdb: &[u8; 16], thin: bool) -> CmdResult {
    let rctd = cdb[2] & 0x80 != 0;
    let options = cdb[2] & 0x07;
    let req_op = cdb[3];
    let req_sa = be16(cdb, 4);
    let alloc = be32(cdb, 6) as usize;
    let mut out = Vec::new();
    match options {
        0 => {
            for info in COMMANDS
                .iter()
                .filter(|i| implemented_usage(i, thin).is_some())
            {
                let mut d = [0u8; 8];
                d[0] = info.opcode;
                d[2..4].copy_from_slice(&info.service_action.unwrap_or(0).to_be_bytes());
                d[5] = if info.service_action.is_some() {
                    0x01
                } else {
                    0
                } | if rctd { 0x02 } else { 0 };
                d[6..8].copy_from_slice(&(info.usage.len() as u16).to_be_bytes());
                out.extend_from_slice(&d);
                if rctd {
                    out.extend_from_slice(&timeouts_descriptor());
                }
            }
            let len = (out.len() as u32).to_be_bytes();
            out.splice(0..0, len);
        }
        1..=3 => {
            let with_sa = has_service_actions(req_op);
            let found = match options {
                1 if with_sa => return Err(invalid_cdb_field(2, Some(0))),
                2 if !with_sa => return Err(invalid_cdb_field(2, Some(0))),
                3 if !with_sa && req_sa != 0 => None,
                1 => COMMANDS
                    .iter()
                    .find(|c| c.opcode == req_op && c.service_action.is_none()),
                _ => COMMANDS
                    .iter()
                    .find(|c| c.opcode == req_op && c.service_action == Some(req_sa)),
            }
            .and_then(|info| implemented_usage(info, thin));
            let mut hdr = [0u8; 4];
            match found {
                Some(usage) => {
                    hdr[1] = 0x03 | if rctd { 0x80 } else { 0 };
                    hdr[2..4].copy_from_slice(&(usage.len() as u16).to_be_bytes());
                    out.extend_from_slice(&hdr);
                    out.extend_from_slice(&usage);
                    if rctd {
                        out.extend_from_slice(&timeouts_descriptor());
                    }
                }
                None => {
                    hdr[1] = 0x01; // not supported
                    out.extend_from_slice(&hdr);
                }
            }
        }
        _ => return Err(invalid_cdb_field(2, Some(0))),
    }
    out.truncate(alloc);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_consistent() {
        let mut seen = HashSet::new();
        for info in COMMANDS {
            assert!(
                seen.insert((info.opcode, info.service_action)),
                "duplicate {:02x}",
                info.opcode
            );
            let expected_len = match info.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                g => panic!("unexpected group {g}"),
            };
            assert_eq!(
                info.usage.len(),
                expected_len,
                "usage length of {:02x}",
                info.opcode
            );
            if let Some(sa) = info.service_action {
                assert_eq!(
                    u16::from(info.usage[1] & 0x1F),
                    sa,
                    "SA in usage data of {:02x}",
                    info.opcode
                );
            }
        }
        // An opcode is either entirely service-action based or not at all.
        for info in COMMANDS {
            assert_eq!(
                info.service_action.is_some(),
                has_service_actions(info.opcode)
            );
        }
    }

    /// REPORT SUPPORTED OPERATION CODES with allocation length `alloc`, option 0.
    fn rsoc_cdb(alloc: u32) -> [u8; 16] {
        let mut cdb = [0u8; 16];
        cdb[0] = 0xA3;
        cdb[1] = 0x0C;
        cdb[6..10].copy_from_slice(&alloc.to_be_bytes());
        cdb
    }

    #[test]
    fn rsoc_all_lists_every_entry() {
        let mut cdb = rsoc_cdb(65536);
        let data = report_supported_opcodes(&cdb, true).unwrap();
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(len, COMMANDS.len() * 8);
        assert_eq!(data.len(), len + 4);
        cdb[2] = 0x80;
        let data = report_supported_opcodes(&cdb, true).unwrap();
        assert_eq!(data.len(), 4 + COMMANDS.len() * 20);
    }

    #[test]
    fn rsoc_on_a_thick_lu_leaves_out_what_it_does_not_execute() {
        let mut cdb = rsoc_cdb(65536);
        let data = report_supported_opcodes(&cdb, false).unwrap();
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(len, (COMMANDS.len() - 1) * 8);
        assert!(data[4..].chunks(8).all(|d| d[0] != op::UNMAP));
        cdb[2] = 1;
        cdb[3] = op::UNMAP;
        assert_eq!(
            report_supported_opcodes(&cdb, false).unwrap()[1] & 0x07,
            1,
            "UNMAP not supported"
        );
        assert_eq!(report_supported_opcodes(&cdb, true).unwrap()[1] & 0x07, 3);
        for ws in [op::WRITE_SAME_10, op::WRITE_SAME_16] {
            cdb[3] = ws;
            assert_eq!(
                report_supported_opcodes(&cdb, false).unwrap()[5] & 0x08,
                0,
                "no UNMAP bit on a thick LU"
            );
            assert_eq!(
                report_supported_opcodes(&cdb, true).unwrap()[5] & 0x08,
                0x08
            );
        }
    }

    #[test]
    fn rsoc_one_command() {
        let mut cdb = rsoc_cdb(512);
        cdb[2] = 1;
        cdb[3] = op::READ_10;
        let d = report_supported_opcodes(&cdb, true).unwrap();
        assert_eq!(d[1] & 0x07, 3);
        assert_eq!(u16::from_be_bytes([d[2], d[3]]), 10);
        assert_eq!(d[4], op::READ_10);
        cdb[3] = 0xFF; // unsupported opcode
        assert_eq!(report_supported_opcodes(&cdb, true).unwrap()[1] & 0x07, 1);
        cdb[3] = op::PERSISTENT_RESERVE_IN; // has SAs: option 1 is invalid
        assert!(report_supported_opcodes(&cdb, true).is_err());
        cdb[2] = 2;
        cdb[4..6].copy_from_slice(&3u16.to_be_bytes());
        let d = report_supported_opcodes(&cdb, true).unwrap();
        assert_eq!(d[1] & 0x07, 3);
        assert_eq!(&d[4..6], &[0x5E, 0x03]);
        cdb[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(report_supported_opcodes(&cdb, true).unwrap()[1] & 0x07, 1);
    }
}
