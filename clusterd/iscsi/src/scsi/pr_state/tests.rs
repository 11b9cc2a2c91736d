//! Encoding tests: round trips (including a proptest over valid states), the version 1 blobs of the
//! previous release, corruption and the documented capacity bound; the stores.

use bytes::Bytes;
use proptest::prelude::*;

use super::codec::validate;
use super::*;

const TARGET: &str = "iqn.2026-11.org.example:standalone-disk";

fn nexus(initiator: &str, isid_last: u8, tpgt: u16) -> ItNexus {
    ItNexus {
        initiator: initiator.into(),
        isid: [0x40, 0, 1, 0x37, 0, isid_last],
        target: TARGET.into(),
        tpgt,
        relative_port: tpgt.max(1),
    }
}

fn registration(key: u64, n: &ItNexus) -> PrRegistration {
    PrRegistration {
        key,
        registrant: Registrant::nexus(n),
    }
}

fn sample() -> PrState {
    let a = nexus("iqn.a", 1, 1);
    let mut all = registration(0xBB, &nexus("iqn.b", 2, 1));
    all.registrant.ports = TargetPorts::All;
    PrState {
        generation: 7,
        aptpl: true,
        registrations: vec![
            registration(0xAA, &a),
            all,
            registration(u64::MAX, &nexus("iqn.a", 3, 2)),
        ],
        reservation: Some(PrReservation::new(5, &a)),
    }
}

fn round_trip(s: &PrState) {
    let blob = encode_pr_state(s).expect("encodable");
    assert_eq!(&decode_pr_state(&blob).expect("decodes"), s);
}

#[test]
fn round_trips() {
    round_trip(&sample());
    round_trip(&PrState::default());
    // A holder registered with ALL_TG_PT, reserved through a port no single registration names.
    let mut s = sample();
    s.reservation = Some(PrReservation::new(1, &nexus("iqn.b", 2, 9)));
    round_trip(&s);
    let mut s = sample();
    s.reservation = Some(PrReservation::new(8, &nexus("iqn.z", 1, 1)));
    assert_eq!(s.reservation.as_ref().and_then(|r| r.holder.as_ref()), None);
    round_trip(&s);
}

#[test]
fn corrupt_blobs_rejected() {
    let blob = encode_pr_state(&sample()).unwrap();
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        assert!(decode_pr_state(&b).is_err(), "flip at {i} accepted");
    }
    for n in 0..blob.len() {
        assert!(
            decode_pr_state(&blob[..n]).is_err(),
            "truncation to {n} accepted"
        );
    }
    // A valid checksum over an unknown version is still rejected.
    let mut b = blob[..blob.len() - 4].to_vec();
    b[4] = 9;
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    assert!(
        matches!(decode_pr_state(&b), Err(ScsiError::CorruptPrState(m)) if m.contains("version"))
    );
}

