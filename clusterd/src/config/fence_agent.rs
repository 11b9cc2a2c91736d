//! `cluster.guard.fence-agent`: a standard fence-agents agent (fence_ipmilan, fence_redfish,
//! fence_virsh, ...) with its parameters, as Pacemaker's fencer would call it. The agent is only named
//! and checked here; `crate::fencing` runs it. The password lives in its own 0600 file, never in
//! ha.yaml, so it is refused as a parameter.

use super::fields::Fields;
use super::raw::{Scalar, UniqueMap};
use super::raw_sections::RawFenceAgent;
use super::{ConfigError, NodeConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Defaults of `cluster.guard.fence-agent`, named so the docs and the code agree.
pub mod fence_agent_defaults {
    use std::time::Duration;
    /// Where fence-agents installs its agents (Debian, RHEL).
    pub const AGENT_DIR: &str = "/usr/sbin";
    /// One call of the agent (fence-agents' own power timeouts are 20 s).
    pub const TIMEOUT: std::time::Duration = Duration::from_secs(30);
    /// `action=off` attempts before the fence counts as failed.
    pub const RETRIES: u32 = 3;
    /// How long `action=status` is polled after a successful `off` until it reports off.
    pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Parameters the daemon sets itself (`action`) or that must come from a file (`password`).
const RESERVED: &[&str] = &["action", "password", "passwd"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceAgentConfig {
    /// The agent's executable: a bare name resolved in [`fence_agent_defaults::AGENT_DIR`], or a path.
    pub agent: PathBuf,
    /// Parameters for every fence (`ip`, `username`, `lanplus`, ...), one `key=value` stdin line each.
    pub params: BTreeMap<String, String>,
    /// Node → parameters used when fencing that node (its BMC address, its plug), over `params`.
    pub on: BTreeMap<String, BTreeMap<String, String>>,
    /// Sent as `password=` (read at each fence, so a rotated password needs no restart).
    pub password_file: Option<PathBuf>,
    pub timeout: Duration,
    pub retries: u32,
    pub confirm_timeout: Duration,
}

impl FenceAgentConfig {
    /// The parameters to fence `node`: the common ones, then that node's own.
    pub fn params_for(&self, node: &str) -> BTreeMap<String, String> {
        let mut p = self.params.clone();
        if let Some(own) = self.on.get(node) {
            p.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        p
    }
}

pub(super) fn build_fence_agent(
    f: &Fields<'_>,
    raw: &RawFenceAgent,
    nodes: &[NodeConfig],
) -> Result<FenceAgentConfig, ConfigError> {
    use fence_agent_defaults as d;
    let name = f.text("agent", &raw.agent)?;
    let agent = if name.contains('/') {
        f.path_value("agent", &raw.agent)?
    } else if name.starts_with("fence_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        PathBuf::from(d::AGENT_DIR).join(&name)
    } else {
        return Err(f.invalid(
            "agent",
            format_args!(
                "{} is not a fence agent name (like fence_ipmilan, installed in {}) nor a path",
                raw.agent.shown(),
                d::AGENT_DIR
            ),
        ));
    };
    let params = build_params(&f.nested("params"), &raw.params)?;
    let mut on = BTreeMap::new();
    for (node, p) in &raw.on.0 {
        if !nodes.iter().any(|n| &n.name == node) {
            return Err(f.invalid(
                &format!("on.{node}"),
                format_args!("`{node}` is not a node in `nodes` ({})", super::resource::node_list(nodes)),
            ));
        }
        on.insert(node.clone(), build_params(&f.nested(&format!("on.{node}")), p)?);
    }
    let password_file = raw.password_file.as_ref().map(|s| f.path_value("password-file", s)).transpose()?;
    Ok(FenceAgentConfig {
        agent,
        params,
        on,
        password_file,
        timeout: f.positive_duration("timeout", raw.timeout.as_ref(), d::TIMEOUT)?,
        retries: f.number_or("retries", raw.retries.as_ref(), d::RETRIES, 1..=20)?,
        confirm_timeout: f.positive_duration("confirm-timeout", raw.confirm_timeout.as_ref(), d::CONFIRM_TIMEOUT)?,
    })
}

/// `key: value` pairs become `key=value` lines on the agent's stdin: a key is what fence-agents
/// accepts (lower case, digits, `_`), a value holds no line break (it would start another key).
fn build_params(f: &Fields<'_>, raw: &UniqueMap<Scalar>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (key, value) in &raw.0 {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(f.invalid(key, "not a fence-agent parameter name (lower case letters, digits and `_`, like `ipport`)"));
        }
        if RESERVED.contains(&key.as_str()) {
            let why = if key == "action" {
                "set by clusterd itself (off, then status)"
            } else {
                "secrets do not go into ha.yaml: put it in a 0600 file named by `password-file`"
            };
            return Err(f.invalid(key, why));
        }
        if value.text.contains(['\n', '\r', '\0']) {
            return Err(f.invalid(key, "a line break or NUL in a value would start another parameter"));
        }
        out.insert(key.clone(), value.text.clone());
    }
    Ok(out)
}
