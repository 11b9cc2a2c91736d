use super::*;

fn limits(initial_r2t: bool, first_burst: u32, max_burst: u32, outstanding: u32) -> TransferLimits {
    TransferLimits {
        first_burst,
        max_burst,
        max_outstanding_r2t: outstanding,
        initial_r2t,
        immediate_data: true,
    }
}

fn dout(ttt: u32, data_sn: u32, offset: u32, final_bit: bool) -> DataOut {
    DataOut {
        ttt,
        data_sn,
        buffer_offset: offset,
        final_bit,
        ..DataOut::default()
    }
}

fn bytes(n: usize, v: u8) -> Bytes {
    Bytes::from(vec![v; n])
}

fn ttt_alloc() -> impl FnMut() -> u32 {
    let mut n = 100;
    move || {
        n += 1;
        n
    }
}

#[test]
fn immediate_data_only_is_zero_copy() {
    let imm = bytes(4096, 7);
    let c = WriteCollector::new(4096, imm.clone(), true, limits(false, 65536, 262144, 1)).unwrap();
    assert!(c.is_complete());
    let data = c.into_data();
    assert_eq!(
        data.as_ptr(),
        imm.as_ptr(),
        "single chunk passed through without copying"
    );
}

#[test]
fn unsolicited_then_r2t() {
    let mut c =
        WriteCollector::new(10_000, bytes(1000, 1), false, limits(false, 3000, 4000, 2)).unwrap();
    let mut alloc = ttt_alloc();
    assert!(
        c.next_r2ts(&mut alloc).is_empty(),
        "no R2T while unsolicited data is outstanding"
    );
    c.on_data_out(&dout(RESERVED_TAG, 0, 1000, false), bytes(1000, 2))
        .unwrap();
    c.on_data_out(&dout(RESERVED_TAG, 1, 2000, true), bytes(1000, 3))
        .unwrap();
    let r2ts = c.next_r2ts(&mut alloc);
    assert_eq!(r2ts.len(), 2);
    assert_eq!(
        (r2ts[0].offset, r2ts[0].len, r2ts[0].r2t_sn),
        (3000, 4000, 0)
    );
    assert_eq!(
        (r2ts[1].offset, r2ts[1].len, r2ts[1].r2t_sn),
        (7000, 3000, 1)
    );
    assert!(
        c.next_r2ts(&mut alloc).is_empty(),
        "MaxOutstandingR2T respected"
    );
    c.on_data_out(&dout(r2ts[0].ttt, 0, 3000, false), bytes(2000, 4))
        .unwrap();
    c.on_data_out(&dout(r2ts[0].ttt, 1, 5000, true), bytes(2000, 5))
        .unwrap();
    c.on_data_out(&dout(r2ts[1].ttt, 0, 7000, true), bytes(3000, 6))
        .unwrap();
    assert!(c.is_complete());
    assert_eq!(c.r2t_count(), 2);
    let data = c.into_data();
    assert_eq!(data.len(), 10_000);
    assert_eq!(
        (
            data[0], data[1000], data[2000], data[3000], data[5000], data[9999]
        ),
        (1, 2, 3, 4, 5, 6)
    );
}

#[test]
fn r2t_sequences_limited_by_max_burst() {
    let mut c =
        WriteCollector::new(10_000, Bytes::new(), true, limits(true, 65536, 4096, 1)).unwrap();
    let mut alloc = ttt_alloc();
    let r = c.next_r2ts(&mut alloc);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].len, 4096);
    c.on_data_out(&dout(r[0].ttt, 0, 0, true), bytes(4096, 0))
        .unwrap();
    let r = c.next_r2ts(&mut alloc);
    assert_eq!((r[0].offset, r[0].len, r[0].r2t_sn), (4096, 4096, 1));
}

