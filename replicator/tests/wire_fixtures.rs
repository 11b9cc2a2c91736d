//! Recorded bytes of the replication protocol as this release speaks it (versions 1 and 2), kept in
//! `tests/fixtures/proto-v2/` (see the README there). They guard wire compatibility across releases:
//!
//! - every fixture decodes to the frame written out here by hand, and that frame encodes to exactly
//!   the fixture's bytes;
//! - a real state machine (`Node`) talking to a scripted peer that offers only version 1 (a node of
//!   the previous release) agrees on version 1 and emits exactly the fixture bytes for its Hello,
//!   authentication response (fixed secret and challenge), Params, Uuids, bitmap, State and Data,
//!   accepts the peer's fixtures, and never sends a PrState; offered 1..=2 it sends the PrState
//!   fixture and accepts the PrAck fixture.
//!
//! `REGENERATE_FIXTURES=1 cargo test -p replicator --test wire_fixtures` rewrites the files from the
//! frames below. Do that only for a new frame; changing an existing fixture breaks older peers.

use bytes::{Bytes, BytesMut};
use replicator::machine::policy::Policies;
use replicator::machine::state::{DiskState, ReplState, Role};
use replicator::machine::uuids::Uuids;
use replicator::machine::{Action, Input, Node, NodeParams, Persisted, Timing};
use replicator::meta::activity_log::ActivityLog;
use replicator::meta::bitmap::Bitmap;
use replicator::meta::superblock::flags;
use replicator::wire::auth::{self, Secret};
use replicator::wire::frame::{self, Frame, Params, UuidsMsg};
use replicator::wire::version::VersionRange;
use std::path::PathBuf;

const SIZE: u64 = 1 << 20;
const SECRET: &[u8] = b"fixture-shared-secret";
const NODE1_UUID: u64 = 0x0123_4567_89AB_CDE0;
const HISTORY: [u64; 2] = [0x1111_2222_3333_4440, 0];
const PR_BLOB: &[u8] = b"fixture persistent-reservation state";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto-v2")
}

fn secret() -> Secret {
    Secret::new(SECRET.to_vec()).unwrap()
}

fn peer_challenge() -> Bytes {
    Bytes::from((0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(3)).collect::<Vec<_>>())
}

fn params(discard: bool) -> Params {
    let pol = Policies::default();
    Params {
        resource: "r0".into(),
        data_size: SIZE,
        protocol: b'C',
        after_sb_0pri: pol.after_sb_0pri.code(),
        after_sb_1pri: pol.after_sb_1pri.code(),
        after_sb_2pri: pol.after_sb_2pri.code(),
        rr_conflict: pol.rr_conflict.code(),
        discard_my_data: discard,
        verify_alg: "sha256".into(),
    }
}

fn uuids(role: Role) -> UuidsMsg {
    // The Primary's current UUID carries the role bit (bit 0).
    let current = if role == Role::Primary { NODE1_UUID | 1 } else { NODE1_UUID };
    UuidsMsg { current, bitmap: 0, history: HISTORY, dirty_bits: 0, flags: 0, role: role.code(), disk: DiskState::UpToDate.code() }
}

fn state(role: Role) -> Frame {
    Frame::State { role: role.code(), disk: DiskState::UpToDate.code(), flags: u32::from(ReplState::Established.code()) }
}

fn block() -> Bytes {
    Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
}

/// Every fixture: file name and the frame it holds.
fn fixtures() -> Vec<(&'static str, Frame)> {
    let mac = auth::respond(&secret(), &peer_challenge(), "node1");
    vec![
        ("hello-node1-v1-2.bin", Frame::Hello { proto_min: 1, proto_max: 2, node: "node1".into() }),
        // Protocol 3 (online resize: ResizeRequest/ResizeReply) is what this release offers.
        ("hello-node1-v1-3.bin", Frame::Hello { proto_min: 1, proto_max: 3, node: "node1".into() }),
        ("hello-node1-v1-4.bin", Frame::Hello { proto_min: 1, proto_max: 4, node: "node1".into() }),
        ("hello-node2-v1.bin", Frame::Hello { proto_min: 1, proto_max: 1, node: "node2".into() }),
        ("hello-node2-v1-2.bin", Frame::Hello { proto_min: 1, proto_max: 2, node: "node2".into() }),
        ("auth-challenge-node2.bin", Frame::AuthChallenge { challenge: peer_challenge() }),
        ("auth-response-node1.bin", Frame::AuthResponse { mac: Bytes::copy_from_slice(&mac) }),
        ("params.bin", Frame::Params(params(false))),
        ("uuids-node1-primary.bin", Frame::Uuids(uuids(Role::Primary))),
        ("uuids-node2-secondary.bin", Frame::Uuids(uuids(Role::Secondary))),
        ("bitmap-clean.bin", Frame::BitmapChunk { start_word: 0, words: vec![0; 4], last: true }),
        ("state-node1-primary-established.bin", state(Role::Primary)),
        ("state-node2-secondary-established.bin", state(Role::Secondary)),
        ("data-seq1.bin", Frame::Data { seq: 1, offset: 8192, flags: 0, data: block() }),
        ("write-ack-seq1.bin", Frame::WriteAck { seq: 1 }),
        ("pr-state-seq2.bin", Frame::PrState { seq: 2, blob: Bytes::from_static(PR_BLOB) }),
        ("pr-ack-seq2.bin", Frame::PrAck { seq: 2, ok: true }),
    ]
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode(f, &mut out);
    out.to_vec()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (regenerate with REGENERATE_FIXTURES=1)", path.display()))
}

