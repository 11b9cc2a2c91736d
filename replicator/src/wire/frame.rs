//! Replication frames: pure encode/decode over bytes.
//!
//! One TCP stream carries every frame, so each frame is self-delimiting: a fixed 12-byte header, then a
//! payload whose length the header states. The decoder checks the header (magic, reserved, kind, length cap)
//! before it buffers or allocates anything for the payload, so a hostile or confused peer can make us hold at
//! most [`MAX_PAYLOAD`] bytes and never makes us panic.
//!
//! Header, 12 bytes little-endian: `magic u32 = 0x4841_5250 ("HARP")`, `kind u16`, `reserved u16 = 0`,
//! `payload_len u32 ≤ MAX_PAYLOAD`.
//!
//! Payload layouts by kind (all integers little-endian; `bool` = one byte 0 or 1, anything else is an error;
//! `str` = u16 length + UTF-8, at most 255 bytes; "rest" = the remainder of the payload, which the stream
//! decoder hands out zero-copy as a slice of the receive buffer):
//!
//! | code | kind | payload |
//! |---|---|---|
//! | 1 | Hello | proto_min u32, proto_max u32, node str |
//! | 2 | AuthChallenge | challenge (rest, exactly 64 bytes) |
//! | 3 | AuthResponse | mac (rest, exactly 20 bytes) |
//! | 4 | Params | resource str, data_size u64, protocol u8, after_sb_0pri u8, after_sb_1pri u8, after_sb_2pri u8, rr_conflict u8, discard_my_data bool, verify_alg str |
//! | 5 | Uuids | current u64, bitmap u64, history 2×u64, dirty_bits u64, flags u64, role u8, disk u8 |
//! | 6 | State | role u8, disk u8, flags u32 |
//! | 7 | BitmapChunk | start_word u64, last bool, words (rest, u64 each) |
//! | 8 | SyncUuid | uuid u64 |
//! | 9 | ResyncFinished | — |
//! | 10 | Data | seq u64, offset u64, flags u32, data (rest, non-empty multiple of 512) |
//! | 11 | WriteAck | seq u64 |
//! | 12 | NegAck | seq u64, code u32 |
//! | 13 | Flush | seq u64 |
//! | 14 | FlushAck | seq u64, ok bool |
//! | 15 | RsData | offset u64, data (rest, non-empty multiple of 512) |
//! | 16 | RsAck | offset u64, len u32, ok bool |
//! | 17 | ReadRequest | seq u64, offset u64, len u32 |
//! | 18 | ReadReply | seq u64, ok bool, data (rest; empty when ok is false) |
//! | 19 | VerifyRequest | offset u64, len u32 |
//! | 20 | VerifyReply | offset u64, len u32, digest (rest, at most 64 bytes) |
//! | 21 | OutOfSync | offset u64, len u32 |
//! | 22 | Ping | nonce u64 |
//! | 23 | PingAck | nonce u64 |
//! | 24 | Outdate | — |
//! | 25 | OutdateAck | ok bool |
//! | 26 | Abort | code u32, reason str |
//! | 27 | PrState | seq u64, blob (rest, at most [`MAX_PR_STATE`] bytes; protocol 2) |
//! | 28 | PrAck | seq u64, ok bool (protocol 2) |
//! | 29 | ResizeRequest | size u64, explicit bool, assume_clean bool (protocol 3) |
//! | 30 | ResizeReply | ok bool, size u64, capacity u64, reason str (protocol 3) |
//! | 31 | CsumRequest | offset u64, len u32, alg u8 (protocol 4) |
//! | 32 | CsumReply | offset u64, len u32, digests (rest, at most [`MAX_CSUM_DIGESTS`] bytes; protocol 4) |
//! | 33 | RsInSync | offset u64, len u32 (protocol 4) |
//!
//! Protocol versions: 1 is the first release; 2 adds PrState/PrAck (persistent-reservation state
//! replicated with the resource); 3 adds ResizeRequest/ResizeReply (online resize) and lets the
//! handshake's sizes differ (the smaller side adopts the larger one: a resize cut short); 4 adds
//! CsumRequest/CsumReply/RsInSync (checksum-based resync, `machine/csums.rs`). A frame of a later version is only sent once the handshake agreed on
//! it ([`PROTOCOL_VERSION_MAX`] of both sides), so an older peer never sees a kind it does not know.
//!
//! Every payload must be consumed exactly: bytes left over after the last field are an error, so two
//! implementations that disagree about a layout fail loudly instead of misreading fields.

