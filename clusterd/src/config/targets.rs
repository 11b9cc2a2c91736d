//! The `iscsi:` and `targets:` sections: the embedded iSCSI target's targets, LUNs, ACLs and CHAP
//! users (ietd.conf's `Target` blocks). CHAP secrets are only named here, like replication secrets,
//! and read later with [`super::read_secret_file`].

use super::fields::{Fields, network_of, parse_cidr};
use super::raw::{OrderedUniqueMap, RawChapUser, RawIscsi, RawLun, RawTarget, Scalar};
use super::target_params::{TargetParamOverrides, build_params};
use super::{ConfigError, GroupConfig, ResourceConfig, Source};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Defaults of the `iscsi` and `targets` sections.
pub mod target_defaults {
    use std::time::Duration;
    pub const NOP_INTERVAL: Duration = Duration::from_secs(5);
    pub const NOP_TIMEOUT: Duration = Duration::from_secs(5);
    pub const TPGT: u16 = 1;
    pub const PORT: u16 = 3260;
    pub const VENDOR: &str = "CLUSTERD";
    pub const PRODUCT: &str = "HA-VOLUME";
    pub const BLOCK_SIZE: u32 = 512;
    /// A write-back cache, as tgt, LIO fileio and SCST report by default: SYNCHRONIZE CACHE and FUA
    /// reach stable media on both nodes before GOOD (README "Write cache and durability").
    pub const WRITE_CACHE: bool = true;
}

/// Longest iSCSI name (RFC 7143 §4.2.7.1).
pub const MAX_ISCSI_NAME_LEN: usize = 223;
/// Highest LUN number accepted (flat addressing of SAM keeps it simple for every initiator).
pub const MAX_LUN: u64 = 255;
/// Longest CHAP user name and alias.
pub const MAX_CHAP_NAME_LEN: usize = 255;
/// SCSI INQUIRY vendor and product fields (SPC: 8 and 16 ASCII bytes).
pub const MAX_VENDOR_LEN: usize = 8;
pub const MAX_PRODUCT_LEN: usize = 16;
/// Longest unit serial number accepted.
pub const MAX_SERIAL_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiConfig {
    /// CHAP for SendTargets discovery sessions; `None` = discovery without authentication.
    pub discovery_user: Option<ChapUser>,
    /// NOP-In ping interval on idle connections.
    pub nop_interval: Duration,
    /// A connection whose NOP-In is not answered in this time is dropped.
    pub nop_timeout: Duration,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            discovery_user: None,
            nop_interval: target_defaults::NOP_INTERVAL,
            nop_timeout: target_defaults::NOP_TIMEOUT,
        }
    }
}

