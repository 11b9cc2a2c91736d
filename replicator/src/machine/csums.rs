//! Checksum-based resync (DRBD's `csums-alg`): before the SyncSource sends a resync range it asks the
//! SyncTarget for a digest of each 4 KiB block of it (CsumRequest → CsumReply, protocol 4), reads the
//! same range itself, and compares. Blocks whose digests are equal are declared in sync on both sides
//! (their bits cleared here, RsInSync to the target) without moving their data; only the runs of
//! differing blocks travel as RsData and are acknowledged as usual. A full sync of two replicas that
//! are mostly the same (an `invalidate`, a disk that was only suspected bad, a fresh pair of zeroed
//! disks) then moves digests instead of data.
//!
//! Which resyncs use it: with the default `csums-for: full`, only resyncs that start with every block
//! marked (initial full sync, `invalidate`, a detached disk coming back); a bitmap resync moves blocks
//! that were written, which differ anyway, so digesting them first would only cost a round trip and a
//! read on each side (`csums-for: all` does it anyway). The source decides alone when the resync
//! starts — its options, the agreed protocol (a peer below version 4 never sees these frames: the
//! resync then runs plain) — and names the algorithm in every request, so the two sides cannot
//! disagree on it. A SyncTarget that is Primary writes behind the source's back, so its blocks are not
//! digested (requests issued while the peer is Primary go plain).
//!
//! Why "equal" may clear bits: the invariants say only stable data clears out-of-sync bits (resync
//! writes are FUA). The source flushed its own disk before its first request (`resync.rs`); the target
//! flushes its disk before it digests anything of this resync (requests arriving meanwhile wait), so
//! the blocks both digested are the blocks a power loss would leave. Application writes to a range
//! wait while the range is in flight (it sits in the resync's `inflight` like a plain request), and a
//! request is never issued over a write still unacknowledged, so both sides digest the same data.

use super::node::{Action, Node, Purpose, BLOCK, RESYNC_CHUNK};
use super::state::{ReplState, Role};
use crate::wire::frame::{Frame, PROTOCOL_CSUMS};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::fmt;

/// Digest algorithm of a checksum-based resync; the code travels in CsumRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumAlg {
    Crc32c,
    Md5,
    Sha1,
}

impl CsumAlg {
    pub fn code(self) -> u8 {
        match self {
            CsumAlg::Crc32c => 1,
            CsumAlg::Md5 => 2,
            CsumAlg::Sha1 => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<CsumAlg> {
        [CsumAlg::Crc32c, CsumAlg::Md5, CsumAlg::Sha1].into_iter().find(|a| a.code() == code)
    }

    /// The DRBD name (`crc32c`, `md5`, `sha1`), as in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            CsumAlg::Crc32c => "crc32c",
            CsumAlg::Md5 => "md5",
            CsumAlg::Sha1 => "sha1",
        }
    }

    pub fn from_name(name: &str) -> Option<CsumAlg> {
        [CsumAlg::Crc32c, CsumAlg::Md5, CsumAlg::Sha1].into_iter().find(|a| a.name() == name)
    }

    pub fn digest_len(self) -> usize {
        match self {
            CsumAlg::Crc32c => 4,
            CsumAlg::Md5 => 16,
            CsumAlg::Sha1 => 20,
        }
    }
}

impl fmt::Display for CsumAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `syncer.csums-alg` / `csums-for` of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsumsOptions {
    /// `None`: every resync moves all its blocks (`csums-alg: none`).
    pub alg: Option<CsumAlg>,
    /// Also for bitmap resyncs (`csums-for: all`), not only for full ones.
    pub every_resync: bool,
}

impl Default for CsumsOptions {
    /// sha1 (collisions are not a practical concern for equality of one's own blocks, and it runs at
    /// disk speed with SHA instructions), full syncs only.
    fn default() -> Self {
        CsumsOptions { alg: Some(CsumAlg::Sha1), every_resync: false }
    }
}

/// The SyncSource's checksum state for one resync.
#[derive(Debug, Clone)]
pub(crate) struct CsumSource {
    pub alg: CsumAlg,
    /// Ranges asked about, by offset: our data and the peer's digests as they arrive.
    pub chunks: BTreeMap<u64, CsumChunk>,
}

#[derive(Debug, Clone)]
pub(crate) struct CsumChunk {
    pub len: u64,
    pub local: Option<Bytes>,
    pub peer: Option<Bytes>,
}

/// The SyncTarget's side: its disk is flushed once per resync before it digests anything.
#[derive(Debug, Clone)]
pub(crate) struct CsumTarget {
    pub conn: u64,
    pub flushed: bool,
    /// Requests that arrived before the flush completed: (offset, len, alg code).
    pub queued: Vec<(u64, u64, u8)>,
}

/// One digest per 4 KiB block of `data` (the last one may be shorter), concatenated. Uses the digest
/// code of online verify.
pub fn block_digests(alg: CsumAlg, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len().div_ceil(BLOCK as usize) * alg.digest_len());
    for block in data.chunks(BLOCK as usize) {
        out.extend_from_slice(&super::verify::verify_digest(alg.name(), block));
    }
    out.freeze()
}

