//! ALUA through the public ScsiTarget entry point: the access gate over every command of the table
//! in every state (nothing reaches the backend through a non-active port), REPORT TARGET PORT GROUPS
//! bytes, VPD 0x83's group, and the 2A/06 unit attention's delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::alua::{AccessState, Alua, PortGroupDef};
use super::opcodes::{COMMANDS, CommandInfo, Handler as H, op};
use super::sense::asc;
use super::tests::{
    Harness, assert_good, assert_sense, clear_ua, harness, harness_on, identity, nexus, run,
};
use super::*;
use crate::backend::{BackendError, BlockBackend, BoxFut, Extent, MemBackend};

/// A MemBackend that counts every data-path call (read, write, flush, unmap, LBA status).
struct CountingBackend {
    inner: Arc<MemBackend>,
    calls: AtomicUsize,
}

impl CountingBackend {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl BlockBackend for CountingBackend {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, offset: u64, len: u32) -> BoxFut<'_, Result<Bytes, BackendError>> {
        self.count();
        self.inner.read(offset, len)
    }
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFut<'_, Result<(), BackendError>> {
        self.count();
        self.inner.write(offset, data, fua)
    }
    fn flush(&self) -> BoxFut<'_, Result<(), BackendError>> {
        self.count();
        self.inner.flush()
    }
    fn unmap(&self, offset: u64, len: u64) -> BoxFut<'_, Result<(), BackendError>> {
        self.count();
        self.inner.unmap(offset, len)
    }
    fn supports_unmap(&self) -> bool {
        self.inner.supports_unmap()
    }
    fn lba_status(&self, offset: u64, len: u64) -> BoxFut<'_, Result<Vec<Extent>, BackendError>> {
        self.count();
        self.inner.lba_status(offset, len)
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

fn group(id: u16, ports: &[u16], preferred: bool) -> PortGroupDef {
    PortGroupDef {
        id,
        relative_ports: ports.to_vec(),
        preferred,
    }
}

/// Nexus a arrives through relative port 1 (group 1), b through port 2 (group 2).
fn two_node_alua() -> Arc<Alua> {
    Alua::new(
        vec![group(1, &[1], true), group(2, &[2], false)],
        AccessState::ActiveOptimized,
    )
}

fn on_port(n: &ItNexus, port: u16) -> ItNexus {
    ItNexus {
        tpgt: port,
        relative_port: port,
        ..n.clone()
    }
}

/// A command of `info` that, through an active port, does real work: one block at LBA 0 for the
/// block commands (with the Data-Out it implies), generous allocation lengths otherwise.
fn sample(info: &CommandInfo) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![0u8; info.usage.len()];
    c[0] = info.opcode;
    if let Some(sa) = info.service_action {
        c[1] = sa as u8;
    }
    match (info.handler, c.len()) {
        (H::CompareAndWrite, _) => c[13] = 1,
        (H::Read | H::Write | H::WriteAndVerify | H::Verify | H::PreFetch, 6) => c[4] = 1,
        (
            H::Read
            | H::Write
            | H::WriteAndVerify
            | H::Verify
            | H::PreFetch
            | H::WriteSame
            | H::OrWrite
            | H::SynchronizeCache,
            n,
        ) => match n {
            10 => c[7..9].copy_from_slice(&1u16.to_be_bytes()),
            12 => c[6..10].copy_from_slice(&1u32.to_be_bytes()),
            _ => c[10..14].copy_from_slice(&1u32.to_be_bytes()),
        },
        (H::Inquiry, _) => c[4] = 0xFF,
        (H::RequestSense | H::ModeSense, 6) => c[4] = 0xFF,
        (H::Unmap, _) => c[8] = 24,
        (_, 10) => c[8] = 0xFF,
        (_, 12) => c[9] = 0xFF,
        (_, 16) => c[13] = 0xFF,
        _ => {}
    }
    let data = match info.handler {
        H::Unmap => {
            let mut p = vec![0, 22, 0, 16, 0, 0, 0, 0];
            p.extend_from_slice(&0u64.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
            p
        }
        _ => vec![0u8; cdb::data_out_len_with_block_size(&c, 512).unwrap_or(0) as usize],
    };
    (c, data)
}

fn counting_harness() -> (Harness, Arc<CountingBackend>) {
    let mem = Arc::new(MemBackend::new(tests::BLOCKS * 512));
    let counting = Arc::new(CountingBackend {
        inner: Arc::clone(&mem),
        calls: AtomicUsize::new(0),
    });
    let h = harness_on(
        mem,
        counting.clone(),
        512,
        true,
        Arc::new(MemPrStore::new()),
    );
    (h, counting)
}

