//! ha.yaml: the one configuration file shared by both nodes.
//!
//! Loading is two steps. serde reads the file into the `raw` structs (which reject unknown keys, with
//! line and column), then `build` turns text into typed values and checks the rules that span fields,
//! resources and nodes. Every error names the file, the field path and the problem, because the
//! person reading it is an operator at a console during an outage.
//!
//! Secrets are not read at load time (the file is world-readable config, the secret is not); see
//! [`read_secret_file`].

mod cluster;
mod dump;
mod fence_agent;
mod fields;
mod group;
mod metrics;
mod policy;
mod raw;
mod raw_sections;
mod resource;
mod secret;
mod target_params;
mod targets;
mod units;

pub use dump::{config_digest, dump_value, dump_yaml};
pub use fence_agent::{FenceAgentConfig, fence_agent_defaults};
pub use cluster::{
    ClusterConfig, GuardConfig, Manager, HeartbeatLink, LinkEndpoint, LinkMode, MAX_LINK_NAME_LEN,
    cluster_defaults,
};
pub use group::{Access, GroupConfig, LEGACY_GROUP_NAME, MAX_GARP_COUNT, VipConfig, group_defaults};
pub use metrics::{DEFAULT_METRICS_PORT, MetricsConfig};
pub use target_params::{DATA_LENGTH_RANGE, DIGESTS, TargetParamOverrides};
pub use targets::{
    ChapUser, IscsiConfig, LunDef, LunSource, MAX_ISCSI_NAME_LEN, MAX_LUN, TargetDef,
    check_iscsi_name, target_defaults,
};

pub use policy::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, CramHmacAlg, Fencing, OnIoError, OnLag, PolicyError, Protocol,
    CsumsAlg, CsumsFor, RrConflict, VerifyAlg,
};
pub use resource::{
    AL_EXTENTS_RANGE, AsyncReplConfig, DiskConfig, MAX_BUFFERS_RANGE, MAX_LAG_MIN, MAX_RESOURCE_NAME_LEN, NetConfig, PeerAuth,
    ResourceConfig, ResourceNodeConfig, StartupConfig, SyncerConfig, defaults,
};
pub use secret::{MAX_SECRET_LEN, read_secret_file};
pub use units::{MetaDisk, Rate, UnitError, parse_duration, parse_meta_disk, parse_rate};

use raw::RawHaConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default gRPC control socket of a node.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/clusterd/clusterd.sock";
/// Default directory for a node's persistent daemon state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clusterd";
/// Longest node name (a DNS name's limit, since the default node name is the host name).
pub const MAX_NODE_NAME_LEN: usize = 253;
/// The product is a two-node cluster; one node runs standalone.
pub const MAX_NODES: usize = 2;

/// Everything that can be wrong with ha.yaml or a file it points to.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax or shape (unknown field, wrong type, missing field); from serde, with its position.
    #[error("{}: {}{message}", file.display(), Position(*line, *column))]
    Syntax {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A value or a combination of values is not acceptable.
    #[error("{}: {field}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        problem: String,
    },
    #[error("node `{node}` is not in {} (nodes: {known})", file.display())]
    UnknownNode {
        file: PathBuf,
        node: String,
        known: String,
    },
    #[error("{}: resources.{resource}.on: no entry for node `{node}` (entries: {known})", file.display())]
    NotOnNode {
        file: PathBuf,
        resource: String,
        node: String,
        known: String,
    },
    #[error("{}: the shared secret file does not exist", path.display())]
    SecretMissing { path: PathBuf },
    #[error("{}: cannot read the shared secret file: {source}", path.display())]
    SecretUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the shared secret must be a regular file", path.display())]
    SecretNotAFile { path: PathBuf },
    #[error("{} has mode {mode:04o}; it must be 0600 (chmod 600 {})", path.display(), path.display())]
    SecretMode { path: PathBuf, mode: u32 },
    #[error(
        "{} is owned by uid {owner}; it must be owned by root or by uid {ours} (the user clusterd runs as)",
        path.display()
    )]
    SecretOwner {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("{} is empty; put the shared secret (1 to {MAX_SECRET_LEN} bytes) in it", path.display())]
    SecretEmpty { path: PathBuf },
    #[error("{} holds {len} bytes; the shared secret may be at most {MAX_SECRET_LEN} bytes", path.display())]
    SecretTooLong { path: PathBuf, len: u64 },
}

