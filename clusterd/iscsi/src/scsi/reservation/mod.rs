//! SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (§5.13, §6.16–6.17).
//!
//! - [`access`]: which commands a reservation held by another I_T nexus lets through (SPC-4 §5.13.1
//!   and the SBC-3 table), checked for every command before it is admitted.
//! - [`params`]: the PERSISTENT RESERVE OUT CDB and parameter list, decoded and validated without
//!   looking at the state (TransportIDs in [`transport_id`]).
//! - [`prout`]: the PERSISTENT RESERVE OUT state machine, a pure function from the old state to the
//!   new one plus the unit attentions and task aborts it owes, so every (type × action) cell is
//!   unit-testable and the LU can save the new state *before* it becomes visible; and the LU glue
//!   that saves, commits, aborts and queues.
//! - [`prin`]: PERSISTENT RESERVE IN.
//!
//! Unit attentions go only to the nexuses SPC-4 names and never to the nexus that issued the command
//! (tgt 1.0.85 sent RESERVATIONS RELEASED to the unregistering holder itself and failed libiscsi's
//! ProutReserve.Ownership tests).

pub(crate) mod access;
pub(crate) mod params;
pub(crate) mod prin;
pub(crate) mod prout;
pub(crate) mod transport_id;

use bytes::Bytes;

use super::ItNexus;
use super::lu::{LogicalUnit, lock};
use super::opcodes::op;
use super::sense::{CmdResult, Failure, invalid_cdb_field};

pub use params::{ProutAction, ProutRequest, SpecifiedInitiator, parse_prout};

/// Persistent reservation types.
pub mod pr_type {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;
    pub const ALL: [u8; 6] = [1, 3, 5, 6, 7, 8];

    /// Every registered I_T nexus holds the reservation.
    pub fn is_all_registrants(t: u8) -> bool {
        t == WRITE_EXCLUSIVE_ALL_REGISTRANTS || t == EXCLUSIVE_ACCESS_ALL_REGISTRANTS
    }

    /// Registered I_T nexuses have access (the registrants-only and all-registrants types).
    pub fn admits_registrants(t: u8) -> bool {
        matches!(t, 5..=8)
    }

    /// Non-holders may read (the Write Exclusive types).
    pub fn is_write_exclusive(t: u8) -> bool {
        matches!(
            t,
            WRITE_EXCLUSIVE | WRITE_EXCLUSIVE_REGISTRANTS_ONLY | WRITE_EXCLUSIVE_ALL_REGISTRANTS
        )
    }
}

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

// ---------------------------------------------------------------------------------------------
// SPC-2 RESERVE / RELEASE
// ---------------------------------------------------------------------------------------------

/// How an SPC-2 RESERVE or RELEASE meets persistent reservations (SPC-4 §5.13.3, CRH = 1).
#[derive(Debug, PartialEq, Eq)]
enum LegacyUnderPr {
    /// From a holder, or from a registrant under a registrants-only / all-registrants reservation:
    /// GOOD, nothing changes.
    NoEffect,
    /// Any registration exists (SPC-2 §5.5.1): every RESERVE and RELEASE conflicts.
    Conflict,
    /// No persistent reservation activity: the SPC-2 rules apply.
    Spc2,
}

fn legacy_under_pr(lu: &LogicalUnit, nexus: &ItNexus) -> LegacyUnderPr {
    let access = lock(&lu.access);
    let pr = &access.pr;
    let registered = pr.is_registered(nexus);
    let admits = pr
        .reservation
        .as_ref()
        .is_some_and(|res| pr_type::admits_registrants(res.pr_type));
    if pr.is_holder(nexus) || (registered && admits) {
        LegacyUnderPr::NoEffect
    } else if !pr.registrations.is_empty() {
        LegacyUnderPr::Conflict
    } else {
        LegacyUnderPr::Spc2
    }
}

/// Third-party and extent reservations are not supported.
fn check_legacy_cdb(c: &[u8; 16], ten: u8) -> Result<(), Failure> {
    let bad = if c[0] == ten {
        c[1] & 0x13 != 0
    } else {
        c[1] & 0x1F != 0
    };
    if bad {
        return Err(invalid_cdb_field(1, None));
    }
    Ok(())
}

pub(super) fn reserve_legacy(lu: &LogicalUnit, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
    check_legacy_cdb(c, op::RESERVE_10)?;
    match legacy_under_pr(lu, nexus) {
        LegacyUnderPr::NoEffect => return Ok(Bytes::new()),
        LegacyUnderPr::Conflict => return Err(Failure::ReservationConflict),
        LegacyUnderPr::Spc2 => {}
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
    check_legacy_cdb(c, op::RELEASE_10)?;
    match legacy_under_pr(lu, nexus) {
        LegacyUnderPr::NoEffect => return Ok(Bytes::new()),
        LegacyUnderPr::Conflict => return Err(Failure::ReservationConflict),
        LegacyUnderPr::Spc2 => {}
    }
    let mut holder = lock(&lu.legacy_holder);
    if holder.as_ref() == Some(nexus) {
        *holder = None;
    }
    Ok(Bytes::new())
}
