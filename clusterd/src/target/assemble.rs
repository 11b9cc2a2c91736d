//! Turning the `targets:` section of ha.yaml into the embedded target's configuration.
//!
//! Everything that identifies a LUN to an initiator (IQN, TPGT, LUN number, unit serial, NAA id,
//! vendor/product) is derived from the configuration file alone, never from the host, so both nodes
//! present the same device and multipath/filesystems on the initiator survive a failover.

use crate::config::{Access, ChapUser, GroupConfig, HaConfig, LunDef, LunSource, NodeConfig, TargetDef, TargetParamOverrides};
use anyhow::{Context, Result, anyhow, bail};
use iscsi_target::backend::{BlockBackend, FileBackend};
use iscsi_target::login::{ChapAccount, Digest, TargetParams};
use iscsi_target::scsi::{FilePrStore, LogicalUnit, LunIdentity, PrStore, ScsiTarget};
use iscsi_target::scsi::alua::{AccessState, Alua};
use iscsi_target::server::{Acl, PortalGroup, ServerConfig, TargetConfig};
use replicator::engine::Volume;
use sha1::{Digest as _, Sha1};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::volume_backend::VolumeBackend;
use super::volume_pr::VolumePrStore;

/// One LUN as `haadm target show` describes it.
#[derive(Debug, Clone)]
pub struct LunSummary {
    pub target: String,
    pub lun: u64,
    pub size: u64,
    pub block_size: u32,
    pub serial: String,
    pub naa: String,
    pub backing: String,
}

/// The target configuration plus what `target show` needs to describe it.
pub struct Assembled {
    pub server: ServerConfig,
    pub luns: Vec<LunSummary>,
    /// The ALUA states of the targets of `access: alua | both` groups (issue 17), by group name: the
    /// failover loop sets them (see `daemon/alua_ports.rs`).
    pub alua: Vec<(String, Arc<Alua>)>,
}

/// A running target whose logical units a reconfiguration keeps (`haadm adjust`): a LUN defined as
/// before stays the same object, with its reservations, unit attentions and task set.
pub struct Reuse<'a> {
    /// The configuration the running target was assembled from.
    pub old: &'a HaConfig,
    pub server: &'a ServerConfig,
    pub luns: &'a [LunSummary],
}

impl Reuse<'_> {
    fn lu(&self, iqn: &str, number: u64, lun: &LunDef) -> Option<(Arc<LogicalUnit>, LunSummary)> {
        let old_def = self.old.targets.iter().find(|t| t.iqn == iqn)?.luns.get(&number)?;
        if old_def != lun {
            return None;
        }
        let lu = self.server.targets.iter().find(|t| t.iqn == iqn)?.scsi.lun(number)?;
        let summary = self.luns.iter().find(|l| l.target == iqn && l.lun == number)?.clone();
        Some((lu, summary))
    }

    /// The running target of that name: kept (with its new LUN map), so logged-in sessions see LUNs
    /// added or removed.
    fn target(&self, iqn: &str) -> Option<Arc<ScsiTarget>> {
        self.server.targets.iter().find(|t| t.iqn == iqn).map(|t| Arc::clone(&t.scsi))
    }
}

/// Builds the server configuration for `node`. Replicated LUNs are looked up in `volumes` (the running
/// volumes of this node, by resource name); the caller only assembles once those are Primary.
pub fn assemble(cfg: &HaConfig, node: &NodeConfig, volumes: &BTreeMap<String, Volume>) -> Result<Assembled> {
    assemble_reusing(cfg, node, volumes, None)
}