/// `line L column C: ` when serde knew where the problem was.
struct Position(Option<usize>, Option<usize>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, "line {line} column {column}: "),
            (Some(line), None) => write!(f, "line {line}: "),
            _ => Ok(()),
        }
    }
}

/// One cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// Where this node's clusterd serves the control API (haadm connects here).
    pub control_socket: PathBuf,
    pub state_dir: PathBuf,
}

/// The whole of ha.yaml, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// The file it was loaded from, as given (errors name it).
    pub path: PathBuf,
    /// One or two nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    pub resources: BTreeMap<String, ResourceConfig>,
    /// Who runs the show: clusterd's own heartbeats and sequencer, or Pacemaker (`cluster.manager`).
    pub manager: Manager,
    /// Heartbeat settings; required with two nodes and a group, absent otherwise (and under Pacemaker).
    pub cluster: Option<ClusterConfig>,
    /// The failover groups (issue 17: `groups:`, or one from `group:`), each moving on its own;
    /// empty when nothing fails over (e.g. a standalone target). In file order.
    pub groups: Vec<GroupConfig>,
    /// The groups came from a single `group:` section (dumped back the same way, so the config digest
    /// of an unchanged file stays what an older release computes).
    pub legacy_group: bool,
    pub iscsi: IscsiConfig,
    /// In file order.
    pub targets: Vec<TargetDef>,
    /// Where `/metrics` and the status page are served (per node; empty = off).
    pub metrics: MetricsConfig,
}

