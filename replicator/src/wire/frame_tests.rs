//! Unit tests of `frame.rs` (kept apart to keep that file readable); they use its private helpers.

use super::*;

fn samples() -> Vec<Frame> {
    let d = Bytes::from(vec![7u8; 1024]);
    vec![
        Frame::Hello { proto_min: 1, proto_max: 1, node: "node1".into() },
        Frame::AuthChallenge { challenge: Bytes::from(vec![1u8; 64]) },
        Frame::AuthResponse { mac: Bytes::from(vec![2u8; 20]) },
        Frame::Params(Params {
            resource: "r0".into(),
            data_size: 1 << 30,
            protocol: b'C',
            after_sb_0pri: 1,
            after_sb_1pri: 2,
            after_sb_2pri: 0,
            rr_conflict: 1,
            discard_my_data: true,
            verify_alg: "sha1".into(),
        }),
        Frame::Uuids(UuidsMsg { current: 5, bitmap: 6, history: [7, 8], dirty_bits: 9, flags: 3, role: 1, disk: 7 }),
        Frame::State { role: 1, disk: 7, flags: 4 },
        Frame::BitmapChunk { start_word: 10, words: vec![1, u64::MAX, 0], last: true },
        Frame::BitmapChunk { start_word: 0, words: vec![], last: false },
        Frame::SyncUuid { uuid: 77 },
        Frame::ResyncFinished,
        Frame::Data { seq: 1, offset: 4096, flags: DATA_FUA, data: d.clone() },
        Frame::WriteAck { seq: 1 },
        Frame::NegAck { seq: 2, code: 5 },
        Frame::Flush { seq: 3 },
        Frame::FlushAck { seq: 3, ok: true },
        Frame::RsData { offset: 8192, data: d.clone() },
        Frame::RsAck { offset: 8192, len: 1024, ok: false },
        Frame::ReadRequest { seq: 4, offset: 0, len: 512 },
        Frame::ReadReply { seq: 4, ok: true, data: d },
        Frame::ReadReply { seq: 5, ok: false, data: Bytes::new() },
        Frame::VerifyRequest { offset: 0, len: 4096 },
        Frame::VerifyReply { offset: 0, len: 4096, digest: Bytes::from(vec![3u8; 20]) },
        Frame::OutOfSync { offset: 0, len: 4096 },
        Frame::Ping { nonce: 9 },
        Frame::PingAck { nonce: 9 },
        Frame::Outdate,
        Frame::OutdateAck { ok: true },
        Frame::Abort { code: 1, reason: "split brain".into() },
        Frame::PrState { seq: 11, blob: Bytes::from(vec![0x5cu8; 300]) },
        Frame::PrAck { seq: 11, ok: true },
        Frame::ResizeRequest { size: 80 << 20, explicit: false, assume_clean: true },
        Frame::ResizeReply { ok: false, size: 64 << 20, capacity: 64 << 20, reason: "backing device did not grow".into() },
        Frame::CsumRequest { offset: 1 << 20, len: 1 << 20, alg: 3 },
        Frame::CsumReply { offset: 1 << 20, len: 8192, digests: Bytes::from(vec![9u8; 40]) },
        Frame::RsInSync { offset: 1 << 20, len: 4096 },
    ]
}

fn encoded(f: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    encode(f, &mut b);
    b
}

#[test]
fn pr_state_over_its_cap_is_refused_both_ways() {
    let big = Frame::PrState { seq: 1, blob: Bytes::from(vec![0u8; MAX_PR_STATE + 1]) };
    assert!(try_encode(&big, &mut BytesMut::new()).is_err());
    let mut raw = BytesMut::new();
    put_header(kind::PR_STATE, 8 + MAX_PR_STATE + 1, &mut raw);
    raw.put_u64_le(1);
    raw.put_slice(&vec![0u8; MAX_PR_STATE + 1]);
    assert!(matches!(parse(&raw), Err(WireError::BadLength { .. })));
    let empty = Frame::PrState { seq: 2, blob: Bytes::new() };
    assert_eq!(parse(&encoded(&empty)).unwrap().unwrap().0, empty);
}

#[test]
fn every_kind_round_trips() {
    let frames = samples();
    let mut codes: Vec<u16> = frames.iter().map(Frame::kind_code).collect();
    codes.dedup();
    assert_eq!(codes, (1..=kind::MAX).collect::<Vec<_>>(), "samples cover every kind once, in order");
    for f in frames {
        let b = encoded(&f);
        let (g, n) = parse(&b).unwrap().unwrap();
        assert_eq!((g, n), (f.clone(), b.len()));
        let mut s = b.clone();
        assert_eq!(decode(&mut s).unwrap().unwrap(), f);
        assert!(s.is_empty());
        for cut in 0..b.len().min(40) {
            assert!(parse(&b[..cut]).unwrap().is_none(), "{} prefix {cut}", f.kind_name());
        }
        assert!(parse(&b[..b.len() - 1]).unwrap().is_none());
    }
}

