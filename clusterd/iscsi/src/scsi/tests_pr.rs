//! Persistent reservation tests (libiscsi-style end to end through the LU): access matrix per type,
//! UA routing, PRIN formats, persistence; plus the helpers the other PR test files share.

use std::sync::Arc;

use super::opcodes::op;
use super::reservation::params::{ProutAction, ProutRequest};
use super::reservation::prout::apply_prout;
use super::reservation::{pr_type, prout_sa};
use super::tests::{
    assert_good, assert_sense, clear_ua, harness, harness_with, nexus, read10, run, write10,
};
use super::*;

pub(super) fn prout(sa: u8, ptype: u8, key: u64, sark: u64, flags: u8) -> (Vec<u8>, Vec<u8>) {
    let cdb = vec![op::PERSISTENT_RESERVE_OUT, sa, ptype, 0, 0, 0, 0, 0, 24, 0];
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&key.to_be_bytes());
    p.extend_from_slice(&sark.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, flags, 0, 0, 0]);
    (cdb, p)
}

pub(super) async fn pr_out(
    h: &tests::Harness,
    n: &ItNexus,
    sa: u8,
    ptype: u8,
    key: u64,
    sark: u64,
) -> ScsiResponse {
    let (c, p) = prout(sa, ptype, key, sark, 0);
    run(h, n, &c, &p).await
}

pub(super) async fn pr_in(h: &tests::Harness, n: &ItNexus, sa: u8) -> Vec<u8> {
    let r = run(
        h,
        n,
        &[op::PERSISTENT_RESERVE_IN, sa, 0, 0, 0, 0, 0, 0x10, 0, 0],
        &[],
    )
    .await;
    assert_good(&r);
    r.data_in.to_vec()
}

pub(super) async fn can_read(h: &tests::Harness, n: &ItNexus) -> bool {
    let r = run(h, n, &read10(0, 1), &[]).await;
    assert!(
        r.status == STATUS_GOOD || r.status == STATUS_RESERVATION_CONFLICT,
        "{r:?}"
    );
    r.status == STATUS_GOOD
}

pub(super) async fn can_write(h: &tests::Harness, n: &ItNexus) -> bool {
    let r = run(h, n, &write10(0, 1), &[0u8; 512]).await;
    assert!(
        r.status == STATUS_GOOD || r.status == STATUS_RESERVATION_CONFLICT,
        "{r:?}"
    );
    r.status == STATUS_GOOD
}

/// libiscsi ProutReserve.Access*: (type, registered read, registered write, unregistered read, write).
#[tokio::test]
async fn access_matrix_per_type() {
    let table = [
        (pr_type::EXCLUSIVE_ACCESS, false, false, false, false),
        (pr_type::WRITE_EXCLUSIVE, true, false, true, false),
        (
            pr_type::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            true,
            true,
            false,
            false,
        ),
        (
            pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            true,
            true,
            true,
            false,
        ),
        (
            pr_type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
            true,
            true,
            false,
            false,
        ),
        (
            pr_type::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            true,
            true,
            true,
            false,
        ),
    ];
    for (t, rr, rw, ur, uw) in table {
        let h = harness(false);
        let (k1, k2) = (0x1111, 0x2222);
        assert_good(
            &pr_out(
                &h,
                &h.a,
                prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
                0,
                0,
                k1,
            )
            .await,
        );
        assert_good(
            &pr_out(
                &h,
                &h.b,
                prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
                0,
                0,
                k2,
            )
            .await,
        );
        assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, t, k1, 0).await);
        let rr_data = pr_in(&h, &h.a, 1).await;
        assert_eq!(rr_data[21] & 0x0F, t);
        let expect_key = if t >= 7 { 0 } else { k1 };
        assert_eq!(&rr_data[8..16], &expect_key.to_be_bytes());
        assert!(
            can_read(&h, &h.a).await && can_write(&h, &h.a).await,
            "holder access, type {t}"
        );
        assert_eq!(
            (can_read(&h, &h.b).await, can_write(&h, &h.b).await),
            (rr, rw),
            "registered, type {t}"
        );
        assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, k2, 0).await);
        assert_eq!(
            (can_read(&h, &h.b).await, can_write(&h, &h.b).await),
            (ur, uw),
            "unregistered, type {t}"
        );
        // Non-conflicting commands stay available to everyone.
        assert_good(&run(&h, &h.b, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await);
        assert_good(
            &run(
                &h,
                &h.b,
                &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[],
            )
            .await,
        );
        assert_good(&pr_out(&h, &h.a, prout_sa::RELEASE, t, k1, 0).await);
        assert!(can_write(&h, &h.b).await);
        assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, k1, 0).await);
    }
}