fn fixture_frame(name: &str) -> Frame {
    let mut buf = BytesMut::from(&fixture(name)[..]);
    let f = frame::decode(&mut buf).unwrap_or_else(|e| panic!("{name}: {e}")).unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: {} bytes after the frame", buf.len());
    f
}

#[test]
fn fixtures_decode_to_the_expected_frames_and_encode_back_exactly() {
    if std::env::var_os("REGENERATE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, f) in fixtures() {
            std::fs::write(dir().join(name), encode(&f)).unwrap();
        }
    }
    for (name, expected) in fixtures() {
        assert_eq!(fixture_frame(name), expected, "{name} decodes to something else");
        assert_eq!(encode(&expected), fixture(name), "{name}: this build encodes the frame differently");
    }
    // Spot checks of the layout itself, so a codec change cannot regenerate its way past them.
    let hello = fixture("hello-node2-v1.bin");
    assert_eq!(&hello[..4], &0x4841_5250u32.to_le_bytes(), "magic HARP");
    assert_eq!(&hello[4..8], &[1, 0, 0, 0], "kind 1, reserved 0");
    assert_eq!(&hello[8..12], &15u32.to_le_bytes(), "payload length");
    assert_eq!(&hello[12..], &[1, 0, 0, 0, 1, 0, 0, 0, 5, 0, b'n', b'o', b'd', b'e', b'2']);
    assert_eq!(&fixture("write-ack-seq1.bin")[..], &[0x50, 0x52, 0x41, 0x48, 11, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    let mac = fixture("auth-response-node1.bin");
    assert!(auth::verify(&secret(), &peer_challenge(), "node1", &mac[12..]).is_ok());
}

/// node1 of this release, Primary and UpToDate, about to connect to node2.
fn node1(protocols: VersionRange) -> Node {
    let p = NodeParams {
        node: "node1".into(),
        peer: Some("node2".into()),
        resource: "r0".into(),
        data_size: SIZE,
        policies: Policies::default(),
        secret: Some(secret()),
        fencing_dont_care: true,
        freeze_io_on_peer_loss: false,
        resync_rate: None,
        verify_rate: None,
        c_min_rate: Some(0),
        resync_control: Default::default(),
        timing: Timing { ping_int_ms: 10_000, ping_timeout_ms: 5_000, timeout_ms: 6_000, ko_count: 7, connect_int_ms: 1_000 },
        verify_alg: "sha256".into(),
        csums: Default::default(),
        detach_on_io_error: false,
        protocols,
        protocol: Default::default(),
    };
    let persisted = Persisted {
        uuids: Uuids { current: NODE1_UUID, bitmap: 0, history: HISTORY },
        flags: flags::CONSISTENT | flags::WAS_UP_TO_DATE | flags::AL_CLEAN,
    };
    let (mut node, _) = Node::new(p, persisted, Bitmap::new(SIZE), ActivityLog::new(7, 8), 42);
    let _ = node.step(Input::Tick { now_ms: 1 });
    let _ = node.step(Input::Primary { force: false });
    assert_eq!(node.role(), Role::Primary);
    let _ = node.step(Input::Connect { discard_my_data: false });
    node
}

fn sent(actions: &[Action]) -> Vec<Frame> {
    actions.iter().filter_map(|a| if let Action::Send { frame, .. } = a { Some(frame.clone()) } else { None }).collect()
}

fn assert_speaks(actions: &[Action], names: &[&str]) {
    let frames = sent(actions);
    let got: Vec<Vec<u8>> = frames.iter().map(encode).collect();
    let want: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
    assert_eq!(got, want, "sent {frames:?}, expected the fixtures {names:?}");
}

fn frame_in(node: &mut Node, name: &str) -> Vec<Action> {
    node.step(Input::Frame { conn: 1, frame: fixture_frame(name) })
}

/// Runs the handshake of node1 (this release) against a scripted node2 offering `peer_hello`.
fn handshake(peer_hello: &str) -> Node {
    let mut n = node1(frame::PROTOCOLS);
    let out = n.step(Input::TransportUp { conn: 1 });
    assert_speaks(&out, &["hello-node1-v1-4.bin"]);
    // Our challenge is random; only its length is fixed.
    let out = frame_in(&mut n, peer_hello);
    let [Frame::AuthChallenge { challenge: ours }] = &sent(&out)[..] else { panic!("expected our challenge: {out:?}") };
    assert_eq!(ours.len(), 64);
    let ours = ours.clone();
    // The answer to the peer's fixed challenge is fixed.
    let out = frame_in(&mut n, "auth-challenge-node2.bin");
    assert_speaks(&out, &["auth-response-node1.bin"]);
    let peer_mac = auth::respond(&secret(), &ours, "node2");
    let out = n.step(Input::Frame { conn: 1, frame: Frame::AuthResponse { mac: Bytes::copy_from_slice(&peer_mac) } });
    assert_speaks(&out, &["params.bin"]);
    let out = frame_in(&mut n, "params.bin");
    assert_speaks(&out, &["uuids-node1-primary.bin", "bitmap-clean.bin"]);
    assert!(sent(&frame_in(&mut n, "uuids-node2-secondary.bin")).is_empty());
    let out = frame_in(&mut n, "bitmap-clean.bin");
    assert_speaks(&out, &["state-node1-primary-established.bin"]);
    let _ = frame_in(&mut n, "state-node2-secondary-established.bin");
    let s = n.snapshot();
    assert_eq!((s.repl, s.peer_role, s.peer_disk), (ReplState::Established, Role::Secondary, DiskState::UpToDate), "{s:?}");
    n
}

fn write_block(n: &mut Node) {
    let out = n.step(Input::Write { id: 7, offset: 8192, data: block(), fua: false });
    assert_speaks(&out, &["data-seq1.bin"]);
    let mut done = Vec::new();
    for a in &out {
        if let Action::DiskWrite { token, .. } = a {
            done.extend(n.step(Input::DiskDone { token: *token, result: Ok(None) }));
        }
    }
    done.extend(frame_in(n, "write-ack-seq1.bin"));
    assert!(
        done.iter().any(|a| matches!(a, Action::Complete { id: 7, result: Ok(()) })),
        "the write did not complete on the WriteAck fixture: {done:?}"
    );
}

#[test]
fn with_a_previous_release_peer_it_agrees_on_version_1_and_speaks_the_fixtures() {
    let mut n = handshake("hello-node2-v1.bin");
    let s = n.snapshot();
    assert_eq!(s.agreed_protocol, Some(1));
    assert_eq!(s.peer_protocols, Some(VersionRange::new(1, 1)));
    write_block(&mut n);
    // Version 1 has no PrState: the update completes locally and the peer is marked stale.
    let out = n.step(Input::PrUpdate { id: 9, blob: Bytes::from_static(PR_BLOB) });
    assert!(sent(&out).iter().all(|f| !matches!(f, Frame::PrState { .. })), "PrState sent to a version-1 peer: {out:?}");
    assert!(n.snapshot().peer_pr_stale);
}

#[test]
fn with_a_peer_of_this_release_it_agrees_on_version_2_and_replicates_pr_state() {
    let mut n = handshake("hello-node2-v1-2.bin");
    assert_eq!(n.snapshot().agreed_protocol, Some(2));
    write_block(&mut n);
    let out = n.step(Input::PrUpdate { id: 9, blob: Bytes::from_static(PR_BLOB) });
    assert_speaks(&out, &["pr-state-seq2.bin"]);
    let done = frame_in(&mut n, "pr-ack-seq2.bin");
    assert!(done.iter().any(|a| matches!(a, Action::Complete { id: 9, result: Ok(()) })), "{done:?}");
    assert!(!n.snapshot().peer_pr_stale);
}

#[test]
fn a_peer_whose_versions_do_not_overlap_is_refused_for_good_naming_both_ranges() {
    let mut n = node1(frame::PROTOCOLS);
    let _ = n.step(Input::TransportUp { conn: 1 });
    let out = n.step(Input::Frame { conn: 1, frame: Frame::Hello { proto_min: 5, proto_max: 6, node: "node2".into() } });
    let reason = sent(&out)
        .into_iter()
        .find_map(|f| if let Frame::Abort { code, reason } = f { Some((code, reason)) } else { None })
        .expect("an Abort frame tells the peer why");
    assert_eq!(reason.0, 1, "fatal, not retry");
    assert!(reason.1.contains("peer speaks 5..=6") && reason.1.contains("this node speaks 1..=4"), "{}", reason.1);
    assert!(out.iter().any(|a| matches!(a, Action::SetConnecting(false))), "must stop reconnecting: {out:?}");
    let s = n.snapshot();
    assert_eq!(s.conn.to_string(), "StandAlone");
    assert_eq!(s.last_error.as_deref(), Some(reason.1.as_str()));
    assert_eq!(s.peer_protocols, Some(VersionRange::new(5, 6)));
    assert_eq!(s.agreed_protocol, None);
}
