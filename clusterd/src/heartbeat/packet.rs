//! Heartbeat packet codec: fixed envelope + protobuf body + HMAC-SHA1 (layout in
//! `proto/proto/heartbeat.proto`).
//!
//! The envelope is checked field by field before any protobuf is parsed, and the MAC is verified
//! (in constant time) before the body is decoded, so unauthenticated bytes never reach prost.
//! Everything here is pure: no I/O, no clock.

use super::authkeys::AuthKeys;
use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use sha1::Sha1;

pub use proto::heartbeat::Heartbeat;
pub use replicator::wire::version::{NoCommonVersion, VersionRange};

/// Heartbeat body versions this release speaks (fields `version_min`/`version_max`). Version 1 is
/// fields 1..=7 of `Heartbeat` and the optional configuration digest (8); fields 9..=11 carry the
/// versions themselves and are always sent.
pub const VERSIONS: VersionRange = VersionRange::new(1, 1);

/// The versions a received packet announces. A packet without them comes from a release that
/// predates version negotiation: it speaks version 1 only.
pub fn announced_versions(hb: &Heartbeat) -> VersionRange {
    if hb.version_min == 0 && hb.version_max == 0 {
        VersionRange::new(1, 1)
    } else {
        VersionRange::new(hb.version_min, hb.version_max)
    }
}

/// The version to speak to the sender of `hb`: the highest both speak.
pub fn agreed_version(ours: VersionRange, hb: &Heartbeat) -> Result<u32, NoCommonVersion> {
    replicator::wire::version::negotiate("heartbeat", ours, announced_versions(hb))
}

/// What a node says in a heartbeat, whatever the version it is said in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatContent {
    pub cluster: String,
    pub node: String,
    pub generation: u64,
    pub seq: u64,
    pub link: String,
    pub sent_unix_ms: u64,
    pub group_state: Vec<u8>,
    /// This node's software version (clusterd's package version).
    pub software_version: String,
    /// Digest of this node's effective configuration (`None` until the daemon set it).
    pub config_digest: Option<String>,
}

impl HeartbeatContent {
    /// The body for a peer with which `version` is the highest common version (our lowest before
    /// the peer is heard). `ours` is announced, unless `announce` is false: only a test emulating a
    /// release that predates version negotiation sends a bare version-1 body.
    pub fn to_packet(&self, ours: VersionRange, version: u32, announce: bool) -> Heartbeat {
        debug_assert!(ours.contains(version), "heartbeat version {version} outside {ours}");
        let mut hb = Heartbeat {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            generation: self.generation,
            seq: self.seq,
            link: self.link.clone(),
            sent_unix_ms: self.sent_unix_ms,
            group_state: self.group_state.clone(),
            ..Heartbeat::default()
        };
        if announce {
            hb.version_min = ours.min;
            hb.version_max = ours.max;
            hb.software_version = self.software_version.clone();
            // The digest came with the same release as the version fields (an older reader skips
            // it either way; a test emulating the previous release sends neither).
            hb.config_digest = self.config_digest.clone();
        }
        // A field of a later version is set here behind `if version >= N`, so an older peer is
        // never sent what it would not understand. Version 1 has none beyond fields 1..=7.
        hb
    }
}

/// First four bytes of every heartbeat datagram.
pub const MAGIC: [u8; 4] = *b"HAHB";
/// Envelope format version written and accepted by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the body: magic, version, key id, body length.
pub const HEADER_LEN: usize = 8;
/// Length of the HMAC-SHA1 tag that ends the datagram.
pub const MAC_LEN: usize = 20;
/// Largest body that fits the u16 length field.
pub const MAX_BODY_LEN: usize = u16::MAX as usize;

type HmacSha1 = Hmac<Sha1>;

/// Why a received datagram was refused. Callers branch on it to count drops per reason.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("not a heartbeat packet (bad magic)")]
    BadMagic,
    #[error(
        "heartbeat format version {got} is not supported (this node speaks {FORMAT_VERSION}; the peer runs {} software)",
        if *got < FORMAT_VERSION { "older" } else { "newer" }
    )]
    UnsupportedVersion { got: u8 },
    #[error("heartbeat packet is truncated")]
    Truncated,
    #[error("heartbeat packet has {extra} bytes after the MAC")]
    TrailingBytes { extra: usize },
    #[error("heartbeat packet signed with key id {id}, which is not in the authkeys file")]
    UnknownKey { id: u8 },
    #[error("heartbeat packet failed authentication (bad MAC: wrong key or altered packet)")]
    BadMac,
    #[error("authenticated heartbeat body does not decode: {0}")]
    Body(#[from] prost::DecodeError),
}

