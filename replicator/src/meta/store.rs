//! Blocking metadata I/O: `create_md`, `MetaStore::open` (validate, load the bitmap, replay the activity
//! log after an unclean stop), the writers the engine's actor calls, and the `dump-md` text.
//!
//! Every writer syncs before it returns: the caller relies on "returned Ok" meaning "durable", which is
//! how metadata gets on disk before the data writes that depend on it.

use super::activity_log::{encode_initialized_ring, recover, ActivityLog, AlRecovery, AlRing, AlTransaction};
use super::bitmap::{Bitmap, PageLoad};
use super::layout::{Layout, MetaLocation, AL_EXTENT_SIZE, BLOCK_SIZE, META_PAGE};
use super::superblock::{flags, pick_newest, Superblock, FORMAT_VERSION, MAX_RESOURCE_LEN, PR_MAX, UUID_JUST_CREATED};
use super::MetaError;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Largest single metadata read or write (bitmap initialization and loading go in chunks of this).
const IO_CHUNK: usize = 1 << 20;

/// A device or file holding metadata. Positional I/O so that a shared handle needs no seek state.
pub trait MetaDevice: Send {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
}

/// A regular file or block device.
pub struct FileDevice {
    file: File,
}

impl FileDevice {
    /// Open read-write.
    pub fn open(path: &Path) -> Result<FileDevice, MetaError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|source| MetaError::Io {
            what: format!("open {}", path.display()),
            source,
        })?;
        Ok(FileDevice { file })
    }

    pub fn from_file(file: File) -> FileDevice {
        FileDevice { file }
    }
}

impl MetaDevice for FileDevice {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    /// Seek to the end: works for regular files and block devices alike (metadata() gives 0 for
    /// the latter).
    fn size(&self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        (&self.file).seek(SeekFrom::End(0))
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MetaError {
    let what = what.into();
    move |source| MetaError::Io { what, source }
}

fn read(dev: &dyn MetaDevice, off: u64, len: usize, what: &str) -> Result<Vec<u8>, MetaError> {
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, off).map_err(io_err(format!("read {what} ({len} bytes at {off})")))?;
    Ok(b)
}

fn write(dev: &dyn MetaDevice, buf: &[u8], off: u64, what: &str) -> Result<(), MetaError> {
    dev.write_at(buf, off).map_err(io_err(format!("write {what} ({} bytes at {off})", buf.len())))
}

fn sync(dev: &dyn MetaDevice, what: &str) -> Result<(), MetaError> {
    dev.sync().map_err(io_err(format!("sync {what}")))
}

/// The backing size the geometry is computed from: internal metadata lives on the data device.
fn backing_size(dev: &dyn MetaDevice, data_dev_size: u64, loc: &MetaLocation) -> Result<(u64, u64), MetaError> {
    let meta_size = dev.size().map_err(io_err("size of meta device"))?;
    let backing = if matches!(loc, MetaLocation::Internal) { meta_size } else { data_dev_size };
    Ok((backing, meta_size))
}

/// Write fresh metadata: an initialized activity log, an all-zero bitmap with its CRC table, then both
/// superblock slots, and sync. Refuses to overwrite a valid superblock unless `force`.
pub fn create_md(
    data_dev_size: u64,
    meta: &dyn MetaDevice,
    loc: &MetaLocation,
    resource: &str,
    al_extents: u32,
    force: bool,
) -> Result<Superblock, MetaError> {
    if resource.is_empty() || resource.len() > MAX_RESOURCE_LEN {
        return Err(MetaError::BadResourceName(resource.to_string()));
    }
    let (backing, meta_size) = backing_size(meta, data_dev_size, loc)?;
    let layout = Layout::compute(backing, meta_size, loc, al_extents)?;
    let slots = read(meta, layout.sb_offset, 2 * META_PAGE as usize, "superblocks")?;
    if let Ok((old, _)) = pick_newest(&slots[..META_PAGE as usize], &slots[META_PAGE as usize..])
        && !force {
            return Err(MetaError::AlreadyExists { resource: old.resource });
        }
    write(meta, &encode_initialized_ring(layout.al_slots), layout.al_offset, "activity log")?;
    let zero = vec![0u8; IO_CHUNK];
    let mut off = layout.bm_offset;
    let bm_end = layout.bm_offset + layout.bitmap_bytes;
    while off < bm_end {
        let n = (bm_end - off).min(IO_CHUNK as u64);
        write(meta, &zero[..n as usize], off, "bitmap")?;
        off += n;
    }
    let zero_crc = Bitmap::new(0).page_crc(0).to_le_bytes();
    let mut table = vec![0u8; layout.crc_size as usize];
    for c in table.chunks_exact_mut(4).take(layout.bm_pages as usize) {
        c.copy_from_slice(&zero_crc);
    }
    write(meta, &table, layout.crc_offset, "bitmap checksums")?;
    let mut device_uuid = [0u8; 8];
    getrandom::fill(&mut device_uuid).map_err(|e| MetaError::Entropy(e.to_string()))?;
    let mut sb = Superblock {
        version: FORMAT_VERSION,
        seq: 1,
        resource: resource.to_string(),
        data_size: layout.data_size,
        bytes_per_bit: BLOCK_SIZE as u32,
        al_slots: layout.al_slots,
        al_extents,
        bitmap_bytes: layout.bitmap_bytes,
        md_size: layout.md_size,
        current_uuid: UUID_JUST_CREATED,
        bitmap_uuid: 0,
        history_uuids: [0, 0],
        device_uuid: u64::from_le_bytes(device_uuid),
        flags: flags::AL_CLEAN,
        node_generation: 0,
        pr: Vec::new(),
    };
    // Everything else is durable before a superblock makes it valid metadata.
    sync(meta, "metadata")?;
    write(meta, &sb.encode(), layout.sb_offset, "superblock A")?;
    sb.seq = 2;
    write(meta, &sb.encode(), layout.sb_offset + META_PAGE, "superblock B")?;
    sync(meta, "superblocks")?;
    Ok(sb)
}

/// What `open` noticed and repaired or applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// 'A' or 'B': the slot the superblock came from, and its seq.
    pub superblock_slot: char,
    pub superblock_seq: u64,
    /// Why the other slot was not usable, if it was not.
    pub superblock_slot_problem: Option<String>,
    /// Pages whose CRC failed: loaded as all ones.
    pub corrupt_bitmap_pages: Vec<u32>,
    /// Activity-log extents ORed into the bitmap (unclean stop).
    pub al_extents_applied: usize,
    pub al_torn_transactions: u32,
    /// Internal metadata was not at the end of the backing device but at its last known place (the
    /// device grew and the volume was not resized yet, or a resize was cut short).
    pub found_at_last_known_place: Option<u64>,
}