/// Every command of the table, through a port in every non-active state: refused with NOT READY
/// and the state's code unless allow-listed, and never a backend call either way. Through an active
/// port the same commands pass the gate and the block commands reach the backend (so the counter
/// would see a leak).
#[tokio::test]
async fn gate_over_every_command_in_every_state() {
    for state in [
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
        AccessState::ActiveOptimized,
        AccessState::ActiveNonOptimized,
    ] {
        let (h, backend) = counting_harness();
        let alua = two_node_alua();
        h.target.set_alua(Arc::clone(&alua));
        alua.set_states(&[(1, state)]);
        clear_ua(&h.lu, &h.a);
        for info in COMMANDS {
            let before = backend.calls();
            let (c, data) = sample(info);
            let r = run(&h, &h.a, &c, &data).await;
            let what = format!(
                "{state:?} {:02x}/{:?} {:?}",
                info.opcode, info.service_action, r
            );
            if state.is_active() {
                assert_ne!(r.sense_code().map(|s| (s.0, s.1)), Some((2, 4)), "{what}");
                if matches!(
                    info.handler,
                    H::Read | H::Write | H::WriteAndVerify | H::WriteSame
                ) {
                    assert_good(&r);
                    assert!(
                        backend.calls() > before,
                        "{what}: the backend was not reached"
                    );
                }
            } else if state.allows(info.handler) {
                assert_ne!(r.sense_code().map(|s| (s.0, s.1)), Some((2, 4)), "{what}");
            } else {
                let code = state.not_ready_code().unwrap();
                assert_sense(&r, 2, code.0, code.1);
                assert_eq!(r.data_in.len(), 0, "{what}");
            }
            if !state.is_active() {
                assert_eq!(backend.calls(), 0, "{what}: reached the backend");
            }
            clear_ua(&h.lu, &h.a);
        }
        // A nexus through port 2 (group 2, active/optimized throughout) reads.
        let b2 = on_port(&h.b, 2);
        h.target.nexus_added(&b2);
        clear_ua(&h.lu, &b2);
        let before = backend.calls();
        assert_good(&run(&h, &b2, &tests::read10(0, 1), &[]).await);
        assert!(backend.calls() > before);
    }
}

#[test]
fn allow_lists_keep_every_data_path_command_out() {
    let io = [
        H::TestUnitReady,
        H::Read,
        H::Write,
        H::WriteAndVerify,
        H::Verify,
        H::PreFetch,
        H::SynchronizeCache,
        H::WriteSame,
        H::Unmap,
        H::CompareAndWrite,
        H::OrWrite,
        H::ExtendedCopy,
        H::ReceiveCopyResults,
        H::GetLbaStatus,
        H::Reserve,
        H::Release,
        H::StartStopUnit,
        H::PreventAllow,
        H::ReportSupportedOpcodes,
    ];
    for state in [
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
    ] {
        for h in io {
            assert!(!state.allows(h), "{state:?} must refuse {h:?}");
        }
        for h in [
            H::Inquiry,
            H::ReportLuns,
            H::ReportTargetPortGroups,
            H::RequestSense,
        ] {
            assert!(state.allows(h), "{state:?} must serve {h:?}");
        }
    }
    for h in [H::ModeSense, H::ModeSelect, H::PrIn, H::PrOut] {
        assert!(AccessState::Standby.allows(h));
        assert!(!AccessState::Unavailable.allows(h));
        assert!(!AccessState::Transitioning.allows(h));
    }
}

/// A pending unit attention is reported before the ALUA refusal; REQUEST SENSE then reports the
/// port's NOT READY condition.
#[tokio::test]
async fn unit_attention_first_then_not_ready() {
    let h = harness(false);
    let b2 = on_port(&h.b, 2);
    h.target.nexus_added(&b2);
    clear_ua(&h.lu, &b2);
    let alua = two_node_alua();
    h.target.set_alua(Arc::clone(&alua));
    assert!(alua.set_states(&[(1, AccessState::Standby)]));
    let read = tests::read10(0, 1);
    assert_sense(&run(&h, &h.a, &read, &[]).await, 6, 0x2A, 0x06);
    assert_sense(&run(&h, &h.a, &read, &[]).await, 2, 0x04, 0x0B);
    let tur = [op::TEST_UNIT_READY, 0, 0, 0, 0, 0];
    assert_sense(&run(&h, &h.a, &tur, &[]).await, 2, 0x04, 0x0B);
    let r = run(&h, &h.a, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]).await;
    assert_good(&r);
    assert_eq!(
        (r.data_in[2], r.data_in[12], r.data_in[13]),
        (2, 0x04, 0x0B)
    );
    alua.set_states(&[(1, AccessState::Transitioning)]);
    clear_ua(&h.lu, &h.a);
    let r = run(&h, &h.a, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]).await;
    assert_eq!(
        (r.data_in[2], r.data_in[12], r.data_in[13]),
        (2, 0x04, 0x0A)
    );
    // Through the active port: its own 2A/06 once, then NO SENSE.
    assert_sense(&run(&h, &b2, &tur, &[]).await, 6, 0x2A, 0x06);
    assert_good(&run(&h, &b2, &tur, &[]).await);
    let r = run(&h, &b2, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]).await;
    assert_eq!((r.data_in[2], r.data_in[12]), (0, 0));
}

