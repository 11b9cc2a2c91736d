//! Decoding of a PERSISTENT RESERVE OUT command (SPC-4 §6.17): the CDB and the parameter list,
//! checked without the PR state so a malformed command is refused before anything is looked at and
//! the state machine only sees well-formed requests.
//!
//! Parameter list errors (all ILLEGAL REQUEST):
//! - PARAMETER LIST LENGTH ERROR (1A/00): the initiator sent less than PARAMETER LIST LENGTH; the
//!   length is not 24 for a service action without SPEC_I_PT other than REGISTER AND MOVE; or it is not
//!   exactly the header plus the TransportID data length the list declares.
//! - INVALID FIELD IN PARAMETER LIST (26/00) with a field pointer: SPEC_I_PT on a service action other
//!   than REGISTER (byte 20 bit 3), a malformed TransportID (the offending field), the same initiator
//!   port listed twice (the second TransportID).
//! - INVALID FIELD IN CDB (24/00): an undefined TYPE (byte 2 bit 3) or a SCOPE other than LU_SCOPE
//!   (byte 2 bit 7) for the service actions that use them.

use super::transport_id::{self, invalid_param};
use super::{pr_type, prout_sa};
use crate::scsi::cdb::{be32, param_be16, param_be32, param_be64};
use crate::scsi::pr_state::InitiatorPort;
use crate::scsi::sense::{Failure, invalid_cdb_field, param_list_length_error};

/// Length of the basic parameter list (and of the header before REGISTER AND MOVE's TransportID).
const BASIC_LIST: usize = 24;
/// SPEC_I_PT lists carry a TRANSPORTID PARAMETER DATA LENGTH after the basic list.
const SPEC_I_PT_HEADER: usize = 28;
const FLAGS: usize = 20;
const FLAG_SPEC_I_PT: u8 = 0x08;
const FLAG_ALL_TG_PT: u8 = 0x04;
const FLAG_APTPL: u8 = 0x01;
const MOVE_FLAGS: usize = 17;
const MOVE_UNREG: u8 = 0x02;
const MOVE_RELATIVE_PORT: usize = 18;
const MOVE_TRANSPORT_ID_LENGTH: usize = 20;

/// One initiator port a SPEC_I_PT REGISTER names, and where its TransportID starts in the parameter
/// list (the field pointer of an error about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecifiedInitiator {
    pub port: InitiatorPort,
    pub offset: u16,
}

/// What a PERSISTENT RESERVE OUT asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProutAction {
    /// REGISTER or REGISTER AND IGNORE EXISTING KEY.
    Register {
        ignore_existing_key: bool,
        all_target_ports: bool,
        /// SPEC_I_PT was set (only valid with REGISTER from an unregistered I_T nexus).
        specify_initiator_ports: bool,
        specified: Vec<SpecifiedInitiator>,
    },
    Reserve {
        pr_type: u8,
    },
    Release {
        pr_type: u8,
    },
    Clear,
    /// PREEMPT, or PREEMPT AND ABORT with `abort`.
    Preempt {
        pr_type: u8,
        abort: bool,
    },
    RegisterAndMove {
        destination: InitiatorPort,
        relative_port: u16,
        unregister: bool,
    },
}

/// A decoded PERSISTENT RESERVE OUT. SCOPE is always LU_SCOPE (anything else is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProutRequest {
    pub action: ProutAction,
    /// RESERVATION KEY: the key the issuing I_T nexus is registered with.
    pub key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub sa_key: u64,
    /// APTPL; only REGISTER, REGISTER AND IGNORE EXISTING KEY and REGISTER AND MOVE carry one, the
    /// other service actions ignore the bit.
    pub aptpl: bool,
}

/// TYPE and SCOPE of RESERVE, RELEASE and the PREEMPTs.
fn reservation_type(c: &[u8; 16]) -> Result<u8, Failure> {
    if c[2] >> 4 != 0 {
        return Err(invalid_cdb_field(2, Some(7)));
    }
    let t = c[2] & 0x0F;
    if !pr_type::ALL.contains(&t) {
        return Err(invalid_cdb_field(2, Some(3)));
    }
    Ok(t)
}

