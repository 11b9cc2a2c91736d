//! PERSISTENT RESERVE OUT latency: one initiator registers, then changes its key COUNT times (REGISTER
//! AND IGNORE EXISTING KEY, each a real state change the target must store before GOOD) and prints the
//! latency distribution as one line of `key=value` pairs. tests/bench/pr-latency.sh runs it against a
//! standalone target (local file store) and through the lab's VIP (replicated store) and prints both.
//!
//! Usage: pr-bench HOST:PORT IQN [COUNT]   (COUNT default 2000, at most 1_000_000)

use anyhow::{Context, Result, bail};
use ha_tests::initiator::{Initiator, InitiatorConfig};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(iqn)) = (args.get(1), args.get(2)) else {
        bail!("usage: pr-bench HOST:PORT IQN [COUNT]");
    };
    let count: usize = args.get(3).map_or(Ok(2000), |c| c.parse()).context("COUNT")?;
    if !(1..=1_000_000).contains(&count) {
        bail!("COUNT must be 1..=1000000");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut cfg = InitiatorConfig::new(addr, iqn);
        cfg.initiator_name = "iqn.2026-12.org.example:pr-bench".into();
        cfg.io_timeout = Duration::from_secs(30);
        let mut ini = Initiator::connect(&cfg).await.context("login")?;
        for _ in 0..4 {
            if ini.test_unit_ready().await.is_ok() {
                break;
            }
        }
        // Start from a known registration (REGISTER AND IGNORE EXISTING KEY works either way).
        ini.persistent_reserve_out(6, 0, 0, 1, 0).await.context("initial register")?;
        let mut lat = Vec::with_capacity(count);
        let t0 = Instant::now();
        for k in 0..count {
            let t = Instant::now();
            ini.persistent_reserve_out(6, 0, 0, 2 + (k as u64 % 2), 0).await.context("PROUT")?;
            lat.push(t.elapsed());
        }
        let total = t0.elapsed();
        ini.persistent_reserve_out(6, 0, 0, 0, 0).await.context("unregister")?;
        let _ = ini.logout().await;
        lat.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        let mean = total / count as u32;
        println!(
            "count={count} mean_us={:.0} p50_us={:.0} p99_us={:.0} max_us={:.0} ops_per_s={:.0}",
            us(mean),
            us(pick(0.5)),
            us(pick(0.99)),
            us(*lat.last().unwrap_or(&Duration::ZERO)),
            count as f64 / total.as_secs_f64()
        );
        Ok(())
    })
}
