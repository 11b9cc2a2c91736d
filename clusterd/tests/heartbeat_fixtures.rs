//! Recorded heartbeat datagrams (`tests/fixtures/heartbeat-v1/`, README there): the packet the
//! previous release sends (no version fields) and the one this release sends (version fields
//! announced). Both decode to the expected bodies, both are what this build encodes for the same
//! content (HMAC-SHA1 with a fixed key is deterministic), and the previous release's packet is read
//! as heartbeat version 1.
//!
//! `REGENERATE_FIXTURES=1 cargo test -p clusterd --test heartbeat_fixtures` rewrites the files; do
//! that only for a new version, never to paper over a changed encoding.

use clusterd::heartbeat::packet::{
    HeartbeatContent, VERSIONS, VersionRange, agreed_version, announced_versions, decode_packet, encode_packet,
};
use clusterd::heartbeat::{AuthKeys, Heartbeat};
use std::path::PathBuf;

const KEY: &[u8] = b"fixture heartbeat key";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/heartbeat-v1")
}

fn keys() -> AuthKeys {
    AuthKeys::from_keys(1, [(1, KEY.to_vec())]).unwrap()
}

fn content() -> HeartbeatContent {
    HeartbeatContent {
        cluster: "node1+node2".into(),
        node: "node2".into(),
        generation: 7,
        seq: 1234,
        link: "ring0".into(),
        sent_unix_ms: 1_765_000_000_000,
        group_state: vec![0x0a, 0x05, b'n', b'o', b'd', b'e', b'2', 0x10, 0x03],
        software_version: "0.1.0".into(),
        config_digest: None,
    }
}

/// The body of the previous release: fields 1..=7 only.
fn legacy_body() -> Heartbeat {
    let c = content();
    Heartbeat {
        cluster: c.cluster,
        node: c.node,
        generation: c.generation,
        seq: c.seq,
        link: c.link,
        sent_unix_ms: c.sent_unix_ms,
        group_state: c.group_state,
        ..Heartbeat::default()
    }
}

fn current_body() -> Heartbeat {
    Heartbeat { version_min: 1, version_max: 1, software_version: "0.1.0".into(), ..legacy_body() }
}

fn fixtures() -> [(&'static str, Heartbeat); 2] {
    [("previous-release.bin", legacy_body()), ("announces-1-1.bin", current_body())]
}

fn fixture(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (regenerate with REGENERATE_FIXTURES=1)", path.display()))
}

#[test]
fn fixtures_decode_and_encode_exactly() {
    if std::env::var_os("REGENERATE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, hb) in fixtures() {
            std::fs::write(dir().join(name), encode_packet(&hb, 1, KEY).unwrap()).unwrap();
        }
    }
    for (name, hb) in fixtures() {
        assert_eq!(decode_packet(&fixture(name), &keys()).unwrap(), hb, "{name}");
        assert_eq!(encode_packet(&hb, 1, KEY).unwrap(), fixture(name), "{name}: this build encodes it differently");
    }
    let old = fixture("previous-release.bin");
    assert_eq!(&old[..8], &[b'H', b'A', b'H', b'B', 1, 1, 0, (old.len() - 28) as u8], "envelope v1, key 1, body length");
}

#[test]
fn a_packet_without_versions_is_version_1_and_this_node_answers_in_version_1() {
    let old = decode_packet(&fixture("previous-release.bin"), &keys()).unwrap();
    assert_eq!(announced_versions(&old), VersionRange::new(1, 1));
    assert_eq!(agreed_version(VERSIONS, &old), Ok(1));
    assert_eq!(old.software_version, "");
    // What this release sends at the agreed version: exactly the announcing fixture, and without
    // the announcement (the test knob's previous release) exactly the old one.
    let version = agreed_version(VERSIONS, &old).unwrap();
    assert_eq!(encode_packet(&content().to_packet(VERSIONS, version, true), 1, KEY).unwrap(), fixture("announces-1-1.bin"));
    assert_eq!(encode_packet(&content().to_packet(VERSIONS, version, false), 1, KEY).unwrap(), fixture("previous-release.bin"));
}

#[test]
fn a_peer_speaking_only_later_versions_is_refused_naming_both_ranges() {
    let future = Heartbeat { version_min: 2, version_max: 3, ..current_body() };
    let err = agreed_version(VERSIONS, &future).unwrap_err().to_string();
    assert!(err.contains("heartbeat") && err.contains("peer speaks 2..=3") && err.contains("this node speaks 1..=1"), "{err}");
    let newer = Heartbeat { version_min: 1, version_max: 5, ..current_body() };
    assert_eq!(agreed_version(VERSIONS, &newer), Ok(1));
}
