//! A continuous iSCSI writer for the failover drills, running inside a network namespace.
//!
//! Every write is one 4 KiB block at a pseudo-random place in a bounded region, self-describing (magic,
//! block index, sequence number, CRC32C of the rest) so that after a drill every acknowledged write can be
//! checked on a backing file or through the target without keeping a copy of the data. The writer
//! reconnects on its own when the VIP moves or the target asks for logout, and it records what the drill
//! measures: which writes were acknowledged and when, and every error.

use crate::initiator::{Initiator, InitiatorConfig, InitiatorError};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Size of one drill block.
pub const BLOCK: usize = 4096;
/// First 8 bytes of every drill block.
pub const MAGIC: u64 = u64::from_be_bytes(*b"HADRILL1");
/// Header: magic (8), block index (8), sequence number (8), CRC32C of bytes 28.. (4).
const HEADER: usize = 28;

/// Why a block read back is not a valid drill block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("block is {0} bytes, not {BLOCK}")]
    Size(usize),
    #[error("no drill magic (never written?)")]
    NoMagic,
    #[error("block carries index {found}, expected {expected}")]
    WrongIndex { found: u64, expected: u64 },
    #[error("CRC mismatch (torn or corrupted block)")]
    Crc,
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_be_bytes(v)
}

/// The content of block `index` written with sequence number `seq`.
pub fn make_block(index: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[0..8].copy_from_slice(&MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&index.to_be_bytes());
    b[16..24].copy_from_slice(&seq.to_be_bytes());
    // Filler derived from the sequence number, so that two versions of a block differ everywhere.
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in b[HEADER..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let crc = crc32c::crc32c(&b[HEADER..]);
    b[24..28].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Checks a block read back and returns the sequence number it carries.
pub fn check_block(b: &[u8], index: u64) -> Result<u64, BlockError> {
    if b.len() != BLOCK {
        return Err(BlockError::Size(b.len()));
    }
    if be64(b, 0) != MAGIC {
        return Err(BlockError::NoMagic);
    }
    let found = be64(b, 8);
    if found != index {
        return Err(BlockError::WrongIndex {
            found,
            expected: index,
        });
    }
    let stored = b
        .get(24..28)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0);
    if crc32c::crc32c(b.get(HEADER..).unwrap_or(&[])) != stored {
        return Err(BlockError::Crc);
    }
    Ok(be64(b, 16))
}

/// Runs `f` on a fresh thread that has joined network namespace `/var/run/netns/<ns>` first (when given),
/// so that sockets it opens live in that namespace; the test thread itself never changes namespace.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let ns = ns.map(str::to_string);
    std::thread::Builder::new()
        .name("netns-worker".into())
        .spawn(move || {
            if let Some(ns) = ns {
                let path = format!("/var/run/netns/{ns}");
                let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .with_context(|| format!("setns into {path}"))?;
            }
            Ok(f())
        })
        .context("spawn netns thread")
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Network namespace to write from (`None`: the caller's).
    pub netns: Option<String>,
    pub initiator: InitiatorConfig,
    /// Writes go to blocks `0..region_blocks` (4 KiB each).
    pub region_blocks: u64,
    /// SYNCHRONIZE CACHE after this many acknowledged writes.
    pub sync_every: u64,
    /// Pause after a failed connect or a lost connection.
    pub backoff: Duration,
    /// Safety limit: the writer stops on its own after this long.
    pub time_limit: Duration,
    pub seed: u64,
    /// Wait the Time2Wait of a logout request before reconnecting, as RFC 7143 asks of initiators. Off by
    /// default: the drills reconnect at once to measure the hand-over itself, not the wait.
    pub honour_time2wait: bool,
}

impl WriterConfig {
    pub fn new(netns: Option<&str>, initiator: InitiatorConfig, region_blocks: u64) -> Self {
        WriterConfig {
            netns: netns.map(str::to_string),
            initiator,
            region_blocks,
            sync_every: 16,
            backoff: Duration::from_millis(100),
            time_limit: Duration::from_secs(120),
            seed: 0x5eed_1234_abcd_0001,
            honour_time2wait: false,
        }
    }
}

/// One write the target acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct AckedWrite {
    pub seq: u64,
    pub block: u64,
    pub at: Instant,
}

/// One error the writer saw.
#[derive(Debug, Clone)]
pub struct WriterErrorEvent {
    pub at: Instant,
    pub message: String,
    /// A CHECK CONDITION with sense key UNIT ATTENTION (expected after a failover).
    pub unit_attention: bool,
    /// Any other CHECK CONDITION or bad SCSI status: a write that FAILED.
    pub scsi_failure: bool,
    pub logout_requested: bool,
}

