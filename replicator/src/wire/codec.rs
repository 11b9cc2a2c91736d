//! tokio-util codec over [`frame`](super::frame), so the engine can wrap a TCP stream in
//! `FramedRead`/`FramedWrite`. Decoding is zero-copy: data payloads are slices of the read buffer.

use super::frame::{Frame, WireError, decode, try_encode};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Stateless: all framing state lives in the stream buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        decode(src)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    /// Refuses (rather than panics on) a frame the peer would reject; see [`try_encode`].
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        try_encode(&item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello { proto_min: 1, proto_max: 1, node: "a".into() },
            Frame::Data { seq: 1, offset: 0, flags: 0, data: Bytes::from(vec![1u8; 512]) },
            Frame::Ping { nonce: 2 },
            Frame::BitmapChunk { start_word: 0, words: vec![7; 100], last: true },
        ]
    }

    #[test]
    fn byte_at_a_time_yields_the_same_frames() {
        let mut wire = BytesMut::new();
        for f in frames() {
            FrameCodec.encode(f, &mut wire).unwrap();
        }
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            src.extend_from_slice(&[*b]);
            while let Some(f) = FrameCodec.decode(&mut src).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames());
        assert!(src.is_empty());
        assert!(FrameCodec.decode_eof(&mut src).unwrap().is_none());
    }

    #[test]
    fn encoder_refuses_invalid_frames_and_eof_mid_frame_is_an_error() {
        let mut dst = BytesMut::new();
        let bad = Frame::AuthResponse { mac: Bytes::from_static(b"short") };
        assert!(matches!(FrameCodec.encode(bad, &mut dst), Err(WireError::BadLength { .. })));
        assert!(dst.is_empty());
        FrameCodec.encode(Frame::Ping { nonce: 1 }, &mut dst).unwrap();
        dst.truncate(dst.len() - 1);
        assert!(matches!(FrameCodec.decode_eof(&mut dst), Err(WireError::Io(_))));
    }
}