/// [`assemble`], keeping the logical units of `reuse` whose definition did not change.
pub fn assemble_reusing(
    cfg: &HaConfig,
    node: &NodeConfig,
    volumes: &BTreeMap<String, Volume>,
    reuse: Option<&Reuse<'_>>,
) -> Result<Assembled> {
    let mut targets = Vec::new();
    let mut luns_out = Vec::new();
    let mut portals: Vec<SocketAddr> = Vec::new();
    // Running targets get their new LUN maps only once everything assembled: a failure leaves them as
    // they were.
    let mut new_maps = Vec::new();
    let mut alua = Vec::new();
    let pr_dir = node.state_dir.join("pr");
    let node_names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    for t in &cfg.targets {
        let mut luns = BTreeMap::new();
        for (&number, lun) in &t.luns {
            let (lu, summary) = match reuse.and_then(|r| r.lu(&t.iqn, number, lun)) {
                Some(kept) => kept,
                None => {
                    let (lu, summary) = logical_unit(t, number, lun, volumes, &pr_dir)
                        .with_context(|| format!("{}: targets.{}.luns.{number}", cfg.path.display(), t.iqn))?;
                    let lu = Arc::new(lu);
                    // A kept LU already follows its volume's size.
                    if let LunSource::Resource(name) = &lun.source
                        && let Some(v) = volumes.get(name)
                    {
                        super::volume_backend::follow_size(Arc::downgrade(&lu), v);
                    }
                    (lu, summary)
                }
            };
            luns.insert(number, lu);
            luns_out.push(summary);
        }
        for p in &t.portals {
            if !portals.contains(p) {
                portals.push(*p);
            }
        }
        let scsi = match reuse.and_then(|r| r.target(&t.iqn)) {
            Some(running) => {
                new_maps.push((Arc::clone(&running), luns));
                running
            }
            None => Arc::new(ScsiTarget::new(t.iqn.clone(), luns)),
        };
        // Issue 17: with ALUA the target has a port on each node (and the VIP's with `both`); a kept
        // target keeps its states.
        let alua_group = t.group.as_deref().and_then(|g| cfg.group(g)).filter(|g| g.access.alua());
        let mut portal_groups = Vec::new();
        if let Some(g) = alua_group {
            if g.access == Access::Both {
                portal_groups.push(PortalGroup { tpgt: t.tpgt, portals: t.portals.clone() });
            }
            for (i, n) in node_names.iter().enumerate() {
                let p = g.node_portals.get(n).ok_or_else(|| anyhow!("{}: groups.{}.node-portals: no portal for {n}", cfg.path.display(), g.name))?;
                portal_groups.push(PortalGroup { tpgt: GroupConfig::node_tpgt(t.tpgt, i), portals: vec![*p] });
            }
            let states = match scsi.alua() {
                Some(kept) => kept,
                None => {
                    // Nothing is served before the failover loop has said where the group runs.
                    let a = Alua::new(crate::daemon::alua_ports::port_groups(g, &node_names, t.tpgt), AccessState::Transitioning);
                    scsi.set_alua(Arc::clone(&a));
                    a
                }
            };
            alua.push((g.name.clone(), states));
        }
        targets.push(TargetConfig {
            iqn: t.iqn.clone(),
            alias: t.alias.clone(),
            tpgt: t.tpgt,
            scsi,
            acl: Acl { initiators: t.initiators.clone(), networks: t.networks.clone() },
            chap: chap_account(t.incoming_user.as_ref())?,
            mutual_chap: chap_account(t.outgoing_user.as_ref())?,
            params: target_params(&t.params).with_context(|| format!("targets.{}.params", t.iqn))?,
            portal_groups,
        });
    }
    let mut server = ServerConfig::new(portals, targets);
    server.discovery_chap = chap_account(cfg.iscsi.discovery_user.as_ref())?;
    server.nop_interval = cfg.iscsi.nop_interval;
    server.nop_timeout = cfg.iscsi.nop_timeout;
    for (target, luns) in new_maps {
        if target.replace_luns(luns) {
            tracing::info!("target {}: LUNs now {:?}; logged-in sessions get REPORTED LUNS DATA HAS CHANGED", target.name(), target.luns().iter().map(|(n, _)| *n).collect::<Vec<_>>());
        }
    }
    Ok(Assembled { server, luns: luns_out, alua })
}

fn logical_unit(
    t: &TargetDef,
    number: u64,
    lun: &LunDef,
    volumes: &BTreeMap<String, Volume>,
    pr_dir: &Path,
) -> Result<(LogicalUnit, LunSummary)> {
    let mut volume = None;
    let backend: Arc<dyn BlockBackend> = match &lun.source {
        // With a write-back cache reported to the initiator the page cache IS that cache (flushed on
        // SYNCHRONIZE CACHE / FUA); write-through LUNs bypass it with O_DIRECT where the backing allows.
        LunSource::Path(path) => Arc::new(
            FileBackend::open(path, !lun.write_cache)
                .map_err(|e| anyhow!("cannot open {}: {e}", path.display()))?,
        ),
        LunSource::Resource(name) => {
            let v = volumes.get(name).ok_or_else(|| anyhow!("resource `{name}` is not up on this node"))?;
            volume = Some(v.clone());
            Arc::new(VolumeBackend::new(v.clone()))
        }
    };
    let ids = DerivedIds::of(&t.iqn, number);
    let word = |i: usize| if i == 0 { ids.naa } else { ids.naa_ext };
    let serial = lun.serial.clone().unwrap_or_else(|| ids.serial.clone());
    let identity = LunIdentity {
        vendor: t.vendor.clone(),
        product: t.product.clone(),
        revision: "0001".into(),
        serial: serial.clone(),
        naa: word(0),
        naa_ext: word(8),
        target_port_group: 1,
        write_cache: lun.write_cache,
        thin: backend.supports_unmap(),
    };
    // A replicated LUN's PR state is replicated with it; a standalone one keeps a local file.
    let store: Arc<dyn PrStore> = match volume {
        Some(v) => Arc::new(VolumePrStore::new(v, Some(pr_dir.join(format!("{serial}.pr"))))),
        None => {
            std::fs::create_dir_all(pr_dir).with_context(|| format!("create {}", pr_dir.display()))?;
            Arc::new(FilePrStore::new(pr_dir.join(format!("{serial}.pr"))))
        }
    };
    let backing = backend.describe();
    let size = backend.size();
    let lu = LogicalUnit::new(identity, backend, lun.block_size, store).map_err(|e| anyhow!("{e}"))?;
    let naa = format!("6{:015x}{:016x}", word(0) & 0x0fff_ffff_ffff_ffff, word(8));
    let summary =
        LunSummary { target: t.iqn.clone(), lun: number, size, block_size: lun.block_size, serial, naa, backing };
    Ok((lu, summary))
}

