//! Replication engine benchmark: the same engine replicated over loopback TCP (127.0.0.1 → 127.0.0.2)
//! versus disconnected, through the `Volume` API the iSCSI target uses; then resync speed of N MiB of
//! dirty blocks, unlimited and with a rate cap; online verify of the identical pair against a `dd` read of
//! the file (issue 18); a full sync of two identical volumes with `csums-alg: sha1` versus none (data
//! bytes over the link, time). Prints tables with ratios. `--csums-only true` runs only the last
//! comparison; `--resync-ctl true` only the resync controller section (issue 18, `resync_ctl.rs`). Run via
//! `tests/bench/replication.sh` (release build).
//!
//! `--peer-dir DIR` puts the Secondary's backing file elsewhere. WHY: on one machine both replicas
//! otherwise share one disk, which then absorbs twice the bytes of the disconnected reference; with a
//! reference that saturates the disk the ratio cannot exceed ~0.5 whatever the engine does. A separate
//! device (the script uses tmpfs) stands for the peer's own disk on a second machine.

mod proc_counters;
mod resync_ctl;

use proc_counters::ProcCounters;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use replicator::engine::{IoErrorPolicy, Verb, Volume, VolumeSpec};
use replicator::machine::state::{ConnState, ReplState};
use replicator::machine::{CsumAlg, CsumsOptions, NodeParams, Timing};
use replicator::meta::layout::MetaLocation;
use replicator::meta::store::{create_md, FileDevice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    dir: PathBuf,
    size: u64,
    seconds: u64,
    resync_mib: u64,
    cap_mib: u64,
    port: u16,
    seq_qd: u64,
    disk_threads: usize,
    direct: bool,
    peer_dir: Option<PathBuf>,
    /// Run only the checksum-based full-sync comparison (issue 18).
    csums_only: bool,
    /// Run only the resync controller section (issue 18, `resync_ctl.rs`).
    resync_ctl: bool,
    /// Skip the verify and checksum-resync sections (for profiling the write and resync phases).
    writes_only: bool,
    /// `--protocol A`: replicate asynchronously (issue 18) instead of protocol C.
    protocol_a: bool,
}

fn opts() -> Result<Opts> {
    let mut o = Opts { dir: std::env::temp_dir().join("repl-bench"), size: 1 << 30, seconds: 5, resync_mib: 512, cap_mib: 40, port: 17788, seq_qd: 8, disk_threads: 4, direct: false, peer_dir: None, csums_only: false, resync_ctl: false, writes_only: false, protocol_a: false };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(v),
            "--size-mib" => o.size = v.parse::<u64>()? << 20,
            "--seconds" => o.seconds = v.parse()?,
            "--resync-mib" => o.resync_mib = v.parse()?,
            "--cap-mib" => o.cap_mib = v.parse()?,
            "--port" => o.port = v.parse()?,
            "--seq-qd" => o.seq_qd = v.parse()?,
            "--disk-threads" => o.disk_threads = v.parse()?,
            "--direct" => o.direct = v.parse()?,
            "--peer-dir" => o.peer_dir = Some(PathBuf::from(v)),
            "--csums-only" => o.csums_only = v.parse()?,
            "--resync-ctl" => o.resync_ctl = v.parse()?,
            "--writes-only" => o.writes_only = v.parse()?,
            "--protocol" => {
                o.protocol_a = match v.as_str() {
                    "A" | "a" => true,
                    "C" | "c" => false,
                    _ => bail!("--protocol: A or C, not {v}"),
                }
            }
            _ => bail!("unknown option {a}"),
        }
    }
    Ok(o)
}

fn disk_dir(o: &Opts, me: usize) -> &Path {
    match (&o.peer_dir, me) {
        (Some(d), 1) => d,
        _ => &o.dir,
    }
}

