//! Membership core driven by a fake clock (all times are offsets from one `Instant`).

use super::*;
use MembershipEvent::*;

const KEEPALIVE: u64 = 100;
const WARNTIME: u64 = 300;
const DEADTIME: u64 = 1_000;
const INITDEAD: u64 = 2_000;
/// Our own (node-a's) boot generation in the fixture.
const OWN_GENERATION: u64 = 7;

struct Fixture {
    t0: Instant,
    m: Membership,
}

impl Fixture {
    fn new() -> Fixture {
        let params = MembershipParams {
            keepalive: Duration::from_millis(KEEPALIVE),
            warntime: Duration::from_millis(WARNTIME),
            deadtime: Duration::from_millis(DEADTIME),
            initdead: Duration::from_millis(INITDEAD),
            links: vec!["ring0".into(), "ring1".into()],
        };
        params.validate().unwrap();
        let t0 = Instant::now();
        Fixture {
            t0,
            m: Membership::new(params, "ha", "node-a", "node-b", t0).with_own_generation(OWN_GENERATION),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn packet(&mut self, link: &str, generation: u64, seq: u64, ms: u64) -> Vec<MembershipEvent> {
        let hb = hb("ha", "node-b", generation, seq);
        self.deliver(link, hb, ms)
    }

    fn deliver(&mut self, link: &str, from: Heartbeat, ms: u64) -> Vec<MembershipEvent> {
        let at = self.at(ms);
        self.m.step(MembershipInput::Packet {
            link: link.into(),
            from,
            at,
        })
    }

    fn tick(&mut self, ms: u64) -> Vec<MembershipEvent> {
        self.m.tick(self.at(ms))
    }

    fn dropped(&self, link: &str) -> DropCounts {
        self.m.status(self.t0).link(link).unwrap().dropped.clone()
    }

    /// Both links heard from at keepalive pace from `from_ms` to `to_ms` (seq = ms), ticking too.
    fn steady(&mut self, generation: u64, from_ms: u64, to_ms: u64) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        for ms in (from_ms..=to_ms).step_by(KEEPALIVE as usize) {
            events.extend(self.packet("ring0", generation, ms, ms));
            events.extend(self.packet("ring1", generation, ms, ms));
            events.extend(self.tick(ms));
        }
        events
    }
}

fn hb(cluster: &str, node: &str, generation: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        cluster: cluster.into(),
        node: node.into(),
        generation,
        seq,
        link: "ring0".into(),
        sent_unix_ms: 0,
        group_state: seq.to_be_bytes().to_vec(),
        ..Heartbeat::default()
    }
}

#[test]
fn first_packets_bring_links_and_peer_up() {
    let mut f = Fixture::new();
    assert_eq!(f.m.status(f.at(0)).liveness, PeerLiveness::Waiting);
    assert_eq!(
        f.packet("ring0", 5, 1, 10),
        [LinkUp("ring0".into()), PeerAlive { generation: 5 }]
    );
    assert_eq!(f.packet("ring1", 5, 1, 12), [LinkUp("ring1".into())]);
    let status = f.m.status(f.at(100));
    assert!(status.peer_alive());
    assert_eq!(status.generation, Some(5));
    assert_eq!(
        status.link("ring0").unwrap().last_heard_ago,
        Some(Duration::from_millis(90))
    );
    assert_eq!(status.link("ring1").unwrap().packets_ok, 1);
    assert_eq!(f.m.peer_group_state(), Some(1u64.to_be_bytes().as_slice()));
}