/// Why a heartbeat could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("heartbeat body is {len} bytes, more than the {MAX_BODY_LEN} the length field can carry")]
    BodyTooLarge { len: usize },
}

/// Encodes `hb` into one datagram authenticated with `key` under `key_id`.
///
/// Fails only when the body exceeds the u16 length field (an oversized `group_state`).
pub fn encode_packet(hb: &Heartbeat, key_id: u8, key: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let body_len = hb.encoded_len();
    let Ok(len16) = u16::try_from(body_len) else {
        return Err(EncodeError::BodyTooLarge { len: body_len });
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body_len + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(key_id);
    out.extend_from_slice(&len16.to_be_bytes());
    hb.encode_raw(&mut out);
    assert_eq!(
        out.len(),
        HEADER_LEN + body_len,
        "prost encoded_len disagrees with encode"
    );
    let tag = new_mac(key).chain_update(&out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks and decodes one datagram. Order: magic, version, lengths, key id, MAC, body.
pub fn decode_packet(datagram: &[u8], keys: &AuthKeys) -> Result<Heartbeat, PacketError> {
    let Some((magic, rest)) = datagram.split_first_chunk::<4>() else {
        return Err(if MAGIC.starts_with(datagram) {
            PacketError::Truncated
        } else {
            PacketError::BadMagic
        });
    };
    if *magic != MAGIC {
        return Err(PacketError::BadMagic);
    }
    let Some(([version, key_id, len_hi, len_lo], _)) = rest.split_first_chunk::<4>().map(|(h, r)| (*h, r)) else {
        return Err(PacketError::Truncated);
    };
    if version != FORMAT_VERSION {
        return Err(PacketError::UnsupportedVersion { got: version });
    }
    let body_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    // HEADER_LEN + u16 + MAC_LEN cannot overflow usize; checked anyway as it comes off the wire.
    let signed_len = HEADER_LEN.checked_add(body_len).ok_or(PacketError::Truncated)?;
    let total = signed_len.checked_add(MAC_LEN).ok_or(PacketError::Truncated)?;
    if datagram.len() < total {
        return Err(PacketError::Truncated);
    }
    if datagram.len() > total {
        return Err(PacketError::TrailingBytes {
            extra: datagram.len() - total,
        });
    }
    let key = keys.key(key_id).ok_or(PacketError::UnknownKey { id: key_id })?;
    let (signed, tag) = datagram.split_at(signed_len);
    new_mac(key)
        .chain_update(signed)
        .verify_slice(tag)
        .map_err(|_| PacketError::BadMac)?;
    let body = signed.get(HEADER_LEN..).ok_or(PacketError::Truncated)?;
    Ok(Heartbeat::decode(body)?)
}

fn new_mac(key: &[u8]) -> HmacSha1 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let Ok(mac) = <HmacSha1 as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> AuthKeys {
        AuthKeys::from_keys(1, [(1, b"first secret".to_vec()), (2, b"second secret".to_vec())]).unwrap()
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            cluster: "ha-prod".into(),
            node: "node-a".into(),
            generation: 7,
            seq: 42,
            link: "ring0".into(),
            sent_unix_ms: 1_700_000_000_123,
            group_state: vec![1, 2, 3, 0xff],
            config_digest: Some("0123456789abcdef".into()),
            version_min: 1,
            version_max: 1,
            software_version: "0.1.0".into(),
        }
    }

    /// A heartbeat of a release without `config_digest` (field 8 absent) decodes as "unknown", and a
    /// current one carries its digest through the codec.
    #[test]
    fn config_digest_is_optional_on_the_wire() {
        let keys = keys();
        let key = keys.key(1).unwrap();
        let decoded = decode_packet(&encode_packet(&sample(), 1, key).unwrap(), &keys).unwrap();
        assert_eq!(decoded.config_digest.as_deref(), Some("0123456789abcdef"));
        let old = Heartbeat { config_digest: None, ..sample() };
        let bytes = encode_packet(&old, 1, key).unwrap();
        assert!(!bytes.windows(16).any(|w| w == b"0123456789abcdef"));
        assert_eq!(decode_packet(&bytes, &keys).unwrap().config_digest, None);
    }

    #[test]
    fn round_trips_with_each_listed_key() {
        let keys = keys();
        for id in [1u8, 2] {
            let wire = encode_packet(&sample(), id, keys.key(id).unwrap()).unwrap();
            assert_eq!(&wire[..4], b"HAHB");
            assert_eq!(wire[4], FORMAT_VERSION);
            assert_eq!(wire[5], id);
            assert_eq!(decode_packet(&wire, &keys).unwrap(), sample());
        }
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = new_mac(b"Jefe")
            .chain_update(b"what do ya want for nothing?")
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn envelope_errors_are_distinct() {
        let keys = keys();
        let good = encode_packet(&sample(), 1, b"first secret").unwrap();

        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode_packet(&bad, &keys), Err(PacketError::BadMagic)));
        assert!(matches!(decode_packet(b"HA", &keys), Err(PacketError::Truncated)));
        assert!(matches!(decode_packet(b"", &keys), Err(PacketError::Truncated)));
        assert!(matches!(
            decode_packet(b"GET / HTTP/1.1", &keys),
            Err(PacketError::BadMagic)
        ));

        for (version, word) in [(0u8, "older"), (2, "newer")] {
            let mut v = good.clone();
            v[4] = version;
            let err = decode_packet(&v, &keys).unwrap_err();
            assert!(matches!(err, PacketError::UnsupportedVersion { got } if got == version));
            assert!(err.to_string().contains(word), "{err}");
        }

        assert!(matches!(
            decode_packet(&good[..good.len() - 1], &keys),
            Err(PacketError::Truncated)
        ));
        assert!(matches!(decode_packet(&good[..7], &keys), Err(PacketError::Truncated)));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_packet(&long, &keys),
            Err(PacketError::TrailingBytes { extra: 1 })
        ));

        let unknown = encode_packet(&sample(), 9, b"first secret").unwrap();
        assert!(matches!(
            decode_packet(&unknown, &keys),
            Err(PacketError::UnknownKey { id: 9 })
        ));

        let wrong_key = encode_packet(&sample(), 1, b"second secret").unwrap();
        assert!(matches!(decode_packet(&wrong_key, &keys), Err(PacketError::BadMac)));
    }

    #[test]
    fn authenticated_garbage_body_is_a_body_error() {
        // A correctly signed envelope around bytes that are not a protobuf message.
        let body = [0xffu8; 3];
        let mut wire = MAGIC.to_vec();
        wire.extend_from_slice(&[FORMAT_VERSION, 1, 0, 3]);
        wire.extend_from_slice(&body);
        let tag = new_mac(b"first secret").chain_update(&wire).finalize().into_bytes();
        wire.extend_from_slice(&tag);
        assert!(matches!(decode_packet(&wire, &keys()), Err(PacketError::Body(_))));
    }

    #[test]
    fn oversized_body_is_refused_at_encode() {
        let mut hb = sample();
        hb.group_state = vec![0; MAX_BODY_LEN];
        assert!(matches!(
            encode_packet(&hb, 1, b"k"),
            Err(EncodeError::BodyTooLarge { .. })
        ));
        // The largest body that fits still round-trips.
        let overhead = sample().encoded_len() - sample().group_state.len();
        hb.group_state = vec![0; MAX_BODY_LEN - overhead - 2];
        let wire = encode_packet(&hb, 1, b"first secret").unwrap();
        assert_eq!(decode_packet(&wire, &keys()).unwrap(), hb);
    }

    fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
        (
            ".{0,20}",
            ".{0,20}",
            any::<u64>(),
            any::<u64>(),
            "[a-z0-9]{0,8}",
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..200),
            (any::<u32>(), any::<u32>(), "[0-9.]{0,8}"),
        )
            .prop_map(
                |(cluster, node, generation, seq, link, sent_unix_ms, group_state, versions)| Heartbeat {
                    cluster,
                    node,
                    generation,
                    seq,
                    link,
                    sent_unix_ms,
                    group_state,
                    config_digest: None,
                    version_min: versions.0,
                    version_max: versions.1,
                    software_version: versions.2,
                },
            )
    }

    proptest! {
        #[test]
        fn valid_packets_round_trip(hb in arb_heartbeat(), id in 1u8..=2) {
            let keys = keys();
            let wire = encode_packet(&hb, id, keys.key(id).unwrap()).unwrap();
            prop_assert_eq!(decode_packet(&wire, &keys).unwrap(), hb);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_packet(&bytes, &keys());
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            id in any::<u8>(), len in any::<u16>(), tail in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(FORMAT_VERSION);
            bytes.push(id);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&tail);
            // Random bytes in the MAC position match with probability 2^-160.
            prop_assert!(decode_packet(&bytes, &keys()).is_err());
        }

        #[test]
        fn any_single_bit_flip_is_rejected(hb in arb_heartbeat(), id in 1u8..=2, bit in any::<prop::sample::Index>()) {
            let keys = keys();
            let mut wire = encode_packet(&hb, id, keys.key(id).unwrap()).unwrap();
            let bit = bit.index(wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_packet(&wire, &keys).is_err(), "flip of bit {} accepted", bit);
        }
    }
}
