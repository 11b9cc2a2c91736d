//! PERSISTENT RESERVE OUT service actions cell by cell: PREEMPT's three cases, REGISTER AND MOVE,
//! ALL_TG_PT, SPEC_I_PT, APTPL, PRgeneration, which unit attentions go where; and a proptest driving
//! the pure state machine with random requests.

use std::sync::Arc;

use proptest::prelude::*;

use super::pr_state::MAX_NAME_BYTES;
use super::reservation::params::{ProutAction, ProutRequest, SpecifiedInitiator};
use super::reservation::prout::apply_prout;
use super::reservation::{pr_type, prout_sa};
use super::tests::{
    Harness, assert_good, assert_sense, clear_ua, harness, harness_with, nexus, run,
};
use super::tests_pr::{can_read, can_write, pr_in, pr_out, prout};
use super::tests_pr_params::{port_name, register_and_move, register_specified, tid};
use super::*;

const PREEMPTED: (u8, u8) = (0x2A, 0x03);
const RELEASED: (u8, u8) = (0x2A, 0x04);
const REG_PREEMPTED: (u8, u8) = (0x2A, 0x05);

fn uas(h: &Harness, n: &ItNexus) -> Vec<(u8, u8)> {
    let v = h.lu.pending_unit_attentions(n);
    clear_ua(&h.lu, n);
    v
}

/// Harness with a third logged-in nexus c; a, b, c registered with keys A, B, C (UAs cleared).
async fn three_registered() -> (Harness, ItNexus) {
    let h = harness(false);
    let c = nexus("iqn.init-c", 3);
    h.target.nexus_added(&c);
    clear_ua(&h.lu, &c);
    for (n, k) in [(&h.a, 0xA), (&h.b, 0xB), (&c, 0xC)] {
        assert_good(&pr_out(&h, n, prout_sa::REGISTER, 0, 0, k).await);
    }
    (h, c)
}

fn keys(h: &Harness) -> Vec<u64> {
    h.lu.pr_state()
        .registrations
        .iter()
        .map(|r| r.key)
        .collect()
}

fn reservation(h: &Harness) -> Option<(u8, Option<ItNexus>)> {
    h.lu.pr_state().reservation.map(|r| (r.pr_type, r.holder))
}

#[tokio::test]
async fn prgeneration_counts_registration_changes_only() {
    let h = harness(false);
    let generation = || h.lu.pr_state().generation;
    let steps: [(&ItNexus, u8, u8, u64, u64, u32); 10] = [
        (&h.a, prout_sa::REGISTER, 0, 0, 0, 0), // unregistered, key 0: nothing
        (&h.a, prout_sa::REGISTER, 0, 0, 0xA, 1),
        (&h.a, prout_sa::REGISTER, 0, 0xA, 0xA, 1), // same key again still counts
        (
            &h.b,
            prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
            0,
            7,
            0xB,
            1,
        ),
        (&h.a, prout_sa::RESERVE, 5, 0xA, 0, 0),
        (&h.a, prout_sa::RESERVE, 5, 0xA, 0, 0), // no-op
        (&h.a, prout_sa::RELEASE, 5, 0xA, 0, 0),
        (&h.b, prout_sa::PREEMPT, 5, 0xB, 0xA, 1),
        (&h.b, prout_sa::RESERVE, 3, 0xB, 0, 0),
        (&h.b, prout_sa::CLEAR, 0, 0xB, 0, 1),
    ];
    for (n, sa, t, key, sark, delta) in steps {
        clear_ua(&h.lu, n);
        let before = generation();
        assert_good(&pr_out(&h, n, sa, t, key, sark).await);
        assert_eq!(
            generation(),
            before + delta,
            "sa {sa} key {key:#x} sark {sark:#x}"
        );
    }
    // A refused command changes nothing.
    clear_ua(&h.lu, &h.a);
    let before = generation();
    let r = pr_out(&h, &h.a, prout_sa::REGISTER, 0, 5, 6).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    assert_eq!(generation(), before);
}

