//! What one replicated write costs the machine, counted by the kernel for this process (both nodes of
//! the benchmark run in it): CPU time, context switches (each one a thread put to sleep or pre-empted: the
//! wake-ups the issue asks to cut), read/write-class system calls, and the bytes those calls moved
//! (each byte through a `pwrite`, `writev` or `read` is one kernel copy: local write, send, receive,
//! peer write). Summed over `/proc/self/task/*/{status,io}`; the process's threads live as long as the
//! volumes, so deltas over a phase are exact for it.

use std::fs;

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcCounters {
    /// CPU time of all threads (ns, `/proc/self/task/*/schedstat`): what the work costs whatever
    /// else runs on the machine.
    pub cpu_ns: u64,
    pub ctx_switches: u64,
    pub syscalls: u64,
    pub bytes: u64,
}

impl ProcCounters {
    pub fn now() -> ProcCounters {
        let mut c = ProcCounters::default();
        let Ok(tasks) = fs::read_dir("/proc/self/task") else { return c };
        for t in tasks.flatten() {
            let p = t.path();
            if let Ok(s) = fs::read_to_string(p.join("schedstat")) {
                c.cpu_ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            if let Ok(s) = fs::read_to_string(p.join("status")) {
                c.ctx_switches += field(&s, "voluntary_ctxt_switches:") + field(&s, "nonvoluntary_ctxt_switches:");
            }
            if let Ok(s) = fs::read_to_string(p.join("io")) {
                c.syscalls += field(&s, "syscr:") + field(&s, "syscw:");
                c.bytes += field(&s, "rchar:") + field(&s, "wchar:");
            }
        }
        c
    }

    /// Per operation since `before`: CPU µs, context switches, syscalls, bytes.
    pub fn per_op(&self, before: &ProcCounters, ops: u64) -> (f64, f64, f64, f64) {
        let n = ops.max(1) as f64;
        (
            self.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1000.0 / n,
            self.ctx_switches.saturating_sub(before.ctx_switches) as f64 / n,
            self.syscalls.saturating_sub(before.syscalls) as f64 / n,
            self.bytes.saturating_sub(before.bytes) as f64 / n,
        )
    }
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
