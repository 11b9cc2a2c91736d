//! The effective configuration as YAML, every default filled in (`haadm dump`, like `drbdadm dump`),
//! and its digest, which both nodes compare over the heartbeat.
//!
//! The output is canonical: the same effective configuration always prints the same text (keys in a
//! fixed order, paths absolute, units in their largest exact spelling), whatever the file's layout,
//! comments or omitted defaults. That is what makes it usable as the input of the digest, and it
//! parses back to an equal configuration (tested).

use super::{
    ChapUser, ClusterConfig, GroupConfig, HaConfig, LinkMode, LunSource, Manager, ResourceConfig, TargetDef,
    TargetParamOverrides, format_duration,
};
use serde_yaml::{Mapping, Value};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// The whole effective configuration, or only resource `only` (refused when it does not exist).
pub fn dump_yaml(cfg: &HaConfig, only: Option<&str>) -> Result<String, String> {
    let doc = match only {
        None => whole(cfg),
        Some(name) => {
            let r = cfg.resources.get(name).ok_or_else(|| {
                format!(
                    "no resource `{name}` in {} (resources: {})",
                    cfg.path.display(),
                    cfg.resources.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let mut resources = Mapping::new();
            resources.insert(s(name), resource(r));
            let mut m = Mapping::new();
            m.insert(s("resources"), Value::Mapping(resources));
            Value::Mapping(m)
        }
    };
    serde_yaml::to_string(&doc).map_err(|e| format!("cannot print the configuration: {e}"))
}

/// The canonical dump as a YAML value (for comparing two configurations field by field).
pub fn dump_value(cfg: &HaConfig) -> Value {
    whole(cfg)
}

/// First 8 bytes (16 hex digits) of the SHA-256 of the canonical dump: equal on two nodes exactly when
/// their effective configurations are equal.
pub fn config_digest(cfg: &HaConfig) -> String {
    let text = serde_yaml::to_string(&whole(cfg)).unwrap_or_default();
    let sum = Sha256::digest(text.as_bytes());
    hex::encode(&sum[..8])
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn d(value: Duration) -> Value {
    s(&format_duration(value))
}

fn b(on: bool) -> Value {
    s(if on { "on" } else { "off" })
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

/// Adds `key: value` when `value` is set (optional keys without a default are left out).
fn put(m: &mut Value, key: &str, value: Option<Value>) {
    if let (Value::Mapping(m), Some(v)) = (m, value) {
        m.insert(s(key), v);
    }
}

fn path(p: &std::path::Path) -> Value {
    s(&p.display().to_string())
}

fn whole(cfg: &HaConfig) -> Value {
    let nodes = cfg
        .nodes
        .iter()
        .map(|n| {
            map([
                ("name", s(&n.name)),
                ("control-socket", path(&n.control_socket)),
                ("state-dir", path(&n.state_dir)),
            ])
        })
        .collect();
    let mut resources = Mapping::new();
    for (name, r) in &cfg.resources {
        resources.insert(s(name), resource(r));
    }
    let mut doc = map([("nodes", Value::Sequence(nodes)), ("resources", Value::Mapping(resources))]);
    match (&cfg.manager, &cfg.cluster) {
        (Manager::Pacemaker, _) => put(&mut doc, "cluster", Some(map([("manager", s("pacemaker"))]))),
        (Manager::Embedded, Some(c)) => put(&mut doc, "cluster", Some(cluster(c))),
        (Manager::Embedded, None) => {}
    }
    // A `group:` file dumps as before (same digest as an older release computes for it, so a rolling
    // upgrade shows no configuration mismatch); `groups:` dumps every group by name.
    if cfg.legacy_group {
        put(&mut doc, "group", cfg.groups.first().map(|g| group(g, true)));
    } else if !cfg.groups.is_empty() {
        let groups: Mapping = cfg.groups.iter().map(|g| (s(&g.name), group(g, false))).collect();
        put(&mut doc, "groups", Some(Value::Mapping(groups)));
    }
    let mut iscsi = map([
        ("nop-interval", d(cfg.iscsi.nop_interval)),
        ("nop-timeout", d(cfg.iscsi.nop_timeout)),
    ]);
    put(&mut iscsi, "discovery-user", cfg.iscsi.discovery_user.as_ref().map(chap));
    put(&mut doc, "iscsi", Some(iscsi));
    if !cfg.targets.is_empty() {
        let mut targets = Mapping::new();
        for t in &cfg.targets {
            targets.insert(s(&t.iqn), target(t, !cfg.legacy_group));
        }
        put(&mut doc, "targets", Some(Value::Mapping(targets)));
    }
    if !cfg.metrics.listen.is_empty() {
        let mut on = Mapping::new();
        for (node, addr) in &cfg.metrics.listen {
            on.insert(s(node), s(&addr.to_string()));
        }
        put(&mut doc, "metrics", Some(map([("on", Value::Mapping(on))])));
    }
    doc
}

fn resource(r: &ResourceConfig) -> Value {
    let mut net = map([
        ("after-sb-0pri", s(&r.net.after_sb_0pri.to_string())),
        ("after-sb-1pri", s(&r.net.after_sb_1pri.to_string())),
        ("after-sb-2pri", s(&r.net.after_sb_2pri.to_string())),
        ("rr-conflict", s(&r.net.rr_conflict.to_string())),
        ("timeout", d(r.net.timeout)),
        ("ping-int", d(r.net.ping_int)),
        ("ping-timeout", d(r.net.ping_timeout)),
        ("connect-int", d(r.net.connect_int)),
        ("max-buffers", Value::from(r.net.max_buffers)),
    ]);
    if r.protocol == super::Protocol::A {
        let a = &r.net.async_repl;
        put(&mut net, "max-lag", Some(s(&super::units::Rate(Some(a.max_lag)).to_string())));
        put(&mut net, "max-lag-time", Some(s(&a.max_lag_time.map_or("off".to_string(), format_duration))));
        put(&mut net, "on-lag", Some(s(&a.on_lag.to_string())));
        put(&mut net, "allow-async-failover", Some(b(a.allow_async_failover)));
        put(&mut net, "epoch-flush", Some(b(a.epoch_flush)));
    }
    if let Some(a) = &r.net.auth {
        put(&mut net, "cram-hmac-alg", Some(s(&a.cram_hmac_alg.to_string())));
        put(&mut net, "shared-secret-file", Some(path(&a.shared_secret_file)));
    }
    let mut handlers = Mapping::new();
    for (k, v) in &r.handlers {
        handlers.insert(s(k), s(v));
    }
    let mut on = Mapping::new();
    for (node, o) in &r.on {
        on.insert(
            s(node),
            map([
                ("disk", path(&o.disk)),
                ("address", s(&o.address.to_string())),
                ("meta-disk", s(&o.meta_disk.to_string())),
            ]),
        );
    }
    map([
        ("protocol", s(&r.protocol.to_string())),
        ("device", s(&r.device)),
        (
            "startup",
            map([
                ("wfc-timeout", d(r.startup.wfc_timeout)),
                ("degr-wfc-timeout", d(r.startup.degr_wfc_timeout)),
                ("outdated-wfc-timeout", d(r.startup.outdated_wfc_timeout)),
            ]),
        ),
        (
            "disk",
            map([
                ("on-io-error", s(&r.disk.on_io_error.to_string())),
                ("fencing", s(&r.disk.fencing.to_string())),
                ("direct-io", b(r.disk.direct_io)),
            ]),
        ),
        ("net", net),
        (
            "syncer",
            map([
                ("rate", s(&r.syncer.rate.to_string())),
                ("verify-alg", s(&r.syncer.verify_alg.to_string())),
                ("csums-alg", s(&r.syncer.csums_alg.to_string())),
                ("csums-for", s(&r.syncer.csums_for.to_string())),
                ("al-extents", Value::from(r.syncer.al_extents)),
                ("c-min-rate", s(&r.syncer.c_min_rate.to_string())),
                ("c-plan-ahead", s(&format_duration(r.syncer.c_plan_ahead))),
                ("c-fill-target", s(&super::Rate(Some(r.syncer.c_fill_target)).to_string())),
                ("c-max-rate", s(&r.syncer.c_max_rate.to_string())),
                ("verify-repair", b(r.syncer.verify_repair)),
                ("verify-interval", s(&r.syncer.verify_interval.map_or("off".to_string(), format_duration))),
                ("verify-rate", s(&r.syncer.verify_rate.map_or(super::resource::VERIFY_RATE_SAME_AS_RATE.to_string(), |v| v.to_string()))),
            ]),
        ),
        ("handlers", Value::Mapping(handlers)),
        ("on", Value::Mapping(on)),
    ])
}

fn cluster(c: &ClusterConfig) -> Value {
    let links = c
        .links
        .iter()
        .map(|l| {
            let mut on = Mapping::new();
            for (node, e) in &l.on {
                let mut ep = map([("address", s(&e.address.to_string()))]);
                put(&mut ep, "interface", e.interface.as_deref().map(s));
                put(&mut ep, "broadcast", e.broadcast.map(|a| s(&a.to_string())));
                on.insert(s(node), ep);
            }
            let mode = match l.mode {
                LinkMode::Unicast => "ucast",
                LinkMode::Broadcast => "bcast",
            };
            map([
                ("name", s(&l.name)),
                ("mode", s(mode)),
                ("port", Value::from(l.port)),
                ("on", Value::Mapping(on)),
            ])
        })
        .collect();
    let mut guard = map([
        (
            "ping-nodes",
            Value::Sequence(c.guard.ping_nodes.iter().map(|a| s(&a.to_string())).collect()),
        ),
        ("ping-timeout", d(c.guard.ping_timeout)),
    ]);
    put(&mut guard, "fence-command", c.guard.fence_command.as_deref().map(s));
    if let Some(a) = &c.guard.fence_agent {
        let kv = |m: &std::collections::BTreeMap<String, String>| {
            Value::Mapping(m.iter().map(|(k, v)| (s(k), s(v))).collect())
        };
        let mut agent = map([
            ("agent", path(&a.agent)),
            ("params", kv(&a.params)),
            ("on", Value::Mapping(a.on.iter().map(|(n, m)| (s(n), kv(m))).collect())),
            ("timeout", d(a.timeout)),
            ("retries", Value::from(a.retries)),
            ("confirm-timeout", d(a.confirm_timeout)),
        ]);
        put(&mut agent, "password-file", a.password_file.as_deref().map(path));
        put(&mut guard, "fence-agent", Some(agent));
    }
    let mut out = map([
        ("manager", s("embedded")),
        ("keepalive", d(c.keepalive)),
        ("warntime", d(c.warntime)),
        ("deadtime", d(c.deadtime)),
        ("initdead", d(c.initdead)),
        ("auto-failback", b(c.auto_failback)),
        ("authkeys-file", path(&c.authkeys_file)),
        ("links", Value::Sequence(links)),
        ("guard", guard),
    ]);
    put(&mut out, "escalation-command", c.escalation_command.as_deref().map(s));
    out
}

fn group(g: &GroupConfig, legacy: bool) -> Value {
    let mut out = map([
        ("resources", Value::Sequence(g.resources.iter().map(|r| s(r)).collect())),
        ("portblock", b(g.portblock)),
        ("start-timeout", d(g.start_timeout)),
        ("stop-timeout", d(g.stop_timeout)),
        ("unsafe-promote-without-guard", b(g.allow_unguarded_split)),
    ]);
    put(&mut out, "preferred", g.preferred.as_deref().map(s));
    // issue 17 keys: always in a `groups:` dump, in a `group:` one only when set (see above).
    if !legacy || g.access != crate::config::Access::Vip {
        put(&mut out, "access", Some(s(g.access.name())));
    }
    if !g.node_portals.is_empty() {
        let portals = g.node_portals.iter().map(|(n, p)| (s(n), s(&p.to_string()))).collect();
        put(&mut out, "node-portals", Some(Value::Mapping(portals)));
    }
    put(&mut out, "auto-failback", g.auto_failback.map(b));
    if let Some(v) = &g.vip {
        let on = Value::Mapping(v.interfaces.iter().map(|(n, i)| (s(n), s(i))).collect());
        put(
            &mut out,
            "vip",
            Some(map([
                ("address", s(&format!("{}/{}", v.address, v.prefix_len))),
                ("on", on),
                ("garp-count", Value::from(v.garp_count)),
                ("garp-interval", d(v.garp_interval)),
                ("garp-repeat-after", d(v.garp_repeat_after)),
            ])),
        );
    }
    out
}

fn chap(u: &ChapUser) -> Value {
    map([("name", s(&u.name)), ("secret-file", path(&u.secret_file))])
}

fn target(t: &TargetDef, named_groups: bool) -> Value {
    let mut luns = Mapping::new();
    for (n, lun) in &t.luns {
        let mut l = match &lun.source {
            LunSource::Resource(r) => map([("resource", s(r))]),
            LunSource::Path(p) => map([("path", path(p))]),
        };
        put(&mut l, "serial", lun.serial.as_deref().map(s));
        put(&mut l, "block-size", Some(Value::from(lun.block_size)));
        put(&mut l, "write-cache", Some(b(lun.write_cache)));
        luns.insert(Value::from(*n), l);
    }
    let mut out = map([
        ("tpgt", Value::from(t.tpgt)),
        ("portals", Value::Sequence(t.portals.iter().map(|p| s(&p.to_string())).collect())),
        ("luns", Value::Mapping(luns)),
        ("initiators", Value::Sequence(t.initiators.iter().map(|i| s(i)).collect())),
        (
            "networks",
            Value::Sequence(t.networks.iter().map(|(a, p)| s(&format!("{a}/{p}"))).collect()),
        ),
        ("vendor", s(&t.vendor)),
        ("product", s(&t.product)),
    ]);
    put(&mut out, "alias", t.alias.as_deref().map(s));
    if named_groups {
        put(&mut out, "group", t.group.as_deref().map(s));
    }
    put(&mut out, "incoming-user", t.incoming_user.as_ref().map(chap));
    put(&mut out, "outgoing-user", t.outgoing_user.as_ref().map(chap));
    let params = target_params(&t.params);
    if !params.is_empty() {
        put(&mut out, "params", Some(Value::Mapping(params)));
    }
    out
}

/// Only the parameters the file overrides: the others are negotiated from the target's own defaults,
/// which are not configuration.
fn target_params(p: &TargetParamOverrides) -> Mapping {
    let mut m = Mapping::new();
    let mut num = |k: &str, v: Option<u32>| {
        if let Some(v) = v {
            m.insert(s(k), Value::from(v));
        }
    };
    num("MaxConnections", p.max_connections);
    num("MaxRecvDataSegmentLength", p.max_recv_data_segment_length);
    num("MaxXmitDataSegmentLength", p.max_xmit_data_segment_length);
    num("MaxBurstLength", p.max_burst_length);
    num("FirstBurstLength", p.first_burst_length);
    num("DefaultTime2Wait", p.default_time2wait);
    num("DefaultTime2Retain", p.default_time2retain);
    num("MaxOutstandingR2T", p.max_outstanding_r2t);
    num("ErrorRecoveryLevel", p.error_recovery_level);
    let yes_no = |v: bool| s(if v { "Yes" } else { "No" });
    for (k, v) in [
        ("InitialR2T", p.initial_r2t),
        ("ImmediateData", p.immediate_data),
        ("DataPDUInOrder", p.data_pdu_in_order),
        ("DataSequenceInOrder", p.data_sequence_in_order),
    ] {
        if let Some(v) = v {
            m.insert(s(k), yes_no(v));
        }
    }
    for (k, v) in [("HeaderDigest", &p.header_digest), ("DataDigest", &p.data_digest)] {
        if let Some(list) = v {
            m.insert(s(k), s(&list.join(",")));
        }
    }
    m
}
