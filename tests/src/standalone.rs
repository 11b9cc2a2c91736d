//! A one-node clusterd serving iSCSI targets from plain files on 127.0.0.1, for driving real initiators
//! (libiscsi's iscsi-ls, iscsi-inq, iscsi-test-cu) against the embedded target.

use crate::{bin, write_secret};
use anyhow::{Context, Result, bail};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A free TCP port on 127.0.0.1.
pub fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Standalone {
    /// Writes `targets_yaml` (the body of the `targets:` section, indented two spaces) into a one-node
    /// config, creates each `(file, size)` sparse image and each `(file, secret)` 0600 secret file.
    pub fn new(targets_yaml: &str, images: &[(&str, u64)], secrets: &[(&str, &str)]) -> Result<Standalone> {
        let dir = tempfile::Builder::new().prefix("ha-target-").tempdir()?;
        let port = free_local_port();
        for (f, size) in images {
            std::fs::File::create(dir.path().join(f))?.set_len(*size)?;
        }
        for (f, s) in secrets {
            write_secret(&dir.path().join(f), s)?;
        }
        let d = dir.path().display();
        let yaml = format!(
            "nodes:\n  - name: solo\n    control-socket: {d}/solo.sock\n    state-dir: {d}/state\ntargets:\n{}",
            targets_yaml.replace("PORT", &port.to_string())
        );
        let config = dir.path().join("ha.yaml");
        std::fs::write(&config, yaml)?;
        let log = dir.path().join("clusterd.log");
        Ok(Standalone { dir, config, port, child: None, log })
    }

    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(bin("clusterd"))
            .arg("--config")
            .arg(&self.config)
            .arg("--node")
            .arg("solo")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn clusterd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("clusterd exited with {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the iSCSI portal 127.0.0.1:{} did not open: {}", self.port, self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn haadm(&self, args: &[&str]) -> Result<Output> {
        Command::new(bin("haadm")).arg("--config").arg(&self.config).arg("--node").arg("solo").args(args).output().context("run haadm")
    }

    /// `iscsi://[user%secret@]127.0.0.1:PORT/IQN/LUN`
    pub fn url(&self, iqn: &str, lun: u32, chap: Option<(&str, &str)>) -> String {
        let auth = chap.map(|(u, s)| format!("{u}%{s}@")).unwrap_or_default();
        format!("iscsi://{auth}127.0.0.1:{}/{iqn}/{lun}", self.port)
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a libiscsi tool with a time limit (a hung login must fail the test, not hang it).
pub fn run_tool(tool: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new("timeout");
    cmd.arg("20").arg(tool).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().with_context(|| format!("run {tool} (is libiscsi-bin installed?)"))
}