/// Decodes and validates the CDB and parameter list of a PERSISTENT RESERVE OUT. `data` is the
/// Data-Out the initiator sent.
pub fn parse_prout(c: &[u8; 16], data: &[u8]) -> Result<ProutRequest, Failure> {
    let sa = c[1] & 0x1F;
    let length = be32(c, 5) as usize;
    let list = data.get(..length).ok_or_else(param_list_length_error)?;
    if length < BASIC_LIST {
        return Err(param_list_length_error());
    }
    let key = param_be64(list, 0).ok_or_else(param_list_length_error)?;
    let sa_key = param_be64(list, 8).ok_or_else(param_list_length_error)?;
    if sa == prout_sa::REGISTER_AND_MOVE {
        return parse_register_and_move(list, key, sa_key);
    }
    let flags = list[FLAGS];
    let spec_i_pt = flags & FLAG_SPEC_I_PT != 0;
    if spec_i_pt && sa != prout_sa::REGISTER {
        return Err(invalid_param(FLAGS, Some(3)));
    }
    if !spec_i_pt && length != BASIC_LIST {
        return Err(param_list_length_error());
    }
    let register = |ignore_existing_key, specified| ProutAction::Register {
        ignore_existing_key,
        all_target_ports: flags & FLAG_ALL_TG_PT != 0,
        specify_initiator_ports: spec_i_pt,
        specified,
    };
    let action = match sa {
        prout_sa::REGISTER if spec_i_pt => register(false, specified_initiators(list)?),
        prout_sa::REGISTER => register(false, Vec::new()),
        prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY => register(true, Vec::new()),
        prout_sa::RESERVE => ProutAction::Reserve {
            pr_type: reservation_type(c)?,
        },
        prout_sa::RELEASE => ProutAction::Release {
            pr_type: reservation_type(c)?,
        },
        prout_sa::CLEAR => ProutAction::Clear,
        prout_sa::PREEMPT | prout_sa::PREEMPT_AND_ABORT => ProutAction::Preempt {
            pr_type: reservation_type(c)?,
            abort: sa == prout_sa::PREEMPT_AND_ABORT,
        },
        _ => return Err(invalid_cdb_field(1, Some(4))),
    };
    let carries_aptpl = matches!(action, ProutAction::Register { .. });
    Ok(ProutRequest {
        action,
        key,
        sa_key,
        aptpl: carries_aptpl && flags & FLAG_APTPL != 0,
    })
}

/// The TransportID list of a SPEC_I_PT REGISTER: all of it well formed and no initiator port twice.
fn specified_initiators(list: &[u8]) -> Result<Vec<SpecifiedInitiator>, Failure> {
    let declared = param_be32(list, BASIC_LIST).ok_or_else(param_list_length_error)? as usize;
    if SPEC_I_PT_HEADER.checked_add(declared) != Some(list.len()) {
        return Err(param_list_length_error());
    }
    let mut specified: Vec<SpecifiedInitiator> = Vec::new();
    let mut at = SPEC_I_PT_HEADER;
    while at < list.len() {
        let (port, next) = transport_id::parse(list, at, list.len())?;
        if specified.iter().any(|s| s.port == port) {
            return Err(invalid_param(at, None));
        }
        specified.push(SpecifiedInitiator {
            port,
            offset: u16::try_from(at).unwrap_or(u16::MAX),
        });
        at = next;
    }
    Ok(specified)
}

fn parse_register_and_move(list: &[u8], key: u64, sa_key: u64) -> Result<ProutRequest, Failure> {
    let flags = list[MOVE_FLAGS];
    let relative_port = param_be16(list, MOVE_RELATIVE_PORT).ok_or_else(param_list_length_error)?;
    let declared =
        param_be32(list, MOVE_TRANSPORT_ID_LENGTH).ok_or_else(param_list_length_error)? as usize;
    if BASIC_LIST.checked_add(declared) != Some(list.len()) {
        return Err(param_list_length_error());
    }
    let (destination, next) = transport_id::parse(list, BASIC_LIST, list.len())?;
    if next != list.len() {
        // TRANSPORTID PARAMETER DATA LENGTH says more than the one TransportID it may hold.
        return Err(invalid_param(MOVE_TRANSPORT_ID_LENGTH, None));
    }
    Ok(ProutRequest {
        action: ProutAction::RegisterAndMove {
            destination,
            relative_port,
            unregister: flags & MOVE_UNREG != 0,
        },
        key,
        sa_key,
        aptpl: flags & FLAG_APTPL != 0,
    })
}