impl OpenReport {
    /// Warning lines for the log (empty when everything was clean).
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = &self.superblock_slot_problem {
            v.push(format!("torn/corrupt superblock copy ({p}); using slot {} seq {}", self.superblock_slot, self.superblock_seq));
        }
        if !self.corrupt_bitmap_pages.is_empty() {
            v.push(format!(
                "{} bitmap page(s) failed their checksum and are marked entirely out of sync (128 MiB each): {:?}",
                self.corrupt_bitmap_pages.len(),
                self.corrupt_bitmap_pages
            ));
        }
        if self.al_extents_applied > 0 {
            v.push(format!("unclean shutdown: {} activity-log extents (4 MiB each) marked out of sync", self.al_extents_applied));
        }
        if self.al_torn_transactions > 0 {
            v.push(format!("{} torn or corrupt activity-log transaction(s) skipped", self.al_torn_transactions));
        }
        if let Some(off) = self.found_at_last_known_place {
            v.push(format!(
                "internal metadata found at its last known place (superblock at byte {off}), not at the end of the grown backing device: the volume keeps its size until `haadm resize`"
            ));
        }
        v
    }
}

/// Open metadata: the newest superblock, the bitmap, and where the next AL transaction goes.
pub struct MetaStore {
    dev: Box<dyn MetaDevice>,
    loc: MetaLocation,
    layout: Layout,
    sb: Superblock,
    /// Slot (0 = A, 1 = B) holding `sb`; the next write goes to the other one.
    newest_slot: usize,
    /// The bitmap as loaded (repaired pages as ones, AL applied), then kept equal to what
    /// `write_bitmap_pages` wrote; dirty marks are the caller's business.
    bitmap: Bitmap,
    crcs: Vec<u32>,
    ring: AlRing,
    al_found: AlRecovery,
}

