//! EXTENDED COPY / RECEIVE COPY RESULTS tests against a MemBackend.

use super::inquiry::naa_designator;
use super::opcodes::op;
use super::tests::{
    BLOCKS, assert_good, assert_sense, harness, identity, pattern, read10, run, write10,
};

/// 32-byte identification CSCD descriptor naming the harness LU (or a foreign one).
fn cscd(foreign: bool) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xE4;
    d[4] = 0x01; // binary
    d[5] = 0x03; // NAA, LU association
    d[7] = 16;
    let mut naa = naa_designator(&identity(false));
    if foreign {
        naa[15] ^= 0xFF;
    }
    d[8..24].copy_from_slice(&naa);
    d[29..32].copy_from_slice(&[0, 0x02, 0x00]); // 512-byte blocks
    d
}

fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[2..4].copy_from_slice(&24u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn param_list(list_id: u8, cscds: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
    let cscd_len: usize = cscds.iter().map(Vec::len).sum();
    let seg_len: usize = segs.iter().map(Vec::len).sum();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[2..4].copy_from_slice(&(cscd_len as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(seg_len as u32).to_be_bytes());
    cscds
        .iter()
        .chain(segs)
        .for_each(|d| p.extend_from_slice(d));
    p
}

fn xcopy_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op::EXTENDED_COPY;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr_cdb(sa: u8, list_id: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op::RECEIVE_COPY_RESULTS;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

#[tokio::test]
async fn copies_within_the_lu_and_reports_status() {
    let h = harness(false);
    let data = pattern(16, 5);
    assert_good(&run(&h, &h.a, &write10(0, 16), &data).await);
    // No result held yet for list id 7.
    assert_sense(&run(&h, &h.a, &rcr_cdb(0, 7), &[]).await, 5, 0x24, 0);
    let p = param_list(7, &[cscd(false)], &[segment(0, 0, 16, 0, BLOCKS - 16)]);
    assert_good(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await);
    let back = run(&h, &h.a, &read10((BLOCKS - 16) as u32, 16), &[]).await;
    assert_eq!(&back.data_in[..], &data[..]);
    let st = run(&h, &h.a, &rcr_cdb(0, 7), &[]).await;
    assert_good(&st);
    assert_eq!(&st.data_in[..8], &[0, 0, 0, 8, 0x01, 0, 1, 0x01]);
    assert_eq!(&st.data_in[8..12], &8u32.to_be_bytes()); // 16 blocks = 8 KiB
    // Held per nexus: the other initiator sees nothing.
    assert_sense(&run(&h, &h.b, &rcr_cdb(0, 7), &[]).await, 5, 0x24, 0);

    // Overlapping copy one block up keeps the data intact.
    let p = param_list(0, &[cscd(false)], &[segment(0, 0, 16, 0, 1)]);
    assert_good(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await);
    let back = run(&h, &h.a, &read10(1, 16), &[]).await;
    assert_eq!(&back.data_in[..], &data[..]);
    // Zero parameter list length is a no-op.
    assert_good(&run(&h, &h.a, &xcopy_cdb(0), &[]).await);
}

#[tokio::test]
async fn operating_parameters() {
    let h = harness(false);
    let r = run(&h, &h.a, &rcr_cdb(3, 0), &[]).await;
    assert_good(&r);
    let d = &r.data_in;
    assert_eq!(
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize,
        d.len() - 4
    );
    assert_eq!(u16::from_be_bytes([d[8], d[9]]), 2);
    assert_eq!(u16::from_be_bytes([d[10], d[11]]), 8);
    assert_eq!(d[43], 2);
    assert_eq!(&d[44..46], &[0x02, 0xE4]);
}

#[tokio::test]
async fn rejects_bad_parameter_lists() {
    let h = harness(false);
    let ok_seg = segment(0, 0, 8, 0, 100);
    // Truncated target descriptor.
    let p = param_list(1, &[cscd(false)], std::slice::from_ref(&ok_seg));
    assert_sense(&run(&h, &h.a, &xcopy_cdb(47), &p[..47]).await, 5, 0x1A, 0);
    // Too many CSCD and segment descriptors.
    let three = [cscd(false), cscd(false), cscd(false)];
    let p = param_list(1, &three, std::slice::from_ref(&ok_seg));
    assert_sense(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await, 5, 0x26, 0x06);
    let nine: Vec<Vec<u8>> = (0..9).map(|_| ok_seg.clone()).collect();
    let p = param_list(1, &[cscd(false)], &nine);
    assert_sense(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await, 5, 0x26, 0x08);
    // Unsupported descriptor types.
    let mut fc = cscd(false);
    fc[0] = 0xE0;
    let p = param_list(1, &[fc], std::slice::from_ref(&ok_seg));
    assert_sense(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await, 5, 0x26, 0x07);
    let mut stream = ok_seg.clone();
    stream[0] = 0x03;
    let p = param_list(1, &[cscd(false)], &[stream]);
    assert_sense(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await, 5, 0x26, 0x09);
    // Unknown CSCD index, a foreign LU, beyond the end: COPY ABORTED.
    let p = param_list(1, &[cscd(false)], &[segment(0, 1, 8, 0, 100)]);
    assert_sense(
        &run(&h, &h.a, &xcopy_cdb(p.len()), &p).await,
        0x0A,
        0x08,
        0x04,
    );
    let p = param_list(1, &[cscd(true)], std::slice::from_ref(&ok_seg));
    assert_sense(
        &run(&h, &h.a, &xcopy_cdb(p.len()), &p).await,
        0x0A,
        0x08,
        0x04,
    );
    let p = param_list(1, &[cscd(false)], &[segment(0, 0, 8, 0, BLOCKS - 1)]);
    assert_sense(&run(&h, &h.a, &xcopy_cdb(p.len()), &p).await, 0x0A, 0, 0);
}