/// A CHAP account. Holds the secret's path only (never the secret), so Debug output cannot leak it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapUser {
    pub name: String,
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDef {
    pub iqn: String,
    pub alias: Option<String>,
    pub tpgt: u16,
    pub portals: Vec<SocketAddr>,
    /// LUN number → LUN; at least one.
    pub luns: BTreeMap<u64, LunDef>,
    /// ACL: initiator names allowed; empty = any.
    pub initiators: Vec<String>,
    /// ACL: source networks allowed; empty = any. With `initiators` too, both must match.
    pub networks: Vec<(IpAddr, u8)>,
    /// The initiator authenticates to us (ietd `IncomingUser`).
    pub incoming_user: Option<ChapUser>,
    /// We authenticate to the initiator too (mutual CHAP, ietd `OutgoingUser`).
    pub outgoing_user: Option<ChapUser>,
    pub params: TargetParamOverrides,
    pub vendor: String,
    pub product: String,
    /// issue 17: the failover group this target follows (`None` without groups).
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunDef {
    pub source: LunSource,
    /// `None`: derived by the target from the IQN and LUN number (stable across nodes).
    pub serial: Option<String>,
    pub block_size: u32,
    pub write_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LunSource {
    /// A replicated resource's volume (follows the group).
    Resource(String),
    /// A local file or block device (standalone; not replicated).
    Path(PathBuf),
}

/// Checks an iSCSI name: `iqn.YYYY-MM.reversed.domain[:anything]`, `eui.` + 16 hex digits or
/// `naa.` + 16 or 32 hex digits (RFC 7143 §4.2.7, RFC 3980). IQNs must already be in the lowercase
/// form initiators compare against. Returns the problem, for the caller to place.
pub fn check_iscsi_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_ISCSI_NAME_LEN {
        return Err(format!(
            "{} bytes long; an iSCSI name has at most {MAX_ISCSI_NAME_LEN}",
            name.len()
        ));
    }
    let hex_of = |digits: &str, lens: &[usize]| {
        lens.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if let Some(digits) = name.strip_prefix("eui.") {
        return if hex_of(digits, &[16]) {
            Ok(())
        } else {
            Err("an eui. name is `eui.` followed by 16 hex digits".to_string())
        };
    }
    if let Some(digits) = name.strip_prefix("naa.") {
        return if hex_of(digits, &[16, 32]) {
            Ok(())
        } else {
            Err("a naa. name is `naa.` followed by 16 or 32 hex digits".to_string())
        };
    }
    let Some(rest) = name.strip_prefix("iqn.") else {
        return Err(
            "not an iSCSI name (expected iqn.YYYY-MM.reversed.domain[:name], eui.HEX16 or naa.HEX)"
                .to_string(),
        );
    };
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | ':')))
    {
        return Err(if bad.is_ascii_uppercase() {
            "must be lowercase (initiators compare iSCSI names in their lowercase form)".to_string()
        } else {
            format!("{bad:?} is not allowed in an iSCSI name (use a-z 0-9 . - :)")
        });
    }
    let date_ok = rest.len() > 8
        && rest
            .as_bytes()
            .get(..4)
            .is_some_and(|y| y.iter().all(u8::is_ascii_digit))
        && rest.as_bytes().get(4) == Some(&b'-')
        && rest
            .get(5..7)
            .is_some_and(|m| matches!(m.parse::<u8>(), Ok(1..=12)))
        && rest.as_bytes().get(7) == Some(&b'.');
    if !date_ok {
        return Err(
            "an iqn. name continues with the date YYYY-MM and a dot, like iqn.2008-04.local.home"
                .to_string(),
        );
    }
    let authority = rest.get(8..).unwrap_or("").split(':').next().unwrap_or("");
    let labels_ok = !authority.is_empty()
        && authority
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && !l.contains(':'));
    if !labels_ok {
        return Err(
            "the naming authority after the date must be a reversed domain name, like local.home"
                .to_string(),
        );
    }
    Ok(())
}

pub(super) fn build_iscsi(src: &Source<'_>, raw: &RawIscsi) -> Result<IscsiConfig, ConfigError> {
    let f = Fields::new(src, "iscsi");
    Ok(IscsiConfig {
        discovery_user: raw
            .discovery_user
            .as_ref()
            .map(|u| build_chap(&f.nested("discovery-user"), u))
            .transpose()?,
        nop_interval: f.positive_duration(
            "nop-interval",
            raw.nop_interval.as_ref(),
            target_defaults::NOP_INTERVAL,
        )?,
        nop_timeout: f.positive_duration(
            "nop-timeout",
            raw.nop_timeout.as_ref(),
            target_defaults::NOP_TIMEOUT,
        )?,
    })
}

fn build_chap(f: &Fields<'_>, raw: &RawChapUser) -> Result<ChapUser, ConfigError> {
    let name = &raw.name.text;
    if name.is_empty() || name.len() > MAX_CHAP_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(f.invalid(
            "name",
            format_args!(
                "{} is not a CHAP user name (1 to {MAX_CHAP_NAME_LEN} bytes, no control characters)",
                raw.name.shown()
            ),
        ));
    }
    Ok(ChapUser {
        name: name.clone(),
        secret_file: f.path_value("secret-file", &raw.secret_file)?,
    })
}