#[test]
fn peer_is_dead_only_when_every_link_is_silent() {
    let mut f = Fixture::new();
    f.steady(1, 0, 1_000);
    // ring1 is cut at 1000; ring0 keeps going.
    let mut events = Vec::new();
    for ms in (1_100..=3_000).step_by(KEEPALIVE as usize) {
        events.extend(f.packet("ring0", 1, ms, ms));
        events.extend(f.tick(ms));
    }
    assert_eq!(
        events,
        [LinkDown("ring1".into())],
        "one cut link must not kill the peer"
    );
    assert!(f.m.status(f.at(3_000)).peer_alive());
    assert!(!f.m.status(f.at(3_000)).link("ring1").unwrap().up);

    // Now ring0 goes silent too (last packet at 3000): dead exactly at 3000 + deadtime.
    assert!(f.tick(3_999).is_empty());
    assert_eq!(f.tick(4_000), [LinkDown("ring0".into()), PeerDead]);
    assert!(f.tick(5_000).is_empty(), "PeerDead is reported once");
    assert_eq!(f.m.status(f.at(5_000)).liveness, PeerLiveness::Dead);

    // The peer comes back on ring1 only.
    assert_eq!(
        f.packet("ring1", 1, 6_000, 6_000),
        [LinkUp("ring1".into()), PeerAlive { generation: 1 }]
    );
}

#[test]
fn both_links_silent_at_once_reports_both_links_then_peer() {
    let mut f = Fixture::new();
    f.steady(1, 0, 500);
    assert_eq!(
        f.tick(1_500),
        [LinkDown("ring0".into()), LinkDown("ring1".into()), PeerDead]
    );
}

#[test]
fn initdead_applies_until_the_peer_is_first_heard() {
    let mut f = Fixture::new();
    // Past deadtime but before initdead: still waiting, no event.
    assert!(f.tick(DEADTIME + 500).is_empty());
    assert_eq!(f.m.status(f.at(DEADTIME + 500)).liveness, PeerLiveness::Waiting);
    assert_eq!(f.tick(INITDEAD), [InitDeadExpired]);
    assert!(f.tick(INITDEAD + 1_000).is_empty());
    assert_eq!(f.m.status(f.at(INITDEAD)).liveness, PeerLiveness::Dead);
    // Heard later: alive, then normal deadtime rules.
    assert_eq!(
        f.packet("ring0", 3, 1, 5_000),
        [LinkUp("ring0".into()), PeerAlive { generation: 3 }]
    );
    assert_eq!(f.tick(6_000), [LinkDown("ring0".into()), PeerDead]);
}

#[test]
fn heard_before_initdead_means_deadtime_rules_from_then_on() {
    let mut f = Fixture::new();
    f.packet("ring0", 1, 1, 100);
    assert!(f.tick(100 + DEADTIME - 1).is_empty());
    assert_eq!(f.tick(100 + DEADTIME), [LinkDown("ring0".into()), PeerDead]);
    assert!(
        f.tick(INITDEAD).is_empty(),
        "no InitDeadExpired once the peer was heard"
    );
}

#[test]
fn late_heartbeat_reports_the_gap_and_keeps_the_largest() {
    let mut f = Fixture::new();
    f.packet("ring0", 1, 1, 0);
    assert!(f.packet("ring0", 1, 2, 100).is_empty());
    assert_eq!(
        f.packet("ring0", 1, 3, 550),
        [LateHeartbeat {
            link: "ring0".into(),
            gap: Duration::from_millis(450)
        }]
    );
    assert!(f.packet("ring0", 1, 4, 650).is_empty());
    assert_eq!(
        f.packet("ring0", 1, 5, 1_000),
        [LateHeartbeat {
            link: "ring0".into(),
            gap: Duration::from_millis(350)
        }]
    );
    let ring0 = f.m.status(f.at(1_000)).link("ring0").unwrap().clone();
    assert_eq!(ring0.largest_gap, Duration::from_millis(450));
    // A gap exactly at warntime is not late.
    assert!(f.packet("ring0", 1, 6, 1_000 + WARNTIME).is_empty());
    // After a link outage the gap is an outage, not a late heartbeat.
    f.tick(5_000);
    assert_eq!(
        f.packet("ring0", 1, 7, 5_000),
        [LinkUp("ring0".into()), PeerAlive { generation: 1 }]
    );
    assert_eq!(
        f.m.status(f.at(5_000)).link("ring0").unwrap().largest_gap,
        Duration::from_millis(450)
    );
}

