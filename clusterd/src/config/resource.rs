//! One replicated resource (the `resources.NAME` section of ha.yaml, i.e. drbd.conf's `resource NAME
//! { }`): typed settings, their defaults, and the checks that involve only this resource.

use super::policy::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, CramHmacAlg, Fencing, OnIoError, OnLag, PolicyError,
    Protocol, CsumsAlg, CsumsFor, RrConflict, VerifyAlg,
};
use super::raw::{RawNet, RawResource, RawResourceNode, RawStartup, RawSyncer, Scalar};
use super::units::{self, MetaDisk, Rate};
use super::fields::Fields;
use super::{ConfigError, NodeConfig, Source, check_name, format_duration};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Defaults, named so the example file, the docs and the code agree.
pub mod defaults {
    use super::{Duration, Rate};
    /// 0 = wait for the peer forever on a normal start.
    pub const WFC_TIMEOUT: Duration = Duration::ZERO;
    /// A node that was degraded before it went down waits this long for its peer.
    pub const DEGR_WFC_TIMEOUT: Duration = Duration::from_secs(120);
    /// 0 = wait forever when the local data is Outdated.
    pub const OUTDATED_WFC_TIMEOUT: Duration = Duration::ZERO;
    pub const TIMEOUT: Duration = Duration::from_secs(6);
    pub const PING_INT: Duration = Duration::from_secs(10);
    pub const PING_TIMEOUT: Duration = Duration::from_millis(500);
    pub const CONNECT_INT: Duration = Duration::from_secs(2);
    pub const MAX_BUFFERS: u32 = 2048;
    /// No cap: DRBD's 250K default is its most complained-about setting; `c-min-rate` still makes
    /// resync yield to application I/O.
    pub const RATE: Rate = Rate::UNLIMITED;
    pub const C_MIN_RATE: Rate = Rate(Some(250 * 1024));
    /// The dynamic resync controller (issue 18; `replicator::machine::resync_controller`): DRBD's
    /// 2 s horizon; 16 MiB in flight = the static window (16 × 1 MiB), so an idle application sees
    /// the same resync speed as with the controller off; no rate ceiling, because the latency bound
    /// is what protects the application and a fixed ceiling is the tuning the controller replaces.
    pub const C_PLAN_AHEAD: Duration = Duration::from_secs(2);
    pub const C_FILL_TARGET: u64 = 16 << 20;
    pub const C_MAX_RATE: Rate = Rate::UNLIMITED;
    /// DRBD's default activity-log size (about 4.8 GiB of hot data).
    pub const AL_EXTENTS: u32 = 1237;
    /// Shortest `verify-interval` (tests use a few seconds; production days).
    pub const VERIFY_INTERVAL_MIN: Duration = Duration::from_secs(1);
    /// Protocol A: bytes the peer may be behind before `on-lag` applies.
    pub const MAX_LAG: u64 = 64 << 20;
}

/// Smallest `net.max-lag`: one large write (64 KiB) must fit, or every write would wait.
pub const MAX_LAG_MIN: u64 = 64 << 10;

/// Accepted `al-extents` (DRBD's limits: 7 up to what fits the 32 KiB on-disk ring).
pub const AL_EXTENTS_RANGE: RangeInclusive<u32> = 7..=6433;
/// Accepted `max-buffers` (DRBD's limits).
/// `syncer.c-fill-target`: one request's worth at least, at most 1 GiB in flight.
pub const C_FILL_TARGET_RANGE: RangeInclusive<u64> = (64 << 10)..=(1 << 30);
/// `syncer.c-plan-ahead`: 0 (off) or 100 ms (one controller step) up to a minute.
pub const C_PLAN_AHEAD_MAX: Duration = Duration::from_secs(60);
pub const MAX_BUFFERS_RANGE: RangeInclusive<u32> = 32..=131072;
/// Longest resource or device name (it ends up in on-disk metadata and socket names).
pub const MAX_RESOURCE_NAME_LEN: usize = 63;

/// A replicated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    pub name: String,
    pub protocol: Protocol,
    /// Name of the replicated volume the iSCSI target exports.
    pub device: String,
    pub startup: StartupConfig,
    pub disk: DiskConfig,
    pub net: NetConfig,
    pub syncer: SyncerConfig,
    /// Handler name (canonical spelling, e.g. `fence-peer`) → shell command.
    pub handlers: BTreeMap<String, String>,
    /// Node name → where this resource lives on that node. Has exactly the cluster's nodes.
    pub on: BTreeMap<String, ResourceNodeConfig>,
    /// The config file, kept so that lookups can name it in their errors.
    file: PathBuf,
}

