//! CHAP authentication (RFC 1994; keys per RFC 7143 §12.1.3), one-way and mutual.
//!
//! Algorithms are identified by their IANA PPP numbers (5 = MD5, 6 = SHA-1, 7 = SHA-256, 8 = SHA3-256),
//! which is what open-iscsi and libiscsi use; tgt's private numbering is deliberately not followed
//! (anchors §1.10). The response is H(id ‖ secret ‖ challenge).

use std::fmt;

use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChapError {
    #[error("no acceptable CHAP algorithm offered")]
    NoAlgorithm,
    #[error("malformed binary value")]
    BadEncoding,
    #[error("binary value too long")]
    TooLong,
    #[error("CHAP_N does not name the configured user")]
    WrongUser,
    #[error("CHAP_R does not match")]
    WrongResponse,
    #[error("initiator challenge equals the target's challenge (reflection)")]
    ReflectedChallenge,
    #[error("invalid CHAP_I")]
    BadIdentifier,
    #[error("random number generator failed")]
    Random,
}

/// A CHAP user name and secret. `Debug` never shows the secret, so accounts can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapAccount {
    pub user: String,
    pub secret: String,
}

impl fmt::Debug for ChapAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapAccount")
            .field("user", &self.user)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// CHAP hash algorithm by IANA number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapAlgorithm {
    Md5 = 5,
    Sha1 = 6,
    Sha256 = 7,
    Sha3_256 = 8,
}

/// Every supported algorithm.
pub const ALL_ALGORITHMS: [ChapAlgorithm; 4] = [
    ChapAlgorithm::Md5,
    ChapAlgorithm::Sha1,
    ChapAlgorithm::Sha256,
    ChapAlgorithm::Sha3_256,
];

impl ChapAlgorithm {
    pub fn from_iana(n: u32) -> Option<Self> {
        ALL_ALGORITHMS.into_iter().find(|a| *a as u32 == n)
    }

    pub fn iana(self) -> u8 {
        self as u8
    }

    fn digest_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha1 => 20,
            ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
        }
    }

    /// H(id ‖ secret ‖ challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn run<D: md5::Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
            let mut h = D::new();
            h.update([id]);
            h.update(secret);
            h.update(challenge);
            h.finalize().to_vec()
        }
        match self {
            ChapAlgorithm::Md5 => run::<md5::Md5>(id, secret, challenge),
            ChapAlgorithm::Sha1 => run::<sha1::Sha1>(id, secret, challenge),
            ChapAlgorithm::Sha256 => run::<sha2::Sha256>(id, secret, challenge),
            ChapAlgorithm::Sha3_256 => run::<sha3::Sha3_256>(id, secret, challenge),
        }
    }
}

/// Picks the first algorithm of the initiator's CHAP_A list that the target supports. CHAP_A is a list
/// (anchors §1.10: old LIO broke on lists), and unknown numbers are skipped.
pub fn select_algorithm(offer: &str, supported: &[ChapAlgorithm]) -> Option<ChapAlgorithm> {
    offer
        .split(',')
        .filter_map(|v| v.trim().parse::<u32>().ok())
        .filter_map(ChapAlgorithm::from_iana)
        .find(|a| supported.contains(a))
}

/// Largest binary value accepted (CHAP challenges are short; this bounds decoding work).
pub const MAX_BINARY_LEN: usize = 1024;

/// Decodes a binary value: `0x`/`0X` hex or `0b`/`0B` base64 (RFC 7143 §6.1).
pub fn decode_binary(v: &str) -> Result<Vec<u8>, ChapError> {
    let (prefix, body) = v.split_at_checked(2).ok_or(ChapError::BadEncoding)?;
    let out = match prefix {
        "0x" | "0X" => {
            // An odd number of hex digits is allowed by RFC 7143 §5.1: pad on the left.
            let padded = if body.len() % 2 == 1 {
                format!("0{body}")
            } else {
                body.to_string()
            };
            hex::decode(padded).map_err(|_| ChapError::BadEncoding)?
        }
        "0b" | "0B" => decode_base64(body)?,
        _ => return Err(ChapError::BadEncoding),
    };
    if out.is_empty() {
        return Err(ChapError::BadEncoding);
    }
    if out.len() > MAX_BINARY_LEN {
        return Err(ChapError::TooLong);
    }
    Ok(out)
}