#[test]
fn replays_are_dropped_and_mild_reordering_is_accepted_once() {
    let mut f = Fixture::new();
    for seq in [100, 101, 103] {
        f.packet("ring0", 1, seq, seq);
    }
    // Duplicate of the newest, duplicate of an older one: replays.
    f.packet("ring0", 1, 103, 200);
    f.packet("ring0", 1, 100, 201);
    assert_eq!(f.dropped("ring0").replay, 2);
    // 102 was never seen and is within the window: accepted once, replay the second time.
    f.packet("ring0", 1, 102, 202);
    assert_eq!(f.m.status(f.at(202)).link("ring0").unwrap().packets_ok, 4);
    f.packet("ring0", 1, 102, 203);
    assert_eq!(f.dropped("ring0").replay, 3);
    // The reordered packet did not move group_state backwards.
    assert_eq!(f.m.peer_group_state(), Some(103u64.to_be_bytes().as_slice()));
    // Far ahead, then anything 64 or more behind the newest is a replay.
    f.packet("ring0", 1, 1_000, 204);
    f.packet("ring0", 1, 1_000 - 64, 205);
    f.packet("ring0", 1, 1_000 - 63, 206);
    let ring0 = f.m.status(f.at(206)).link("ring0").unwrap().clone();
    assert_eq!(ring0.dropped.replay, 4);
    assert_eq!(ring0.packets_ok, 6);
    // Windows are per link: the same seq on the other link is fine.
    f.packet("ring1", 1, 1_000, 207);
    assert_eq!(f.dropped("ring1").replay, 0);
    assert_eq!(f.dropped("ring0").total(), 4);
}

#[test]
fn replay_window_tracks_exactly_64_entries() {
    let mut w = ReplayWindow::default();
    assert!(w.accept(0));
    assert!(w.accept(63));
    assert!(w.accept(1), "63 - 1 = 62 < 64");
    assert!(!w.accept(0), "already seen");
    assert!(w.accept(64));
    assert!(!w.accept(0), "64 behind the newest is outside the window");
    assert!(w.accept(u64::MAX));
    assert!(!w.accept(u64::MAX));
    assert!(w.accept(u64::MAX - 63));
    assert!(!w.accept(u64::MAX - 64));
}

#[test]
fn lower_generation_is_stale_and_higher_is_a_restart() {
    let mut f = Fixture::new();
    f.steady(5, 0, 300);
    assert!(f.packet("ring0", 4, 10_000, 350).is_empty());
    assert_eq!(f.dropped("ring0").stale_generation, 1);
    assert_eq!(f.m.status(f.at(350)).generation, Some(5));

    // Restart: seqs start over and are accepted on every link despite being lower.
    assert_eq!(f.packet("ring0", 6, 1, 400), [PeerRestarted { old: 5, new: 6 }]);
    assert!(f.packet("ring1", 6, 1, 401).is_empty());
    let status = f.m.status(f.at(401));
    assert_eq!(status.generation, Some(6));
    assert!(status.peer_alive());
    assert_eq!(f.m.peer_group_state(), Some(1u64.to_be_bytes().as_slice()));
    // Old-generation packets are now stale, even with a high seq.
    f.packet("ring1", 5, 99_999, 402);
    assert_eq!(f.dropped("ring1").stale_generation, 1);
    assert_eq!(f.dropped("ring1").replay, 0);
}

#[test]
fn restart_after_the_peer_was_dead_reports_both() {
    let mut f = Fixture::new();
    f.steady(1, 0, 100);
    f.tick(2_000);
    assert_eq!(
        f.packet("ring0", 2, 1, 3_000),
        [
            PeerRestarted { old: 1, new: 2 },
            LinkUp("ring0".into()),
            PeerAlive { generation: 2 }
        ]
    );
}

