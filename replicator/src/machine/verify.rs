//! Online verify (`haadm verify`): the node that runs it (VerifyS) walks the device in chunks, reads
//! each chunk locally and asks the peer (VerifyT) for a digest of the same range with the configured
//! `verify-alg`. A chunk whose digests differ is narrowed down: each of its 4 KiB blocks is compared
//! the same way, so only the blocks that really differ are marked out of sync, on both sides. Without
//! `--repair` nothing is copied (DRBD semantics: a later resync moves them) and the `out-of-sync`
//! handler runs at the end; with `--repair` the marked blocks are resynced from this node over the
//! established link at once (`repair.rs`). `syncer.verify-rate` caps the bytes compared per second.
//!
//! Why the answer can be trusted while the application writes: verify only runs on the Primary or when
//! neither node is Primary, so every writer goes through this node; a chunk is held against application
//! writes from the moment it is issued until both digests are in (writes to it wait, as they do for a
//! resync range), and it is never issued while a write to it is still unacknowledged by the peer. The
//! request travels behind every earlier Data frame on the same ordered connection, and those writes are
//! on the peer's disk before their acks, so both sides digest the same generation of the chunk.

use super::node::{Action, Node, Purpose, BLOCK};
use super::snapshot::VerifyOutcome;
use super::state::{ConnState, DiskState, ReplState, Role};
use crate::wire::frame::Frame;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Bytes per verify request (one digest each; a mismatch is narrowed down to 4 KiB blocks).
pub(crate) const VERIFY_CHUNK: u64 = 128 * 1024;
/// Largest request a VerifyT answers (older releases ask for 32 KiB; keep room for larger ones).
const MAX_VERIFY_REQUEST: u64 = 1024 * 1024;
/// Requests in flight when the application is idle / busy.
const WINDOW_IDLE: usize = 16;
const WINDOW_BUSY: usize = 2;
/// The application counts as busy for this long after its last write.
const BUSY_MS: u64 = 100;

/// A running online verify on this node (the VerifyS side).
#[derive(Debug, Clone)]
pub(crate) struct Verify {
    /// Next byte offset to issue.
    pub cursor: u64,
    pub inflight: BTreeMap<u64, VerifyChunk>,
    /// Blocks of differing chunks still to compare one by one.
    pub refine: VecDeque<u64>,
    pub started_ms: u64,
    pub checked_bytes: u64,
    pub found_bytes: u64,
    /// `--repair`: resync what was found from here when done.
    pub repair: bool,
    /// `verify-rate` token bucket (bytes; refilled on every pump).
    pub budget_bytes: f64,
    pub last_refill_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct VerifyChunk {
    pub len: u64,
    /// Digest of our copy (`None` until read; an empty digest means the read failed).
    pub local: Option<Bytes>,
    pub peer: Option<Bytes>,
    /// A single block of a differing chunk (its verdict is final).
    pub fine: bool,
}

/// What outlives a verify run: its outcome for status and metrics, and whether the peer can take an
/// in-place repair (`repair.rs`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VerifyKeeping {
    pub last: Option<VerifyOutcome>,
    pub peer_can_repair: bool,
}

/// Digest of `data` with a DRBD `verify-alg` name (`sha1`, `md5`, `crc32c`); unknown names use sha1
/// (the configuration layer only lets the three through).
pub fn verify_digest(alg: &str, data: &[u8]) -> Bytes {
    use sha1::Digest;
    match alg {
        "md5" => Bytes::copy_from_slice(&md5::Md5::digest(data)),
        "crc32c" => Bytes::copy_from_slice(&crc32c::crc32c(data).to_be_bytes()),
        _ => Bytes::copy_from_slice(&sha1::Sha1::digest(data)),
    }
}

impl Node {
    /// Whether `verify` may start now, and why not.
    pub fn check_verify(&self) -> Result<(), String> {
        if self.verify.is_some() {
            return Err("an online verify is already running".into());
        }
        if self.conn != ConnState::Connected || self.repl != ReplState::Established {
            return Err(format!("needs an established connection with no resync running (connection {}, replication {})", self.conn, self.repl));
        }
        if self.disk != DiskState::UpToDate || self.peer_disk != DiskState::UpToDate {
            return Err(format!("both disks must be UpToDate (local {}, peer {})", self.disk, self.peer_disk));
        }
        if self.peer_verifying {
            return Err("the peer runs an online verify against this node; wait until it ends".into());
        }
        if self.peer_role == Role::Primary {
            return Err("the peer is Primary: run verify there (its writes must pass through the verifying node)".into());
        }
        Ok(())
    }