impl HaConfig {
    /// Reads, parses and validates `path`. Secret files are only named here, not read.
    pub fn load(path: &Path) -> Result<HaConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HaConfig::from_str(&text, path)
    }

    /// Parses and validates `text` as if read from `path` (used for error messages and to resolve
    /// relative paths against `path`'s directory).
    pub fn from_str(text: &str, path: &Path) -> Result<HaConfig, ConfigError> {
        let src = Source {
            file: path,
            base_dir: path.parent().unwrap_or(Path::new("")),
        };
        // A file of only comments parses as null; say so rather than "missing field `nodes`".
        let only_comments = matches!(
            serde_yaml::from_str::<serde_yaml::Value>(text),
            Ok(serde_yaml::Value::Null)
        );
        if text.trim().is_empty() || only_comments {
            return Err(ConfigError::Syntax {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: "the file is empty; it needs at least `nodes:`".to_string(),
            });
        }
        let raw: RawHaConfig = serde_yaml::from_str(text).map_err(|e| syntax_error(path, &e))?;
        let nodes = build_nodes(&src, &raw.nodes)?;
        let mut resources = BTreeMap::new();
        for (name, raw_resource) in &raw.resources.0 {
            let resource = resource::build_resource(&src, name, raw_resource, &nodes)?;
            resources.insert(name.clone(), resource);
        }
        check_resources_do_not_collide(&src, &nodes, &resources)?;
        let (manager, cluster) = match raw.cluster.as_ref() {
            Some(c) => cluster::build_cluster(&src, c, &nodes)?,
            None => (Manager::Embedded, None),
        };
        let groups = build_groups(&src, &raw, &nodes, &resources)?;
        if manager == Manager::Pacemaker && !groups.is_empty() {
            let key = if raw.group.is_some() { "group" } else { "groups" };
            return Err(src.invalid(
                key,
                format_args!(
                    "not used with `cluster.manager: pacemaker`: the VIP, the port block and the target are Pacemaker \
                     resources there (IPaddr2, portblock, the ha-iscsi target agent; see the README); remove `{key}` \
                     and give the targets' `portals`"
                ),
            ));
        }
        if manager == Manager::Embedded {
            check_cluster_and_group_go_together(&src, &nodes, cluster.is_some(), !groups.is_empty())?;
        } else {
            check_pacemaker_fencing(&src, &resources)?;
        }
        let iscsi = targets::build_iscsi(&src, &raw.iscsi)?;
        let ctx = targets::TargetContext {
            resources: &resources,
            groups: &groups,
        };
        let targets = targets::build_targets(&src, &raw.targets, &ctx)?;
        let others = metrics::Others { nodes: &nodes, resources: &resources, targets: &targets };
        let metrics = raw.metrics.as_ref().map(|m| metrics::build_metrics(&src, m, &others)).transpose()?.unwrap_or_default();
        let config = HaConfig {
            path: path.to_path_buf(),
            nodes,
            resources,
            manager,
            cluster,
            legacy_group: raw.group.is_some(),
            groups,
            iscsi,
            targets,
            metrics,
        };
        // Warnings are returned by `warnings()`; clusterd and haadm print them once.
        Ok(config)
    }

    /// This node: `name` when given (it must be a node), else the only node of a one-node config,
    /// so a standalone target runs without `--node`. `Ok(None)` when no name is given and there
    /// are two nodes: the caller falls back to the host name.
    pub fn local_node(&self, name: Option<&str>) -> Result<Option<&NodeConfig>, ConfigError> {
        match (name, self.nodes.as_slice()) {
            (Some(name), _) => self.node(name).map(Some),
            (None, [only]) => Ok(Some(only)),
            (None, _) => Ok(None),
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode {
                file: self.path.clone(),
                node: name.to_string(),
                known: resource::node_list(&self.nodes),
            })
    }

    /// The other node of a two-node cluster; `None` when standalone or when `name` is not a node.
    pub fn peer_of(&self, name: &str) -> Option<&NodeConfig> {
        if !self.nodes.iter().any(|n| n.name == name) {
            return None;
        }
        self.nodes.iter().find(|n| n.name != name)
    }

    /// Things that are allowed but probably unintended, for the daemon to log and haadm to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.nodes.len() == 2 {
            for r in self.resources.values().filter(|r| r.net.auth.is_none()) {
                out.push(format!(
                    "{}: resources.{}.net: no cram-hmac-alg/shared-secret-file, so the peer is not \
                     authenticated; anyone who can reach the replication port can connect",
                    self.path.display(),
                    r.name
                ));
            }
        }
        // Under Pacemaker every resource is managed (and fenced through the fence-peer handler, which
        // loading checked); the embedded manager only fences for the group.
        let pacemaker = self.manager == Manager::Pacemaker;
        let in_group = |name: &str| pacemaker || self.group_of_resource(name).is_some();
        let fence_command = pacemaker || self.cluster.as_ref().is_some_and(|c| c.guard.can_fence());
        for r in self.resources.values() {
            let why = match r.disk.fencing {
                Fencing::DontCare => continue,
                Fencing::ResourceOnly => "`resource-only` does not suspend I/O when the peer is lost (only \
                    `resource-and-stonith` does); a Primary cut off from its peer keeps acknowledging writes, \
                    which a fenced-and-replaced Primary loses"
                    .to_string(),
                Fencing::ResourceAndStonith if !in_group(&r.name) => "`resource-and-stonith` on a resource \
                    outside the failover group: a Primary that loses its peer suspends I/O until the peer \
                    reconnects (nothing outdates or fences the peer for it)"
                    .to_string(),
                Fencing::ResourceAndStonith if !fence_command => "`resource-and-stonith` without \
                    cluster.guard.fence-command or fence-agent: if the peer goes silent on every link, the Primary's I/O \
                    stays suspended until the peer returns"
                    .to_string(),
                Fencing::ResourceAndStonith => continue,
            };
            out.push(format!("{}: resources.{}.disk.fencing: {why}", self.path.display(), r.name));
        }
        if let Some(c) = &self.cluster {
            out.extend(c.warnings(&self.path));
        }
        for g in &self.groups {
            self.group_warnings(g, &mut out);
        }
        if self.nodes.len() == 2 {
            for t in &self.targets {
                for (n, lun) in &t.luns {
                    if let LunSource::Path(p) = &lun.source {
                        out.push(format!(
                            "{}: targets.{}.luns.{n}.path: {} is a local file, not replicated; after a \
                             failover initiators would see the other node's copy",
                            self.path.display(),
                            t.iqn,
                            p.display()
                        ));
                    }
                }
            }
        }
        out
    }

    fn group_warnings(&self, g: &GroupConfig, out: &mut Vec<String>) {
        let file = self.path.display();
        if g.allow_unguarded_split && self.nodes.len() == 2 {
            out.push(format!(
                "{file}: {}.unsafe-promote-without-guard: on: a node that loses sight of its peer may \
                 promote the group while the peer still runs it (split brain, diverged data)",
                self.group_field(g)
            ));
        }
    }

    /// The field path of `g` in ha.yaml: `group` or `groups.NAME`.
    pub fn group_field(&self, g: &GroupConfig) -> String {
        if self.legacy_group { "group".to_string() } else { format!("groups.{}", g.name) }
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The group a replicated resource belongs to (at most one: loading checked).
    pub fn group_of_resource(&self, resource: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.resources.iter().any(|r| r == resource))
    }

    /// The targets that follow group `name` (all targets when `name` is `None`).
    pub fn targets_of_group<'a>(&'a self, name: Option<&'a str>) -> impl Iterator<Item = &'a TargetDef> + 'a {
        self.targets.iter().filter(move |t| name.is_none() || t.group.as_deref() == name)
    }

    /// This configuration with only the targets of group `name`: what that group's target serves.
    pub fn for_group(&self, name: &str) -> HaConfig {
        let mut c = self.clone();
        c.targets.retain(|t| t.group.as_deref() == Some(name));
        c
    }
}

