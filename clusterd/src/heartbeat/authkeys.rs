//! The heartbeat key file, in the format of Linux-HA Heartbeat's `authkeys`:
//!
//! ```text
//! # comment
//! auth 2            <- key id used to SIGN outgoing packets
//! 1 sha1 old-secret <- every listed id is ACCEPTED on receive,
//! 2 sha1 new-secret    so keys can be rolled one node at a time
//! ```
//!
//! Only `sha1` (HMAC-SHA1) is accepted: Heartbeat's `crc` gives no authentication and `md5` is not
//! worth carrying. Ids are 1..=255 (the envelope's key-id byte; 0 is reserved so a zeroed packet
//! never names a key). The secret is the rest of the line after the method, trimmed, so it may
//! contain spaces or `#`; only whole lines starting with `#` are comments.
//!
//! The file is refused unless only its owner can access it (stricter than Heartbeat, which only
//! refuses group/other *read*), and it must belong to root or to us, as
//! `config::secret::read_secret_file` does for the replication secret. Secrets never appear in
//! errors, logs or `Debug` output: errors name the file and the line number only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest key file read; a real one is a few lines.
const MAX_FILE_LEN: u64 = 64 * 1024;
/// Longest accepted secret in bytes.
pub const MAX_SECRET_LEN: usize = 1024;

/// Why the key file was refused. Every variant names the file; none carries secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum AuthKeysError {
    #[error("heartbeat key file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read heartbeat key file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("heartbeat key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("heartbeat key file {path} has mode {mode:04o}; group/other permissions are refused (chmod 600 it)")]
    Mode { path: PathBuf, mode: u32 },
    #[error("heartbeat key file {path} is owned by uid {owner}; it must be owned by root or by uid {ours}")]
    Owner { path: PathBuf, owner: u32, ours: u32 },
    #[error("heartbeat key file {path} is larger than {MAX_FILE_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("heartbeat key file {path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("heartbeat key file {path}, line {line}: {problem}")]
    Syntax {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("heartbeat key file {path}, line {line}: method {method:?} is not supported (only sha1)")]
    UnsupportedMethod { path: PathBuf, line: usize, method: String },
    #[error("heartbeat key file {path}, line {line}: key id {id} is listed twice")]
    DuplicateKey { path: PathBuf, line: usize, id: u8 },
    #[error("heartbeat key file {path} has no `auth N` line naming the key to send with")]
    NoAuthLine { path: PathBuf },
    #[error("heartbeat key file {path}: `auth {id}` names a key id that is not listed")]
    SendKeyNotListed { path: PathBuf, id: u8 },
}

/// One secret. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
struct KeySecret(Vec<u8>);

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// The loaded key file: the id used to send and every id accepted on receive.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKeys {
    send_id: u8,
    keys: BTreeMap<u8, KeySecret>,
}

