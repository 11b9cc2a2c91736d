//! Reading the peer-authentication secret named by `net.shared-secret-file`.
//!
//! The secret lives in its own file (not in ha.yaml) so ha.yaml can be copied around and kept in
//! version control. Because that file is the only protection of the replication link, it is refused
//! unless only its owner can read it, the way ssh treats private keys. The secret's bytes never go
//! into an error or a log line.

use super::ConfigError;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Longest accepted secret, in bytes (DRBD's `shared-secret` limit).
pub const MAX_SECRET_LEN: usize = 64;

/// Reads the secret, after checking the file is a regular file owned by root or by us with no
/// group/other permissions. One trailing newline (`\n` or `\r\n`) is dropped, as editors add it.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    // O_NOFOLLOW is not used: a symlink into /etc/ha/secrets is a reasonable setup. Checks are done
    // on the opened file so they describe exactly what is read. O_NONBLOCK keeps a FIFO put there by
    // mistake from hanging the daemon; it is then refused as not a regular file.
    let mut file = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => ConfigError::SecretMissing {
                path: path.to_path_buf(),
            },
            _ => ConfigError::SecretUnreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let meta = file
        .metadata()
        .map_err(|source| ConfigError::SecretUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if !meta.is_file() {
        return Err(ConfigError::SecretNotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::SecretMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let ours = effective_uid();
    if meta.uid() != 0 && Some(meta.uid()) != ours {
        return Err(ConfigError::SecretOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            ours: ours.unwrap_or(0),
        });
    }
    // Read a little more than allowed, so an oversized file is detected without reading all of it.
    let limit = (MAX_SECRET_LEN + 3) as u64;
    let mut bytes = Vec::with_capacity(MAX_SECRET_LEN + 3);
    (&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::SecretUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    strip_one_newline(&mut bytes);
    if bytes.is_empty() {
        return Err(ConfigError::SecretEmpty {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() > MAX_SECRET_LEN {
        let len = meta.len().max(bytes.len() as u64);
        return Err(ConfigError::SecretTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(bytes)
}

fn strip_one_newline(bytes: &mut Vec<u8>) {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
}

/// Our effective uid, read from the owner of `/proc/self` (Linux sets it to the process's effective
/// uid). The workspace's rustix is built without its `process` feature, and this avoids `unsafe`
/// libc calls. `None` if /proc is not mounted, in which case only root-owned secrets are accepted.
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn secret_file(dir: &Path, content: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join("peer.secret");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn accepts_0600_and_0400_and_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path(), b"password\n", 0o600);
        assert_eq!(read_secret_file(&path).unwrap(), b"password");
        let path = secret_file(dir.path(), b"password\n\n", 0o400);
        assert_eq!(read_secret_file(&path).unwrap(), b"password\n");
        let path = secret_file(dir.path(), b"pw\r\n", 0o600);
        assert_eq!(read_secret_file(&path).unwrap(), b"pw");
    }

    #[test]
    fn refuses_group_or_other_permissions() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610, 0o601] {
            let path = secret_file(dir.path(), b"password", mode);
            let err = read_secret_file(&path).unwrap_err();
            assert!(
                matches!(err, ConfigError::SecretMode { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
        }
    }

    #[test]
    fn length_limits_count_after_the_newline_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let exact = vec![b'x'; MAX_SECRET_LEN];
        let path = secret_file(dir.path(), &exact, 0o600);
        assert_eq!(read_secret_file(&path).unwrap(), exact);
        let mut with_newline = exact.clone();
        with_newline.push(b'\n');
        let path = secret_file(dir.path(), &with_newline, 0o600);
        assert_eq!(read_secret_file(&path).unwrap(), exact);
        let path = secret_file(dir.path(), &vec![b'x'; 4096], 0o600);
        assert!(matches!(
            read_secret_file(&path),
            Err(ConfigError::SecretTooLong { len: 4096, .. })
        ));
        let path = secret_file(dir.path(), b"\n", 0o600);
        assert!(matches!(
            read_secret_file(&path),
            Err(ConfigError::SecretEmpty { .. })
        ));
    }

    #[test]
    fn missing_file_and_directory_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read_secret_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::SecretMissing { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            read_secret_file(&sub),
            Err(ConfigError::SecretNotAFile { .. })
        ));
    }
}
