//! Text key=value encoding (RFC 7143 §6.1): NUL-terminated `key=value` pairs.

/// Longest key name (RFC 7143 §6.1: "key-name ... 63 bytes").
pub const MAX_KEY_LEN: usize = 63;
/// Default limit for a value (RFC 7143 §6.1 says 255 bytes unless a key's definition allows more).
pub const MAX_VALUE_LEN: usize = 255;
/// Limit for keys carrying large binary values (CHAP challenges/responses, §12.1.3) and TargetAddress
/// lists; generous enough for a 1024-byte challenge in base64 or hex.
pub const MAX_LARGE_VALUE_LEN: usize = 8192;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    #[error("text segment is not NUL-terminated")]
    Unterminated,
    #[error("pair without '=': {0:?}")]
    MissingEquals(String),
    #[error("empty or malformed key")]
    BadKey,
    #[error("key longer than {MAX_KEY_LEN} bytes")]
    KeyTooLong,
    #[error("value of key {0} too long")]
    ValueTooLong(String),
    #[error("key {0} appears twice")]
    DuplicateKey(String),
    #[error("text is not valid UTF-8")]
    NotUtf8,
}

fn value_limit(key: &str) -> usize {
    if key.starts_with("CHAP_") || key == "TargetAddress" {
        MAX_LARGE_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

fn key_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_')
}

/// Parses a complete text segment into ordered pairs. Padding NULs after the last pair are ignored.
pub fn parse_text(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let trimmed_len = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    if trimmed_len == 0 {
        return Ok(pairs);
    }
    if trimmed_len == data.len() {
        return Err(TextError::Unterminated);
    }
    for item in data[..trimmed_len].split(|b| *b == 0) {
        let eq = item
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| TextError::MissingEquals(String::from_utf8_lossy(item).into_owned()))?;
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        if k.is_empty() || !k.iter().all(|c| key_char_ok(*c)) {
            return Err(TextError::BadKey);
        }
        if k.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong);
        }
        let key = std::str::from_utf8(k)
            .map_err(|_| TextError::BadKey)?
            .to_owned();
        if v.len() > value_limit(&key) {
            return Err(TextError::ValueTooLong(key));
        }
        let value = std::str::from_utf8(v)
            .map_err(|_| TextError::NotUtf8)?
            .to_owned();
        if pairs.iter().any(|(existing, _)| *existing == key) {
            return Err(TextError::DuplicateKey(key));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Encodes pairs as `key=value\0...`.
pub fn encode_text<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_in_order() {
        let p = parse_text(b"InitiatorName=iqn.x\0SessionType=Normal\0\0\0").unwrap();
        assert_eq!(
            p,
            vec![
                ("InitiatorName".into(), "iqn.x".into()),
                ("SessionType".into(), "Normal".into())
            ]
        );
        assert_eq!(
            encode_text(&p),
            b"InitiatorName=iqn.x\0SessionType=Normal\0".to_vec()
        );
    }

    #[test]
    fn empty_value_allowed() {
        assert_eq!(
            parse_text(b"SendTargets=\0").unwrap(),
            vec![("SendTargets".into(), String::new())]
        );
        assert_eq!(parse_text(b"").unwrap(), vec![]);
        assert_eq!(parse_text(b"\0\0").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_text(b"A=b"), Err(TextError::Unterminated));
        assert!(matches!(
            parse_text(b"Ab\0"),
            Err(TextError::MissingEquals(_))
        ));
        assert_eq!(parse_text(b"=x\0"), Err(TextError::BadKey));
        assert_eq!(parse_text(b"A b=x\0"), Err(TextError::BadKey));
        assert_eq!(
            parse_text(b"A=1\0A=2\0"),
            Err(TextError::DuplicateKey("A".into()))
        );
        let long_key = format!("{}=1\0", "K".repeat(64));
        assert_eq!(parse_text(long_key.as_bytes()), Err(TextError::KeyTooLong));
        let long_val = format!("K={}\0", "v".repeat(256));
        assert_eq!(
            parse_text(long_val.as_bytes()),
            Err(TextError::ValueTooLong("K".into()))
        );
        let chap = format!("CHAP_C=0x{}\0", "ab".repeat(200));
        assert!(parse_text(chap.as_bytes()).is_ok());
        assert_eq!(parse_text(b"K=\xff\0"), Err(TextError::NotUtf8));
    }
}