fn spec(o: &Opts, me: usize, rate: Option<u64>, csums: CsumsOptions) -> VolumeSpec {
    let names = ["bench-a", "bench-b"];
    let addrs = [format!("127.0.0.1:{}", o.port), format!("127.0.0.2:{}", o.port)];
    VolumeSpec {
        params: NodeParams {
            node: names[me].into(),
            peer: Some(names[1 - me].into()),
            resource: "bench".into(),
            data_size: 0,
            policies: Default::default(),
            secret: Some(replicator::wire::auth::Secret::new(b"bench-secret".to_vec()).expect("secret")),
            fencing_dont_care: true,
            freeze_io_on_peer_loss: false,
            resync_rate: rate,
            verify_rate: None,
            c_min_rate: Some(250 << 10),
            resync_control: Default::default(),
            timing: Timing { connect_int_ms: 200, ..Timing::default() },
            verify_alg: "sha1".into(),
            csums,
            detach_on_io_error: false,
            protocols: replicator::wire::frame::PROTOCOLS,
            protocol: if o.protocol_a { replicator::machine::ReplProtocol::A(Default::default()) } else { Default::default() },
        },
        data_path: disk_dir(o, me).join(format!("{}.img", names[me])),
        meta: MetaLocation::Internal,
        local_addr: Some(addrs[me].parse().expect("addr")),
        peer_addr: Some(addrs[1 - me].parse().expect("addr")),
        handlers: Default::default(),
        disk_threads: o.disk_threads,
        direct_io: o.direct,
        connect: true,
        on_io_error: IoErrorPolicy::PassOn,
        meta_locator: None,
    }
}

/// A fully written (not sparse) backing file: production volumes sit on block devices, where a write
/// never pays for block allocation. On a sparse file the first write to a range pays ext4's delayed
/// allocation (several times the cost of an overwrite), and the phases below write the same range in
/// turn, so a sparse file would charge the replicated run (first) for allocation and let the
/// disconnected run (second) overwrite allocated, cached blocks.
fn make_disk(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_data()?;
    let dev = FileDevice::open(path)?;
    create_md(size, &dev, &MetaLocation::Internal, "bench", 1237, true)?;
    Ok(())
}

