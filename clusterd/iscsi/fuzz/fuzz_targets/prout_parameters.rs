//! Arbitrary PERSISTENT RESERVE OUT commands: the first byte picks the service action, the next four
//! the TYPE/SCOPE byte and the PARAMETER LIST LENGTH's low bytes, the rest is the Data-Out. Parsing
//! never panics, and an accepted SPEC_I_PT list names each initiator port once.
#![no_main]

use iscsi_target::scsi::reservation::{ProutAction, parse_prout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((head, data)) = input.split_first_chunk::<5>() else {
        return;
    };
    let mut cdb = [0u8; 16];
    cdb[0] = 0x5F;
    cdb[1] = head[0] & 0x07;
    cdb[2] = head[1];
    // Mostly the length the data has, sometimes a different one.
    let length = if head[2] & 0x80 == 0 {
        data.len() as u32
    } else {
        u32::from_be_bytes([0, head[2] & 0x7F, head[3], head[4]])
    };
    cdb[5..9].copy_from_slice(&length.to_be_bytes());
    if let Ok(req) = parse_prout(&cdb, data) {
        if let ProutAction::Register { specified, .. } = &req.action {
            for (i, s) in specified.iter().enumerate() {
                assert!(specified[..i].iter().all(|o| o.port != s.port));
                assert!((s.offset as usize) < data.len());
            }
        }
    }
});
