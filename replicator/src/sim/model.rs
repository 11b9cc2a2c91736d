//! What the application may read back: per 512-byte sector, the last acknowledged write and the
//! writes issued after it whose fate is unknown (in flight, failed, or lost in a crash).

use super::world::SECTOR;

/// Content written by write `id` into sector `s`: the pair (id, s) repeated.
pub fn fill(id: u64, first_sector: u64, sectors: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(sectors * SECTOR);
    for k in 0..sectors as u64 {
        for _ in 0..SECTOR / 16 {
            v.extend_from_slice(&id.to_le_bytes());
            v.extend_from_slice(&(first_sector + k).to_le_bytes());
        }
    }
    v
}

/// Which write a sector holds (0 = never written), or None if it is garbage.
pub fn tag(sector_bytes: &[u8], sector: u64) -> Option<u64> {
    if sector_bytes.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let id = u64::from_le_bytes(sector_bytes[0..8].try_into().ok()?);
    let s = u64::from_le_bytes(sector_bytes[8..16].try_into().ok()?);
    let same = sector_bytes.chunks(16).all(|c| c[0..8] == id.to_le_bytes() && c[8..16] == s.to_le_bytes());
    (same && s == sector).then_some(id)
}

#[derive(Clone, Default)]
struct Sector {
    acked: u64,
    maybe: Vec<u64>,
}

pub struct Model {
    sectors: Vec<Sector>,
}

impl Model {
    pub fn new(size: u64) -> Self {
        Model { sectors: vec![Sector::default(); (size / SECTOR as u64) as usize] }
    }

    pub fn issued(&mut self, id: u64, first: u64, n: u64) {
        for s in first..first + n {
            self.sectors[s as usize].maybe.push(id);
        }
    }

    /// Write `id` was acknowledged: it is the sector's value unless a later write (also issued after
    /// it, since overlapping writes are ordered) lands.
    pub fn acked(&mut self, id: u64, first: u64, n: u64) {
        for s in first..first + n {
            let sec = &mut self.sectors[s as usize];
            if id > sec.acked {
                sec.acked = id;
            }
            sec.maybe.retain(|&m| m > sec.acked);
        }
    }

    /// Whether sector `s` may read back as write `id` (its last acknowledged write or a later one
    /// whose fate is unknown).
    pub fn allows(&self, s: u64, id: u64) -> bool {
        let sec = &self.sectors[s as usize];
        id == sec.acked || sec.maybe.contains(&id)
    }

    /// Check a copy of the device against the model.
    pub fn check(&self, data: &[u8], who: &str) -> Result<(), String> {
        for (i, sec) in self.sectors.iter().enumerate() {
            let bytes = &data[i * SECTOR..(i + 1) * SECTOR];
            match tag(bytes, i as u64) {
                Some(t) if t == sec.acked || sec.maybe.contains(&t) => {}
                Some(t) => {
                    return Err(format!(
                        "{who}: sector {i} holds write {t}, but the last acknowledged write is {} (unacknowledged later: {:?}) — an acknowledged write was lost",
                        sec.acked, sec.maybe
                    ))
                }
                None => return Err(format!("{who}: sector {i} holds garbage (a torn or foreign write)")),
            }
        }
        Ok(())
    }
}

/// A persistent-reservation blob for update `id` (simulations): the id, then `len - 8` bytes derived
/// from it, so a torn or mixed blob is recognisable.
pub fn pr_blob(id: u64, len: usize) -> bytes::Bytes {
    let mut b = id.to_le_bytes().to_vec();
    b.extend((0..len.saturating_sub(8)).map(|k| (id as u8).wrapping_mul(31).wrapping_add(k as u8)));
    bytes::Bytes::from(b)
}

/// The update id a stored PR blob belongs to (None: no state yet), or why it is not one update's blob.
pub fn pr_id(blob: &[u8]) -> Result<Option<u64>, String> {
    if blob.is_empty() {
        return Ok(None);
    }
    let head: [u8; 8] = blob.get(..8).ok_or("PR blob shorter than 8 bytes")?.try_into().map_err(|_| "PR blob header")?;
    let id = u64::from_le_bytes(head);
    if blob[8..].iter().enumerate().any(|(k, &v)| v != (id as u8).wrapping_mul(31).wrapping_add(k as u8)) {
        return Err(format!("PR blob of update {id} does not match its pattern (torn or mixed)"));
    }
    Ok(Some(id))
}

/// Checks a node's PR state against the highest update acknowledged OK (updates are issued in id
/// order by the one Primary): it must be one update's whole blob, not older than that.
pub fn check_pr(blob: &[u8], acked: Option<u64>, who: &str) -> Result<(), String> {
    let id = pr_id(blob).map_err(|e| format!("{who}: damaged PR state: {e}"))?;
    match acked {
        Some(a) if id.is_none_or(|v| v < a) => {
            Err(format!("{who}: PR state {id:?} is older than the acknowledged update {a}"))
        }
        _ => Ok(()),
    }
}