/// Everything the writer recorded.
#[derive(Debug, Default, Clone)]
pub struct WriterLog {
    /// Every write sent, acknowledged or not: (seq, block).
    pub issued: Vec<(u64, u64)>,
    pub acked: Vec<AckedWrite>,
    pub errors: Vec<WriterErrorEvent>,
    pub logins: u64,
    pub block_size: u32,
    /// Set when the writer could not run at all (namespace, runtime).
    pub fatal: Option<String>,
}

impl WriterLog {
    /// Block → latest acknowledged sequence number.
    pub fn latest_acked(&self) -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        for a in &self.acked {
            m.insert(a.block, a.seq);
        }
        m
    }

    /// Time from `t` to the first acknowledged write after it.
    pub fn first_ack_after(&self, t: Instant) -> Option<Duration> {
        self.acked.iter().find(|a| a.at > t).map(|a| a.at - t)
    }

    /// Kill → first acknowledged write, as the drills and failover benchmarks measure an outage: a write
    /// may still complete on the dying connection just after the kill, so the outage starts at the
    /// writer's first error after `killed` and ends with the first write acknowledged after that error.
    pub fn outage_after(&self, killed: Instant) -> Option<Duration> {
        let outage_start = self.errors_since(killed).next().map_or(killed, |e| e.at);
        self.first_ack_after(outage_start).map(|d| d + (outage_start - killed))
    }

    /// The longest time between two consecutive acknowledged writes acknowledged in `from..to`, and
    /// when it ended.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Option<(Duration, Instant)> {
        let mut best: Option<(Duration, Instant)> = None;
        let mut prev: Option<Instant> = None;
        for a in self.acked.iter().filter(|a| a.at >= from && a.at < to) {
            if let Some(p) = prev {
                let gap = a.at - p;
                if best.is_none_or(|(g, _)| gap > g) {
                    best = Some((gap, a.at));
                }
            }
            prev = Some(a.at);
        }
        best
    }

    /// Distinct blocks of the writes issued with `lo <= seq < hi` (acknowledged or not).
    pub fn distinct_blocks_issued(&self, lo: u64, hi: u64) -> usize {
        self.issued
            .iter()
            .filter(|(s, _)| *s >= lo && *s < hi)
            .map(|(_, b)| *b)
            .collect::<HashSet<_>>()
            .len()
    }

    pub fn errors_since(&self, t: Instant) -> impl Iterator<Item = &WriterErrorEvent> {
        self.errors.iter().filter(move |e| e.at >= t)
    }
}

/// A running writer. Dropping it stops the writer thread (also when a drill fails half-way).
pub struct WriterHandle {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WriterLog>>,
    thread: Option<JoinHandle<Result<()>>>,
}

fn lock(log: &Mutex<WriterLog>) -> MutexGuard<'_, WriterLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriterHandle {
    pub fn spawn(cfg: WriterConfig) -> Result<WriterHandle> {
        assert!(cfg.region_blocks > 0, "empty write region");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let (stop2, log2) = (Arc::clone(&stop), Arc::clone(&log));
        let ns = cfg.netns.clone();
        let thread = spawn_in_netns(ns.as_deref(), move || match current_thread_runtime() {
            Ok(rt) => rt.block_on(write_loop(cfg, stop2, log2)),
            Err(e) => lock(&log2).fatal = Some(format!("{e:#}")),
        })?;
        Ok(WriterHandle {
            stop,
            log,
            thread: Some(thread),
        })
    }

    /// A copy of the log so far.
    pub fn snapshot(&self) -> WriterLog {
        lock(&self.log).clone()
    }

    pub fn acked_count(&self) -> usize {
        lock(&self.log).acked.len()
    }

    /// The sequence number the next write will carry (a mark between drill phases).
    pub fn next_seq(&self) -> u64 {
        lock(&self.log).issued.last().map_or(1, |(s, _)| s + 1)
    }

    /// Waits until at least `n` writes in total are acknowledged; fails on timeout or if the writer died.
    pub fn wait_acked(&self, n: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let l = lock(&self.log);
                if let Some(f) = &l.fatal {
                    bail!("writer failed: {f}");
                }
                if l.acked.len() >= n {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "writer: only {} of {n} writes acknowledged in {limit:?}; last errors: {:?}",
                        l.acked.len(),
                        last_errors(&l)
                    );
                }
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                bail!("writer thread ended early: {:?}", lock(&self.log).fatal);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for an acknowledged write after `t`.
    pub fn wait_ack_after(&self, t: Instant, limit: Duration) -> Result<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(d) = lock(&self.log).first_ack_after(t) {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "no write acknowledged within {limit:?}; last errors: {:?}",
            last_errors(&lock(&self.log))
        )
    }

    /// Stops the writer (after a final SYNCHRONIZE CACHE and logout when connected) and returns its log.
    pub fn stop(mut self) -> Result<WriterLog> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => bail!("writer thread panicked"),
            }
        }
        let log = lock(&self.log).clone();
        if let Some(f) = &log.fatal {
            bail!("writer failed: {f}");
        }
        Ok(log)
    }
}

