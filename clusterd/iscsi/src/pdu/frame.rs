//! Framing: cutting whole PDUs out of a receive buffer, and encoding PDUs for a vectored send.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::{BHS_LEN, DIGEST_LEN, MAX_DATA_SEGMENT_LEN, Pdu, PduError, bhs_lengths, pad_len};

/// Which digests are in force on a connection. Both are off during login and switch on (if negotiated)
/// with the first PDU of the full feature phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestConfig {
    pub header: bool,
    pub data: bool,
}

/// One received PDU. `data` is a zero-copy view into the receive buffer, without padding or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pdu: Pdu,
    /// The raw BHS, kept because a Reject must echo the rejected header.
    pub bhs: [u8; BHS_LEN],
    pub ahs: Bytes,
    pub data: Bytes,
}

fn crc(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0u32, |acc, p| crc32c::crc32c_append(acc, p))
}

const ZERO_PAD: [u8; 3] = [0; 3];

/// Tries to cut one PDU from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (after reserving room for the rest of the PDU, which is
/// bounded because the length is checked against `max_data_len` first). On success the PDU's bytes are
/// removed from `buf`. A digest mismatch also consumes the PDU; at ERL 0 the caller fails the connection.
pub fn decode_frame(
    buf: &mut BytesMut,
    digests: DigestConfig,
    max_data_len: u32,
) -> Result<Option<Frame>, PduError> {
    let Some(head) = buf.get(..BHS_LEN) else {
        return Ok(None);
    };
    let mut bhs = [0u8; BHS_LEN];
    bhs.copy_from_slice(head);
    let lengths = bhs_lengths(&bhs);
    let limit = max_data_len.min(MAX_DATA_SEGMENT_LEN);
    if lengths.data_len > limit {
        return Err(PduError::DataSegmentTooLong {
            len: lengths.data_len,
            limit,
        });
    }
    let data_len = lengths.data_len as usize;
    let header_len = BHS_LEN + lengths.ahs_len + if digests.header { DIGEST_LEN } else { 0 };
    let data_total = if data_len == 0 {
        0
    } else {
        data_len + pad_len(data_len) + if digests.data { DIGEST_LEN } else { 0 }
    };
    let total = header_len + data_total;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut pdu_bytes = buf.split_to(total).freeze();
    if digests.header {
        let covered = BHS_LEN + lengths.ahs_len;
        let got = be32_at(&pdu_bytes, covered);
        let computed = crc(&[&pdu_bytes[..covered]]);
        if got != computed {
            return Err(PduError::HeaderDigest { got, computed });
        }
    }
    let pdu = Pdu::from_bhs(&bhs)?;
    let ahs = pdu_bytes.slice(BHS_LEN..BHS_LEN + lengths.ahs_len);
    pdu_bytes.advance(header_len);
    let data = pdu_bytes.slice(..data_len);
    if digests.data && data_len > 0 {
        let padded = data_len + pad_len(data_len);
        let got = be32_at(&pdu_bytes, padded);
        let computed = crc(&[&pdu_bytes[..padded]]);
        if got != computed {
            return Err(PduError::DataDigest { got, computed });
        }
    }
    Ok(Some(Frame {
        pdu,
        bhs,
        ahs,
        data,
    }))
}

/// The header of a Data-Out PDU at the front of `buf` whose data segment (`.1` bytes, at least `min`)
/// may be read by the caller straight into the command's buffer instead of through [`decode_frame`]:
/// the BHS is complete, there is no AHS and no digest (those PDUs take the ordinary path), and the
/// length is within the negotiated limit. The BHS is still in `buf`; padding follows the segment.
pub fn peek_data_out(
    buf: &[u8],
    digests: DigestConfig,
    max_data_len: u32,
    min: u32,
) -> Option<(super::DataOut, u32)> {
    let head = buf.get(..BHS_LEN)?;
    if head[0] & 0x3f != super::opcode::DATA_OUT || digests.header || digests.data {
        return None;
    }
    let mut bhs = [0u8; BHS_LEN];
    bhs.copy_from_slice(head);
    let lengths = bhs_lengths(&bhs);
    let limit = max_data_len.min(MAX_DATA_SEGMENT_LEN);
    if lengths.ahs_len != 0 || lengths.data_len < min || lengths.data_len > limit {
        return None;
    }
    match Pdu::from_bhs(&bhs) {
        Ok(Pdu::DataOut(d)) => Some((d, lengths.data_len)),
        _ => None,
    }
}

fn be32_at(b: &[u8], at: usize) -> u32 {
    // Callers guarantee `at + 4 <= b.len()` from the length computation above.
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(v)
}

/// An encoded PDU ready for a vectored write: header (BHS + header digest), the caller's data segment
/// untouched, and a trailer with padding and data digest.
#[derive(Debug, Clone)]
pub struct OutgoingPdu {
    pub header: Bytes,
    pub data: Bytes,
    trailer: [u8; 8],
    trailer_len: usize,
}

impl OutgoingPdu {
    /// The padding and data digest that follow the data segment.
    pub fn trailer(&self) -> &[u8] {
        &self.trailer[..self.trailer_len]
    }

    /// Total number of bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.header.len() + self.data.len() + self.trailer_len
    }

    /// The three parts as I/O slices for `write_vectored`.
    pub fn io_slices(&self) -> [IoSlice<'_>; 3] {
        [
            IoSlice::new(&self.header),
            IoSlice::new(&self.data),
            IoSlice::new(self.trailer()),
        ]
    }

    /// Concatenates the parts; for tests and for small control PDUs only.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.wire_len());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.data);
        v.extend_from_slice(self.trailer());
        v
    }
}

/// Encodes `pdu` with its data segment. No AHS is ever sent by this target.
pub fn encode(pdu: &Pdu, data: Bytes, digests: DigestConfig) -> Result<OutgoingPdu, PduError> {
    let data_len = u32::try_from(data.len())
        .ok()
        .filter(|l| *l <= MAX_DATA_SEGMENT_LEN)
        .ok_or(PduError::DataSegmentTooLong {
            len: u32::MAX,
            limit: MAX_DATA_SEGMENT_LEN,
        })?;
    let bhs = pdu.to_bhs(0, data_len);
    let mut header = BytesMut::with_capacity(BHS_LEN + DIGEST_LEN);
    header.extend_from_slice(&bhs);
    if digests.header {
        header.extend_from_slice(&crc(&[&bhs]).to_be_bytes());
    }
    let mut trailer = [0u8; 8];
    let mut trailer_len = 0;
    if !data.is_empty() {
        let pad = pad_len(data.len());
        trailer_len = pad;
        if digests.data {
            let d = crc(&[&data, &ZERO_PAD[..pad]]);
            trailer[pad..pad + DIGEST_LEN].copy_from_slice(&d.to_be_bytes());
            trailer_len += DIGEST_LEN;
        }
    }
    Ok(OutgoingPdu {
        header: header.freeze(),
        data,
        trailer,
        trailer_len,
    })
}