#[test]
fn own_other_cluster_and_unknown_nodes_are_dropped() {
    let mut f = Fixture::new();
    assert!(f.deliver("ring0", hb("ha", "node-a", 1, 1), 0).is_empty());
    assert!(f.deliver("ring0", hb("other", "node-b", 1, 2), 0).is_empty());
    assert!(f.deliver("ring0", hb("ha", "node-c", 1, 3), 0).is_empty());
    let d = f.dropped("ring0");
    assert_eq!((d.from_self, d.wrong_cluster, d.unknown_node), (1, 1, 1));
    let status = f.m.status(f.at(0));
    assert_eq!(status.liveness, PeerLiveness::Waiting);
    assert_eq!(status.generation, None, "dropped packets must not set the generation");
    assert_eq!(status.link("ring0").unwrap().packets_ok, 0);
}

#[test]
fn codec_rejections_are_counted_per_reason_and_link() {
    let mut f = Fixture::new();
    let at = f.at(0);
    for reason in [
        RejectReason::BadMac,
        RejectReason::BadMac,
        RejectReason::UnknownKey,
        RejectReason::Malformed,
    ] {
        assert!(
            f.m.step(MembershipInput::Rejected {
                link: "ring1".into(),
                reason,
                at
            })
            .is_empty()
        );
    }
    f.m.step(MembershipInput::Rejected {
        link: "ring0".into(),
        reason: RejectReason::UnsupportedVersion,
        at,
    });
    let d1 = f.dropped("ring1");
    assert_eq!(
        (d1.bad_mac, d1.unknown_key, d1.malformed, d1.unsupported_version),
        (2, 1, 1, 0)
    );
    assert_eq!(f.dropped("ring0").unsupported_version, 1);
    // Unknown link names are ignored rather than attributed to some link.
    assert!(f.packet("ring9", 1, 1, 0).is_empty());
    assert_eq!(f.m.status(f.at(0)).liveness, PeerLiveness::Waiting);
}

#[test]
fn reject_reason_maps_codec_errors() {
    use crate::heartbeat::packet::PacketError as E;
    assert_eq!(RejectReason::from_packet_error(&E::BadMac), RejectReason::BadMac);
    assert_eq!(
        RejectReason::from_packet_error(&E::UnknownKey { id: 3 }),
        RejectReason::UnknownKey
    );
    assert_eq!(
        RejectReason::from_packet_error(&E::UnsupportedVersion { got: 2 }),
        RejectReason::UnsupportedVersion
    );
    assert_eq!(RejectReason::from_packet_error(&E::Truncated), RejectReason::Malformed);
    assert_eq!(RejectReason::from_packet_error(&E::BadMagic), RejectReason::Malformed);
}

#[test]
fn params_validation_follows_heartbeat_rules() {
    let ok = Fixture::new().m.params().clone();
    let with = |change: &dyn Fn(&mut MembershipParams)| {
        let mut p = ok.clone();
        change(&mut p);
        p.validate()
    };
    assert_eq!(with(&|p| p.links.clear()), Err(MembershipParamsError::NoLinks));
    assert!(matches!(
        with(&|p| p.links.push("ring0".into())),
        Err(MembershipParamsError::DuplicateLink(_))
    ));
    assert_eq!(
        with(&|p| p.keepalive = Duration::ZERO),
        Err(MembershipParamsError::ZeroKeepalive)
    );
    assert!(matches!(
        with(&|p| p.deadtime = Duration::from_millis(200)),
        Err(MembershipParamsError::DeadtimeTooShort { .. })
    ));
    assert!(matches!(
        with(&|p| p.warntime = Duration::from_millis(DEADTIME)),
        Err(MembershipParamsError::WarntimeOutOfRange { .. })
    ));
    assert!(matches!(
        with(&|p| p.initdead = Duration::from_millis(DEADTIME - 1)),
        Err(MembershipParamsError::InitdeadTooShort { .. })
    ));
}

