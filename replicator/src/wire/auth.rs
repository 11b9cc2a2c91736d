//! Peer authentication: DRBD-style symmetric HMAC-SHA1 challenge/response (replication-anchors §1.14).
//!
//! Both sides send a random 64-byte challenge at once and each answers the other's with
//! `HMAC-SHA1(secret, challenge ‖ responder's node name)`. Differences from DRBD 8.4, on purpose:
//! - the responder's name is bound into the MAC, so a node cannot get its own challenge answered by
//!   bouncing it back to us (DRBD 9 does the same with the node id);
//! - a peer challenge equal to ours is refused (reflection defence, as DRBD);
//! - the comparison is constant time (DRBD uses `memcmp`).
//!
//! It proves both sides know the secret; it does not protect the traffic that follows.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::fmt;
use subtle::ConstantTimeEq;

pub const CHALLENGE_LEN: usize = super::frame::CHALLENGE_LEN;
pub const MAC_LEN: usize = super::frame::MAC_LEN;
/// DRBD's limit for `shared-secret` (`SHARED_SECRET_MAX`).
pub const SECRET_MAX: usize = 64;

type HmacSha1 = Hmac<Sha1>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("shared secret is empty")]
    EmptySecret,
    #[error("shared secret is {0} bytes; at most {SECRET_MAX} are allowed")]
    SecretTooLong(usize),
    #[error("peer presented the same challenge as ours (reflection attempt)")]
    ReflectedChallenge,
    #[error("peer challenge has {0} bytes, expected {CHALLENGE_LEN}")]
    BadChallengeLength(usize),
    #[error("peer's authentication response does not match (different shared secret?)")]
    BadResponse,
}

/// A shared secret. Its `Debug` output never shows the bytes, so it can sit in logged config structs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Accepts 1 to [`SECRET_MAX`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Secret, AuthError> {
        if bytes.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        if bytes.len() > SECRET_MAX {
            return Err(AuthError::SecretTooLong(bytes.len()));
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Constant time, so comparing configs cannot leak the secret through timing either.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

/// 64 bytes from the operating system's random generator.
///
/// # Panics
/// If the OS generator fails: there is no safe fallback for an authentication nonce.
pub fn new_challenge() -> [u8; CHALLENGE_LEN] {
    let mut challenge = [0u8; CHALLENGE_LEN];
    if let Err(e) = getrandom::fill(&mut challenge) {
        panic!("the operating system's random generator failed: {e}");
    }
    challenge
}

/// HMAC-SHA1 keyed with `key` over the concatenation of `parts`, unfinalized (so `verify` can compare in
/// constant time).
fn hmac_over(key: &[u8], parts: &[&[u8]]) -> HmacSha1 {
    let mac = <HmacSha1 as KeyInit>::new_from_slice(key);
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let Ok(mut mac) = mac else { unreachable!("HMAC accepts any key length") };
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMAC-SHA1(key, parts concatenated).
fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    hmac_over(key, parts).finalize().into_bytes().into()
}

/// Our answer to the peer's challenge: HMAC-SHA1(secret, challenge ‖ our node name).
pub fn respond(secret: &Secret, peer_challenge: &[u8], responder: &str) -> [u8; MAC_LEN] {
    hmac_sha1(&secret.0, &[peer_challenge, responder.as_bytes()])
}

/// Checks the peer's answer to our challenge, in constant time. `peer_name` is the name the peer gave in
/// its `Hello`, which it must have bound into the MAC.
pub fn verify(secret: &Secret, my_challenge: &[u8], peer_name: &str, peer_mac: &[u8]) -> Result<(), AuthError> {
    hmac_over(&secret.0, &[my_challenge, peer_name.as_bytes()]).verify_slice(peer_mac).map_err(|_| AuthError::BadResponse)
}

/// Refuses a peer challenge of the wrong size or equal to ours (a peer replaying our own challenge to
/// get us to compute the answer for it).
pub fn check_peer_challenge(mine: &[u8], theirs: &[u8]) -> Result<(), AuthError> {
    if theirs.len() != CHALLENGE_LEN {
        return Err(AuthError::BadChallengeLength(theirs.len()));
    }
    if bool::from(mine.ct_eq(theirs)) {
        return Err(AuthError::ReflectedChallenge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc2202_hmac_sha1_vectors() {
        // Test case 1: key = 20 × 0x0b, data = "Hi There".
        assert_eq!(hex(&hmac_sha1(&[0x0b; 20], &[b"Hi There"])), "b617318655057264e28bc0b6fb378c8ef146be00");
        // Test case 2, with the data split in two parts to check concatenation.
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn right_secret_verifies_wrong_does_not() {
        let secret = Secret::new(b"password".to_vec()).unwrap();
        let wrong = Secret::new(b"passw0rd".to_vec()).unwrap();
        let challenge = new_challenge();
        let answer = respond(&secret, &challenge, "node2");
        assert_eq!(verify(&secret, &challenge, "node2", &answer), Ok(()));
        let forged = respond(&wrong, &challenge, "node2");
        assert_eq!(verify(&secret, &challenge, "node2", &forged), Err(AuthError::BadResponse));
        assert_eq!(verify(&secret, &challenge, "node2", &answer[..19]), Err(AuthError::BadResponse));
        assert_eq!(verify(&secret, &new_challenge(), "node2", &answer), Err(AuthError::BadResponse));
    }

    #[test]
    fn response_for_another_node_name_is_refused() {
        let secret = Secret::new(b"password".to_vec()).unwrap();
        let challenge = new_challenge();
        // What node1 would answer; replayed by someone claiming to be node2.
        let reflected = respond(&secret, &challenge, "node1");
        assert_eq!(verify(&secret, &challenge, "node2", &reflected), Err(AuthError::BadResponse));
    }

    #[test]
    fn reflected_or_misfit_challenge_refused() {
        let mine = new_challenge();
        let theirs = new_challenge();
        assert_ne!(mine, theirs);
        assert_eq!(check_peer_challenge(&mine, &mine), Err(AuthError::ReflectedChallenge));
        assert_eq!(check_peer_challenge(&mine, &mine[..10]), Err(AuthError::BadChallengeLength(10)));
        assert_eq!(check_peer_challenge(&mine, &[0u8; 128]), Err(AuthError::BadChallengeLength(128)));
        assert_eq!(check_peer_challenge(&mine, &theirs), Ok(()));
    }

    #[test]
    fn secret_is_redacted_and_bounded() {
        let secret = Secret::new(b"topsecret".to_vec()).unwrap();
        let shown = format!("{secret:?} {:?}", Some(secret.clone()));
        assert!(!shown.contains("topsecret") && !shown.contains("116"), "{shown}");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(Secret::new(vec![1; SECRET_MAX + 1]), Err(AuthError::SecretTooLong(65)));
        assert_eq!(Secret::new(Vec::new()), Err(AuthError::EmptySecret));
        assert!(Secret::new(vec![1; SECRET_MAX]).is_ok());
        assert_ne!(secret, Secret::new(b"topsecreT".to_vec()).unwrap());
    }
}
