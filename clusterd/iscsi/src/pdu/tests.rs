use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const ALL_OPCODES: [u8; 18] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31,
    0x32, 0x3f,
];

fn sample_login() -> Pdu {
    Pdu::LoginRequest(LoginRequest {
        transit: true,
        continue_bit: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 1, 2, 3, 4, 5],
        tsih: 0,
        itt: 0x1234,
        cid: 7,
        cmd_sn: 10,
        exp_stat_sn: 99,
    })
}

#[test]
fn login_request_bhs_layout() {
    let bhs = sample_login().to_bhs(0, 5);
    assert_eq!(bhs[0], 0x43, "immediate bit always set on login");
    assert_eq!(bhs[1], 0x80 | (1 << 2) | 3);
    assert_eq!(&bhs[5..8], &[0, 0, 5]);
    assert_eq!(&bhs[8..14], &[0x80, 1, 2, 3, 4, 5]);
    assert_eq!(&bhs[16..20], &0x1234u32.to_be_bytes());
    assert_eq!(&bhs[20..22], &7u16.to_be_bytes());
    assert_eq!(parse_bhs(&bhs).unwrap(), sample_login());
    assert_eq!(
        bhs_lengths(&bhs),
        BhsLengths {
            ahs_len: 0,
            data_len: 5
        }
    );
}

#[test]
fn scsi_command_bhs_layout() {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x28;
    let cmd = Pdu::ScsiCommand(ScsiCommandPdu {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        task_attr: 1,
        lun: 0x0001_0000_0000_0000,
        itt: 5,
        expected_data_len: 4096,
        cmd_sn: 3,
        exp_stat_sn: 4,
        cdb,
    });
    let bhs = cmd.to_bhs(0, 0);
    assert_eq!(bhs[0], 0x01);
    assert_eq!(bhs[1], 0x80 | 0x40 | 1);
    assert_eq!(bhs[32], 0x28);
    assert_eq!(&bhs[20..24], &4096u32.to_be_bytes());
    assert_eq!(parse_bhs(&bhs).unwrap(), cmd);
}

#[test]
fn unknown_opcode_is_an_error() {
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1e;
    assert_eq!(parse_bhs(&bhs), Err(PduError::UnknownOpcode(0x1e)));
}

#[test]
fn frame_waits_for_more_bytes_and_is_zero_copy() {
    let out = encode(
        &sample_login(),
        Bytes::from_static(b"abcde"),
        DigestConfig::default(),
    )
    .unwrap();
    let wire = out.to_vec();
    assert_eq!(wire.len(), 48 + 8, "5 bytes of data are padded to 8");
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let r = decode_frame(&mut buf, DigestConfig::default(), 8192).unwrap();
        if i + 1 < wire.len() {
            assert!(r.is_none());
        } else {
            let f = r.unwrap();
            assert_eq!(f.pdu, sample_login());
            assert_eq!(&f.data[..], b"abcde");
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn two_pdus_in_one_buffer() {
    let d = DigestConfig {
        header: true,
        data: true,
    };
    let mut buf = BytesMut::new();
    buf.extend_from_slice(
        &encode(&sample_login(), Bytes::from_static(b"xyz"), d)
            .unwrap()
            .to_vec(),
    );
    buf.extend_from_slice(&encode(&sample_login(), Bytes::new(), d).unwrap().to_vec());
    let a = decode_frame(&mut buf, d, 8192).unwrap().unwrap();
    assert_eq!(&a.data[..], b"xyz");
    let b = decode_frame(&mut buf, d, 8192).unwrap().unwrap();
    assert!(b.data.is_empty());
    assert!(decode_frame(&mut buf, d, 8192).unwrap().is_none());
}

#[test]
fn data_segment_limit_checked_before_buffering() {
    let mut bhs = sample_login().to_bhs(0, 9000);
    bhs[5..8].copy_from_slice(&[0, 0x23, 0x28]);
    let mut buf = BytesMut::from(&bhs[..]);
    assert_eq!(
        decode_frame(&mut buf, DigestConfig::default(), 8192),
        Err(PduError::DataSegmentTooLong {
            len: 9000,
            limit: 8192
        })
    );
}

#[test]
fn digest_errors_detected() {
    let d = DigestConfig {
        header: true,
        data: true,
    };
    let wire = encode(&sample_login(), Bytes::from_static(b"hello"), d)
        .unwrap()
        .to_vec();
    let mut bad_header = wire.clone();
    bad_header[20] ^= 1;
    assert!(matches!(
        decode_frame(&mut BytesMut::from(&bad_header[..]), d, 8192),
        Err(PduError::HeaderDigest { .. })
    ));
    let mut bad_data = wire.clone();
    bad_data[53] ^= 1;
    assert!(matches!(
        decode_frame(&mut BytesMut::from(&bad_data[..]), d, 8192),
        Err(PduError::DataDigest { .. })
    ));
}

#[test]
fn crc32c_known_vector() {
    // RFC 3720 Appendix B.4: 32 bytes of zeros give CRC32C 0x8a9136aa (as a value).
    assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
}

fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

proptest! {
    /// Any decodable BHS re-encodes to a BHS that decodes to the same typed PDU, and a framed PDU with
    /// data survives encode → decode with any digest setting.
    #[test]
    fn valid_pdus_round_trip(
        op in prop::sample::select(ALL_OPCODES.to_vec()),
        raw in prop::collection::vec(any::<u8>(), BHS_LEN),
        data in data_strategy(),
        hd in any::<bool>(),
        dd in any::<bool>(),
    ) {
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(&raw);
        bhs[0] = (bhs[0] & 0x40) | op;
        let pdu = parse_bhs(&bhs).unwrap();
        let again = parse_bhs(&pdu.to_bhs(0, 0)).unwrap();
        prop_assert_eq!(&again, &pdu);
        let digests = DigestConfig { header: hd, data: dd };
        let out = encode(&pdu, Bytes::from(data.clone()), digests).unwrap();
        prop_assert_eq!(out.wire_len() % 4, 0);
        let mut buf = BytesMut::from(&out.to_vec()[..]);
        let frame = decode_frame(&mut buf, digests, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(frame.pdu, pdu);
        prop_assert_eq!(&frame.data[..], &data[..]);
        prop_assert!(buf.is_empty());
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300), hd in any::<bool>(), dd in any::<bool>()) {
        let mut buf = BytesMut::from(&raw[..]);
        let digests = DigestConfig { header: hd, data: dd };
        for _ in 0..8 {
            match decode_frame(&mut buf, digests, 256) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}
