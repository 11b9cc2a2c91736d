//! PERSISTENT RESERVE OUT parameter lists: every malformed one gets the right ILLEGAL REQUEST sense
//! (with the field pointer SPC-4 §4.5.2.4.2 describes) and changes nothing; SPEC_I_PT registers all
//! listed initiator ports or none.

use super::opcodes::op;
use super::reservation::prout_sa;
use super::tests::{Harness, assert_good, assert_sense, harness, nexus, run};
use super::tests_pr::{pr_out, prout};
use super::*;

/// (C/D, byte, bit) of the sense-key-specific field pointer, if SKSV is set.
pub(super) fn field_pointer(r: &ScsiResponse) -> Option<(bool, u16, Option<u8>)> {
    let s = r.sense.as_ref()?;
    (s[15] & 0x80 != 0).then(|| {
        (
            s[15] & 0x40 != 0,
            u16::from_be_bytes([s[16], s[17]]),
            (s[15] & 0x08 != 0).then_some(s[15] & 0x07),
        )
    })
}

/// An iSCSI initiator port TransportID (format 01b) for `port_name` (`<iqn>,i,0x<isid>`).
pub(super) fn tid(port_name: &str) -> Vec<u8> {
    let mut name = port_name.as_bytes().to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < 20 {
        name.push(0);
    }
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

pub(super) fn port_name(n: &ItNexus) -> String {
    n.initiator_port_name()
}

fn prout_cdb(sa: u8, ptype: u8, len: usize) -> Vec<u8> {
    let mut c = vec![op::PERSISTENT_RESERVE_OUT, sa, ptype, 0, 0, 0, 0, 0, 0, 0];
    c[5..9].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

/// A REGISTER with SPEC_I_PT listing `tids` (`flags` adds ALL_TG_PT / APTPL).
pub(super) async fn register_specified(
    h: &Harness,
    n: &ItNexus,
    key: u64,
    sark: u64,
    tids: &[Vec<u8>],
    flags: u8,
) -> ScsiResponse {
    let (_, mut p) = prout(prout_sa::REGISTER, 0, key, sark, 0x08 | flags);
    let list: Vec<u8> = tids.concat();
    p.extend_from_slice(&(list.len() as u32).to_be_bytes());
    p.extend_from_slice(&list);
    run(h, n, &prout_cdb(prout_sa::REGISTER, 0, p.len()), &p).await
}

/// REGISTER AND MOVE to `destination` (a TransportID) through relative port `rtpi`.
pub(super) async fn register_and_move(
    h: &Harness,
    n: &ItNexus,
    key: u64,
    sark: u64,
    rtpi: u16,
    destination: &[u8],
    unreg: bool,
) -> ScsiResponse {
    let mut p = Vec::new();
    p.extend_from_slice(&key.to_be_bytes());
    p.extend_from_slice(&sark.to_be_bytes());
    p.extend_from_slice(&[0, if unreg { 0x02 } else { 0 }]);
    p.extend_from_slice(&rtpi.to_be_bytes());
    p.extend_from_slice(&(destination.len() as u32).to_be_bytes());
    p.extend_from_slice(destination);
    run(
        h,
        n,
        &prout_cdb(prout_sa::REGISTER_AND_MOVE, 1, p.len()),
        &p,
    )
    .await
}

fn assert_invalid_param(r: &ScsiResponse, byte: u16, bit: Option<u8>) {
    assert_sense(r, 5, 0x26, 0);
    assert_eq!(field_pointer(r), Some((false, byte, bit)), "{r:?}");
}

#[tokio::test]
async fn length_errors() {
    let h = harness(false);
    // PARAMETER LIST LENGTH says more than the initiator sent.
    let (c, p) = prout(prout_sa::REGISTER, 0, 0, 1, 0);
    assert_sense(&run(&h, &h.a, &c, &p[..20]).await, 5, 0x1A, 0);
    // Shorter than the basic list, or not 24 without SPEC_I_PT.
    for len in [0, 8, 23, 25, 28] {
        let mut p = p.clone();
        p.resize(len, 0);
        let r = run(&h, &h.a, &prout_cdb(prout_sa::REGISTER, 0, len), &p).await;
        assert_sense(&r, 5, 0x1A, 0);
    }
    // SPEC_I_PT: the declared TransportID length must be exactly what follows.
    let good = tid(&port_name(&h.b));
    let (_, mut p) = prout(prout_sa::REGISTER, 0, 0, 1, 0x08);
    assert_sense(
        &run(&h, &h.a, &prout_cdb(prout_sa::REGISTER, 0, 24), &p).await,
        5,
        0x1A,
        0,
    );
    for declared in [good.len() - 4, good.len() + 4] {
        let mut p = p.clone();
        p.extend_from_slice(&(declared as u32).to_be_bytes());
        p.extend_from_slice(&good);
        let r = run(&h, &h.a, &prout_cdb(prout_sa::REGISTER, 0, p.len()), &p).await;
        assert_sense(&r, 5, 0x1A, 0);
    }
    p.extend_from_slice(&(good.len() as u32).to_be_bytes());
    p.extend_from_slice(&good);
    assert_good(&run(&h, &h.a, &prout_cdb(prout_sa::REGISTER, 0, p.len()), &p).await);
    assert_eq!(h.lu.pr_state().registrations.len(), 2);
}

#[tokio::test]
async fn field_errors_point_at_the_field_and_change_nothing() {
    let h = harness(false);
    // SPEC_I_PT with a service action other than REGISTER.
    let (c, p) = prout(prout_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, 1, 0x08);
    assert_invalid_param(&run(&h, &h.a, &c, &p).await, 20, Some(3));
    let (c, p) = prout(prout_sa::RESERVE, 1, 0, 0, 0x08);
    assert_invalid_param(&run(&h, &h.a, &c, &p).await, 20, Some(3));
    // TYPE and SCOPE are CDB fields.
    let r = pr_out(&h, &h.a, prout_sa::PREEMPT, 2, 0, 1).await;
    assert_sense(&r, 5, 0x24, 0);
    assert_eq!(field_pointer(&r), Some((true, 2, Some(3))));
    let r = pr_out(&h, &h.a, prout_sa::RELEASE, 0x21, 0, 0).await;
    assert_eq!(field_pointer(&r), Some((true, 2, Some(7))));

    let good = tid(&port_name(&h.b));
    let mutate = |f: fn(&mut Vec<u8>)| {
        let mut t = good.clone();
        f(&mut t);
        t
    };
    let cases: Vec<(Vec<u8>, u16, Option<u8>)> = vec![
        // Not iSCSI (protocol identifier 0: Fibre Channel).
        (mutate(|t| t[0] = 0x40), 28, Some(3)),
        // Format 00b: an initiator device, not a port.
        (mutate(|t| t[0] = 0x05), 28, Some(7)),
        (mutate(|t| t[0] = 0x85), 28, Some(7)),
        (mutate(|t| t[0] = 0x55), 28, Some(5)),
        // ADDITIONAL LENGTH not a multiple of 4, below 20, or past the list.
        (mutate(|t| t[3] -= 1), 30, None),
        (
            {
                let mut t = tid("iqn.x,i,0x000000000001");
                t[3] = 16;
                t.truncate(20);
                t
            },
            30,
            None,
        ),
        (mutate(|t| t[3] += 4), 30, None),
        // No NUL terminator, no separator, a short or non-hex ISID, an empty name.
        (
            mutate(|t| t.iter_mut().skip(4).for_each(|b| *b = b'a')),
            32,
            None,
        ),
        (tid("iqn.init-b"), 32, None),
        (tid("iqn.init-b,i,0x4000"), 32 + 15, None),
        (tid("iqn.init-b,i,0x40000000000z"), 32 + 15, None),
        (tid(",i,0x400000000002"), 32, None),
    ];
    let other = tid(&port_name(&nexus("iqn.c", 3)));
    for (bad, byte, bit) in cases {
        // The malformed TransportID follows a good one: all or nothing, and the pointer is absolute.
        let r = register_specified(&h, &h.a, 0, 1, &[other.clone(), bad.clone()], 0).await;
        assert_invalid_param(&r, byte + other.len() as u16, bit);
        assert_eq!(h.lu.pr_state(), PrState::default(), "{bad:?}");
    }
    // The same initiator port twice: the second is the invalid one.
    let r = register_specified(
        &h,
        &h.a,
        0,
        1,
        &[other.clone(), good.clone(), other.clone()],
        0,
    )
    .await;
    assert_invalid_param(&r, 28 + (other.len() + good.len()) as u16, None);
    // The issuer itself, or an I_T nexus that is already registered.
    let r = register_specified(&h, &h.a, 0, 1, &[good.clone(), tid(&port_name(&h.a))], 0).await;
    assert_invalid_param(&r, 28 + good.len() as u16, None);
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    let before = h.lu.pr_state();
    let r = register_specified(&h, &h.a, 0, 1, &[other.clone(), good.clone()], 0).await;
    assert_invalid_param(&r, 28 + other.len() as u16, None);
    assert_eq!(h.lu.pr_state(), before);
    // SPEC_I_PT from a registered I_T nexus.
    let r = register_specified(&h, &h.b, 0xB, 1, std::slice::from_ref(&other), 0).await;
    assert_invalid_param(&r, 20, Some(3));
    assert_eq!(h.lu.pr_state(), before);
    // A zero SERVICE ACTION RESERVATION KEY for PREEMPT without an all-registrants reservation.
    assert_invalid_param(
        &pr_out(&h, &h.b, prout_sa::PREEMPT, 1, 0xB, 0).await,
        8,
        None,
    );
    assert_eq!(h.lu.pr_state(), before);
}

#[tokio::test]
async fn register_and_move_errors() {
    let h = harness(false);
    let c = nexus("iqn.init-c", 3);
    h.target.nexus_added(&c);
    assert_good(&pr_out(&h, &h.a, prout_sa::REGISTER, 0, 0, 0xA).await);
    let dest = tid(&port_name(&h.b));
    // No reservation: INVALID FIELD IN CDB.
    let r = register_and_move(&h, &h.a, 0xA, 0xB, 1, &dest, false).await;
    assert_sense(&r, 5, 0x24, 0);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 1, 0xA, 0).await);
    let before = h.lu.pr_state();
    // Key 0, an unknown relative target port, the issuer's own initiator port.
    assert_invalid_param(
        &register_and_move(&h, &h.a, 0xA, 0, 1, &dest, false).await,
        8,
        None,
    );
    assert_invalid_param(
        &register_and_move(&h, &h.a, 0xA, 0xB, 7, &dest, false).await,
        18,
        None,
    );
    let own = tid(&port_name(&h.a));
    assert_invalid_param(
        &register_and_move(&h, &h.a, 0xA, 0xB, 1, &own, false).await,
        24,
        None,
    );
    // TRANSPORTID PARAMETER DATA LENGTH longer than its one TransportID.
    let mut long = dest.clone();
    long.extend_from_slice(&tid(&port_name(&c)));
    assert_invalid_param(
        &register_and_move(&h, &h.a, 0xA, 0xB, 1, &long, false).await,
        20,
        None,
    );
    // Format 00b does not name an I_T nexus.
    let mut device = dest.clone();
    device[0] = 0x05;
    assert_invalid_param(
        &register_and_move(&h, &h.a, 0xA, 0xB, 1, &device, false).await,
        24,
        Some(7),
    );
    // Not the holder (registered or not), a wrong key.
    assert_good(&pr_out(&h, &h.b, prout_sa::REGISTER, 0, 0, 0xB).await);
    let before_b = h.lu.pr_state();
    let to_c = tid(&port_name(&c));
    let r = register_and_move(&h, &h.b, 0xB, 0xC, 1, &to_c, false).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    let r = register_and_move(&h, &h.a, 0xAA, 0xC, 1, &to_c, false).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    assert_eq!(h.lu.pr_state(), before_b);
    assert_ne!(before, before_b);
    // An all-registrants reservation cannot be moved.
    assert_good(&pr_out(&h, &h.a, prout_sa::RELEASE, 1, 0xA, 0).await);
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 7, 0xA, 0).await);
    let r = register_and_move(&h, &h.a, 0xA, 0xC, 1, &to_c, false).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
}