use super::fields::{put_bool, put_str, FieldReader};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// "HARP" read as a little-endian u32: rejects a connection from something that is not our peer at once.
pub const MAGIC: u32 = 0x4841_5250;
pub const HEADER_LEN: usize = 12;
/// Largest payload: a 4 MiB write plus room for its fixed fields.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024 + 4096;
pub const PROTOCOL_VERSION_MIN: u32 = 1;
pub const PROTOCOL_VERSION_MAX: u32 = 4;
/// The replication protocol versions this release speaks, offered in Hello.
pub const PROTOCOLS: crate::wire::version::VersionRange =
    crate::wire::version::VersionRange::new(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
/// First protocol version with PrState/PrAck.
pub const PROTOCOL_PR: u32 = 2;
/// First protocol version with ResizeRequest/ResizeReply and handshakes of different sizes.
pub const PROTOCOL_RESIZE: u32 = 3;
/// First protocol version with CsumRequest/CsumReply/RsInSync (checksum-based resync).
pub const PROTOCOL_CSUMS: u32 = 4;
/// Largest digest list in a CsumReply: one digest of at most [`MAX_DIGEST`] bytes per 4 KiB block of
/// a 1 MiB resync request.
pub const MAX_CSUM_DIGESTS: usize = 256 * MAX_DIGEST;
/// Largest persistent-reservation state a PrState frame carries.
pub const MAX_PR_STATE: usize = 64 * 1024;
/// Data flag: force unit access (stable on the peer's disk before its ack).
pub const DATA_FUA: u32 = 1;
/// Longest string field in bytes; the encoder cuts longer strings at a character boundary.
pub const MAX_STR: usize = 255;
/// Longest verify digest (SHA-512 size): anything longer is not a digest we could have asked for.
pub const MAX_DIGEST: usize = 64;
/// Write and resync payloads are whole sectors.
pub const SECTOR: usize = 512;
/// Bytes of fixed fields ahead of the data in a Data frame (seq, offset, flags).
pub const DATA_FIXED_LEN: usize = 20;
/// Bytes of fixed fields ahead of the block data in a frame of kind `code` (0 for frames without block
/// data). The receiver uses it to land block data on an aligned address (O_DIRECT without a copy).
pub fn block_data_lead(code: u16) -> usize {
    match code {
        kind::DATA => DATA_FIXED_LEN,
        kind::RS_DATA => 8,
        kind::READ_REPLY => 9,
        _ => 0,
    }
}

/// Size of an AuthChallenge (DRBD 9 requires exactly 64).
pub const CHALLENGE_LEN: usize = 64;
/// Size of an AuthResponse: one HMAC-SHA1.
pub const MAC_LEN: usize = 20;

/// Numeric kind codes; they are the wire format, so they never change meaning.
mod kind {
    pub const HELLO: u16 = 1;
    pub const AUTH_CHALLENGE: u16 = 2;
    pub const AUTH_RESPONSE: u16 = 3;
    pub const PARAMS: u16 = 4;
    pub const UUIDS: u16 = 5;
    pub const STATE: u16 = 6;
    pub const BITMAP_CHUNK: u16 = 7;
    pub const SYNC_UUID: u16 = 8;
    pub const RESYNC_FINISHED: u16 = 9;
    pub const DATA: u16 = 10;
    pub const WRITE_ACK: u16 = 11;
    pub const NEG_ACK: u16 = 12;
    pub const FLUSH: u16 = 13;
    pub const FLUSH_ACK: u16 = 14;
    pub const RS_DATA: u16 = 15;
    pub const RS_ACK: u16 = 16;
    pub const READ_REQUEST: u16 = 17;
    pub const READ_REPLY: u16 = 18;
    pub const VERIFY_REQUEST: u16 = 19;
    pub const VERIFY_REPLY: u16 = 20;
    pub const OUT_OF_SYNC: u16 = 21;
    pub const PING: u16 = 22;
    pub const PING_ACK: u16 = 23;
    pub const OUTDATE: u16 = 24;
    pub const OUTDATE_ACK: u16 = 25;
    pub const ABORT: u16 = 26;
    pub const PR_STATE: u16 = 27;
    pub const PR_ACK: u16 = 28;
    pub const RESIZE_REQUEST: u16 = 29;
    pub const RESIZE_REPLY: u16 = 30;
    pub const CSUM_REQUEST: u16 = 31;
    pub const CSUM_REPLY: u16 = 32;
    pub const RS_IN_SYNC: u16 = 33;
    pub const MAX: u16 = RS_IN_SYNC;
}

/// Names indexed by `code - 1`, for errors and logs.
const KIND_NAMES: [&str; kind::MAX as usize] = [
    "Hello", "AuthChallenge", "AuthResponse", "Params", "Uuids", "State", "BitmapChunk", "SyncUuid",
    "ResyncFinished", "Data", "WriteAck", "NegAck", "Flush", "FlushAck", "RsData", "RsAck", "ReadRequest",
    "ReadReply", "VerifyRequest", "VerifyReply", "OutOfSync", "Ping", "PingAck", "Outdate", "OutdateAck", "Abort",
    "PrState", "PrAck", "ResizeRequest", "ResizeReply", "CsumRequest", "CsumReply", "RsInSync",
];

/// Connection parameters both sides must agree on (DRBD's `P_PROTOCOL` + `P_SIZES` + verify-alg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub resource: String,
    pub data_size: u64,
    pub protocol: u8,
    pub after_sb_0pri: u8,
    pub after_sb_1pri: u8,
    pub after_sb_2pri: u8,
    pub rr_conflict: u8,
    pub discard_my_data: bool,
    pub verify_alg: String,
}

