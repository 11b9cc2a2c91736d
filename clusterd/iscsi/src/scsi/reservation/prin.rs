//! PERSISTENT RESERVE IN (SPC-4 §6.16): READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL
//! STATUS. Every answer is built whole and then cut to the ALLOCATION LENGTH, so its length fields
//! always describe the complete data.

use bytes::Bytes;

use super::transport_id;
use crate::scsi::cdb::be16;
use crate::scsi::lu::{LogicalUnit, lock};
use crate::scsi::pr_state::{PrReservation, PrState, TargetPorts};
use crate::scsi::sense::{CmdResult, invalid_cdb_field};

pub(crate) mod prin_sa {
    pub const READ_KEYS: u8 = 0;
    pub const READ_RESERVATION: u8 = 1;
    pub const REPORT_CAPABILITIES: u8 = 2;
    pub const READ_FULL_STATUS: u8 = 3;
}

/// REPORT CAPABILITIES byte 2: CRH (SPC-2 RESERVE/RELEASE under PR per §5.13.3), SIP_C (SPEC_I_PT),
/// ATP_C (ALL_TG_PT), PTPL_C (APTPL).
const CAPABILITIES: u8 = 0x10 | 0x08 | 0x04 | 0x01;
/// Byte 3: TMV (the type mask is valid) and ALLOW COMMANDS 011b: TEST UNIT READY passes Write
/// Exclusive and Exclusive Access reservations, and MODE SENSE, RECEIVE COPY RESULTS, REPORT SUPPORTED
/// OPERATION CODES and READ DEFECT DATA pass Write Exclusive ones (the `Read` access class).
const TYPE_MASK_VALID_ALLOW_COMMANDS: u8 = 0x80 | (0b011 << 4);
/// PTPL_A in byte 3: APTPL is active.
const PTPL_ACTIVE: u8 = 0x01;
/// The type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; and EX_AC_AR.
const TYPE_MASK: [u8; 2] = [0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01];

fn scope_type(res: &PrReservation) -> u8 {
    (res.scope << 4) | (res.pr_type & 0x0F)
}

pub(crate) fn persistent_reserve_in(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let alloc = usize::from(be16(c, 7));
    let pr = lock(&lu.access).pr.clone();
    let mut d = match c[1] & 0x1F {
        prin_sa::READ_KEYS => read_keys(&pr),
        prin_sa::READ_RESERVATION => read_reservation(&pr),
        prin_sa::REPORT_CAPABILITIES => report_capabilities(&pr),
        prin_sa::READ_FULL_STATUS => read_full_status(&pr),
        _ => return Err(invalid_cdb_field(1, Some(4))),
    };
    d.truncate(alloc);
    Ok(Bytes::from(d))
}

/// PRgeneration, ADDITIONAL LENGTH, then `body`.
fn with_header(pr: &PrState, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + body.len());
    d.extend_from_slice(&pr.generation.to_be_bytes());
    d.extend_from_slice(&(body.len().min(u32::MAX as usize) as u32).to_be_bytes());
    d.extend_from_slice(body);
    d
}

/// One key per registration (an ALL_TG_PT registration is one registration).
fn read_keys(pr: &PrState) -> Vec<u8> {
    let keys: Vec<u8> = pr
        .registrations
        .iter()
        .flat_map(|r| r.key.to_be_bytes())
        .collect();
    with_header(pr, &keys)
}

/// The reservation: the holder's key (0 for all-registrants types), scope and type.
fn read_reservation(pr: &PrState) -> Vec<u8> {
    let Some(res) = &pr.reservation else {
        return with_header(pr, &[]);
    };
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(&pr.reservation_key().to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, scope_type(res), 0, 0]);
    with_header(pr, &body)
}

fn report_capabilities(pr: &PrState) -> Vec<u8> {
    let mut d = Vec::with_capacity(8);
    d.extend_from_slice(&8u16.to_be_bytes());
    d.push(CAPABILITIES);
    d.push(TYPE_MASK_VALID_ALLOW_COMMANDS | if pr.aptpl { PTPL_ACTIVE } else { 0 });
    d.extend_from_slice(&TYPE_MASK);
    d.extend_from_slice(&[0, 0]);
    d
}

/// One full status descriptor per registration: key, ALL_TG_PT, R_HOLDER (with scope and type),
/// relative target port identifier (0 for ALL_TG_PT, where SPC-4 leaves it undefined) and the
/// initiator port's TransportID.
fn read_full_status(pr: &PrState) -> Vec<u8> {
    let mut body = Vec::new();
    for r in &pr.registrations {
        let holds = pr.reservation.as_ref().filter(|res| match &res.holder {
            None => true,
            Some(h) => r.registrant.covers(h),
        });
        let (all_tg_pt, relative_port) = match &r.registrant.ports {
            TargetPorts::All => (true, 0),
            TargetPorts::One(p) => (false, p.relative_id),
        };
        body.extend_from_slice(&r.key.to_be_bytes());
        body.extend_from_slice(&[0; 4]);
        body.push((u8::from(all_tg_pt) << 1) | u8::from(holds.is_some()));
        body.push(holds.map_or(0, scope_type));
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&relative_port.to_be_bytes());
        let tid = transport_id::encode(&r.registrant.initiator);
        body.extend_from_slice(&(tid.len() as u32).to_be_bytes());
        body.extend_from_slice(&tid);
    }
    with_header(pr, &body)
}
