//! Protocol A on the machine alone: when writes are acknowledged, the lag bound, epochs at the peer,
//! flushes, the handshake check and the promotion guard.

use super::*;
use crate::machine::node::{Action, Input, Node, NodeParams};
use crate::machine::state::{DiskState, Role};
use crate::wire::frame::{Frame, Params};
use bytes::Bytes;

const SIZE: u64 = 64 << 20;
const K4: usize = 4096;

fn opts(max_lag_bytes: u64, on_lag: OnLag) -> AsyncOptions {
    AsyncOptions { max_lag_bytes, max_lag_ms: None, on_lag, allow_failover: false, epoch_flush: true }
}

fn node(protocol: ReplProtocol) -> Node {
    node_with(|p| p.protocol = protocol)
}

fn node_with(tune: impl FnOnce(&mut NodeParams)) -> Node {
    let mut n = super::super::test_support::established_node("node1", "node2", SIZE, None, crate::wire::frame::PROTOCOLS.max, tune);
    n.disk = DiskState::UpToDate;
    n.peer_disk = DiskState::UpToDate;
    n.peer_role = Role::Secondary;
    n.now_ms = 1_000;
    n
}

fn primary(protocol: ReplProtocol) -> Node {
    let mut n = node(protocol);
    n.role = Role::Primary;
    n
}

/// Write `id` at block `block`; returns (disk token, Data frame seqs and flags).
fn write(n: &mut Node, id: u64, block: u64, fua: bool) -> (u64, Vec<(u64, u32)>) {
    let out = n.step(Input::Write { id, offset: block * 4096, data: Bytes::from(vec![id as u8; K4]), fua });
    let token = out.iter().find_map(|a| match a {
        Action::DiskWrite { token, .. } => Some(*token),
        _ => None,
    });
    let sent = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { frame: Frame::Data { seq, flags, .. }, .. } => Some((*seq, *flags)),
            _ => None,
        })
        .collect();
    (token.expect("a local disk write"), sent)
}

fn completed(out: &[Action], id: u64) -> Option<bool> {
    out.iter().find_map(|a| match a {
        Action::Complete { id: i, result } if *i == id => Some(result.is_ok()),
        _ => None,
    })
}

fn disk_ok(n: &mut Node, token: u64) -> Vec<Action> {
    n.step(Input::DiskDone { token, result: Ok(None) })
}

fn ack(n: &mut Node, seq: u64) -> Vec<Action> {
    n.step(Input::Frame { conn: 1, frame: Frame::WriteAck { seq } })
}

#[test]
fn protocol_a_acknowledges_on_the_local_disk_before_the_peer_s_write_ack() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let (t, sent) = write(&mut n, 1, 0, false);
    assert_eq!(sent.len(), 1, "the Data frame goes out with the write");
    assert_eq!(completed(&disk_ok(&mut n, t), 1), Some(true), "acknowledged on the local completion");
    // Still tracked until the peer acknowledges: an overlapping write waits for that.
    assert!(n.writes.get(&1).is_some_and(|w| w.early_acked && w.peer_pending == 1));
    let out = n.step(Input::Write { id: 2, offset: 0, data: Bytes::from(vec![2; K4]), fua: false });
    assert!(!out.iter().any(|a| matches!(a, Action::DiskWrite { .. })), "overlapping write queued");
    let out = ack(&mut n, sent[0].0);
    assert_eq!(completed(&out, 1), None, "no second completion");
    assert!(!n.writes.contains_key(&1) && n.unflushed.len() == 1, "retired into the flush bookkeeping");
    assert!(out.iter().any(|a| matches!(a, Action::DiskWrite { .. })), "the overlapping write starts now");
}

#[test]
fn protocol_c_still_waits_for_the_peer() {
    let mut n = primary(ReplProtocol::C);
    let (t, sent) = write(&mut n, 1, 0, false);
    assert_eq!(completed(&disk_ok(&mut n, t), 1), None);
    assert_eq!(completed(&ack(&mut n, sent[0].0), 1), Some(true));
    assert_eq!(sent[0].1 & DATA_EPOCH, 0);
}

#[test]
fn the_first_write_after_an_early_ack_opens_an_epoch() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let (t1, s1) = write(&mut n, 1, 0, false);
    let (_t2, s2) = write(&mut n, 2, 1, false);
    assert_eq!((s1[0].1 & DATA_EPOCH, s2[0].1 & DATA_EPOCH), (0, 0), "concurrent writes share an epoch");
    disk_ok(&mut n, t1); // write 1 acknowledged early
    let (_t3, s3) = write(&mut n, 3, 2, false);
    let (_t4, s4) = write(&mut n, 4, 3, false);
    assert_eq!(s3[0].1 & DATA_EPOCH, DATA_EPOCH, "issued after an acknowledgement: new epoch");
    assert_eq!(s4[0].1 & DATA_EPOCH, 0);
}

