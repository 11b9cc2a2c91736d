//! Property tests of the replication wire codec: round trips, arbitrary and corrupted input never
//! panics, and incremental stream decoding is independent of how the bytes are split.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use replicator::wire::codec::FrameCodec;
use replicator::wire::frame::{
    CHALLENGE_LEN, Frame, HEADER_LEN, MAC_LEN, MAGIC, MAX_CSUM_DIGESTS, MAX_DIGEST, Params, SECTOR, UuidsMsg, decode, encode, parse,
};
use tokio_util::codec::Decoder;

/// Strings of at most 40 characters: at most 160 bytes, inside the 255-byte limit, so they round-trip exactly.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn bytes_of(len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), len).prop_map(Bytes::from)
}

fn sectors() -> impl Strategy<Value = Bytes> {
    (1usize..=8).prop_flat_map(|n| bytes_of(n * SECTOR))
}

fn handshake_frame() -> BoxedStrategy<Frame> {
    let params = (text(), any::<u64>(), any::<[u8; 5]>(), any::<bool>(), text()).prop_map(
        |(resource, data_size, b, discard_my_data, verify_alg)| {
            Frame::Params(Params {
                resource,
                data_size,
                protocol: b[0],
                after_sb_0pri: b[1],
                after_sb_1pri: b[2],
                after_sb_2pri: b[3],
                rr_conflict: b[4],
                discard_my_data,
                verify_alg,
            })
        },
    );
    let uuids = (any::<[u64; 6]>(), any::<u8>(), any::<u8>()).prop_map(|(v, role, disk)| {
        Frame::Uuids(UuidsMsg {
            current: v[0],
            bitmap: v[1],
            history: [v[2], v[3]],
            dirty_bits: v[4],
            flags: v[5],
            role,
            disk,
        })
    });
    prop_oneof![
        (any::<u32>(), any::<u32>(), text()).prop_map(|(proto_min, proto_max, node)| Frame::Hello {
            proto_min,
            proto_max,
            node
        }),
        bytes_of(CHALLENGE_LEN).prop_map(|challenge| Frame::AuthChallenge { challenge }),
        bytes_of(MAC_LEN).prop_map(|mac| Frame::AuthResponse { mac }),
        params,
        uuids,
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(role, disk, flags)| Frame::State { role, disk, flags }),
        (any::<u64>(), vec(any::<u64>(), 0..64), any::<bool>())
            .prop_map(|(start_word, words, last)| Frame::BitmapChunk { start_word, words, last }),
        any::<u64>().prop_map(|uuid| Frame::SyncUuid { uuid }),
        Just(Frame::ResyncFinished),
    ]
    .boxed()
}

fn write_path_frame() -> BoxedStrategy<Frame> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u32>(), sectors())
            .prop_map(|(seq, offset, flags, data)| Frame::Data { seq, offset, flags, data }),
        any::<u64>().prop_map(|seq| Frame::WriteAck { seq }),
        (any::<u64>(), any::<u32>()).prop_map(|(seq, code)| Frame::NegAck { seq, code }),
        any::<u64>().prop_map(|seq| Frame::Flush { seq }),
        (any::<u64>(), any::<bool>()).prop_map(|(seq, ok)| Frame::FlushAck { seq, ok }),
        (any::<u64>(), sectors()).prop_map(|(offset, data)| Frame::RsData { offset, data }),
        (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(offset, len, ok)| Frame::RsAck { offset, len, ok }),
        (any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(seq, offset, len)| Frame::ReadRequest { seq, offset, len }),
        (any::<u64>(), bytes_of(0..2048)).prop_map(|(seq, data)| Frame::ReadReply { seq, ok: true, data }),
        any::<u64>().prop_map(|seq| Frame::ReadReply { seq, ok: false, data: Bytes::new() }),
    ]
    .boxed()
}

