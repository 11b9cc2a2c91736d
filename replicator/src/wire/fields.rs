//! Field readers and writers shared by the frame codec (`frame.rs`): every read checks the remaining
//! length first, strings are length-prefixed UTF-8 of at most [`MAX_STR`] bytes.

use super::frame::{bad_length, WireError, MAX_STR};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Writes a string field. Strings longer than [`MAX_STR`] (an over-long abort reason, say) are cut at a
/// character boundary rather than refused: the text is informational and the cut keeps it valid UTF-8.
pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    let mut n = s.len().min(MAX_STR);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    let cut = s.get(..n).unwrap_or_default();
    // `n <= MAX_STR` so it fits a u16.
    out.put_u16_le(n as u16);
    out.put_slice(cut.as_bytes());
}

pub(crate) fn put_bool(out: &mut BytesMut, b: bool) {
    out.put_u8(u8::from(b));
}

/// Reads fields off a payload; every read checks the remaining length first.
pub(crate) struct FieldReader {
    rest: Bytes,
    total: usize,
    kind: &'static str,
}

impl FieldReader {
    pub(crate) fn new(payload: Bytes, kind: &'static str) -> Self {
        FieldReader { total: payload.len(), rest: payload, kind }
    }
    pub(crate) fn need(&self, n: usize) -> Result<(), WireError> {
        if self.rest.len() < n {
            let consumed = self.total - self.rest.len();
            return Err(WireError::Truncated { kind: self.kind, need: consumed.saturating_add(n), have: self.total });
        }
        Ok(())
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.rest.get_u8())
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2)?;
        Ok(self.rest.get_u16_le())
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.rest.get_u32_le())
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.rest.get_u64_le())
    }
    pub(crate) fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(bad_length(self.kind, format!("boolean byte is {v}, must be 0 or 1"))),
        }
    }
    pub(crate) fn str(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u16()?);
        if n > MAX_STR {
            return Err(WireError::BadString { kind: self.kind });
        }
        self.need(n)?;
        let raw = self.rest.split_to(n);
        std::str::from_utf8(&raw).map(str::to_owned).map_err(|_| WireError::BadString { kind: self.kind })
    }
    /// The remainder of the payload, zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }
    pub(crate) fn words(&mut self) -> Result<Vec<u64>, WireError> {
        let n = self.rest.len();
        if !n.is_multiple_of(8) {
            return Err(bad_length(self.kind, format!("{n} bytes of bitmap words is not a multiple of 8")));
        }
        // Capacity comes from the payload we already hold, which the header check capped.
        let mut words = Vec::with_capacity(n / 8);
        while self.rest.has_remaining() {
            words.push(self.u64()?);
        }
        Ok(words)
    }
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes { kind: self.kind, extra: self.rest.len() })
        }
    }
}

