//! Target behaviour at the edges an independent conformance run found, each checked against the rules
//! as written (RFC 7143, SAM-5, SPC-4, SBC-3), not against what the target happens to do:
//! - WRITE / WRITE AND VERIFY whose iSCSI Expected Data Transfer Length differs from the CDB's
//!   transfer length, every opcode size and way of sending the data, read back block by block;
//! - REPORT TARGET PORT GROUPS parsed by a decoder written from SPC-4 for every allocation length;
//! - ABORT TASK on a completed task, a task waiting for data, a never-seen CmdSN, and racing a write;
//! - a write that fits ImmediateData/FirstBurstLength staying one PDU, as initiators expect.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use iscsi_target::pdu::*;

const BS: usize = 512;
const LOGIN: &[(&str, &str)] = &[
    ("ImmediateData", "Yes"),
    ("InitialR2T", "No"),
    ("FirstBurstLength", "65536"),
    ("MaxBurstLength", "262144"),
    ("MaxRecvDataSegmentLength", "262144"),
];

async fn session() -> (TestServer, Initiator) {
    let srv = start(|_| {}).await;
    let mut ini = Initiator::connect(srv.addr, 1).await;
    let (r, _) = ini.login_normal(LOGIN).await;
    assert_eq!(r.status_class, 0);
    ini.clear_unit_attention().await;
    (srv, ini)
}

fn cdb(op: u8, lba: u32, blocks: u32) -> Vec<u8> {
    match op {
        0x2a | 0x2e | 0x28 => {
            let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&lba.to_be_bytes());
            c[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            c
        }
        0xaa | 0xae => {
            let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&lba.to_be_bytes());
            c[6..10].copy_from_slice(&blocks.to_be_bytes());
            c
        }
        _ => {
            let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..10].copy_from_slice(&u64::from(lba).to_be_bytes());
            c[10..14].copy_from_slice(&blocks.to_be_bytes());
            c
        }
    }
}

async fn read_back(ini: &mut Initiator, lba: u32, blocks: u32) -> Vec<u8> {
    let len = blocks as usize * BS;
    let r = ini.scsi(&cdb(0x88, lba, blocks), len as u32, &[], 0, 0).await;
    assert_eq!(r.status, 0, "read back");
    r.data
}

