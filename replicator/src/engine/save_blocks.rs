//! `--save-victim FILE` of a split-brain resolution (issue 15): the blocks a victim changed, copied
//! before they are discarded.
//!
//! Format: a sparse image of the volume's size in which only the saved 4 KiB blocks are written (the
//! rest are holes, reading as zeroes). Why an image rather than a list of (offset, block) records:
//! admins can loop-mount it, `cmp`/`diff` it against the survivor's data, or copy single blocks back
//! with `dd`, with no tool of ours; `filefrag`/`SEEK_DATA` list which blocks it holds.

use super::disk::DataDisk;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

const BLOCK: u64 = 4096;

/// Write `blocks` (block numbers) of `data` into a new sparse image at `path`. Refuses an existing
/// `path`; writes `path.partial` first, syncs, renames, so `path` is never half-written.
pub(crate) fn write_sparse_image(data: &DataDisk, size: u64, blocks: &[u64], path: &Path) -> Result<u64, String> {
    if path.exists() {
        return Err(format!("{}: already exists; choose a new file (it is never overwritten)", path.display()));
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| format!("{}: create: {e}", partial.display()))?;
    f.set_len(size).map_err(|e| format!("{}: set length {size}: {e}", partial.display()))?;
    for &b in blocks {
        let offset = b * BLOCK;
        let len = BLOCK.min(size.saturating_sub(offset));
        let buf = data.read(offset, len).map_err(|e| format!("read block {b} (offset {offset}) of the local disk: {e}"))?;
        f.write_all_at(&buf, offset).map_err(|e| format!("{}: write at {offset}: {e}", partial.display()))?;
    }
    f.sync_all().map_err(|e| format!("{}: sync: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("rename {} to {}: {e}", partial.display(), path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(blocks.len() as u64)
}
