//! Command-family tests against a MemBackend through the public ScsiTarget entry point.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::opcodes::{COMMANDS, op};
use super::*;
use crate::backend::{BlockBackend, MemBackend};

pub(super) const BLOCKS: u64 = 2048;

pub(super) fn nexus(initiator: &str, isid_last: u8) -> ItNexus {
    ItNexus {
        initiator: initiator.to_string(),
        isid: [0x40, 0, 0, 0, 0, isid_last],
        target: "iqn.2024-01.test:target".to_string(),
        tpgt: 1,
        relative_port: 1,
    }
}

pub(super) fn identity(thin: bool) -> LunIdentity {
    LunIdentity {
        vendor: "HAVEN".into(),
        product: "VOLUME".into(),
        revision: "0001".into(),
        serial: "0123abcd".into(),
        naa: 0x6001_4050_1234_5678,
        naa_ext: 0x9ABC_DEF0_0000_0001,
        target_port_group: 1,
        write_cache: false,
        thin,
    }
}

pub(super) struct Harness {
    pub target: Arc<ScsiTarget>,
    pub lu: Arc<LogicalUnit>,
    pub backend: Arc<MemBackend>,
    pub a: ItNexus,
    pub b: ItNexus,
}

pub(super) fn harness_with(bs: u32, thin: bool, store: Arc<dyn PrStore>) -> Harness {
    let backend = Arc::new(MemBackend::new(BLOCKS * u64::from(bs)));
    harness_on(backend.clone(), backend, bs, thin, store)
}

/// A harness whose LU runs on `lu_backend` (e.g. a wrapper around `backend`).
pub(super) fn harness_on(
    backend: Arc<MemBackend>,
    lu_backend: Arc<dyn BlockBackend>,
    bs: u32,
    thin: bool,
    store: Arc<dyn PrStore>,
) -> Harness {
    let lu = Arc::new(LogicalUnit::new(identity(thin), lu_backend, bs, store).unwrap());
    let mut luns = BTreeMap::new();
    luns.insert(0, Arc::clone(&lu));
    let target = Arc::new(ScsiTarget::new("iqn.2024-01.test:target".into(), luns));
    let (a, b) = (nexus("iqn.init-a", 1), nexus("iqn.init-b", 2));
    target.nexus_added(&a);
    target.nexus_added(&b);
    clear_ua(&lu, &a);
    clear_ua(&lu, &b);
    Harness {
        target,
        lu,
        backend,
        a,
        b,
    }
}

pub(super) fn harness(thin: bool) -> Harness {
    harness_with(512, thin, Arc::new(MemPrStore::new()))
}

pub(super) fn clear_ua(lu: &LogicalUnit, n: &ItNexus) {
    while lu.ua.take(n).is_some() {}
}

pub(super) async fn run_lun(
    h: &Harness,
    n: &ItNexus,
    lun: u64,
    cdb: &[u8],
    data: &[u8],
) -> ScsiResponse {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    let cmd = ScsiCommand {
        lun,
        cdb: c,
        cdb_len: cdb.len(),
        data_out: Bytes::copy_from_slice(data),
        expected_len: data.len() as u32,
        task_attr: 0,
        task_tag: 1,
    };
    h.target.execute(n, cmd).await
}

pub(super) async fn run(h: &Harness, n: &ItNexus, cdb: &[u8], data: &[u8]) -> ScsiResponse {
    run_lun(h, n, 0, cdb, data).await
}

pub(super) fn assert_good(r: &ScsiResponse) {
    assert_eq!(
        r.status,
        STATUS_GOOD,
        "expected GOOD, got {r:?} sense {:?}",
        r.sense_code()
    );
}

pub(super) fn assert_sense(r: &ScsiResponse, key: u8, asc: u8, ascq: u8) {
    assert_eq!(
        r.status, STATUS_CHECK_CONDITION,
        "expected CHECK CONDITION, got {r:?}"
    );
    assert_eq!(r.sense_code(), Some((key, asc, ascq)));
}

pub(super) fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op::READ_10, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

pub(super) fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = read10(lba, blocks);
    c[0] = op::WRITE_10;
    c
}