/// How long a starting node waits for its peer; `Duration::ZERO` means forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupConfig {
    pub wfc_timeout: Duration,
    pub degr_wfc_timeout: Duration,
    pub outdated_wfc_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskConfig {
    pub on_io_error: OnIoError,
    pub fencing: Fencing,
    /// Aligned requests of 64 KiB and more bypass the page cache (O_DIRECT); small ones never do.
    pub direct_io: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// `None`: the peer is not authenticated (allowed, but reported by [`super::HaConfig::warnings`]).
    pub auth: Option<PeerAuth>,
    pub after_sb_0pri: AfterSb0Pri,
    pub after_sb_1pri: AfterSb1Pri,
    pub after_sb_2pri: AfterSb2Pri,
    pub rr_conflict: RrConflict,
    /// Reply timeout while I/O is in flight; always less than `ping_int`.
    pub timeout: Duration,
    pub ping_int: Duration,
    pub ping_timeout: Duration,
    pub connect_int: Duration,
    pub max_buffers: u32,
    /// Protocol A settings (issue 18); their defaults under protocol C, where setting them is refused.
    pub async_repl: AsyncReplConfig,
}

/// Protocol A: the lag bound and whether the embedded failover may promote the asynchronous peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncReplConfig {
    /// `net.max-lag`: bytes sent to the peer and not yet acknowledged.
    pub max_lag: u64,
    /// `net.max-lag-time`: age of the oldest write the peer has not acknowledged (`None`: `off`).
    pub max_lag_time: Option<Duration>,
    pub on_lag: OnLag,
    /// `net.allow-async-failover`: without it an A Secondary whose peer is gone is promoted only by
    /// `haadm primary --force`.
    pub allow_async_failover: bool,
    /// `net.epoch-flush`: the peer flushes its disk at epoch boundaries (prefix-consistent after a
    /// power loss of the peer); `off` for a peer disk without a volatile write cache.
    pub epoch_flush: bool,
}

impl Default for AsyncReplConfig {
    fn default() -> Self {
        AsyncReplConfig { max_lag: defaults::MAX_LAG, max_lag_time: None, on_lag: OnLag::Wait, allow_async_failover: false, epoch_flush: true }
    }
}

impl ResourceConfig {
    /// What the replicator runs (`NodeParams::protocol`).
    pub fn replication_protocol(&self) -> replicator::machine::ReplProtocol {
        use replicator::machine::{AsyncOptions, OnLag as MachineOnLag, ReplProtocol};
        match self.protocol {
            Protocol::C => ReplProtocol::C,
            Protocol::A => {
                let a = &self.net.async_repl;
                ReplProtocol::A(AsyncOptions {
                    max_lag_bytes: a.max_lag,
                    max_lag_ms: a.max_lag_time.map(|d| d.as_millis() as u64),
                    on_lag: match a.on_lag {
                        OnLag::Wait => MachineOnLag::Wait,
                        OnLag::Disconnect => MachineOnLag::Disconnect,
                    },
                    allow_failover: a.allow_async_failover,
                    epoch_flush: a.epoch_flush,
                })
            }
        }
    }
}

/// Peer authentication. Holds the secret's path only, never the secret, so Debug output and errors
/// cannot leak it; read it with [`super::read_secret_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuth {
    pub cram_hmac_alg: CramHmacAlg,
    pub shared_secret_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncerConfig {
    pub rate: Rate,
    pub verify_alg: VerifyAlg,
    /// Checksum-based resync (issue 18): default sha1 for full syncs only.
    pub csums_alg: CsumsAlg,
    pub csums_for: CsumsFor,
    pub al_extents: u32,
    pub c_min_rate: Rate,
    // issue 18 resync controller: `c-plan-ahead` (0 = off: the static window), `c-fill-target`
    // (most resync bytes in flight), `c-max-rate` (rate ceiling while the controller runs).
    pub c_plan_ahead: Duration,
    pub c_fill_target: u64,
    pub c_max_rate: Rate,
    /// `verify-repair`: every online verify (the scheduled ones too) resyncs what it found at once.
    pub verify_repair: bool,
    /// `verify-interval`: run an online verify this often (`None` = off).
    pub verify_interval: Option<Duration>,
    /// `verify-rate`: cap of an online verify in bytes compared per second; `None` (written
    /// `same-as-rate`, the default) = whatever `rate` is.
    pub verify_rate: Option<Rate>,
}

