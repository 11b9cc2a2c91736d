//! The "last known place" of internal metadata (DRBD keeps the same in `/var/lib/drbd/*.lkbd`): the
//! superblock's byte offset, one decimal line, rewritten atomically (temporary file, fsync, rename,
//! fsync of the directory) whenever the metadata is opened somewhere new or resized. Internal metadata
//! sits at the end of the backing device; once the device grew it is no longer there until `resize`
//! moves it, and this file is how `open` still finds it.

use std::io::Write;
use std::path::Path;

/// The recorded offset; `None` when the file is missing or unreadable (then only the end of the
/// device is looked at, as before the device grew).
pub fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Record `offset` durably.
pub fn write(path: &Path, offset: u64) -> std::io::Result<()> {
    if read(path) == Some(offset) {
        return Ok(());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{offset}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/r0.meta-offset");
        assert_eq!(super::read(&p), None);
        super::write(&p, 123 << 20).unwrap();
        assert_eq!(super::read(&p), Some(123 << 20));
        super::write(&p, 7).unwrap();
        assert_eq!(super::read(&p), Some(7));
    }
}