#[test]
fn own_broadcast_echoes_are_ignored_without_counting_a_drop() {
    let mut f = Fixture::new();
    for seq in 1..=5 {
        assert!(f.deliver("ring0", hb("ha", "node-a", OWN_GENERATION, seq), seq * KEEPALIVE).is_empty());
    }
    // A replayed seq of our own is an echo as well: echoes never enter the replay window.
    assert!(f.deliver("ring1", hb("ha", "node-a", OWN_GENERATION, 1), 600).is_empty());
    let status = f.m.status(f.at(600));
    let ring0 = status.link("ring0").unwrap();
    assert_eq!(ring0.own_echoes, 5);
    assert_eq!(ring0.dropped, DropCounts::default());
    assert_eq!(ring0.dropped.total(), 0);
    assert_eq!(status.link("ring1").unwrap().own_echoes, 1);
    // Hearing ourselves proves nothing about the peer or the link.
    assert!(!ring0.up);
    assert_eq!(ring0.last_heard_ago, None);
    assert_eq!(ring0.packets_ok, 0);
    assert_eq!(status.liveness, PeerLiveness::Waiting);
    assert_eq!(status.generation, None);
    assert_eq!(f.tick(INITDEAD), [InitDeadExpired]);
}

#[test]
fn our_name_with_another_generation_is_a_counted_drop_and_a_name_clash() {
    let mut f = Fixture::new();
    for generation in [OWN_GENERATION - 1, OWN_GENERATION + 1] {
        let clash = hb("ha", "node-a", generation, 1);
        assert!(f.m.is_name_clash(&clash));
        assert!(f.deliver("ring0", clash, 0).is_empty());
    }
    let echo = hb("ha", "node-a", OWN_GENERATION, 2);
    assert!(!f.m.is_name_clash(&echo));
    assert!(!f.m.is_name_clash(&hb("ha", "node-b", OWN_GENERATION + 1, 3)));
    assert!(!f.m.is_name_clash(&hb("other", "node-a", OWN_GENERATION + 1, 3)));
    f.deliver("ring0", echo, 0);
    let status = f.m.status(f.at(0));
    let ring0 = status.link("ring0").unwrap();
    assert_eq!(ring0.dropped.from_self, 2);
    assert_eq!(ring0.dropped.total(), 2);
    assert_eq!(ring0.own_echoes, 1);
    assert_eq!(status.liveness, PeerLiveness::Waiting);
}

#[test]
fn echoes_do_not_disturb_a_live_peer_or_its_link_timers() {
    let mut f = Fixture::new();
    f.steady(1, 0, 500);
    // Only our own echoes keep arriving on both links: the peer must still die after deadtime.
    let mut events = Vec::new();
    for ms in (600..=1_600).step_by(KEEPALIVE as usize) {
        events.extend(f.deliver("ring0", hb("ha", "node-a", OWN_GENERATION, ms), ms));
        events.extend(f.deliver("ring1", hb("ha", "node-a", OWN_GENERATION, ms), ms));
        events.extend(f.tick(ms));
    }
    assert_eq!(
        events,
        [LinkDown("ring0".into()), LinkDown("ring1".into()), PeerDead]
    );
    let status = f.m.status(f.at(1_600));
    assert_eq!(status.link("ring0").unwrap().dropped.total(), 0);
    assert_eq!(status.link("ring0").unwrap().own_echoes, 11);
}

#[test]
fn without_a_known_own_generation_our_name_is_always_a_drop() {
    let params = MembershipParams {
        keepalive: Duration::from_millis(KEEPALIVE),
        warntime: Duration::from_millis(WARNTIME),
        deadtime: Duration::from_millis(DEADTIME),
        initdead: Duration::from_millis(INITDEAD),
        links: vec!["ring0".into()],
    };
    let t0 = Instant::now();
    let mut m = Membership::new(params, "ha", "node-a", "node-b", t0);
    let own = hb("ha", "node-a", OWN_GENERATION, 1);
    assert!(m.is_name_clash(&own));
    m.step(MembershipInput::Packet { link: "ring0".into(), from: own, at: t0 });
    let status = m.status(t0);
    assert_eq!(status.link("ring0").unwrap().dropped.from_self, 1);
    assert_eq!(status.link("ring0").unwrap().own_echoes, 0);
}