/// How `syncer.verify-rate` is written when it follows `syncer.rate` (the default; what `dump` shows).
pub const VERIFY_RATE_SAME_AS_RATE: &str = "same-as-rate";

impl SyncerConfig {
    /// The verify cap in force: `verify-rate`, or `rate` while that is unset.
    pub fn effective_verify_rate(&self) -> Rate {
        self.verify_rate.unwrap_or(self.rate)
    }
}

/// A resource on one node (drbd.conf's `on NAME { }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNodeConfig {
    pub disk: PathBuf,
    pub address: SocketAddr,
    pub meta_disk: MetaDisk,
}

impl ResourceConfig {
    /// This resource's settings on `node`.
    pub fn on(&self, node: &str) -> Result<&ResourceNodeConfig, ConfigError> {
        self.on.get(node).ok_or_else(|| ConfigError::NotOnNode {
            file: self.file.clone(),
            resource: self.name.clone(),
            node: node.to_string(),
            known: self.on.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The shared-secret file, if peer authentication is on.
    pub fn secret_file(&self) -> Option<&Path> {
        self.net
            .auth
            .as_ref()
            .map(|a| a.shared_secret_file.as_path())
    }
}

/// Value converters only resources use; the shared ones are in `fields.rs`.
impl Fields<'_> {
    fn policy<T>(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: T,
        parse: fn(&str, &str) -> Result<T, PolicyError>,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(s) => parse(&s.text, &s.shown()).map_err(|e| self.invalid(suffix, e)),
        }
    }

    fn rate(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: Rate,
    ) -> Result<Rate, ConfigError> {
        match value {
            None => Ok(default),
            Some(s) => units::parse_rate(&s.text, &s.shown()).map_err(|e| self.invalid(suffix, e)),
        }
    }

    fn number_in(
        &self,
        suffix: &str,
        value: Option<&Scalar>,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        if s.quoted || s.text.is_empty() || !s.text.bytes().all(|b| b.is_ascii_digit()) {
            let problem = if s.text.starts_with('-') && !s.quoted {
                format!(
                    "{} is out of range {}..={}",
                    s.shown(),
                    range.start(),
                    range.end()
                )
            } else {
                format!("{} is not a whole number", s.shown())
            };
            return Err(self.invalid(suffix, problem));
        }
        match s.text.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.invalid(
                suffix,
                format_args!(
                    "{} is out of range {}..={}",
                    s.text,
                    range.start(),
                    range.end()
                ),
            )),
        }
    }
}

/// Builds and checks one resource. `nodes` are the cluster's (already validated) nodes.
pub(super) fn build_resource(
    src: &Source<'_>,
    name: &str,
    raw: &RawResource,
    nodes: &[NodeConfig],
) -> Result<ResourceConfig, ConfigError> {
    let fields = Fields::new(src, format!("resources.{name}"));
    check_name(name, MAX_RESOURCE_NAME_LEN)
        .map_err(|p| src.invalid(format!("resources.{name}"), p))?;
    let protocol = fields.policy(
        "protocol",
        raw.protocol.as_ref(),
        Protocol::C,
        Protocol::parse_explained,
    )?;
    check_name(&raw.device.text, MAX_RESOURCE_NAME_LEN)
        .map_err(|p| fields.invalid("device", format_args!("{}: {p}", raw.device.shown())))?;
    let startup = build_startup(&fields, &raw.startup)?;
    let disk = DiskConfig {
        on_io_error: fields.policy(
            "disk.on-io-error",
            raw.disk.on_io_error.as_ref(),
            OnIoError::PassOn,
            OnIoError::parse,
        )?,
        fencing: fields.policy(
            "disk.fencing",
            raw.disk.fencing.as_ref(),
            Fencing::DontCare,
            Fencing::parse,
        )?,
        direct_io: fields.flag("disk.direct-io", raw.disk.direct_io.as_ref(), false)?,
    };
    let net = build_net(&fields, &raw.net, nodes, protocol)?;
    let syncer = build_syncer(&fields, &raw.syncer)?;
    let mut handlers = BTreeMap::new();
    for (handler, command) in raw.handlers.entries() {
        if command.text.trim().is_empty() {
            return Err(fields.invalid(
                &format!("handlers.{handler}"),
                "empty command; remove the line to have no handler",
            ));
        }
        handlers.insert(handler.to_string(), command.text.clone());
    }
    let on = build_on(&fields, &raw.on.0, nodes)?;
    Ok(ResourceConfig {
        name: name.to_string(),
        protocol,
        device: raw.device.text.clone(),
        startup,
        disk,
        net,
        syncer,
        handlers,
        on,
        file: src.file.to_path_buf(),
    })
}

