//! Structure-aware fuzzing of whole negotiations: a sequence of Login Requests (security and
//! operational stages, real keys with plausible and hostile values, CHAP answered correctly when the
//! fuzzer asks for it so the later stages are reached), then a sequence of full-feature-phase Text
//! Requests (C-bit continuation, TTT follow-ups, SendTargets, renegotiation attempts).
//!
//! Invariants: nothing panics; after Failed or Complete the login is over; a completed login has
//! parameters inside the RFC 7143 ranges and the target's limits; every Text Request gets exactly one
//! answer, no response segment exceeds the initiator's MaxRecvDataSegmentLength, and a response that
//! continues (C bit) never also claims to be final.
#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use arbitrary::Arbitrary;
use iscsi_target::login::chap::{ChapAlgorithm, decode_binary, encode_hex};
use iscsi_target::login::{
    ChapAccount, LoginDirectory, LoginMachine, LoginOutcome, LoginTarget, SessionParams, SessionType,
    TargetLookup, TargetParams, encode_text, parse_text,
};
use iscsi_target::pdu::{LoginRequest, RESERVED_TAG, TextRequest};
use iscsi_target::session::text_exchange::{TextAnswer, TextContext, TextExchange};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-12";
const MUTUAL: &str = "fuzz-mutual-34";

struct Directory;