/// Runs of equal (`true`) and differing blocks of a range of `len` bytes, as (equal, offset within the
/// range, length). A peer digest list of the wrong size (the target could not read) differs everywhere.
pub(crate) fn compare_runs(alg: CsumAlg, local: &[u8], peer: &[u8], len: u64) -> Vec<(bool, u64, u64)> {
    let ours = block_digests(alg, local);
    let d = alg.digest_len();
    let comparable = peer.len() == ours.len() && local.len() as u64 == len;
    let mut runs: Vec<(bool, u64, u64)> = Vec::new();
    for (i, start) in (0..len).step_by(BLOCK as usize).enumerate() {
        let blen = BLOCK.min(len - start);
        let equal = comparable && ours.get(i * d..(i + 1) * d) == peer.get(i * d..(i + 1) * d);
        match runs.last_mut() {
            Some((e, _, l)) if *e == equal => *l += blen,
            _ => runs.push((equal, start, blen)),
        }
    }
    runs
}

impl Node {
    /// The SyncSource's decision at the start of a resync (see the module doc).
    pub(crate) fn csum_plan(&self) -> Option<CsumSource> {
        let alg = self.p.csums.alg?;
        if self.link.as_ref().is_none_or(|l| l.proto < PROTOCOL_CSUMS) {
            return None;
        }
        let full = self.bitmap.count() >= self.p.data_size.div_ceil(BLOCK);
        (full || self.p.csums.every_resync).then(|| CsumSource { alg, chunks: BTreeMap::new() })
    }

    /// Whether the next resync request goes as a CsumRequest.
    pub(crate) fn csums_now(&self) -> bool {
        self.peer_role != Role::Primary && self.resync.as_ref().is_some_and(|r| r.csums.is_some())
    }

    /// Ask the peer for the digests of `[offset, +len)` and read our copy (the range is already in the
    /// resync's `inflight`).
    pub(crate) fn issue_csum_chunk(&mut self, conn: u64, offset: u64, len: u64) {
        let Some(cs) = self.resync.as_mut().and_then(|r| r.csums.as_mut()) else { return };
        cs.chunks.insert(offset, CsumChunk { len, local: None, peer: None });
        let alg = cs.alg.code();
        let token = self.token(Purpose::CsumLocal { conn, offset });
        self.out.push(Action::DiskRead { token, offset, len });
        self.send(conn, Frame::CsumRequest { offset, len: len as u32, alg });
    }

    pub(crate) fn csum_local_done(&mut self, conn: u64, offset: u64, result: Result<Option<Bytes>, String>) {
        if self.link.as_ref().is_none_or(|l| l.conn != conn) {
            return;
        }
        match result {
            Ok(Some(data)) => {
                if let Some(c) = self.resync.as_mut().and_then(|r| r.csums.as_mut()).and_then(|cs| cs.chunks.get_mut(&offset)) {
                    c.local = Some(data);
                }
                self.csum_compare(conn, offset);
            }
            Ok(None) | Err(_) => {
                let e = result.err().unwrap_or_else(|| "no data".into());
                self.abort(conn, &format!("resync source could not read its disk at {offset}: {e}"), true);
            }
        }
    }

    pub(crate) fn on_csum_reply(&mut self, conn: u64, offset: u64, digests: Bytes) {
        match self.resync.as_mut().and_then(|r| r.csums.as_mut()).and_then(|cs| cs.chunks.get_mut(&offset)) {
            Some(c) if c.peer.is_none() => c.peer = Some(digests),
            _ => {
                self.abort(conn, &format!("protocol error: unexpected CsumReply at {offset}"), true);
                return;
            }
        }
        self.csum_compare(conn, offset);
    }

    /// Both digests of a range are in: declare the equal runs in sync, send the differing ones.
    fn csum_compare(&mut self, conn: u64, offset: u64) {
        let Some(rs) = self.resync.as_mut() else { return };
        let Some(cs) = rs.csums.as_mut() else { return };
        if !cs.chunks.get(&offset).is_some_and(|c| c.local.is_some() && c.peer.is_some()) {
            return;
        }
        let Some(CsumChunk { len, local: Some(data), peer: Some(peer) }) = cs.chunks.remove(&offset) else { return };
        let alg = cs.alg;
        rs.inflight.remove(&offset);
        let runs = compare_runs(alg, &data, &peer, len);
        for (equal, start, rlen) in runs {
            let at = offset + start;
            if equal {
                self.clear_resynced(at, rlen);
                self.stats.resync_csum_equal_bytes += rlen;
                self.send(conn, Frame::RsInSync { offset: at, len: rlen as u32 });
            } else {
                if let Some(rs) = self.resync.as_mut() {
                    rs.inflight.insert(at, rlen);
                    // The rate caps what crosses the link: only differing data is charged.
                    rs.budget_bytes -= rlen as f64;
                }
                self.stats.resync_blocks_sent += rlen.div_ceil(BLOCK);
                self.send(conn, Frame::RsData { offset: at, data: data.slice(start as usize..(start + rlen) as usize) });
            }
        }
        self.start_waiting_writes();
        self.pump_resync();
    }