#[test]
fn datasn_and_offset_violations() {
    let mk = || {
        let mut c =
            WriteCollector::new(4096, Bytes::new(), true, limits(true, 65536, 262144, 1)).unwrap();
        let r = c.next_r2ts(ttt_alloc());
        (c, r[0].ttt)
    };
    let (mut c, ttt) = mk();
    c.on_data_out(&dout(ttt, 0, 0, false), bytes(512, 0))
        .unwrap();
    assert_eq!(
        c.on_data_out(&dout(ttt, 0, 512, false), bytes(512, 0)),
        Err(TransferError::DataSn {
            got: 0,
            expected: 1
        }),
        "duplicate DataSN"
    );
    let (mut c, ttt) = mk();
    assert_eq!(
        c.on_data_out(&dout(ttt, 27, 0, false), bytes(512, 0)),
        Err(TransferError::DataSn {
            got: 27,
            expected: 0
        })
    );
    let (mut c, ttt) = mk();
    assert_eq!(
        c.on_data_out(&dout(ttt, 0, 512, false), bytes(512, 0)),
        Err(TransferError::Offset {
            got: 512,
            expected: 0
        })
    );
    let (mut c, ttt) = mk();
    assert_eq!(
        c.on_data_out(&dout(ttt, 0, 0, false), bytes(4096, 0)),
        Err(TransferError::FinalBit)
    );
    let (mut c, ttt) = mk();
    assert_eq!(
        c.on_data_out(&dout(ttt, 0, 0, true), bytes(4100, 0)),
        Err(TransferError::Overrun)
    );
    let (mut c, _) = mk();
    assert_eq!(
        c.on_data_out(&dout(5, 0, 0, true), bytes(4096, 0)),
        Err(TransferError::UnexpectedTtt { ttt: 5 })
    );
    let (mut c, _) = mk();
    assert!(matches!(
        c.on_data_out(&dout(RESERVED_TAG, 0, 0, true), bytes(4096, 0)),
        Err(TransferError::UnexpectedTtt { .. })
    ));
}

#[test]
fn immediate_and_unsolicited_limits() {
    assert!(matches!(
        WriteCollector::new(8192, bytes(8192, 0), true, limits(false, 4096, 262144, 1)),
        Err(TransferError::TooMuchImmediateData {
            got: 8192,
            allowed: 4096
        })
    ));
    assert_eq!(
        WriteCollector::new(8192, Bytes::new(), false, limits(true, 4096, 262144, 1)).err(),
        Some(TransferError::UnsolicitedNotAllowed)
    );
    let no_imm = TransferLimits {
        immediate_data: false,
        ..limits(false, 4096, 262144, 1)
    };
    assert!(WriteCollector::new(8192, bytes(1, 0), true, no_imm).is_err());
}

fn rc(
    itt: u32,
    edtl: u32,
    is_read: bool,
    max_xmit: u32,
    max_burst: u32,
    r2t_count: u32,
) -> ResponseContext {
    ResponseContext {
        itt,
        raw_lun: 0,
        edtl,
        is_read,
        max_xmit,
        max_burst,
        r2t_count,
    }
}

fn outcome(status: u8, data: usize, sense: Option<&[u8]>, transfer_len: u32) -> CommandOutcome {
    CommandOutcome {
        status,
        data_in: bytes(data, 9),
        sense: sense.map(Bytes::copy_from_slice),
        transfer_len,
    }
}

#[test]
fn read_split_with_status_piggyback() {
    let pdus = build_response(
        &rc(7, 10_000, true, 4096, 1 << 20, 0),
        &outcome(0, 10_000, None, 10_000),
    );
    assert_eq!(pdus.len(), 3);
    let Pdu::DataIn(last) = &pdus[2].pdu else {
        panic!()
    };
    assert!(last.final_bit && last.status_present && pdus[2].has_status);
    assert_eq!((last.data_sn, last.buffer_offset), (2, 8192));
    assert_eq!(pdus[2].data.len(), 10_000 - 8192);
    let Pdu::DataIn(first) = &pdus[0].pdu else {
        panic!()
    };
    assert!(!first.final_bit && !first.status_present && !pdus[0].has_status);
}

#[test]
fn read_bursts_set_final_bit() {
    let pdus = build_response(
        &rc(7, 8192, true, 2048, 4096, 0),
        &outcome(0, 8192, None, 8192),
    );
    let finals: Vec<bool> = pdus
        .iter()
        .map(|p| matches!(&p.pdu, Pdu::DataIn(d) if d.final_bit))
        .collect();
    assert_eq!(finals, vec![false, true, false, true]);
}