#[tokio::test]
async fn preempt_of_an_all_registrants_reservation_with_key_zero() {
    let (h, c) = three_registered().await;
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 7, 0xA, 0).await);
    assert_good(&pr_out(&h, &h.b, prout_sa::PREEMPT, 5, 0xB, 0).await);
    assert_eq!(keys(&h), vec![0xB]);
    assert_eq!(reservation(&h), Some((5, Some(h.b.clone()))));
    assert_eq!(uas(&h, &h.a), vec![REG_PREEMPTED]);
    assert_eq!(uas(&h, &c), vec![REG_PREEMPTED]);
    assert!(uas(&h, &h.b).is_empty(), "never the issuer");
}

#[tokio::test]
async fn preempt_of_the_holders_key() {
    let (h, c) = three_registered().await;
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 0xA, 0).await);
    // Same type: the preempted registration hears of it, the others do not.
    assert_good(&pr_out(&h, &h.b, prout_sa::PREEMPT, 1, 0xB, 0xA).await);
    assert_eq!(keys(&h), vec![0xB, 0xC]);
    assert_eq!(reservation(&h), Some((1, Some(h.b.clone()))));
    assert_eq!(uas(&h, &h.a), vec![REG_PREEMPTED]);
    assert!(uas(&h, &c).is_empty());
    assert!(uas(&h, &h.b).is_empty());
    // The holder preempting itself with another type keeps its registration; the type change is a
    // RESERVATIONS RELEASED for the other registrants.
    assert_good(&pr_out(&h, &h.b, prout_sa::PREEMPT, 3, 0xB, 0xB).await);
    assert_eq!(keys(&h), vec![0xB, 0xC]);
    assert_eq!(reservation(&h), Some((3, Some(h.b.clone()))));
    assert_eq!(uas(&h, &c), vec![RELEASED]);
    assert!(uas(&h, &h.b).is_empty());
}

#[tokio::test]
async fn preempt_of_other_keys_removes_registrations_only() {
    let (h, c) = three_registered().await;
    // c shares b's key.
    assert_good(&pr_out(&h, &c, prout_sa::REGISTER, 0, 0xC, 0xB).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 5, 0xA, 0).await);
    // b preempts key B (not the holder's): b's own and c's registrations go, the reservation stays.
    assert_good(&pr_out(&h, &h.b, prout_sa::PREEMPT, 6, 0xB, 0xB).await);
    assert_eq!(keys(&h), vec![0xA]);
    assert_eq!(reservation(&h), Some((5, Some(h.a.clone()))));
    assert_eq!(uas(&h, &c), vec![REG_PREEMPTED]);
    assert!(uas(&h, &h.b).is_empty());
    assert!(uas(&h, &h.a).is_empty());
    // A key nobody holds conflicts; a non-registrant cannot preempt.
    let r = pr_out(&h, &h.a, prout_sa::PREEMPT, 5, 0xA, 0x99).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    let r = pr_out(&h, &h.b, prout_sa::PREEMPT, 5, 0xB, 0xA).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    // Under an all-registrants reservation a non-zero key removes only that key; the reservation goes
    // with its last registrant.
    assert_good(&pr_out(&h, &h.a, prout_sa::RELEASE, 5, 0xA, 0).await);
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 8, 0xA, 0).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::PREEMPT, 1, 0xA, 0xB).await);
    assert_eq!(reservation(&h), Some((8, None)));
    assert_eq!(uas(&h, &h.b), vec![REG_PREEMPTED]);
    assert_good(&pr_out(&h, &h.a, prout_sa::PREEMPT, 1, 0xA, 0xA).await);
    assert_eq!(h.lu.pr_state().registrations, vec![]);
    assert_eq!(reservation(&h), None);
}