fn build_startup(
    fields: &Fields<'_>,
    raw: &RawStartup,
) -> Result<StartupConfig, ConfigError> {
    Ok(StartupConfig {
        wfc_timeout: fields.duration(
            "startup.wfc-timeout",
            raw.wfc_timeout.as_ref(),
            defaults::WFC_TIMEOUT,
        )?,
        degr_wfc_timeout: fields.duration(
            "startup.degr-wfc-timeout",
            raw.degr_wfc_timeout.as_ref(),
            defaults::DEGR_WFC_TIMEOUT,
        )?,
        outdated_wfc_timeout: fields.duration(
            "startup.outdated-wfc-timeout",
            raw.outdated_wfc_timeout.as_ref(),
            defaults::OUTDATED_WFC_TIMEOUT,
        )?,
    })
}

fn build_net(
    fields: &Fields<'_>,
    raw: &RawNet,
    nodes: &[NodeConfig],
    protocol: Protocol,
) -> Result<NetConfig, ConfigError> {
    let auth = match (&raw.cram_hmac_alg, &raw.shared_secret_file) {
        (None, None) => None,
        (Some(alg), Some(file)) => {
            let cram_hmac_alg = CramHmacAlg::parse(&alg.text, &alg.shown())
                .map_err(|e| fields.invalid("net.cram-hmac-alg", e))?;
            if file.text.trim().is_empty() {
                return Err(fields.invalid("net.shared-secret-file", "empty path"));
            }
            Some(PeerAuth {
                cram_hmac_alg,
                shared_secret_file: fields.src.resolve(&file.text),
            })
        }
        (Some(_), None) => {
            return Err(fields.invalid(
                "net",
                "cram-hmac-alg is set but shared-secret-file is not; set both to authenticate the peer, or neither",
            ));
        }
        (None, Some(_)) => {
            return Err(fields.invalid(
                "net",
                "shared-secret-file is set but cram-hmac-alg is not; set both (cram-hmac-alg: sha1), or neither",
            ));
        }
    };
    let after_sb_0pri = fields.policy(
        "net.after-sb-0pri",
        raw.after_sb_0pri.as_ref(),
        AfterSb0Pri::Disconnect,
        AfterSb0Pri::parse,
    )?;
    if let AfterSb0Pri::DiscardNode(victim) = &after_sb_0pri
        && !nodes.iter().any(|n| &n.name == victim)
    {
        return Err(fields.invalid(
            "net.after-sb-0pri",
            format_args!(
                "discard-node-{victim}: `{victim}` is not a node in `nodes` ({})",
                node_list(nodes)
            ),
        ));
    }
    let timeout =
        fields.positive_duration("net.timeout", raw.timeout.as_ref(), defaults::TIMEOUT)?;
    let ping_int =
        fields.positive_duration("net.ping-int", raw.ping_int.as_ref(), defaults::PING_INT)?;
    if timeout >= ping_int {
        return Err(fields.invalid(
            "net.timeout",
            format_args!(
                "{} must be less than ping-int ({}), as in DRBD",
                format_duration(timeout),
                format_duration(ping_int)
            ),
        ));
    }
    Ok(NetConfig {
        auth,
        after_sb_0pri,
        after_sb_1pri: fields.policy(
            "net.after-sb-1pri",
            raw.after_sb_1pri.as_ref(),
            AfterSb1Pri::Disconnect,
            AfterSb1Pri::parse,
        )?,
        after_sb_2pri: fields.policy(
            "net.after-sb-2pri",
            raw.after_sb_2pri.as_ref(),
            AfterSb2Pri::Disconnect,
            AfterSb2Pri::parse,
        )?,
        rr_conflict: fields.policy(
            "net.rr-conflict",
            raw.rr_conflict.as_ref(),
            RrConflict::Disconnect,
            RrConflict::parse,
        )?,
        timeout,
        ping_int,
        ping_timeout: fields.positive_duration(
            "net.ping-timeout",
            raw.ping_timeout.as_ref(),
            defaults::PING_TIMEOUT,
        )?,
        connect_int: fields.positive_duration(
            "net.connect-int",
            raw.connect_int.as_ref(),
            defaults::CONNECT_INT,
        )?,
        max_buffers: fields.number_in(
            "net.max-buffers",
            raw.max_buffers.as_ref(),
            defaults::MAX_BUFFERS,
            MAX_BUFFERS_RANGE,
        )?,
        async_repl: build_async(fields, raw, protocol)?,
    })
}