/// Generation identifiers and the state the connect-time sync decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidsMsg {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
    pub dirty_bits: u64,
    pub flags: u64,
    pub role: u8,
    pub disk: u8,
}

/// One message on the replication link. See the module doc for codes and layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    // handshake
    Hello { proto_min: u32, proto_max: u32, node: String },
    AuthChallenge { challenge: Bytes },
    AuthResponse { mac: Bytes },
    Params(Params),
    Uuids(UuidsMsg),
    State { role: u8, disk: u8, flags: u32 },
    BitmapChunk { start_word: u64, words: Vec<u64>, last: bool },
    SyncUuid { uuid: u64 },
    ResyncFinished,
    // data path
    Data { seq: u64, offset: u64, flags: u32, data: Bytes },
    WriteAck { seq: u64 },
    NegAck { seq: u64, code: u32 },
    Flush { seq: u64 },
    FlushAck { seq: u64, ok: bool },
    RsData { offset: u64, data: Bytes },
    RsAck { offset: u64, len: u32, ok: bool },
    ReadRequest { seq: u64, offset: u64, len: u32 },
    ReadReply { seq: u64, ok: bool, data: Bytes },
    VerifyRequest { offset: u64, len: u32 },
    VerifyReply { offset: u64, len: u32, digest: Bytes },
    OutOfSync { offset: u64, len: u32 },
    Ping { nonce: u64 },
    PingAck { nonce: u64 },
    Outdate,
    OutdateAck { ok: bool },
    Abort { code: u32, reason: String },
    // persistent-reservation state (protocol 2)
    PrState { seq: u64, blob: Bytes },
    PrAck { seq: u64, ok: bool },
    // online resize (protocol 3): grow (or, `explicit`, set) the volume; the peer answers with the
    // size it now has or why not, and its backing device's capacity either way.
    ResizeRequest { size: u64, explicit: bool, assume_clean: bool },
    ResizeReply { ok: bool, size: u64, capacity: u64, reason: String },
    // checksum-based resync (protocol 4): the SyncSource asks the SyncTarget for a digest (`alg`, see
    // `machine::csums::CsumAlg`) of each 4 KiB block of a range, the target answers with them
    // concatenated (empty: it could not), and the source sends only the differing blocks as RsData and
    // declares the rest in sync.
    CsumRequest { offset: u64, len: u32, alg: u8 },
    CsumReply { offset: u64, len: u32, digests: Bytes },
    RsInSync { offset: u64, len: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("bad frame magic {0:#010x} (not a replication peer?)")]
    BadMagic(u32),
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    #[error("frame payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}")]
    Oversize { len: usize },
    #[error("{kind} frame truncated: its fields need {need} bytes, the payload has {have}")]
    Truncated { kind: &'static str, need: usize, have: usize },
    #[error("{kind} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("bad string in {kind} frame (longer than {MAX_STR} bytes or not UTF-8)")]
    BadString { kind: &'static str },
    #[error("bad length in {kind} frame: {detail}")]
    BadLength { kind: &'static str, detail: String },
    #[error("reserved header field is {0}, must be 0")]
    NonZeroReserved(u16),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Name of a kind code, `"unknown"` for codes we do not define.
pub fn kind_name(code: u16) -> &'static str {
    usize::from(code).checked_sub(1).and_then(|i| KIND_NAMES.get(i)).copied().unwrap_or("unknown")
}

impl Frame {
    /// The kind code sent in the header.
    pub fn kind_code(&self) -> u16 {
        use kind::*;
        match self {
            Frame::Hello { .. } => HELLO,
            Frame::AuthChallenge { .. } => AUTH_CHALLENGE,
            Frame::AuthResponse { .. } => AUTH_RESPONSE,
            Frame::Params(_) => PARAMS,
            Frame::Uuids(_) => UUIDS,
            Frame::State { .. } => STATE,
            Frame::BitmapChunk { .. } => BITMAP_CHUNK,
            Frame::SyncUuid { .. } => SYNC_UUID,
            Frame::ResyncFinished => RESYNC_FINISHED,
            Frame::Data { .. } => DATA,
            Frame::WriteAck { .. } => WRITE_ACK,
            Frame::NegAck { .. } => NEG_ACK,
            Frame::Flush { .. } => FLUSH,
            Frame::FlushAck { .. } => FLUSH_ACK,
            Frame::RsData { .. } => RS_DATA,
            Frame::RsAck { .. } => RS_ACK,
            Frame::ReadRequest { .. } => READ_REQUEST,
            Frame::ReadReply { .. } => READ_REPLY,
            Frame::VerifyRequest { .. } => VERIFY_REQUEST,
            Frame::VerifyReply { .. } => VERIFY_REPLY,
            Frame::OutOfSync { .. } => OUT_OF_SYNC,
            Frame::Ping { .. } => PING,
            Frame::PingAck { .. } => PING_ACK,
            Frame::Outdate => OUTDATE,
            Frame::OutdateAck { .. } => OUTDATE_ACK,
            Frame::Abort { .. } => ABORT,
            Frame::PrState { .. } => PR_STATE,
            Frame::PrAck { .. } => PR_ACK,
            Frame::ResizeRequest { .. } => RESIZE_REQUEST,
            Frame::ResizeReply { .. } => RESIZE_REPLY,
            Frame::CsumRequest { .. } => CSUM_REQUEST,
            Frame::CsumReply { .. } => CSUM_REPLY,
            Frame::RsInSync { .. } => RS_IN_SYNC,
        }
    }

    /// The kind's name, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind_code())
    }
}

// ---- validation shared by the encoder and the decoder ------------------------------------------------

pub(crate) fn bad_length(kind: &'static str, detail: String) -> WireError {
    WireError::BadLength { kind, detail }
}

fn check_exact(kind: &'static str, what: &str, len: usize, want: usize) -> Result<(), WireError> {
    if len != want {
        return Err(bad_length(kind, format!("{what} of {len} bytes, expected {want}")));
    }
    Ok(())
}

fn check_sectors(kind: &'static str, len: usize) -> Result<(), WireError> {
    if len == 0 || !len.is_multiple_of(SECTOR) {
        return Err(bad_length(kind, format!("data of {len} bytes is not a non-empty multiple of {SECTOR}")));
    }
    Ok(())
}

fn check_digest(kind: &'static str, len: usize) -> Result<(), WireError> {
    if len > MAX_DIGEST {
        return Err(bad_length(kind, format!("digest of {len} bytes, at most {MAX_DIGEST}")));
    }
    Ok(())
}

fn check_csum_digests(kind: &'static str, len: usize) -> Result<(), WireError> {
    if len > MAX_CSUM_DIGESTS {
        return Err(bad_length(kind, format!("digest list of {len} bytes, at most {MAX_CSUM_DIGESTS}")));
    }
    Ok(())
}

fn check_pr_state(kind: &'static str, len: usize) -> Result<(), WireError> {
    if len > MAX_PR_STATE {
        return Err(bad_length(kind, format!("PR state of {len} bytes, at most {MAX_PR_STATE}")));
    }
    Ok(())
}

fn check_read_reply(kind: &'static str, ok: bool, len: usize) -> Result<(), WireError> {
    if !ok && len != 0 {
        return Err(bad_length(kind, format!("failed read carries {len} bytes of data")));
    }
    Ok(())
}

/// The rules the decoder enforces on variable-length fields, checked before encoding so that whatever
/// [`try_encode`] writes, [`parse`] accepts.
fn check_encodable(frame: &Frame) -> Result<(), WireError> {
    let kind = frame.kind_name();
    match frame {
        Frame::AuthChallenge { challenge } => check_exact(kind, "challenge", challenge.len(), CHALLENGE_LEN),
        Frame::AuthResponse { mac } => check_exact(kind, "mac", mac.len(), MAC_LEN),
        Frame::Data { data, .. } | Frame::RsData { data, .. } => check_sectors(kind, data.len()),
        Frame::ReadReply { ok, data, .. } => check_read_reply(kind, *ok, data.len()),
        Frame::VerifyReply { digest, .. } => check_digest(kind, digest.len()),
        Frame::PrState { blob, .. } => check_pr_state(kind, blob.len()),
        Frame::CsumReply { digests, .. } => check_csum_digests(kind, digests.len()),
        _ => Ok(()),
    }
}

// ---- encoding --------------------------------------------------------------------------------------

fn put_payload(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Hello { proto_min, proto_max, node } => {
            out.put_u32_le(*proto_min);
            out.put_u32_le(*proto_max);
            put_str(out, node);
        }
        Frame::AuthChallenge { challenge: b } | Frame::AuthResponse { mac: b } => out.put_slice(b),
        Frame::Params(p) => {
            put_str(out, &p.resource);
            out.put_u64_le(p.data_size);
            out.put_slice(&[p.protocol, p.after_sb_0pri, p.after_sb_1pri, p.after_sb_2pri, p.rr_conflict]);
            put_bool(out, p.discard_my_data);
            put_str(out, &p.verify_alg);
        }
        Frame::Uuids(u) => {
            for v in [u.current, u.bitmap, u.history[0], u.history[1], u.dirty_bits, u.flags] {
                out.put_u64_le(v);
            }
            out.put_u8(u.role);
            out.put_u8(u.disk);
        }
        Frame::State { role, disk, flags } => {
            out.put_u8(*role);
            out.put_u8(*disk);
            out.put_u32_le(*flags);
        }
        Frame::BitmapChunk { start_word, words, last } => {
            out.put_u64_le(*start_word);
            put_bool(out, *last);
            out.reserve(words.len().saturating_mul(8));
            for w in words {
                out.put_u64_le(*w);
            }
        }
        Frame::SyncUuid { uuid } => out.put_u64_le(*uuid),
        Frame::ResyncFinished | Frame::Outdate => {}
        Frame::Data { seq, offset, flags, data } => {
            put_data_fields(*seq, *offset, *flags, out);
            out.put_slice(data);
        }
        Frame::WriteAck { seq } | Frame::Flush { seq } => out.put_u64_le(*seq),
        Frame::NegAck { seq, code } => {
            out.put_u64_le(*seq);
            out.put_u32_le(*code);
        }
        Frame::FlushAck { seq, ok } => {
            out.put_u64_le(*seq);
            put_bool(out, *ok);
        }
        Frame::RsData { offset, data } => {
            out.put_u64_le(*offset);
            out.put_slice(data);
        }
        Frame::RsAck { offset, len, ok } => {
            out.put_u64_le(*offset);
            out.put_u32_le(*len);
            put_bool(out, *ok);
        }
        Frame::ReadRequest { seq, offset, len } => {
            out.put_u64_le(*seq);
            out.put_u64_le(*offset);
            out.put_u32_le(*len);
        }
        Frame::ReadReply { seq, ok, data } => {
            out.put_u64_le(*seq);
            put_bool(out, *ok);
            out.put_slice(data);
        }
        Frame::VerifyRequest { offset, len } | Frame::OutOfSync { offset, len } | Frame::RsInSync { offset, len } => {
            out.put_u64_le(*offset);
            out.put_u32_le(*len);
        }
        Frame::CsumRequest { offset, len, alg } => {
            out.put_u64_le(*offset);
            out.put_u32_le(*len);
            out.put_u8(*alg);
        }
        Frame::VerifyReply { offset, len, digest } | Frame::CsumReply { offset, len, digests: digest } => {
            out.put_u64_le(*offset);
            out.put_u32_le(*len);
            out.put_slice(digest);
        }
        Frame::Ping { nonce } | Frame::PingAck { nonce } => out.put_u64_le(*nonce),
        Frame::OutdateAck { ok } => put_bool(out, *ok),
        Frame::Abort { code, reason } => {
            out.put_u32_le(*code);
            put_str(out, reason);
        }
        Frame::PrState { seq, blob } => {
            out.put_u64_le(*seq);
            out.put_slice(blob);
        }
        Frame::PrAck { seq, ok } => {
            out.put_u64_le(*seq);
            put_bool(out, *ok);
        }
        Frame::ResizeRequest { size, explicit, assume_clean } => {
            out.put_u64_le(*size);
            put_bool(out, *explicit);
            put_bool(out, *assume_clean);
        }
        Frame::ResizeReply { ok, size, capacity, reason } => {
            put_bool(out, *ok);
            out.put_u64_le(*size);
            out.put_u64_le(*capacity);
            put_str(out, reason);
        }
    }
}

