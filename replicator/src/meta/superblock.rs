//! The superblock: identity, geometry, generation UUIDs and flags, in two 4 KiB slots with a sequence
//! number and CRC32C. A writer always overwrites the slot that does not hold the newest valid copy, so a
//! torn write leaves the previous superblock intact.
//!
//! The slot's second half carries the resource's SCSI persistent-reservation state (an opaque blob the
//! target encodes, with its own magic, version and CRC): it is replicated state of the resource like its
//! data (see `machine/pr.rs`), and keeping it here makes every update as crash-safe as the generation
//! UUIDs — a torn write leaves the previous state. Superblocks written before it existed hold zeroes
//! there, which read as "no PR state"; older releases ignore the area (the CRC covers the whole slot).

use super::layout::{al_slots_for, bitmap_bytes_for, AL_EXTENTS_MAX, AL_EXTENTS_MIN, MAX_DATA_SIZE};
use super::MetaError;

pub const MAGIC: &[u8; 8] = b"HAREPLMD";
pub const FORMAT_VERSION: u32 = 1;
/// `current_uuid` written by create-md: "no data yet" (DRBD's UUID_JUST_CREATED).
pub const UUID_JUST_CREATED: u64 = 4;
/// Longest resource name the superblock holds.
pub const MAX_RESOURCE_LEN: usize = 63;
const SB_SIZE: usize = 4096;
/// Where the PR area starts in a slot: `len u32, reserved u32, blob`.
const PR_AREA: usize = 512;
/// Largest PR blob a superblock holds.
pub const PR_MAX: usize = SB_SIZE - PR_AREA - 8;

/// Superblock flags (DRBD's MDF_* in spirit).
pub mod flags {
    pub const CONSISTENT: u32 = 1 << 0;
    pub const WAS_UP_TO_DATE: u32 = 1 << 1;
    pub const PRIMARY_IND: u32 = 1 << 2;
    pub const CRASHED_PRIMARY: u32 = 1 << 3;
    pub const AL_CLEAN: u32 = 1 << 4;
    pub const PEER_OUTDATED: u32 = 1 << 5;
    pub const FULL_SYNC: u32 = 1 << 6;
    pub const CONNECTED_IND: u32 = 1 << 7;
    pub const OUTDATED: u32 = 1 << 8;
    /// Our persistent-reservation state changed without the peer storing it: send it on reconnect.
    pub const PEER_PR_STALE: u32 = 1 << 9;
    pub const NAMES: [(u32, &str); 10] = [
        (CONSISTENT, "consistent"),
        (WAS_UP_TO_DATE, "was-up-to-date"),
        (PRIMARY_IND, "primary"),
        (CRASHED_PRIMARY, "crashed-primary"),
        (AL_CLEAN, "al-clean"),
        (PEER_OUTDATED, "peer-outdated"),
        (FULL_SYNC, "full-sync"),
        (CONNECTED_IND, "connected"),
        (OUTDATED, "outdated"),
        (PEER_PR_STALE, "peer-pr-stale"),
    ];
}

/// Identity, geometry and replication state of one node's copy of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub seq: u64,
    pub resource: String,
    pub data_size: u64,
    pub bytes_per_bit: u32,
    pub al_slots: u32,
    pub al_extents: u32,
    pub bitmap_bytes: u64,
    pub md_size: u64,
    pub current_uuid: u64,
    pub bitmap_uuid: u64,
    pub history_uuids: [u64; 2],
    pub device_uuid: u64,
    pub flags: u32,
    /// Spare counter for the daemon.
    pub node_generation: u64,
    /// The resource's persistent-reservation state (empty: none), at most [`PR_MAX`] bytes.
    pub pr: Vec<u8>,
}

fn rd64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn rd32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn crc_of(block: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&block[..12]);
    c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &block[16..])
}

impl Superblock {
    /// The 4 KiB on-disk form; the CRC32C covers the whole block with the crc field as zero. The
    /// resource name is cut at 63 bytes (create-md refuses longer names).
    pub fn encode(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        let put64 = |b: &mut [u8; SB_SIZE], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        let put32 = |b: &mut [u8; SB_SIZE], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put64(&mut b, 16, self.seq);
        put64(&mut b, 24, self.data_size);
        put32(&mut b, 32, self.bytes_per_bit);
        put32(&mut b, 36, self.al_slots);
        put32(&mut b, 40, self.al_extents);
        put32(&mut b, 44, self.flags);
        put64(&mut b, 48, self.bitmap_bytes);
        put64(&mut b, 56, self.current_uuid);
        put64(&mut b, 64, self.bitmap_uuid);
        put64(&mut b, 72, self.history_uuids[0]);
        put64(&mut b, 80, self.history_uuids[1]);
        put64(&mut b, 88, self.device_uuid);
        put64(&mut b, 96, self.node_generation);
        put64(&mut b, 104, self.md_size);
        let name = self.resource.as_bytes();
        let n = name.len().min(63);
        b[112] = n as u8;
        b[113..113 + n].copy_from_slice(&name[..n]);
        // Callers keep the blob within PR_MAX (MetaStore::write_pr checks); cut defensively anyway.
        let pr = &self.pr[..self.pr.len().min(PR_MAX)];
        put32(&mut b, PR_AREA, pr.len() as u32);
        b[PR_AREA + 8..PR_AREA + 8 + pr.len()].copy_from_slice(pr);
        let crc = crc_of(&b);
        put32(&mut b, 12, crc);
        b
    }

