//! Reservation conflicts, table-driven: every entry of the opcode table has a row here, written from
//! the SPC-4 §5.13.1 and SBC-3 tables independently of the opcode table's `Access` classes, and every
//! row is checked for every reservation type × registered/unregistered non-holder, both against the
//! rule function and by executing the command on a LU.

use std::collections::HashSet;

use super::opcodes::{Access, COMMANDS, op};
use super::reservation::access::{class_of, non_holder_conflicts};
use super::reservation::pr_type;
use super::tests::{harness, run};
use super::*;

/// One table row: allowed (`A`) or conflict (`C`) for a non-holder, in the standard's column order:
/// Write Exclusive, Exclusive Access (any I_T nexus), registered under a registrants-only or
/// all-registrants type, unregistered under WE RO/AR, unregistered under EA RO/AR.
type Row = &'static str;
const ALWAYS: Row = "AAAAA";
const READ: Row = "ACAAC";
const WRITE: Row = "CCACC";

/// (opcode, service action, CDB byte 4 or None, row).
const TABLE: &[(u8, Option<u16>, Option<u8>, Row)] = &[
    (op::TEST_UNIT_READY, None, None, ALWAYS),
    (op::REQUEST_SENSE, None, None, ALWAYS),
    (op::INQUIRY, None, None, ALWAYS),
    (op::REPORT_LUNS, None, None, ALWAYS),
    (op::READ_CAPACITY_10, None, None, ALWAYS),
    (op::SERVICE_ACTION_IN_16, Some(0x10), None, ALWAYS), // READ CAPACITY (16)
    (op::MAINTENANCE_IN, Some(0x0A), None, ALWAYS),       // REPORT TARGET PORT GROUPS
    (op::PERSISTENT_RESERVE_IN, Some(0), None, ALWAYS),
    (op::PERSISTENT_RESERVE_IN, Some(1), None, ALWAYS),
    (op::PERSISTENT_RESERVE_IN, Some(2), None, ALWAYS),
    (op::PERSISTENT_RESERVE_IN, Some(3), None, ALWAYS),
    // PERSISTENT RESERVE OUT has its own table, applied by the service actions themselves.
    (op::PERSISTENT_RESERVE_OUT, Some(0), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(1), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(2), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(3), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(4), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(5), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(6), None, ALWAYS),
    (op::PERSISTENT_RESERVE_OUT, Some(7), None, ALWAYS),
    (op::READ_6, None, None, READ),
    (op::READ_10, None, None, READ),
    (op::READ_12, None, None, READ),
    (op::READ_16, None, None, READ),
    (op::VERIFY_10, None, None, READ),
    (op::VERIFY_12, None, None, READ),
    (op::VERIFY_16, None, None, READ),
    (op::PRE_FETCH_10, None, None, READ),
    (op::PRE_FETCH_16, None, None, READ),
    (op::MODE_SENSE_6, None, None, READ),
    (op::MODE_SENSE_10, None, None, READ),
    (op::READ_DEFECT_DATA_10, None, None, READ),
    (op::READ_DEFECT_DATA_12, None, None, READ),
    (op::SERVICE_ACTION_IN_16, Some(0x12), None, READ), // GET LBA STATUS
    (op::RECEIVE_COPY_RESULTS, Some(0x00), None, READ),
    (op::RECEIVE_COPY_RESULTS, Some(0x03), None, READ),
    (op::MAINTENANCE_IN, Some(0x0C), None, READ), // REPORT SUPPORTED OPERATION CODES
    (op::WRITE_6, None, None, WRITE),
    (op::WRITE_10, None, None, WRITE),
    (op::WRITE_12, None, None, WRITE),
    (op::WRITE_16, None, None, WRITE),
    (op::WRITE_VERIFY_10, None, None, WRITE),
    (op::WRITE_VERIFY_12, None, None, WRITE),
    (op::WRITE_VERIFY_16, None, None, WRITE),
    (op::WRITE_SAME_10, None, None, WRITE),
    (op::WRITE_SAME_16, None, None, WRITE),
    (op::UNMAP, None, None, WRITE),
    (op::COMPARE_AND_WRITE, None, None, WRITE),
    (op::ORWRITE_16, None, None, WRITE),
    (op::SYNCHRONIZE_CACHE_10, None, None, WRITE),
    (op::SYNCHRONIZE_CACHE_16, None, None, WRITE),
    (op::MODE_SELECT_6, None, None, WRITE),
    (op::MODE_SELECT_10, None, None, WRITE),
    (op::EXTENDED_COPY, Some(0x00), None, WRITE),
    // SPC-4 §5.13.3 (CRH = 1): GOOD without effect for registrants under RO/AR types, else conflict
    // while registrations exist.
    (op::RESERVE_6, None, None, WRITE),
    (op::RESERVE_10, None, None, WRITE),
    (op::RELEASE_6, None, None, WRITE),
    (op::RELEASE_10, None, None, WRITE),
    // SBC-3: PREVENT = 0 is always allowed, PREVENT = 1 conflicts.
    (op::PREVENT_ALLOW, None, Some(0x00), ALWAYS),
    (op::PREVENT_ALLOW, None, Some(0x01), WRITE),
    // SBC-3: START = 1 with POWER CONDITION 0 is always allowed, stopping or power conditions conflict.
    (op::START_STOP_UNIT, None, Some(0x01), ALWAYS),
    (op::START_STOP_UNIT, None, Some(0x00), WRITE),
    (op::START_STOP_UNIT, None, Some(0x11), WRITE),
];