/// The protocol-A fields: refused under protocol C (they would silently do nothing).
fn build_async(fields: &Fields<'_>, raw: &RawNet, protocol: Protocol) -> Result<AsyncReplConfig, ConfigError> {
    if protocol == Protocol::C {
        let set = [
            ("net.max-lag", &raw.max_lag),
            ("net.max-lag-time", &raw.max_lag_time),
            ("net.on-lag", &raw.on_lag),
            ("net.allow-async-failover", &raw.allow_async_failover),
            ("net.epoch-flush", &raw.epoch_flush),
        ];
        if let Some((name, _)) = set.iter().find(|(_, v)| v.is_some()) {
            return Err(fields.invalid(name, "only applies to protocol A (this resource uses protocol C); remove it or set `protocol: A`"));
        }
        return Ok(AsyncReplConfig::default());
    }
    let max_lag = match raw.max_lag.as_ref() {
        None => defaults::MAX_LAG,
        Some(v) => match units::parse_rate(&v.text, &v.shown()) {
            Ok(Rate(Some(b))) if b >= MAX_LAG_MIN => b,
            Ok(Rate(Some(_))) => {
                return Err(fields.invalid("net.max-lag", format_args!("{} is below the smallest bound, 64K (one large write must fit)", v.shown())));
            }
            Ok(Rate(None)) => {
                return Err(fields.invalid("net.max-lag", format_args!("{} is not a bound; write a size like 64M (protocol A needs one)", v.shown())));
            }
            Err(_) => return Err(fields.invalid("net.max-lag", format_args!("{} is not a size (expected like 512K, 64M, 1G)", v.shown()))),
        },
    };
    let max_lag_time = match raw.max_lag_time.as_ref() {
        None => None,
        Some(s) if s.text.trim().eq_ignore_ascii_case("off") => None,
        Some(_) => Some(fields.positive_duration("net.max-lag-time", raw.max_lag_time.as_ref(), Duration::ZERO)?),
    };
    Ok(AsyncReplConfig {
        max_lag,
        max_lag_time,
        on_lag: fields.policy("net.on-lag", raw.on_lag.as_ref(), OnLag::Wait, OnLag::parse)?,
        allow_async_failover: fields.flag("net.allow-async-failover", raw.allow_async_failover.as_ref(), false)?,
        epoch_flush: fields.flag("net.epoch-flush", raw.epoch_flush.as_ref(), true)?,
    })
}

fn build_syncer(fields: &Fields<'_>, raw: &RawSyncer) -> Result<SyncerConfig, ConfigError> {
    let rate = fields.rate("syncer.rate", raw.rate.as_ref(), defaults::RATE)?;
    let verify_interval = match raw.verify_interval.as_ref() {
        None => None,
        Some(s) if s.text.trim().eq_ignore_ascii_case("off") => None,
        Some(s) => {
            let d = units::parse_duration(&s.text, &s.shown())
                .map_err(|e| fields.invalid("syncer.verify-interval", e))?;
            if d < defaults::VERIFY_INTERVAL_MIN {
                return Err(fields.invalid(
                    "syncer.verify-interval",
                    format_args!("{} is shorter than 1s (write `off` for no scheduled verify)", s.shown()),
                ));
            }
            Some(d)
        }
    };
    Ok(SyncerConfig {
        rate,
        verify_repair: fields.flag("syncer.verify-repair", raw.verify_repair.as_ref(), false)?,
        verify_interval,
        verify_rate: match raw.verify_rate.as_ref() {
            Some(s) if s.text.trim() == VERIFY_RATE_SAME_AS_RATE => None,
            other => other.map(|s| fields.rate("syncer.verify-rate", Some(s), rate)).transpose()?,
        },
        verify_alg: fields.policy(
            "syncer.verify-alg",
            raw.verify_alg.as_ref(),
            VerifyAlg::Sha1,
            VerifyAlg::parse,
        )?,
        csums_alg: fields.policy(
            "syncer.csums-alg",
            raw.csums_alg.as_ref(),
            CsumsAlg::Sha1,
            CsumsAlg::parse,
        )?,
        csums_for: fields.policy(
            "syncer.csums-for",
            raw.csums_for.as_ref(),
            CsumsFor::Full,
            CsumsFor::parse,
        )?,
        al_extents: fields.number_in(
            "syncer.al-extents",
            raw.al_extents.as_ref(),
            defaults::AL_EXTENTS,
            AL_EXTENTS_RANGE,
        )?,
        c_min_rate: fields.rate(
            "syncer.c-min-rate",
            raw.c_min_rate.as_ref(),
            defaults::C_MIN_RATE,
        )?,
        c_plan_ahead: plan_ahead(fields, raw.c_plan_ahead.as_ref())?,
        c_fill_target: fill_target(fields, raw.c_fill_target.as_ref())?,
        c_max_rate: fields.rate(
            "syncer.c-max-rate",
            raw.c_max_rate.as_ref(),
            defaults::C_MAX_RATE,
        )?,
    })
}

