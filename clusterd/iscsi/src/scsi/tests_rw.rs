//! Block command tests (READ/WRITE family, VERIFY, WRITE SAME, UNMAP, COMPARE AND WRITE, GET LBA
//! STATUS, READ CAPACITY) against a MemBackend.

use std::sync::Arc;

use super::opcodes::op;
use super::tests::{
    BLOCKS, assert_good, assert_sense, cdb16, harness, harness_with, pattern, read10, run, write10,
};
use super::*;
use crate::backend::BlockBackend;

#[tokio::test]
async fn read_write_all_sizes() {
    let h = harness(false);
    let data = pattern(4, 7);
    // WRITE 6/10/12/16 then READ back through the matching READ.
    let lba = 100u64;
    let cases: [(Vec<u8>, Vec<u8>); 4] = [
        (
            vec![op::WRITE_6, 0, 0, lba as u8, 4, 0],
            vec![op::READ_6, 0, 0, lba as u8, 4, 0],
        ),
        (write10(lba as u32, 4), read10(lba as u32, 4)),
        (
            vec![op::WRITE_12, 0, 0, 0, 0, lba as u8, 0, 0, 0, 4, 0, 0],
            vec![op::READ_12, 0, 0, 0, 0, lba as u8, 0, 0, 0, 4, 0, 0],
        ),
        (cdb16(op::WRITE_16, lba, 4), cdb16(op::READ_16, lba, 4)),
    ];
    for (i, (w, r)) in cases.iter().enumerate() {
        let d = pattern(4, i as u8);
        let resp = run(&h, &h.a, w, &d).await;
        assert_good(&resp);
        assert_eq!(resp.transfer_len, 2048);
        let resp = run(&h, &h.a, r, &[]).await;
        assert_good(&resp);
        assert_eq!(&resp.data_in[..], &d[..]);
        assert_eq!(resp.transfer_len, 2048);
    }
    // FUA bit accepted.
    let mut w = write10(0, 4);
    w[1] = 0x08;
    assert_good(&run(&h, &h.a, &w, &data).await);
    // READ(6) with transfer length 0 means 256 blocks.
    let r = run(&h, &h.a, &[op::READ_6, 0, 0, 0, 0, 0], &[]).await;
    assert_eq!(r.data_in.len(), 256 * 512);
    // Zero-length transfers are fine.
    assert_good(&run(&h, &h.a, &read10(0, 0), &[]).await);
    assert_good(&run(&h, &h.a, &write10(BLOCKS as u32, 0), &[]).await);
}

#[tokio::test]
async fn out_of_range_and_invalid_fields() {
    let h = harness(false);
    for lba in [BLOCKS + 1, 0x8000_0000, 0xFFFF_FFFF] {
        assert_sense(
            &run(&h, &h.a, &read10(lba as u32, 0), &[]).await,
            5,
            0x21,
            0,
        );
        assert_sense(
            &run(&h, &h.a, &write10(lba as u32, 1), &pattern(1, 0)).await,
            5,
            0x21,
            0,
        );
    }
    assert_sense(
        &run(&h, &h.a, &read10(BLOCKS as u32 - 1, 2), &[]).await,
        5,
        0x21,
        0,
    );
    for lba in [BLOCKS, 1 << 63, u64::MAX] {
        assert_sense(
            &run(&h, &h.a, &cdb16(op::READ_16, lba, 1), &[]).await,
            5,
            0x21,
            0,
        );
        assert_sense(
            &run(&h, &h.a, &cdb16(op::VERIFY_16, lba, 1), &[]).await,
            5,
            0x21,
            0,
        );
    }
    // LBA + length overflowing u64 must not wrap into range.
    assert_sense(
        &run(&h, &h.a, &cdb16(op::READ_16, u64::MAX - 1, 4), &[]).await,
        5,
        0x21,
        0,
    );
    // RDPROTECT / WRPROTECT.
    let mut c = read10(0, 1);
    c[1] = 0x20;
    assert_sense(&run(&h, &h.a, &c, &[]).await, 5, 0x24, 0);
    let mut c = write10(0, 1);
    c[1] = 0x40;
    assert_sense(&run(&h, &h.a, &c, &pattern(1, 0)).await, 5, 0x24, 0);
}