impl fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKeys")
            .field("send_id", &self.send_id)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AuthKeys {
    /// Reads and checks the key file (see the module docs for format and permission rules).
    pub fn load(path: &Path) -> Result<AuthKeys, AuthKeysError> {
        let text = read_private_file(path)?;
        AuthKeys::parse(&text, path)
    }

    /// Parses key-file text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AuthKeys, AuthKeysError> {
        let syntax = |line: usize, problem: &str| AuthKeysError::Syntax {
            path: path.to_path_buf(),
            line,
            problem: problem.to_string(),
        };
        let mut send_id = None;
        let mut keys = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (first, rest) = split_word(line);
            if first == "auth" {
                if send_id.is_some() {
                    return Err(syntax(line_no, "second `auth` line"));
                }
                let (id, extra) = split_word(rest);
                if !extra.is_empty() {
                    return Err(syntax(line_no, "`auth` takes exactly one key id"));
                }
                send_id = Some(parse_id(id).ok_or_else(|| syntax(line_no, "`auth` needs a key id 1..=255"))?);
                continue;
            }
            let id = parse_id(first)
                .ok_or_else(|| syntax(line_no, "expected `auth N` or `N sha1 SECRET` with N in 1..=255"))?;
            let (method, secret) = split_word(rest);
            if method.is_empty() {
                return Err(syntax(line_no, "missing method (expected `N sha1 SECRET`)"));
            }
            if method != "sha1" {
                return Err(AuthKeysError::UnsupportedMethod {
                    path: path.to_path_buf(),
                    line: line_no,
                    method: method.to_string(),
                });
            }
            if secret.is_empty() {
                return Err(syntax(line_no, "sha1 needs a secret"));
            }
            if secret.len() > MAX_SECRET_LEN {
                return Err(syntax(line_no, "secret is longer than 1024 bytes"));
            }
            if keys.insert(id, KeySecret(secret.as_bytes().to_vec())).is_some() {
                return Err(AuthKeysError::DuplicateKey {
                    path: path.to_path_buf(),
                    line: line_no,
                    id,
                });
            }
        }
        let send_id = send_id.ok_or_else(|| AuthKeysError::NoAuthLine {
            path: path.to_path_buf(),
        })?;
        if !keys.contains_key(&send_id) {
            return Err(AuthKeysError::SendKeyNotListed {
                path: path.to_path_buf(),
                id: send_id,
            });
        }
        Ok(AuthKeys { send_id, keys })
    }

    /// Builds a key set directly (tests, or keys that come from elsewhere). Same rules as the file:
    /// ids 1..=255, non-empty secrets, `send_id` listed.
    pub fn from_keys(send_id: u8, keys: impl IntoIterator<Item = (u8, Vec<u8>)>) -> Result<AuthKeys, AuthKeysError> {
        let origin = PathBuf::from("<in-memory keys>");
        let mut map = BTreeMap::new();
        for (id, secret) in keys {
            if id == 0 || secret.is_empty() || secret.len() > MAX_SECRET_LEN {
                return Err(AuthKeysError::Syntax {
                    path: origin,
                    line: 0,
                    problem: format!("key id {id}: ids are 1..=255 and secrets 1..={MAX_SECRET_LEN} bytes"),
                });
            }
            if map.insert(id, KeySecret(secret)).is_some() {
                return Err(AuthKeysError::DuplicateKey {
                    path: origin,
                    line: 0,
                    id,
                });
            }
        }
        if !map.contains_key(&send_id) {
            return Err(AuthKeysError::SendKeyNotListed {
                path: origin,
                id: send_id,
            });
        }
        Ok(AuthKeys { send_id, keys: map })
    }

    /// The key id and secret used to sign outgoing packets.
    pub fn send_key(&self) -> (u8, &[u8]) {
        let key = self.keys.get(&self.send_id);
        // Constructors guarantee the send id is listed.
        assert!(key.is_some(), "send key id {} not in key set", self.send_id);
        (self.send_id, key.map(|k| k.0.as_slice()).unwrap_or_default())
    }

    /// The secret for a received packet's key id, if that id is accepted.
    pub fn key(&self, id: u8) -> Option<&[u8]> {
        self.keys.get(&id).map(|k| k.0.as_slice())
    }

    /// Every accepted key id, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.keys().copied()
    }
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], s[at..].trim()),
        None => (s, ""),
    }
}

fn parse_id(word: &str) -> Option<u8> {
    // u8::from_str would accept "+1"; only plain digits are a key id.
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse::<u8>().ok().filter(|&id| id != 0)
}