/// `syncer.c-plan-ahead`: a duration, `0`/`off` for no controller, else 100 ms (one step) to 60 s.
fn plan_ahead(fields: &Fields<'_>, value: Option<&Scalar>) -> Result<Duration, ConfigError> {
    let Some(s) = value else { return Ok(defaults::C_PLAN_AHEAD) };
    if s.text.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    let d = units::parse_duration(&s.text, &s.shown()).map_err(|e| fields.invalid("syncer.c-plan-ahead", e))?;
    if d != Duration::ZERO && (d < Duration::from_millis(100) || d > C_PLAN_AHEAD_MAX) {
        return Err(fields.invalid(
            "syncer.c-plan-ahead",
            format_args!("{} is outside 100ms..60s (write 0 or `off` for the static resync window)", s.shown()),
        ));
    }
    Ok(d)
}

/// `syncer.c-fill-target`: bytes with a K/M/G suffix, 64K to 1G.
fn fill_target(fields: &Fields<'_>, value: Option<&Scalar>) -> Result<u64, ConfigError> {
    let Some(s) = value else { return Ok(defaults::C_FILL_TARGET) };
    let bytes = units::parse_rate(&s.text, &s.shown())
        .map_err(|e| fields.invalid("syncer.c-fill-target", e))?
        .0
        .filter(|b| C_FILL_TARGET_RANGE.contains(b));
    bytes.ok_or_else(|| {
        fields.invalid(
            "syncer.c-fill-target",
            format_args!("{} is outside 64K..1G (the most resync data kept in flight)", s.shown()),
        )
    })
}

fn build_on(
    fields: &Fields<'_>,
    raw: &BTreeMap<String, RawResourceNode>,
    nodes: &[NodeConfig],
) -> Result<BTreeMap<String, ResourceNodeConfig>, ConfigError> {
    for node_name in raw.keys() {
        if !nodes.iter().any(|n| &n.name == node_name) {
            return Err(fields.invalid(
                &format!("on.{node_name}"),
                format_args!(
                    "`{node_name}` is not a node in `nodes` ({})",
                    node_list(nodes)
                ),
            ));
        }
    }
    let mut on = BTreeMap::new();
    for node in nodes {
        let Some(entry) = raw.get(&node.name) else {
            return Err(fields.invalid(
                "on",
                format_args!(
                    "no entry for node `{}` (every node in `nodes` needs one)",
                    node.name
                ),
            ));
        };
        let field = |suffix: &str| format!("on.{}.{suffix}", node.name);
        if entry.disk.text.trim().is_empty() {
            return Err(fields.invalid(&field("disk"), "empty path"));
        }
        let address = units::parse_address(&entry.address.text, &entry.address.shown())
            .map_err(|e| fields.invalid(&field("address"), e))?;
        let meta_disk = match &entry.meta_disk {
            None => MetaDisk::Internal,
            Some(m) => units::parse_meta_disk(&m.text, &m.shown(), fields.src.base_dir)
                .map_err(|e| fields.invalid(&field("meta-disk"), e))?,
        };
        let same_address = on
            .iter()
            .find(|(_, o): &(&String, &ResourceNodeConfig)| o.address == address);
        if let Some((other, _)) = same_address {
            return Err(fields.invalid(
                &field("address"),
                format_args!("{address} is also the address of `{other}`; each node needs its own"),
            ));
        }
        let disk = fields.src.resolve(&entry.disk.text);
        on.insert(
            node.name.clone(),
            ResourceNodeConfig {
                disk,
                address,
                meta_disk,
            },
        );
    }
    Ok(on)
}

pub(super) fn node_list(nodes: &[NodeConfig]) -> String {
    nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