/// Where the config came from: the file for messages, its directory for relative paths.
pub(crate) struct Source<'a> {
    file: &'a Path,
    base_dir: &'a Path,
}

impl Source<'_> {
    fn invalid(&self, field: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    /// Relative paths in ha.yaml are relative to the file, so a test or lab directory is self-contained.
    fn resolve(&self, text: &str) -> PathBuf {
        self.base_dir.join(text)
    }
}

/// Turns a serde_yaml error into ours, keeping serde's line/column but moving them to the front.
fn syntax_error(path: &Path, err: &serde_yaml::Error) -> ConfigError {
    let mut message = err.to_string();
    let (line, column) = match err.location() {
        Some(loc) => {
            message = message.replacen(
                &format!(" at line {} column {}", loc.line(), loc.column()),
                "",
                1,
            );
            (Some(loc.line()), Some(loc.column()))
        }
        None => (None, None),
    };
    ConfigError::Syntax {
        file: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Resource, device and node names: they appear in metadata, logs, socket paths and shell handler
/// environments, so only a safe character set is allowed.
pub(crate) fn check_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.len() > max_len {
        return Err(format!(
            "name is {} bytes long; at most {max_len} allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{bad:?} is not allowed in a name (use A-Z a-z 0-9 . _ -)"
        ));
    }
    if name.starts_with(['-', '.']) {
        return Err("a name must not start with `-` or `.`".to_string());
    }
    Ok(())
}

/// A duration the way ha.yaml writes it (`500ms`, `6s`).
pub(crate) fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn build_nodes(src: &Source<'_>, raw: &[raw::RawNode]) -> Result<Vec<NodeConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(src.invalid("nodes", "no nodes; list this node (and its peer, if any)"));
    }
    if raw.len() > MAX_NODES {
        return Err(src.invalid(
            "nodes",
            format_args!(
                "{} nodes listed; a cluster has one (standalone) or two nodes",
                raw.len()
            ),
        ));
    }
    let mut nodes: Vec<NodeConfig> = Vec::with_capacity(raw.len());
    for (i, node) in raw.iter().enumerate() {
        let name = &node.name.text;
        check_name(name, MAX_NODE_NAME_LEN).map_err(|p| {
            src.invalid(
                format!("nodes[{i}].name"),
                format_args!("{}: {p}", node.name.shown()),
            )
        })?;
        if nodes.iter().any(|n| &n.name == name) {
            return Err(src.invalid(
                format!("nodes[{i}].name"),
                format_args!("`{name}` is listed twice"),
            ));
        }
        let path_or = |value: &Option<raw::Scalar>, field: &str, default: &str| match value {
            Some(s) if s.text.trim().is_empty() => {
                Err(src.invalid(format!("nodes[{i}].{field}"), "empty path"))
            }
            Some(s) => Ok(src.resolve(&s.text)),
            None => Ok(PathBuf::from(default)),
        };
        nodes.push(NodeConfig {
            name: name.clone(),
            control_socket: path_or(
                &node.control_socket,
                "control-socket",
                DEFAULT_CONTROL_SOCKET,
            )?,
            state_dir: path_or(&node.state_dir, "state-dir", DEFAULT_STATE_DIR)?,
        });
    }
    Ok(nodes)
}