#[test]
fn fua_writes_stay_synchronous() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let (t, sent) = write(&mut n, 1, 0, true);
    assert_eq!(completed(&disk_ok(&mut n, t), 1), None);
    assert_eq!(completed(&ack(&mut n, sent[0].0), 1), Some(true));
}

#[test]
fn lag_bound_wait_degrades_to_acknowledgement_by_the_peer() {
    // Room for two 4 KiB writes unacknowledged.
    let mut n = primary(ReplProtocol::A(opts(2 * K4 as u64, OnLag::Wait)));
    let (t1, _) = write(&mut n, 1, 0, false);
    let (t2, _) = write(&mut n, 2, 1, false);
    let (t3, s3) = write(&mut n, 3, 2, false);
    assert_eq!(completed(&disk_ok(&mut n, t3), 3), None, "12 KiB unacknowledged > 8 KiB: waits for the peer");
    assert_eq!(n.stats.async_lag_waits, 1);
    assert_eq!(completed(&ack(&mut n, s3[0].0), 3), Some(true), "completes on the peer's ack");
    assert_eq!(completed(&disk_ok(&mut n, t1), 1), Some(true), "back under the bound: early again");
    assert_eq!(completed(&disk_ok(&mut n, t2), 2), Some(true));
    // The bound never drops the link with `wait`.
    let (_t4, _) = write(&mut n, 4, 3, false);
    let (_t5, _) = write(&mut n, 5, 4, false);
    n.step(Input::Tick { now_ms: 2_000 });
    assert!(n.peer_receiving());
}

#[test]
fn lag_bound_by_age() {
    let mut n = primary(ReplProtocol::A(AsyncOptions { max_lag_ms: Some(500), ..AsyncOptions::default() }));
    let (_t1, _) = write(&mut n, 1, 0, false);
    n.now_ms = 1_600; // write 1 unacknowledged for 600 ms
    let (t2, _) = write(&mut n, 2, 1, false);
    assert_eq!(completed(&disk_ok(&mut n, t2), 2), None, "the oldest is too old: waits for the peer");
}

#[test]
fn lag_bound_disconnect_drops_the_link_and_marks_the_writes() {
    let mut n = primary(ReplProtocol::A(opts(K4 as u64, OnLag::Disconnect)));
    let (t1, _) = write(&mut n, 1, 0, false);
    let (t2, _) = write(&mut n, 2, 1, false);
    disk_ok(&mut n, t1);
    disk_ok(&mut n, t2);
    assert!(n.peer_receiving());
    let out = n.step(Input::Tick { now_ms: 1_010 });
    assert!(!n.peer_receiving(), "lag 8 KiB > 4 KiB: link dropped");
    assert!(out.iter().any(|a| matches!(a, Action::Close { .. })));
    assert_eq!(completed(&out, 2), Some(true), "the waiting write completes alone");
    assert_eq!(n.bitmap.count(), 2, "both writes the peer never acknowledged are out of sync");
    assert!(n.writes.is_empty());
}

#[test]
fn a_flush_waits_for_early_acknowledged_writes_to_reach_the_peer() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let (t1, s1) = write(&mut n, 1, 0, false);
    disk_ok(&mut n, t1);
    let out = n.step(Input::Flush { id: 9 });
    assert!(!out.iter().any(|a| matches!(a, Action::DiskFlush { .. } | Action::Send { frame: Frame::Flush { .. }, .. })));
    let out = ack(&mut n, s1[0].0);
    assert!(out.iter().any(|a| matches!(a, Action::DiskFlush { .. })), "local flush once the peer has write 1");
    assert!(out.iter().any(|a| matches!(a, Action::Send { frame: Frame::Flush { .. }, .. })), "and the peer's");
}