#[tokio::test]
async fn short_data_out_writes_only_received_blocks() {
    let h = harness(false);
    let before = run(&h, &h.a, &read10(10, 2), &[]).await.data_in;
    let d = pattern(1, 9);
    // Two blocks requested, one sent (EDTL < SCSI transfer length): only block 10 changes.
    let r = run(&h, &h.a, &write10(10, 2), &d).await;
    assert_good(&r);
    assert_eq!(r.transfer_len, 1024);
    let after = run(&h, &h.a, &read10(10, 2), &[]).await.data_in;
    assert_eq!(&after[..512], &d[..]);
    assert_eq!(&after[512..], &before[512..]);
    // EDTL larger than the transfer: the excess is ignored.
    let big = pattern(3, 1);
    assert_good(&run(&h, &h.a, &write10(20, 1), &big).await);
    let r = run(&h, &h.a, &read10(20, 2), &[]).await.data_in;
    assert_eq!(&r[..512], &big[..512]);
    assert!(r[512..].iter().all(|&b| b == 0));
}

#[tokio::test]
async fn verify_and_write_verify() {
    let h = harness(false);
    let d = pattern(2, 3);
    let mut wv = write10(30, 2);
    wv[0] = op::WRITE_VERIFY_10;
    wv[1] = 0x02;
    assert_good(&run(&h, &h.a, &wv, &d).await);
    let mut v = read10(30, 2);
    v[0] = op::VERIFY_10;
    assert_good(&run(&h, &h.a, &v, &[]).await); // BYTCHK 0
    v[1] = 0x02; // BYTCHK 01b
    assert_good(&run(&h, &h.a, &v, &d).await);
    let mut bad = d.clone();
    bad[700] ^= 0xFF;
    let r = run(&h, &h.a, &v, &bad).await;
    assert_sense(&r, 0x0E, 0x1D, 0);
    assert_eq!(&r.sense.as_ref().unwrap()[3..7], &700u32.to_be_bytes());
    v[1] = 0x04; // BYTCHK 10b reserved
    assert_sense(&run(&h, &h.a, &v, &d).await, 5, 0x24, 0);
    // BYTCHK 11b: one block compared against each block.
    let same = vec![0x5A; 512];
    let mut ws = vec![op::WRITE_SAME_10, 0, 0, 0, 0, 40, 0, 0, 3, 0];
    assert_good(&run(&h, &h.a, &ws, &same).await);
    let mut v = read10(40, 3);
    v[0] = op::VERIFY_10;
    v[1] = 0x06;
    assert_good(&run(&h, &h.a, &v, &same).await);
    ws[8] = 1;
    assert_good(&run(&h, &h.a, &ws, &[0u8; 512]).await);
    assert_sense(&run(&h, &h.a, &v, &same).await, 0x0E, 0x1D, 0);
}