/// Every combination of WRITE(10/12/16) and WRITE AND VERIFY(10/12/16), EDTL below / equal / above the
/// CDB's transfer length by whole and by partial blocks (and zero), with the data sent immediate,
/// unsolicited or solicited by R2T. The rule: bytes beyond min(EDTL, SPDTL) are never written; whole
/// blocks within it are written; a command whose EDTL ends inside a block writes nothing and fails
/// with ILLEGAL REQUEST / INVALID FIELD IN COMMAND INFORMATION UNIT; residual flags and count are
/// always EDTL versus SPDTL.
#[tokio::test]
async fn write_edtl_mismatch_matrix() {
    let (srv, mut ini) = session().await;
    let mut lba = 0u32;
    let mut cases = 0;
    for op in [0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e] {
        for blocks in [1u32, 3, 140] {
            let spdtl = blocks as i64 * BS as i64;
            for delta in [-(BS as i64), -200, -1, 0, 1, 300, BS as i64, -spdtl] {
                for delivery in ["immediate", "unsolicited", "r2t"] {
                    let edtl = (spdtl + delta).max(0) as usize;
                    let span = blocks + 3;
                    // Fill the span with 'a', then write 'b' * EDTL.
                    let fill = vec![b'a'; span as usize * BS];
                    let r = ini.scsi(&cdb(0x8a, lba, span), fill.len() as u32, &fill, 65536.min(fill.len()), 0).await;
                    assert_eq!(r.status, 0);
                    let data = vec![b'b'; edtl];
                    let (imm, unsol) = match delivery {
                        "immediate" => (edtl.min(65536), 0),
                        "unsolicited" => (0, edtl.min(65536)),
                        _ => (0, 0),
                    };
                    let r = ini.scsi(&cdb(op, lba, blocks), edtl as u32, &data, imm, unsol).await;
                    let what = format!("op {op:#x} blocks {blocks} EDTL {edtl} ({delivery})");
                    let written = (edtl as i64).min(spdtl) as usize;
                    let partial = (edtl as i64) < spdtl && !edtl.is_multiple_of(BS);
                    if partial {
                        assert_eq!(r.status, 2, "{what}: CHECK CONDITION expected");
                        let (key, asc, ascq) = (r.sense[2] & 0x0f, r.sense[12], r.sense[13]);
                        assert_eq!((key, asc, ascq), (5, 0x0e, 0x03), "{what}: sense");
                    } else {
                        assert_eq!(r.status, 0, "{what}: GOOD expected, sense {:?}", r.sense);
                    }
                    let expected_residual = match (edtl as i64).cmp(&spdtl) {
                        std::cmp::Ordering::Less => (true, false, (spdtl - edtl as i64) as u32),
                        std::cmp::Ordering::Greater => (false, true, (edtl as i64 - spdtl) as u32),
                        std::cmp::Ordering::Equal => (false, false, 0),
                    };
                    assert_eq!(r.residual, expected_residual, "{what}: residual");
                    let back = read_back(&mut ini, lba, span).await;
                    let model_b = if partial { 0 } else { written };
                    for (i, byte) in back.iter().enumerate() {
                        let want = if i < model_b { b'b' } else { b'a' };
                        assert_eq!(*byte, want, "{what}: byte {i} on disk");
                    }
                    // The 4 MiB LUN has 8192 blocks: reuse the space (every case refills its span).
                    lba = (lba + span) % 7_000;
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 6 * 3 * 8 * 3);
    srv.shutdown.cancel();
}

/// One target port group descriptor, decoded as SPC-4 §6.36 lays it out.
#[derive(Debug, PartialEq)]
struct TpgDescriptor {
    pref: bool,
    state: u8,
    supported: u8,
    group: u16,
    status: u8,
    ports: Vec<u16>,
}

/// Decodes REPORT TARGET PORT GROUPS parameter data (length-only or extended header).
fn parse_rtpg(data: &[u8], extended: bool) -> Result<Vec<TpgDescriptor>, String> {
    let hdr = if extended { 8 } else { 4 };
    if data.len() < hdr {
        return Err("short header".into());
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if len + 4 != data.len() {
        return Err(format!("RETURN DATA LENGTH {len} but {} bytes follow", data.len() - 4));
    }
    if extended {
        if data[4] & 0x70 != 0x10 {
            return Err(format!("FORMAT TYPE {:#x}, want 001b", (data[4] >> 4) & 7));
        }
        if data[6] != 0 || data[7] != 0 {
            return Err("reserved header bytes set".into());
        }
    }
    let mut out = Vec::new();
    let mut p = hdr;
    while p < data.len() {
        let d = data.get(p..p + 8).ok_or("truncated descriptor")?;
        if d[0] & 0x70 != 0 || d[4] != 0 {
            return Err("reserved descriptor bits set".into());
        }
        let state = d[0] & 0x0f;
        if ![0x0, 0x1, 0x2, 0x3, 0x4, 0xe, 0xf].contains(&state) {
            return Err(format!("undefined asymmetric access state {state:#x}"));
        }
        if d[1] & 0x20 != 0 {
            return Err("reserved supported-states bit set".into());
        }
        let count = d[7] as usize;
        let mut ports = Vec::new();
        for i in 0..count {
            let pd = data
                .get(p + 8 + i * 4..p + 12 + i * 4)
                .ok_or("truncated port descriptor")?;
            ports.push(u16::from_be_bytes([pd[2], pd[3]]));
        }
        out.push(TpgDescriptor {
            pref: d[0] & 0x80 != 0,
            state,
            supported: d[1],
            group: u16::from_be_bytes([d[2], d[3]]),
            status: d[5],
            ports,
        });
        p += 8 + count * 4;
    }
    Ok(out)
}

fn state_supported(state: u8, supported: u8) -> bool {
    let bit = match state {
        0x0 => 0x01,
        0x1 => 0x02,
        0x2 => 0x04,
        0x3 => 0x08,
        0x4 => 0x10,
        0xe => 0x40,
        0xf => 0x80,
        _ => 0,
    };
    supported & bit != 0
}

#[tokio::test]
async fn report_target_port_groups_follows_spc4_for_every_allocation_length() {
    let (srv, mut ini) = session().await;
    // VPD 0x83: the relative target port and target port group this nexus must find in RTPG.
    let r = ini.scsi(&[0x12, 1, 0x83, 0x04, 0x00, 0], 1024, &[], 0, 0).await;
    assert_eq!(r.status, 0);
    let (mut rtpi, mut tpg) = (None, None);
    let mut p = 4;
    while p + 4 <= r.data.len() {
        let (assoc_type, len) = (r.data[p + 1] & 0x3f, r.data[p + 3] as usize);
        let v = &r.data[p + 4..p + 4 + len];
        match assoc_type {
            0x14 => rtpi = Some(u16::from_be_bytes([v[2], v[3]])),
            0x15 => tpg = Some(u16::from_be_bytes([v[2], v[3]])),
            _ => {}
        }
        p += 4 + len;
    }
    let (rtpi, tpg) = (rtpi.expect("VPD 83 RTPI"), tpg.expect("VPD 83 TPG"));
    for extended in [false, true] {
        let rtpg = |alloc: u32| {
            let mut c = vec![0xa3, 0x0a | if extended { 0x20 } else { 0 }, 0, 0, 0, 0];
            c.extend_from_slice(&alloc.to_be_bytes());
            c.extend_from_slice(&[0, 0]);
            c
        };
        let full = ini.scsi(&rtpg(4096), 4096, &[], 0, 0).await;
        assert_eq!(full.status, 0);
        let groups = parse_rtpg(&full.data, extended).unwrap_or_else(|e| panic!("{e}: {:02x?}", full.data));
        assert!(!groups.is_empty());
        let mine = groups.iter().find(|g| g.group == tpg).expect("the nexus's own group");
        assert!(mine.ports.contains(&rtpi), "own relative port listed: {groups:?}");
        assert!(matches!(mine.state, 0 | 1), "the port in use is active: {groups:?}");
        for g in &groups {
            assert!(state_supported(g.state, g.supported), "reported state is advertised: {g:?}");
            assert_eq!(g.status, 0);
            assert!(g.ports.iter().all(|p| *p != 0), "relative port 0 is reserved");
        }
        let _ = mine.pref;
        // Every allocation length returns exactly that prefix of the full data, with GOOD status.
        for alloc in 0..=full.data.len() as u32 + 8 {
            let r = ini.scsi(&rtpg(alloc), alloc, &[], 0, 0).await;
            assert_eq!(r.status, 0, "alloc {alloc}");
            let want = &full.data[..full.data.len().min(alloc as usize)];
            assert_eq!(r.data, want, "alloc {alloc} (extended {extended})");
            // The data the command wanted is min(alloc, full): only a larger allocation underflows.
            assert_eq!(r.residual.1, alloc as usize > full.data.len(), "alloc {alloc}");
            assert!(!r.residual.0);
        }
    }
    srv.shutdown.cancel();
}

async fn tmf_abort(ini: &mut Initiator, ref_itt: u32, ref_cmd_sn: u32) -> u8 {
    let itt = ini.next_itt();
    let tmf = TaskMgmtRequest {
        immediate: true,
        function: 1,
        itt,
        referenced_task_tag: ref_itt,
        cmd_sn: ini.cmd_sn,
        exp_stat_sn: ini.exp_stat_sn,
        ref_cmd_sn,
        ..TaskMgmtRequest::default()
    };
    ini.send(&Pdu::TaskMgmtRequest(tmf), Bytes::new()).await;
    loop {
        let f = ini.recv().await;
        match f.pdu {
            Pdu::TaskMgmtResponse(t) if t.itt == itt => return t.response,
            Pdu::NopIn(_) => {}
            other => panic!("unexpected {other:?} before the TMF response"),
        }
    }
}

/// Sends a write command header with no data (InitialR2T path): the target answers with an R2T.
async fn write_waiting_for_data(ini: &mut Initiator, lba: u32) -> (u32, u32, R2t) {
    let itt = ini.next_itt();
    let cmd_sn = ini.cmd_sn;
    let mut c = [0u8; 16];
    c[..10].copy_from_slice(&write10(lba, 8));
    let cmd = ScsiCommandPdu {
        final_bit: true,
        write: true,
        task_attr: 1,
        itt,
        expected_data_len: 4096,
        cmd_sn,
        exp_stat_sn: ini.exp_stat_sn,
        cdb: c,
        ..ScsiCommandPdu::default()
    };
    ini.cmd_sn = ini.cmd_sn.wrapping_add(1);
    ini.send(&Pdu::ScsiCommand(cmd), Bytes::new()).await;
    let f = ini.recv().await;
    let Pdu::R2t(r) = f.pdu else { panic!("expected R2T, got {:?}", f.pdu) };
    (itt, cmd_sn, r)
}

#[tokio::test]
async fn abort_task_answers_by_the_state_of_the_task() {
    let (srv, mut ini) = session().await;
    // Completed: "Task does not exist" (RFC 7143 §11.5.1 c), never "Function complete".
    let done_sn = ini.cmd_sn;
    let done_itt = ini.next_itt() + 1;
    assert_eq!(ini.scsi(&write10(0, 1), 512, &[7u8; 512], 512, 0).await.status, 0);
    assert_eq!(tmf_abort(&mut ini, done_itt, done_sn).await, 1, "completed task");

    // Waiting for Data-Out: aborted ("Function complete"), no response for it ever, late data ignored,
    // nothing written.
    let (itt, cmd_sn, r2t) = write_waiting_for_data(&mut ini, 64).await;
    assert_eq!(tmf_abort(&mut ini, itt, cmd_sn).await, 0, "task waiting for data");
    ini.data_out(itt, r2t.ttt, &[9u8; 4096], 0, 4096, 4096).await;
    assert!(ini.try_recv(Duration::from_millis(500)).await.is_none(), "aborted task answered");
    assert!(read_back(&mut ini, 64, 8).await.iter().all(|b| *b == 0), "aborted write reached the medium");

    // Never seen, RefCmdSN inside the window and before the TMF's CmdSN: "Function complete", and that
    // CmdSN counts as received: the command, if it still comes, is not executed.
    let skipped = ini.cmd_sn;
    ini.cmd_sn = ini.cmd_sn.wrapping_add(1);
    assert_eq!(tmf_abort(&mut ini, 0x5555, skipped).await, 0, "never-seen task");
    let late_itt = ini.next_itt();
    let mut c = [0u8; 16];
    c[..10].copy_from_slice(&write10(128, 1));
    let late = ScsiCommandPdu {
        final_bit: true,
        write: true,
        task_attr: 1,
        itt: late_itt,
        expected_data_len: 512,
        cmd_sn: skipped,
        exp_stat_sn: ini.exp_stat_sn,
        cdb: c,
        ..ScsiCommandPdu::default()
    };
    ini.send(&Pdu::ScsiCommand(late), Bytes::from(vec![3u8; 512])).await;
    assert!(ini.try_recv(Duration::from_millis(300)).await.is_none(), "the skipped CmdSN ran");
    // The commands after it are not held up by a gap.
    assert!(read_back(&mut ini, 128, 1).await.iter().all(|b| *b == 0));

    // RefCmdSN outside the window: "Task does not exist".
    let far = ini.cmd_sn.wrapping_add(5000);
    assert_eq!(tmf_abort(&mut ini, 0x6666, far).await, 1);
    srv.shutdown.cancel();
}

/// libiscsi's AbortTaskSimpleAsync, repeated: a write and an immediate ABORT TASK right behind it.
/// Exactly one of two outcomes is allowed each time: the write answered GOOD and the abort "Task does
/// not exist", or the write never answered and the abort "Function complete".
#[tokio::test]
async fn abort_racing_a_write_has_exactly_one_outcome() {
    let (srv, mut ini) = session().await;
    let (mut completed, mut aborted) = (0, 0);
    for round in 0..300u32 {
        let itt = ini.next_itt();
        let cmd_sn = ini.cmd_sn;
        let mut c = [0u8; 16];
        c[..10].copy_from_slice(&write10(round % 64, 8));
        let cmd = ScsiCommandPdu {
            final_bit: true,
            write: true,
            task_attr: 1,
            itt,
            expected_data_len: 4096,
            cmd_sn,
            exp_stat_sn: ini.exp_stat_sn,
            cdb: c,
            ..ScsiCommandPdu::default()
        };
        ini.cmd_sn = ini.cmd_sn.wrapping_add(1);
        ini.send(&Pdu::ScsiCommand(cmd), Bytes::from(vec![0x5a; 4096])).await;
        // Vary the gap so both orders happen: abort in the same segment, a little later, after.
        match round % 3 {
            0 => {}
            1 => tokio::time::sleep(Duration::from_micros(200)).await,
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
        let tmf_itt = ini.next_itt();
        let tmf = TaskMgmtRequest {
            immediate: true,
            function: 1,
            itt: tmf_itt,
            referenced_task_tag: itt,
            cmd_sn: ini.cmd_sn,
            exp_stat_sn: ini.exp_stat_sn,
            ref_cmd_sn: cmd_sn,
            ..TaskMgmtRequest::default()
        };
        ini.send(&Pdu::TaskMgmtRequest(tmf), Bytes::new()).await;
        let (mut write_good, mut tmf_response) = (false, None);
        while tmf_response.is_none() {
            let f = ini.recv().await;
            match f.pdu {
                Pdu::ScsiResponse(r) if r.itt == itt => {
                    assert_eq!(r.status, 0);
                    write_good = true;
                }
                Pdu::TaskMgmtResponse(t) if t.itt == tmf_itt => tmf_response = Some(t.response),
                Pdu::NopIn(_) => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        match (write_good, tmf_response) {
            (true, Some(1)) => completed += 1,
            (false, Some(0)) => {
                aborted += 1;
                assert!(ini.try_recv(Duration::from_millis(50)).await.is_none(), "aborted write answered late");
            }
            other => panic!("round {round}: write GOOD {} with TMF response {:?}", other.0, other.1),
        }
    }
    println!("abort race: {completed} completed first, {aborted} aborted");
    assert!(completed > 0 && aborted > 0, "both orders must have been exercised");
    srv.shutdown.cancel();
}

/// With ImmediateData=Yes a write no longer than FirstBurstLength (and the target's receive limit)
/// travels as one PDU: no R2T, one response. Checked with libiscsi's and open-iscsi's offers and with
/// none at all (RFC defaults: FirstBurstLength 64 KiB).
#[tokio::test]
async fn writes_within_first_burst_stay_one_pdu() {
    let offers: [&[(&str, &str)]; 3] = [
        LOGIN,
        &[
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("FirstBurstLength", "262144"),
            ("MaxBurstLength", "16776192"),
            ("MaxRecvDataSegmentLength", "262144"),
        ],
        &[],
    ];
    for (i, offer) in offers.iter().enumerate() {
        let srv = start(|_| {}).await;
        let mut ini = Initiator::connect(srv.addr, 1).await;
        let (r, keys) = ini.login_normal(offer).await;
        assert_eq!(r.status_class, 0);
        ini.clear_unit_attention().await;
        let first_burst: usize = key(&keys, "FirstBurstLength").map_or(65536, |v| v.parse().unwrap());
        let mrdsl: usize = key(&keys, "MaxRecvDataSegmentLength").map_or(8192, |v| v.parse().unwrap());
        assert_ne!(key(&keys, "ImmediateData").as_deref(), Some("No"), "offer {i}");
        for len in [512usize, 4096, 65536] {
            if len > first_burst.min(mrdsl) {
                continue;
            }
            let itt = ini.next_itt();
            let mut c = [0u8; 16];
            c[..10].copy_from_slice(&write10(0, (len / BS) as u16));
            let cmd = ScsiCommandPdu {
                final_bit: true,
                write: true,
                task_attr: 1,
                itt,
                expected_data_len: len as u32,
                cmd_sn: ini.cmd_sn,
                exp_stat_sn: ini.exp_stat_sn,
                cdb: c,
                ..ScsiCommandPdu::default()
            };
            ini.cmd_sn = ini.cmd_sn.wrapping_add(1);
            ini.send(&Pdu::ScsiCommand(cmd), Bytes::from(vec![1u8; len])).await;
            let f = ini.recv().await;
            match f.pdu {
                Pdu::ScsiResponse(r) => assert_eq!((r.itt, r.status), (itt, 0), "offer {i}, {len} B"),
                other => panic!("offer {i}, {len} B write: expected the response, got {other:?}"),
            }
        }
        srv.shutdown.cancel();
    }
}