fn rtpg(extended: bool) -> Vec<u8> {
    vec![
        op::MAINTENANCE_IN,
        if extended { 0x2A } else { 0x0A },
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
    ]
}

#[tokio::test]
async fn report_target_port_groups_two_groups() {
    let h = harness(false);
    let alua = Alua::new(
        vec![group(1, &[1], true), group(2, &[2], false)],
        AccessState::Standby,
    );
    h.target.set_alua(Arc::clone(&alua));
    alua.set_states(&[(1, AccessState::ActiveOptimized)]);
    clear_ua(&h.lu, &h.b);
    let g1 = [0x80, 0x8F, 0, 1, 0, 0x02, 0, 1, 0, 0, 0, 1];
    let g2 = [0x02, 0x8F, 0, 2, 0, 0x00, 0, 1, 0, 0, 0, 2];
    let r = run(&h, &h.b, &rtpg(false), &[]).await;
    assert_good(&r);
    assert_eq!(&r.data_in[..], &[&[0, 0, 0, 24][..], &g1, &g2].concat()[..]);
    let r = run(&h, &h.b, &rtpg(true), &[]).await;
    assert_good(&r);
    let header = [0, 0, 0, 28, 0x10, 10, 0, 0];
    assert_eq!(&r.data_in[..], &[&header[..], &g1, &g2].concat()[..]);
    // Allocation length truncates.
    let mut short = rtpg(false);
    short[8] = 0;
    short[9] = 6;
    assert_eq!(
        &run(&h, &h.b, &short, &[]).await.data_in[..],
        &[0, 0, 0, 24, 0x80, 0x8F]
    );
}

#[tokio::test]
async fn report_target_port_groups_three_groups() {
    let h = harness(false);
    let alua = Alua::new(
        vec![
            group(1, &[1], false),
            group(2, &[2], true),
            group(7, &[3, 4], false),
        ],
        AccessState::ActiveOptimized,
    );
    h.target.set_alua(Arc::clone(&alua));
    alua.set_states(&[
        (1, AccessState::ActiveNonOptimized),
        (7, AccessState::Unavailable),
    ]);
    // Served through a Standby-free port and through an Unavailable one alike.
    let g1 = [0x01, 0x8F, 0, 1, 0, 0x02, 0, 1, 0, 0, 0, 1];
    let g2 = [0x80, 0x8F, 0, 2, 0, 0x00, 0, 1, 0, 0, 0, 2];
    let g7 = [0x03, 0x8F, 0, 7, 0, 0x02, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
    let c = on_port(&h.a, 3);
    h.target.nexus_added(&c);
    for n in [&h.a, &c] {
        clear_ua(&h.lu, n);
        let r = run(&h, n, &rtpg(false), &[]).await;
        assert_good(&r);
        assert_eq!(
            &r.data_in[..],
            &[&[0, 0, 0, 40][..], &g1, &g2, &g7].concat()[..]
        );
        let r = run(&h, n, &rtpg(true), &[]).await;
        assert_good(&r);
        let header = [0, 0, 0, 44, 0x10, 10, 0, 0];
        assert_eq!(&r.data_in[..], &[&header[..], &g1, &g2, &g7].concat()[..]);
    }
    alua.set_states(&[(7, AccessState::Transitioning)]);
    clear_ua(&h.lu, &c);
    let r = run(&h, &c, &rtpg(false), &[]).await;
    assert_eq!(r.data_in[28], 0x0F, "transitioning");
}

/// The TARGET PORT GROUP designator (type 5) of VPD 0x83.
async fn vpd83_group(h: &Harness, n: &ItNexus) -> u16 {
    let r = run(h, n, &[op::INQUIRY, 1, 0x83, 1, 0, 0], &[]).await;
    assert_good(&r);
    let d = &r.data_in[4..];
    let mut pos = 0;
    while pos + 4 <= d.len() {
        let len = usize::from(d[pos + 3]);
        if d[pos + 1] & 0x3F == 0x15 {
            return u16::from_be_bytes([d[pos + 6], d[pos + 7]]);
        }
        pos += 4 + len;
    }
    panic!("no target port group designator");
}

#[tokio::test]
async fn vpd83_names_the_group_of_the_nexus_port() {
    let h = harness(false);
    assert_eq!(identity(false).target_port_group, 1);
    assert_eq!(
        vpd83_group(&h, &h.a).await,
        1,
        "no ALUA: the configured group"
    );
    let alua = Alua::new(
        vec![group(10, &[1], true), group(20, &[2], false)],
        AccessState::ActiveOptimized,
    );
    h.target.set_alua(alua);
    let b2 = on_port(&h.b, 2);
    h.target.nexus_added(&b2);
    let orphan = on_port(&h.b, 9);
    h.target.nexus_added(&orphan);
    assert_eq!(vpd83_group(&h, &h.a).await, 10);
    assert_eq!(vpd83_group(&h, &b2).await, 20);
    assert_eq!(vpd83_group(&h, &orphan).await, 1, "a port in no group");
    // A port in no group never serves I/O.
    clear_ua(&h.lu, &orphan);
    assert_sense(
        &run(&h, &orphan, &tests::read10(0, 1), &[]).await,
        2,
        0x04,
        0x0C,
    );
}

fn lu() -> Arc<LogicalUnit> {
    let backend = Arc::new(MemBackend::new(tests::BLOCKS * 512));
    Arc::new(LogicalUnit::new(identity(false), backend, 512, Arc::new(MemPrStore::new())).unwrap())
}

fn target(name: &str) -> (Arc<ScsiTarget>, Vec<Arc<LogicalUnit>>) {
    let lus = vec![lu(), lu()];
    let luns: BTreeMap<u64, Arc<LogicalUnit>> = lus
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, Arc::clone(l)))
        .collect();
    (Arc::new(ScsiTarget::new(name.into(), luns)), lus)
}