    /// Parse and validate one slot: magic, then checksum (so any flipped byte reads as corruption),
    /// then version, then field sanity.
    pub fn decode(b: &[u8]) -> Result<Superblock, MetaError> {
        if b.len() < SB_SIZE {
            return Err(MetaError::Truncated { need: SB_SIZE, got: b.len() });
        }
        let b = &b[..SB_SIZE];
        if &b[0..8] != MAGIC {
            return Err(MetaError::BadMagic { offset: 0 });
        }
        let stored = rd32(b, 12);
        let computed = crc_of(b);
        if stored != computed {
            return Err(MetaError::BadChecksum { stored, computed });
        }
        let version = rd32(b, 8);
        if version != FORMAT_VERSION {
            return Err(MetaError::UnsupportedVersion { found: version });
        }
        let n = b[112] as usize;
        if n > 63 {
            return Err(MetaError::BadField { field: "resource", problem: format!("name length {n} > 63") });
        }
        let resource = std::str::from_utf8(&b[113..113 + n])
            .map_err(|_| MetaError::BadField { field: "resource", problem: "not UTF-8".into() })?
            .to_string();
        let pr_len = rd32(b, PR_AREA) as usize;
        if pr_len > PR_MAX {
            return Err(MetaError::BadField { field: "pr", problem: format!("PR state of {pr_len} bytes, at most {PR_MAX}") });
        }
        let pr = b[PR_AREA + 8..PR_AREA + 8 + pr_len].to_vec();
        let sb = Superblock {
            version,
            seq: rd64(b, 16),
            resource,
            data_size: rd64(b, 24),
            bytes_per_bit: rd32(b, 32),
            al_slots: rd32(b, 36),
            al_extents: rd32(b, 40),
            flags: rd32(b, 44),
            bitmap_bytes: rd64(b, 48),
            current_uuid: rd64(b, 56),
            bitmap_uuid: rd64(b, 64),
            history_uuids: [rd64(b, 72), rd64(b, 80)],
            device_uuid: rd64(b, 88),
            node_generation: rd64(b, 96),
            md_size: rd64(b, 104),
            pr,
        };
        if sb.bytes_per_bit != 4096 {
            return Err(MetaError::BadField { field: "bytes_per_bit", problem: format!("{} (only 4096 is supported)", sb.bytes_per_bit) });
        }
        if !sb.data_size.is_multiple_of(4096) || sb.data_size > MAX_DATA_SIZE {
            return Err(MetaError::BadField { field: "data_size", problem: format!("{} is not a multiple of 4096 up to {MAX_DATA_SIZE}", sb.data_size) });
        }
        if !(AL_EXTENTS_MIN..=AL_EXTENTS_MAX).contains(&sb.al_extents) {
            return Err(MetaError::BadField { field: "al_extents", problem: format!("{} is outside {AL_EXTENTS_MIN}..={AL_EXTENTS_MAX}", sb.al_extents) });
        }
        if sb.al_slots != al_slots_for(sb.al_extents) {
            return Err(MetaError::BadField { field: "al_slots", problem: format!("{} does not match al_extents {}", sb.al_slots, sb.al_extents) });
        }
        let bm = bitmap_bytes_for(sb.data_size);
        if sb.bitmap_bytes != bm {
            return Err(MetaError::BadField { field: "bitmap_bytes", problem: format!("{} but {} bytes of data need {bm}", sb.bitmap_bytes, sb.data_size) });
        }
        Ok(sb)
    }

    pub fn flag_names(&self) -> String {
        let v: Vec<&str> = flags::NAMES.iter().filter(|(f, _)| self.flags & f != 0).map(|(_, n)| *n).collect();
        if v.is_empty() { "-".into() } else { v.join(",") }
    }
}

/// Which slot held the newest valid copy, and what was wrong with the other, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// 0 = slot A, 1 = slot B.
    pub newest: usize,
    pub other_problem: Option<String>,
}