fn decode_base64(s: &str) -> Result<Vec<u8>, ChapError> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 || s.len() > MAX_BINARY_LEN * 2 {
        return Err(ChapError::BadEncoding);
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c).ok_or(ChapError::BadEncoding)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// Encodes bytes as a `0x` hex binary value.
pub fn encode_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// The target's challenge in one CHAP exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapChallenge {
    pub algorithm: ChapAlgorithm,
    pub id: u8,
    pub challenge: Vec<u8>,
}

impl fmt::Debug for ChapChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapChallenge")
            .field("algorithm", &self.algorithm)
            .field("id", &self.id)
            .finish()
    }
}

impl ChapChallenge {
    /// A fresh random identifier and challenge (as long as the digest, at least 16 bytes).
    pub fn generate(algorithm: ChapAlgorithm) -> Result<Self, ChapError> {
        let mut challenge = vec![0u8; algorithm.digest_len().max(16)];
        let mut id = [0u8; 1];
        getrandom::fill(&mut challenge).map_err(|_| ChapError::Random)?;
        getrandom::fill(&mut id).map_err(|_| ChapError::Random)?;
        Ok(ChapChallenge {
            algorithm,
            id: id[0],
            challenge,
        })
    }

    /// The keys the target sends: CHAP_A, CHAP_I, CHAP_C.
    pub fn keys(&self) -> Vec<(String, String)> {
        vec![
            ("CHAP_A".into(), self.algorithm.iana().to_string()),
            ("CHAP_I".into(), self.id.to_string()),
            ("CHAP_C".into(), encode_hex(&self.challenge)),
        ]
    }

    /// Checks the initiator's CHAP_N/CHAP_R against `account`, comparing in constant time.
    pub fn verify(
        &self,
        account: &ChapAccount,
        name: &str,
        response: &str,
    ) -> Result<(), ChapError> {
        let got = decode_binary(response)?;
        let expected = self
            .algorithm
            .response(self.id, account.secret.as_bytes(), &self.challenge);
        // Both checks always run so timing does not reveal which one failed.
        let name_ok = name.as_bytes().ct_eq(account.user.as_bytes());
        let resp_ok = got.as_slice().ct_eq(expected.as_slice());
        if bool::from(resp_ok & name_ok) {
            Ok(())
        } else if !bool::from(name_ok) {
            Err(ChapError::WrongUser)
        } else {
            Err(ChapError::WrongResponse)
        }
    }