#[tokio::test]
async fn release_and_unregister_of_all_registrants_reservations() {
    let (h, c) = three_registered().await;
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 8, 0xA, 0).await);
    // Every registrant is a holder: b may release what a reserved, and everyone else hears it.
    assert_good(&pr_out(&h, &h.b, prout_sa::RESERVE, 8, 0xB, 0).await);
    assert_sense(
        &pr_out(&h, &h.b, prout_sa::RELEASE, 7, 0xB, 0).await,
        5,
        0x26,
        0x04,
    );
    assert_good(&pr_out(&h, &h.b, prout_sa::RELEASE, 8, 0xB, 0).await);
    assert_eq!(uas(&h, &h.a), vec![RELEASED]);
    assert_eq!(uas(&h, &c), vec![RELEASED]);
    assert!(uas(&h, &h.b).is_empty());
    // Unregistering under an all-registrants reservation: it stays until the last registrant goes.
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 7, 0xA, 0).await);
    for (n, k) in [(&h.a, 0xA), (&h.b, 0xB)] {
        assert_good(&pr_out(&h, n, prout_sa::REGISTER, 0, k, 0).await);
        assert_eq!(reservation(&h), Some((7, None)));
    }
    assert!(can_write(&h, &c).await);
    assert!(!can_write(&h, &h.a).await);
    assert_good(&pr_out(&h, &c, prout_sa::REGISTER, 0, 0xC, 0).await);
    assert_eq!(reservation(&h), None);
    for n in [&h.a, &h.b, &c] {
        assert!(uas(&h, n).is_empty());
    }
}

#[tokio::test]
async fn register_and_move_hands_over_the_reservation() {
    let (h, c) = three_registered().await;
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 5, 0xA, 0).await);
    let generation = h.lu.pr_state().generation;
    // To a registered destination: its key is replaced; the CDB's TYPE (1) is ignored.
    assert_good(&register_and_move(&h, &h.a, 0xA, 0xBB, 1, &tid(&port_name(&h.b)), false).await);
    let st = h.lu.pr_state();
    assert_eq!(keys(&h), vec![0xA, 0xBB, 0xC]);
    assert_eq!(reservation(&h), Some((5, Some(h.b.clone()))));
    assert_eq!(st.generation, generation + 1);
    for n in [&h.a, &h.b, &c] {
        assert!(uas(&h, n).is_empty(), "no unit attention for a move");
    }
    // To an unregistered one, with UNREG: the mover's registration goes.
    let d = nexus("iqn.init-d", 4);
    h.target.nexus_added(&d);
    clear_ua(&h.lu, &d);
    assert_good(&register_and_move(&h, &h.b, 0xBB, 0xD, 1, &tid(&port_name(&d)), true).await);
    assert_eq!(keys(&h), vec![0xA, 0xC, 0xD]);
    assert_eq!(reservation(&h), Some((5, Some(d.clone()))));
    assert!(can_write(&h, &d).await);
    assert!(!can_write(&h, &h.b).await);
    assert!(can_read(&h, &h.b).await, "WERO lets the unregistered read");
}

/// A second target port of the LU (another TPGT) and a's initiator port logged in through it.
fn second_port(h: &Harness) -> ItNexus {
    let a2 = ItNexus {
        tpgt: 2,
        relative_port: 2,
        ..h.a.clone()
    };
    h.target.nexus_added(&a2);
    clear_ua(&h.lu, &a2);
    a2
}

#[tokio::test]
async fn all_target_ports_is_one_registration_for_every_port() {
    let h = harness(false);
    let a2 = second_port(&h);
    let (c, p) = prout(prout_sa::REGISTER, 0, 0, 0xA, 0x04);
    assert_good(&run(&h, &h.a, &c, &p).await);
    let st = h.lu.pr_state();
    assert_eq!(st.registrations.len(), 1);
    assert_eq!(st.registrations[0].registrant.ports, TargetPorts::All);
    assert!(st.is_registered(&a2));
    // The nexus through the other port reserves with the same key; the holder is that nexus.
    assert_good(&pr_out(&h, &a2, prout_sa::RESERVE, 1, 0xA, 0).await);
    assert_eq!(reservation(&h), Some((1, Some(a2.clone()))));
    assert!(can_write(&h, &a2).await);
    assert!(
        !can_write(&h, &h.a).await,
        "a different I_T nexus of the same registration"
    );
    // READ FULL STATUS: one descriptor, ALL_TG_PT and R_HOLDER set, relative port 0.
    let d = pr_in(&h, &h.b, 3).await;
    assert_eq!(
        u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize,
        24 + 32
    );
    assert_eq!((d[8 + 12], d[8 + 13]), (0x03, 0x01));
    assert_eq!(&d[8 + 18..8 + 20], &[0, 0]);
    // A CLEAR from b reaches both of a's logged-in nexuses.
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    assert_good(&pr_out(&h, &h.b, prout_sa::CLEAR, 0, 0xB, 0).await);
    assert_eq!(uas(&h, &h.a), vec![PREEMPTED]);
    assert_eq!(uas(&h, &a2), vec![PREEMPTED]);
    assert!(uas(&h, &h.b).is_empty());
}

