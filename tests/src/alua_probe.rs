//! The libiscsi ALUA probe (`tests/alua/alua-probe.c`): built with the system C compiler on first use,
//! run with a time limit, and its output parsed into typed results. One probe run is one iSCSI session
//! (one I_T nexus) running a list of commands in order, so unit attentions, sense codes and REPORT
//! TARGET PORT GROUPS are seen exactly as an initiator on that port sees them. The output grammar is
//! documented at the top of the C file; [`parse_output`] is its only reader.

use crate::bin_dir;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/alua/alua-probe.c");

/// Serialises the build inside one test process (several tests may ask at once); across processes the
/// binary is written to a temporary name and renamed into place.
static BUILD: Mutex<()> = Mutex::new(());

/// The probe binary, compiled from its C source when missing or older than the source.
pub fn probe_binary() -> Result<PathBuf> {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let target = bin_dir().parent().map(Path::to_path_buf).unwrap_or_else(bin_dir);
    let dir = target.join("alua-probe");
    let exe = dir.join("alua-probe");
    let src_time = std::fs::metadata(SOURCE).and_then(|m| m.modified()).with_context(|| format!("stat {SOURCE}"))?;
    if std::fs::metadata(&exe).and_then(|m| m.modified()).is_ok_and(|t| t >= src_time) {
        return Ok(exe);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!("alua-probe.tmp.{}", std::process::id()));
    let out = Command::new("cc")
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&tmp)
        .arg(SOURCE)
        .arg("-liscsi")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no C compiler (`cc`) to build the ALUA probe: apt-get install gcc (tests/run installs it)")
        }
        Err(e) => return Err(e).context("run cc for the ALUA probe"),
    };
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let text = String::from_utf8_lossy(&out.stderr);
        if text.contains("iscsi/iscsi.h") || text.contains("-liscsi") {
            bail!("libiscsi-dev is not installed (needed to build {SOURCE}): apt-get install libiscsi-dev (tests/run installs it)\n{text}");
        }
        bail!("building {SOURCE} failed:\n{text}");
    }
    std::fs::rename(&tmp, &exe).with_context(|| format!("rename {} to {}", tmp.display(), exe.display()))?;
    Ok(exe)
}

/// A SCSI sense triple (sense key, ASC, ASCQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }
    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED: the first command of a new nexus.
    pub const POWER_ON_RESET: Sense = Sense::new(0x06, 0x29, 0x00);
    /// UNIT ATTENTION, ASYMMETRIC ACCESS STATE CHANGED.
    pub const ALUA_STATE_CHANGED: Sense = Sense::new(0x06, 0x2A, 0x06);
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
    pub const NOT_READY_TRANSITIONING: Sense = Sense::new(0x02, 0x04, 0x0A);
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    pub const NOT_READY_STANDBY: Sense = Sense::new(0x02, 0x04, 0x0B);
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
    pub const NOT_READY_UNAVAILABLE: Sense = Sense::new(0x02, 0x04, 0x0C);
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}/{:02x}/{:02x}", self.key, self.asc, self.ascq)
    }
}

/// An asymmetric access state as REPORT TARGET PORT GROUPS names it (SPC-4 table 159).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluaState {
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    LbaDependent,
    Offline,
    Transitioning,
    Other(u8),
}

impl FromStr for AluaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ao" => AluaState::ActiveOptimized,
            "an" => AluaState::ActiveNonOptimized,
            "s" => AluaState::Standby,
            "u" => AluaState::Unavailable,
            "lbd" => AluaState::LbaDependent,
            "o" => AluaState::Offline,
            "t" => AluaState::Transitioning,
            x => match x.strip_prefix('x').and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => AluaState::Other(v),
                None => return Err(format!("unknown access state `{s}`")),
            },
        })
    }
}

