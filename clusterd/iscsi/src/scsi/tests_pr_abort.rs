//! PREEMPT AND ABORT against tasks in flight: a write held in a slow backend is aborted (its claim
//! goes to the abort, so no response is sent), the PERSISTENT RESERVE OUT does not complete before the
//! write has left the backend, later tasks of the preempted nexus meet the new state, and the tasks of
//! other nexuses are neither aborted nor waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use super::reservation::prout_sa;
use super::tests::{Harness, assert_good, clear_ua, harness_on, nexus, write10};
use super::tests_pr::{pr_out, prout};
use super::*;
use crate::backend::{BackendError, BlockBackend, BoxFut, Extent, MemBackend};

/// Holds every write in the backend until the test releases it.
struct GatedBackend {
    inner: Arc<MemBackend>,
    entered: Notify,
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
            self.entered.notify_waiters();
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

fn gated() -> (Harness, Arc<GatedBackend>) {
    let inner = Arc::new(MemBackend::new(super::tests::BLOCKS * 512));
    let gate = Arc::new(GatedBackend {
        inner: Arc::clone(&inner),
        entered: Notify::new(),
        writes_in: AtomicUsize::new(0),
        release: Semaphore::new(0),
        landed: AtomicUsize::new(0),
    });
    let h = harness_on(inner, gate.clone(), 512, false, Arc::new(MemPrStore::new()));
    (h, gate)
}

/// Starts a one-block write from `n` as a task with its own claim.
fn start_write(
    h: &Harness,
    n: &ItNexus,
    lba: u32,
) -> (Arc<TaskClaim>, tokio::task::JoinHandle<ScsiResponse>) {
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&write10(lba, 1));
    let cmd = ScsiCommand {
        lun: 0,
        cdb,
        cdb_len: 10,
        data_out: Bytes::from(vec![0xEE; 512]),
        expected_len: 512,
        task_attr: 0,
        task_tag: 7,
    };
    let claim = Arc::new(TaskClaim::default());
    let (target, nexus, task_claim) = (Arc::clone(&h.target), n.clone(), Arc::clone(&claim));
    let handle = tokio::spawn(async move { target.execute_task(&nexus, cmd, &task_claim).await });
    (claim, handle)
}

async fn until_writes_in(gate: &GatedBackend, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let entered = gate.entered.notified();
            if gate.writes_in.load(Ordering::SeqCst) >= n {
                return;
            }
            entered.await;
        }
    })
    .await
    .expect("the writes reach the backend");
}

#[tokio::test]
async fn preempt_and_abort_waits_for_the_preempted_write() {
    let (h, gate) = gated();
    let c = nexus("iqn.init-c", 3);
    h.target.nexus_added(&c);
    clear_ua(&h.lu, &c);
    // fence_scsi: every node registers, one holds WRITE EXCLUSIVE REGISTRANTS ONLY.
    for (n, k) in [(&h.a, 0xA), (&h.b, 0xB), (&c, 0xC)] {
        assert_good(&pr_out(&h, n, prout_sa::REGISTER, 0, 0, k).await);
    }
    assert_good(&pr_out(&h, &h.a, prout_sa::RESERVE, 5, 0xA, 0).await);
    // b's write and c's write are in the backend.
    let (b_claim, b_write) = start_write(&h, &h.b, 1);
    let (c_claim, c_write) = start_write(&h, &c, 2);
    until_writes_in(&gate, 2).await;

    // a fences b.
    let (cdb, params) = prout(prout_sa::PREEMPT_AND_ABORT, 5, 0xA, 0xB, 0);
    let preempt = {
        let target = Arc::clone(&h.target);
        let a = h.a.clone();
        let mut c16 = [0u8; 16];
        c16[..10].copy_from_slice(&cdb);
        let cmd = ScsiCommand {
            lun: 0,
            cdb: c16,
            cdb_len: 10,
            data_out: Bytes::from(params),
            expected_len: 24,
            task_attr: 0,
            task_tag: 9,
        };
        tokio::spawn(async move { target.execute(&a, cmd).await })
    };
    // The new state is in place (and b's write claimed by the abort) while the PROUT still waits.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !b_claim.is_aborted() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("b's write is aborted");
    assert!(!h.lu.pr_state().is_registered(&h.b));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !preempt.is_finished(),
        "GOOD before the preempted write left the backend"
    );
    assert!(!c_claim.is_aborted(), "c was not preempted");
    // A new write from b meets the unit attentions, then the reservation.
    let r = super::tests::run(&h, &h.b, &write10(3, 1), &[0u8; 512]).await;
    assert_eq!(r.sense_code(), Some((6, 0x2A, 0x05)));
    let r = super::tests::run(&h, &h.b, &write10(3, 1), &[0u8; 512]).await;
    assert_eq!(
        r.sense_code(),
        Some((6, 0x2F, 0x00)),
        "commands cleared by another initiator"
    );
    let r = super::tests::run(&h, &h.b, &write10(3, 1), &[0u8; 512]).await;
    assert_eq!(r.status, STATUS_RESERVATION_CONFLICT);
    assert_eq!(gate.writes_in.load(Ordering::SeqCst), 2);

    // Release the held writes: the PROUT completes once b's has left the backend.
    gate.release.add_permits(2);
    let answer = tokio::time::timeout(Duration::from_secs(5), preempt)
        .await
        .expect("PREEMPT AND ABORT completes")
        .expect("no panic");
    assert_good(&answer);
    assert!(b_claim.is_finished());
    b_write.await.expect("no panic");
    assert!(!b_claim.respond(), "the aborted write sends no response");
    c_write.await.expect("no panic");
    assert!(c_claim.respond(), "c's write answers normally");
    assert!(h.lu.pending_unit_attentions(&h.a).is_empty());
    assert_eq!(gate.landed.load(Ordering::SeqCst), 2);
}

/// The PROUT waits only for the preempted nexuses' tasks: the issuer's own write, still held, is
/// neither aborted nor waited for.
#[tokio::test]
async fn preempt_and_abort_does_not_wait_for_others() {
    let (h, gate) = gated();
    for (n, k) in [(&h.a, 0xA), (&h.b, 0xB)] {
        assert_good(&pr_out(&h, n, prout_sa::REGISTER, 0, 0, k).await);
    }
    let (claim, write) = start_write(&h, &h.a, 1);
    until_writes_in(&gate, 1).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        pr_out(&h, &h.a, prout_sa::PREEMPT_AND_ABORT, 5, 0xA, 0xB),
    )
    .await
    .expect("does not wait for its own nexus's other tasks that were not preempted");
    assert_good(&r);
    assert!(!claim.is_aborted());
    gate.release.add_permits(1);
    write.await.expect("no panic");
    assert!(claim.respond());
}
