//! Two heartbeat services talking unicast UDP over loopback (127.0.0.1 <-> 127.0.0.2) with short
//! timers. Every wait is bounded.

use clusterd::heartbeat::{
    AuthKeys, HeartbeatError, HeartbeatHandle, HeartbeatRuntimeConfig, HeartbeatService, LinkMode, LinkRuntime,
    MembershipEvent, MembershipParams, PeerLiveness,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const KEEPALIVE: Duration = Duration::from_millis(50);
const DEADTIME: Duration = Duration::from_millis(300);
const BOUND: Duration = Duration::from_secs(5);

fn params() -> MembershipParams {
    MembershipParams {
        keepalive: KEEPALIVE,
        warntime: Duration::from_millis(150),
        deadtime: DEADTIME,
        initdead: Duration::from_millis(600),
        links: vec!["ring0".into()],
    }
}

/// A currently free UDP port on `ip` (the socket is closed again; the tiny race is acceptable).
fn free_addr(ip: [u8; 4]) -> SocketAddr {
    let ip = IpAddr::V4(Ipv4Addr::from(ip));
    let probe = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    probe.local_addr().unwrap()
}

fn config(me: &str, peer: &str, bind: SocketAddr, send_to: SocketAddr) -> HeartbeatRuntimeConfig {
    HeartbeatRuntimeConfig {
        cluster: "ha-test".into(),
        me: me.into(),
        peer: peer.into(),
        links: vec![LinkRuntime {
            name: "ring0".into(),
            mode: LinkMode::Unicast,
            bind,
            send_to,
            interface: None,
        }],
        params: params(),
        legacy_packets: false,
    }
}

fn keys(send_id: u8, list: &[(u8, &[u8])]) -> AuthKeys {
    AuthKeys::from_keys(send_id, list.iter().map(|(id, k)| (*id, k.to_vec()))).unwrap()
}

async fn start(
    cfg: HeartbeatRuntimeConfig,
    keys: AuthKeys,
    generation: u64,
    state: &[u8],
) -> (HeartbeatHandle, mpsc::Receiver<MembershipEvent>, watch::Sender<Vec<u8>>) {
    let (state_tx, state_rx) = watch::channel(state.to_vec());
    let (handle, events) = HeartbeatService::start(cfg, keys, generation, state_rx).await.unwrap();
    (handle, events, state_tx)
}

/// Waits (bounded) for the first event matching `want`, returning it and when it arrived.
async fn wait_for(events: &mut mpsc::Receiver<MembershipEvent>, want: impl Fn(&MembershipEvent) -> bool) -> Instant {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if want(&event) => return Instant::now(),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("no matching heartbeat event within {BOUND:?}"),
        }
    }
}

#[tokio::test]
async fn two_nodes_see_each_other_and_a_stopped_node_is_declared_dead() {
    let addr_a = free_addr([127, 0, 0, 1]);
    let addr_b = free_addr([127, 0, 0, 2]);
    // Keys being rolled: A already signs with key 2, B still with key 1; both accept both.
    let keys_a = keys(2, &[(1, b"old key"), (2, b"new key")]);
    let keys_b = keys(1, &[(1, b"old key"), (2, b"new key")]);
    let (a, mut events_a, state_a) = start(config("node-a", "node-b", addr_a, addr_b), keys_a, 7, b"A0").await;
    let (b, mut events_b, _state_b) = start(config("node-b", "node-a", addr_b, addr_a), keys_b, 3, b"B0").await;

    wait_for(&mut events_a, |e| *e == MembershipEvent::PeerAlive { generation: 3 }).await;
    wait_for(&mut events_b, |e| *e == MembershipEvent::PeerAlive { generation: 7 }).await;
    assert_eq!(a.status().liveness, PeerLiveness::Alive);
    assert_eq!(a.status().generation, Some(3));
    assert_eq!(a.peer_group_state().as_deref(), Some(b"B0".as_slice()));

    // A new group state published by A's sequencer reaches B within a few keepalives.
    state_a.send(b"A1".to_vec()).unwrap();
    let until = Instant::now() + BOUND;
    while b.status().group_state.as_deref() != Some(b"A1".as_slice()) {
        assert!(Instant::now() < until, "group state did not propagate");
        tokio::time::sleep(KEEPALIVE).await;
    }
    let link = b.status().link("ring0").unwrap().clone();
    assert!(link.up && link.packets_ok >= 2, "{link:?}");
    assert_eq!(link.dropped.total(), 0, "{link:?}");

    // Stop B: A declares it dead about deadtime after B's last packet.
    while events_a.try_recv().is_ok() {}
    let stopped = Instant::now();
    b.stop().await;
    let dead_at = wait_for(&mut events_a, |e| *e == MembershipEvent::PeerDead).await;
    let took = dead_at - stopped;
    assert!(took >= DEADTIME - KEEPALIVE * 2, "declared dead too early: {took:?}");
    assert!(
        took < DEADTIME + Duration::from_secs(2),
        "declared dead too late: {took:?}"
    );
    let status = a.status();
    assert_eq!(status.liveness, PeerLiveness::Dead);
    assert!(!status.link("ring0").unwrap().up);
    a.stop().await;
}

