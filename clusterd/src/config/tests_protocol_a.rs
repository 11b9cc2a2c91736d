//! Issue 18: `protocol: A` and its net fields — typed values, defaults, what the replicator gets, and
//! the dump (which shows them only for protocol A, and parses back to the same configuration).

use super::*;
use replicator::machine::{AsyncOptions, OnLag as MachineOnLag, ReplProtocol};

fn load(text: &str) -> HaConfig {
    HaConfig::from_str(text, Path::new("/etc/ha/ha.yaml")).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn with_net(protocol: &str, net: &str) -> String {
    format!(
        "nodes: [{{ name: node1 }}, {{ name: node2 }}]\nresources:\n  dr0:\n    protocol: {protocol}\n    device: dr0\n    net: {{ {net} }}\n    on:\n      node1: {{ disk: /d, address: \"127.0.0.1:7000\" }}\n      node2: {{ disk: /d, address: \"127.0.0.2:7000\" }}\n"
    )
}

#[test]
fn protocol_a_fields_are_typed_and_reach_the_replicator() {
    let cfg = load(&with_net("A", "max-lag: 16M, max-lag-time: 5s, on-lag: disconnect, allow-async-failover: on"));
    let r = &cfg.resources["dr0"];
    assert_eq!(r.protocol, Protocol::A);
    assert_eq!(
        r.net.async_repl,
        AsyncReplConfig { max_lag: 16 << 20, max_lag_time: Some(Duration::from_secs(5)), on_lag: OnLag::Disconnect, allow_async_failover: true, epoch_flush: true }
    );
    assert_eq!(
        r.replication_protocol(),
        ReplProtocol::A(AsyncOptions { max_lag_bytes: 16 << 20, max_lag_ms: Some(5_000), on_lag: MachineOnLag::Disconnect, allow_failover: true, epoch_flush: true })
    );
}

#[test]
fn protocol_a_defaults_wait_at_64m_and_no_async_failover() {
    let cfg = load(&with_net("A", "timeout: 6s"));
    let r = &cfg.resources["dr0"];
    assert_eq!(r.net.async_repl, AsyncReplConfig::default());
    assert_eq!(r.net.async_repl.max_lag, 64 << 20);
    assert_eq!(
        r.replication_protocol(),
        ReplProtocol::A(AsyncOptions { max_lag_bytes: 64 << 20, max_lag_ms: None, on_lag: MachineOnLag::Wait, allow_failover: false, epoch_flush: true })
    );
    let c = load(&with_net("C", "timeout: 6s"));
    assert_eq!(c.resources["dr0"].replication_protocol(), ReplProtocol::C);
}

#[test]
fn epoch_flush_can_be_turned_off_and_only_under_protocol_a() {
    let r = &load(&with_net("A", "epoch-flush: off")).resources["dr0"];
    assert!(!r.net.async_repl.epoch_flush);
    assert!(matches!(r.replication_protocol(), ReplProtocol::A(o) if !o.epoch_flush));
    let e = HaConfig::from_str(&with_net("C", "epoch-flush: off"), Path::new("/etc/ha/ha.yaml")).unwrap_err().to_string();
    assert!(e.contains("net.epoch-flush") && e.contains("only applies to protocol A"), "{e}");
}

#[test]
fn the_dump_shows_protocol_a_fields_and_parses_back() {
    let cfg = load(&with_net("A", "max-lag: 512K, on-lag: disconnect"));
    let dumped = dump_yaml(&cfg, None).unwrap();
    for want in ["protocol: A", "max-lag: 512K", "max-lag-time: off", "on-lag: disconnect", "allow-async-failover: off", "epoch-flush: on"] {
        assert!(dumped.contains(want), "{want} missing:\n{dumped}");
    }
    let again = HaConfig::from_str(&dumped, Path::new("/elsewhere/dump.yaml")).unwrap();
    assert_eq!(again.resources["dr0"].net, cfg.resources["dr0"].net);
    assert_eq!(config_digest(&again), config_digest(&cfg));
    // Protocol C: none of them (they would be refused on the way back in).
    let c = dump_yaml(&load(&with_net("C", "timeout: 6s")), None).unwrap();
    assert!(!c.contains("max-lag") && !c.contains("on-lag") && !c.contains("allow-async-failover"), "{c}");
}
