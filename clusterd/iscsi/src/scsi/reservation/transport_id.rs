//! iSCSI TransportIDs (SPC-4 §7.6.4.6): how initiator ports are named in persistent reservation data.
//!
//! Format 00b names an initiator device (`<iqn>`), format 01b an initiator port
//! (`<iqn>,i,0x<isid>`). Registrations here belong to initiator ports, so only format 01b is
//! accepted in a parameter list: a name without an ISID does not identify an I_T nexus.

use crate::scsi::pr_state::{InitiatorPort, MAX_NAME_BYTES};
use crate::scsi::sense::{Failure, FieldPointer, Sense, asc, key};

const PROTOCOL_ISCSI: u8 = 0x05;
const FORMAT_PORT: u8 = 0x01;
/// The ADDITIONAL LENGTH of an iSCSI TransportID is a multiple of 4 and at least 20.
const MIN_ADDITIONAL_LENGTH: usize = 20;
const SEPARATOR: &str = ",i,0x";

/// Encodes `port` as a format 01b TransportID: NUL-terminated name, padded with NULs to a multiple of
/// four and at least 20 bytes.
pub(crate) fn encode(port: &InitiatorPort) -> Vec<u8> {
    let mut name = port.port_name().into_bytes();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < MIN_ADDITIONAL_LENGTH {
        name.push(0);
    }
    let mut t = vec![(FORMAT_PORT << 6) | PROTOCOL_ISCSI, 0];
    t.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

/// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte` (and `bit`, if known).
pub(crate) fn invalid_param(byte: usize, bit: Option<u8>) -> Failure {
    Failure::Check(Sense {
        field: Some(FieldPointer {
            in_cdb: false,
            byte: u16::try_from(byte).unwrap_or(u16::MAX),
            bit,
        }),
        ..Sense::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST)
    })
}

/// Decodes the TransportID at `list[at..]`, which must end by `end`; returns the initiator port and
/// where the next TransportID starts. Field pointers in errors are offsets into `list` (the whole
/// parameter list).
pub(crate) fn parse(list: &[u8], at: usize, end: usize) -> Result<(InitiatorPort, usize), Failure> {
    let header = list
        .get(at..at.saturating_add(4))
        .filter(|_| at.saturating_add(4) <= end)
        .ok_or_else(|| invalid_param(at, None))?;
    if header[0] & 0x0F != PROTOCOL_ISCSI {
        return Err(invalid_param(at, Some(3)));
    }
    if header[0] & 0x30 != 0 {
        return Err(invalid_param(at, Some(5)));
    }
    if header[0] >> 6 != FORMAT_PORT {
        return Err(invalid_param(at, Some(7)));
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let name_at = at + 4;
    let next = name_at + len;
    if len < MIN_ADDITIONAL_LENGTH || !len.is_multiple_of(4) || next > end {
        return Err(invalid_param(at + 2, None));
    }
    let field = list
        .get(name_at..next)
        .ok_or_else(|| invalid_param(at + 2, None))?;
    let text_len = field
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| invalid_param(name_at, None))?;
    let text = std::str::from_utf8(&field[..text_len]).map_err(|_| invalid_param(name_at, None))?;
    let split = text
        .to_ascii_lowercase()
        .rfind(SEPARATOR)
        .ok_or_else(|| invalid_param(name_at, None))?;
    let (name, isid_hex) = (&text[..split], &text[split + SEPARATOR.len()..]);
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid_param(name_at, None));
    }
    let isid_at = name_at + split + SEPARATOR.len();
    let isid: [u8; 6] = hex::decode(isid_hex)
        .ok()
        .and_then(|raw| raw.try_into().ok())
        .ok_or_else(|| invalid_param(isid_at, None))?;
    Ok((
        InitiatorPort {
            name: name.to_string(),
            isid,
        },
        next,
    ))
}