#[tokio::test]
async fn all_target_ports_over_a_single_port_registration() {
    let h = harness(false);
    let a2 = second_port(&h);
    assert_good(&pr_out(&h, &a2, prout_sa::REGISTER, 0, 0, 0x2).await);
    // Through port 1 a REGISTER with ALL_TG_PT would meet a2's registration with key 0: conflict.
    let (c, p) = prout(prout_sa::REGISTER, 0, 0, 0xA, 0x04);
    assert_eq!(
        run(&h, &h.a, &c, &p).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    // REGISTER AND IGNORE EXISTING KEY replaces it with one ALL_TG_PT registration.
    let (c, p) = prout(prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, 0xA, 0x04);
    assert_good(&run(&h, &h.a, &c, &p).await);
    assert_eq!(keys(&h), vec![0xA]);
    // From a registered nexus ALL_TG_PT is ignored: the key change and the removal apply to the one
    // registration, for both nexuses.
    assert_good(&pr_out(&h, &a2, prout_sa::REGISTER, 0, 0xA, 0xAA).await);
    assert!(h.lu.pr_state().registration_index(&h.a).is_some());
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0xAA, 0).await);
    assert_eq!(h.lu.pr_state().registrations, vec![]);
}

#[tokio::test]
async fn spec_i_pt_registers_every_listed_initiator_port() {
    let h = harness(false);
    let c = nexus("iqn.init-c", 3);
    let tids = [tid(&port_name(&h.b)), tid(&port_name(&c))];
    assert_good(&register_specified(&h, &h.a, 0, 0x5, &tids, 0).await);
    let st = h.lu.pr_state();
    assert_eq!(keys(&h), vec![5, 5, 5]);
    assert_eq!(st.generation, 1);
    for n in [&h.a, &h.b, &c] {
        assert!(st.is_registered(n));
    }
    assert!(uas(&h, &h.b).is_empty());
    // The listed ports use their registrations like any other.
    assert_good(&pr_out(&h, &h.b, prout_sa::RESERVE, 5, 5, 0).await);
    // With ALL_TG_PT every listed port is registered through every target port.
    let h = harness(false);
    let b2 = ItNexus {
        tpgt: 2,
        relative_port: 2,
        ..h.b.clone()
    };
    assert_good(&register_specified(&h, &h.a, 0, 0x5, &tids[..1], 0x04).await);
    assert!(h.lu.pr_state().is_registered(&b2));
    assert!(
        h.lu.pr_state()
            .registrations
            .iter()
            .all(|r| r.registrant.all_target_ports())
    );
}

#[tokio::test]
async fn a_state_beyond_the_store_is_insufficient_registration_resources() {
    // Room for about three registrations of these names.
    let h = harness_with(512, false, Arc::new(MemPrStore::with_capacity(150)));
    let many: Vec<Vec<u8>> = (0..4)
        .map(|i| tid(&port_name(&nexus(&format!("iqn.host-{i}"), i))))
        .collect();
    let r = register_specified(&h, &h.a, 0, 1, &many, 0).await;
    assert_sense(&r, 5, 0x55, 0x04);
    assert_eq!(h.lu.pr_state(), PrState::default());
    assert_good(&register_specified(&h, &h.a, 0, 1, &many[..1], 0).await);
    assert_eq!(h.lu.pr_state().registrations.len(), 2);
    // A name longer than an iSCSI name cannot be stored either.
    let long = nexus(&"i".repeat(MAX_NAME_BYTES + 1), 9);
    h.target.nexus_added(&long);
    clear_ua(&h.lu, &long);
    let r = pr_out(&h, &long, prout_sa::REGISTER, 0, 0, 1).await;
    assert_sense(&r, 5, 0x55, 0x04);
}