fn put_header(code: u16, payload_len: usize, out: &mut BytesMut) {
    assert!(payload_len <= MAX_PAYLOAD, "frame payload of {payload_len} bytes exceeds MAX_PAYLOAD");
    out.put_u32_le(MAGIC);
    out.put_u16_le(code);
    out.put_u16_le(0);
    // MAX_PAYLOAD < u32::MAX, checked above.
    out.put_u32_le(payload_len as u32);
}

fn put_data_fields(seq: u64, offset: u64, flags: u32, out: &mut BytesMut) {
    out.put_u64_le(seq);
    out.put_u64_le(offset);
    out.put_u32_le(flags);
}

/// Encode `frame` (header + payload) at the end of `out`, or refuse a frame the peer would reject
/// (wrong-size challenge/mac, unaligned data, oversize payload, …). On error `out` is left as it was.
pub fn try_encode(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    check_encodable(frame)?;
    let start = out.len();
    // Header with a placeholder length, patched once the payload's size is known.
    put_header(frame.kind_code(), 0, out);
    let body = out.len();
    put_payload(frame, out);
    let len = out.len() - body;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(WireError::Oversize { len });
    }
    // Indexes our own freshly written header; `len <= MAX_PAYLOAD` so it fits a u32.
    out[start + 8..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encode `frame` at the end of `out`.
///
/// # Panics
/// If the frame breaks a wire rule (see [`try_encode`]): the state machine only builds valid frames, so
/// that is a bug, and sending it would only make the peer drop the connection with a less clear message.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    if let Err(e) = try_encode(frame, out) {
        panic!("refusing to encode an invalid {} frame: {e}", frame.kind_name());
    }
}