/// `group:` (one group) or `groups:` (any number, by name); never both. A resource belongs to at most
/// one group, and two groups never share a VIP or a node portal.
fn build_groups(
    src: &Source<'_>,
    raw: &RawHaConfig,
    nodes: &[NodeConfig],
    resources: &BTreeMap<String, ResourceConfig>,
) -> Result<Vec<GroupConfig>, ConfigError> {
    let groups = match (&raw.group, &raw.groups) {
        (Some(_), Some(_)) => {
            return Err(src.invalid("groups", "both `group` and `groups` are set; move the `group` section into `groups` under a name"));
        }
        (Some(g), None) => vec![group::build_group(src, None, g, nodes, resources)?],
        (None, Some(map)) => {
            let mut out = Vec::with_capacity(map.0.len());
            for (key, g) in &map.0 {
                out.push(group::build_group(src, Some(&key.text), g, nodes, resources)?);
            }
            out
        }
        (None, None) => Vec::new(),
    };
    let field = |g: &GroupConfig| if raw.group.is_some() { "group".to_string() } else { format!("groups.{}", g.name) };
    for (i, g) in groups.iter().enumerate() {
        for earlier in &groups[..i] {
            if let Some(r) = g.resources.iter().find(|r| earlier.resources.contains(r)) {
                return Err(src.invalid(
                    format!("{}.resources", field(g)),
                    format_args!("`{r}` is already in group `{}`; a resource moves with one group", earlier.name),
                ));
            }
            if let (Some(a), Some(b)) = (&g.vip, &earlier.vip)
                && a.address == b.address
            {
                return Err(src.invalid(format!("{}.vip.address", field(g)), format_args!("{} is already the VIP of group `{}`", a.address, earlier.name)));
            }
            if let Some((n, p)) = g.node_portals.iter().find(|(n, p)| earlier.node_portals.get(*n) == Some(p)) {
                return Err(src.invalid(
                    format!("{}.node-portals.{n}", field(g)),
                    format_args!("{p} is already a portal of group `{}`; give each group its own port or address", earlier.name),
                ));
            }
        }
    }
    Ok(groups)
}

/// With two nodes, a group needs heartbeats to decide where it runs, and heartbeats without a group
/// have nothing to decide. One node may have either or neither.
fn check_cluster_and_group_go_together(
    src: &Source<'_>,
    nodes: &[NodeConfig],
    has_cluster: bool,
    has_group: bool,
) -> Result<(), ConfigError> {
    if nodes.len() < 2 {
        return Ok(());
    }
    match (has_cluster, has_group) {
        (false, true) => Err(src.invalid(
            "cluster",
            "required: with two nodes and a `group`, the nodes need heartbeat links to decide where the group runs",
        )),
        (true, false) => Err(src.invalid(
            "group",
            "required: with two nodes, a `cluster` section needs a `group` to fail over (or remove `cluster`)",
        )),
        _ => Ok(()),
    }
}