/// Opens the file and checks type, mode and owner on the opened descriptor, so the checks describe
/// exactly what is read. O_NONBLOCK keeps a FIFO from hanging the daemon (then refused as not a file).
fn read_private_file(path: &Path) -> Result<String, AuthKeysError> {
    let unreadable = |source| AuthKeysError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => AuthKeysError::Missing {
                path: path.to_path_buf(),
            },
            _ => unreadable(source),
        })?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(AuthKeysError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuthKeysError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let ours = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    if meta.uid() != 0 && Some(meta.uid()) != ours {
        return Err(AuthKeysError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            ours: ours.unwrap_or(0),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(AuthKeysError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| AuthKeysError::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("authkeys");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn loads_send_key_and_all_receive_keys() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# rolled keys\n\nauth 2\n1 sha1 old secret with spaces\n  2   sha1   n#w  \n";
        let keys = AuthKeys::load(&key_file(dir.path(), text, 0o600)).unwrap();
        assert_eq!(keys.send_key(), (2, b"n#w".as_slice()));
        assert_eq!(keys.key(1), Some(b"old secret with spaces".as_slice()));
        assert_eq!(keys.key(3), None);
        assert_eq!(keys.key_ids().collect::<Vec<_>>(), [1, 2]);
        let debug = format!("{keys:?}");
        assert!(!debug.contains("old secret") && !debug.contains("n#w"), "{debug}");
    }

    #[test]
    fn refuses_group_or_other_bits_naming_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o601, 0o644] {
            let path = key_file(dir.path(), "auth 1\n1 sha1 x\n", mode);
            let err = AuthKeys::load(&path).unwrap_err();
            assert!(matches!(err, AuthKeysError::Mode { mode: m, .. } if m == mode), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("authkeys") && text.contains(&format!("{mode:04o}")),
                "{text}"
            );
        }
        let path = key_file(dir.path(), "auth 1\n1 sha1 x\n", 0o400);
        assert!(AuthKeys::load(&path).is_ok());
    }

    #[test]
    fn missing_file_and_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            AuthKeys::load(&dir.path().join("nope")),
            Err(AuthKeysError::Missing { .. })
        ));
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(AuthKeys::load(&sub), Err(AuthKeysError::NotAFile { .. })));
    }

    #[test]
    fn format_errors_name_the_line_and_never_the_secret() {
        let p = Path::new("/etc/ha/authkeys");
        let cases: &[(&str, usize)] = &[
            ("auth 1\n1 md5 topsecret\n", 2),
            ("auth 1\n1 crc\n", 2),
            ("auth 1\n1 sha1\n", 2),
            ("auth 1\n0 sha1 topsecret\n", 2),
            ("auth 1\n256 sha1 topsecret\n", 2),
            ("auth 1\n1 sha1 topsecret\n1 sha1 topsecret2\n", 3),
            ("auth 1\nauth 1\n1 sha1 topsecret\n", 2),
            ("auth one\n1 sha1 topsecret\n", 1),
            ("auth 1 2\n1 sha1 topsecret\n", 1),
            ("topsecret\n", 1),
        ];
        for (text, line) in cases {
            let err = AuthKeys::parse(text, p).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("line {line}")), "{text:?}: {msg}");
            assert!(msg.contains("/etc/ha/authkeys"), "{msg}");
            assert!(!msg.contains("topsecret"), "secret leaked: {msg}");
        }
        let md5 = AuthKeys::parse("auth 1\n1 md5 x\n", p).unwrap_err();
        assert!(matches!(md5, AuthKeysError::UnsupportedMethod { ref method, line: 2, .. } if method == "md5"));
        assert!(matches!(
            AuthKeys::parse("1 sha1 x\n", p),
            Err(AuthKeysError::NoAuthLine { .. })
        ));
        assert!(matches!(
            AuthKeys::parse("auth 3\n1 sha1 x\n", p),
            Err(AuthKeysError::SendKeyNotListed { id: 3, .. })
        ));
    }

    #[test]
    fn from_keys_applies_the_same_rules() {
        assert!(AuthKeys::from_keys(1, [(1, b"a".to_vec())]).is_ok());
        assert!(AuthKeys::from_keys(2, [(1, b"a".to_vec())]).is_err());
        assert!(AuthKeys::from_keys(0, [(0, b"a".to_vec())]).is_err());
        assert!(AuthKeys::from_keys(1, [(1, Vec::new())]).is_err());
    }
}
