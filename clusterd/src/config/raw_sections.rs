//! The literal shape of the `cluster`, `group`, `iscsi` and `targets` sections of ha.yaml, before
//! validation. Same conventions as `raw.rs`: unknown keys are refused by serde (with line and
//! column), values are kept as [`Scalar`] text and converted by the section's `build` function.

use super::raw::{OrderedUniqueMap, Scalar, UniqueMap};
use serde::Deserialize;

/// `cluster:` — heartbeat timers, links and the split-brain guard (Heartbeat's ha.cf).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of cluster settings"
)]
pub(crate) struct RawCluster {
    /// `embedded` (default: clusterd's heartbeats and failover sequencer) or `pacemaker`.
    pub manager: Option<Scalar>,
    pub keepalive: Option<Scalar>,
    pub warntime: Option<Scalar>,
    pub deadtime: Option<Scalar>,
    pub initdead: Option<Scalar>,
    pub auto_failback: Option<Scalar>,
    pub authkeys_file: Option<Scalar>,
    #[serde(default)]
    pub links: Vec<RawLink>,
    #[serde(default)]
    pub guard: RawGuard,
    pub escalation_command: Option<Scalar>,
}

/// One heartbeat link (ha.cf's `ucast`/`bcast` line, with each node's side spelled out).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a heartbeat link (a mapping with `name`, `mode` and `on`)"
)]
pub(crate) struct RawLink {
    pub name: Scalar,
    pub mode: Scalar,
    pub port: Option<Scalar>,
    pub on: UniqueMap<RawLinkEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a link endpoint (a mapping with `address`)"
)]
pub(crate) struct RawLinkEndpoint {
    pub address: Scalar,
    pub interface: Option<Scalar>,
    pub broadcast: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of guard settings"
)]
pub(crate) struct RawGuard {
    #[serde(default)]
    pub ping_nodes: Vec<Scalar>,
    pub ping_timeout: Option<Scalar>,
    pub fence_command: Option<Scalar>,
    pub fence_agent: Option<RawFenceAgent>,
}

/// `cluster.guard.fence-agent` — a standard fence-agents agent and its parameters.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a fence agent (a mapping with `agent`, and `params`, `on`, `password-file`, ...)"
)]
pub(crate) struct RawFenceAgent {
    pub agent: Scalar,
    #[serde(default)]
    pub params: UniqueMap<Scalar>,
    #[serde(default)]
    pub on: UniqueMap<UniqueMap<Scalar>>,
    pub password_file: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub retries: Option<Scalar>,
    pub confirm_timeout: Option<Scalar>,
}

/// `group:` — the failover group (one haresources line).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of group settings"
)]
pub(crate) struct RawGroup {
    pub preferred: Option<Scalar>,
    #[serde(default)]
    pub resources: Vec<Scalar>,
    pub vip: Option<RawVip>,
    pub portblock: Option<Scalar>,
    pub start_timeout: Option<Scalar>,
    pub stop_timeout: Option<Scalar>,
    pub unsafe_promote_without_guard: Option<Scalar>,
    // issue 17: per-group auto-failback (default: cluster.auto-failback), access mode, node portals.
    pub auto_failback: Option<Scalar>,
    pub access: Option<Scalar>,
    pub node_portals: Option<UniqueMap<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a VIP (a mapping with `address` and `interface` or `on`)"
)]
pub(crate) struct RawVip {
    pub address: Scalar,
    pub interface: Option<Scalar>,
    pub on: Option<UniqueMap<Scalar>>,
    pub garp_count: Option<Scalar>,
    pub garp_interval: Option<Scalar>,
    pub garp_repeat_after: Option<Scalar>,
}

/// `iscsi:` — settings of the embedded target that are not per target.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping of iSCSI settings"
)]
pub(crate) struct RawIscsi {
    pub discovery_user: Option<RawChapUser>,
    pub nop_interval: Option<Scalar>,
    pub nop_timeout: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a CHAP user (a mapping with `name` and `secret-file`)"
)]
pub(crate) struct RawChapUser {
    pub name: Scalar,
    pub secret_file: Scalar,
}

/// `targets.IQN:` — one iSCSI target (ietd.conf's `Target` block).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a target (a mapping with `luns`)"
)]
pub(crate) struct RawTarget {
    pub alias: Option<Scalar>,
    pub tpgt: Option<Scalar>,
    pub portals: Option<Vec<Scalar>>,
    #[serde(default)]
    pub luns: OrderedUniqueMap<RawLun>,
    #[serde(default)]
    pub initiators: Vec<Scalar>,
    #[serde(default)]
    pub networks: Vec<Scalar>,
    pub incoming_user: Option<RawChapUser>,
    pub outgoing_user: Option<RawChapUser>,
    #[serde(default)]
    pub params: RawTargetParams,
    pub vendor: Option<Scalar>,
    pub product: Option<Scalar>,
    /// issue 17: the failover group this target follows (default: the group of its volumes).
    pub group: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a LUN (a mapping with `resource` or `path`)"
)]
pub(crate) struct RawLun {
    pub resource: Option<Scalar>,
    pub path: Option<Scalar>,
    pub serial: Option<Scalar>,
    pub block_size: Option<Scalar>,
    pub write_cache: Option<Scalar>,
}

/// Target parameters, spelled as ietd.conf spells them so a Target block can be carried over.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of iSCSI parameters")]
pub(crate) struct RawTargetParams {
    #[serde(rename = "MaxConnections")]
    pub max_connections: Option<Scalar>,
    #[serde(rename = "InitialR2T")]
    pub initial_r2t: Option<Scalar>,
    #[serde(rename = "ImmediateData")]
    pub immediate_data: Option<Scalar>,
    #[serde(rename = "MaxRecvDataSegmentLength")]
    pub max_recv_data_segment_length: Option<Scalar>,
    #[serde(rename = "MaxXmitDataSegmentLength")]
    pub max_xmit_data_segment_length: Option<Scalar>,
    #[serde(rename = "MaxBurstLength")]
    pub max_burst_length: Option<Scalar>,
    #[serde(rename = "FirstBurstLength")]
    pub first_burst_length: Option<Scalar>,
    #[serde(rename = "DefaultTime2Wait")]
    pub default_time2wait: Option<Scalar>,
    #[serde(rename = "DefaultTime2Retain")]
    pub default_time2retain: Option<Scalar>,
    #[serde(rename = "MaxOutstandingR2T")]
    pub max_outstanding_r2t: Option<Scalar>,
    #[serde(rename = "DataPDUInOrder")]
    pub data_pdu_in_order: Option<Scalar>,
    #[serde(rename = "DataSequenceInOrder")]
    pub data_sequence_in_order: Option<Scalar>,
    #[serde(rename = "ErrorRecoveryLevel")]
    pub error_recovery_level: Option<Scalar>,
    #[serde(rename = "HeaderDigest")]
    pub header_digest: Option<Scalar>,
    #[serde(rename = "DataDigest")]
    pub data_digest: Option<Scalar>,
}

/// `metrics:` — where `/metrics` and the status page are served (off without this section).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a mapping with `listen` (IP:PORT) and/or `on` (node: IP:PORT)"
)]
pub(crate) struct RawMetrics {
    pub listen: Option<Scalar>,
    pub on: Option<UniqueMap<Scalar>>,
}