#[test]
fn the_peer_completes_an_epoch_before_the_next() {
    let mut n = node(ReplProtocol::A(AsyncOptions::default()));
    let data = |i: u8| Bytes::from(vec![i; K4]);
    let f = |seq, offset, flags, d| Input::Frame { conn: 1, frame: Frame::Data { seq, offset, flags, data: d } };
    let tokens = |out: &[Action]| out.iter().filter_map(|a| if let Action::DiskWrite { token, .. } = a { Some(*token) } else { None }).collect::<Vec<_>>();
    let a = tokens(&n.step(f(1, 0, 0, data(1))));
    let b = tokens(&n.step(f(2, 4096, 0, data(2))));
    assert_eq!((a.len(), b.len()), (1, 1), "one epoch: issued together");
    assert!(tokens(&n.step(f(3, 8192, DATA_EPOCH, data(3)))).is_empty(), "next epoch waits");
    assert!(tokens(&n.step(f(4, 12288, 0, data(4)))).is_empty(), "and what came after it");
    let out = disk_ok(&mut n, b[0]);
    assert!(tokens(&out).is_empty() && out.iter().any(|a| matches!(a, Action::Send { frame: Frame::WriteAck { seq: 2 }, .. })));
    let out = disk_ok(&mut n, a[0]);
    assert!(tokens(&out).is_empty(), "epoch complete, but its writes may only be in a volatile cache");
    let flush = out.iter().find_map(|a| if let Action::DiskFlush { token } = a { Some(*token) } else { None });
    let flush = flush.expect("a flush at the epoch boundary");
    let out = disk_ok(&mut n, flush);
    let next = tokens(&out);
    assert_eq!(next.len(), 2, "epoch stable: the held writes go to the disk");
    // The next boundary flushes again; a failed flush is reported and does not stall the link.
    assert!(tokens(&n.step(f(5, 16384, DATA_EPOCH, data(5)))).is_empty());
    disk_ok(&mut n, next[0]);
    let out = disk_ok(&mut n, next[1]);
    let flush = out.iter().find_map(|a| if let Action::DiskFlush { token } = a { Some(*token) } else { None }).expect("second flush");
    let out = n.step(Input::DiskDone { token: flush, result: Err("EIO".into()) });
    assert_eq!(tokens(&out).len(), 1, "the next epoch goes on after a failed flush");
    assert!(out.iter().any(|a| matches!(a, Action::Log { warn: true, msg } if msg.contains("epoch boundary failed"))));
}

#[test]
fn without_epoch_flush_the_next_epoch_follows_the_completion_at_once() {
    let mut n = node(ReplProtocol::A(AsyncOptions { epoch_flush: false, ..AsyncOptions::default() }));
    let data = |i: u8| Bytes::from(vec![i; K4]);
    let f = |seq, offset, flags, d| Input::Frame { conn: 1, frame: Frame::Data { seq, offset, flags, data: d } };
    let tokens = |out: &[Action]| out.iter().filter_map(|a| if let Action::DiskWrite { token, .. } = a { Some(*token) } else { None }).collect::<Vec<_>>();
    let a = tokens(&n.step(f(1, 0, 0, data(1))));
    assert!(tokens(&n.step(f(2, 4096, DATA_EPOCH, data(2)))).is_empty(), "next epoch waits for the disk");
    let out = disk_ok(&mut n, a[0]);
    assert_eq!(tokens(&out).len(), 1, "and only for it");
    assert!(!out.iter().any(|a| matches!(a, Action::DiskFlush { .. })), "no flush with epoch-flush off");
}