/// Under Pacemaker, a Primary that lost its peer with `resource-and-stonith` resumes I/O only when the
/// fence-peer handler confirms (as DRBD's crm-fence-peer does); without one it would stay suspended.
fn check_pacemaker_fencing(src: &Source<'_>, resources: &BTreeMap<String, ResourceConfig>) -> Result<(), ConfigError> {
    for r in resources.values() {
        if r.disk.fencing == Fencing::ResourceAndStonith && !r.handlers.contains_key("fence-peer") {
            return Err(src.invalid(
                format!("resources.{}.handlers.fence-peer", r.name),
                "required with `disk.fencing: resource-and-stonith` and `cluster.manager: pacemaker`: it keeps \
                 the peer from being promoted before I/O resumes (the package ships \
                 /usr/lib/ocf/lib/ha-iscsi/crm-fence-peer)",
            ));
        }
    }
    Ok(())
}

/// Rules across resources: on one node, two resources must not share a listening address, a data
/// disk or a metadata slot, and two resources must not export the same device.
fn check_resources_do_not_collide(
    src: &Source<'_>,
    nodes: &[NodeConfig],
    resources: &BTreeMap<String, ResourceConfig>,
) -> Result<(), ConfigError> {
    let mut devices: BTreeMap<&str, &str> = BTreeMap::new();
    for r in resources.values() {
        if let Some(other) = devices.insert(&r.device, &r.name) {
            return Err(src.invalid(
                format!("resources.{}.device", r.name),
                format_args!(
                    "\"{}\" is already the device of resource `{other}`",
                    r.device
                ),
            ));
        }
    }
    for node in nodes {
        let mut addresses = BTreeMap::new();
        let mut disks: BTreeMap<&Path, &str> = BTreeMap::new();
        let mut meta_slots: BTreeMap<(&Path, Option<u32>), &str> = BTreeMap::new();
        for r in resources.values() {
            let Some(on) = r.on.get(&node.name) else {
                continue;
            };
            let field = |suffix: &str| format!("resources.{}.on.{}.{suffix}", r.name, node.name);
            if let Some(other) = addresses.insert(on.address, &r.name) {
                return Err(src.invalid(
                    field("address"),
                    format_args!(
                        "{} is already used by resource `{other}` on `{}`",
                        on.address, node.name
                    ),
                ));
            }
            if let Some(other) = disks.insert(&on.disk, &r.name) {
                return Err(src.invalid(
                    field("disk"),
                    format_args!(
                        "{} is already the disk of resource `{other}` on `{}`",
                        on.disk.display(),
                        node.name
                    ),
                ));
            }
            if let MetaDisk::External { path, index } = &on.meta_disk {
                check_meta_slot(
                    src,
                    &mut meta_slots,
                    path,
                    *index,
                    &r.name,
                    &field("meta-disk"),
                )?;
            }
        }
    }
    Ok(())
}

/// An indexed slot may be used once; a flexible (unindexed) external device may be used by only one
/// resource and then by nothing else.
fn check_meta_slot<'a>(
    src: &Source<'_>,
    slots: &mut BTreeMap<(&'a Path, Option<u32>), &'a str>,
    path: &'a Path,
    index: Option<u32>,
    resource: &'a str,
    field: &str,
) -> Result<(), ConfigError> {
    let clash = slots
        .iter()
        .find(|((p, i), _)| *p == path && (i.is_none() || index.is_none() || *i == index));
    if let Some((_, other)) = clash {
        let shown = MetaDisk::External {
            path: path.to_path_buf(),
            index,
        };
        return Err(src.invalid(
            field,
            format_args!("{shown} overlaps the meta-disk of resource `{other}`"),
        ));
    }
    slots.insert((path, index), resource);
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sections;
#[cfg(test)]
mod tests_dump;
#[cfg(test)]
mod tests_protocol_a;