async fn wait_for(v: &Volume, what: &str, limit: Duration, f: impl Fn(&replicator::machine::Snapshot) -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f(&v.snapshot()) {
            return Ok(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("timed out waiting for {what}: {:?}", v.snapshot())
}

/// Random 4 KiB writes at queue depth 32 for `secs`; returns IOPS.
/// `--seconds 0` skips this phase (for profiling the others).
async fn rand_4k(v: &Volume, secs: u64) -> Result<f64> {
    if secs == 0 {
        return Ok(0.0);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let blocks = v.size() / 4096;
    let mut tasks = Vec::new();
    for q in 0..32u64 {
        let v = v.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let buf = Bytes::from(vec![q as u8 ^ 0x5a; 4096]);
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ q;
            while Instant::now() < stop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.write((x % blocks) * 4096, buf.clone(), false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / secs as f64)
}

/// Sequential 1 MiB writes at queue depth `qd` over `bytes` from `start`; returns MiB/s.
async fn seq_1m(v: &Volume, start: u64, bytes: u64, qd: u64) -> Result<f64> {
    let buf = Bytes::from(vec![0xA5u8; 1 << 20]);
    // Start clean: the final flush below must not also pay for the preceding phase's dirty pages.
    v.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let t0 = Instant::now();
    let n = bytes >> 20;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..qd {
        let (v, buf, next) = (v.clone(), buf.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let off = (start + (i << 20)) % (v.size() - (1 << 20));
                v.write(off, buf.clone(), false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    v.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// issue 18 verify: online verify of the identical pair with `alg` (set on both sides); returns MiB/s
/// compared, from the verb to the outcome.
async fn verify_speed(o: &Opts, a: &Volume, b: &Volume, alg: &str) -> Result<f64> {
    for (me, v) in [(0, a), (1, b)] {
        let options = replicator::machine::LiveOptions {
            verify_alg: alg.into(),
            ..replicator::machine::LiveOptions::of(&spec(o, me, None, CsumsOptions::default()).params)
        };
        v.set_options(options, Default::default()).await?;
    }
    let before = a.snapshot().last_verify;
    let t0 = Instant::now();
    a.verb(Verb::Verify { repair: false }).await.map_err(anyhow::Error::msg)?;
    wait_for(a, "verify end", Duration::from_secs(600), |s| s.last_verify.is_some() && s.last_verify != before).await?;
    let secs = t0.elapsed().as_secs_f64();
    let v = a.snapshot().last_verify.context("no verify outcome")?;
    if !v.completed || v.found_bytes != 0 {
        bail!("verify of identical replicas: {v:?}");
    }
    Ok(v.checked_bytes as f64 / (1 << 20) as f64 / secs)
}

/// Plain sequential read of `path` with dd (1 MiB blocks), MiB/s: what reading the data costs alone.
fn dd_read(path: &Path) -> Result<f64> {
    let t0 = Instant::now();
    let st = std::process::Command::new("dd").arg(format!("if={}", path.display())).args(["of=/dev/null", "bs=1M", "status=none"]).status().context("run dd")?;
    if !st.success() {
        bail!("dd failed: {st}");
    }
    let bytes = std::fs::metadata(path)?.len();
    Ok(bytes as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64())
}

async fn connected(a: &Volume) -> Result<Duration> {
    wait_for(a, "Established", Duration::from_secs(600), |s| s.conn == ConnState::Connected && s.repl == ReplState::Established).await
}

/// The phases before the checksum comparison measure plain resyncs (`csums-alg: none`).
const PLAIN: CsumsOptions = CsumsOptions { alg: None, every_resync: false };

async fn run_pair(o: &Opts, rate: Option<u64>) -> Result<(Volume, Volume)> {
    run_pair_with(o, rate, PLAIN).await
}

async fn run_pair_with(o: &Opts, rate: Option<u64>, csums: CsumsOptions) -> Result<(Volume, Volume)> {
    let a = Volume::start(spec(o, 0, rate, csums)).await?;
    let b = Volume::start(spec(o, 1, rate, csums)).await?;
    Ok((a, b))
}

/// One full sync of the two (identical) volumes: `invalidate` on the Secondary with `csums` and a
/// resync `rate`. Returns the time from the verb to Established and the resync data bytes the source
/// sent and found equal.
async fn full_sync_of_identical(o: &Opts, csums: CsumsOptions, rate: Option<u64>) -> Result<(Duration, u64, u64)> {
    let (a, b) = run_pair_with(o, rate, csums).await?;
    connected(&a).await?;
    a.verb(Verb::Primary { force: false }).await.map_err(anyhow::Error::msg)?;
    let before = a.snapshot().stats;
    let t0 = Instant::now();
    b.verb(Verb::Invalidate { remote: false }).await.map_err(anyhow::Error::msg)?;
    wait_for(&a, "SyncSource", Duration::from_secs(30), |s| s.repl == ReplState::SyncSource || s.stats.resync_blocks_sent > before.resync_blocks_sent || s.stats.resync_csum_equal_bytes > before.resync_csum_equal_bytes).await?;
    connected(&a).await?;
    let took = t0.elapsed();
    let after = a.snapshot().stats;
    a.verb(Verb::Secondary).await.map_err(anyhow::Error::msg)?;
    a.down().await;
    b.down().await;
    Ok((took, (after.resync_blocks_sent - before.resync_blocks_sent) * 4096, after.resync_csum_equal_bytes - before.resync_csum_equal_bytes))
}

/// Full sync of two identical volumes, `csums-alg` none vs sha1 / crc32c: data bytes over the link and
/// time, on bare loopback (a link far faster than any network: the digests' cost shows) and with the
/// resync capped at 112 MiB/s, the payload rate of a 1 Gbit/s replication link (the rate counts only
/// what crosses the link, so equal blocks are not charged).
async fn csums_comparison(o: &Opts) -> Result<()> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let link = Some(112u64 << 20);
    println!();
    println!("| full sync of two identical {} MiB volumes (invalidate) | link | resync data sent | time | found equal | data bytes vs none | speed-up vs none |", o.size >> 20);
    println!("|---|---|---|---|---|---|---|");
    for (name, rate) in [("loopback, unlimited", None), ("resync capped at 112 MiB/s (1 GbE)", link)] {
        let (plain_t, plain_bytes, _) = full_sync_of_identical(o, PLAIN, rate).await?;
        println!("| csums-alg none | {name} | {:.1} MiB | {:.2} s | - | 1 | 1 |", mib(plain_bytes), plain_t.as_secs_f64());
        for alg in [CsumAlg::Sha1, CsumAlg::Crc32c] {
            let (t, bytes, equal) = full_sync_of_identical(o, CsumsOptions { alg: Some(alg), every_resync: false }, rate).await?;
            println!(
                "| csums-alg {alg} | {name} | {:.1} MiB | {:.2} s | {:.0} MiB | {:.4} | {:.1}x |",
                mib(bytes),
                t.as_secs_f64(),
                mib(equal),
                bytes as f64 / plain_bytes.max(1) as f64,
                plain_t.as_secs_f64() / t.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    // The engine's own log (resync start/finish with its measured rate) goes to stderr.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,replicator=info".into())).with_writer(std::io::stderr).init();
    std::fs::create_dir_all(&o.dir)?;
    for (me, n) in ["bench-a", "bench-b"].iter().enumerate() {
        std::fs::create_dir_all(disk_dir(&o, me))?;
        make_disk(&disk_dir(&o, me).join(format!("{n}.img")), o.size)?;
    }
    if o.resync_ctl {
        let r = resync_ctl::run(&o).await;
        let _ = std::fs::remove_dir_all(&o.dir);
        if let Some(d) = &o.peer_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        return r;
    }
    if o.csums_only {
        let (a, b) = run_pair(&o, None).await?;
        a.verb(Verb::Primary { force: true }).await.map_err(anyhow::Error::msg)?;
        connected(&a).await?;
        a.verb(Verb::Secondary).await.map_err(anyhow::Error::msg)?;
        a.down().await;
        b.down().await;
        return csums_comparison(&o).await;
    }
    let seq_bytes = (o.size / 2).min(1 << 30);
    let (a, b) = run_pair(&o, None).await?;
    a.verb(Verb::Primary { force: true }).await.map_err(anyhow::Error::msg)?;
    let t = connected(&a).await?;
    let full = a.size() as f64 / (1 << 20) as f64 / t.as_secs_f64();
    println!("initial full sync of {} MiB: {:.1} s ({full:.0} MiB/s)", a.size() >> 20, t.as_secs_f64());
    // Online verify of the now identical pair, against dd reading the Primary's file once.
    let dd = dd_read(&disk_dir(&o, 0).join("bench-a.img"))?;
    let (verify_sha1, verify_crc) = if o.writes_only {
        (0.0, 0.0)
    } else {
        (verify_speed(&o, &a, &b, "sha1").await?, verify_speed(&o, &a, &b, "crc32c").await?)
    };

    // Replicated.
    let c0 = ProcCounters::now();
    let rep_4k = rand_4k(&a, o.seconds).await?;
    let c1 = ProcCounters::now();
    let rep_1m = seq_1m(&a, 0, seq_bytes, o.seq_qd).await?;
    let c2 = ProcCounters::now();
    // Disconnected (the same engine, no peer): its writes become the dirty blocks of the resync test.
    a.verb(Verb::Disconnect).await.map_err(anyhow::Error::msg)?;
    b.verb(Verb::Disconnect).await.map_err(anyhow::Error::msg)?;
    let c3 = ProcCounters::now();
    let solo_4k = rand_4k(&a, o.seconds).await?;
    let c4 = ProcCounters::now();
    let solo_1m = seq_1m(&a, 0, seq_bytes, o.seq_qd).await?;
    let c5 = ProcCounters::now();
    // Resync, unlimited: mark exactly resync_mib of blocks dirty on top (sequential region).
    // Amounts come from the engine's own counter of blocks the resync moved (the published status
    // snapshot is refreshed every 20 ms and would miss the last writes).
    let sent_before = a.snapshot().stats.resync_blocks_sent;
    a.verb(Verb::Connect { discard_my_data: false }).await.map_err(anyhow::Error::msg)?;
    b.verb(Verb::Connect { discard_my_data: false }).await.map_err(anyhow::Error::msg)?;
    wait_for(&a, "SyncSource", Duration::from_secs(30), |s| s.repl == ReplState::SyncSource || s.repl == ReplState::Established).await?;
    let t = connected(&a).await?;
    let resync_mib = (a.snapshot().stats.resync_blocks_sent - sent_before) as f64 * 4096.0 / (1 << 20) as f64;
    let resync_unl = resync_mib / t.as_secs_f64();
    a.verb(Verb::Secondary).await.map_err(anyhow::Error::msg)?;
    a.down().await;
    b.down().await;

    // Resync with a rate cap.
    let cap = o.cap_mib << 20;
    let (a, b) = run_pair(&o, Some(cap)).await?;
    connected(&a).await?;
    a.verb(Verb::Primary { force: false }).await.map_err(anyhow::Error::msg)?;
    b.verb(Verb::Disconnect).await.map_err(anyhow::Error::msg)?;
    wait_for(&a, "disconnect", Duration::from_secs(10), |s| s.conn != ConnState::Connected).await?;
    let cap_bytes = (o.cap_mib * 4) << 20; // about 4 s of resync at the cap
    seq_1m(&a, 0, cap_bytes.min(a.size() / 2), o.seq_qd).await?;
    let sent_before = a.snapshot().stats.resync_blocks_sent;
    b.verb(Verb::Connect { discard_my_data: false }).await.map_err(anyhow::Error::msg)?;
    wait_for(&a, "SyncSource", Duration::from_secs(30), |s| s.repl == ReplState::SyncSource).await?;
    let t = connected(&a).await?;
    let dirty = (a.snapshot().stats.resync_blocks_sent - sent_before) as f64 * 4096.0 / (1 << 20) as f64;
    let capped = dirty / t.as_secs_f64();
    a.verb(Verb::Secondary).await.map_err(anyhow::Error::msg)?;
    a.down().await;
    b.down().await;

    println!();
    println!("disks: Primary {}, Secondary {}; protocol {}", o.dir.display(), disk_dir(&o, 1).display(), if o.protocol_a { "A" } else { "C" });
    println!("| workload (engine API, {} MiB volume) | replicated (loopback TCP) | disconnected | ratio |", o.size >> 20);
    println!("|---|---|---|---|");
    println!("| 4 KiB random write, QD32 | {rep_4k:.0} IOPS | {solo_4k:.0} IOPS | {:.2} |", rep_4k / solo_4k);
    println!("| 1 MiB sequential write, QD{} | {rep_1m:.0} MiB/s | {solo_1m:.0} MiB/s | {:.2} |", o.seq_qd, rep_1m / solo_1m);
    println!();
    // What each write cost (both nodes together when replicated), counted by the kernel.
    let writes_4k = |iops: f64| (iops * o.seconds as f64).round() as u64;
    let writes_1m = seq_bytes >> 20;
    println!("| per write (kernel's counts, both nodes) | CPU time | context switches | read/write syscalls | bytes through them (copies; a socket receive is a recv, not counted) |");
    println!("|---|---|---|---|---|");
    for (what, after, before, n, unit) in [
        ("4 KiB replicated", c1, c0, writes_4k(rep_4k), 4096.0),
        ("4 KiB disconnected", c4, c3, writes_4k(solo_4k), 4096.0),
        ("1 MiB replicated", c2, c1, writes_1m, 1048576.0),
        ("1 MiB disconnected", c5, c4, writes_1m, 1048576.0),
    ] {
        let (cpu, cs, sc, bytes) = after.per_op(&before, n);
        println!("| {what} | {cpu:.1} µs | {cs:.2} | {sc:.2} | {:.0} ({:.2}x the data) |", bytes, bytes / unit);
    }
    println!();
    println!("| resync | dirty | achieved | reference | ratio |");
    println!("|---|---|---|---|---|");
    println!("| unlimited | {resync_mib:.0} MiB | {resync_unl:.0} MiB/s | disconnected 1 MiB write {solo_1m:.0} MiB/s | {:.2} |", resync_unl / solo_1m);
    println!("| capped at {} MiB/s | {dirty:.0} MiB | {capped:.1} MiB/s | cap {} MiB/s | {:.2} |", o.cap_mib, o.cap_mib, capped / o.cap_mib as f64);
    println!();
    println!("| online verify, identical {} MiB volume | achieved | reference | ratio |", o.size >> 20);
    println!("|---|---|---|---|");
    println!("| verify-alg sha1 (default) | {verify_sha1:.0} MiB/s | dd sequential read of the file {dd:.0} MiB/s | {:.2} |", verify_sha1 / dd);
    println!("| verify-alg crc32c | {verify_crc:.0} MiB/s | dd sequential read of the file {dd:.0} MiB/s | {:.2} |", verify_crc / dd);
    if !o.writes_only {
        csums_comparison(&o).await?;
    }
    let _ = std::fs::remove_dir_all(&o.dir);
    if let Some(d) = &o.peer_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}