/// Header and fixed fields of a Data frame whose `data_len` payload bytes the caller sends right after
/// (vectored write: the write's buffer is never copied into the frame).
///
/// # Panics
/// If `data_len` is not a non-empty multiple of 512 or the frame would exceed [`MAX_PAYLOAD`].
pub fn encode_data_header(seq: u64, offset: u64, flags: u32, data_len: usize, out: &mut BytesMut) {
    assert!(check_sectors("Data", data_len).is_ok(), "Data frame of {data_len} bytes is not whole sectors");
    let payload_len = DATA_FIXED_LEN.checked_add(data_len);
    let Some(payload_len) = payload_len.filter(|n| *n <= MAX_PAYLOAD) else {
        panic!("Data frame of {data_len} bytes exceeds MAX_PAYLOAD");
    };
    put_header(kind::DATA, payload_len, out);
    put_data_fields(seq, offset, flags, out);
}

/// Like [`encode`], but for frames that carry block data (Data, RsData of at least 4 KiB) only the
/// header and fixed fields go into `out`; the data is returned for the caller to send right after it
/// with a vectored write, so block data is never copied into the send buffer.
pub fn encode_split(frame: &Frame, out: &mut BytesMut) -> Option<Bytes> {
    match frame {
        Frame::Data { seq, offset, flags, data }
            if data.len() >= 4096 && check_sectors("Data", data.len()).is_ok() && DATA_FIXED_LEN + data.len() <= MAX_PAYLOAD =>
        {
            encode_data_header(*seq, *offset, *flags, data.len(), out);
            Some(data.clone())
        }
        Frame::RsData { offset, data }
            if data.len() >= 4096 && check_sectors("RsData", data.len()).is_ok() && 8 + data.len() <= MAX_PAYLOAD =>
        {
            put_header(kind::RS_DATA, 8 + data.len(), out);
            out.put_u64_le(*offset);
            Some(data.clone())
        }
        _ => {
            encode(frame, out);
            None
        }
    }
}