#[tokio::test]
async fn write_same_and_unmap() {
    let h = harness(true);
    let pat = vec![0xC3u8; 512];
    let mut ws = cdb16(op::WRITE_SAME_16, 64, 8);
    assert_good(&run(&h, &h.a, &ws, &pat).await);
    let r = run(&h, &h.a, &read10(64, 8), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0xC3));
    // UNMAP bit with zero data deallocates.
    ws[1] = 0x08;
    assert_good(&run(&h, &h.a, &ws, &[0u8; 512]).await);
    assert!(
        run(&h, &h.a, &read10(64, 8), &[])
            .await
            .data_in
            .iter()
            .all(|&b| b == 0)
    );
    let st = h.backend.lba_status(64 * 512, 8 * 512).await.unwrap();
    assert_eq!(st, vec![(64 * 512, 8 * 512, false)]);
    // UNMAP with a non-zero pattern still deallocates (LBPRZ: reads back as zeroes).
    assert_good(&run(&h, &h.a, &cdb16(op::WRITE_SAME_16, 64, 8), &pat).await);
    assert_good(&run(&h, &h.a, &ws, &pat).await);
    assert!(
        run(&h, &h.a, &read10(64, 8), &[])
            .await
            .data_in
            .iter()
            .all(|&b| b == 0)
    );
    // NDOB writes zeroes without a data buffer; NDOB is invalid for WRITE SAME(10).
    assert_good(&run(&h, &h.a, &cdb16(op::WRITE_SAME_16, 64, 1), &pat).await);
    let mut nd = cdb16(op::WRITE_SAME_16, 64, 1);
    nd[1] = 0x01;
    assert_good(&run(&h, &h.a, &nd, &[]).await);
    assert!(
        run(&h, &h.a, &read10(64, 1), &[])
            .await
            .data_in
            .iter()
            .all(|&b| b == 0)
    );
    assert_sense(
        &run(
            &h,
            &h.a,
            &[op::WRITE_SAME_10, 1, 0, 0, 0, 0, 0, 0, 1, 0],
            &[],
        )
        .await,
        5,
        0x24,
        0,
    );
    // WSNZ=0: zero blocks writes from the LBA to the end of the medium; out of range still first.
    assert_good(&run(&h, &h.a, &cdb16(op::WRITE_SAME_16, BLOCKS - 3, 0), &pat).await);
    let tail = run(&h, &h.a, &read10((BLOCKS - 3) as u32, 3), &[]).await;
    assert!(tail.data_in.iter().all(|&b| b == 0xC3));
    assert_sense(
        &run(&h, &h.a, &cdb16(op::WRITE_SAME_16, BLOCKS, 0), &pat).await,
        5,
        0x21,
        0,
    );
    assert_sense(
        &run(&h, &h.a, &cdb16(op::WRITE_SAME_16, BLOCKS + 1, 0), &pat).await,
        5,
        0x21,
        0,
    );
    assert_sense(
        &run(&h, &h.a, &cdb16(op::WRITE_SAME_16, u64::MAX, 1), &pat).await,
        5,
        0x21,
        0,
    );
    // ANCHOR not supported.
    let mut an = cdb16(op::WRITE_SAME_16, 0, 1);
    an[1] = 0x18;
    assert_sense(&run(&h, &h.a, &an, &pat).await, 5, 0x24, 0);

    // UNMAP command.
    assert_good(&run(&h, &h.a, &write10(100, 8), &pattern(8, 1)).await);
    let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    list.extend_from_slice(&100u64.to_be_bytes());
    list.extend_from_slice(&8u32.to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    assert_good(&run(&h, &h.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list).await);
    assert!(
        run(&h, &h.a, &read10(100, 8), &[])
            .await
            .data_in
            .iter()
            .all(|&b| b == 0)
    );
    assert_good(&run(&h, &h.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await);
    assert_sense(
        &run(
            &h,
            &h.a,
            &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 4, 0],
            &list[..4],
        )
        .await,
        5,
        0x1A,
        0,
    );
    list[8..16].copy_from_slice(&(BLOCKS - 4).to_be_bytes());
    assert_sense(
        &run(&h, &h.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list).await,
        5,
        0x21,
        0,
    );
}

/// A fully provisioned LU (LBPME=0, LBPU=0, LBPWS=0; e.g. a replicated volume) refuses UNMAP and the
/// UNMAP bit of WRITE SAME instead of accepting them: libiscsi's Unmap.VPD / WriteSame*.UnmapVPD hold
/// the answer to the VPD page, and nothing is written or deallocated.
#[tokio::test]
async fn fully_provisioned_lu_refuses_unmap() {
    let h = harness(false);
    let pat = vec![0x5Au8; 512];
    assert_good(&run(&h, &h.a, &cdb16(op::WRITE_SAME_16, 64, 8), &pat).await);
    let mut ws16 = cdb16(op::WRITE_SAME_16, 64, 8);
    ws16[1] = 0x08;
    assert_sense(&run(&h, &h.a, &ws16, &[0u8; 512]).await, 5, 0x24, 0);
    let ws10 = [op::WRITE_SAME_10, 0x08, 0, 0, 0, 64, 0, 0, 8, 0];
    assert_sense(&run(&h, &h.a, &ws10, &[0u8; 512]).await, 5, 0x24, 0);
    let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    list.extend_from_slice(&64u64.to_be_bytes());
    list.extend_from_slice(&8u32.to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    assert_sense(&run(&h, &h.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list).await, 5, 0x20, 0);
    assert_sense(&run(&h, &h.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).await, 5, 0x20, 0);
    let r = run(&h, &h.a, &read10(64, 8), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0x5A), "refused commands must leave the data alone");
    // The thin LU of the same harness accepts both (see write_same_and_unmap).
    let thin = harness(true);
    assert_good(&run(&thin, &thin.a, &ws16, &[0u8; 512]).await);
    assert_good(&run(&thin, &thin.a, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list).await);
}