/// ProutReserve.Ownership*: the holder unregistering releases non-AR reservations; UAs never go to the
/// unregistering nexus; only registrants-only types notify the other registrants.
#[tokio::test]
async fn ownership_and_ua_routing() {
    for t in pr_type::ALL {
        let h = harness(false);
        assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await);
        assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
        assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, t, 0xA, 0).await);
        assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0xA, 0).await);
        assert!(
            h.lu.pending_unit_attentions(&h.a).is_empty(),
            "type {t}: UA to the unregistering nexus"
        );
        let rr = pr_in(&h, &h.a, 1).await;
        let b_ua = h.lu.pending_unit_attentions(&h.b);
        match t {
            1 | 3 => {
                assert_eq!(&rr[4..8], &[0, 0, 0, 0], "type {t} released");
                assert!(b_ua.is_empty());
            }
            5 | 6 => {
                assert_eq!(&rr[4..8], &[0, 0, 0, 0], "type {t} released");
                assert_eq!(b_ua, vec![(0x2A, 0x04)]);
            }
            _ => {
                assert_eq!(
                    &rr[4..8],
                    &[0, 0, 0, 16],
                    "all-registrants type {t} survives"
                );
                assert!(b_ua.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn release_clear_preempt_ua_routing() {
    let h = harness(false);
    let c = nexus("iqn.init-c", 3);
    h.target.nexus_added(&c);
    clear_ua(&h.lu, &c);
    for (n, k) in [(&h.a, 0xA), (&h.b, 0xB), (&c, 0xC)] {
        assert_good(&pr_out(&h, n, prout_sa::REGISTER, 0, 0, k).await);
    }
    // RELEASE of a WERO reservation: 2A/04 to the other registrants only.
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 5, 0xA, 0).await);
    assert_sense(
        &pr_out(&h, &h.a, prout_sa::RELEASE, 6, 0xA, 0).await,
        5,
        0x26,
        0x04,
    );
    assert_good(&pr_out(&h, &h.b, prout_sa::RELEASE, 5, 0xB, 0).await); // non-holder: no-op
    assert_good(&pr_out(&h, &h.a, prout_sa::RELEASE, 5, 0xA, 0).await);
    assert!(h.lu.pending_unit_attentions(&h.a).is_empty());
    assert_eq!(h.lu.pending_unit_attentions(&h.b), vec![(0x2A, 0x04)]);
    assert_eq!(h.lu.pending_unit_attentions(&c), vec![(0x2A, 0x04)]);
    clear_ua(&h.lu, &h.b);
    clear_ua(&h.lu, &c);
    // PREEMPT the holder's key: registrations removed get 2A/05; type change gives 2A/04 to the rest.
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 0xA, 0).await);
    assert_good(&pr_out(&h, &h.b, prout_sa::PREEMPT, 3, 0xB, 0xA).await);
    assert_eq!(h.lu.pending_unit_attentions(&h.a), vec![(0x2A, 0x05)]);
    assert_eq!(h.lu.pending_unit_attentions(&c), vec![(0x2A, 0x04)]);
    assert!(h.lu.pending_unit_attentions(&h.b).is_empty());
    let st = h.lu.pr_state();
    assert_eq!(
        st.reservation
            .as_ref()
            .map(|r| (r.holder.as_ref(), r.pr_type)),
        Some((Some(&h.b), 3))
    );
    assert_eq!(st.registrations.len(), 2);
    clear_ua(&h.lu, &h.a);
    clear_ua(&h.lu, &c);
    // The preempted nexus is no longer registered.
    assert_eq!(
        pr_out(&h, &h.a, prout_sa::RESERVE, 3, 0xA, 0).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    // PREEMPT with an unknown key conflicts; with key 0 and no AR reservation it is invalid.
    assert_eq!(
        pr_out(&h, &c, prout_sa::PREEMPT, 3, 0xC, 0x99).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_sense(
        &pr_out(&h, &c, prout_sa::PREEMPT, 3, 0xC, 0).await,
        5,
        0x26,
        0,
    );
    // CLEAR: everything gone, 2A/03 to the others.
    assert_good(&pr_out(&h, &c, prout_sa::CLEAR, 0, 0xC, 0).await);
    assert_eq!(h.lu.pending_unit_attentions(&h.b), vec![(0x2A, 0x03)]);
    assert!(h.lu.pending_unit_attentions(&c).is_empty());
    assert_eq!(h.lu.pr_state().registrations.len(), 0);
    assert!(h.lu.pr_state().reservation.is_none());
}

#[tokio::test]
async fn register_rules_and_generation() {
    let h = harness(false);
    assert_eq!(
        pr_out(&h, &h.a, prout_sa::REGISTER, 0, 5, 6).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0).await); // no-op
    assert_eq!(h.lu.pr_state().generation, 0);
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 6).await);
    assert_eq!(
        pr_out(&h, &h.a, prout_sa::REGISTER, 0, 7, 8).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 6, 8).await);
    assert_good(
        &pr_out(
            &h,
            &h.a,
            prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
            0,
            0xBAD,
            9,
        )
        .await,
    );
    let keys = pr_in(&h, &h.b, 0).await;
    assert_eq!(&keys[0..4], &3u32.to_be_bytes());
    assert_eq!(&keys[4..8], &8u32.to_be_bytes());
    assert_eq!(&keys[8..16], &9u64.to_be_bytes());
    // Unregistered nexus cannot reserve; bad type / scope are invalid fields.
    assert_eq!(
        pr_out(&h, &h.b, prout_sa::RESERVE, 1, 0, 0).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_sense(
        &pr_out(&h, &h.a, prout_sa::RESERVE, 2, 9, 0).await,
        5,
        0x24,
        0,
    );
    assert_sense(
        &pr_out(&h, &h.a, prout_sa::RESERVE, 0x11, 9, 0).await,
        5,
        0x24,
        0,
    );
    // Parameter list must be 24 bytes; SPEC_I_PT only with REGISTER.
    let (mut c, p) = prout(prout_sa::REGISTER, 0, 9, 10, 0);
    c[8] = 20;
    assert_sense(&run(&h, &h.a, &c, &p[..20]).await, 5, 0x1A, 0);
    let (c, p) = prout(prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, 9, 10, 0x08);
    assert_sense(&run(&h, &h.a, &c, &p).await, 5, 0x26, 0);
    // A second reservation by a different holder conflicts; same holder and type is a no-op.
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 9, 0).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 9, 0).await);
    assert_eq!(
        pr_out(&h, &h.a, prout_sa::RESERVE, 3, 9, 0).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_eq!(
        pr_out(&h, &h.b, prout_sa::RESERVE, 1, 0xB, 0).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    // SPC-2 RESERVE conflicts with persistent reservations.
    assert_eq!(
        run(&h, &h.b, &[op::RESERVE_6, 0, 0, 0, 0, 0], &[])
            .await
            .status,
        STATUS_RESERVATION_CONFLICT
    );
}

/// PrinServiceactionRange: SA 0..=3 succeed, everything else is 05/24/00.
#[tokio::test]
async fn prin_service_action_range_and_capabilities() {
    let h = harness(false);
    for sa in 0..=3u8 {
        pr_in(&h, &h.a, sa).await;
    }
    for sa in 4..=0x1Fu8 {
        let r = run(
            &h,
            &h.a,
            &[op::PERSISTENT_RESERVE_IN, sa, 0, 0, 0, 0, 0, 0x10, 0, 0],
            &[],
        )
        .await;
        assert_sense(&r, 5, 0x24, 0);
    }
    let caps = pr_in(&h, &h.a, 2).await;
    assert_eq!(caps.len(), 8);
    assert_eq!(&caps[0..2], &[0, 8]);
    assert_eq!(caps[2], 0x1D, "CRH, SIP_C, ATP_C, PTPL_C");
    assert_eq!(
        caps[3],
        0x80 | 0x30,
        "TMV, ALLOW COMMANDS 011b, PTPL_A clear"
    );
    assert_eq!((caps[4], caps[5]), (0xEA, 0x01));
    // PTPL_A follows the last APTPL.
    let (c, p) = prout(prout_sa::REGISTER, 0, 0, 0xA, 0x01);
    assert_good(&run(&h, &h.a, &c, &p).await);
    assert_eq!(pr_in(&h, &h.a, 2).await[3] & 0x01, 0x01);
}

#[tokio::test]
async fn read_full_status() {
    let h = harness(false);
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await);
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 5, 0xA, 0).await);
    let d = pr_in(&h, &h.b, 3).await;
    assert_eq!(
        &d[0..4],
        &2u32.to_be_bytes(),
        "RESERVE does not bump PRgeneration"
    );
    let total = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    assert_eq!(d.len(), 8 + total);
    let mut pos = 8;
    let mut seen = Vec::new();
    while pos < d.len() {
        let key = u64::from_be_bytes(d[pos..pos + 8].try_into().unwrap());
        let holder = d[pos + 12] & 0x01 != 0;
        let stype = d[pos + 13];
        let rtpi = u16::from_be_bytes([d[pos + 18], d[pos + 19]]);
        let tid_len = u32::from_be_bytes(d[pos + 20..pos + 24].try_into().unwrap()) as usize;
        let tid = &d[pos + 24..pos + 24 + tid_len];
        assert_eq!(tid[0], 0x45);
        assert_eq!(tid_len % 4, 0);
        let name = String::from_utf8_lossy(&tid[4..])
            .trim_end_matches('\0')
            .to_string();
        seen.push((key, holder, stype, rtpi, name));
        pos += 24 + tid_len;
    }
    assert_eq!(
        seen,
        vec![
            (0xA, true, 5, 1, "iqn.init-a,i,0x400000000001".to_string()),
            (0xB, false, 0, 1, "iqn.init-b,i,0x400000000002".to_string()),
        ]
    );
}