/// One target port group of a REPORT TARGET PORT GROUPS answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpgInfo {
    pub id: u16,
    pub state: AluaState,
    pub pref: bool,
    /// The states the group says it supports (the *_SUP bits).
    pub supported: Vec<AluaState>,
    /// STATUS CODE: 0 none, 1 changed by SET TARGET PORT GROUPS, 2 changed implicitly.
    pub status_code: u8,
    /// Relative target port identifiers in the group.
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtpg {
    /// The header format the target answered with: true extended (with `transition_time`), false
    /// length-only.
    pub extended: bool,
    pub transition_time: Option<u8>,
    pub groups: Vec<TpgInfo>,
}

impl Rtpg {
    /// The group holding relative target port `port`.
    pub fn group_of_port(&self, port: u16) -> Option<&TpgInfo> {
        self.groups.iter().find(|g| g.ports.contains(&port))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inquiry {
    pub device_type: u8,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    /// TPGS field: 0 no ALUA, 1 implicit, 2 explicit, 3 both.
    pub tpgs: u8,
}

/// VPD page 0x83 as the probe reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceId {
    pub relative_port: Option<u16>,
    pub port_group: Option<u16>,
    /// `naa:HEX` or `eui:HEX`.
    pub lu: Option<String>,
    pub port_name: Option<String>,
    pub target_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub lba: u64,
    /// Some(byte) when every byte of the block is that byte.
    pub fill: Option<u8>,
    /// FNV-1a 64 of the block ([`fnv1a64`]).
    pub fnv: u64,
    pub head: Vec<u8>,
}

/// What a successful command returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    None,
    Inquiry(Inquiry),
    DeviceId(DeviceId),
    Rtpg(Rtpg),
    Capacity { blocks: u64, block_size: u32 },
    Read(Block),
    Written { lba: u64, byte: u8 },
    Slept { ms: u64 },
    /// until-ua / until-check matched.
    Matched(Sense),
}

/// An intermediate or final outcome of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Data),
    Check(Sense),
    /// Another SCSI status (e.g. 0x18 RESERVATION CONFLICT).
    Status(u8),
    Error(String),
    /// An until-* command ran out of time.
    Timeout,
}

/// One command's result: its final outcome and, for until-* commands, what it saw on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub seq: usize,
    pub cmd: String,
    pub outcome: Outcome,
    /// until-*: the distinct non-matching results seen before the final one, in order.
    pub seen: Vec<Outcome>,
    /// until-*: elapsed milliseconds and attempts.
    pub ms: Option<u64>,
    pub tries: Option<u32>,
}

impl Step {
    fn fail(&self, want: &str) -> anyhow::Error {
        anyhow::anyhow!("probe command {} `{}`: expected {want}, got {:?}", self.seq, self.cmd, self.outcome)
    }
    pub fn data(&self) -> Result<&Data> {
        match &self.outcome {
            Outcome::Ok(d) => Ok(d),
            _ => Err(self.fail("ok")),
        }
    }
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
    /// The sense of a CHECK CONDITION, or the matched sense of until-ua/until-check.
    pub fn sense(&self) -> Option<Sense> {
        match &self.outcome {
            Outcome::Check(s) | Outcome::Ok(Data::Matched(s)) => Some(*s),
            _ => None,
        }
    }
    pub fn rtpg(&self) -> Result<&Rtpg> {
        match self.data()? {
            Data::Rtpg(r) => Ok(r),
            _ => Err(self.fail("REPORT TARGET PORT GROUPS data")),
        }
    }
    pub fn inquiry(&self) -> Result<&Inquiry> {
        match self.data()? {
            Data::Inquiry(i) => Ok(i),
            _ => Err(self.fail("INQUIRY data")),
        }
    }
    pub fn device_id(&self) -> Result<&DeviceId> {
        match self.data()? {
            Data::DeviceId(d) => Ok(d),
            _ => Err(self.fail("VPD 0x83 data")),
        }
    }
    pub fn block(&self) -> Result<&Block> {
        match self.data()? {
            Data::Read(b) => Ok(b),
            _ => Err(self.fail("a block read")),
        }
    }
    pub fn capacity(&self) -> Result<(u64, u32)> {
        match self.data()? {
            Data::Capacity { blocks, block_size } => Ok((*blocks, *block_size)),
            _ => Err(self.fail("READ CAPACITY data")),
        }
    }
}