/// Which column applies to a non-holder of a `t` reservation.
fn column(t: u8, registered: bool) -> usize {
    let admits = pr_type::admits_registrants(t);
    let we = pr_type::is_write_exclusive(t);
    match (admits, registered, we) {
        (false, _, true) => 0,
        (false, _, false) => 1,
        (true, true, _) => 2,
        (true, false, true) => 3,
        (true, false, false) => 4,
    }
}

fn cdb_of(opcode: u8, sa: Option<u16>, byte4: Option<u8>) -> Vec<u8> {
    let len = match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        _ => 16,
    };
    let mut c = vec![0u8; len];
    c[0] = opcode;
    if let Some(sa) = sa {
        c[1] = sa as u8;
    }
    if let Some(b) = byte4 {
        c[4] = b;
    }
    c
}

#[test]
fn every_opcode_has_a_row() {
    let rows: HashSet<(u8, Option<u16>)> = TABLE.iter().map(|r| (r.0, r.1)).collect();
    for info in COMMANDS {
        assert!(
            rows.contains(&(info.opcode, info.service_action)),
            "opcode {:#04x} sa {:?} has no reservation row",
            info.opcode,
            info.service_action
        );
    }
    for (opcode, sa, _, _) in TABLE {
        assert!(
            COMMANDS
                .iter()
                .any(|i| i.opcode == *opcode && i.service_action == *sa),
            "row for {opcode:#04x} {sa:?} names no command"
        );
    }
}

#[test]
fn rule_function_matches_the_table() {
    for &(opcode, sa, byte4, row) in TABLE {
        let info = COMMANDS
            .iter()
            .find(|i| i.opcode == opcode && i.service_action == sa)
            .expect("a command");
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&{
            let mut c = cdb_of(opcode, sa, byte4);
            c.resize(16, 0);
            c
        });
        let class = class_of(info, &cdb);
        if class == Access::Legacy {
            // RESERVE / RELEASE pass the check and apply §5.13.3 themselves (executed below).
            assert!(matches!(
                opcode,
                op::RESERVE_6 | op::RESERVE_10 | op::RELEASE_6 | op::RELEASE_10
            ));
            continue;
        }
        for t in pr_type::ALL {
            for registered in [false, true] {
                let expect = row.as_bytes()[column(t, registered)] == b'C';
                assert_eq!(
                    non_holder_conflicts(t, registered, class),
                    expect,
                    "{opcode:#04x} sa {sa:?} byte4 {byte4:?} type {t} registered {registered}"
                );
            }
        }
    }
}

/// The same table through `LogicalUnit::execute`: a non-holder gets RESERVATION CONFLICT exactly
/// where the table says so (other outcomes, e.g. CHECK CONDITION for the zeroed CDB fields, count as
/// "allowed": the command got past the reservation check).
#[tokio::test]
async fn executed_commands_follow_the_table() {
    for t in pr_type::ALL {
        for registered in [false, true] {
            let h = harness(true);
            {
                let mut access = h.lu.access.lock().unwrap();
                let pr = &mut access.pr;
                pr.registrations.push(PrRegistration {
                    key: 1,
                    registrant: Registrant::nexus(&h.a),
                });
                if registered {
                    pr.registrations.push(PrRegistration {
                        key: 2,
                        registrant: Registrant::nexus(&h.b),
                    });
                }
                pr.reservation = Some(PrReservation::new(t, &h.a));
            }
            for &(opcode, sa, byte4, row) in TABLE {
                let expect = row.as_bytes()[column(t, registered)] == b'C';
                let r = run(&h, &h.b, &cdb_of(opcode, sa, byte4), &[]).await;
                assert_eq!(
                    r.status == STATUS_RESERVATION_CONFLICT,
                    expect,
                    "{opcode:#04x} sa {sa:?} byte4 {byte4:?} type {t} registered {registered}: {r:?}"
                );
                // The holder is never in conflict.
                let r = run(&h, &h.a, &cdb_of(opcode, sa, byte4), &[]).await;
                assert_ne!(
                    r.status, STATUS_RESERVATION_CONFLICT,
                    "holder, {opcode:#04x}"
                );
                while h.lu.ua.take(&h.a).is_some() || h.lu.ua.take(&h.b).is_some() {}
            }
        }
    }
}
