//! Loading a configuration text the way clusterd does (from a file, so errors name it), for the
//! configuration tests.

use clusterd::config::{ConfigError, HaConfig};
use std::path::PathBuf;

/// Writes `text` to a fresh `ha.yaml` and loads it; the temp dir lives as long as the result.
pub fn load_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<HaConfig, ConfigError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ha.yaml");
    std::fs::write(&path, text).expect("write config");
    let result = HaConfig::load(&path);
    (dir, path, result)
}

/// Loads `text`, expects an error, and checks it names the file and contains every one of `parts`.
pub fn assert_error(text: &str, parts: &[&str]) -> ConfigError {
    let (_dir, path, result) = load_text(text);
    let err = match result {
        Ok(_) => panic!("expected an error containing {parts:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: ", path.display())), "file name missing: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{p:?} missing from: {msg}");
    }
    err
}