impl LoginDirectory for Directory {
    fn lookup(&self, target_name: &str, _initiator: &str, _peer: IpAddr) -> TargetLookup {
        match target_name {
            "iqn.2026-12.fuzz:open" | "iqn.2026-12.fuzz:chap" => TargetLookup::Found(Box::new(LoginTarget {
                name: target_name.to_string(),
                alias: Some("fuzz".into()),
                tpgt: 1,
                chap: (target_name.ends_with("chap")).then(|| ChapAccount {
                    user: "user".into(),
                    secret: SECRET.into(),
                }),
                mutual_chap: Some(ChapAccount {
                    user: "target".into(),
                    secret: MUTUAL.into(),
                }),
                params: TargetParams::default(),
            })),
            "iqn.2026-12.fuzz:denied" => TargetLookup::Denied,
            _ => TargetLookup::NotFound,
        }
    }
    fn discovery_chap(&self) -> Option<ChapAccount> {
        None
    }
    fn discovery_params(&self) -> TargetParams {
        TargetParams::default()
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Key {
    InitiatorName,
    TargetName,
    SessionType,
    AuthMethod,
    ChapA,
    ChapI,
    ChapC,
    ChapN,
    ChapR,
    HeaderDigest,
    DataDigest,
    MaxConnections,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SendTargets,
    TargetAlias,
    Private,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::InitiatorName => "InitiatorName",
            Key::TargetName => "TargetName",
            Key::SessionType => "SessionType",
            Key::AuthMethod => "AuthMethod",
            Key::ChapA => "CHAP_A",
            Key::ChapI => "CHAP_I",
            Key::ChapC => "CHAP_C",
            Key::ChapN => "CHAP_N",
            Key::ChapR => "CHAP_R",
            Key::HeaderDigest => "HeaderDigest",
            Key::DataDigest => "DataDigest",
            Key::MaxConnections => "MaxConnections",
            Key::InitialR2T => "InitialR2T",
            Key::ImmediateData => "ImmediateData",
            Key::MaxRecvDataSegmentLength => "MaxRecvDataSegmentLength",
            Key::MaxBurstLength => "MaxBurstLength",
            Key::FirstBurstLength => "FirstBurstLength",
            Key::DefaultTime2Wait => "DefaultTime2Wait",
            Key::DefaultTime2Retain => "DefaultTime2Retain",
            Key::MaxOutstandingR2T => "MaxOutstandingR2T",
            Key::DataPduInOrder => "DataPDUInOrder",
            Key::DataSequenceInOrder => "DataSequenceInOrder",
            Key::ErrorRecoveryLevel => "ErrorRecoveryLevel",
            Key::SendTargets => "SendTargets",
            Key::TargetAlias => "TargetAlias",
            Key::Private => "X-org.example.fuzz",
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Value {
    /// One of a few values each key plausibly takes.
    Known(u8),
    Number(u32),
    Text(String),
    /// The correct CHAP_R for the last challenge the target sent (authentication succeeds).
    ChapAnswer,
    /// A mutual-CHAP challenge in hex.
    Challenge(Vec<u8>),
}

fn known(key: Key, i: u8) -> String {
    let pick = |opts: &[&str]| opts[usize::from(i) % opts.len()].to_string();
    match key {
        Key::InitiatorName => pick(&["iqn.2026-12.fuzz:initiator", "", "IQN.2026-12.FUZZ:Upper"]),
        Key::TargetName => pick(&["iqn.2026-12.fuzz:open", "iqn.2026-12.fuzz:chap", "iqn.2026-12.fuzz:denied", "iqn.none"]),
        Key::SessionType => pick(&["Normal", "Discovery", "Bogus"]),
        Key::AuthMethod => pick(&["CHAP,None", "None", "CHAP", "SRP,KRB5", "None,CHAP"]),
        Key::ChapA => pick(&["5", "7,6,5", "8", "99", "5,a"]),
        Key::ChapI => pick(&["0", "255", "256", "-1"]),
        Key::ChapN => pick(&["user", "target", ""]),
        Key::HeaderDigest | Key::DataDigest => pick(&["None", "CRC32C", "CRC32C,None", "MD5"]),
        Key::InitialR2T | Key::ImmediateData | Key::DataPduInOrder | Key::DataSequenceInOrder => {
            pick(&["Yes", "No", "Maybe", "Reject", "Irrelevant", "NotUnderstood"])
        }
        Key::SendTargets => pick(&["All", "", "iqn.2026-12.fuzz:open", "Invalid"]),
        _ => pick(&["0", "1", "512", "8192", "65536", "262144", "16777215", "16777216", "4294967296"]),
    }
}

#[derive(Arbitrary, Debug)]
struct LoginPdu {
    transit: bool,
    continue_bit: bool,
    csg: u8,
    nsg: u8,
    keys: Vec<(Key, Value)>,
    /// Bytes sent instead of well-formed text.
    raw: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct TextPdu {
    continue_bit: bool,
    final_bit: bool,
    /// 0: reserved TTT (new exchange); 1: the last TTT the target gave; otherwise that value.
    ttt: u8,
    same_itt: bool,
    keys: Vec<(Key, Value)>,
    raw: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct Negotiation {
    login: Vec<LoginPdu>,
    text: Vec<TextPdu>,
    max_xmit: u16,
}

struct Ctx {
    params: SessionParams,
    kind: SessionType,
}

impl TextContext for Ctx {
    fn session_type(&self) -> SessionType {
        self.kind
    }
    fn send_targets(&self, value: &str) -> Vec<(String, String)> {
        let n = if value == "All" { 50 } else { usize::from(value.len() == 21) };
        (0..n)
            .flat_map(|i| {
                [
                    ("TargetName".to_string(), format!("iqn.2026-12.fuzz:t{i}")),
                    ("TargetAddress".to_string(), format!("192.0.2.{i}:3260,1")),
                ]
            })
            .collect()
    }
    fn params(&self) -> &SessionParams {
        &self.params
    }
}

fn encode_keys(keys: &[(Key, Value)], last_challenge: &Option<(u8, Vec<u8>)>) -> Vec<u8> {
    let pairs: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Known(i) => known(*k, *i),
                Value::Number(n) => n.to_string(),
                Value::Text(s) => s.chars().filter(|c| *c != '\0').take(300).collect(),
                Value::ChapAnswer => match last_challenge {
                    Some((id, c)) => encode_hex(&ChapAlgorithm::Md5.response(*id, SECRET.as_bytes(), c)),
                    None => "0x00".into(),
                },
                Value::Challenge(c) => encode_hex(&c[..c.len().min(1024)]),
            };
            (k.name().to_string(), value)
        })
        .collect();
    encode_text(&pairs)
}

fn check_params(p: &SessionParams) {
    assert!((512..=16_777_215).contains(&p.max_xmit_data_segment_length), "{p:?}");
    assert!(p.first_burst_length <= p.max_burst_length, "{p:?}");
    assert!((512..=16_777_215).contains(&p.max_burst_length), "{p:?}");
    assert!(p.max_connections >= 1 && p.max_outstanding_r2t >= 1, "{p:?}");
}

fuzz_target!(|n: Negotiation| {
    let mut machine = LoginMachine::new(Arc::new(Directory), IpAddr::from([192, 0, 2, 1]));
    let mut challenge: Option<(u8, Vec<u8>)> = None;
    let mut result = None;
    for (i, pdu) in n.login.iter().take(16).enumerate() {
        let data = match &pdu.raw {
            Some(raw) => raw.clone(),
            None => encode_keys(&pdu.keys, &challenge),
        };
        let req = LoginRequest {
            transit: pdu.transit,
            continue_bit: pdu.continue_bit,
            csg: pdu.csg & 3,
            nsg: pdu.nsg & 3,
            isid: [0x80, 0, 0, 0, 0, 1],
            itt: i as u32,
            cmd_sn: 1,
            ..LoginRequest::default()
        };
        let step = machine.step(&req, &data);
        if let Ok(pairs) = parse_text(&step.data) {
            let get = |k: &str| pairs.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
            if let (Some(id), Some(c)) = (get("CHAP_I"), get("CHAP_C")) {
                if let (Ok(id), Ok(c)) = (id.parse::<u8>(), decode_binary(&c)) {
                    challenge = Some((id, c));
                }
            }
        }
        match step.outcome {
            LoginOutcome::Continue => {}
            LoginOutcome::Failed => {
                assert_ne!(step.response.status_class, 0, "failed login with success status");
                break;
            }
            LoginOutcome::Complete(r) => {
                assert_eq!(step.response.status_class, 0);
                check_params(&r.params);
                result = Some(*r);
                break;
            }
        }
    }
    let Some(login) = result else { return };
    let mut params = login.params.clone();
    params.max_xmit_data_segment_length = u32::from(n.max_xmit).max(512);
    let max = params.max_xmit_data_segment_length as usize;
    let ctx = Ctx {
        params,
        kind: login.session_type,
    };
    let mut exchange = TextExchange::new();
    let mut next_ttt = 1u32;
    let mut alloc = || {
        next_ttt += 1;
        next_ttt
    };
    let (mut last_ttt, mut itt) = (RESERVED_TAG, 100u32);
    for pdu in n.text.iter().take(64) {
        if !pdu.same_itt {
            itt += 1;
        }
        let data = match &pdu.raw {
            Some(raw) => raw.clone(),
            None => encode_keys(&pdu.keys, &None),
        };
        let ttt = match pdu.ttt {
            0 => RESERVED_TAG,
            1 => last_ttt,
            t => u32::from(t),
        };
        let req = TextRequest {
            final_bit: pdu.final_bit,
            continue_bit: pdu.continue_bit,
            itt,
            ttt,
            ..TextRequest::default()
        };
        match exchange.step(&req, &data, &ctx, &mut alloc) {
            TextAnswer::Response(r, d) => {
                assert!(d.len() <= max, "response segment {} over {max}", d.len());
                assert!(!(r.final_bit && r.continue_bit));
                assert_eq!(r.itt, itt);
                assert_eq!(r.final_bit, r.ttt == RESERVED_TAG, "{r:?}");
                last_ttt = r.ttt;
            }
            TextAnswer::Reject { .. } => {}
        }
    }
});