/// What the targets may refer to.
pub(super) struct TargetContext<'a> {
    pub resources: &'a BTreeMap<String, ResourceConfig>,
    pub groups: &'a [GroupConfig],
}

/// The group a target follows: `group:` when given, else the group of its replicated LUNs, else the
/// only group. With several groups a target of local files only must name its group.
fn target_group<'a>(f: &Fields<'_>, raw: &RawTarget, ctx: &TargetContext<'a>) -> Result<Option<&'a GroupConfig>, ConfigError> {
    if let Some(s) = &raw.group {
        return match ctx.groups.iter().find(|g| g.name == s.text) {
            Some(g) => Ok(Some(g)),
            None => Err(f.invalid(
                "group",
                format_args!(
                    "{} is not a failover group ({})",
                    s.shown(),
                    if ctx.groups.is_empty() { "none defined".to_string() } else { ctx.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>().join(", ") }
                ),
            )),
        };
    }
    for lun in raw.luns.0.iter().map(|(_, l)| l) {
        if let Some(r) = &lun.resource
            && let Some(g) = ctx.groups.iter().find(|g| g.resources.contains(&r.text))
        {
            return Ok(Some(g));
        }
    }
    match ctx.groups {
        [] => Ok(None),
        [only] => Ok(Some(only)),
        _ => Err(f.invalid("group", "required: there are several failover groups and no LUN of this target is in one; name the group it follows")),
    }
}

pub(super) fn build_targets(
    src: &Source<'_>,
    raw: &OrderedUniqueMap<RawTarget>,
    ctx: &TargetContext<'_>,
) -> Result<Vec<TargetDef>, ConfigError> {
    let mut targets: Vec<TargetDef> = Vec::with_capacity(raw.0.len());
    // Where each resource and path is already served, so one volume is not exported twice (two
    // LUNs writing one disk through separate caches would corrupt it).
    let mut served: BTreeMap<LunSource, String> = BTreeMap::new();
    for (key, raw_target) in &raw.0 {
        let f = Fields::new(src, format!("targets.{}", key.text));
        check_iscsi_name(&key.text)
            .map_err(|p| f.invalid("", format_args!("{}: {p}", key.shown())))?;
        let target = build_target(&f, &key.text, raw_target, ctx)?;
        for (number, lun) in &target.luns {
            let here = format!("LUN {number} of target {}", target.iqn);
            if let Some(other) = served.insert(lun.source.clone(), here) {
                let what = match &lun.source {
                    LunSource::Resource(r) => format!("resource `{r}`"),
                    LunSource::Path(p) => p.display().to_string(),
                };
                return Err(f.invalid(
                    &format!("luns.{number}"),
                    format_args!("{what} is already served as {other}"),
                ));
            }
        }
        targets.push(target);
    }
    Ok(targets)
}