// ---- decoding --------------------------------------------------------------------------------------

fn parse_payload(code: u16, payload: Bytes) -> Result<Frame, WireError> {
    use kind::*;
    let name = kind_name(code);
    let mut r = FieldReader::new(payload, name);
    let frame = match code {
        HELLO => Frame::Hello { proto_min: r.u32()?, proto_max: r.u32()?, node: r.str()? },
        AUTH_CHALLENGE => {
            let challenge = r.rest();
            check_exact(name, "challenge", challenge.len(), CHALLENGE_LEN)?;
            Frame::AuthChallenge { challenge }
        }
        AUTH_RESPONSE => {
            let mac = r.rest();
            check_exact(name, "mac", mac.len(), MAC_LEN)?;
            Frame::AuthResponse { mac }
        }
        PARAMS => Frame::Params(Params {
            resource: r.str()?,
            data_size: r.u64()?,
            protocol: r.u8()?,
            after_sb_0pri: r.u8()?,
            after_sb_1pri: r.u8()?,
            after_sb_2pri: r.u8()?,
            rr_conflict: r.u8()?,
            discard_my_data: r.bool()?,
            verify_alg: r.str()?,
        }),
        UUIDS => Frame::Uuids(UuidsMsg {
            current: r.u64()?,
            bitmap: r.u64()?,
            history: [r.u64()?, r.u64()?],
            dirty_bits: r.u64()?,
            flags: r.u64()?,
            role: r.u8()?,
            disk: r.u8()?,
        }),
        STATE => Frame::State { role: r.u8()?, disk: r.u8()?, flags: r.u32()? },
        BITMAP_CHUNK => Frame::BitmapChunk { start_word: r.u64()?, last: r.bool()?, words: r.words()? },
        SYNC_UUID => Frame::SyncUuid { uuid: r.u64()? },
        RESYNC_FINISHED => Frame::ResyncFinished,
        DATA => {
            let (seq, offset, flags) = (r.u64()?, r.u64()?, r.u32()?);
            let data = r.rest();
            check_sectors(name, data.len())?;
            Frame::Data { seq, offset, flags, data }
        }
        WRITE_ACK => Frame::WriteAck { seq: r.u64()? },
        NEG_ACK => Frame::NegAck { seq: r.u64()?, code: r.u32()? },
        FLUSH => Frame::Flush { seq: r.u64()? },
        FLUSH_ACK => Frame::FlushAck { seq: r.u64()?, ok: r.bool()? },
        RS_DATA => {
            let offset = r.u64()?;
            let data = r.rest();
            check_sectors(name, data.len())?;
            Frame::RsData { offset, data }
        }
        RS_ACK => Frame::RsAck { offset: r.u64()?, len: r.u32()?, ok: r.bool()? },
        READ_REQUEST => Frame::ReadRequest { seq: r.u64()?, offset: r.u64()?, len: r.u32()? },
        READ_REPLY => {
            let (seq, ok) = (r.u64()?, r.bool()?);
            let data = r.rest();
            check_read_reply(name, ok, data.len())?;
            Frame::ReadReply { seq, ok, data }
        }
        VERIFY_REQUEST => Frame::VerifyRequest { offset: r.u64()?, len: r.u32()? },
        VERIFY_REPLY => {
            let (offset, len) = (r.u64()?, r.u32()?);
            let digest = r.rest();
            check_digest(name, digest.len())?;
            Frame::VerifyReply { offset, len, digest }
        }
        OUT_OF_SYNC => Frame::OutOfSync { offset: r.u64()?, len: r.u32()? },
        PING => Frame::Ping { nonce: r.u64()? },
        PING_ACK => Frame::PingAck { nonce: r.u64()? },
        OUTDATE => Frame::Outdate,
        OUTDATE_ACK => Frame::OutdateAck { ok: r.bool()? },
        ABORT => Frame::Abort { code: r.u32()?, reason: r.str()? },
        PR_STATE => {
            let seq = r.u64()?;
            let blob = r.rest();
            check_pr_state(name, blob.len())?;
            Frame::PrState { seq, blob }
        }
        PR_ACK => Frame::PrAck { seq: r.u64()?, ok: r.bool()? },
        RESIZE_REQUEST => Frame::ResizeRequest { size: r.u64()?, explicit: r.bool()?, assume_clean: r.bool()? },
        RESIZE_REPLY => Frame::ResizeReply { ok: r.bool()?, size: r.u64()?, capacity: r.u64()?, reason: r.str()? },
        CSUM_REQUEST => Frame::CsumRequest { offset: r.u64()?, len: r.u32()?, alg: r.u8()? },
        CSUM_REPLY => {
            let (offset, len) = (r.u64()?, r.u32()?);
            let digests = r.rest();
            check_csum_digests(name, digests.len())?;
            Frame::CsumReply { offset, len, digests }
        }
        RS_IN_SYNC => Frame::RsInSync { offset: r.u64()?, len: r.u32()? },
        other => return Err(WireError::UnknownKind(other)),
    };
    r.finish()?;
    Ok(frame)
}