/// A parsed probe run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutput {
    /// Ok(()) when the login succeeded, Err(message) otherwise.
    pub login: Result<(), String>,
    pub steps: Vec<Step>,
}

/// A finished probe run: the parsed lines, the exit status and the raw text.
#[derive(Debug)]
pub struct ProbeRun {
    pub output: ProbeOutput,
    /// 0 all commands ran, 1 connect/login failed, 2 usage, 3 session lost mid-run; None if killed.
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ProbeRun {
    /// The result of command `seq` (1-based, as printed).
    pub fn step(&self, seq: usize) -> Result<&Step> {
        self.output
            .steps
            .iter()
            .find(|s| s.seq == seq)
            .with_context(|| format!("probe printed no result for command {seq}:\n{}{}", self.stdout, self.stderr))
    }
    /// Fails unless the login worked and every command ran (exit 0).
    pub fn completed(&self) -> Result<&Self> {
        if self.exit != Some(0) || self.output.login.is_err() {
            bail!("probe exit {:?}, login {:?}:\n{}{}", self.exit, self.output.login, self.stdout, self.stderr);
        }
        Ok(self)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("alua-probe output line {line_no} `{line}`: {reason}")]
pub struct ParseError {
    pub line_no: usize,
    pub line: String,
    pub reason: String,
}

fn kv(fields: &[&str]) -> Result<HashMap<String, String>, String> {
    fields
        .iter()
        .map(|f| f.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("`{f}` is not KEY=VALUE")))
        .collect()
}

fn get<T: FromStr>(m: &HashMap<String, String>, key: &str) -> Result<T, String> {
    let v = m.get(key).ok_or_else(|| format!("missing `{key}=`"))?;
    v.parse().map_err(|_| format!("bad `{key}={v}`"))
}

fn opt_str(m: &HashMap<String, String>, key: &str) -> Result<Option<String>, String> {
    let v = m.get(key).ok_or_else(|| format!("missing `{key}=`"))?;
    Ok((v != "-").then(|| v.clone()))
}

fn opt_num<T: FromStr>(m: &HashMap<String, String>, key: &str) -> Result<Option<T>, String> {
    opt_str(m, key)?.map(|v| v.parse().map_err(|_| format!("bad `{key}={v}`"))).transpose()
}

fn hex_u8(s: &str) -> Result<u8, String> {
    if s.len() != 2 {
        return Err(format!("`{s}` is not two hex digits"));
    }
    u8::from_str_radix(s, 16).map_err(|_| format!("`{s}` is not hex"))
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("`{s}` has an odd number of hex digits"));
    }
    (0..s.len()).step_by(2).map(|i| hex_u8(&s[i..i + 2])).collect()
}

fn sense_slash(s: &str) -> Result<Sense, String> {
    let p: Vec<&str> = s.split('/').collect();
    match p.as_slice() {
        [k, a, q] => Ok(Sense::new(hex_u8(k)?, hex_u8(a)?, hex_u8(q)?)),
        _ => Err(format!("`{s}` is not KK/AA/QQ")),
    }
}