#[tokio::test]
async fn register_and_move() {
    let h = harness(false);
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 0xA, 0).await);
    let name = b"iqn.init-b,i,0x400000000002\0";
    let mut tid = vec![0x45, 0, 0, 0];
    let mut padded = name.to_vec();
    padded.resize(32, 0);
    tid[2..4].copy_from_slice(&(padded.len() as u16).to_be_bytes());
    tid.extend_from_slice(&padded);
    let mut p = Vec::new();
    p.extend_from_slice(&0xAu64.to_be_bytes());
    p.extend_from_slice(&0xBu64.to_be_bytes());
    p.extend_from_slice(&[0, 0x02, 0, 1]); // UNREG, RTPI 1
    p.extend_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let mut c = vec![
        op::PERSISTENT_RESERVE_OUT,
        prout_sa::REGISTER_AND_MOVE,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    c[8] = p.len() as u8;
    // Only the holder may move.
    assert_eq!(
        run(&h, &h.b, &c, &p).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_good(&run(&h, &h.a, &c, &p).await);
    let st = h.lu.pr_state();
    assert_eq!(
        st.reservation.as_ref().and_then(|r| r.holder.as_ref()),
        Some(&h.b)
    );
    assert_eq!(st.registrations.len(), 1);
    assert_eq!(st.registrations[0].key, 0xB);
    assert!(can_write(&h, &h.b).await);
    assert!(!can_write(&h, &h.a).await);
}

/// The pure state machine: every action from an unregistered nexus except REGISTER* conflicts, for
/// every reservation type, and nothing changes.
#[test]
fn unregistered_nexus_conflict_matrix() {
    let (a, b) = (nexus("iqn.a", 1), nexus("iqn.b", 2));
    for t in pr_type::ALL {
        let mut st = PrState::default();
        st.registrations.push(PrRegistration {
            key: 1,
            registrant: Registrant::nexus(&a),
        });
        st.reservation = Some(PrReservation::new(t, &a));
        for action in [
            ProutAction::Reserve { pr_type: t },
            ProutAction::Release { pr_type: t },
            ProutAction::Clear,
            ProutAction::Preempt {
                pr_type: t,
                abort: false,
            },
            ProutAction::Preempt {
                pr_type: t,
                abort: true,
            },
            ProutAction::RegisterAndMove {
                destination: InitiatorPort::of(&a),
                relative_port: 1,
                unregister: false,
            },
        ] {
            let req = ProutRequest {
                action: action.clone(),
                key: 0,
                sa_key: 1,
                aptpl: false,
            };
            let r = apply_prout(&st, &b, &req, &[]);
            assert!(
                matches!(r, Err(sense::Failure::ReservationConflict)),
                "type {t} {action:?}: {r:?}"
            );
        }
    }
}

/// PR state is saved before PROUT completes and restored by a fresh LU (failover: the store is not a
/// power loss, so APTPL=0 state survives whole, PRgeneration included).
#[tokio::test]
async fn state_survives_into_new_logical_unit() {
    let store: Arc<dyn PrStore> = Arc::new(MemPrStore::new());
    let h = harness_with(512, false, Arc::clone(&store));
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 6, 0xA, 0).await);
    let before = h.lu.pr_state();
    assert!(!before.aptpl);
    let h2 = harness_with(512, false, store);
    assert_eq!(h2.lu.pr_state(), before);
    assert!(!can_read(&h2, &h2.b).await);
    assert!(can_write(&h2, &h2.a).await);
}