/// Checks the header at the start of `buf`: `Ok(None)` if fewer than 12 bytes are there, else the kind
/// code and payload length. Everything a header can get wrong is caught here, before any payload is
/// buffered.
fn parse_header(buf: &[u8]) -> Result<Option<(u16, usize)>, WireError> {
    let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let mut h = header;
    let magic = h.get_u32_le();
    let code = h.get_u16_le();
    let reserved = h.get_u16_le();
    let len = h.get_u32_le();
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if reserved != 0 {
        return Err(WireError::NonZeroReserved(reserved));
    }
    if !(1..=kind::MAX).contains(&code) {
        return Err(WireError::UnknownKind(code));
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(WireError::Oversize { len });
    }
    Ok(Some((code, len)))
}

/// Parse one frame from the start of `buf`. `Ok(None)` means the frame is not complete yet (not an error);
/// otherwise the frame and the number of bytes it occupied. Copies the payload; stream readers should use
/// [`decode`], which does not.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some((code, len)) = parse_header(buf)? else { return Ok(None) };
    let frame_len = HEADER_LEN + len; // len <= MAX_PAYLOAD: no overflow
    let Some(payload) = buf.get(HEADER_LEN..frame_len) else { return Ok(None) };
    let frame = parse_payload(code, Bytes::copy_from_slice(payload))?;
    Ok(Some((frame, frame_len)))
}

/// The kind code and payload length of the frame whose header starts `buf` (`Ok(None)`: fewer than 12
/// bytes). A stream reader uses this to read a large payload straight into a buffer of its choosing
/// (see [`decode_payload`]) instead of growing its stream buffer for every block of data.
pub fn peek_header(buf: &[u8]) -> Result<Option<(u16, usize)>, WireError> {
    parse_header(buf)
}

/// Decode a payload whose header [`peek_header`] already checked; data fields share `payload`'s
/// memory. Applies every rule [`decode`] applies.
pub fn decode_payload(code: u16, payload: Bytes) -> Result<Frame, WireError> {
    parse_payload(code, payload)
}

/// Zero-copy decode from a stream buffer: if a whole frame is at the front of `buf`, removes it and returns
/// it, with its data fields sharing `buf`'s memory. `Ok(None)` = need more bytes; `buf` is then untouched
/// except that capacity for the rest of the announced frame is reserved.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    let Some((code, len)) = parse_header(buf)? else { return Ok(None) };
    let frame_len = HEADER_LEN + len; // len <= MAX_PAYLOAD: no overflow
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    parse_payload(code, payload).map(Some)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
