use super::*;
use crate::login::chap::{ChapAlgorithm, decode_binary, encode_hex};
use crate::login::keys::Digest;

const TARGET: &str = "iqn.2026-01.test:disk1";
const INITIATOR: &str = "iqn.2026-01.test:host1";

struct Dir {
    chap: Option<ChapAccount>,
    mutual: Option<ChapAccount>,
    discovery_chap: Option<ChapAccount>,
}

impl LoginDirectory for Dir {
    fn lookup(&self, target_name: &str, initiator_name: &str, _peer: IpAddr) -> TargetLookup {
        if target_name != TARGET {
            return TargetLookup::NotFound;
        }
        if initiator_name == "iqn.2026-01.test:intruder" {
            return TargetLookup::Denied;
        }
        TargetLookup::Found(Box::new(LoginTarget {
            name: TARGET.into(),
            alias: Some("disk one".into()),
            tpgt: 7,
            chap: self.chap.clone(),
            mutual_chap: self.mutual.clone(),
            params: TargetParams::default(),
        }))
    }
    fn discovery_chap(&self) -> Option<ChapAccount> {
        self.discovery_chap.clone()
    }
    fn discovery_params(&self) -> TargetParams {
        TargetParams::default()
    }
}

fn account(user: &str, secret: &str) -> ChapAccount {
    ChapAccount {
        user: user.into(),
        secret: secret.into(),
    }
}

fn machine(chap: Option<ChapAccount>, mutual: Option<ChapAccount>) -> LoginMachine {
    LoginMachine::new(
        Arc::new(Dir {
            chap,
            mutual,
            discovery_chap: None,
        }),
        "127.0.0.1".parse().unwrap(),
    )
}

fn req(csg: u8, nsg: u8, transit: bool) -> LoginRequest {
    LoginRequest {
        transit,
        csg,
        nsg,
        isid: [0x80, 0, 0, 0, 0, 1],
        itt: 1,
        cmd_sn: 5,
        exp_stat_sn: 100,
        ..LoginRequest::default()
    }
}

fn text(pairs: &[(&str, &str)]) -> Vec<u8> {
    encode_text(pairs)
}

fn keys(step: &LoginStep) -> Vec<(String, String)> {
    parse_text(&step.data).unwrap()
}

fn get(step: &LoginStep, key: &str) -> Option<String> {
    keys(step)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn status_of(step: &LoginStep) -> (u8, u8) {
    (step.response.status_class, step.response.status_detail)
}

fn first_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", TARGET),
    ]
}