pub(super) fn cdb16(opcode: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![opcode, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

pub(super) fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn unit_attention_lifecycle() {
    let h = harness(true);
    let c = nexus("iqn.init-c", 3);
    h.target.nexus_added(&c);
    // INQUIRY and REPORT LUNS do not consume the UA.
    assert_good(&run(&h, &c, &[op::INQUIRY, 0, 0, 0, 96, 0], &[]).await);
    assert_good(
        &run(
            &h,
            &c,
            &[op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            &[],
        )
        .await,
    );
    // The next command reports 29/00 exactly once.
    assert_sense(
        &run(&h, &c, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await,
        6,
        0x29,
        0,
    );
    assert_good(&run(&h, &c, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await);
    // REQUEST SENSE returns a pending UA as data (GOOD) and clears it.
    h.lu.capacity_changed();
    let r = run(&h, &c, &[op::REQUEST_SENSE, 0, 0, 0, 252, 0], &[]).await;
    assert_good(&r);
    assert_eq!(
        (r.data_in[2], r.data_in[12], r.data_in[13]),
        (6, 0x2A, 0x09)
    );
    assert_good(&run(&h, &c, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await);
    let r = run(&h, &c, &[op::REQUEST_SENSE, 0, 0, 0, 252, 0], &[]).await;
    assert_eq!((r.data_in[2], r.data_in[12]), (0, 0));
    // Capacity change reached the other nexuses too.
    assert_sense(
        &run(&h, &h.a, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await,
        6,
        0x2A,
        0x09,
    );
    clear_ua(&h.lu, &h.b);
    // LUN reset: 29/03 to everyone.
    assert!(h.target.lun_reset(&h.a, 0));
    assert!(!h.target.lun_reset(&h.a, 7));
    assert_sense(
        &run(&h, &h.b, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await,
        6,
        0x29,
        0x03,
    );
    clear_ua(&h.lu, &h.a);
    h.target.target_reset(&h.a, true);
    assert_sense(
        &run(&h, &h.a, &[op::READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]).await,
        6,
        0x29,
        0x00,
    );
}

#[tokio::test]
async fn missing_lun_and_invalid_opcode() {
    let h = harness(false);
    let r = run_lun(&h, &h.a, 5, &[op::INQUIRY, 0, 0, 0, 96, 0], &[]).await;
    assert_good(&r);
    assert_eq!(r.data_in[0], 0x7F);
    assert_sense(
        &run_lun(&h, &h.a, 5, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await,
        5,
        0x25,
        0,
    );
    let r = run_lun(
        &h,
        &h.a,
        5,
        &[op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    )
    .await;
    assert_good(&r);
    assert_eq!(
        &r.data_in[..],
        &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    for opcode in [0x04u8, 0x48, 0x9C, 0xC0, 0xFF] {
        let r = run(&h, &h.a, &[opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await;
        assert_sense(&r, 5, 0x20, 0);
        assert_eq!(
            r.sense.as_ref().unwrap()[15],
            0,
            "no SKSV for invalid opcode {opcode:#x}"
        );
    }
    // Known opcode with an unknown service action: INVALID FIELD IN CDB pointing at byte 1.
    let r = run(
        &h,
        &h.a,
        &[
            op::SERVICE_ACTION_IN_16,
            0x11,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            32,
            0,
            0,
        ],
        &[],
    )
    .await;
    assert_sense(&r, 5, 0x24, 0);
    assert_eq!(&r.sense.as_ref().unwrap()[16..18], &[0, 1]);
}

/// Every command the table advertises reaches a handler (never 05/20/00 or "unknown service action").
#[tokio::test]
async fn advertised_commands_are_dispatched() {
    let h = harness(true);
    for info in COMMANDS {
        let mut c = vec![0u8; info.usage.len()];
        c[0] = info.opcode;
        if let Some(sa) = info.service_action {
            c[1] = sa as u8;
        }
        let r = run(&h, &h.a, &c, &[]).await;
        if let Some((k, asc, _)) = r.sense_code() {
            assert!(
                !(k == 5 && asc == 0x20),
                "{:02x}/{:?} not dispatched",
                info.opcode,
                info.service_action
            );
            let fp = &r.sense.as_ref().unwrap()[15..18];
            assert!(
                !(k == 5 && asc == 0x24 && fp == [0xCC, 0, 1]),
                "{:02x} SA rejected",
                info.opcode
            );
        }
    }
}

#[tokio::test]
async fn inquiry_pages() {
    let h = harness(true);
    let r = run(&h, &h.a, &[op::INQUIRY, 0, 0, 0, 255, 0], &[]).await;
    assert_good(&r);
    let d = &r.data_in;
    assert_eq!(d.len(), 96);
    assert_eq!(
        (d[0], d[2], d[3] & 0x0F, usize::from(d[4]) + 5),
        (0, 6, 2, 96)
    );
    assert_eq!(&d[8..16], b"HAVEN   ");
    assert_eq!(&d[58..60], &[0x00, 0xA0]);
    assert!(
        d[58..74].windows(2).any(|w| w == [0x04, 0xC0]),
        "SBC-3 version descriptor"
    );
    // Short allocation length truncates.
    assert_eq!(
        run(&h, &h.a, &[op::INQUIRY, 0, 0, 0, 5, 0], &[])
            .await
            .data_in
            .len(),
        5
    );
    // Page code without EVPD, and CMDDT, are invalid.
    assert_sense(
        &run(&h, &h.a, &[op::INQUIRY, 0, 0x80, 0, 255, 0], &[]).await,
        5,
        0x24,
        0,
    );
    assert_sense(
        &run(&h, &h.a, &[op::INQUIRY, 2, 0, 0, 255, 0], &[]).await,
        5,
        0x24,
        0,
    );
    let r = run(&h, &h.a, &[op::INQUIRY, 1, 0, 0, 255, 0], &[]).await;
    let pages = r.data_in[4..].to_vec();
    assert!(pages.windows(2).all(|w| w[0] < w[1]), "sorted: {pages:?}");
    for p in pages {
        let r = run(&h, &h.a, &[op::INQUIRY, 1, p, 0x10, 0, 0], &[]).await;
        assert_good(&r);
        assert_eq!(r.data_in[1], p);
        let len = usize::from(u16::from_be_bytes([r.data_in[2], r.data_in[3]]));
        assert_eq!(r.data_in.len(), len + 4, "page {p:#x}");
    }
    assert_sense(
        &run(&h, &h.a, &[op::INQUIRY, 1, 0x86, 0, 255, 0], &[]).await,
        5,
        0x24,
        0,
    );
    // 0x83: NAA 6 first, then T10, RTPI, TPG, name strings.
    let r = run(&h, &h.a, &[op::INQUIRY, 1, 0x83, 1, 0, 0], &[])
        .await
        .data_in;
    assert_eq!(&r[4..8], &[0x01, 0x03, 0, 16]);
    assert_eq!(r[8] >> 4, 6);
    let mut types = Vec::new();
    let mut pos = 4;
    while pos + 4 <= r.len() {
        types.push((r[pos + 1] & 0x30, r[pos + 1] & 0x0F));
        pos += 4 + usize::from(r[pos + 3]);
    }
    assert_eq!(pos, r.len());
    assert_eq!(
        types,
        vec![(0, 3), (0, 1), (0x10, 4), (0x10, 5), (0x10, 8), (0x20, 8)]
    );
    let text = String::from_utf8_lossy(&r);
    assert!(text.contains("iqn.2024-01.test:target,t,0x0001"));
    // 0xB0 / 0xB2 / READ CAPACITY(16) agree on thin provisioning.
    let b0 = run(&h, &h.a, &[op::INQUIRY, 1, 0xB0, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!(b0[3], 0x3C);
    assert_eq!(b0[5], 255, "MAXIMUM COMPARE AND WRITE LENGTH");
    assert_ne!(u32::from_be_bytes(b0[20..24].try_into().unwrap()), 0);
    let b2 = run(&h, &h.a, &[op::INQUIRY, 1, 0xB2, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!(b2[5] & 0xE0, 0xE0);
    let rc = run(
        &h,
        &h.a,
        &[
            op::SERVICE_ACTION_IN_16,
            0x10,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            32,
            0,
            0,
        ],
        &[],
    )
    .await;
    assert_eq!(rc.data_in[14] & 0x80, 0x80);
    let thick = harness(false);
    let b0 = run(&thick, &thick.a, &[op::INQUIRY, 1, 0xB0, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!(u32::from_be_bytes(b0[20..24].try_into().unwrap()), 0);
    let b2 = run(&thick, &thick.a, &[op::INQUIRY, 1, 0xB2, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!(b2[5], 0);
}

#[tokio::test]
async fn mode_sense_and_select() {
    let h = harness(false);
    let r = run(&h, &h.a, &[op::MODE_SENSE_6, 0, 0x3F, 0, 255, 0], &[]).await;
    assert_good(&r);
    let d = &r.data_in;
    assert_eq!(usize::from(d[0]) + 1, d.len());
    assert_eq!(d[3], 8, "block descriptor");
    let mut pos = 4 + 8;
    let mut codes = Vec::new();
    while pos < d.len() {
        codes.push(d[pos] & 0x3F);
        pos += 2 + usize::from(d[pos + 1]);
    }
    assert_eq!(codes, vec![0x01, 0x08, 0x0A, 0x1C]);
    // Residual case: short allocation length.
    assert_eq!(
        run(&h, &h.a, &[op::MODE_SENSE_6, 0, 0x3F, 0, 4, 0], &[])
            .await
            .data_in
            .len(),
        4
    );
    // Saved values not supported; unknown page invalid.
    assert_sense(
        &run(&h, &h.a, &[op::MODE_SENSE_6, 0, 0xC8, 0, 255, 0], &[]).await,
        5,
        0x39,
        0,
    );
    assert_sense(
        &run(&h, &h.a, &[op::MODE_SENSE_6, 0, 0x19, 0, 255, 0], &[]).await,
        5,
        0x24,
        0,
    );
    // MODE SENSE(10) with long LBA descriptor.
    let r = run(
        &h,
        &h.a,
        &[op::MODE_SENSE_10, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0],
        &[],
    )
    .await;
    assert_good(&r);
    assert_eq!((r.data_in[4], r.data_in[7]), (1, 16));
    // Changeable control page: only SWP.
    let r = run(&h, &h.a, &[op::MODE_SENSE_6, 0x08, 0x4A, 0, 255, 0], &[]).await;
    assert_eq!(
        &r.data_in[4..],
        &[0x0A, 0x0A, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]
    );
    // Set SWP via MODE SELECT(6) with the page read back (DBD=1).
    let cur = run(&h, &h.a, &[op::MODE_SENSE_6, 0x08, 0x0A, 0, 255, 0], &[])
        .await
        .data_in;
    let mut sel = vec![0, 0, 0, 0];
    let mut page = cur[4..].to_vec();
    page[4] |= 0x08;
    sel.extend_from_slice(&page);
    assert_good(
        &run(
            &h,
            &h.a,
            &[op::MODE_SELECT_6, 0x10, 0, 0, sel.len() as u8, 0],
            &sel,
        )
        .await,
    );
    assert_sense(
        &run(&h, &h.a, &write10(0, 1), &pattern(1, 0)).await,
        7,
        0x27,
        0x02,
    );
    assert_good(&run(&h, &h.a, &read10(0, 1), &[]).await);
    let r = run(&h, &h.a, &[op::MODE_SENSE_6, 0x08, 0x0A, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!((r[2] & 0x80, r[4 + 4] & 0x08), (0x80, 0x08));
    // Other nexus is told the parameters changed.
    assert_sense(
        &run(&h, &h.b, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await,
        6,
        0x2A,
        0x01,
    );
    // Changing a non-changeable bit is rejected and changes nothing.
    let mut bad = sel.clone();
    bad[4 + 2] |= 0x04; // D_SENSE
    bad[4 + 4] &= !0x08;
    let r = run(
        &h,
        &h.a,
        &[op::MODE_SELECT_6, 0x10, 0, 0, bad.len() as u8, 0],
        &bad,
    )
    .await;
    assert_sense(&r, 5, 0x26, 0);
    assert_sense(
        &run(&h, &h.a, &write10(0, 1), &pattern(1, 0)).await,
        7,
        0x27,
        0x02,
    );
    // SP=1 rejected; clearing SWP restores writes.
    assert_sense(
        &run(
            &h,
            &h.a,
            &[op::MODE_SELECT_6, 0x11, 0, 0, sel.len() as u8, 0],
            &sel,
        )
        .await,
        5,
        0x24,
        0,
    );
    let mut clear = sel.clone();
    clear[4 + 4] &= !0x08;
    assert_good(
        &run(
            &h,
            &h.a,
            &[op::MODE_SELECT_6, 0x10, 0, 0, clear.len() as u8, 0],
            &clear,
        )
        .await,
    );
    assert_good(&run(&h, &h.a, &write10(0, 1), &pattern(1, 0)).await);
    // Caching page WCE mirrors the identity.
    let r = run(&h, &h.a, &[op::MODE_SENSE_6, 0x08, 0x08, 0, 255, 0], &[])
        .await
        .data_in;
    assert_eq!(r[4 + 2] & 0x04, 0);
}

#[tokio::test]
async fn reserve6_two_initiators() {
    let h = harness(false);
    let reserve = [op::RESERVE_6, 0, 0, 0, 0, 0];
    let release = [op::RELEASE_6, 0, 0, 0, 0, 0];
    let mode_sense = [op::MODE_SENSE_6, 0, 0x3F, 0, 255, 0];
    assert_good(&run(&h, &h.a, &reserve, &[]).await);
    assert_good(&run(&h, &h.a, &reserve, &[]).await);
    assert_eq!(
        run(&h, &h.b, &reserve, &[]).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_good(&run(&h, &h.b, &release, &[]).await);
    assert_good(&run(&h, &h.a, &mode_sense, &[]).await);
    assert_eq!(
        run(&h, &h.b, &mode_sense, &[]).await.status,
        STATUS_RESERVATION_CONFLICT
    );
    assert_good(&run(&h, &h.b, &[op::INQUIRY, 0, 0, 0, 36, 0], &[]).await);
    assert_good(&run(&h, &h.a, &release, &[]).await);
    assert_good(&run(&h, &h.b, &[op::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await);
    // Nexus loss drops the SPC-2 reservation.
    h.target.nexus_removed(&h.b);
    assert_good(&run(&h, &h.a, &reserve, &[]).await);
    // LUN reset drops it too.
    h.target.lun_reset(&h.a, 0);
    clear_ua(&h.lu, &h.a);
    h.target.nexus_added(&h.b);
    clear_ua(&h.lu, &h.b);
    assert_good(&run(&h, &h.b, &reserve, &[]).await);
}

#[tokio::test]
async fn misc_commands() {
    let h = harness(false);
    assert_good(
        &run(
            &h,
            &h.a,
            &[op::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
        )
        .await,
    );
    let mut sc = cdb16(op::SYNCHRONIZE_CACHE_16, BLOCKS + 1, 0);
    assert_sense(&run(&h, &h.a, &sc, &[]).await, 5, 0x21, 0);
    sc[2..10].copy_from_slice(&0u64.to_be_bytes());
    assert_good(&run(&h, &h.a, &sc, &[]).await);
    assert_good(&run(&h, &h.a, &[op::START_STOP_UNIT, 0, 0, 0, 1, 0], &[]).await);
    assert_sense(
        &run(&h, &h.a, &[op::START_STOP_UNIT, 0, 0, 0, 0x40, 0], &[]).await,
        5,
        0x24,
        0,
    );
    assert_good(&run(&h, &h.a, &[op::PREVENT_ALLOW, 0, 0, 0, 1, 0], &[]).await);
    assert_good(&run(&h, &h.a, &[op::PREVENT_ALLOW, 0, 0, 0, 0, 0], &[]).await);
    assert_good(&run(&h, &h.a, &cdb16(op::PRE_FETCH_16, 0, 8), &[]).await);
    assert_sense(
        &run(&h, &h.a, &cdb16(op::PRE_FETCH_16, BLOCKS, 1), &[]).await,
        5,
        0x21,
        0,
    );
    let r = run(
        &h,
        &h.a,
        &[op::MAINTENANCE_IN, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    )
    .await;
    assert_good(&r);
    assert_eq!(
        &r.data_in[..],
        &[0, 0, 0, 12, 0x80, 0x01, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    );
    let r = run(
        &h,
        &h.a,
        &[op::MAINTENANCE_IN, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    )
    .await;
    assert_eq!(&r.data_in[..8], &[0, 0, 0, 16, 0x10, 0, 0, 0]);
    // REPORT LUNS allocation length below 16 is invalid.
    assert_sense(
        &run(
            &h,
            &h.a,
            &[op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
            &[],
        )
        .await,
        5,
        0x24,
        0,
    );
}

#[tokio::test]
async fn identity_validation() {
    let backend: Arc<dyn BlockBackend> = Arc::new(MemBackend::new(1 << 20));
    let store: Arc<dyn PrStore> = Arc::new(MemPrStore::new());
    let mut id = identity(false);
    assert!(LogicalUnit::new(id.clone(), backend.clone(), 520, store.clone()).is_err());
    id.vendor = "TOO-LONG-VENDOR".into();
    assert!(LogicalUnit::new(id, backend.clone(), 512, store.clone()).is_err());
    let odd: Arc<dyn BlockBackend> = Arc::new(MemBackend::new(4096 + 512));
    assert!(LogicalUnit::new(identity(false), odd, 4096, store.clone()).is_err());
    store.save(Bytes::from_static(b"garbage")).await.unwrap();
    assert!(matches!(
        LogicalUnit::new(identity(false), backend, 512, store),
        Err(ScsiError::CorruptPrState(_))
    ));
}

/// `haadm adjust` adding and removing LUNs under logged-in sessions: they see the new map from their
/// next command, every LU reports REPORTED LUNS DATA HAS CHANGED once per nexus (a new LU POWER ON,
/// RESET first), a removed LUN is LOGICAL UNIT NOT SUPPORTED; the same map again changes nothing.
#[tokio::test]
async fn replacing_the_lun_map_tells_logged_in_nexuses() {
    let h = harness(false);
    let report_luns = [op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0];
    let backend = Arc::new(MemBackend::new(BLOCKS * 512));
    let lu1 = Arc::new(LogicalUnit::new(identity(false), backend, 512, Arc::new(MemPrStore::new())).unwrap());
    let map = |with_1: bool| {
        let mut m = BTreeMap::new();
        m.insert(0, Arc::clone(&h.lu));
        if with_1 {
            m.insert(1, Arc::clone(&lu1));
        }
        m
    };
    assert!(!h.target.replace_luns(map(false)), "the same LUNs are no change");
    assert_good(&run(&h, &h.a, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await);

    assert!(h.target.replace_luns(map(true)));
    // LUN 0 (kept): 3F/0E once, then GOOD; REPORT LUNS lists both.
    assert_sense(&run(&h, &h.a, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await, 6, 0x3F, 0x0E);
    assert_good(&run(&h, &h.a, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await);
    let r = run(&h, &h.a, &report_luns, &[]).await;
    assert_good(&r);
    assert_eq!(&r.data_in[0..4], &16u32.to_be_bytes(), "two LUNs listed");
    // LUN 1 (new): POWER ON first, then 3F/0E, then GOOD.
    let tur1 = |n| run_lun(&h, n, 1, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]);
    assert_sense(&tur1(&h.b).await, 6, 0x29, 0x00);
    assert_sense(&tur1(&h.b).await, 6, 0x3F, 0x0E);
    assert_good(&tur1(&h.b).await);

    // LUN 1 removed: gone for the logged-in nexus, LUN 0 tells it again.
    assert!(h.target.replace_luns(map(false)));
    assert_sense(&tur1(&h.b).await, 5, 0x25, 0x00);
    assert_sense(&run(&h, &h.b, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]).await, 6, 0x3F, 0x0E);
    // A nexus that logged out meanwhile is not told.
    h.target.nexus_removed(&h.a);
    assert!(h.target.replace_luns(map(true)));
    assert!(h.lu.ua.pending(&h.a).is_empty());
}
