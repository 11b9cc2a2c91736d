//! issue 18 resync controller benchmark (`--resync-ctl true`): a steady application load during a
//! full resync, controller on (defaults) and off (the static window), side by side.
//!
//! Per mode, on a fresh pair (Primary `bench-a`, resync of the whole volume by `invalidate` on the
//! Secondary, `csums-alg none` so that every byte moves):
//! 1. resync alone: the full resync with no application I/O → `alone` MiB/s;
//! 2. capacity: replicated 4 KiB random writes at queue depth 8 for 3 s → `cap` IOPS;
//! 3. application alone: 4 KiB random writes paced at `cap / 2` IOPS for 5 s → p50/p99 latency;
//! 4. the same paced load during a second full resync → p99 and the resync's MiB/s.
//!
//! Spare capacity := `alone × (1 − cap/2 ÷ cap) = alone / 2`: the application paced at half its
//! measured capacity leaves the other half of the pair's time to the resync, which alone moves
//! `alone` MiB/s. Goals (issue 18): p99 with ÷ without ≤ 1.2, resync ÷ spare ≥ 0.8.
//!
//! Latency is measured per write from the `Volume::write` call to its completion (not from the
//! scheduled time: tokio's millisecond timers would dominate a few-hundred-µs write).

use super::{connected, spec, wait_for, Opts, PLAIN};
use anyhow::{Context, Result};
use bytes::Bytes;
use replicator::engine::{Verb, Volume};
use replicator::machine::state::ReplState;
use replicator::machine::ControllerOptions;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Phases a latency sample is filed under.
const WARMUP: u8 = 0;
const ALONE: u8 = 1;
const DURING: u8 = 2;

struct Row {
    mode: &'static str,
    cap_iops: f64,
    paced_iops: f64,
    p50_alone: f64,
    p99_alone: f64,
    p50_during: f64,
    p99_during: f64,
    alone_mibs: f64,
    during_mibs: f64,
    achieved_iops_during: f64,
}

async fn pair(o: &Opts, control: ControllerOptions) -> Result<(Volume, Volume)> {
    let mut specs = [spec(o, 0, None, PLAIN), spec(o, 1, None, PLAIN)];
    for s in &mut specs {
        s.params.resync_control = control;
    }
    let [sa, sb] = specs;
    let a = Volume::start(sa).await?;
    let b = Volume::start(sb).await?;
    Ok((a, b))
}