#[test]
fn operational_only_login_without_auth() {
    let mut m = machine(None, None);
    let mut pairs = first_keys();
    pairs.extend([
        ("HeaderDigest", "CRC32C,None"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("IFMarker", "No"),
    ]);
    let step = m.step(&req(1, 3, true), &text(&pairs));
    assert_eq!(status_of(&step), status::SUCCESS);
    assert!(step.response.transit);
    assert_eq!(step.response.stat_sn, 100);
    assert_eq!(step.response.exp_cmd_sn, 5);
    assert_eq!(get(&step, "TargetPortalGroupTag").as_deref(), Some("7"));
    assert_eq!(get(&step, "TargetAlias").as_deref(), Some("disk one"));
    assert_eq!(get(&step, "HeaderDigest").as_deref(), Some("CRC32C"));
    assert_eq!(get(&step, "IFMarker").as_deref(), Some("No"));
    assert_eq!(
        get(&step, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    let LoginOutcome::Complete(result) = step.outcome else {
        panic!("not complete")
    };
    assert_eq!(result.initiator_name, INITIATOR);
    assert_eq!(result.session_type, SessionType::Normal);
    assert_eq!(result.params.header_digest, Digest::Crc32c);
    assert_eq!(result.params.max_xmit_data_segment_length, 65536);
    assert_eq!(result.next_stat_sn, 101);
    assert_eq!(result.target.unwrap().tpgt, 7);
}

#[test]
fn security_none_then_operational() {
    let mut m = machine(None, None);
    let mut pairs = first_keys();
    pairs.push(("AuthMethod", "CHAP,None"));
    let step = m.step(&req(0, 1, true), &text(&pairs));
    assert_eq!(status_of(&step), status::SUCCESS);
    assert_eq!(get(&step, "AuthMethod").as_deref(), Some("None"));
    assert!(step.response.transit);
    assert!(matches!(step.outcome, LoginOutcome::Continue));
    let step = m.step(&req(1, 3, true), &text(&[("ImmediateData", "Yes")]));
    assert!(matches!(step.outcome, LoginOutcome::Complete(_)));
    assert_eq!(step.response.stat_sn, 101);
}

fn chap_login(m: &mut LoginMachine, secret: &str, mutual_challenge: Option<&str>) -> LoginStep {
    let mut pairs = first_keys();
    pairs.push(("AuthMethod", "CHAP,None"));
    let step = m.step(&req(0, 1, false), &text(&pairs));
    assert_eq!(get(&step, "AuthMethod").as_deref(), Some("CHAP"));
    let step = m.step(&req(0, 1, false), &text(&[("CHAP_A", "7,5")]));
    assert_eq!(get(&step, "CHAP_A").as_deref(), Some("7"));
    let id: u8 = get(&step, "CHAP_I").unwrap().parse().unwrap();
    let challenge = decode_binary(&get(&step, "CHAP_C").unwrap()).unwrap();
    let r = encode_hex(&ChapAlgorithm::Sha256.response(id, secret.as_bytes(), &challenge));
    let mut pairs = vec![("CHAP_N", "user1"), ("CHAP_R", r.as_str())];
    let reflected = encode_hex(&challenge);
    match mutual_challenge {
        Some("reflect") => pairs.extend([("CHAP_I", "9"), ("CHAP_C", reflected.as_str())]),
        Some(c) => pairs.extend([("CHAP_I", "9"), ("CHAP_C", c)]),
        None => {}
    }
    m.step(&req(0, 1, true), &text(&pairs))
}

#[test]
fn chap_one_way_success_and_wrong_secret() {
    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let step = chap_login(&mut m, "secretsecret", None);
    assert_eq!(status_of(&step), status::SUCCESS);
    assert!(step.response.transit && step.response.nsg == 1);
    let step = m.step(&req(1, 3, true), &[]);
    assert!(matches!(step.outcome, LoginOutcome::Complete(_)));

    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let step = chap_login(&mut m, "wrongsecret1", None);
    assert_eq!(status_of(&step), status::AUTH_FAILURE);
    assert!(matches!(step.outcome, LoginOutcome::Failed));
    // Nothing is accepted after a failure.
    let step = m.step(&req(1, 3, true), &[]);
    assert!(matches!(step.outcome, LoginOutcome::Failed));
}

#[test]
fn chap_mutual_and_reflection() {
    let tgt = account("target-user", "targetsecret");
    let mut m = machine(Some(account("user1", "secretsecret")), Some(tgt));
    let step = chap_login(&mut m, "secretsecret", Some("0x0a0b0c0d"));
    assert_eq!(status_of(&step), status::SUCCESS);
    assert_eq!(get(&step, "CHAP_N").as_deref(), Some("target-user"));
    let expected = ChapAlgorithm::Sha256.response(9, b"targetsecret", &[10, 11, 12, 13]);
    assert_eq!(
        decode_binary(&get(&step, "CHAP_R").unwrap()).unwrap(),
        expected
    );

    let mut m = machine(
        Some(account("user1", "secretsecret")),
        Some(account("t", "targetsecret")),
    );
    let step = chap_login(&mut m, "secretsecret", Some("reflect"));
    assert_eq!(status_of(&step), status::AUTH_FAILURE);

    // Mutual requested but the target has no outgoing account.
    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let step = chap_login(&mut m, "secretsecret", Some("0x01020304"));
    assert_eq!(status_of(&step), status::AUTH_FAILURE);
}

#[test]
fn chap_required_but_skipped_or_refused() {
    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let step = m.step(&req(1, 3, true), &text(&first_keys()));
    assert_eq!(status_of(&step), status::AUTH_FAILURE);

    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let mut pairs = first_keys();
    pairs.push(("AuthMethod", "None"));
    assert_eq!(
        status_of(&m.step(&req(0, 1, true), &text(&pairs))),
        status::AUTH_FAILURE
    );

    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let mut pairs = first_keys();
    pairs.push(("AuthMethod", "CHAP"));
    m.step(&req(0, 1, false), &text(&pairs));
    assert_eq!(
        status_of(&m.step(&req(0, 1, false), &text(&[("CHAP_A", "4")]))),
        status::AUTH_FAILURE
    );
}

#[test]
fn transit_waits_for_chap_to_finish() {
    let mut m = machine(Some(account("user1", "secretsecret")), None);
    let mut pairs = first_keys();
    pairs.push(("AuthMethod", "CHAP"));
    let step = m.step(&req(0, 1, true), &text(&pairs));
    assert_eq!(status_of(&step), status::SUCCESS);
    assert!(
        !step.response.transit,
        "target must not transit before CHAP completes"
    );
}

#[test]
fn lookup_and_parameter_failures() {
    let mut pairs = first_keys();
    pairs[2] = ("TargetName", "iqn.2026-01.test:nothing");
    assert_eq!(
        status_of(&machine(None, None).step(&req(1, 3, true), &text(&pairs))),
        status::NOT_FOUND
    );

    let mut pairs = first_keys();
    pairs[0] = ("InitiatorName", "iqn.2026-01.test:intruder");
    let s = machine(None, None).step(&req(1, 3, true), &text(&pairs));
    assert_eq!(status_of(&s), status::AUTHORIZATION_FAILURE);

    let pairs = [("SessionType", "Normal"), ("TargetName", TARGET)];
    let s = machine(None, None).step(&req(1, 3, true), &text(&pairs));
    assert_eq!(status_of(&s), status::MISSING_PARAMETER);

    let pairs = [("InitiatorName", INITIATOR)];
    let s = machine(None, None).step(&req(1, 3, true), &text(&pairs));
    assert_eq!(status_of(&s), status::MISSING_PARAMETER);

    let pairs = [("InitiatorName", INITIATOR), ("SessionType", "Weird")];
    let s = machine(None, None).step(&req(1, 3, true), &text(&pairs));
    assert_eq!(status_of(&s), status::SESSION_TYPE_NOT_SUPPORTED);

    let mut r = req(1, 3, true);
    r.version_min = 1;
    assert_eq!(
        status_of(&machine(None, None).step(&r, &text(&first_keys()))),
        status::UNSUPPORTED_VERSION
    );

    // Operational stage cannot transit to itself; NSG 2 does not exist.
    assert_eq!(
        status_of(&machine(None, None).step(&req(1, 1, true), &text(&first_keys()))),
        status::INITIATOR_ERROR
    );
    assert_eq!(
        status_of(&machine(None, None).step(&req(0, 2, true), &text(&first_keys()))),
        status::INITIATOR_ERROR
    );
    // Duplicate keys and garbage text are initiator errors.
    let s = machine(None, None).step(&req(1, 3, true), b"InitiatorName=a\0InitiatorName=b\0");
    assert_eq!(status_of(&s), status::INITIATOR_ERROR);
}

#[test]
fn stage_and_isid_must_stay_consistent() {
    let mut m = machine(None, None);
    m.step(&req(0, 1, false), &text(&first_keys()));
    let mut r = req(0, 1, true);
    r.isid = [0x80, 0, 0, 0, 0, 2];
    assert_eq!(status_of(&m.step(&r, &[])), status::INITIATOR_ERROR);

    let mut m = machine(None, None);
    m.step(&req(0, 1, false), &text(&first_keys()));
    // Still in security stage: a PDU claiming CSG=1 is an error.
    assert_eq!(
        status_of(&m.step(&req(1, 3, true), &[])),
        status::INITIATOR_ERROR
    );
}

#[test]
fn discovery_session_with_discovery_chap() {
    let dir = Dir {
        chap: None,
        mutual: None,
        discovery_chap: Some(account("disc", "discsecret12")),
    };
    let mut m = LoginMachine::new(Arc::new(dir), "127.0.0.1".parse().unwrap());
    let pairs = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("AuthMethod", "CHAP"),
    ];
    let step = m.step(&req(0, 1, false), &text(&pairs));
    assert_eq!(get(&step, "AuthMethod").as_deref(), Some("CHAP"));
    assert!(get(&step, "TargetPortalGroupTag").is_none());
    let step = m.step(&req(0, 1, false), &text(&[("CHAP_A", "5")]));
    let id: u8 = get(&step, "CHAP_I").unwrap().parse().unwrap();
    let challenge = decode_binary(&get(&step, "CHAP_C").unwrap()).unwrap();
    let r = encode_hex(&ChapAlgorithm::Md5.response(id, b"discsecret12", &challenge));
    let step = m.step(
        &req(0, 3, true),
        &text(&[("CHAP_N", "disc"), ("CHAP_R", &r)]),
    );
    let LoginOutcome::Complete(result) = step.outcome else {
        panic!("discovery login failed")
    };
    assert_eq!(result.session_type, SessionType::Discovery);
    assert!(result.target.is_none());
}

#[test]
fn continuation_bit_accumulates_text() {
    let mut m = machine(None, None);
    let all = text(&first_keys());
    let (a, b) = all.split_at(10);
    let mut r = req(1, 3, false);
    r.continue_bit = true;
    let step = m.step(&r, a);
    assert!(matches!(step.outcome, LoginOutcome::Continue));
    assert!(step.data.is_empty());
    let step = m.step(&req(1, 3, true), b);
    assert_eq!(status_of(&step), status::SUCCESS);
    assert!(matches!(step.outcome, LoginOutcome::Complete(_)));
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of login requests with arbitrary text never panics, and once the machine has
        /// failed or completed it never reports success again.
        #[test]
        fn random_login_sequences_never_panic(
            steps in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)), 1..6),
            chap_required in any::<bool>(),
        ) {
            let chap = chap_required.then(|| account("user1", "secretsecret"));
            let mut m = machine(chap, Some(account("t", "targetsecret")));
            let mut ended = false;
            for (bits, text) in steps {
                let mut r = req((bits >> 2) & 3, bits & 3, bits & 0x80 != 0);
                r.continue_bit = bits & 0x40 != 0;
                let step = m.step(&r, &text);
                if ended {
                    prop_assert!(matches!(step.outcome, LoginOutcome::Failed));
                }
                if !matches!(step.outcome, LoginOutcome::Continue) {
                    ended = true;
                }
            }
        }
    }
}