fn params_with(links: &[&str], deadtime_ms: u64) -> MembershipParams {
    let p = MembershipParams {
        keepalive: Duration::from_millis(KEEPALIVE),
        warntime: Duration::from_millis(WARNTIME),
        deadtime: Duration::from_millis(deadtime_ms),
        initdead: Duration::from_millis(INITDEAD.max(deadtime_ms)),
        links: links.iter().map(|l| l.to_string()).collect(),
    };
    p.validate().unwrap();
    p
}

#[test]
fn live_link_change_keeps_kept_links_and_adds_silent_ones() {
    let mut f = Fixture::new();
    f.steady(1, 0, 1_000);
    let before = f.m.status(f.at(1_000)).link("ring0").unwrap().packets_ok;
    // ring1 goes away, ring2 comes: ring0 keeps its state and counters, ring1 is reported down.
    let ev = f.m.reconfigure(params_with(&["ring0", "ring2"], DEADTIME), &[], f.at(1_050));
    assert_eq!(ev, [LinkDown("ring1".into())]);
    let st = f.m.status(f.at(1_050));
    assert_eq!(st.links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["ring0", "ring2"]);
    assert!(st.link("ring0").unwrap().up && st.link("ring0").unwrap().packets_ok == before);
    assert!(!st.link("ring2").unwrap().up && st.link("ring2").unwrap().last_heard_ago.is_none());
    assert!(st.peer_alive());
    // Packets on the new link bring it up; packets on the removed one are ignored.
    assert_eq!(f.packet("ring2", 1, 1_100, 1_100), [LinkUp("ring2".into())]);
    assert!(f.packet("ring1", 1, 1_101, 1_101).is_empty());
}

#[test]
fn relinking_every_link_gives_the_peer_initdead_of_grace() {
    let mut f = Fixture::new();
    f.steady(1, 0, 1_000);
    // Both links re-addressed at 1000 (the peer is adjusted later): both reset, reported down.
    let ev = f.m.reconfigure(params_with(&["ring0", "ring1"], DEADTIME), &["ring0".into(), "ring1".into()], f.at(1_000));
    assert_eq!(ev, [LinkDown("ring0".into()), LinkDown("ring1".into())]);
    // No link is up, yet the peer is not dead within the grace (initdead from the change), though
    // the silence is longer than deadtime...
    assert!(f.tick(2_500).is_empty());
    assert!(f.m.status(f.at(2_500)).peer_alive());
    // ...the peer adjusted in time: heard again, alive all along.
    assert_eq!(f.packet("ring0", 1, 2_600, 2_600), [LinkUp("ring0".into())]);
    assert!(f.tick(3_500).is_empty());

    // A second change the peer never follows: dead once the grace is over.
    let mut g = Fixture::new();
    g.steady(1, 0, 1_000);
    g.m.reconfigure(params_with(&["ring0", "ring1"], DEADTIME), &["ring0".into(), "ring1".into()], g.at(1_000));
    assert!(g.tick(2_999).is_empty());
    assert_eq!(g.tick(3_000), [PeerDead]);
}

#[test]
fn live_timer_change_applies_at_the_next_tick() {
    let mut f = Fixture::new();
    f.steady(1, 0, 1_000);
    // deadtime 1000 -> 3000 at 1500: the silence since 1000 is now within deadtime.
    assert!(f.m.reconfigure(params_with(&["ring0", "ring1"], 3_000), &[], f.at(1_500)).is_empty());
    assert!(f.tick(2_500).is_empty(), "the old deadtime no longer applies");
    assert_eq!(f.tick(4_000), [LinkDown("ring0".into()), LinkDown("ring1".into()), PeerDead]);
}