/// `invalidate` on the Secondary and wait for the end; returns MiB/s of resync data moved.
async fn full_resync(a: &Volume, b: &Volume) -> Result<f64> {
    let before = a.snapshot().stats.resync_blocks_sent;
    let t0 = Instant::now();
    b.verb(Verb::Invalidate { remote: false }).await.map_err(anyhow::Error::msg)?;
    wait_for(a, "SyncSource", Duration::from_secs(30), |s| s.repl == ReplState::SyncSource || s.stats.resync_blocks_sent > before).await?;
    // RESYNC_CTL_TRACE=1: the controller's view every 250 ms on stderr (tuning).
    let trace = std::env::var_os("RESYNC_CTL_TRACE").is_some().then(|| {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..2400u32 {
                if let Some(c) = a.snapshot().resync_controller {
                    eprintln!("ctl {:>5} ms budget {:>9} p99 {:?} baseline {:?} throttling {} probing {}", i * 250, c.budget_bytes, c.last_p99_us, c.baseline_p99_us, c.throttling, c.probing);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    connected(a).await?;
    if let Some(t) = trace {
        t.abort();
    }
    let secs = t0.elapsed().as_secs_f64();
    let moved = (a.snapshot().stats.resync_blocks_sent - before) as f64 * 4096.0 / (1 << 20) as f64;
    Ok(moved / secs)
}

/// Replicated 4 KiB random writes at queue depth 8 for `secs`: IOPS.
async fn capacity(v: &Volume, secs: u64) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let blocks = v.size() / 4096;
    let mut tasks = Vec::new();
    for q in 0..8u64 {
        let (v, done) = (v.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let buf = Bytes::from(vec![q as u8; 4096]);
            let mut x = 0x2545_F491_4F6C_DD1Du64 ^ (q + 1);
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

/// An open-loop paced writer: write i starts at `t0 + i / iops` (16 workers take the next slot), each
/// latency filed under the phase current when it was issued.
struct Paced {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    samples: Arc<Mutex<Vec<(u8, u32)>>>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

fn start_paced(v: &Volume, iops: f64) -> Paced {
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let blocks = v.size() / 4096;
    let mut tasks = Vec::new();
    for q in 0..16u64 {
        let (v, stop, phase, samples, next) = (v.clone(), Arc::clone(&stop), Arc::clone(&phase), Arc::clone(&samples), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let buf = Bytes::from(vec![0x3c ^ q as u8; 4096]);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let at = t0 + Duration::from_secs_f64(i as f64 / iops);
                tokio::time::sleep_until(at.into()).await;
                // A cheap spread of offsets over the volume (the resync moves all of it).
                let block = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % blocks;
                let p = phase.load(Ordering::Relaxed);
                let s = Instant::now();
                v.write(block * 4096, buf.clone(), false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let us = s.elapsed().as_micros().min(u32::MAX as u128) as u32;
                samples.lock().unwrap_or_else(|e| e.into_inner()).push((p, us));
            }
            Ok(())
        }));
    }
    Paced { stop, phase, samples, tasks }
}

impl Paced {
    async fn finish(self) -> Result<Vec<(u8, u32)>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.context("paced writer")??;
        }
        let v = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(v)
    }
}

fn quantiles(samples: &[(u8, u32)], phase: u8) -> (f64, f64, usize) {
    let mut v: Vec<u32> = samples.iter().filter(|s| s.0 == phase).map(|s| s.1).collect();
    if v.is_empty() {
        return (0.0, 0.0, 0);
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() as f64 * f).ceil() as usize).clamp(1, v.len()) - 1] as f64;
    (q(0.5), q(0.99), v.len())
}

async fn one_mode(o: &Opts, mode: &'static str, control: ControllerOptions) -> Result<Row> {
    let (a, b) = pair(o, control).await?;
    a.verb(Verb::Primary { force: true }).await.map_err(anyhow::Error::msg)?;
    connected(&a).await?;
    let alone_mibs = full_resync(&a, &b).await?;
    let cap_iops = capacity(&a, 3).await?;
    let paced_iops = cap_iops / 2.0;
    let load = start_paced(&a, paced_iops);
    // One second to settle (and, with the controller, to learn the application's baseline).
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.phase.store(ALONE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.phase.store(DURING, Ordering::Relaxed);
    let t0 = Instant::now();
    let during_mibs = full_resync(&a, &b).await?;
    let during_secs = t0.elapsed().as_secs_f64();
    load.phase.store(WARMUP, Ordering::Relaxed);
    let samples = load.finish().await?;
    let (p50_alone, p99_alone, _) = quantiles(&samples, ALONE);
    let (p50_during, p99_during, n_during) = quantiles(&samples, DURING);
    a.verb(Verb::Secondary).await.map_err(anyhow::Error::msg)?;
    a.down().await;
    b.down().await;
    Ok(Row { mode, cap_iops, paced_iops, p50_alone, p99_alone, p50_during, p99_during, alone_mibs, during_mibs, achieved_iops_during: n_during as f64 / during_secs })
}

/// The section: both modes, then the table.
pub async fn run(o: &Opts) -> Result<()> {
    let on = ControllerOptions::default();
    let off = ControllerOptions { plan_ahead_ms: 0, ..on };
    let mut rows = Vec::new();
    for (mode, c) in [("controller on (c-plan-ahead 2s, c-fill-target 16M)", on), ("controller off (static window, c-min-rate 250K)", off)] {
        rows.push(one_mode(o, mode, c).await?);
    }
    println!();
    println!("resync controller: application 4 KiB random writes paced at half the measured replicated capacity (QD8) during a full resync of {} MiB; spare = resync alone × 1/2", o.size >> 20);
    println!("| mode | capacity | paced load (achieved during resync) | app p50 / p99 alone | app p50 / p99 during resync | p99 ratio (goal ≤ 1.2) | resync alone | resync with load | spare | resync ÷ spare (goal ≥ 0.8) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let spare = r.alone_mibs / 2.0;
        println!(
            "| {} | {:.0} IOPS | {:.0} IOPS ({:.0}) | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2} | {:.0} MiB/s | {:.0} MiB/s | {:.0} MiB/s | {:.2} |",
            r.mode,
            r.cap_iops,
            r.paced_iops,
            r.achieved_iops_during,
            r.p50_alone,
            r.p99_alone,
            r.p50_during,
            r.p99_during,
            r.p99_during / r.p99_alone.max(1.0),
            r.alone_mibs,
            r.during_mibs,
            spare,
            r.during_mibs / spare.max(1e-9)
        );
    }
    Ok(())
}