/// The data of an `ok` line of command `cmd` from its KEY=VALUE fields.
fn parse_data(cmd: &str, m: &HashMap<String, String>) -> Result<Data, String> {
    Ok(match cmd {
        "tur" => Data::None,
        "inq" => Data::Inquiry(Inquiry {
            device_type: hex_u8(&get::<String>(m, "type")?)?,
            vendor: get(m, "vendor")?,
            product: get(m, "product")?,
            revision: get(m, "rev")?,
            tpgs: get(m, "tpgs")?,
        }),
        "vpd83" => Data::DeviceId(DeviceId {
            relative_port: opt_num(m, "rtpi")?,
            port_group: opt_num(m, "tpg")?,
            lu: opt_str(m, "lu")?,
            port_name: opt_str(m, "port_name")?,
            target_name: opt_str(m, "target_name")?,
        }),
        "rtpg" | "rtpg-len" => {
            let extended = match get::<String>(m, "format")?.as_str() {
                "ext" => true,
                "len" => false,
                f => return Err(format!("unknown format `{f}`")),
            };
            Data::Rtpg(Rtpg { extended, transition_time: opt_num(m, "tt")?, groups: Vec::new() })
        }
        "readcap" => Data::Capacity { blocks: get(m, "blocks")?, block_size: get(m, "block_size")? },
        "read" => {
            let fill = get::<String>(m, "fill")?;
            Data::Read(Block {
                lba: get(m, "lba")?,
                fill: if fill == "mixed" { None } else { Some(hex_u8(&fill)?) },
                fnv: u64::from_str_radix(&get::<String>(m, "fnv")?, 16).map_err(|_| "bad fnv".to_string())?,
                head: hex_bytes(&get::<String>(m, "head")?)?,
            })
        }
        "write" => Data::Written { lba: get(m, "lba")?, byte: hex_u8(&get::<String>(m, "byte")?)? },
        "sleep" => Data::Slept { ms: get(m, "ms")? },
        c => return Err(format!("unknown command `{c}`")),
    })
}

fn parse_tpg(fields: &[&str]) -> Result<TpgInfo, String> {
    let m = kv(fields)?;
    let list = |key: &str| -> Result<Vec<String>, String> {
        let v: String = get(&m, key)?;
        Ok(if v == "-" { Vec::new() } else { v.split(',').map(str::to_string).collect() })
    };
    Ok(TpgInfo {
        id: get(&m, "id")?,
        state: get::<String>(&m, "state")?.parse()?,
        pref: match get::<String>(&m, "pref")?.as_str() {
            "1" => true,
            "0" => false,
            p => return Err(format!("bad pref `{p}`")),
        },
        supported: list("sup")?.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
        status_code: get(&m, "status")?,
        ports: list("ports")?.iter().map(|p| p.parse().map_err(|_| format!("bad port `{p}`"))).collect::<Result<_, _>>()?,
    })
}

/// The outcome words after SEQ NAME (without `saw`/`timeout` handling).
fn parse_outcome(cmd: &str, words: &[&str]) -> Result<Outcome, String> {
    match words {
        ["ok", rest @ ..] => Ok(Outcome::Ok(parse_data(cmd, &kv(rest)?)?)),
        ["check", k, a, q] => Ok(Outcome::Check(Sense::new(hex_u8(k)?, hex_u8(a)?, hex_u8(q)?))),
        ["status", s] => Ok(Outcome::Status(hex_u8(s)?)),
        ["error", msg @ ..] => Ok(Outcome::Error(msg.join(" "))),
        _ => Err("expected ok, check, status or error".into()),
    }
}