#[test]
fn kind_names_match_codes() {
    assert_eq!(kind_name(0), "unknown");
    assert_eq!(kind_name(kind::MAX + 1), "unknown");
    for f in samples() {
        let debug = format!("{f:?}");
        assert!(debug.starts_with(f.kind_name()), "{debug} vs {}", f.kind_name());
    }
}

#[test]
fn decode_is_zero_copy_and_leaves_the_next_frame() {
    let data = Bytes::from(vec![5u8; 4096]);
    let mut b = encoded(&Frame::Data { seq: 1, offset: 0, flags: 0, data: data.clone() });
    encode(&Frame::Ping { nonce: 3 }, &mut b);
    let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
    let Some(Frame::Data { data: got, .. }) = decode(&mut b).unwrap() else { panic!("not a Data frame") };
    assert_eq!(got, data);
    assert!(range.contains(&(got.as_ptr() as usize)), "data must point into the receive buffer");
    assert_eq!(decode(&mut b).unwrap(), Some(Frame::Ping { nonce: 3 }));
    assert!(b.is_empty());
    assert!(decode(&mut b).unwrap().is_none());
}

#[test]
fn data_header_matches_encode() {
    let d = Bytes::from(vec![9u8; 1536]);
    let a = encoded(&Frame::Data { seq: 3, offset: 512, flags: DATA_FUA, data: d.clone() });
    let mut b = BytesMut::new();
    encode_data_header(3, 512, DATA_FUA, d.len(), &mut b);
    assert_eq!(b.len(), HEADER_LEN + DATA_FIXED_LEN);
    b.extend_from_slice(&d);
    assert_eq!(a, b);
}

#[test]
#[should_panic(expected = "whole sectors")]
fn data_header_refuses_unaligned_length() {
    encode_data_header(1, 0, 0, 100, &mut BytesMut::new());
}

#[test]
fn largest_data_frame_fits_and_one_sector_more_does_not() {
    let max = (MAX_PAYLOAD - DATA_FIXED_LEN) / SECTOR * SECTOR;
    let ok = Frame::RsData { offset: 0, data: Bytes::from(vec![0u8; max]) };
    let b = encoded(&ok);
    assert_eq!(parse(&b).unwrap().unwrap().0, ok);
    let big = Frame::Data { seq: 0, offset: 0, flags: 0, data: Bytes::from(vec![0u8; max + SECTOR]) };
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(matches!(try_encode(&big, &mut out), Err(WireError::Oversize { .. })));
    assert_eq!(&out[..], b"keep", "a refused frame leaves the buffer as it was");
}

#[test]
fn encoder_refuses_what_the_decoder_would() {
    let bad = [
        Frame::AuthChallenge { challenge: Bytes::from(vec![0u8; 63]) },
        Frame::AuthResponse { mac: Bytes::from(vec![0u8; 32]) },
        Frame::Data { seq: 0, offset: 0, flags: 0, data: Bytes::new() },
        Frame::RsData { offset: 0, data: Bytes::from(vec![0u8; 513]) },
        Frame::ReadReply { seq: 0, ok: false, data: Bytes::from(vec![0u8; 512]) },
        Frame::VerifyReply { offset: 0, len: 0, digest: Bytes::from(vec![0u8; 65]) },
    ];
    for f in bad {
        let mut out = BytesMut::new();
        assert!(matches!(try_encode(&f, &mut out), Err(WireError::BadLength { .. })), "{f:?}");
        assert!(out.is_empty());
    }
}

#[test]
fn long_strings_are_cut_at_a_char_boundary() {
    // 200 two-byte characters: 400 bytes, cut to 254 (127 characters) rather than 255 mid-character.
    let reason = "é".repeat(200);
    let (f, _) = parse(&encoded(&Frame::Abort { code: 2, reason })).unwrap().unwrap();
    assert_eq!(f, Frame::Abort { code: 2, reason: "é".repeat(127) });
    let exact = "x".repeat(MAX_STR);
    let f = Frame::Hello { proto_min: 1, proto_max: 1, node: exact };
    assert_eq!(parse(&encoded(&f)).unwrap().unwrap().0, f);
}

/// A frame with `code` and a hand-made payload.
fn raw(code: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_header(code, payload.len(), &mut b);
    b.extend_from_slice(payload);
    b.to_vec()
}

#[test]
fn header_errors() {
    let b = encoded(&Frame::Ping { nonce: 1 });
    let mut bad = b.clone();
    bad[0] ^= 1;
    assert!(matches!(parse(&bad), Err(WireError::BadMagic(_))));
    let mut bad = b.clone();
    bad[4] = 99;
    assert!(matches!(parse(&bad), Err(WireError::UnknownKind(99))));
    bad[4] = 0;
    assert!(matches!(parse(&bad), Err(WireError::UnknownKind(0))));
    let mut bad = b.clone();
    bad[7] = 1;
    assert!(matches!(parse(&bad), Err(WireError::NonZeroReserved(256))));
    let mut bad = b.clone();
    bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    // Rejected from the header alone, without waiting for 4 GiB.
    assert!(matches!(parse(&bad[..HEADER_LEN]), Err(WireError::Oversize { len }) if len == u32::MAX as usize));
    let mut s = BytesMut::from(&bad[..]);
    assert!(matches!(decode(&mut s), Err(WireError::Oversize { .. })));
}