#[tokio::test]
async fn a_node_with_another_key_is_not_accepted_and_drops_are_counted() {
    let addr_a = free_addr([127, 0, 0, 1]);
    let addr_c = free_addr([127, 0, 0, 2]);
    let (a, _events_a, _sa) = start(
        config("node-a", "node-b", addr_a, addr_c),
        keys(1, &[(1, b"right key")]),
        1,
        b"",
    )
    .await;
    // Same key id, different secret.
    let (c, _events_c, _sc) = start(
        config("node-b", "node-a", addr_c, addr_a),
        keys(1, &[(1, b"wrong key")]),
        1,
        b"",
    )
    .await;

    let until = Instant::now() + BOUND;
    while a.status().link("ring0").unwrap().dropped.bad_mac < 3 {
        assert!(Instant::now() < until, "bad-MAC drops not counted: {:?}", a.status());
        tokio::time::sleep(KEEPALIVE).await;
    }
    let status = a.status();
    assert_ne!(status.liveness, PeerLiveness::Alive);
    assert_eq!(status.generation, None);
    let link = status.link("ring0").unwrap();
    assert_eq!(link.packets_ok, 0);
    assert!(!link.up);
    assert!(c.status().link("ring0").unwrap().dropped.bad_mac >= 1);
    a.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn start_refuses_links_that_do_not_match_the_params() {
    let addr = free_addr([127, 0, 0, 1]);
    let mut cfg = config("node-a", "node-b", addr, addr);
    cfg.params.links = vec!["ring1".into()];
    let (_tx, rx) = watch::channel(Vec::new());
    let err = HeartbeatService::start(cfg, keys(1, &[(1, b"k")]), 1, rx)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HeartbeatError::LinkMismatch(ref l) if l == "ring0"),
        "{err}"
    );

    let mut cfg = config("node-a", "node-b", addr, addr);
    cfg.params.deadtime = KEEPALIVE;
    let (_tx, rx) = watch::channel(Vec::new());
    let err = HeartbeatService::start(cfg, keys(1, &[(1, b"k")]), 1, rx)
        .await
        .unwrap_err();
    assert!(matches!(err, HeartbeatError::Params(_)), "{err}");
}

// issue 15 upgrade: a node of the previous release (no version fields) next to one of this release.
#[tokio::test]
async fn a_previous_release_peer_is_heard_as_version_1_and_sees_our_version() {
    let addr_a = free_addr([127, 0, 0, 1]);
    let addr_b = free_addr([127, 0, 0, 2]);
    let key: &[(u8, &[u8])] = &[(1, b"shared key")];
    let (a, mut events_a, _sa) = start(config("node-a", "node-b", addr_a, addr_b), keys(1, key), 4, b"A").await;
    let old = HeartbeatRuntimeConfig { legacy_packets: true, ..config("node-b", "node-a", addr_b, addr_a) };
    let (b, mut events_b, _sb) = start(old, keys(1, key), 5, b"B").await;
    wait_for(&mut events_a, |e| *e == MembershipEvent::PeerAlive { generation: 5 }).await;
    wait_for(&mut events_b, |e| *e == MembershipEvent::PeerAlive { generation: 4 }).await;
    let seen_by_a = a.status().peer_versions.expect("a heard b");
    assert_eq!((seen_by_a.heartbeat.min, seen_by_a.heartbeat.max, seen_by_a.agreed), (1, 1, 1));
    assert_eq!(seen_by_a.software, "", "the previous release sends no software version");
    let seen_by_b = b.status().peer_versions.expect("b heard a");
    assert_eq!(seen_by_b.software, clusterd::versions::SOFTWARE_VERSION);
    for h in [&a, &b] {
        let link = h.status().link("ring0").unwrap().clone();
        assert_eq!(link.dropped.total(), 0, "{link:?}");
    }
    a.stop().await;
    b.stop().await;
}