/// A directory whose TPGT depends on the local port (as `TargetServer` with portal groups): port
/// 3260 is group 1, 3261 group 2, anything else not found.
struct ByPort;

impl LoginDirectory for ByPort {
    fn lookup(&self, _target: &str, _initiator: &str, _peer: IpAddr) -> TargetLookup {
        panic!("a machine with a local address must use lookup_at")
    }
    fn lookup_at(
        &self,
        target_name: &str,
        _initiator: &str,
        _peer: IpAddr,
        local: Option<std::net::SocketAddr>,
    ) -> TargetLookup {
        let tpgt = match local.map(|l| l.port()) {
            Some(3260) => 1,
            Some(3261) => 2,
            _ => return TargetLookup::NotFound,
        };
        TargetLookup::Found(Box::new(LoginTarget {
            name: target_name.into(),
            alias: None,
            tpgt,
            chap: None,
            mutual_chap: None,
            params: TargetParams::default(),
        }))
    }
    fn discovery_chap(&self) -> Option<ChapAccount> {
        None
    }
    fn discovery_params(&self) -> TargetParams {
        TargetParams::default()
    }
}

#[test]
fn target_portal_group_tag_of_the_local_address() {
    let peer: IpAddr = "10.0.0.50".parse().unwrap();
    for (local, expected) in [("10.0.0.1:3260", Some("1")), ("10.0.0.2:3261", Some("2"))] {
        let mut m = LoginMachine::with_local(Arc::new(ByPort), peer, local.parse().unwrap());
        let step = m.step(&req(1, 3, true), &text(&first_keys()));
        assert_eq!(status_of(&step), status::SUCCESS);
        assert_eq!(get(&step, "TargetPortalGroupTag").as_deref(), expected);
        let LoginOutcome::Complete(result) = step.outcome else {
            panic!("login not complete")
        };
        assert_eq!(
            result.target.map(|t| t.tpgt.to_string()).as_deref(),
            expected
        );
    }
    let mut m = LoginMachine::with_local(Arc::new(ByPort), peer, "10.0.0.1:9".parse().unwrap());
    let step = m.step(&req(1, 3, true), &text(&first_keys()));
    assert_eq!(status_of(&step), status::NOT_FOUND);
}