fn count_of(lu: &LogicalUnit, n: &ItNexus, code: asc::Code) -> usize {
    lu.pending_unit_attentions(n)
        .iter()
        .filter(|c| **c == code)
        .count()
}

/// 2A/06 reaches every nexus logged in at the change, once, on every LU of every target sharing
/// the Alua; not a nexus that logs in later, not on a no-op change, not from an Alua replaced since.
#[test]
fn access_state_change_unit_attention() {
    let changed = asc::ASYMMETRIC_ACCESS_STATE_CHANGED;
    let alua = two_node_alua();
    let (t1, lus1) = target("iqn.t1");
    let (t2, lus2) = target("iqn.t2");
    t1.set_alua(Arc::clone(&alua));
    t2.set_alua(Arc::clone(&alua));
    let a = nexus("iqn.init-a", 1);
    let b = on_port(&nexus("iqn.init-b", 2), 2);
    for t in [&t1, &t2] {
        t.nexus_added(&a);
        t.nexus_added(&b);
    }
    assert!(
        !alua.set_states(&[(1, AccessState::ActiveOptimized)]),
        "no change"
    );
    for lu in lus1.iter().chain(&lus2) {
        assert_eq!(count_of(lu, &a, changed), 0);
    }
    assert!(alua.set_states(&[(1, AccessState::Standby), (2, AccessState::ActiveOptimized)]));
    assert!(!alua.set_states(&[(1, AccessState::Standby)]));
    let late = nexus("iqn.init-late", 3);
    t1.nexus_added(&late);
    for lu in lus1.iter().chain(&lus2) {
        for n in [&a, &b] {
            assert_eq!(count_of(lu, n, changed), 1, "{n:?}");
            assert_eq!(
                lu.pending_unit_attentions(n),
                vec![asc::POWER_ON_RESET, changed]
            );
        }
        assert_eq!(count_of(lu, &late, changed), 0);
    }
    assert_eq!(
        lus1[0].pending_unit_attentions(&late),
        vec![asc::POWER_ON_RESET]
    );
    // Delivered (taken) once, then gone; a second change queues it again.
    while lus1[0].ua.take(&a).is_some() {}
    alua.set_states(&[(1, AccessState::Unavailable)]);
    assert_eq!(lus1[0].pending_unit_attentions(&a), vec![changed]);
    assert_eq!(
        count_of(&lus1[0], &late, changed),
        1,
        "logged in before this change"
    );
    // t2 moves to another Alua: the old one's changes no longer reach it.
    let other = two_node_alua();
    t2.set_alua(Arc::clone(&other));
    while lus2[1].ua.take(&a).is_some() {}
    alua.set_states(&[(1, AccessState::ActiveOptimized)]);
    assert!(lus2[1].pending_unit_attentions(&a).is_empty());
    other.set_states(&[(2, AccessState::Standby)]);
    assert_eq!(lus2[1].pending_unit_attentions(&a), vec![changed]);
    // A dropped target is simply skipped.
    drop(t1);
    alua.set_states(&[(1, AccessState::Standby)]);
}
