//! What the application may read back when disks have volatile write caches: per 512-byte sector, the
//! newest write the cluster promised to keep and the writes issued after it (whose fate is unknown).
//!
//! Two promises, one floor each:
//! - *durable*: the write was FUA and acknowledged, or acknowledged and then covered by a flush that
//!   completed (issued after the acknowledgement, on the same Primary). No failure may lose it.
//! - *acknowledged*: the write completed. Protocol C keeps it through any failure that leaves a complete
//!   replica serving; a power loss that takes every up-to-date cache may lose it (the LU reports a
//!   volatile cache, WCE=1), which the run records with [`FlushModel::forget_unflushed`].

use replicator::sim::model::tag;
use replicator::sim::world::SECTOR;

#[derive(Clone, Default)]
struct Sector {
    durable: u64,
    /// Never below `durable`.
    acked: u64,
    /// Writes issued to the sector after `durable`, ascending (ids grow with issue time, and the
    /// machine applies overlapping writes in issue order).
    issued: Vec<u64>,
}

/// Which promise a check holds the data to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promise {
    Durable,
    Acked,
}

pub struct FlushModel {
    sectors: Vec<Sector>,
}

impl FlushModel {
    pub fn new(size: u64) -> Self {
        FlushModel { sectors: vec![Sector::default(); (size / SECTOR as u64) as usize] }
    }

    fn range(&mut self, first: u64, n: u64) -> &mut [Sector] {
        &mut self.sectors[first as usize..(first + n) as usize]
    }

    pub fn issued(&mut self, id: u64, first: u64, n: u64) {
        for s in self.range(first, n) {
            s.issued.push(id);
        }
    }

    pub fn acked(&mut self, id: u64, first: u64, n: u64) {
        for s in self.range(first, n) {
            s.acked = s.acked.max(id);
        }
    }

    pub fn durable(&mut self, id: u64, first: u64, n: u64) {
        for s in self.range(first, n) {
            s.durable = s.durable.max(id);
            s.acked = s.acked.max(id);
            let d = s.durable;
            s.issued.retain(|&x| x > d);
        }
    }

    /// A power loss took every copy of the writes that were only acknowledged: from now on only the
    /// durable ones are owed (older acknowledged values may come back).
    pub fn forget_unflushed(&mut self) {
        for s in &mut self.sectors {
            s.acked = s.durable;
        }
    }

    /// Every acknowledged write is durable now (a flush completed on an idle, converged pair).
    pub fn all_acked_durable(&mut self) {
        for s in &mut self.sectors {
            s.durable = s.acked;
            let d = s.durable;
            s.issued.retain(|&x| x > d);
        }
    }

    /// Sector `s` may read as write `id` under `p`: the floor itself, or a write issued after it.
    pub fn allows(&self, s: u64, id: u64, p: Promise) -> bool {
        let sec = &self.sectors[s as usize];
        let floor = match p {
            Promise::Durable => sec.durable,
            Promise::Acked => sec.acked,
        };
        id == floor || (id > floor && sec.issued.contains(&id))
    }

    /// Check a whole device image. A broken durable promise is reported before a broken
    /// acknowledged one anywhere (it says which contract broke).
    pub fn check(&self, data: &[u8], who: &str) -> Result<(), String> {
        const ZERO: [u8; SECTOR] = [0; SECTOR];
        let mut lost_ack = None;
        for (i, sec) in self.sectors.iter().enumerate() {
            let bytes = &data[i * SECTOR..(i + 1) * SECTOR];
            // Most sectors were never written: one memcmp instead of decoding the tag.
            if sec.acked == 0 && sec.issued.is_empty() && bytes == ZERO {
                continue;
            }
            let Some(t) = tag(bytes, i as u64) else {
                return Err(format!("{who}: sector {i} holds garbage (a torn or foreign write)"));
            };
            let says = |what: &str| {
                format!(
                    "{who}: sector {i} holds write {t}, but the newest durable write is {}, the newest acknowledged one {} (issued since the durable one: {:?}) — {what}",
                    sec.durable, sec.acked, sec.issued
                )
            };
            if !self.allows(i as u64, t, Promise::Durable) {
                return Err(says("a FLUSHED or FUA write was lost (flush contract broken)"));
            }
            if lost_ack.is_none() && !self.allows(i as u64, t, Promise::Acked) {
                lost_ack = Some(says("an ACKNOWLEDGED write was lost"));
            }
        }
        lost_ack.map_or(Ok(()), Err)
    }
}