    pub(crate) fn on_verify_verb(&mut self, repair: bool) {
        if let Err(e) = self.check_verify() {
            self.log(true, format!("{}: verify refused: {e}", self.p.resource));
            return;
        }
        self.verify = Some(Verify {
            cursor: 0,
            inflight: BTreeMap::new(),
            refine: VecDeque::new(),
            started_ms: self.now_ms,
            checked_bytes: 0,
            found_bytes: 0,
            repair,
            budget_bytes: 0.0,
            last_refill_ms: self.now_ms,
        });
        let rate = self.p.verify_rate.map_or("unlimited".to_string(), |r| format!("{} KiB/s", r / 1024));
        self.log(false, format!(
            "{}: online verify started ({}, {} KiB, rate {rate}{})",
            self.p.resource,
            self.p.verify_alg,
            self.p.data_size / 1024,
            if repair { ", repairing what differs" } else { "" }
        ));
        self.broadcast_state();
        self.changed();
        self.pump_verify();
    }

    /// Issue chunk requests up to the window (and the rate budget); finish when everything was compared.
    pub(crate) fn pump_verify(&mut self) {
        let Some(conn) = self.up_conn() else { return };
        let now = self.now_ms;
        let busy = self.last_app_write_ms != 0 && now.saturating_sub(self.last_app_write_ms) < BUSY_MS;
        let window = if busy { WINDOW_BUSY } else { WINDOW_IDLE };
        let size = self.p.data_size;
        let rate = self.p.verify_rate;
        if let (Some(r), Some(v)) = (rate, self.verify.as_mut()) {
            // As the resync's bucket: up to half a second of unused budget carries over (at least two
            // requests, so slow caps still move).
            let elapsed = now.saturating_sub(v.last_refill_ms) as f64 / 1000.0;
            let cap = (r as f64 / 2.0).max(2.0 * VERIFY_CHUNK as f64);
            v.budget_bytes = (v.budget_bytes + r as f64 * elapsed).min(cap);
            v.last_refill_ms = now;
        }
        // Bounded: each pass issues one request or stops.
        for _ in 0..WINDOW_IDLE {
            let Some(v) = self.verify.as_ref() else { return };
            if v.inflight.len() >= window {
                break;
            }
            // Blocks of a differing chunk first: they are few and end the chunk's story.
            let (offset, len, fine) = match v.refine.front() {
                Some(&b) => (b, BLOCK.min(size - b), true),
                None if v.cursor < size => (v.cursor, VERIFY_CHUNK.min(size - v.cursor), false),
                None => break,
            };
            if rate.is_some() && v.budget_bytes < len as f64 {
                break;
            }
            // A write to this range is in flight (or queued before us): verify it after it is acked.
            if self.conflicts(offset, len, self.waiting.len()) {
                break;
            }
            if let Some(v) = self.verify.as_mut() {
                if fine {
                    v.refine.pop_front();
                } else {
                    v.cursor = offset + len;
                }
                if rate.is_some() {
                    v.budget_bytes -= len as f64;
                }
                v.inflight.insert(offset, VerifyChunk { len, local: None, peer: None, fine });
            }
            let token = self.token(Purpose::VerifyLocal { offset });
            self.out.push(Action::DiskRead { token, offset, len });
            self.send(conn, Frame::VerifyRequest { offset, len: len as u32 });
        }
        if self.verify.as_ref().is_some_and(|v| v.cursor >= size && v.inflight.is_empty() && v.refine.is_empty()) {
            self.finish_verify();
        }
    }

    pub(crate) fn verify_local_done(&mut self, offset: u64, result: Result<Option<Bytes>, String>) {
        let digest = match result {
            Ok(Some(d)) => verify_digest(&self.p.verify_alg, &d),
            _ => Bytes::new(),
        };
        if let Some(c) = self.verify.as_mut().and_then(|v| v.inflight.get_mut(&offset)) {
            c.local = Some(digest);
        }
        self.compare_chunk(offset);
    }

    pub(crate) fn on_verify_reply(&mut self, offset: u64, digest: Bytes) {
        if let Some(c) = self.verify.as_mut().and_then(|v| v.inflight.get_mut(&offset)) {
            c.peer = Some(digest);
        }
        self.compare_chunk(offset);
    }

    fn compare_chunk(&mut self, offset: u64) {
        let Some(v) = self.verify.as_mut() else { return };
        let ready = v.inflight.get(&offset).is_some_and(|c| c.local.is_some() && c.peer.is_some());
        if !ready {
            return;
        }
        let Some(c) = v.inflight.remove(&offset) else { return };
        if !c.fine {
            v.checked_bytes += c.len;
        }
        let same = matches!((&c.local, &c.peer), (Some(a), Some(b)) if !a.is_empty() && a == b);
        if !same && !c.fine && c.len > BLOCK {
            // Narrow it down: compare each block of the chunk on its own.
            v.refine.extend((offset..offset + c.len).step_by(BLOCK as usize));
        } else if !same {
            v.found_bytes += c.len;
            self.bitmap.set_range(offset, c.len);
            if let Some(conn) = self.up_conn() {
                self.send(conn, Frame::OutOfSync { offset, len: c.len as u32 });
            }
        }
        // The chunk no longer holds writes back.
        self.start_waiting_writes();
        self.pump_verify();
    }

