//! SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (§5.13, §6.15–6.16).
//!
//! The PERSISTENT RESERVE OUT state machine is a pure function ([`apply_prout`]) from the old state to
//! the new state plus the unit attentions to queue, so every (type × action) cell is unit-testable and
//! the LU can save the new state *before* it becomes visible. Unit attentions go only to the nexuses
//! SPC-4 names and never to the nexus that issued the command (tgt 1.0.85 sent RESERVATIONS RELEASED to
//! the unregistering holder itself and failed libiscsi's ProutReserve.Ownership tests).

use bytes::Bytes;

use super::ItNexus;
use super::cdb::{be16, be32, param_be16, param_be32, param_be64};
use super::lu::{LogicalUnit, lock};
use super::opcodes::op;
use super::pr_state::{PrRegistration, PrReservation, PrState, encode_pr_state};
use super::sense::{
    CmdResult, Failure, asc, check, illegal, invalid_cdb_field, invalid_param_field, key,
    param_list_length_error,
};

/// Persistent reservation types.
pub mod pr_type {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;
    pub const ALL: [u8; 6] = [1, 3, 5, 6, 7, 8];
}
use pr_type::*;

/// PERSISTENT RESERVE OUT service actions.
pub mod prout_sa {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const CLEAR: u8 = 3;
    pub const PREEMPT: u8 = 4;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 6;
    pub const REGISTER_AND_MOVE: u8 = 7;
}
use prout_sa::*;

fn all_registrants(t: u8) -> bool {
    t == WRITE_EXCLUSIVE_ALL_REGISTRANTS || t == EXCLUSIVE_ACCESS_ALL_REGISTRANTS
}

fn registrants_only(t: u8) -> bool {
    t == WRITE_EXCLUSIVE_REGISTRANTS_ONLY || t == EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
}

/// For all-registrants types every registrant holds the reservation; otherwise only the holder.
pub(super) fn is_holder(res: &PrReservation, nexus: &ItNexus, registered: bool) -> bool {
    if all_registrants(res.pr_type) {
        registered
    } else {
        &res.holder == nexus
    }
}

/// SPC-4 §5.13.1 table: may a non-holder read (READ, VERIFY, MODE SENSE, ...)?
pub(super) fn non_holder_may_read(t: u8, registered: bool) -> bool {
    match t {
        WRITE_EXCLUSIVE | WRITE_EXCLUSIVE_REGISTRANTS_ONLY | WRITE_EXCLUSIVE_ALL_REGISTRANTS => {
            true
        }
        EXCLUSIVE_ACCESS_REGISTRANTS_ONLY | EXCLUSIVE_ACCESS_ALL_REGISTRANTS => registered,
        _ => false,
    }
}