fn last_errors(l: &WriterLog) -> Vec<String> {
    l.errors
        .iter()
        .rev()
        .take(3)
        .map(|e| e.message.clone())
        .collect()
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Session {
    ini: Initiator,
    block_size: u32,
}

/// Logs in, clears a pending unit attention, learns the block size.
async fn open_session(cfg: &InitiatorConfig) -> Result<Session, InitiatorError> {
    let mut ini = Initiator::connect(cfg).await?;
    for _ in 0..3 {
        match ini.test_unit_ready().await {
            Err(e) if e.is_unit_attention() => continue,
            r => {
                r?;
                break;
            }
        }
    }
    let (_, block_size) = ini.read_capacity10().await?;
    if block_size == 0 || block_size as usize > BLOCK || !BLOCK.is_multiple_of(block_size as usize)
    {
        return Err(InitiatorError::Protocol(format!(
            "block size {block_size} does not divide {BLOCK}"
        )));
    }
    Ok(Session { ini, block_size })
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

async fn write_loop(cfg: WriterConfig, stop: Arc<AtomicBool>, log: Arc<Mutex<WriterLog>>) {
    let started = Instant::now();
    let mut rng = cfg.seed | 1;
    let mut seq = 0u64;
    let mut since_sync = 0u64;
    let mut session: Option<Session> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < cfg.time_limit {
        let s = match session.as_mut() {
            Some(s) => s,
            None => match open_session(&cfg.initiator).await {
                Ok(s) => {
                    let mut l = lock(&log);
                    l.logins += 1;
                    l.block_size = s.block_size;
                    session.insert(s)
                }
                Err(e) => {
                    record(&log, &e);
                    tokio::time::sleep(cfg.backoff).await;
                    continue;
                }
            },
        };
        let result = if since_sync >= cfg.sync_every {
            s.ini.sync_cache().await.map(|()| since_sync = 0)
        } else {
            seq += 1;
            let block = xorshift(&mut rng) % cfg.region_blocks;
            lock(&log).issued.push((seq, block));
            let per_block = (BLOCK as u32) / s.block_size;
            let lba = u32::try_from(block * u64::from(per_block)).unwrap_or(u32::MAX);
            let r = s
                .ini
                .write10(lba, s.block_size, Bytes::from(make_block(block, seq)))
                .await;
            if r.is_ok() {
                lock(&log).acked.push(AckedWrite {
                    seq,
                    block,
                    at: Instant::now(),
                });
                since_sync += 1;
            }
            r
        };
        if let Err(e) = result {
            record(&log, &e);
            match e {
                InitiatorError::CheckCondition { .. } if e.is_unit_attention() => {}
                InitiatorError::LogoutRequested { time2wait } => {
                    // Graceful hand-over: log out now (the old node waits for it), then reconnect.
                    if let Some(mut old) = session.take() {
                        let _ = old.ini.logout().await;
                    }
                    if cfg.honour_time2wait {
                        tokio::time::sleep(Duration::from_secs(u64::from(time2wait))).await;
                    }
                }
                _ => {
                    session = None;
                    tokio::time::sleep(cfg.backoff).await;
                }
            }
        }
    }
    if let Some(mut s) = session.take() {
        if let Err(e) = s.ini.sync_cache().await {
            record(&log, &e);
        }
        let _ = s.ini.logout().await;
    }
}

fn record(log: &Mutex<WriterLog>, e: &InitiatorError) {
    let unit_attention = e.is_unit_attention();
    let scsi_failure = !unit_attention
        && matches!(
            e,
            InitiatorError::CheckCondition { .. } | InitiatorError::ScsiStatus(_)
        );
    lock(log).errors.push(WriterErrorEvent {
        at: Instant::now(),
        message: e.to_string(),
        unit_attention,
        scsi_failure,
        logout_requested: matches!(e, InitiatorError::LogoutRequested { .. }),
    });
}

/// Result of checking acknowledged writes against what is stored.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    /// Blocks that hold a newer (acknowledged or in-flight) version than the last acknowledged one.
    pub newer: usize,
    pub bad: Vec<String>,
}

impl VerifyReport {
    /// Ok when no acknowledged block was wrong; else an error naming `what` and the first few.
    pub fn ensure_ok(&self, what: &str) -> Result<()> {
        anyhow::ensure!(
            self.bad.is_empty(),
            "{what}: {} of {} acknowledged blocks wrong, e.g. {:?}",
            self.bad.len(),
            self.checked,
            &self.bad[..self.bad.len().min(5)]
        );
        Ok(())
    }
}

fn judge(report: &mut VerifyReport, block: u64, want: u64, content: &[u8]) {
    report.checked += 1;
    match check_block(content, block) {
        Ok(got) if got == want => {}
        Ok(got) if got > want => report.newer += 1,
        Ok(got) => report.bad.push(format!(
            "block {block}: seq {got} < acknowledged {want} (lost write)"
        )),
        Err(e) => report
            .bad
            .push(format!("block {block} (acknowledged seq {want}): {e}")),
    }
}

/// Checks every acknowledged write on a backing file directly (drill block `i` at byte `i * 4096`).
pub fn verify_file(path: &Path, expected: &HashMap<u64, u64>) -> Result<VerifyReport> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut report = VerifyReport::default();
    let mut buf = vec![0u8; BLOCK];
    let mut blocks: Vec<_> = expected.iter().collect();
    blocks.sort();
    for (&block, &want) in blocks {
        let off = block.checked_mul(BLOCK as u64).context("offset overflow")?;
        f.read_exact_at(&mut buf, off)
            .with_context(|| format!("read block {block} of {}", path.display()))?;
        judge(&mut report, block, want, &buf);
    }
    Ok(report)
}