fn build_target(
    f: &Fields<'_>,
    iqn: &str,
    raw: &RawTarget,
    ctx: &TargetContext<'_>,
) -> Result<TargetDef, ConfigError> {
    use target_defaults as d;
    let alias = raw.alias.as_ref().map(|s| f.text("alias", s)).transpose()?;
    if let Some(a) = &alias
        && a.len() > MAX_CHAP_NAME_LEN
    {
        return Err(f.invalid("alias", format_args!("at most {MAX_CHAP_NAME_LEN} bytes")));
    }
    let tpgt = f.number_or("tpgt", raw.tpgt.as_ref(), d::TPGT, 1..=u16::MAX)?;
    let group = target_group(f, raw, ctx)?;
    let portals = build_portals(f, raw.portals.as_deref(), group)?;
    if raw.luns.0.is_empty() {
        return Err(f.invalid(
            "luns",
            "at least one LUN is required (like `0: { resource: NAME }`)",
        ));
    }
    let mut luns = BTreeMap::new();
    for (key, raw_lun) in &raw.luns.0 {
        let number = f.number(&format!("luns.{}", key.text), key, 0..=MAX_LUN)?;
        let lun = build_lun(&f.nested(&format!("luns.{number}")), raw_lun, ctx, group)?;
        if luns.insert(number, lun).is_some() {
            return Err(f.invalid(
                &format!("luns.{}", key.text),
                format_args!("LUN {number} is listed twice"),
            ));
        }
    }
    let mut initiators: Vec<String> = Vec::with_capacity(raw.initiators.len());
    for (i, s) in raw.initiators.iter().enumerate() {
        let field = format!("initiators[{i}]");
        check_iscsi_name(&s.text)
            .map_err(|p| f.invalid(&field, format_args!("{}: {p}", s.shown())))?;
        if initiators.contains(&s.text) {
            return Err(f.invalid(&field, format_args!("{} is listed twice", s.shown())));
        }
        initiators.push(s.text.clone());
    }
    let mut networks: Vec<(IpAddr, u8)> = Vec::with_capacity(raw.networks.len());
    for (i, s) in raw.networks.iter().enumerate() {
        let field = format!("networks[{i}]");
        let (addr, prefix) =
            parse_cidr(&s.text, &s.shown(), true).map_err(|p| f.invalid(&field, p))?;
        let net = network_of(addr, prefix);
        if net != addr {
            return Err(f.invalid(
                &field,
                format_args!(
                    "{} has host bits set; did you mean {net}/{prefix}?",
                    s.shown()
                ),
            ));
        }
        if networks.contains(&(addr, prefix)) {
            return Err(f.invalid(&field, format_args!("{} is listed twice", s.shown())));
        }
        networks.push((addr, prefix));
    }
    let incoming_user = raw
        .incoming_user
        .as_ref()
        .map(|u| build_chap(&f.nested("incoming-user"), u))
        .transpose()?;
    let outgoing_user = raw
        .outgoing_user
        .as_ref()
        .map(|u| build_chap(&f.nested("outgoing-user"), u))
        .transpose()?;
    match (&incoming_user, &outgoing_user) {
        (None, Some(_)) => {
            return Err(f.invalid(
                "outgoing-user",
                "mutual CHAP needs incoming-user too (the initiator authenticates first)",
            ));
        }
        (Some(i), Some(o)) if i.secret_file == o.secret_file => {
            return Err(f.invalid(
                "outgoing-user.secret-file",
                "must differ from incoming-user's: one secret both ways allows a reflection attack (RFC 7143 §12.1.3)",
            ));
        }
        _ => {}
    }
    Ok(TargetDef {
        iqn: iqn.to_string(),
        alias,
        tpgt,
        portals,
        luns,
        initiators,
        networks,
        incoming_user,
        outgoing_user,
        params: build_params(&f.nested("params"), &raw.params)?,
        group: group.map(|g| g.name.clone()),
        vendor: inquiry_text(f, "vendor", raw.vendor.as_ref(), d::VENDOR, MAX_VENDOR_LEN)?,
        product: inquiry_text(
            f,
            "product",
            raw.product.as_ref(),
            d::PRODUCT,
            MAX_PRODUCT_LEN,
        )?,
    })
}

/// Portals as `IP:PORT` or a bare `IP` (port 3260); by default the group's VIP, port 3260.
fn build_portals(
    f: &Fields<'_>,
    raw: Option<&[Scalar]>,
    group: Option<&GroupConfig>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let Some(raw) = raw else {
        return match group.and_then(|g| g.vip.as_ref()) {
            Some(vip) => Ok(vec![SocketAddr::new(vip.address, target_defaults::PORT)]),
            // ALUA only: the group's node portals are the way in; no portal moves with the group.
            None if group.is_some_and(|g| g.access.alua()) => Ok(Vec::new()),
            None => Err(f.invalid(
                "portals",
                "required (there is no group.vip to default to); list IP:PORT addresses, like \"10.10.1.250:3260\"",
            )),
        };
    };
    if raw.is_empty() {
        return Err(f.invalid(
            "portals",
            "empty list; give at least one IP:PORT, or remove the key",
        ));
    }
    let mut portals: Vec<SocketAddr> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let field = format!("portals[{i}]");
        let text = s.text.trim();
        let addr = match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, target_defaults::PORT),
            Err(_) => {
                super::units::parse_address(text, &s.shown()).map_err(|e| f.invalid(&field, e))?
            }
        };
        if portals.contains(&addr) {
            return Err(f.invalid(&field, format_args!("{addr} is listed twice")));
        }
        portals.push(addr);
    }
    Ok(portals)
}