/// May a non-holder write?
pub(super) fn non_holder_may_write(t: u8, registered: bool) -> bool {
    match t {
        WRITE_EXCLUSIVE_REGISTRANTS_ONLY
        | EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
        | WRITE_EXCLUSIVE_ALL_REGISTRANTS
        | EXCLUSIVE_ACCESS_ALL_REGISTRANTS => registered,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// SPC-2 RESERVE / RELEASE
// ---------------------------------------------------------------------------------------------

pub(super) fn reserve_legacy(lu: &LogicalUnit, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
    // Third-party and extent reservations are not supported.
    let bad = if c[0] == op::RESERVE_10 {
        c[1] & 0x13 != 0
    } else {
        c[1] & 0x1F != 0
    };
    if bad {
        return Err(invalid_cdb_field(1, None));
    }
    {
        // With persistent reservation activity, RESERVE conflicts (CRH=1 allows the PR holder a no-op).
        let pr = lock(&lu.pr);
        let registered = pr.registrations.iter().any(|r| &r.nexus == nexus);
        match &pr.reservation {
            Some(res) if is_holder(res, nexus, registered) => return Ok(Bytes::new()),
            Some(_) => return Err(Failure::ReservationConflict),
            None if !pr.registrations.is_empty() => return Err(Failure::ReservationConflict),
            None => {}
        }
    }
    let mut holder = lock(&lu.legacy_holder);
    match holder.as_ref() {
        Some(h) if h != nexus => Err(Failure::ReservationConflict),
        _ => {
            *holder = Some(nexus.clone());
            Ok(Bytes::new())
        }
    }
}

/// RELEASE from a nexus that does not hold the reservation is a successful no-op (SPC-2 §7.21).
pub(super) fn release_legacy(lu: &LogicalUnit, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
    let bad = if c[0] == op::RELEASE_10 {
        c[1] & 0x13 != 0
    } else {
        c[1] & 0x1F != 0
    };
    if bad {
        return Err(invalid_cdb_field(1, None));
    }
    let mut holder = lock(&lu.legacy_holder);
    if holder.as_ref() == Some(nexus) {
        *holder = None;
    }
    Ok(Bytes::new())
}

// ---------------------------------------------------------------------------------------------
// PERSISTENT RESERVE IN
// ---------------------------------------------------------------------------------------------

/// iSCSI TransportID, format 01b (name + ISID), NUL terminated and padded to a multiple of 4.
fn transport_id(n: &ItNexus) -> Vec<u8> {
    let mut name = n.initiator_port_name().into_bytes();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < 20 {
        name.push(0);
    }
    let mut t = vec![0x40 | 0x05, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

fn scope_type(res: &PrReservation) -> u8 {
    (res.scope << 4) | (res.pr_type & 0x0F)
}

fn holder_key(pr: &PrState, res: &PrReservation) -> u64 {
    pr.registrations
        .iter()
        .find(|r| r.nexus == res.holder)
        .map_or(0, |r| r.key)
}

pub(super) fn persistent_reserve_in(lu: &LogicalUnit, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
    let _ = nexus;
    let alloc = usize::from(be16(c, 7));
    let pr = lock(&lu.pr).clone();
    let mut d = Vec::new();
    d.extend_from_slice(&pr.generation.to_be_bytes());
    match c[1] & 0x1F {
        0 => {
            d.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
            for r in &pr.registrations {
                d.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => match &pr.reservation {
            None => d.extend_from_slice(&0u32.to_be_bytes()),
            Some(res) => {
                d.extend_from_slice(&16u32.to_be_bytes());
                let k = if all_registrants(res.pr_type) {
                    0
                } else {
                    holder_key(&pr, res)
                };
                d.extend_from_slice(&k.to_be_bytes());
                d.extend_from_slice(&[0, 0, 0, 0, 0, scope_type(res), 0, 0]);
            }
        },
        2 => {
            d.clear();
            d.extend_from_slice(&8u16.to_be_bytes());
            d.push(0x10 | 0x01); // CRH, PTPL_C
            d.push(0x80 | u8::from(pr.aptpl)); // TMV, PTPL_A
            d.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02); // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
            d.push(0x01); // EX_AC_AR
            d.extend_from_slice(&[0, 0]);
        }
        3 => {
            let mut body = Vec::new();
            for r in &pr.registrations {
                let holder = pr
                    .reservation
                    .as_ref()
                    .filter(|res| is_holder(res, &r.nexus, true));
                body.extend_from_slice(&r.key.to_be_bytes());
                body.extend_from_slice(&[0; 4]);
                body.push(u8::from(holder.is_some())); // R_HOLDER; ALL_TG_PT = 0
                body.push(holder.map_or(0, scope_type));
                body.extend_from_slice(&[0; 4]);
                body.extend_from_slice(&r.nexus.relative_port.to_be_bytes());
                let tid = transport_id(&r.nexus);
                body.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                body.extend_from_slice(&tid);
            }
            d.extend_from_slice(&(body.len() as u32).to_be_bytes());
            d.extend_from_slice(&body);
        }
        _ => return Err(invalid_cdb_field(1, Some(4))),
    }
    d.truncate(alloc);
    Ok(Bytes::from(d))
}

// ---------------------------------------------------------------------------------------------
// PERSISTENT RESERVE OUT
// ---------------------------------------------------------------------------------------------

/// Decoded PROUT CDB + parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ProutRequest {
    pub service_action: u8,
    pub scope: u8,
    pub pr_type: u8,
    pub key: u64,
    pub sa_key: u64,
    pub aptpl: bool,
    /// REGISTER AND MOVE only: destination nexus and UNREG.
    pub move_to: Option<(ItNexus, bool)>,
}

/// State after a successful PROUT plus the UAs to queue. `state` is None when nothing changed.
#[derive(Debug, Default)]
pub(super) struct ProutOutcome {
    pub state: Option<PrState>,
    pub unit_attentions: Vec<(ItNexus, asc::Code)>,
}

fn parse_transport_id(tid: &[u8], at: usize) -> Result<(String, [u8; 6]), Failure> {
    let b0 = *tid.first().ok_or_else(param_list_length_error)?;
    if b0 & 0x0F != 0x05 || (b0 >> 6) > 1 {
        return Err(invalid_param_field(at as u16));
    }
    let len = usize::from(param_be16(tid, 2).ok_or_else(param_list_length_error)?);
    let name = tid.get(4..4 + len).ok_or_else(param_list_length_error)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let text =
        std::str::from_utf8(&name[..end]).map_err(|_| invalid_param_field((at + 4) as u16))?;
    if b0 >> 6 == 0 {
        return Ok((text.to_string(), [0; 6]));
    }
    let (iqn, isid_hex) = text
        .split_once(",i,0x")
        .or_else(|| text.split_once(",I,0X"))
        .ok_or_else(|| invalid_param_field((at + 4) as u16))?;
    let raw = hex::decode(isid_hex).map_err(|_| invalid_param_field((at + 4) as u16))?;
    let isid: [u8; 6] = raw
        .try_into()
        .map_err(|_| invalid_param_field((at + 4) as u16))?;
    Ok((iqn.to_string(), isid))
}

/// Decodes and validates the CDB and parameter list of a PERSISTENT RESERVE OUT.
pub(super) fn parse_prout(
    nexus: &ItNexus,
    c: &[u8; 16],
    data: &[u8],
) -> Result<ProutRequest, Failure> {
    let sa = c[1] & 0x1F;
    let scope = c[2] >> 4;
    let ptype = c[2] & 0x0F;
    let plen = be32(c, 5) as usize;
    let list = data.get(..plen).ok_or_else(param_list_length_error)?;
    if sa == REGISTER_AND_MOVE {
        if plen < 24 {
            return Err(param_list_length_error());
        }
    } else if plen != 24 {
        return Err(param_list_length_error());
    }
    let key = param_be64(list, 0).ok_or_else(param_list_length_error)?;
    let sa_key = param_be64(list, 8).ok_or_else(param_list_length_error)?;
    let mut req = ProutRequest {
        service_action: sa,
        scope,
        pr_type: ptype,
        key,
        sa_key,
        aptpl: false,
        move_to: None,
    };
    if sa == REGISTER_AND_MOVE {
        let flags = list.get(17).copied().unwrap_or(0);
        req.aptpl = flags & 0x01 != 0;
        let unreg = flags & 0x02 != 0;
        let rtpi = param_be16(list, 18).ok_or_else(param_list_length_error)?;
        let tid_len = param_be32(list, 20).ok_or_else(param_list_length_error)? as usize;
        let tid = list
            .get(24..24usize.saturating_add(tid_len))
            .ok_or_else(param_list_length_error)?;
        if rtpi != nexus.relative_port {
            return Err(invalid_param_field(18));
        }
        let (initiator, isid) = parse_transport_id(tid, 24)?;
        let dest = ItNexus {
            initiator,
            isid,
            target: nexus.target.clone(),
            tpgt: nexus.tpgt,
            relative_port: rtpi,
        };
        req.move_to = Some((dest, unreg));
    } else {
        let flags = list.get(20).copied().unwrap_or(0);
        if flags & 0x08 != 0 {
            return Err(invalid_param_field(20)); // SPEC_I_PT: SIP_C is 0
        }
        if flags & 0x04 != 0 {
            return Err(invalid_param_field(20)); // ALL_TG_PT: ATP_C is 0
        }
        req.aptpl = flags & 0x01 != 0;
    }
    Ok(req)
}

fn check_type_scope(req: &ProutRequest) -> Result<(), Failure> {
    if req.scope != 0 {
        return Err(invalid_cdb_field(2, Some(7)));
    }
    if !ALL.contains(&req.pr_type) {
        return Err(invalid_cdb_field(2, Some(3)));
    }
    Ok(())
}

fn others(state: &PrState, except: &ItNexus) -> Vec<ItNexus> {
    state
        .registrations
        .iter()
        .filter(|r| &r.nexus != except)
        .map(|r| r.nexus.clone())
        .collect()
}

/// Removes `victim`'s registration, releasing a reservation it held (SPC-4 §5.13.11.3).
fn unregister(
    state: &mut PrState,
    victim: &ItNexus,
    uas: &mut Vec<(ItNexus, asc::Code)>,
    notify_release: bool,
) {
    state.registrations.retain(|r| &r.nexus != victim);
    let Some(res) = state.reservation.clone() else {
        return;
    };
    if all_registrants(res.pr_type) {
        if state.registrations.is_empty() {
            state.reservation = None;
        }
    } else if &res.holder == victim {
        state.reservation = None;
        if notify_release && registrants_only(res.pr_type) {
            for n in others(state, victim) {
                uas.push((n, asc::RESERVATIONS_RELEASED));
            }
        }
    }
}

/// The PERSISTENT RESERVE OUT state machine.
pub(super) fn apply_prout(
    old: &PrState,
    nexus: &ItNexus,
    req: &ProutRequest,
) -> Result<ProutOutcome, Failure> {
    let mut st = old.clone();
    let mut uas = Vec::new();
    let own = st
        .registrations
        .iter()
        .find(|r| &r.nexus == nexus)
        .map(|r| r.key);
    let sa = req.service_action;

    if sa == REGISTER || sa == REGISTER_AND_IGNORE_EXISTING_KEY {
        let ignore = sa == REGISTER_AND_IGNORE_EXISTING_KEY;
        match own {
            None => {
                if !ignore && req.key != 0 {
                    return Err(Failure::ReservationConflict);
                }
                if req.sa_key == 0 {
                    return Ok(ProutOutcome::default());
                }
                st.registrations.push(PrRegistration {
                    key: req.sa_key,
                    nexus: nexus.clone(),
                });
            }
            Some(k) => {
                if !ignore && req.key != k {
                    return Err(Failure::ReservationConflict);
                }
                if req.sa_key == 0 {
                    unregister(&mut st, nexus, &mut uas, true);
                } else if let Some(r) = st.registrations.iter_mut().find(|r| &r.nexus == nexus) {
                    r.key = req.sa_key;
                }
            }
        }
        st.aptpl = req.aptpl;
        st.generation = st.generation.wrapping_add(1);
        return Ok(ProutOutcome {
            state: Some(st),
            unit_attentions: uas,
        });
    }

    // Every other action requires a registered nexus presenting its own key.
    if matches!(
        sa,
        RESERVE | RELEASE | PREEMPT | PREEMPT_AND_ABORT | REGISTER_AND_MOVE
    ) {
        check_type_scope(req)?;
    }
    let Some(own_key) = own else {
        return Err(Failure::ReservationConflict);
    };
    if req.key != own_key {
        return Err(Failure::ReservationConflict);
    }

    match sa {
        RESERVE => match &st.reservation {
            None => {
                st.reservation = Some(PrReservation {
                    holder: nexus.clone(),
                    pr_type: req.pr_type,
                    scope: req.scope,
                });
            }
            Some(res)
                if is_holder(res, nexus, true)
                    && res.pr_type == req.pr_type
                    && res.scope == req.scope =>
            {
                return Ok(ProutOutcome::default());
            }
            Some(_) => return Err(Failure::ReservationConflict),
        },
        RELEASE => {
            let Some(res) = st.reservation.clone() else {
                return Ok(ProutOutcome::default());
            };
            if !is_holder(&res, nexus, true) {
                return Ok(ProutOutcome::default());
            }
            if res.pr_type != req.pr_type || res.scope != req.scope {
                return Err(illegal(asc::INVALID_RELEASE_OF_PR));
            }
            st.reservation = None;
            if res.pr_type != WRITE_EXCLUSIVE && res.pr_type != EXCLUSIVE_ACCESS {
                for n in others(&st, nexus) {
                    uas.push((n, asc::RESERVATIONS_RELEASED));
                }
            }
        }
        CLEAR => {
            for n in others(&st, nexus) {
                uas.push((n, asc::RESERVATIONS_PREEMPTED));
            }
            st.registrations.clear();
            st.reservation = None;
            st.generation = st.generation.wrapping_add(1);
        }
        PREEMPT | PREEMPT_AND_ABORT => {
            preempt(&mut st, nexus, req, &mut uas)?;
            st.generation = st.generation.wrapping_add(1);
        }
        REGISTER_AND_MOVE => {
            let Some((dest, unreg)) = req.move_to.clone() else {
                return Err(invalid_param_field(20));
            };
            let res = st.reservation.clone().ok_or(Failure::ReservationConflict)?;
            if all_registrants(res.pr_type) || res.holder != *nexus {
                return Err(Failure::ReservationConflict);
            }
            if req.sa_key == 0 {
                return Err(invalid_param_field(8));
            }
            if dest == *nexus {
                return Err(invalid_param_field(24));
            }
            match st.registrations.iter_mut().find(|r| r.nexus == dest) {
                Some(r) => r.key = req.sa_key,
                None => st.registrations.push(PrRegistration {
                    key: req.sa_key,
                    nexus: dest.clone(),
                }),
            }
            st.reservation = Some(PrReservation {
                holder: dest,
                pr_type: req.pr_type,
                scope: req.scope,
            });
            if unreg {
                st.registrations.retain(|r| &r.nexus != nexus);
            }
            st.aptpl = req.aptpl;
            st.generation = st.generation.wrapping_add(1);
        }
        _ => return Err(invalid_cdb_field(1, Some(4))),
    }
    Ok(ProutOutcome {
        state: Some(st),
        unit_attentions: uas,
    })
}

/// PREEMPT (SPC-4 §5.13.11.4): remove registrations with the service action key and, if that key
/// belongs to the reservation holder (or it is 0 under an all-registrants reservation), take over.
fn preempt(
    st: &mut PrState,
    nexus: &ItNexus,
    req: &ProutRequest,
    uas: &mut Vec<(ItNexus, asc::Code)>,
) -> Result<(), Failure> {
    let sark = req.sa_key;
    let remove_matching =
        |st: &mut PrState, uas: &mut Vec<(ItNexus, asc::Code)>, all: bool| -> usize {
            let victims: Vec<ItNexus> = st
                .registrations
                .iter()
                .filter(|r| &r.nexus != nexus && (all || r.key == sark))
                .map(|r| r.nexus.clone())
                .collect();
            st.registrations.retain(|r| !victims.contains(&r.nexus));
            for v in &victims {
                uas.push((v.clone(), asc::REGISTRATIONS_PREEMPTED));
            }
            victims.len()
        };
    let res = st.reservation.clone();
    match res {
        Some(res) if all_registrants(res.pr_type) && sark == 0 => {
            remove_matching(st, uas, true);
            st.reservation = Some(PrReservation {
                holder: nexus.clone(),
                pr_type: req.pr_type,
                scope: req.scope,
            });
        }
        Some(res) if !all_registrants(res.pr_type) && holder_key(st, &res) == sark => {
            remove_matching(st, uas, false);
            let changed = res.pr_type != req.pr_type || res.scope != req.scope;
            st.reservation = Some(PrReservation {
                holder: nexus.clone(),
                pr_type: req.pr_type,
                scope: req.scope,
            });
            if changed {
                for n in others(st, nexus) {
                    uas.push((n, asc::RESERVATIONS_RELEASED));
                }
            }
        }
        _ => {
            if sark == 0 {
                return Err(invalid_param_field(8));
            }
            // Self-preemption of one's own key is a no-op on the registration itself.
            let own_matches = st
                .registrations
                .iter()
                .any(|r| &r.nexus == nexus && r.key == sark);
            if remove_matching(st, uas, false) == 0 && !own_matches {
                return Err(Failure::ReservationConflict);
            }
            // Removing the holder of a non-AR reservation releases it.
            if let Some(res) = st.reservation.clone()
                && !all_registrants(res.pr_type)
                && !st.registrations.iter().any(|r| r.nexus == res.holder)
            {
                st.reservation = None;
            }
        }
    }
    Ok(())
}

pub(super) async fn persistent_reserve_out(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    data: &Bytes,
) -> CmdResult {
    let req = parse_prout(nexus, c, data)?;
    let _serial = lu.pr_update.lock().await;
    let old = lock(&lu.pr).clone();
    let outcome = apply_prout(&old, nexus, &req)?;
    if let Some(new_state) = outcome.state {
        // Durable before visible: a failover right after GOOD must not lose this PROUT.
        let blob = encode_pr_state(&new_state);
        if blob.len() > lu.pr_store.capacity() {
            return Err(illegal(asc::INSUFFICIENT_REGISTRATION_RESOURCES));
        }
        if let Err(e) = lu.pr_store.save(Bytes::from(blob)).await {
            tracing::error!(error = %e, "saving persistent reservation state failed");
            return Err(check(key::HARDWARE_ERROR, asc::INTERNAL_TARGET_FAILURE));
        }
        *lock(&lu.pr) = new_state;
    }
    for (n, code) in outcome.unit_attentions {
        debug_assert!(&n != nexus, "PR unit attention routed to the issuing nexus");
        if &n != nexus {
            lu.ua.add(&n, code);
        }
    }
    Ok(Bytes::new())
}
