//! The failure report of a seeded clusterd simulation: the seed, the error, the run's configuration
//! line and the last trace lines, and the command that replays the seed.

pub fn failure_report(seed: u64, e: &str, trace: &[String], tail_lines: usize, replay: &str) -> String {
    let tail: Vec<_> = trace.iter().rev().take(tail_lines).rev().cloned().collect();
    format!(
        "seed {seed} FAILED: {e}\n--- config and last trace lines ---\n{}\n{}\nreplay: {replay}",
        trace.first().cloned().unwrap_or_default(),
        tail.join("\n")
    )
}