/// A standalone target's file store is read at start, a power loss for the initiators: APTPL=0 state
/// is gone, APTPL=1 state stays with PRgeneration back at 0.
#[tokio::test]
async fn only_aptpl_state_survives_a_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    for aptpl in [false, true] {
        let path = dir.path().join(format!("lun-{aptpl}.pr"));
        let store: Arc<dyn PrStore> = Arc::new(FilePrStore::new(&path));
        let h = harness_with(512, false, Arc::clone(&store));
        let (c, p) = prout(prout_sa::REGISTER, 0, 0, 0xA, u8::from(aptpl));
        assert_good(&run(&h, &h.a, &c, &p).await);
        assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 6, 0xA, 0).await);
        let before = h.lu.pr_state();
        let h2 = harness_with(512, false, Arc::new(FilePrStore::new(&path)));
        if aptpl {
            assert_eq!(
                h2.lu.pr_state(),
                PrState {
                    generation: 0,
                    ..before
                }
            );
            assert!(!can_read(&h2, &h2.b).await);
        } else {
            assert_eq!(h2.lu.pr_state(), PrState::default());
            assert!(can_write(&h2, &h2.b).await);
        }
    }
}

struct FailingStore;
impl PrStore for FailingStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ScsiError> {
        Ok(None)
    }
    fn save(&self, _blob: bytes::Bytes) -> crate::backend::BoxFut<'_, Result<(), ScsiError>> {
        Box::pin(async { Err(ScsiError::PrStoreIo(std::io::Error::other("disk gone"))) })
    }
}

#[tokio::test]
async fn failed_save_leaves_state_unchanged() {
    let h = harness_with(512, false, Arc::new(FailingStore));
    assert_sense(
        &pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await,
        4,
        0x44,
        0,
    );
    assert_eq!(h.lu.pr_state(), PrState::default());
}