#[test]
fn the_handshake_refuses_a_protocol_mismatch_naming_both() {
    let mut n = node(ReplProtocol::A(AsyncOptions::default()));
    if let Some(l) = n.link.as_mut() {
        l.stage = crate::machine::node::Stage::Params;
    }
    let p = Params {
        resource: "r0".into(),
        data_size: SIZE,
        protocol: b'C',
        after_sb_0pri: 0,
        after_sb_1pri: 0,
        after_sb_2pri: 0,
        rr_conflict: 0,
        discard_my_data: false,
        verify_alg: "sha1".into(),
    };
    let out = n.step(Input::Frame { conn: 1, frame: Frame::Params(p) });
    let reason = out.iter().find_map(|a| match a {
        Action::Send { frame: Frame::Abort { reason, .. }, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.expect("aborted");
    assert!(reason.contains("this node uses protocol A") && reason.contains("the peer uses protocol C"), "{reason}");
}

#[test]
fn an_async_secondary_without_its_peer_is_promoted_only_when_allowed() {
    let mut n = node(ReplProtocol::A(AsyncOptions::default()));
    n.link = None;
    n.peer_role = Role::Unknown;
    let e = n.check_primary(false).unwrap_err();
    assert!(e.contains("--force") && e.contains("allow-async-failover"), "{e}");
    assert!(n.check_primary(true).is_ok(), "explicit --force");
    let mut allowed = node(ReplProtocol::A(AsyncOptions { allow_failover: true, ..AsyncOptions::default() }));
    allowed.link = None;
    allowed.peer_role = Role::Unknown;
    assert!(allowed.check_primary(false).is_ok(), "net.allow-async-failover: on");
    // Connected to its (Secondary) peer it has every write: no guard.
    assert!(node(ReplProtocol::A(AsyncOptions::default())).check_primary(false).is_ok());
    // Protocol C: unchanged.
    let mut c = node(ReplProtocol::C);
    c.link = None;
    assert!(c.check_primary(false).is_ok());
}

#[test]
fn adjust_takes_the_lag_bound_live_but_never_switches_protocol() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let mut o = n.live_options();
    o.protocol = ReplProtocol::A(opts(K4 as u64, OnLag::Disconnect));
    n.step(Input::SetOptions(Box::new(o.clone())));
    assert_eq!(n.params().protocol, ReplProtocol::A(opts(K4 as u64, OnLag::Disconnect)));
    o.protocol = ReplProtocol::C;
    n.step(Input::SetOptions(Box::new(o)));
    assert!(n.params().protocol.is_async(), "A -> C is agreed at connect, not switched under I/O");
}

#[test]
fn status_shows_the_protocol_and_the_lag_of_early_acknowledged_writes() {
    let c = primary(ReplProtocol::C).snapshot();
    assert_eq!((c.replication_protocol, c.async_lag), ('C', None), "protocol C has no lag to show");
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    assert_eq!(n.snapshot().replication_protocol, 'A');
    assert_eq!(n.snapshot().async_lag, Some(crate::machine::AsyncLag::default()));
    let (t1, s1) = write(&mut n, 1, 0, false);
    // Sent, not yet on the local disk: not acknowledged, so nothing is at stake yet.
    assert_eq!(n.snapshot().async_lag.map(|l| l.bytes), Some(0));
    disk_ok(&mut n, t1);
    n.now_ms = 1_250;
    let (t2, s2) = write(&mut n, 2, 1, false);
    disk_ok(&mut n, t2);
    n.now_ms = 1_400;
    let lag = n.snapshot().async_lag.expect("protocol A");
    assert_eq!((lag.bytes, lag.writes, lag.oldest_age_ms), (2 * K4 as u64, 2, 400), "{lag:?}");
    ack(&mut n, s1[0].0);
    let lag = n.snapshot().async_lag.expect("protocol A");
    assert_eq!((lag.bytes, lag.writes, lag.oldest_age_ms), (K4 as u64, 1, 150), "the oldest is write 2 now: {lag:?}");
    ack(&mut n, s2[0].0);
    assert_eq!(n.snapshot().async_lag, Some(crate::machine::AsyncLag::default()));
    let s = n.snapshot();
    assert_eq!((s.stats.async_early_acks, s.stats.async_lag_waits), (2, 0));
}

#[test]
fn a_fua_write_is_never_lag() {
    let mut n = primary(ReplProtocol::A(AsyncOptions::default()));
    let (t, _) = write(&mut n, 1, 0, true);
    disk_ok(&mut n, t);
    assert_eq!(n.snapshot().async_lag.map(|l| l.bytes), Some(0), "a FUA write waits for the peer: not acknowledged");
}

#[test]
fn a_secondary_losing_its_a_peer_logs_whether_it_may_be_promoted() {
    let logs = |out: &[Action]| out.iter().filter_map(|a| if let Action::Log { msg, .. } = a { Some(msg.clone()) } else { None }).collect::<Vec<_>>().join("\n");
    let mut n = node(ReplProtocol::A(AsyncOptions::default()));
    n.drop_link("test", true);
    let text = logs(&std::mem::take(&mut n.out));
    assert!(text.contains("not promoted without `haadm primary --force`"), "{text}");
    assert!(n.snapshot().async_promotion_needs_force);
    let mut allowed = node(ReplProtocol::A(AsyncOptions { allow_failover: true, ..AsyncOptions::default() }));
    allowed.drop_link("test", true);
    let text = logs(&std::mem::take(&mut allowed.out));
    assert!(text.contains("may be promoted (net.allow-async-failover: on)"), "{text}");
    assert!(!allowed.snapshot().async_promotion_needs_force);
    let mut c = node(ReplProtocol::C);
    c.drop_link("test", true);
    assert!(!logs(&std::mem::take(&mut c.out)).contains("protocol A"));
}
