//! `haadm target show`: the embedded target in the spirit of `tgtadm --op show --mode target`.
//! Accounts are shown by user name only; secrets never leave their files.

use super::runtime::TargetRuntime;
use crate::config::{HaConfig, LunSource};
use serde_json::json;
use std::fmt::Write;

fn lun_source(s: &LunSource) -> String {
    match s {
        LunSource::Path(p) => format!("file:{}", p.display()),
        LunSource::Resource(r) => format!("replicated:{r}"),
    }
}

/// Text for a node; `running` is `None` when this node is not serving the targets right now.
pub fn render_text(cfg: &HaConfig, running: Option<&TargetRuntime>, state: &str) -> String {
    let mut out = String::new();
    if cfg.targets.is_empty() {
        return "no targets configured\n".into();
    }
    let sessions = running.map(|r| r.sessions()).unwrap_or_default();
    for (i, t) in cfg.targets.iter().enumerate() {
        let _ = writeln!(out, "Target {}: {}", i + 1, t.iqn);
        let _ = writeln!(out, "    System information:");
        let _ = writeln!(out, "        Driver: iscsi");
        let _ = writeln!(out, "        State: {state}");
        if let Some(a) = &t.alias {
            let _ = writeln!(out, "        Alias: {a}");
        }
        let portals: Vec<String> = t.portals.iter().map(|p| format!("{p},{}", t.tpgt)).collect();
        let _ = writeln!(out, "        Portals: {}", portals.join(" "));
        let _ = writeln!(out, "    I_T nexus information:");
        for s in sessions.iter().filter(|s| s.target.eq_ignore_ascii_case(&t.iqn)) {
            let p = &s.params;
            let _ = writeln!(out, "        I_T nexus: {} (ISID {})", s.tsih, hex::encode(s.isid));
            let _ = writeln!(out, "            Initiator: {}{}", s.initiator,
                s.initiator_alias.as_ref().map(|a| format!(" alias: {a}")).unwrap_or_default());
            let _ = writeln!(out, "            Connection: 0");
            let _ = writeln!(out, "                IP Address: {}", s.peer);
            let _ = writeln!(out, "                Negotiated: HeaderDigest={} DataDigest={} MaxRecvDataSegmentLength={} \
                MaxXmitDataSegmentLength={} MaxBurstLength={} FirstBurstLength={} InitialR2T={} ImmediateData={} \
                MaxOutstandingR2T={} ErrorRecoveryLevel={}",
                p.header_digest.as_str(), p.data_digest.as_str(), p.max_recv_data_segment_length,
                p.max_xmit_data_segment_length, p.max_burst_length, p.first_burst_length, yes_no(p.initial_r2t),
                yes_no(p.immediate_data), p.max_outstanding_r2t, p.error_recovery_level);
        }
        let _ = writeln!(out, "    LUN information:");
        for (n, lun) in &t.luns {
            let _ = writeln!(out, "        LUN: {n}");
            let _ = writeln!(out, "            Type: disk");
            let live = running.and_then(|r| r.luns().iter().find(|l| l.target == t.iqn && l.lun == *n));
            match live {
                Some(l) => {
                    let _ = writeln!(out, "            SCSI SN: {}", l.serial);
                    let _ = writeln!(out, "            NAA: {}", l.naa);
                    let _ = writeln!(out, "            Size: {} MB, Block size: {}", l.size / 1_000_000, l.block_size);
                    let _ = writeln!(out, "            Backing store: {}", l.backing);
                }
                None => {
                    let _ = writeln!(out, "            Block size: {}", lun.block_size);
                    let _ = writeln!(out, "            Backing store: {} (not served on this node)", lun_source(&lun.source));
                }
            }
        }
        let _ = writeln!(out, "    Account information:");
        if let Some(u) = &t.incoming_user {
            let _ = writeln!(out, "        {}", u.name);
        }
        if let Some(u) = &t.outgoing_user {
            let _ = writeln!(out, "        {} (outgoing)", u.name);
        }
        let _ = writeln!(out, "    ACL information:");
        if t.initiators.is_empty() && t.networks.is_empty() {
            let _ = writeln!(out, "        ALL");
        }
        for n in &t.networks {
            let _ = writeln!(out, "        {}/{}", n.0, n.1);
        }
        for i in &t.initiators {
            let _ = writeln!(out, "        {i}");
        }
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

pub fn render_json(cfg: &HaConfig, running: Option<&TargetRuntime>, state: &str) -> String {
    let sessions = running.map(|r| r.sessions()).unwrap_or_default();
    let targets: Vec<_> = cfg
        .targets
        .iter()
        .map(|t| {
            let luns: Vec<_> = t
                .luns
                .iter()
                .map(|(n, lun)| {
                    let live = running.and_then(|r| r.luns().iter().find(|l| l.target == t.iqn && l.lun == *n));
                    json!({
                        "lun": n, "block_size": lun.block_size, "source": lun_source(&lun.source),
                        "size": live.map(|l| l.size), "serial": live.map(|l| l.serial.clone()),
                        "naa": live.map(|l| l.naa.clone()), "backing": live.map(|l| l.backing.clone()),
                    })
                })
                .collect();
            let sess: Vec<_> = sessions
                .iter()
                .filter(|s| s.target.eq_ignore_ascii_case(&t.iqn))
                .map(|s| json!({
                    "initiator": s.initiator, "isid": hex::encode(s.isid), "tsih": s.tsih, "peer": s.peer.to_string(),
                    "header_digest": s.params.header_digest.as_str(), "data_digest": s.params.data_digest.as_str(),
                    "max_recv_data_segment_length": s.params.max_recv_data_segment_length,
                    "max_burst_length": s.params.max_burst_length, "first_burst_length": s.params.first_burst_length,
                    "initial_r2t": s.params.initial_r2t, "immediate_data": s.params.immediate_data,
                }))
                .collect();
            json!({
                "iqn": t.iqn, "alias": t.alias, "tpgt": t.tpgt, "state": state,
                "portals": t.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "luns": luns, "sessions": sess,
                "accounts": { "incoming": t.incoming_user.as_ref().map(|u| u.name.clone()),
                              "outgoing": t.outgoing_user.as_ref().map(|u| u.name.clone()) },
                "acl": { "initiators": t.initiators,
                         "networks": t.networks.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>() },
            })
        })
        .collect();
    json!({ "targets": targets }).to_string()
}