#[tokio::test]
async fn aptpl_is_the_last_valid_bit() {
    let h = harness(false);
    let (c, p) = prout(prout_sa::REGISTER, 0, 0, 0xA, 0x01);
    assert_good(&run(&h, &h.a, &c, &p).await);
    assert!(h.lu.pr_state().aptpl);
    // RESERVE's APTPL bit is ignored.
    let (c, p) = prout(prout_sa::RESERVE, 1, 0xA, 0, 0);
    assert_good(&run(&h, &h.a, &c, &p).await);
    assert!(h.lu.pr_state().aptpl);
    let (c, p) = prout(prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, 0xA, 0);
    assert_good(&run(&h, &h.a, &c, &p).await);
    assert!(!h.lu.pr_state().aptpl);
}

// ---------------------------------------------------------------------------------------------
// The pure state machine under random requests
// ---------------------------------------------------------------------------------------------

fn test_nexus(i: u8) -> ItNexus {
    ItNexus {
        initiator: format!("iqn.host-{}", i % 3),
        isid: [0x40, 0, 0, 0, 0, i % 2],
        target: "iqn.t".into(),
        tpgt: u16::from(i % 2) + 1,
        relative_port: u16::from(i % 2) + 1,
    }
}

fn action_strategy() -> impl Strategy<Value = ProutAction> {
    let t = prop::sample::select(pr_type::ALL.to_vec());
    prop_oneof![
        (
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(0u8..6, 0..3)
        )
            .prop_map(|(ignore, all, listed)| ProutAction::Register {
                ignore_existing_key: ignore,
                all_target_ports: all,
                specify_initiator_ports: !listed.is_empty() && !ignore,
                specified: if ignore {
                    Vec::new()
                } else {
                    let mut ports: Vec<InitiatorPort> = Vec::new();
                    for i in listed {
                        let p = InitiatorPort::of(&test_nexus(i));
                        if !ports.contains(&p) {
                            ports.push(p);
                        }
                    }
                    ports
                        .into_iter()
                        .enumerate()
                        .map(|(i, port)| SpecifiedInitiator {
                            port,
                            offset: 28 + 32 * i as u16,
                        })
                        .collect()
                },
            }),
        t.clone()
            .prop_map(|pr_type| ProutAction::Reserve { pr_type }),
        t.clone()
            .prop_map(|pr_type| ProutAction::Release { pr_type }),
        Just(ProutAction::Clear),
        (t, any::<bool>()).prop_map(|(pr_type, abort)| ProutAction::Preempt { pr_type, abort }),
        (0u8..6, 1u16..3, any::<bool>()).prop_map(|(d, relative_port, unregister)| {
            ProutAction::RegisterAndMove {
                destination: InitiatorPort::of(&test_nexus(d)),
                relative_port,
                unregister,
            }
        }),
    ]
}

proptest! {
    /// Whatever arrives, every accepted request leaves a state that validates and encodes, moves
    /// PRgeneration by exactly one when registrations may change (never for RESERVE/RELEASE), and
    /// only aborts for PREEMPT AND ABORT.
    #[test]
    fn random_requests_keep_the_state_valid(
        steps in prop::collection::vec(
            (0u8..6, action_strategy(), 0u64..4, 0u64..4, any::<bool>()), 1..40),
    ) {
        let ports = [TargetPort::for_tpgt("iqn.t", 1), TargetPort::for_tpgt("iqn.t", 2)];
        let mut st = PrState::default();
        for (who, action, key, sark, aptpl) in steps {
            let nexus = test_nexus(who);
            // Mostly present the registered key, sometimes a wrong one.
            let own = st.registration_index(&nexus).map_or(0, |i| st.registrations[i].key);
            let key = if key == 0 { own } else { key };
            let req = ProutRequest { action: action.clone(), key, sa_key: sark, aptpl };
            let Ok(out) = apply_prout(&st, &nexus, &req, &ports) else { continue };
            let aborts = matches!(action, ProutAction::Preempt { abort: true, .. });
            prop_assert!(aborts || out.abort.is_empty());
            if let Some(new) = out.state {
                prop_assert!(super::pr_state::validate(&new).is_ok(), "{new:?}");
                prop_assert!(encode_pr_state(&new).is_ok());
                let counted = !matches!(
                    action,
                    ProutAction::Reserve { .. } | ProutAction::Release { .. }
                );
                prop_assert_eq!(new.generation, st.generation.wrapping_add(u32::from(counted)));
                st = new;
            }
        }
    }
}