#[tokio::test]
async fn compare_and_write() {
    let h = harness(false);
    let old = pattern(2, 1);
    let new = pattern(2, 2);
    assert_good(&run(&h, &h.a, &write10(50, 2), &old).await);
    let mut caw = vec![op::COMPARE_AND_WRITE, 0];
    caw.extend_from_slice(&50u64.to_be_bytes());
    caw.extend_from_slice(&[0, 0, 0, 2, 0, 0]);
    let mut buf = old.clone();
    buf.extend_from_slice(&new);
    let r = run(&h, &h.a, &caw, &buf).await;
    assert_good(&r);
    assert_eq!(r.transfer_len, 2048);
    assert_eq!(
        &run(&h, &h.a, &read10(50, 2), &[]).await.data_in[..],
        &new[..]
    );
    // Miscompare: nothing written, offset reported.
    let mut buf2 = new.clone();
    buf2[600] ^= 1;
    buf2.extend_from_slice(&old);
    let r = run(&h, &h.a, &caw, &buf2).await;
    assert_sense(&r, 0x0E, 0x1D, 0);
    assert_eq!(&r.sense.as_ref().unwrap()[3..7], &600u32.to_be_bytes());
    assert_eq!(
        &run(&h, &h.a, &read10(50, 2), &[]).await.data_in[..],
        &new[..]
    );
    let mut oob = caw.clone();
    oob[2..10].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    assert_sense(&run(&h, &h.a, &oob, &buf).await, 5, 0x21, 0);
}