/// The newest valid superblock of the two slots.
pub fn pick_newest(a: &[u8], b: &[u8]) -> Result<(Superblock, SlotReport), MetaError> {
    match (Superblock::decode(a), Superblock::decode(b)) {
        (Ok(x), Ok(y)) => {
            if y.seq > x.seq {
                Ok((y, SlotReport { newest: 1, other_problem: None }))
            } else {
                Ok((x, SlotReport { newest: 0, other_problem: None }))
            }
        }
        (Ok(x), Err(e)) => Ok((x, SlotReport { newest: 0, other_problem: Some(format!("slot B: {e}")) })),
        (Err(e), Ok(y)) => Ok((y, SlotReport { newest: 1, other_problem: Some(format!("slot A: {e}")) })),
        (Err(ea), Err(eb)) => match (&ea, &eb) {
            (MetaError::UnsupportedVersion { .. }, _) => Err(ea),
            (_, MetaError::UnsupportedVersion { .. }) => Err(eb),
            (MetaError::BadMagic { .. }, MetaError::BadMagic { .. }) => Err(ea),
            _ => Err(MetaError::NoValidSuperblock { a: ea.to_string(), b: eb.to_string() }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            seq: 7,
            resource: "iscsi.target.0".into(),
            data_size: 1 << 30,
            bytes_per_bit: 4096,
            al_slots: 8,
            al_extents: 1237,
            bitmap_bytes: 32768,
            md_size: 1 << 20,
            current_uuid: 0xABCD_EF01_2345_6781,
            bitmap_uuid: 0x1000,
            history_uuids: [0x2000, 0x3000],
            device_uuid: 99,
            flags: flags::CONSISTENT | flags::AL_CLEAN,
            node_generation: 3,
            pr: Vec::new(),
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Superblock::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn pr_area_round_trips_and_old_superblocks_read_as_empty() {
        let mut s = sample();
        s.pr = (0..PR_MAX).map(|i| i as u8).collect();
        assert_eq!(Superblock::decode(&s.encode()).unwrap(), s);
        // A superblock from before the PR area: zeroes there, an empty blob.
        let mut old = sample().encode();
        old[PR_AREA..].fill(0);
        let c = crc_of(&old);
        old[12..16].copy_from_slice(&c.to_le_bytes());
        assert!(Superblock::decode(&old).unwrap().pr.is_empty());
        // A length beyond the area is refused even with a good checksum.
        let mut b = sample().encode();
        b[PR_AREA..PR_AREA + 4].copy_from_slice(&((PR_MAX + 1) as u32).to_le_bytes());
        let c = crc_of(&b);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        assert!(matches!(Superblock::decode(&b), Err(MetaError::BadField { field: "pr", .. })));
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let b = sample().encode();
        for i in 0..4096 {
            let mut c = b;
            c[i] ^= 0x40;
            match Superblock::decode(&c) {
                Err(MetaError::BadMagic { .. }) => assert!(i < 8, "flip at {i}"),
                Err(MetaError::BadChecksum { .. }) => assert!(i >= 8, "flip at {i}"),
                other => panic!("flip at {i} gave {other:?}"),
            }
        }
        assert!(matches!(Superblock::decode(&b[..4095]), Err(MetaError::Truncated { need: 4096, got: 4095 })));
    }

    #[test]
    fn insane_fields_are_refused_even_with_a_good_checksum() {
        let mut s = sample();
        s.al_slots = 2;
        assert!(matches!(Superblock::decode(&s.encode()), Err(MetaError::BadField { field: "al_slots", .. })));
        let mut s = sample();
        s.bitmap_bytes += 4096;
        assert!(matches!(Superblock::decode(&s.encode()), Err(MetaError::BadField { field: "bitmap_bytes", .. })));
        let mut b = sample().encode();
        b[112] = 200;
        let c = crc_of(&b);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        assert!(matches!(Superblock::decode(&b), Err(MetaError::BadField { field: "resource", .. })));
    }

    #[test]
    fn future_version_is_refused() {
        let mut s = sample();
        s.version = 2;
        assert!(matches!(Superblock::decode(&s.encode()), Err(MetaError::UnsupportedVersion { found: 2 })));
    }

    #[test]
    fn torn_newer_slot_falls_back_to_older() {
        let old = sample();
        let mut new = sample();
        new.seq = 8;
        new.current_uuid = 0x5555;
        // Only the start of the new block landed (header, seq and crc); the rest is the old one.
        let mut torn = old.encode();
        torn[..40].copy_from_slice(&new.encode()[..40]);
        let (sb, rep) = pick_newest(&old.encode(), &torn).unwrap();
        assert_eq!(sb, old);
        assert!(rep.other_problem.unwrap().contains("slot B"));
        let (sb, rep) = pick_newest(&old.encode(), &new.encode()).unwrap();
        assert_eq!((sb.seq, rep.newest), (8, 1));
    }

    #[test]
    fn two_bad_slots_say_why() {
        let mut a = sample().encode();
        a[100] ^= 1;
        let e = pick_newest(&a, &[0u8; 4096]).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("magic"), "{e}");
    }
}