    /// Mutual CHAP: answers the initiator's CHAP_I/CHAP_C with the target's account.
    /// Returns the CHAP_N and CHAP_R values. A challenge equal to ours is refused (reflection attack).
    pub fn answer_initiator(
        &self,
        account: &ChapAccount,
        initiator_id: &str,
        initiator_challenge: &str,
    ) -> Result<(String, String), ChapError> {
        let id: u8 = initiator_id
            .trim()
            .parse()
            .map_err(|_| ChapError::BadIdentifier)?;
        let challenge = decode_binary(initiator_challenge)?;
        if bool::from(challenge.as_slice().ct_eq(self.challenge.as_slice())) {
            return Err(ChapError::ReflectedChallenge);
        }
        let r = self
            .algorithm
            .response(id, account.secret.as_bytes(), &challenge);
        Ok((account.user.clone(), encode_hex(&r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ChapAccount {
        ChapAccount {
            user: "user1".into(),
            secret: "12charsecret".into(),
        }
    }

    #[test]
    fn debug_hides_secret() {
        let s = format!("{:?}", account());
        assert!(s.contains("user1") && !s.contains("12charsecret"));
    }

    #[test]
    fn md5_matches_rfc1321_style_vector() {
        // With an empty secret and challenge, MD5(id=0x61 'a') is RFC 1321's MD5("a").
        let r = ChapAlgorithm::Md5.response(b'a', b"", b"");
        assert_eq!(hex::encode(r), "0cc175b9c0f1b6a831c399e269772661");
        // SHA-256("abc") split as id 'a' + secret "b" + challenge "c" (FIPS 180-2 vector).
        let r = ChapAlgorithm::Sha256.response(b'a', b"b", b"c");
        assert_eq!(
            hex::encode(r),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let r = ChapAlgorithm::Sha1.response(b'a', b"b", b"c");
        assert_eq!(hex::encode(r), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let r = ChapAlgorithm::Sha3_256.response(b'a', b"b", b"c");
        assert_eq!(
            hex::encode(r),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
    }

    #[test]
    fn algorithm_selection_by_iana_number() {
        assert_eq!(
            select_algorithm("5", &ALL_ALGORITHMS),
            Some(ChapAlgorithm::Md5)
        );
        assert_eq!(
            select_algorithm("7,5", &ALL_ALGORITHMS),
            Some(ChapAlgorithm::Sha256)
        );
        assert_eq!(
            select_algorithm("8,7,6,5", &[ChapAlgorithm::Md5]),
            Some(ChapAlgorithm::Md5)
        );
        assert_eq!(
            select_algorithm("99,6", &ALL_ALGORITHMS),
            Some(ChapAlgorithm::Sha1)
        );
        assert_eq!(select_algorithm("4", &ALL_ALGORITHMS), None);
        assert_eq!(select_algorithm("x", &ALL_ALGORITHMS), None);
    }

    #[test]
    fn binary_encodings() {
        assert_eq!(decode_binary("0x0102ff").unwrap(), vec![1, 2, 255]);
        assert_eq!(decode_binary("0X102").unwrap(), vec![1, 2]);
        assert_eq!(decode_binary("0bAQL/").unwrap(), vec![1, 2, 255]);
        assert_eq!(decode_binary("0bAQI=").unwrap(), vec![1, 2]);
        assert_eq!(decode_binary("0bAQ==").unwrap(), vec![1]);
        assert_eq!(decode_binary("0bSGVsbG8").unwrap(), b"Hello".to_vec());
        assert_eq!(decode_binary("0x"), Err(ChapError::BadEncoding));
        assert_eq!(decode_binary("0xzz"), Err(ChapError::BadEncoding));
        assert_eq!(decode_binary("0b!!!!"), Err(ChapError::BadEncoding));
        assert_eq!(decode_binary("0bA"), Err(ChapError::BadEncoding));
        assert_eq!(decode_binary("1234"), Err(ChapError::BadEncoding));
        assert_eq!(decode_binary("é"), Err(ChapError::BadEncoding));
        assert_eq!(
            decode_binary(&format!("0x{}", "00".repeat(MAX_BINARY_LEN + 1))),
            Err(ChapError::TooLong)
        );
    }

    #[test]
    fn one_way_verification() {
        let c = ChapChallenge::generate(ChapAlgorithm::Md5).unwrap();
        let good = encode_hex(&ChapAlgorithm::Md5.response(c.id, b"12charsecret", &c.challenge));
        assert_eq!(c.verify(&account(), "user1", &good), Ok(()));
        let wrong = encode_hex(&ChapAlgorithm::Md5.response(c.id, b"wrongsecret!", &c.challenge));
        assert_eq!(
            c.verify(&account(), "user1", &wrong),
            Err(ChapError::WrongResponse)
        );
        assert_eq!(
            c.verify(&account(), "user2", &good),
            Err(ChapError::WrongUser)
        );
        assert_eq!(
            c.verify(&account(), "user1", "nothex"),
            Err(ChapError::BadEncoding)
        );
        let keys = c.keys();
        assert_eq!(keys[0], ("CHAP_A".to_string(), "5".to_string()));
    }

    #[test]
    fn mutual_answer_and_reflection() {
        let c = ChapChallenge::generate(ChapAlgorithm::Sha256).unwrap();
        let target = ChapAccount {
            user: "tgt".into(),
            secret: "othersecret1".into(),
        };
        let (n, r) = c.answer_initiator(&target, "7", "0x00112233").unwrap();
        assert_eq!(n, "tgt");
        let expected = ChapAlgorithm::Sha256.response(7, b"othersecret1", &[0, 0x11, 0x22, 0x33]);
        assert_eq!(decode_binary(&r).unwrap(), expected);
        let reflected = encode_hex(&c.challenge);
        assert_eq!(
            c.answer_initiator(&target, "7", &reflected),
            Err(ChapError::ReflectedChallenge)
        );
        assert_eq!(
            c.answer_initiator(&target, "300", "0x01"),
            Err(ChapError::BadIdentifier)
        );
    }
}