#[test]
fn payload_errors() {
    assert!(matches!(
        parse(&raw(kind::PING, &[0; 4])),
        Err(WireError::Truncated { kind: "Ping", need: 8, have: 4 })
    ));
    assert!(matches!(
        parse(&raw(kind::NEG_ACK, &[0; 10])),
        Err(WireError::Truncated { kind: "NegAck", need: 12, have: 10 })
    ));
    assert!(matches!(
        parse(&raw(kind::PING, &[0; 9])),
        Err(WireError::TrailingBytes { kind: "Ping", extra: 1 })
    ));
    assert!(matches!(parse(&raw(kind::OUTDATE, &[0])), Err(WireError::TrailingBytes { .. })));
    assert!(matches!(parse(&raw(kind::OUTDATE_ACK, &[2])), Err(WireError::BadLength { .. })));
    // String: invalid UTF-8, a length above 255, a length past the payload.
    assert!(matches!(parse(&raw(kind::ABORT, &[0, 0, 0, 0, 1, 0, 0xff])), Err(WireError::BadString { .. })));
    assert!(matches!(parse(&raw(kind::ABORT, &[0, 0, 0, 0, 0, 1])), Err(WireError::BadString { .. })));
    assert!(matches!(parse(&raw(kind::ABORT, &[0, 0, 0, 0, 5, 0, b'a'])), Err(WireError::Truncated { .. })));
    assert!(matches!(parse(&raw(kind::AUTH_CHALLENGE, &[0; 65])), Err(WireError::BadLength { .. })));
    assert!(matches!(parse(&raw(kind::AUTH_RESPONSE, &[0; 19])), Err(WireError::BadLength { .. })));
    // Bitmap words must be whole u64s.
    let mut chunk = vec![0u8; 9];
    chunk.extend_from_slice(&[0; 12]);
    assert!(matches!(parse(&raw(kind::BITMAP_CHUNK, &chunk)), Err(WireError::BadLength { .. })));
    // Data: unaligned, empty.
    let mut data = vec![0u8; DATA_FIXED_LEN];
    assert!(matches!(parse(&raw(kind::DATA, &data)), Err(WireError::BadLength { .. })));
    data.extend_from_slice(&[0; 100]);
    assert!(matches!(parse(&raw(kind::DATA, &data)), Err(WireError::BadLength { .. })));
    // A failed read reply with data.
    let mut reply = vec![0u8; 9];
    reply.extend_from_slice(&[0; 512]);
    assert!(matches!(parse(&raw(kind::READ_REPLY, &reply)), Err(WireError::BadLength { .. })));
}

#[test]
fn split_encoding_equals_plain_encoding() {
    let d = Bytes::from(vec![5u8; 8192]);
    for f in [
        Frame::Data { seq: 9, offset: 4096, flags: DATA_FUA, data: d.clone() },
        Frame::RsData { offset: 8192, data: d.clone() },
        Frame::Ping { nonce: 3 },
    ] {
        let mut whole = BytesMut::new();
        encode(&f, &mut whole);
        let mut head = BytesMut::new();
        let tail = encode_split(&f, &mut head);
        if let Some(t) = tail {
            head.extend_from_slice(&t);
        }
        assert_eq!(head, whole);
    }
}

#[test]
fn csum_digest_list_over_its_cap_is_refused_both_ways() {
    let full = Frame::CsumReply { offset: 0, len: 1 << 20, digests: Bytes::from(vec![1u8; MAX_CSUM_DIGESTS]) };
    assert_eq!(parse(&encoded(&full)).unwrap().unwrap().0, full);
    let big = Frame::CsumReply { offset: 0, len: 1 << 20, digests: Bytes::from(vec![1u8; MAX_CSUM_DIGESTS + 1]) };
    assert!(try_encode(&big, &mut BytesMut::new()).is_err());
    let mut raw = BytesMut::new();
    put_header(kind::CSUM_REPLY, 12 + MAX_CSUM_DIGESTS + 1, &mut raw);
    raw.put_u64_le(0);
    raw.put_u32_le(1 << 20);
    raw.put_slice(&vec![0u8; MAX_CSUM_DIGESTS + 1]);
    assert!(matches!(parse(&raw), Err(WireError::BadLength { .. })));
    // "Could not digest": an empty list is valid.
    let empty = Frame::CsumReply { offset: 0, len: 4096, digests: Bytes::new() };
    assert_eq!(parse(&encoded(&empty)).unwrap().unwrap().0, empty);
}