/// Parses the probe's stdout (grammar at the top of tests/alua/alua-probe.c).
pub fn parse_output(text: &str) -> Result<ProbeOutput, ParseError> {
    let mut login = Err("the probe printed no login line".to_string());
    let mut steps: Vec<Step> = Vec::new();
    let mut pending_seen: Vec<Outcome> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| ParseError { line_no: i + 1, line: line.to_string(), reason };
        let words: Vec<&str> = line.split(' ').collect();
        let (seq, name, rest) = match words.as_slice() {
            [s, n, rest @ ..] => (s.parse::<usize>().map_err(|_| err("no sequence number".into()))?, *n, rest),
            _ => return Err(err("too few words".into())),
        };
        if seq == 0 {
            login = match rest {
                ["ok"] => Ok(()),
                ["error", msg @ ..] => Err(msg.join(" ")),
                _ => return Err(err("bad login line".into())),
            };
            continue;
        }
        if name == "tpg" {
            let g = parse_tpg(rest).map_err(err)?;
            match steps.last_mut() {
                Some(Step { seq: s, outcome: Outcome::Ok(Data::Rtpg(r)), .. }) if *s == seq => r.groups.push(g),
                _ => return Err(err("tpg line without an rtpg result before it".into())),
            }
            continue;
        }
        let until = name.starts_with("until-");
        if until && rest.first() == Some(&"saw") {
            // `saw` lines carry the inner command's outcome (tur for until-ua/until-check).
            let inner = if name == "until-ok" { "" } else { "tur" };
            pending_seen.push(parse_outcome(inner, &rest[1..]).unwrap_or_else(|_| Outcome::Error(rest[1..].join(" "))));
            continue;
        }
        let mut step = Step { seq, cmd: name.to_string(), outcome: Outcome::Timeout, seen: std::mem::take(&mut pending_seen), ms: None, tries: None };
        if until && matches!(rest.first(), Some(&"ok") | Some(&"timeout")) {
            let m = kv(&rest[1..]).map_err(err)?;
            step.ms = Some(get(&m, "ms").map_err(err)?);
            step.tries = Some(get(&m, "tries").map_err(err)?);
            if rest[0] == "ok" {
                step.outcome = if name == "until-ok" {
                    Outcome::Ok(parse_until_ok_data(&m).map_err(err)?)
                } else {
                    Outcome::Ok(Data::Matched(sense_slash(&get::<String>(&m, "sense").map_err(err)?).map_err(err)?))
                };
            }
        } else {
            step.outcome = parse_outcome(name, rest).map_err(err)?;
        }
        steps.push(step);
    }
    Ok(ProbeOutput { login, steps })
}

/// until-ok's `ok` line holds the inner command's fields next to ms/tries: recognise the inner command
/// by its distinctive keys.
fn parse_until_ok_data(m: &HashMap<String, String>) -> Result<Data, String> {
    let cmd = if m.contains_key("format") {
        "rtpg"
    } else if m.contains_key("vendor") {
        "inq"
    } else if m.contains_key("rtpi") {
        "vpd83"
    } else if m.contains_key("block_size") {
        "readcap"
    } else if m.contains_key("fnv") {
        "read"
    } else if m.contains_key("byte") {
        "write"
    } else {
        "tur"
    };
    parse_data(cmd, m)
}

/// FNV-1a 64 of `data`, as the probe prints for `read`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// How to run the probe against one LUN.
#[derive(Clone, Debug)]
pub struct Probe {
    pub url: String,
    pub initiator: Option<String>,
    /// Per SCSI command (the probe's --timeout).
    pub command_timeout: Duration,
    /// The whole run; the probe is killed past it.
    pub limit: Duration,
}

impl Probe {
    pub fn new(url: &str) -> Probe {
        Probe { url: url.to_string(), initiator: None, command_timeout: Duration::from_secs(10), limit: Duration::from_secs(60) }
    }
    pub fn initiator(mut self, iqn: &str) -> Probe {
        self.initiator = Some(iqn.to_string());
        self
    }
    /// How long one SCSI command may go unanswered before the probe calls the session lost (a
    /// blackholed path is only noticed this way; a closed connection is noticed at once).
    pub fn command_timeout(mut self, t: Duration) -> Probe {
        self.command_timeout = t;
        self
    }
    pub fn limit(mut self, limit: Duration) -> Probe {
        self.limit = limit;
        self
    }

    /// Runs `cmds` on one session and waits (bounded) for the result.
    pub fn run(&self, cmds: &[&str]) -> Result<ProbeRun> {
        self.spawn(cmds)?.wait()
    }

    /// Starts the probe in the background (e.g. to keep a session open across a failover).
    pub fn spawn(&self, cmds: &[&str]) -> Result<RunningProbe> {
        let exe = probe_binary()?;
        let mut cmd = Command::new(&exe);
        if let Some(i) = &self.initiator {
            cmd.arg("--initiator").arg(i);
        }
        cmd.arg("--timeout").arg(self.command_timeout.as_millis().to_string()).arg(&self.url).args(cmds);
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("spawn {}", exe.display()))?;
        Ok(RunningProbe { child, deadline: Instant::now() + self.limit, args: cmds.join(" ") })
    }
}