    /// The SyncTarget side: digest our copy of the range once our disk is flushed.
    pub(crate) fn on_csum_request(&mut self, conn: u64, offset: u64, len: u64, alg: u8) {
        if self.repl != ReplState::SyncTarget || len == 0 || len > RESYNC_CHUNK || self.in_range(offset, len).is_err() {
            self.abort(conn, &format!("protocol error: unexpected CsumRequest [{offset}, +{len}) in state {}", self.repl), true);
            return;
        }
        match self.csum_target.as_mut() {
            Some(t) if t.conn == conn && t.flushed => self.csum_digest_read(conn, offset, len, alg),
            Some(t) if t.conn == conn => t.queued.push((offset, len, alg)),
            _ => {
                self.csum_target = Some(CsumTarget { conn, flushed: false, queued: vec![(offset, len, alg)] });
                let token = self.token(Purpose::CsumTargetFlush { conn });
                self.out.push(Action::DiskFlush { token });
            }
        }
    }

    pub(crate) fn csum_target_flush_done(&mut self, conn: u64, result: Result<(), String>) {
        let Some(t) = self.csum_target.as_mut().filter(|t| t.conn == conn) else { return };
        if let Err(e) = result {
            self.abort(conn, &format!("resync target could not flush its disk before comparing digests: {e}"), true);
            return;
        }
        t.flushed = true;
        for (offset, len, alg) in std::mem::take(&mut t.queued) {
            self.csum_digest_read(conn, offset, len, alg);
        }
    }

    fn csum_digest_read(&mut self, conn: u64, offset: u64, len: u64, alg: u8) {
        let token = self.token(Purpose::CsumPeerRead { conn, offset, len, alg });
        self.out.push(Action::DiskRead { token, offset, len });
    }

    pub(crate) fn csum_peer_read_done(&mut self, conn: u64, offset: u64, len: u64, alg: u8, result: Result<Option<Bytes>, String>) {
        // Unknown algorithm or unreadable range: no digests, so the source sends the data.
        let digests = match (CsumAlg::from_code(alg), result) {
            (Some(alg), Ok(Some(d))) if d.len() as u64 == len => block_digests(alg, &d),
            _ => Bytes::new(),
        };
        self.send(conn, Frame::CsumReply { offset, len: len as u32, digests });
    }

    /// The source found these blocks equal on both disks: they are in sync without a write.
    pub(crate) fn on_rs_in_sync(&mut self, conn: u64, offset: u64, len: u64) {
        if self.repl != ReplState::SyncTarget || len == 0 || self.in_range(offset, len).is_err() {
            self.abort(conn, &format!("protocol error: unexpected RsInSync [{offset}, +{len}) in state {}", self.repl), true);
            return;
        }
        self.clear_resynced(offset, len);
        self.stats.resync_csum_equal_bytes += len;
    }

    /// Clear every block of a resynced range, as an RsAck does (the device's last block may be short).
    fn clear_resynced(&mut self, offset: u64, len: u64) {
        let (b0, b1) = super::datapath::block_span(offset, len.max(1));
        for b in b0..=b1 {
            self.bitmap.clear_block(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for a in [CsumAlg::Crc32c, CsumAlg::Md5, CsumAlg::Sha1] {
            assert_eq!(CsumAlg::from_code(a.code()), Some(a));
            assert_eq!(CsumAlg::from_name(a.name()), Some(a));
            assert_eq!(block_digests(a, &[0u8; 4096]).len(), a.digest_len());
        }
        assert_eq!(CsumAlg::from_code(0), None);
        assert_eq!(CsumAlg::from_name("none"), None);
    }

    #[test]
    fn runs_split_at_differing_blocks() {
        let len = 6 * BLOCK + 512;
        let a = vec![5u8; len as usize];
        let mut b = a.clone();
        b[BLOCK as usize + 7] ^= 1; // block 1
        b[2 * BLOCK as usize] ^= 1; // block 2
        b[(6 * BLOCK) as usize + 3] ^= 1; // the short last block
        for alg in [CsumAlg::Crc32c, CsumAlg::Md5, CsumAlg::Sha1] {
            let runs = compare_runs(alg, &a, &block_digests(alg, &b), len);
            assert_eq!(
                runs,
                vec![(true, 0, BLOCK), (false, BLOCK, 2 * BLOCK), (true, 3 * BLOCK, 3 * BLOCK), (false, 6 * BLOCK, 512)],
                "{alg}"
            );
            assert_eq!(compare_runs(alg, &a, &block_digests(alg, &a), len), vec![(true, 0, len)]);
            // The target could not digest: everything is sent.
            assert_eq!(compare_runs(alg, &a, &[], len), vec![(false, 0, len)]);
        }
    }
}