fn control_frame() -> BoxedStrategy<Frame> {
    prop_oneof![
        (any::<u64>(), any::<u32>()).prop_map(|(offset, len)| Frame::VerifyRequest { offset, len }),
        (any::<u64>(), any::<u32>(), bytes_of(0..=MAX_DIGEST))
            .prop_map(|(offset, len, digest)| Frame::VerifyReply { offset, len, digest }),
        (any::<u64>(), any::<u32>()).prop_map(|(offset, len)| Frame::OutOfSync { offset, len }),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::PingAck { nonce }),
        Just(Frame::Outdate),
        any::<bool>().prop_map(|ok| Frame::OutdateAck { ok }),
        (any::<u32>(), text()).prop_map(|(code, reason)| Frame::Abort { code, reason }),
        (any::<u64>(), bytes_of(0..=4096)).prop_map(|(seq, blob)| Frame::PrState { seq, blob }),
        (any::<u64>(), any::<bool>()).prop_map(|(seq, ok)| Frame::PrAck { seq, ok }),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(size, explicit, assume_clean)| Frame::ResizeRequest { size, explicit, assume_clean }),
        (any::<bool>(), any::<u64>(), any::<u64>(), "[a-z ]{0,40}").prop_map(|(ok, size, capacity, reason)| Frame::ResizeReply { ok, size, capacity, reason }),
        (any::<u64>(), any::<u32>(), any::<u8>()).prop_map(|(offset, len, alg)| Frame::CsumRequest { offset, len, alg }),
        (any::<u64>(), any::<u32>(), bytes_of(0..=MAX_CSUM_DIGESTS))
            .prop_map(|(offset, len, digests)| Frame::CsumReply { offset, len, digests }),
        (any::<u64>(), any::<u32>()).prop_map(|(offset, len)| Frame::RsInSync { offset, len }),
    ]
    .boxed()
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![handshake_frame(), write_path_frame(), control_frame()]
}

fn encoded(f: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    encode(f, &mut b);
    b
}

/// Parses `buf` the way the fuzz target does; whatever parses must re-encode to exactly the bytes it came from.
fn check_parse_of(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((f, used))) = parse(buf) {
        prop_assert!(used >= HEADER_LEN && used <= buf.len());
        prop_assert_eq!(&encoded(&f)[..], &buf[..used], "encoding is canonical");
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_valid_frame_round_trips(f in frame()) {
        let b = encoded(&f);
        let (g, used) = parse(&b)?.expect("a whole frame");
        prop_assert_eq!(&g, &f);
        prop_assert_eq!(used, b.len());
        let mut stream = b.clone();
        prop_assert_eq!(decode(&mut stream)?, Some(f));
        prop_assert!(stream.is_empty());
        prop_assert!(parse(&b[..b.len() - 1])?.is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..256)) {
        check_parse_of(&buf)?;
        let mut stream = BytesMut::from(&buf[..]);
        let before = stream.len();
        if let Ok(Some(_)) = decode(&mut stream) {
            prop_assert!(stream.len() < before);
        }
    }

    /// Random payloads behind a well-formed header reach every kind's payload parser.
    #[test]
    fn arbitrary_payloads_never_panic(code in 0u16..40, payload in vec(any::<u8>(), 0..1100), extra in 0usize..8) {
        let mut buf = BytesMut::new();
        buf.put_u32_le(MAGIC);
        buf.put_u16_le(code);
        buf.put_u16_le(0);
        buf.put_u32_le(payload.len() as u32);
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(&vec![0xAA; extra]);
        check_parse_of(&buf)?;
        let mut stream = buf.clone();
        if let Ok(Some(f)) = decode(&mut stream) {
            prop_assert_eq!(stream.len(), extra);
            prop_assert_eq!(parse(&buf)?.map(|(g, _)| g), Some(f));
        }
    }

    #[test]
    fn corrupted_header_is_an_error_or_another_frame(f in frame(), at in 0..HEADER_LEN, xor in 1u8..=255) {
        let mut b = encoded(&f);
        b[at] ^= xor;
        match parse(&b) {
            Err(_) | Ok(None) => {}
            Ok(Some((g, used))) => {
                prop_assert_ne!(g, f);
                prop_assert!(used <= b.len());
            }
        }
        check_parse_of(&b)?;
    }

    #[test]
    fn split_stream_decodes_to_the_same_frames(
        frames in vec(frame(), 1..12),
        cuts in vec(1usize..700, 1..40),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            encode(f, &mut wire);
        }
        let wire = wire.freeze();
        let mut codec = FrameCodec;
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut next_cut = cuts.iter().cycle();
        while pos < wire.len() {
            let step = (*next_cut.next().expect("cycle of a non-empty list")).min(wire.len() - pos);
            src.extend_from_slice(&wire[pos..pos + step]);
            pos += step;
            while let Some(f) = codec.decode(&mut src)? {
                got.push(f);
            }
        }
        prop_assert!(src.is_empty());
        prop_assert_eq!(got, frames);
    }
}