fn check_geometry(field: &'static str, recorded: u64, computed: u64) -> Result<(), MetaError> {
    if recorded == computed { Ok(()) } else { Err(MetaError::GeometryMismatch { field, recorded, computed }) }
}

impl MetaStore {
    /// Read and validate; after an unclean stop (no AL_CLEAN), fold the activity log into the bitmap.
    pub fn open(dev: Box<dyn MetaDevice>, data_dev_size: u64, loc: &MetaLocation) -> Result<(MetaStore, OpenReport), MetaError> {
        MetaStore::open_at(dev, data_dev_size, loc, None)
    }

    /// As [`MetaStore::open`]; for internal metadata not found at the end of the backing device, look at
    /// `last_known_sb_offset` (where the superblock was when last opened or resized: the device grew
    /// since, DRBD's "last known backing device" file does the same).
    pub fn open_at(
        dev: Box<dyn MetaDevice>,
        data_dev_size: u64,
        loc: &MetaLocation,
        last_known_sb_offset: Option<u64>,
    ) -> Result<(MetaStore, OpenReport), MetaError> {
        let (mut backing, meta_size) = backing_size(dev.as_ref(), data_dev_size, loc)?;
        let mut sb_off = Layout::superblock_offset(backing, loc)?;
        let slots = read(dev.as_ref(), sb_off, 2 * META_PAGE as usize, "superblocks")?;
        let mut moved = None;
        let (sb, slot) = match pick_newest(&slots[..META_PAGE as usize], &slots[META_PAGE as usize..]) {
            Ok(found) => found,
            Err(at_end) => match (loc, last_known_sb_offset) {
                (MetaLocation::Internal, Some(off)) if off != sb_off && off % META_PAGE == 0 && off + 2 * META_PAGE <= meta_size => {
                    let slots = read(dev.as_ref(), off, 2 * META_PAGE as usize, "superblocks (last known place)")?;
                    let found = pick_newest(&slots[..META_PAGE as usize], &slots[META_PAGE as usize..]).map_err(|_| at_end)?;
                    (sb_off, backing, moved) = (off, off + 2 * META_PAGE, Some(off));
                    found
                }
                _ => return Err(at_end),
            },
        };
        let layout = match loc {
            MetaLocation::Internal => {
                // The recorded size, placed so that the metadata ends where the superblocks were found.
                let l = Layout::with_data_size(sb.data_size, backing, meta_size, loc, sb.al_extents)?;
                check_geometry("md_size", sb.md_size, l.md_size)?;
                l
            }
            MetaLocation::External { .. } => {
                // A grown data device keeps its recorded size until it is resized explicitly.
                let available = backing & !(BLOCK_SIZE - 1);
                if available < sb.data_size {
                    return Err(MetaError::DeviceShrank { recorded: sb.data_size, available });
                }
                Layout::compute(sb.data_size, meta_size, loc, sb.al_extents)?
            }
        };
        check_geometry("superblock offset", sb_off, layout.sb_offset)?;
        check_geometry("al_slots", u64::from(sb.al_slots), u64::from(layout.al_slots))?;
        check_geometry("bitmap_bytes", sb.bitmap_bytes, layout.bitmap_bytes)?;
        let mut report = OpenReport {
            superblock_slot: if slot.newest == 0 { 'A' } else { 'B' },
            superblock_seq: sb.seq,
            superblock_slot_problem: slot.other_problem,
            found_at_last_known_place: moved,
            ..Default::default()
        };

        let table = read(dev.as_ref(), layout.crc_offset, layout.crc_size as usize, "bitmap checksums")?;
        let crcs: Vec<u32> = table
            .chunks_exact(4)
            .take(layout.bm_pages as usize)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut bitmap = Bitmap::new(sb.data_size);
        let pages_per_read = (IO_CHUNK as u64 / META_PAGE) as u32;
        let mut p = 0u32;
        while p < layout.bm_pages {
            let n = (layout.bm_pages - p).min(pages_per_read);
            let off = layout.bm_offset + u64::from(p) * META_PAGE;
            let buf = read(dev.as_ref(), off, n as usize * META_PAGE as usize, "bitmap")?;
            for (i, page) in buf.chunks_exact(META_PAGE as usize).enumerate() {
                let pg = p + i as u32;
                if bitmap.load_page(pg, page, crcs[pg as usize]) == PageLoad::Corrupt {
                    report.corrupt_bitmap_pages.push(pg);
                }
            }
            p += n;
        }

        let ring_bytes = read(dev.as_ref(), layout.al_offset, layout.al_slots as usize * META_PAGE as usize, "activity log")?;
        let found = recover(&ring_bytes, layout.al_slots)?;
        report.al_torn_transactions = found.torn_or_corrupt;
        if sb.flags & flags::AL_CLEAN == 0 {
            for &e in &found.extents {
                bitmap.set_range(u64::from(e) * AL_EXTENT_SIZE, AL_EXTENT_SIZE);
            }
            report.al_extents_applied = found.extents.len();
        }
        let store = MetaStore {
            dev,
            loc: loc.clone(),
            layout,
            sb,
            newest_slot: slot.newest,
            bitmap,
            crcs,
            ring: AlRing::after(&found, layout.al_slots),
            al_found: found,
        };
        Ok((store, report))
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What the activity-log ring held at open.
    pub fn al_found(&self) -> &AlRecovery {
        &self.al_found
    }

    /// An empty in-memory activity log for this metadata. Its transactions are numbered and placed by
    /// the store, after those already in the ring.
    pub fn activity_log(&self) -> ActivityLog {
        ActivityLog::new(self.sb.al_extents, self.layout.al_slots)
    }

    /// Write `sb` (seq bumped) into the slot not holding the newest copy, then sync. Geometry fields
    /// cannot change this way.
    pub fn write_superblock(&mut self, sb: &mut Superblock) -> Result<(), MetaError> {
        check_geometry("data_size", self.sb.data_size, sb.data_size)?;
        check_geometry("al_extents", u64::from(self.sb.al_extents), u64::from(sb.al_extents))?;
        check_geometry("al_slots", u64::from(self.sb.al_slots), u64::from(sb.al_slots))?;
        check_geometry("bitmap_bytes", self.sb.bitmap_bytes, sb.bitmap_bytes)?;
        check_geometry("bytes_per_bit", u64::from(self.sb.bytes_per_bit), u64::from(sb.bytes_per_bit))?;
        if sb.resource.is_empty() || sb.resource.len() > MAX_RESOURCE_LEN {
            return Err(MetaError::BadResourceName(sb.resource.clone()));
        }
        sb.version = FORMAT_VERSION;
        sb.seq = self.sb.seq + 1;
        let slot = 1 - self.newest_slot;
        let off = self.layout.sb_offset + slot as u64 * META_PAGE;
        write(self.dev.as_ref(), &sb.encode(), off, if slot == 0 { "superblock A" } else { "superblock B" })?;
        sync(self.dev.as_ref(), "superblock")?;
        self.newest_slot = slot;
        self.sb = sb.clone();
        Ok(())
    }

    /// Replace the persistent-reservation state (a superblock write: crash-safe, synced on return).
    pub fn write_pr(&mut self, blob: &[u8]) -> Result<(), MetaError> {
        if blob.len() > PR_MAX {
            return Err(MetaError::BadField { field: "pr", problem: format!("PR state of {} bytes, at most {PR_MAX}", blob.len()) });
        }
        let mut sb = self.sb.clone();
        sb.pr = blob.to_vec();
        self.write_superblock(&mut sb)
    }

    /// Write bitmap pages of `bm` (contiguous pages coalesced), then the CRC-table pages covering them,
    /// then sync. A crash in between leaves pages whose CRC fails: they read back as all ones.
    pub fn write_bitmap_pages(&mut self, bm: &Bitmap, pages: &[u32]) -> Result<(), MetaError> {
        check_geometry("bitmap blocks", self.bitmap.blocks(), bm.blocks())?;
        let mut pages: Vec<u32> = pages.to_vec();
        pages.sort_unstable();
        pages.dedup();
        if let Some(&p) = pages.last().filter(|&&p| p >= self.layout.bm_pages) {
            return Err(MetaError::GeometryMismatch { field: "bitmap page", recorded: u64::from(self.layout.bm_pages), computed: u64::from(p) });
        }
        if pages.is_empty() {
            return Ok(());
        }
        let max_run = IO_CHUNK / META_PAGE as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(IO_CHUNK);
        let mut i = 0;
        while i < pages.len() {
            let first = pages[i];
            buf.clear();
            while i < pages.len() && pages[i] == first + (buf.len() / META_PAGE as usize) as u32 && buf.len() / (META_PAGE as usize) < max_run {
                let p = pages[i];
                let bytes = bm.encode_page(p);
                self.crcs[p as usize] = crc32c::crc32c(&bytes);
                self.bitmap.copy_page_from(bm, p);
                buf.extend_from_slice(&bytes);
                i += 1;
            }
            write(self.dev.as_ref(), &buf, self.layout.bm_offset + u64::from(first) * META_PAGE, "bitmap pages")?;
        }
        let per_crc_page = (META_PAGE / 4) as u32;
        let mut crc_pages: Vec<u32> = pages.iter().map(|p| p / per_crc_page).collect();
        crc_pages.dedup();
        for cp in crc_pages {
            let start = (cp * per_crc_page) as usize;
            let end = (start + per_crc_page as usize).min(self.crcs.len());
            let mut page = [0u8; META_PAGE as usize];
            for (o, c) in page.chunks_exact_mut(4).zip(&self.crcs[start..end]) {
                o.copy_from_slice(&c.to_le_bytes());
            }
            write(self.dev.as_ref(), &page, self.layout.crc_offset + u64::from(cp) * META_PAGE, "bitmap checksums")?;
        }
        sync(self.dev.as_ref(), "bitmap")
    }

    /// Write an activity-log transaction at the next ring position with the next number, then sync.
    pub fn write_al_transaction(&mut self, tx: &AlTransaction) -> Result<(), MetaError> {
        check_geometry("al_extents", u64::from(self.sb.al_extents), u64::from(tx.al_extents))?;
        let (off, bytes) = self.ring.place(tx);
        write(self.dev.as_ref(), &bytes, self.layout.al_offset + off, "activity-log transaction")?;
        sync(self.dev.as_ref(), "activity log")?;
        self.ring.advance();
        Ok(())
    }

    /// Human-readable dump for `haadm dump-md`.
    pub fn dump(&self) -> String {
        let s = &self.sb;
        let l = &self.layout;
        let flag_names = s.flag_names();
        let out_of_sync = self.bitmap.count();
        let al: Vec<String> = self.al_found.extents.iter().map(|e| e.to_string()).collect();
        let mut lines = vec![
            format!("resource        {}", s.resource),
            format!("magic           HAREPLMD  version {}  seq {}", s.version, s.seq),
            format!("data-size       {} bytes ({} MiB)  bytes-per-bit {}", s.data_size, s.data_size >> 20, s.bytes_per_bit),
            format!("meta-area       offset {}  size {} bytes", l.md_offset, l.md_size),
            format!("superblocks     A at {}  B at {}", l.sb_offset, l.sb_offset + META_PAGE),
            format!("activity-log    at {}  {} transactions  al-extents {}", l.al_offset, l.al_slots, s.al_extents),
            format!("bitmap          at {}  {} pages ({} bytes)  crc table at {}", l.bm_offset, l.bm_pages, l.bitmap_bytes, l.crc_offset),
            format!("current-uuid    {:016X}", s.current_uuid),
            format!("bitmap-uuid     {:016X}", s.bitmap_uuid),
            format!("history-uuids   {:016X} {:016X}", s.history_uuids[0], s.history_uuids[1]),
            format!("device-uuid     {:016X}", s.device_uuid),
            format!("flags           {flag_names}"),
            format!("node-generation {}", s.node_generation),
            format!("out-of-sync     {} blocks ({} KiB)", out_of_sync, out_of_sync * (BLOCK_SIZE / 1024)),
            format!(
                "al-ring         {} valid, {} initialized, {} torn/corrupt; newest tr {}",
                self.al_found.valid_transactions,
                self.al_found.initialized,
                self.al_found.torn_or_corrupt,
                self.al_found.newest_tr.map_or("-".to_string(), |t| t.to_string())
            ),
            format!("al-extents-in-log {}", if al.is_empty() { "-".to_string() } else { al.join(" ") }),
        ];
        lines.push(String::new());
        lines.join("\n")
    }
}

#[path = "store_resize.rs"]
mod resize;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "store_resize_tests.rs"]
mod resize_tests;
