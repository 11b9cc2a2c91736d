//! Arbitrary bytes as login text and as a login request data segment: parsing, CHAP binary decoding
//! and the login state machine must never panic.
#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use iscsi_target::login::chap::decode_binary;
use iscsi_target::login::{
    ChapAccount, LoginDirectory, LoginMachine, LoginTarget, TargetLookup, TargetParams, parse_text,
};
use iscsi_target::pdu::LoginRequest;
use libfuzzer_sys::fuzz_target;

struct Directory;

impl LoginDirectory for Directory {
    fn lookup(&self, target_name: &str, _initiator: &str, _peer: IpAddr) -> TargetLookup {
        if target_name.len() % 3 == 0 {
            return TargetLookup::NotFound;
        }
        TargetLookup::Found(Box::new(LoginTarget {
            name: target_name.to_string(),
            alias: None,
            tpgt: 1,
            chap: (target_name.len() % 2 == 0).then(|| ChapAccount {
                user: "u".into(),
                secret: "s".into(),
            }),
            mutual_chap: Some(ChapAccount {
                user: "t".into(),
                secret: "m".into(),
            }),
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

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_text(data) {
        for (_, v) in &pairs {
            let _ = decode_binary(v);
        }
    }
    let mut machine = LoginMachine::new(Arc::new(Directory), IpAddr::from([127, 0, 0, 1]));
    // Feed the input as a sequence of login PDUs split at 0xff bytes; the first byte of each chunk
    // picks the stage bits.
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&bits, text)) = chunk.split_first() else {
            continue;
        };
        let req = LoginRequest {
            transit: bits & 0x80 != 0,
            continue_bit: bits & 0x40 != 0,
            csg: (bits >> 2) & 3,
            nsg: bits & 3,
            ..LoginRequest::default()
        };
        let _ = machine.step(&req, text);
    }
});