/// Checks every acknowledged write by reading it back through the target (from namespace `ns`).
pub fn verify_through_target(
    ns: Option<&str>,
    cfg: &InitiatorConfig,
    expected: &HashMap<u64, u64>,
) -> Result<VerifyReport> {
    let cfg = cfg.clone();
    let mut blocks: Vec<(u64, u64)> = expected.iter().map(|(b, s)| (*b, *s)).collect();
    blocks.sort();
    let worker = spawn_in_netns(ns, move || -> Result<VerifyReport> {
        current_thread_runtime()?.block_on(async move {
            let mut s = open_session(&cfg).await?;
            let per_block = (BLOCK as u32) / s.block_size;
            let mut report = VerifyReport::default();
            for (block, want) in blocks {
                let lba = u32::try_from(block * u64::from(per_block)).context("lba")?;
                let n = u16::try_from(per_block).context("blocks")?;
                let data = s.ini.read10(lba, s.block_size, n).await?;
                judge(&mut report, block, want, &data);
            }
            let _ = s.ini.logout().await;
            Ok(report)
        })
    })?;
    match worker.join() {
        Ok(r) => r?,
        Err(_) => bail!("reader thread panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_damage_is_detected() {
        let b = make_block(42, 7);
        assert_eq!(check_block(&b, 42), Ok(7));
        assert_eq!(
            check_block(&b, 41),
            Err(BlockError::WrongIndex {
                found: 42,
                expected: 41
            })
        );
        let mut torn = b.clone();
        torn[3000] ^= 1;
        assert_eq!(check_block(&torn, 42), Err(BlockError::Crc));
        assert_eq!(check_block(&vec![0u8; BLOCK], 0), Err(BlockError::NoMagic));
        assert_eq!(check_block(&b[..100], 42), Err(BlockError::Size(100)));
        assert_ne!(
            make_block(42, 8)[HEADER..],
            b[HEADER..],
            "versions must differ in the filler"
        );
    }

    #[test]
    fn log_measures_gaps_and_first_ack() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let log = WriterLog {
            issued: vec![(1, 5), (2, 6), (3, 5), (4, 9)],
            acked: vec![
                AckedWrite {
                    seq: 1,
                    block: 5,
                    at: at(10),
                },
                AckedWrite {
                    seq: 2,
                    block: 6,
                    at: at(20),
                },
                AckedWrite {
                    seq: 3,
                    block: 5,
                    at: at(520),
                },
                AckedWrite {
                    seq: 4,
                    block: 9,
                    at: at(530),
                },
            ],
            ..WriterLog::default()
        };
        assert_eq!(
            log.longest_gap(t0, at(1000)),
            Some((Duration::from_millis(500), at(520)))
        );
        assert_eq!(
            log.longest_gap(t0, at(100)),
            Some((Duration::from_millis(10), at(20)))
        );
        assert_eq!(
            log.first_ack_after(at(100)),
            Some(Duration::from_millis(420))
        );
        assert_eq!(log.latest_acked().get(&5), Some(&3));
        assert_eq!(log.distinct_blocks_issued(1, 4), 2);
    }

    #[test]
    fn verify_file_flags_lost_and_torn_writes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("disk");
        let mut disk = vec![0u8; 4 * BLOCK];
        disk[BLOCK..2 * BLOCK].copy_from_slice(&make_block(1, 10));
        disk[2 * BLOCK..3 * BLOCK].copy_from_slice(&make_block(2, 3));
        std::fs::write(&path, &disk)?;
        let expected = HashMap::from([(1, 9), (2, 4), (3, 1)]);
        let r = verify_file(&path, &expected)?;
        assert_eq!((r.checked, r.newer, r.bad.len()), (3, 1, 2), "{r:?}");
        Ok(())
    }
}
