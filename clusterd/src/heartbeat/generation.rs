//! The persistent boot generation carried in every heartbeat (Heartbeat's `hb_generation`).
//!
//! It is incremented and made durable on every start, BEFORE the first packet is sent, so packets
//! captured from an earlier run carry a lower generation and are dropped by the peer as stale.
//! A corrupt file is an error, never a silent reset to 0: a reset would let old packets replay.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// File name inside the state directory.
pub const GENERATION_FILE: &str = "hb-generation";

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("cannot read heartbeat generation file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("heartbeat generation file {path} is corrupt (expected a decimal number); fix or remove it deliberately")]
    Corrupt { path: PathBuf },
    #[error("heartbeat generation in {path} is at its maximum and cannot be incremented")]
    Exhausted { path: PathBuf },
    #[error("cannot persist heartbeat generation to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Namespace for the generation-file operations.
pub struct Generation;

impl Generation {
    /// Reads `state_dir/hb-generation` (missing = 0), durably stores n+1 (temp file, fsync,
    /// rename, fsync of the directory) and returns n+1.
    pub fn bump(state_dir: &Path) -> Result<u64, GenerationError> {
        let path = state_dir.join(GENERATION_FILE);
        let current = Generation::read(state_dir)?;
        let next = current
            .checked_add(1)
            .ok_or_else(|| GenerationError::Exhausted { path: path.clone() })?;
        let tmp = state_dir.join(format!("{GENERATION_FILE}.tmp"));
        let write_err = |source| GenerationError::Write {
            path: path.clone(),
            source,
        };
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(write_err)?;
            file.write_all(format!("{next}\n").as_bytes()).map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        File::open(state_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err)?;
        Ok(next)
    }

    /// The stored generation without changing it (0 if the file does not exist).
    pub fn read(state_dir: &Path) -> Result<u64, GenerationError> {
        let path = state_dir.join(GENERATION_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(GenerationError::Read { path, source }),
        };
        let corrupt = || GenerationError::Corrupt { path: path.clone() };
        let text = std::str::from_utf8(&text).map_err(|_| corrupt())?;
        let digits = text.strip_suffix('\n').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(corrupt());
        }
        digits.parse::<u64>().map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_starts_at_one_and_each_bump_increments() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Generation::read(dir.path()).unwrap(), 0);
        assert_eq!(Generation::bump(dir.path()).unwrap(), 1);
        assert_eq!(Generation::bump(dir.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(GENERATION_FILE)).unwrap(),
            "2\n"
        );
        assert!(!dir.path().join("hb-generation.tmp").exists());
    }

    #[test]
    fn continues_from_an_existing_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GENERATION_FILE), "41").unwrap();
        assert_eq!(Generation::bump(dir.path()).unwrap(), 42);
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATION_FILE);
        for bad in ["", "\n", "12x\n", "-1\n", " 3\n", "99999999999999999999999\n", "7\n\n"] {
            std::fs::write(&path, bad).unwrap();
            let err = Generation::bump(dir.path()).unwrap_err();
            assert!(matches!(err, GenerationError::Corrupt { .. }), "{bad:?}: {err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
        std::fs::write(&path, format!("{}\n", u64::MAX)).unwrap();
        assert!(matches!(
            Generation::bump(dir.path()),
            Err(GenerationError::Exhausted { .. })
        ));
    }

    #[test]
    fn missing_state_dir_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Generation::bump(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, GenerationError::Write { .. }), "{err}");
    }
}