#[test]
fn residuals_and_sense() {
    // Underflow: EDTL 8192, command wanted 4096.
    let pdus = build_response(
        &rc(1, 8192, true, 65536, 1 << 20, 0),
        &outcome(0, 4096, None, 4096),
    );
    let Pdu::DataIn(d) = &pdus[0].pdu else {
        panic!()
    };
    assert!(d.underflow && !d.overflow && d.residual == 4096);
    // Overflow: EDTL 512, command wanted 4096; data truncated to EDTL.
    let pdus = build_response(
        &rc(1, 512, true, 65536, 1 << 20, 0),
        &outcome(0, 4096, None, 4096),
    );
    assert_eq!(pdus[0].data.len(), 512);
    let Pdu::DataIn(d) = &pdus[0].pdu else {
        panic!()
    };
    assert!(d.overflow && d.residual == 3584);
    // Short data for a read (allocation length larger than the data) is an underflow too.
    let pdus = build_response(
        &rc(1, 255, true, 65536, 1 << 20, 0),
        &outcome(0, 36, None, 255),
    );
    let Pdu::DataIn(d) = &pdus[0].pdu else {
        panic!()
    };
    assert!(d.underflow && d.residual == 219);
    // CHECK CONDITION: separate SCSI Response with SenseLength prefix.
    let pdus = build_response(
        &rc(1, 512, true, 65536, 1 << 20, 0),
        &outcome(2, 0, Some(&[0x70, 0, 5]), 512),
    );
    assert_eq!(pdus.len(), 1);
    let Pdu::ScsiResponse(r) = &pdus[0].pdu else {
        panic!()
    };
    assert_eq!(r.status, 2);
    assert_eq!(&pdus[0].data[..], &[0, 3, 0x70, 0, 5]);
    // Write: no Data-In, response with ExpDataSN = R2T count.
    let pdus = build_response(
        &rc(1, 4096, false, 65536, 1 << 20, 3),
        &outcome(0, 0, None, 4096),
    );
    let Pdu::ScsiResponse(r) = &pdus[0].pdu else {
        panic!()
    };
    assert_eq!((r.status, r.exp_data_sn, r.residual), (0, 3, 0));
}

/// A large write collects into one buffer: segments read "from the socket" through `dest_for` +
/// `commit_data_out` and segments handed over as PDUs end up in the same place, in offset order, and a
/// PDU failing a check is never given a window (the ordinary path then reports the error).
#[test]
fn large_writes_collect_into_one_buffer_read_in_place() {
    let edtl = 1 << 20;
    let seg = 256 * 1024;
    let mut c = WriteCollector::new(
        edtl,
        bytes(seg as usize, 1),
        true,
        limits(false, seg, edtl, 1),
    )
    .unwrap();
    let mut alloc = ttt_alloc();
    let r2t = c.next_r2ts(&mut alloc)[0];
    assert_eq!((r2t.offset, r2t.len), (seg, edtl - seg));
    // Wrong DataSN / offset: no window, nothing changes.
    assert!(c.dest_for(&dout(r2t.ttt, 1, seg, false), seg).is_none());
    assert!(
        c.dest_for(&dout(r2t.ttt, 0, seg + 512, false), seg)
            .is_none()
    );
    assert!(
        c.dest_for(&dout(RESERVED_TAG, 0, seg, false), seg)
            .is_none()
    );
    // In place: the caller appends exactly the segment, then commits.
    let w = c
        .dest_for(&dout(r2t.ttt, 0, seg, false), seg)
        .expect("window");
    assert_eq!(w.len(), seg as usize, "immediate data already in place");
    w.extend_from_slice(&vec![2u8; seg as usize]);
    c.commit_data_out(&dout(r2t.ttt, 0, seg, false), seg);
    // Ordinary PDU path into the same buffer.
    c.on_data_out(&dout(r2t.ttt, 1, 2 * seg, false), bytes(seg as usize, 3))
        .unwrap();
    let last = dout(r2t.ttt, 2, 3 * seg, true);
    assert_eq!(
        c.on_data_out(&dout(r2t.ttt, 2, 3 * seg, false), bytes(seg as usize, 4)),
        Err(TransferError::FinalBit)
    );
    let w = c.dest_for(&last, seg).expect("window");
    w.extend_from_slice(&vec![4u8; seg as usize]);
    c.commit_data_out(&last, seg);
    assert!(c.is_complete());
    let data = c.into_data();
    assert_eq!(data.len(), edtl as usize);
    for (k, v) in [1u8, 2, 3, 4].iter().enumerate() {
        let s = k * seg as usize;
        assert!(
            data[s..s + seg as usize].iter().all(|b| b == v),
            "segment {k}"
        );
    }
}

#[test]
fn small_or_single_pdu_writes_keep_their_segments() {
    let c = WriteCollector::new(8192, bytes(4096, 1), true, limits(false, 4096, 8192, 1)).unwrap();
    let mut c2 = c;
    let r2t = c2.next_r2ts(&mut ttt_alloc())[0];
    assert!(
        c2.dest_for(&dout(r2t.ttt, 0, 4096, true), 4096).is_none(),
        "below DIRECT_COLLECT_MIN"
    );
    let big = DIRECT_COLLECT_MIN * 2;
    let imm = bytes(big as usize, 5);
    let c = WriteCollector::new(big, imm.clone(), true, limits(false, big, big, 1)).unwrap();
    assert_eq!(
        c.into_data().as_ptr(),
        imm.as_ptr(),
        "all in one PDU: passed through, no copy"
    );
}