/// Many concurrent read-increment-CAW loops: atomicity means no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_write_is_atomic() {
    let h = Arc::new(harness(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                for _ in 0..25 {
                    loop {
                        let cur = run(&h, &h.a, &read10(7, 1), &[]).await.data_in;
                        let v = u64::from_be_bytes(cur[..8].try_into().unwrap());
                        let mut next = cur.to_vec();
                        next[..8].copy_from_slice(&(v + 1).to_be_bytes());
                        let mut buf = cur.to_vec();
                        buf.extend_from_slice(&next);
                        let mut caw = vec![op::COMPARE_AND_WRITE, 0];
                        caw.extend_from_slice(&7u64.to_be_bytes());
                        caw.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
                        // Interleave plain writes to another block to exercise the write gate.
                        run(&h, &h.b, &write10(8, 1), &next).await;
                        if run(&h, &h.a, &caw, &buf).await.status == STATUS_GOOD {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let cur = run(&h, &h.a, &read10(7, 1), &[]).await.data_in;
    assert_eq!(u64::from_be_bytes(cur[..8].try_into().unwrap()), 200);
}

fn get_lba_status(lba: u64, alloc: u32) -> Vec<u8> {
    let mut c = vec![op::SERVICE_ACTION_IN_16, 0x12];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&alloc.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

#[tokio::test]
async fn get_lba_status_reports_and_checks_bounds() {
    for bs in [512u32, 4096] {
        let h = harness_with(bs, true, Arc::new(MemPrStore::new()));
        for lba in [BLOCKS, BLOCKS + 1, 1 << 63, u64::MAX, u64::MAX >> 9] {
            assert_sense(
                &run(&h, &h.a, &get_lba_status(lba, 64), &[]).await,
                5,
                0x21,
                0,
            );
        }
        let data = vec![1u8; 4 * bs as usize];
        assert_good(&run(&h, &h.a, &write10(16, 4), &data).await);
        let r = run(&h, &h.a, &get_lba_status(0, 1024), &[]).await;
        assert_good(&r);
        let d = &r.data_in;
        let n = (u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize - 4) / 16;
        let descs: Vec<(u64, u32, u8)> = (0..n)
            .map(|i| {
                let e = &d[8 + i * 16..24 + i * 16];
                (
                    u64::from_be_bytes(e[0..8].try_into().unwrap()),
                    u32::from_be_bytes(e[8..12].try_into().unwrap()),
                    e[12],
                )
            })
            .collect();
        assert_eq!(
            descs,
            vec![(0, 16, 1), (16, 4, 0), (20, (BLOCKS - 20) as u32, 1)],
            "bs {bs}"
        );
        // Starts at the requested LBA.
        let r = run(&h, &h.a, &get_lba_status(17, 24), &[]).await;
        assert_eq!(r.data_in.len(), 24);
        assert_eq!(&r.data_in[8..16], &17u64.to_be_bytes());
    }
}

#[tokio::test]
async fn read_capacity() {
    let h = harness_with(4096, false, Arc::new(MemPrStore::new()));
    let r = run(
        &h,
        &h.a,
        &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    )
    .await;
    assert_eq!(&r.data_in[..], &[0, 0, 0x07, 0xFF, 0, 0, 0x10, 0]);
    assert_sense(
        &run(
            &h,
            &h.a,
            &[op::READ_CAPACITY_10, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            &[],
        )
        .await,
        5,
        0x24,
        0,
    );
    let r = run(
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
            12,
            0,
            0,
        ],
        &[],
    )
    .await;
    assert_eq!(r.data_in.len(), 12);
    assert_eq!(
        &r.data_in[..12],
        &[0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 0x10, 0]
    );
}

/// Data-Out that is longer than the CDB implies is refused before anything is compared or written:
/// a wrapped one-byte CAW block count or an oversized WRITE SAME buffer means initiator and CDB
/// disagree about the blocks involved.
#[tokio::test]
async fn oversized_data_out_is_rejected() {
    let h = harness(true);
    let old = pattern(2, 1);
    assert_good(&run(&h, &h.a, &write10(40, 2), &old).await);
    let caw = |blocks: u8| {
        let mut c = vec![op::COMPARE_AND_WRITE, 0];
        c.extend_from_slice(&40u64.to_be_bytes());
        c.extend_from_slice(&[0, 0, 0, blocks, 0, 0]);
        c
    };
    // Verify + write halves for two blocks, but the CDB says one block.
    let mut buf = old.clone();
    buf.extend_from_slice(&pattern(2, 9));
    assert_sense(&run(&h, &h.a, &caw(1), &buf).await, 5, 0x24, 0);
    // Zero blocks with data (e.g. 256 truncated to the one-byte field).
    assert_sense(&run(&h, &h.a, &caw(0), &buf).await, 5, 0x24, 0);
    // Zero blocks and no data is a no-op.
    assert_good(&run(&h, &h.a, &caw(0), &[]).await);
    // Too little data is still a parameter list length error.
    assert_sense(&run(&h, &h.a, &caw(2), &buf[..1024]).await, 5, 0x1A, 0);
    assert_eq!(
        &run(&h, &h.a, &read10(40, 2), &[]).await.data_in[..],
        &old[..]
    );

    // WRITE SAME takes exactly one block of Data-Out (with or without UNMAP).
    for unmap in [0u8, 0x08] {
        let mut ws16 = cdb16(op::WRITE_SAME_16, 40, 1);
        ws16[1] = unmap;
        assert_sense(&run(&h, &h.a, &ws16, &[0u8; 1024]).await, 5, 0x24, 0);
        let ws10 = [op::WRITE_SAME_10, unmap, 0, 0, 0, 40, 0, 0, 1, 0];
        assert_sense(&run(&h, &h.a, &ws10, &[0u8; 1024]).await, 5, 0x24, 0);
        assert_sense(&run(&h, &h.a, &ws10, &[0u8; 256]).await, 5, 0x1A, 0);
    }
    assert_eq!(
        &run(&h, &h.a, &read10(40, 2), &[]).await.data_in[..],
        &old[..]
    );
}

/// Advertised limits stay within what initiators (and libiscsi's checks) treat as sane, and READ
/// CAPACITY(16) reports one logical block per physical block.
#[tokio::test]
async fn advertised_limits() {
    for bs in [512u32, 4096] {
        let h = harness_with(bs, true, Arc::new(MemPrStore::new()));
        let b0 = run(&h, &h.a, &[op::INQUIRY, 1, 0xB0, 0, 255, 0], &[])
            .await
            .data_in;
        let max_unmap = u32::from_be_bytes(b0[20..24].try_into().unwrap());
        assert!(
            max_unmap > 0 && max_unmap <= 1 << 20,
            "bs {bs}: {max_unmap}"
        );
        let max_ws = u64::from_be_bytes(b0[36..44].try_into().unwrap());
        assert_eq!(max_ws, 0xFFFF, "bs {bs}");
        let gran = u16::from_be_bytes(b0[6..8].try_into().unwrap());
        assert_eq!(u32::from(gran) * bs, 4096.max(bs), "bs {bs}");
        let mut rc16 = vec![op::SERVICE_ACTION_IN_16, 0x10];
        rc16.extend_from_slice(&[0; 8]);
        rc16.extend_from_slice(&32u32.to_be_bytes());
        rc16.extend_from_slice(&[0, 0]);
        let rc = run(&h, &h.a, &rc16, &[]).await;
        assert_good(&rc);
        assert_eq!(rc.data_in[13] & 0x0F, 0, "LBPPBE, bs {bs}");
    }
}

#[tokio::test]
async fn orwrite_merges_with_medium() {
    let h = harness(false);
    assert_good(&run(&h, &h.a, &write10(10, 2), &vec![0x0F; 1024]).await);
    let resp = run(&h, &h.a, &cdb16(op::ORWRITE_16, 10, 2), &vec![0xA0; 1024]).await;
    assert_good(&resp);
    assert_eq!(resp.transfer_len, 1024);
    let back = run(&h, &h.a, &read10(10, 2), &[]).await;
    assert!(back.data_in.iter().all(|&b| b == 0xAF));
    // Zero blocks is a no-op; beyond the end and ORPROTECT are rejected.
    assert_good(&run(&h, &h.a, &cdb16(op::ORWRITE_16, BLOCKS, 0), &[]).await);
    assert_sense(
        &run(&h, &h.a, &cdb16(op::ORWRITE_16, BLOCKS, 1), &[0; 512]).await,
        5,
        0x21,
        0,
    );
    let mut prot = cdb16(op::ORWRITE_16, 0, 1);
    prot[1] = 0x20;
    assert_sense(&run(&h, &h.a, &prot, &[0; 512]).await, 5, 0x24, 0);
}

#[tokio::test]
async fn read_defect_data_lists_are_empty() {
    let h = harness(false);
    let r = run(
        &h,
        &h.a,
        &[op::READ_DEFECT_DATA_10, 0, 0x18, 0, 0, 0, 0, 0, 32, 0],
        &[],
    )
    .await;
    assert_good(&r);
    assert_eq!(&r.data_in[..], &[0, 0x18, 0, 0]);
    let r = run(
        &h,
        &h.a,
        &[op::READ_DEFECT_DATA_12, 0x05, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
    )
    .await;
    assert_good(&r);
    assert_eq!(&r.data_in[..], &[0, 0x05, 0, 0, 0, 0, 0, 0]);
    let bad = run(
        &h,
        &h.a,
        &[op::READ_DEFECT_DATA_10, 0, 0x01, 0, 0, 0, 0, 0, 32, 0],
        &[],
    )
    .await;
    assert_sense(&bad, 5, 0x24, 0);
}