fn build_lun(f: &Fields<'_>, raw: &RawLun, ctx: &TargetContext<'_>, group: Option<&GroupConfig>) -> Result<LunDef, ConfigError> {
    let source = match (&raw.resource, &raw.path) {
        (Some(r), None) => {
            if !ctx.resources.contains_key(&r.text) {
                let known = ctx.resources.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(f.invalid(
                    "resource",
                    format_args!(
                        "{} is not a resource in `resources` ({})",
                        r.shown(),
                        if known.is_empty() {
                            "none defined"
                        } else {
                            &known
                        }
                    ),
                ));
            }
            if let Some(g) = group
                && !g.resources.contains(&r.text)
            {
                let field = if ctx.groups.len() == 1 && g.name == super::LEGACY_GROUP_NAME { "group".to_string() } else { format!("groups.{}", g.name) };
                return Err(f.invalid(
                    "resource",
                    format_args!(
                        "{} is not in {field}.resources; the target follows the group, so the volume must too",
                        r.shown()
                    ),
                ));
            }
            LunSource::Resource(r.text.clone())
        }
        (None, Some(p)) => LunSource::Path(f.path_value("path", p)?),
        (Some(_), Some(_)) => {
            return Err(f.invalid(
                "",
                "both `resource` and `path` are set; a LUN has one backing store",
            ));
        }
        (None, None) => {
            return Err(f.invalid(
                "",
                "needs `resource: NAME` (a replicated resource) or `path: FILE` (a local file or device)",
            ));
        }
    };
    let serial = match &raw.serial {
        None => None,
        Some(s) => {
            let ok = !s.text.is_empty()
                && s.text.len() <= MAX_SERIAL_LEN
                && s.text.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(f.invalid(
                    "serial",
                    format_args!(
                        "{} is not a unit serial number (1 to {MAX_SERIAL_LEN} printable ASCII characters, no blanks)",
                        s.shown()
                    ),
                ));
            }
            Some(s.text.clone())
        }
    };
    let block_size = f.number_or(
        "block-size",
        raw.block_size.as_ref(),
        target_defaults::BLOCK_SIZE,
        512..=4096,
    )?;
    if block_size != 512 && block_size != 4096 {
        return Err(f.invalid(
            "block-size",
            format_args!("{block_size} is not supported; use 512 or 4096"),
        ));
    }
    Ok(LunDef {
        source,
        serial,
        block_size,
        write_cache: f.flag(
            "write-cache",
            raw.write_cache.as_ref(),
            target_defaults::WRITE_CACHE,
        )?,
    })
}

/// SCSI INQUIRY text: printable ASCII (SPC requires it), at most `max` bytes.
fn inquiry_text(
    f: &Fields<'_>,
    suffix: &str,
    value: Option<&Scalar>,
    default: &str,
    max: usize,
) -> Result<String, ConfigError> {
    let Some(s) = value else {
        return Ok(default.to_string());
    };
    let ok = !s.text.trim().is_empty()
        && s.text.len() <= max
        && s.text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !ok {
        return Err(f.invalid(
            suffix,
            format_args!(
                "{} must be 1 to {max} printable ASCII characters",
                s.shown()
            ),
        ));
    }
    Ok(s.text.clone())
}