/// Re-signs a body with a CRC.
fn signed(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

#[test]
fn well_formed_blobs_that_break_the_rules_are_rejected() {
    let mut broken = Vec::new();
    // Two registrations for one I_T nexus.
    let mut s = sample();
    s.registrations.push(registration(1, &nexus("iqn.a", 1, 1)));
    broken.push(s);
    // ALL_TG_PT next to a single-port registration of the same initiator port.
    let mut s = sample();
    s.registrations.push(registration(1, &nexus("iqn.b", 2, 4)));
    broken.push(s);
    // Key 0, an unregistered holder, a holder for an all-registrants type, no registrants for it.
    let mut s = sample();
    s.registrations[0].key = 0;
    broken.push(s);
    let mut s = sample();
    s.registrations.remove(0);
    s.reservation = Some(PrReservation::new(3, &nexus("iqn.a", 1, 1)));
    broken.push(s);
    let mut s = sample();
    s.reservation.as_mut().unwrap().pr_type = 7;
    broken.push(s);
    broken.push(PrState {
        reservation: Some(PrReservation::new(7, &nexus("iqn.a", 1, 1))),
        ..PrState::default()
    });
    for s in &broken {
        assert!(validate(s).is_err(), "{s:?}");
        if let Ok(blob) = encode_pr_state(s) {
            assert!(decode_pr_state(&blob).is_err(), "{s:?} decoded");
        }
    }
    // Index out of range and an unknown flag, with a valid CRC.
    let blob = encode_pr_state(&sample()).unwrap();
    let body = &blob[..blob.len() - 4];
    let mut b = body.to_vec();
    b[5] |= 0x80;
    assert!(decode_pr_state(&signed(b)).is_err());
    let mut b = body.to_vec();
    let last_reg_port = body.len() - 4 - 1;
    b[last_reg_port] = 7;
    assert!(decode_pr_state(&signed(b)).is_err());
}

/// A version 1 blob exactly as the previous release wrote it.
fn v1_blob(state: &[(u64, ItNexus)], reservation: Option<(&ItNexus, u8)>, aptpl: bool) -> Vec<u8> {
    fn put_nexus(out: &mut Vec<u8>, n: &ItNexus) {
        for s in [&n.initiator, &n.target] {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&n.isid);
        out.extend_from_slice(&n.tpgt.to_be_bytes());
        out.extend_from_slice(&n.relative_port.to_be_bytes());
    }
    let mut out = b"SCPR".to_vec();
    out.push(1);
    out.extend_from_slice(&41u32.to_be_bytes());
    out.push(u8::from(aptpl));
    out.extend_from_slice(&(state.len() as u32).to_be_bytes());
    for (key, n) in state {
        out.extend_from_slice(&key.to_be_bytes());
        put_nexus(&mut out, n);
    }
    match reservation {
        None => out.push(0),
        Some((holder, t)) => {
            out.push(1);
            put_nexus(&mut out, holder);
            out.push(t);
            out.push(0);
        }
    }
    signed(out)
}

#[test]
fn version_1_blobs_decode() {
    let (a, b) = (nexus("iqn.a", 1, 1), nexus("iqn.b", 2, 1));
    let regs = [(0xA, a.clone()), (0xB, b.clone())];
    let s = decode_pr_state(&v1_blob(&regs, Some((&a, 5)), true)).unwrap();
    assert_eq!(
        s,
        PrState {
            generation: 41,
            aptpl: true,
            registrations: vec![registration(0xA, &a), registration(0xB, &b)],
            reservation: Some(PrReservation::new(5, &a)),
        }
    );
    // All-registrants: the establishing nexus (maybe gone) is not a holder any more.
    let gone = nexus("iqn.gone", 9, 1);
    let s = decode_pr_state(&v1_blob(&regs, Some((&gone, 7)), false)).unwrap();
    assert_eq!(s.reservation, Some(PrReservation::new(7, &a)));
    // ... and one without registrants (the old PREEMPT left it behind) is released.
    let s = decode_pr_state(&v1_blob(&[], Some((&gone, 8)), false)).unwrap();
    assert_eq!(s.reservation, None);
    // Re-encoded as version 2 it reads back the same.
    round_trip(&decode_pr_state(&v1_blob(&regs, Some((&a, 5)), true)).unwrap());
    // A single holder that is not registered was never written by the previous release.
    assert!(decode_pr_state(&v1_blob(&regs, Some((&gone, 1)), false)).is_err());
}

/// The bound the module documentation states: 52 registrations from distinct 50-byte initiator names
/// on one 40-byte target name, plus a reservation, fit the ~3.5 KiB the replicated store keeps per LUN;
/// 53 do not. Shared names cost 16 bytes per further path.
#[test]
fn capacity_with_typical_names() {
    const STORE: usize = 3584;
    let target = "iqn.2026-11.org.example:cluster-disk-001";
    assert_eq!(target.len(), 40);
    let state = |n: usize, names: usize| {
        let registrations: Vec<PrRegistration> = (0..n)
            .map(|i| {
                let name = format!("iqn.1994-05.com.redhat:host-{:022}", i % names);
                assert_eq!(name.len(), 50);
                PrRegistration {
                    key: i as u64 + 1,
                    registrant: Registrant {
                        initiator: InitiatorPort {
                            name,
                            isid: [0x40, 0, 0, 0, (i >> 8) as u8, i as u8],
                        },
                        ports: TargetPorts::One(TargetPort::for_tpgt(target, 1)),
                    },
                }
            })
            .collect();
        let holder = ItNexus {
            initiator: registrations[0].registrant.initiator.name.clone(),
            isid: registrations[0].registrant.initiator.isid,
            target: target.into(),
            tpgt: 1,
            relative_port: 1,
        };
        PrState {
            generation: u32::MAX,
            aptpl: true,
            registrations,
            reservation: Some(PrReservation::new(5, &holder)),
        }
    };
    let fits = encode_pr_state(&state(52, 52)).unwrap().len();
    assert_eq!(fits, 18 + 4 + (5 + 40) + 52 * (16 + 51));
    assert!(fits <= STORE, "{fits}");
    assert!(encode_pr_state(&state(53, 53)).unwrap().len() > STORE);
    // Four hosts with four paths each: names stored once.
    assert_eq!(
        encode_pr_state(&state(16, 4)).unwrap().len(),
        18 + 4 + 45 + 4 * 51 + 16 * 16
    );
}

#[test]
fn unencodable_states_are_refused() {
    let long = "i".repeat(MAX_NAME_BYTES + 1);
    let mut s = sample();
    s.registrations[0].registrant.initiator.name = long;
    assert!(matches!(
        encode_pr_state(&s),
        Err(ScsiError::PrStateTooLarge(_))
    ));
    let many = PrState {
        registrations: (0..256u32)
            .map(|i| registration(1, &nexus(&format!("iqn.n{i}"), 1, 1)))
            .collect(),
        ..PrState::default()
    };
    assert!(encode_pr_state(&many).is_err(), "256 initiator names");
}

#[test]
fn power_on_keeps_only_aptpl_state() {
    let s = sample();
    assert_eq!(
        s.clone().at_power_on(),
        PrState {
            generation: 0,
            ..s.clone()
        }
    );
    let volatile = PrState { aptpl: false, ..s };
    assert_eq!(volatile.at_power_on(), PrState::default());
}

#[tokio::test]
async fn file_store_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePrStore::new(dir.path().join("pr.bin"));
    assert!(store.load().unwrap().is_none());
    store.save(Bytes::from_static(b"one")).await.unwrap();
    store.save(Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(store.load().unwrap().as_deref(), Some(&b"two"[..]));
    assert!(store.loads_after_power_loss());
    let mem = MemPrStore::new();
    mem.save(Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(mem.load().unwrap().as_deref(), Some(&b"x"[..]));
    assert!(!mem.loads_after_power_loss());
    assert_eq!(MemPrStore::with_capacity(10).capacity(), 10);
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9.:-]{1,60}".prop_map(|s| format!("iqn.{s}"))
}

fn port_strategy() -> impl Strategy<Value = TargetPort> {
    (name_strategy(), 0u16..4).prop_map(|(name, tpgt)| TargetPort::for_tpgt(&name, tpgt))
}

/// Valid states: registrations with distinct coverage (later overlapping ones dropped) and a
/// reservation that follows the rules.
fn state_strategy() -> impl Strategy<Value = PrState> {
    let registration = (
        1u64..,
        prop::sample::select(vec!["iqn.a", "iqn.b", "iqn.c.long-name-of-a-host"]),
        0u8..3,
        prop::option::of(port_strategy()),
    );
    (
        any::<u32>(),
        any::<bool>(),
        prop::collection::vec(registration, 0..12),
        prop::sample::select(vec![0u8, 1, 3, 5, 6, 7, 8]),
        any::<prop::sample::Index>(),
        port_strategy(),
    )
        .prop_map(|(generation, aptpl, regs, pr_type, holder, port)| {
            let mut s = PrState {
                generation,
                aptpl,
                ..PrState::default()
            };
            for (key, name, isid, ports) in regs {
                let registrant = Registrant {
                    initiator: InitiatorPort {
                        name: name.to_string(),
                        isid: [0, 0, 0, 0, 0, isid],
                    },
                    ports: ports.map_or(TargetPorts::All, TargetPorts::One),
                };
                if !s
                    .registrations
                    .iter()
                    .any(|r| r.registrant.overlaps(&registrant))
                {
                    s.registrations.push(PrRegistration { key, registrant });
                }
            }
            if pr_type != 0 && !s.registrations.is_empty() {
                let r = &s.registrations[holder.index(s.registrations.len())].registrant;
                let port = match &r.ports {
                    TargetPorts::One(p) => p.clone(),
                    TargetPorts::All => port,
                };
                let holder = ItNexus {
                    initiator: r.initiator.name.clone(),
                    isid: r.initiator.isid,
                    target: port.name,
                    tpgt: port.tpgt,
                    relative_port: port.relative_id,
                };
                s.reservation = Some(PrReservation::new(pr_type, &holder));
            }
            s
        })
}

proptest! {
    #[test]
    fn valid_states_round_trip(s in state_strategy()) {
        prop_assert!(validate(&s).is_ok());
        let blob = encode_pr_state(&s).unwrap();
        prop_assert_eq!(decode_pr_state(&blob).unwrap(), s);
    }

    #[test]
    fn random_bytes_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(decode_pr_state(&bytes).is_err());
    }

    /// Any change to a valid blob is caught by the CRC; with the CRC fixed up the decoder still never
    /// panics, and whatever it accepts is a valid state that encodes again.
    #[test]
    fn mutated_blobs_never_panic(
        s in state_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let blob = encode_pr_state(&s).unwrap();
        let mut b = blob.clone();
        for (at, x) in &edits {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        if b != blob {
            prop_assert!(decode_pr_state(&b).is_err());
        }
        let mut body = b[..b.len() - 4].to_vec();
        body.truncate(cut.index(body.len() + 1));
        if let Ok(decoded) = decode_pr_state(&signed(body)) {
            prop_assert!(validate(&decoded).is_ok());
            prop_assert!(encode_pr_state(&decoded).is_ok());
        }
    }
}
