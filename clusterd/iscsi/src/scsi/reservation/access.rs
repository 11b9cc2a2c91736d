//! Which commands a persistent reservation held by another I_T nexus lets through: SPC-4 §5.13.1
//! (table "SPC commands that are allowed in the presence of various reservations") and the SBC-3
//! table for block commands. The holder itself is never in conflict.
//!
//! The tables have five columns; with this target's commands every row is one of three patterns, the
//! [`Access`] classes of the opcode table:
//!
//! | class | Write Exclusive | Exclusive Access | registered, RO/AR types | unregistered, WE RO/AR | unregistered, EA RO/AR |
//! |---|---|---|---|---|---|
//! | `Always` | allowed | allowed | allowed | allowed | allowed |
//! | `Read` | allowed | conflict | allowed | allowed | conflict |
//! | `Write` | conflict | conflict | allowed | conflict | conflict |
//!
//! (registered non-holders under Write Exclusive / Exclusive Access are in the first two columns.)
//! Two SBC-3 rows depend on the CDB: PREVENT ALLOW MEDIUM REMOVAL with PREVENT = 0 and START STOP UNIT
//! with START = 1 and POWER CONDITION = 0 are always allowed, the other forms are `Write`. SPC-2
//! RESERVE and RELEASE (`Legacy`) pass this check and follow SPC-4 §5.13.3 in their handlers, which
//! amounts to the `Write` pattern (see `reserve_legacy`).

use super::pr_type;
use crate::scsi::opcodes::{Access, CommandInfo, Handler};

/// The class of one command as received: [`CommandInfo::access`] except for the two SBC-3 commands
/// whose row depends on CDB fields.
pub(crate) fn class_of(info: &CommandInfo, cdb: &[u8; 16]) -> Access {
    match info.handler {
        Handler::PreventAllow if cdb[4] & 0x03 == 0 => Access::Always,
        Handler::StartStopUnit if cdb[4] & 0x01 != 0 && cdb[4] >> 4 == 0 => Access::Always,
        _ => info.access,
    }
}

/// Whether a command of `class` from an I_T nexus that does not hold a reservation of `pr_type`
/// conflicts; `registered` says whether that nexus is registered.
pub(crate) fn non_holder_conflicts(pr_type: u8, registered: bool, class: Access) -> bool {
    let registrant_access = registered && pr_type::admits_registrants(pr_type);
    match class {
        Access::Always | Access::Legacy => false,
        Access::Read => !(registrant_access || pr_type::is_write_exclusive(pr_type)),
        Access::Write => !registrant_access,
    }
}