pub struct RunningProbe {
    child: Child,
    deadline: Instant,
    args: String,
}

impl RunningProbe {
    /// Waits for the probe to exit (killing it at the run limit) and parses its output.
    pub fn wait(mut self) -> Result<ProbeRun> {
        use std::io::Read;
        // Drain the pipes on threads so a chatty probe cannot block on a full pipe.
        let mut so = self.child.stdout.take().context("probe stdout")?;
        let mut se = self.child.stderr.take().context("probe stderr")?;
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let mut killed = false;
        let status = loop {
            if let Some(st) = self.child.try_wait().context("wait for the probe")? {
                break st;
            }
            if Instant::now() >= self.deadline {
                let _ = self.child.kill();
                killed = true;
                break self.child.wait().context("reap the probe")?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = t_out.join().unwrap_or_default();
        let mut stderr = t_err.join().unwrap_or_default();
        if killed {
            stderr.push_str(&format!("\n(alua-probe killed at its run limit: {})", self.args));
        }
        let output = parse_output(&stdout).with_context(|| format!("stdout:\n{stdout}\nstderr:\n{stderr}"))?;
        Ok(ProbeRun { output, exit: if killed { None } else { status.code() }, stdout, stderr })
    }
}

impl Drop for RunningProbe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
0 login ok
1 tur check 06 29 00
2 inq ok type=00 vendor=CLUSTERD product=HA-VOLUME rev=0001 tpgs=1
3 vpd83 ok rtpi=1 tpg=1 lu=naa:6001405abcdef0123456789abcdef012 port_name=iqn.2026-11.org.example:t,t,0x0001 target_name=iqn.2026-11.org.example:t
4 rtpg ok format=ext tt=0 groups=2
4 tpg id=1 state=ao pref=1 sup=ao,an,s,u,t status=2 ports=1
4 tpg id=2 state=s pref=0 sup=ao,s,t status=0 ports=2,3
5 rtpg-len ok format=len tt=- groups=1
5 tpg id=7 state=x9 pref=0 sup=- status=0 ports=-
6 readcap ok blocks=32768 block_size=512
7 write ok lba=7 byte=a5
8 read ok lba=7 fill=a5 fnv=0123456789abcdef head=a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5
9 read ok lba=8 fill=mixed fnv=00000000000000ff head=000102030405060708090a0b0c0d0e0f
10 sleep ok ms=100
11 until-ua saw ok
11 until-ua saw check 02 04 0a
11 until-ua ok sense=06/2a/06 ms=350 tries=7
12 until-check timeout ms=300 tries=6
13 until-ok saw check 02 04 0b
13 until-ok ok ms=120 tries=3 format=ext tt=0 groups=1
13 tpg id=2 state=ao pref=1 sup=ao status=2 ports=2
14 until-ok ok ms=0 tries=1 blocks=8 block_size=4096
15 tur status 18
16 tur error cancelled (session dropped): POLLHUP
";

    #[test]
    fn parses_every_line_kind() {
        let out = parse_output(SAMPLE).unwrap();
        assert_eq!(out.login, Ok(()));
        assert_eq!(out.steps.len(), 16);
        let s = |n: usize| &out.steps[n - 1];
        assert_eq!(s(1).outcome, Outcome::Check(Sense::POWER_ON_RESET));
        let inq = s(2).inquiry().unwrap();
        assert_eq!((inq.vendor.as_str(), inq.product.as_str(), inq.tpgs), ("CLUSTERD", "HA-VOLUME", 1));
        let id = s(3).device_id().unwrap();
        assert_eq!((id.relative_port, id.port_group), (Some(1), Some(1)));
        assert_eq!(id.lu.as_deref(), Some("naa:6001405abcdef0123456789abcdef012"));
        assert_eq!(id.port_name.as_deref(), Some("iqn.2026-11.org.example:t,t,0x0001"));
        let r = s(4).rtpg().unwrap();
        assert!(r.extended);
        assert_eq!(r.transition_time, Some(0));
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.groups[0], TpgInfo {
            id: 1,
            state: AluaState::ActiveOptimized,
            pref: true,
            supported: vec![AluaState::ActiveOptimized, AluaState::ActiveNonOptimized, AluaState::Standby, AluaState::Unavailable, AluaState::Transitioning],
            status_code: 2,
            ports: vec![1],
        });
        assert_eq!(r.group_of_port(3).map(|g| (g.id, g.state)), Some((2, AluaState::Standby)));
        let r = s(5).rtpg().unwrap();
        assert!(!r.extended);
        assert_eq!(r.transition_time, None);
        assert_eq!((r.groups[0].state, r.groups[0].supported.len(), r.groups[0].ports.len()), (AluaState::Other(9), 0, 0));
        assert_eq!(s(6).capacity().unwrap(), (32768, 512));
        assert_eq!(s(7).data().unwrap(), &Data::Written { lba: 7, byte: 0xa5 });
        let b = s(8).block().unwrap();
        assert_eq!((b.lba, b.fill, b.fnv, b.head.len()), (7, Some(0xa5), 0x0123_4567_89ab_cdef, 16));
        assert_eq!(s(9).block().unwrap().fill, None);
        assert_eq!(s(10).data().unwrap(), &Data::Slept { ms: 100 });
        assert_eq!(s(11).sense(), Some(Sense::ALUA_STATE_CHANGED));
        assert_eq!(s(11).seen, vec![Outcome::Ok(Data::None), Outcome::Check(Sense::NOT_READY_TRANSITIONING)]);
        assert_eq!((s(11).ms, s(11).tries), (Some(350), Some(7)));
        assert_eq!(s(12).outcome, Outcome::Timeout);
        assert!(s(12).seen.is_empty());
        assert_eq!(s(13).seen, vec![Outcome::Check(Sense::NOT_READY_STANDBY)]);
        assert_eq!(s(13).rtpg().unwrap().groups[0].state, AluaState::ActiveOptimized);
        assert_eq!(s(14).capacity().unwrap(), (8, 4096));
        assert_eq!(s(15).outcome, Outcome::Status(0x18));
        assert_eq!(s(16).outcome, Outcome::Error("cancelled (session dropped): POLLHUP".into()));
        assert!(s(16).data().is_err());
    }

