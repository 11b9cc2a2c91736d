//! `haadm wait-sync` and `haadm status --watch` against two real daemons during a rate-limited
//! initial sync: plain lines when piped, progress bars on a terminal (a pty made by `script`), a real
//! Ctrl-C (^C typed into the pty) that ends the watch with the cursor restored, and the documented
//! exit codes (0 in sync, 1 cannot get there, 4 --timeout expired, 130 interrupted).

use anyhow::{Context, Result, ensure};
use ha_tests::{Cluster, bin, field, require_tool};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn haadm_cmd(c: &Cluster, i: usize, args: &str) -> String {
    format!("{} --config {} --node node{} {args}", bin("haadm").display(), c.config.display(), i + 1)
}

/// Runs `cmd` on a pseudo-terminal (util-linux `script`), types `keys` into it after `after`, and
/// returns (exit code of cmd, everything it drew). Bounded by `limit`.
fn on_tty(cmd: &str, keys: Option<(Duration, &[u8])>, limit: Duration) -> Result<(i32, String)> {
    let script = require_tool("script", "bsdutils");
    // `exec`: without it a shell that forks (dash, which `script` runs when SHELL is unset, as
    // under CI) stays the pty's foreground process too, dies of the ^C itself and makes `script`
    // report 130 whatever haadm did.
    let mut child = Command::new(script)
        .args(["-q", "-e", "-c", &format!("exec {cmd}"), "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let started = Instant::now();
    if let Some((after, k)) = keys {
        std::thread::sleep(after);
        stdin.write_all(k)?;
        stdin.flush()?;
    }
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            anyhow::bail!("`{cmd}` still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn wait_sync_and_status_watch() -> Result<()> {
    let mut c = Cluster::new(64 << 20, "s3cret-watch", None)?;
    // 6 MiB/s: the 64 MiB initial sync lasts ~11 s (without checksums: equal sparse files sync at once).
    let yaml = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, yaml.replace("rate: unlimited", "rate: 6M\n      csums-alg: none"))?;
    c.up_connected_primary0()?;
    c.wait_r0(1, "syncing", Duration::from_secs(20), |r| field(r, "replication") == "SyncTarget")?;

    // Piped, with a timeout that expires during the sync: exit 4, plain progress lines.
    let t0 = Instant::now();
    let out = c.haadm(1, &["wait-sync", "r0", "--timeout", "1500ms"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.code() == Some(4), "wait-sync --timeout must exit 4: {:?} {text} {}", out.status, String::from_utf8_lossy(&out.stderr));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("r0 is not in sync after 1500ms"), "{}", String::from_utf8_lossy(&out.stderr));
    ensure!(t0.elapsed() < Duration::from_secs(5), "the timeout was not honoured: {:?}", t0.elapsed());
    ensure!(text.lines().any(|l| l.contains("r0: Secondary Inconsistent") && l.contains("SyncTarget") && l.contains("% ")), "{text}");
    ensure!(!text.contains('\x1b'), "no terminal escapes when piped: {text:?}");

    // `status --watch` piped: changed lines while the sync moves; SIGINT ends it with exit 0.
    let watch = Command::new(bin("haadm"))
        .args(["--config", &c.config.display().to_string(), "--node", "node1", "status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2500));
    Command::new("kill").args(["-INT", &watch.id().to_string()]).status()?;
    let out = watch.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "status --watch after SIGINT: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let progress_lines = text.lines().filter(|l| l.contains("r0: Primary UpToDate") && l.contains("SyncSource") && l.contains("% ")).count();
    ensure!(progress_lines >= 2, "expected the progress to show up in several lines: {text}");
    ensure!(text.lines().any(|l| l.contains("node1: no failover group")), "{text}");

    // On a terminal: bars drawn in place; ^C ends the watch with the cursor shown again.
    let (code, drawn) = on_tty(&haadm_cmd(&c, 0, "status --watch"), Some((Duration::from_millis(2000), b"\x03")), Duration::from_secs(15))?;
    ensure!(code == 0, "status --watch on a tty exited {code}: {drawn:?}");
    ensure!(drawn.contains("r0") && drawn.contains("SyncSource") && drawn.contains('[') && drawn.contains('='), "no progress bar drawn: {drawn:?}");
    ensure!(drawn.contains("\x1b[?25h"), "the cursor must be shown again at the end: {drawn:?}");

    // wait-sync interrupted on a terminal: exit 130, terminal restored.
    let (code, drawn) = on_tty(&haadm_cmd(&c, 1, "wait-sync r0"), Some((Duration::from_millis(1200), b"\x03")), Duration::from_secs(15))?;
    ensure!(code == 130, "wait-sync interrupted must exit 130, got {code}: {drawn:?}");
    ensure!(drawn.contains("SyncTarget") && drawn.contains("\x1b[?25h"), "{drawn:?}");

    // wait-sync on a terminal until the sync ends: exit 0.
    let (code, drawn) = on_tty(&haadm_cmd(&c, 1, "wait-sync r0 --timeout 60"), None, Duration::from_secs(70))?;
    ensure!(code == 0, "wait-sync exited {code}: {drawn:?}");
    ensure!(drawn.contains("r0: in sync"), "{drawn:?}");
    let r = ha_tests::resource(&c.status(1)?, "r0").context("r0")?;
    ensure!(field(&r, "disk") == "UpToDate", "wait-sync returned before the sync ended: {r:#}");

    // In sync already: at once. StandAlone: exit 1 with the reason.
    let out = c.haadm(0, &["wait-sync", "r0"])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.haadm_ok(0, &["disconnect", "r0"])?;
    let out = c.haadm(0, &["wait-sync", "all", "--timeout", "10s"])?;
    ensure!(out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("StandAlone"), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(())
}