    fn finish_verify(&mut self) {
        let Some(v) = self.verify.take() else { return };
        let secs = self.now_ms.saturating_sub(v.started_ms) as f64 / 1000.0;
        let mib_s = if secs > 0.0 { v.checked_bytes as f64 / 1048576.0 / secs } else { 0.0 };
        let next = match (v.found_bytes > 0, v.repair) {
            (false, _) => "",
            (true, true) => " (marked in the bitmap; repairing: resync from this node)",
            (true, false) => " (marked in the bitmap; disconnect and connect to resync them, or verify --repair)",
        };
        let msg = format!(
            "{}: online verify finished in {secs:.1} s ({mib_s:.0} MiB/s): {} KiB out of sync of {} KiB checked{next}",
            self.p.resource,
            v.found_bytes / 1024,
            v.checked_bytes / 1024,
        );
        self.log(v.found_bytes > 0, msg);
        self.verify_keeping.last = Some(VerifyOutcome {
            started_ms: v.started_ms,
            finished_ms: self.now_ms,
            checked_bytes: v.checked_bytes,
            found_bytes: v.found_bytes,
            completed: true,
            repair: v.repair,
        });
        if v.found_bytes > 0 {
            self.out.push(Action::RunHandler("out-of-sync"));
            let pages = self.bitmap.take_dirty_pages();
            if !pages.is_empty() {
                self.out.push(Action::PersistBitmap(pages));
            }
        }
        self.broadcast_state();
        self.changed();
        if v.found_bytes > 0 && v.repair {
            self.start_repair();
        }
    }

    /// A verify that ends before its last chunk (link lost, peer promoted): recorded as not completed.
    pub(crate) fn record_aborted_verify(&mut self, v: &Verify) {
        self.verify_keeping.last = Some(VerifyOutcome {
            started_ms: v.started_ms,
            finished_ms: self.now_ms,
            checked_bytes: v.checked_bytes,
            found_bytes: v.found_bytes,
            completed: false,
            repair: v.repair,
        });
    }

    /// The VerifyT side: digest our copy of the range and answer.
    pub(crate) fn on_verify_request(&mut self, conn: u64, offset: u64, len: u64) {
        if len == 0 || len > MAX_VERIFY_REQUEST || self.in_range(offset, len).is_err() || !self.disk.is_consistent() {
            self.send(conn, Frame::VerifyReply { offset, len: len as u32, digest: Bytes::new() });
            return;
        }
        let token = self.token(Purpose::PeerVerifyRead { conn, offset, len });
        self.out.push(Action::DiskRead { token, offset, len });
    }

    pub(crate) fn peer_verify_read_done(&mut self, conn: u64, offset: u64, len: u64, result: Result<Option<Bytes>, String>) {
        let digest = match result {
            Ok(Some(d)) => verify_digest(&self.p.verify_alg, &d),
            _ => Bytes::new(),
        };
        self.send(conn, Frame::VerifyReply { offset, len: len as u32, digest });
    }

    /// The peer became Primary while we verify from the Secondary side: its writes no longer pass
    /// through us, so a chunk could be digested at two generations. Stop rather than report noise.
    pub(crate) fn abort_verify_if_peer_primary(&mut self) {
        if self.peer_role == Role::Primary && self.role != Role::Primary && let Some(v) = self.verify.take() {
            self.record_aborted_verify(&v);
            self.log(true, format!("{}: online verify aborted at {} KiB: the peer became Primary", self.p.resource, v.cursor / 1024));
            self.broadcast_state();
            self.changed();
        }
    }

    /// The verifying peer found this range different: remember it for the next resync.
    pub(crate) fn on_out_of_sync(&mut self, offset: u64, len: u64) {
        if self.in_range(offset, len).is_ok() && self.bitmap.set_range(offset, len) > 0 {
            self.changed();
        }
    }

    /// Ranges held by a running verify (application writes to them wait).
    pub(crate) fn verify_holds(&self, span: impl Fn(u64, u64) -> bool) -> bool {
        self.verify.as_ref().is_some_and(|v| v.inflight.iter().any(|(&o, c)| span(o, c.len)))
    }
}

#[cfg(test)]
mod tests {
    use super::verify_digest;

    #[test]
    fn digests_follow_the_configured_algorithm() {
        let a = vec![0xABu8; 32 * 1024];
        let mut b = a.clone();
        b[4097] ^= 1;
        for (alg, len) in [("sha1", 20), ("md5", 16), ("crc32c", 4)] {
            assert_eq!(verify_digest(alg, &a).len(), len, "{alg}");
            assert_eq!(verify_digest(alg, &a), verify_digest(alg, &a.clone()), "{alg} is deterministic");
            assert_ne!(verify_digest(alg, &a), verify_digest(alg, &b), "{alg} sees one flipped bit");
        }
    }
}