    #[test]
    fn login_failure_and_garbage_are_reported() {
        let out = parse_output("0 login error connect 127.0.0.1:1: refused\n").unwrap();
        assert_eq!(out.login, Err("connect 127.0.0.1:1: refused".into()));
        assert!(out.steps.is_empty());
        assert_eq!(parse_output("").unwrap().login, Err("the probe printed no login line".into()));
        for bad in [
            "x tur ok",
            "1",
            "1 tur maybe",
            "1 tur check 6 29 00",
            "1 inq ok vendor=X",
            "1 tpg id=1 state=ao pref=1 sup=- status=0 ports=1",
            "1 rtpg ok format=ext tt=0 groups=1\n1 tpg id=1 state=zz pref=1 sup=- status=0 ports=1",
            "1 rtpg ok format=ext tt=0 groups=1\n1 tpg id=1 state=ao pref=2 sup=- status=0 ports=1",
            "1 read ok lba=1 fill=a5 fnv=zz head=00",
            "1 until-ua ok sense=06-2a-06 ms=1 tries=1",
            "1 until-ua ok sense=06/2a/06 tries=1",
        ] {
            assert!(parse_output(bad).is_err(), "accepted `{bad}`");
        }
        let e = parse_output("0 login ok\n1 tur check 06 29\n").unwrap_err();
        assert_eq!(e.line_no, 2);
    }

    #[test]
    fn fnv_matches_the_c_implementation() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