/// The identifiers a LUN derives from its target IQN and LUN number alone (never from the host), so
/// both nodes present the same device, and no upgrade may change them: a multipath or Windows host would
/// see a different disk (the test below pins them).
struct DerivedIds {
    serial: String,
    naa: u64,
    naa_ext: u64,
}

impl DerivedIds {
    fn of(iqn: &str, lun: u64) -> Self {
        let digest = Sha1::digest(format!("{iqn}/lun/{lun}").as_bytes());
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&digest[i..i + 8]);
            u64::from_be_bytes(b)
        };
        DerivedIds { serial: hex::encode(&digest[..8]), naa: word(0), naa_ext: word(8) }
    }
}

fn chap_account(user: Option<&ChapUser>) -> Result<Option<ChapAccount>> {
    let Some(u) = user else { return Ok(None) };
    let bytes = crate::config::read_secret_file(&u.secret_file).map_err(|e| anyhow!("{e}"))?;
    let secret = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{}: the CHAP secret must be text", u.secret_file.display()))?;
    Ok(Some(ChapAccount { user: u.name.clone(), secret }))
}

fn digests(names: &[String]) -> Result<Vec<Digest>> {
    names
        .iter()
        .map(|n| match n.to_ascii_lowercase().as_str() {
            "crc32c" => Ok(Digest::Crc32c),
            "none" => Ok(Digest::None),
            other => bail!("unknown digest `{other}` (CRC32C or None)"),
        })
        .collect()
}

/// ietd-style per-target overrides on top of our defaults.
pub fn target_params(o: &TargetParamOverrides) -> Result<TargetParams> {
    let mut p = TargetParams::default();
    let set = |dst: &mut u32, v: Option<u32>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut p.max_connections, o.max_connections);
    set(&mut p.max_recv_data_segment_length, o.max_recv_data_segment_length);
    set(&mut p.max_xmit_data_segment_length, o.max_xmit_data_segment_length);
    set(&mut p.max_burst_length, o.max_burst_length);
    set(&mut p.first_burst_length, o.first_burst_length);
    set(&mut p.default_time2wait, o.default_time2wait);
    set(&mut p.default_time2retain, o.default_time2retain);
    set(&mut p.max_outstanding_r2t, o.max_outstanding_r2t);
    set(&mut p.error_recovery_level, o.error_recovery_level);
    if let Some(v) = o.initial_r2t {
        p.initial_r2t = v;
    }
    if let Some(v) = o.immediate_data {
        p.immediate_data = v;
    }
    if let Some(v) = o.data_pdu_in_order {
        p.data_pdu_in_order = v;
    }
    if let Some(v) = o.data_sequence_in_order {
        p.data_sequence_in_order = v;
    }
    if let Some(d) = &o.header_digest {
        p.header_digest = digests(d)?;
    }
    if let Some(d) = &o.data_digest {
        p.data_digest = digests(d)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::DerivedIds;

    /// Golden values: these identify existing LUNs in the field; a change here is a change of every
    /// deployed LUN's identity (serial, VPD 0x83 NAA) and must never ship.
    #[test]
    fn lun_identity_is_stable_across_releases() {
        let ids = DerivedIds::of("iqn.2008-04.local.home:storage.disk.0", 0);
        assert_eq!(ids.serial, "02bcfe0ce076ca4a");
        let naa = format!("6{:015x}{:016x}", ids.naa & 0x0fff_ffff_ffff_ffff, ids.naa_ext);
        assert_eq!(naa, "62bcfe0ce076ca4a1b5a2af5bf06eb8c");
        assert_ne!(DerivedIds::of("iqn.2008-04.local.home:storage.disk.0", 1).serial, ids.serial);
    }
}
