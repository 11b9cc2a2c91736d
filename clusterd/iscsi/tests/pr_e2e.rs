//! Persistent reservations end to end over TCP: two sessions of one initiator name with different
//! ISIDs are two registrants, and PREEMPT AND ABORT from one fences the other's write that is held in a
//! slow backend: the write gets no response, the PERSISTENT RESERVE OUT answers GOOD only after the
//! write left the backend, and the fenced session then meets its unit attentions and RESERVATION
//! CONFLICT (what Pacemaker's fence_scsi relies on).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use iscsi_target::backend::{BackendError, BlockBackend, BoxFut, Extent, MemBackend};
use iscsi_target::pdu::*;
use tokio::sync::Semaphore;

/// Holds every write until the test releases it.
struct GatedBackend {
    inner: MemBackend,
    writes_in: AtomicUsize,
    release: Semaphore,
    landed: AtomicUsize,
}

impl BlockBackend for GatedBackend {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, offset: u64, len: u32) -> BoxFut<'_, Result<Bytes, BackendError>> {
        self.inner.read(offset, len)
    }
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFut<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.writes_in.fetch_add(1, Ordering::SeqCst);
            self.release
                .acquire()
                .await
                .map_err(|_| BackendError::NotReady("closed".into()))?
                .forget();
            let r = self.inner.write(offset, data, fua).await;
            self.landed.fetch_add(1, Ordering::SeqCst);
            r
        })
    }
    fn flush(&self) -> BoxFut<'_, Result<(), BackendError>> {
        self.inner.flush()
    }
    fn unmap(&self, offset: u64, len: u64) -> BoxFut<'_, Result<(), BackendError>> {
        self.inner.unmap(offset, len)
    }
    fn supports_unmap(&self) -> bool {
        false
    }
    fn lba_status(&self, offset: u64, len: u64) -> BoxFut<'_, Result<Vec<Extent>, BackendError>> {
        self.inner.lba_status(offset, len)
    }
    fn describe(&self) -> String {
        "gated".into()
    }
}

const PROUT: u8 = 0x5F;
const REGISTER: u8 = 0;
const RESERVE: u8 = 1;
const PREEMPT_AND_ABORT: u8 = 5;
const WERO: u8 = 5;

fn prout_cdb(sa: u8, pr_type: u8) -> Vec<u8> {
    vec![PROUT, sa, pr_type, 0, 0, 0, 0, 0, 24, 0]
}

fn prout_params(key: u64, sark: u64) -> Vec<u8> {
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sark.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p
}

async fn prout(i: &mut Initiator, sa: u8, pr_type: u8, key: u64, sark: u64) -> ScsiResult {
    let p = prout_params(key, sark);
    i.scsi(&prout_cdb(sa, pr_type), 24, &p, 24, 0).await
}

async fn session(addr: std::net::SocketAddr, isid_last: u8) -> Initiator {
    let mut i = Initiator::connect(addr, isid_last).await;
    let (r, _) = i
        .login_normal(&[("ImmediateData", "Yes"), ("InitialR2T", "No")])
        .await;
    assert_eq!(r.status_class, 0);
    i.clear_unit_attention().await;
    i
}

/// Sends a one-block WRITE(10) with immediate data and does not wait for its answer.
async fn send_write(i: &mut Initiator, lba: u32) -> u32 {
    let itt = i.next_itt();
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&write10(lba, 1));
    let cmd = ScsiCommandPdu {
        final_bit: true,
        write: true,
        task_attr: 1,
        lun: 0,
        itt,
        expected_data_len: 512,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        cdb,
        ..ScsiCommandPdu::default()
    };
    i.cmd_sn = i.cmd_sn.wrapping_add(1);
    i.send(&Pdu::ScsiCommand(cmd), Bytes::from(vec![0xEE; 512]))
        .await;
    itt
}

fn sense(r: &ScsiResult) -> (u8, u8, u8) {
    (r.sense[2] & 0x0F, r.sense[12], r.sense[13])
}

#[tokio::test]
async fn preempt_and_abort_fences_a_write_in_flight() {
    let gate = Arc::new(GatedBackend {
        inner: MemBackend::new(LUN_BYTES),
        writes_in: AtomicUsize::new(0),
        release: Semaphore::new(0),
        landed: AtomicUsize::new(0),
    });
    let srv = start_with(scsi_target_on(TARGET, gate.clone()), |_| {}).await;
    // One initiator name, two ISIDs: two I_T nexuses, two registrants.
    let mut fencer = session(srv.addr, 1).await;
    let mut victim = session(srv.addr, 2).await;
    assert_eq!(prout(&mut fencer, REGISTER, 0, 0, 0xA).await.status, 0);
    assert_eq!(prout(&mut victim, REGISTER, 0, 0, 0xB).await.status, 0);
    assert_eq!(prout(&mut fencer, RESERVE, WERO, 0xA, 0).await.status, 0);
    // A registrant may write under WRITE EXCLUSIVE REGISTRANTS ONLY: the victim's write enters the
    // backend and is held there.
    let held_itt = send_write(&mut victim, 8).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while gate.writes_in.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the write reaches the backend");

    let releaser = {
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(gate.landed.load(Ordering::SeqCst), 0);
            gate.release.add_permits(1);
        })
    };
    let r = prout(&mut fencer, PREEMPT_AND_ABORT, WERO, 0xA, 0xB).await;
    assert_eq!(r.status, 0, "PREEMPT AND ABORT: {:?}", r.sense);
    assert_eq!(
        gate.landed.load(Ordering::SeqCst),
        1,
        "GOOD only after the preempted write left the backend"
    );
    releaser.await.expect("no panic");

    // The aborted write is never answered.
    if let Some(f) = victim.try_recv(Duration::from_millis(300)).await
        && let Pdu::ScsiResponse(resp) = &f.pdu
    {
        assert_ne!(resp.itt, held_itt, "the aborted write was answered");
    }
    // The victim hears REGISTRATIONS PREEMPTED, then COMMANDS CLEARED BY ANOTHER INITIATOR, and its
    // writes conflict from then on; the fencer writes.
    let tur = [0u8; 6];
    let r = victim.scsi(&tur, 0, &[], 0, 0).await;
    assert_eq!(sense(&r), (6, 0x2A, 0x05));
    let r = victim.scsi(&tur, 0, &[], 0, 0).await;
    assert_eq!(sense(&r), (6, 0x2F, 0x00));
    gate.release.add_permits(8);
    let data = vec![0x55; 512];
    let r = victim.scsi(&write10(9, 1), 512, &data, 512, 0).await;
    assert_eq!(r.status, 0x18, "RESERVATION CONFLICT");
    assert_eq!(
        fencer.scsi(&write10(9, 1), 512, &data, 512, 0).await.status,
        0
    );
    srv.shutdown.cancel();
}
