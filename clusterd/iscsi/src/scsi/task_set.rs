//! The running tasks of one logical unit, so PERSISTENT RESERVE OUT with PREEMPT AND ABORT can abort
//! the preempted I_T nexuses' tasks and wait until none of them can still reach the medium.
//!
//! Every command registers itself ([`TaskSet::admit`]) in the same critical section that checks it
//! against the PR state, and a PERSISTENT RESERVE OUT collects its victims in the critical section that
//! installs the new state. So a task is either collected (and aborted and waited for) or checks the new
//! state, never neither. A task's [`TaskClaim`] decides between its response and the abort; when the
//! command stops touching the medium it marks the claim finished, without taking a lock (the set drops
//! finished claims lazily, when a nexus's list would otherwise grow).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::ItNexus;

/// Who answers a running command: the command itself (its response) or an abort (ABORT TASK, a reset,
/// a PREEMPT AND ABORT from another I_T nexus). Exactly one wins, so an initiator never sees both
/// "write GOOD" and "abort: function complete" for the same task (libiscsi's AbortTaskSimpleAsync
/// accepts either outcome, never both), and an aborted task sends nothing.
#[derive(Debug, Default)]
pub struct TaskClaim {
    decision: AtomicU8,
    /// Set once the SCSI layer is done with the command: it no longer touches the medium.
    finished: AtomicBool,
}

const RUNNING: u8 = 0;
const RESPONDING: u8 = 1;
const ABORTED: u8 = 2;

impl TaskClaim {
    /// The command's claim to send its response; false if an abort came first.
    pub fn respond(&self) -> bool {
        self.decision
            .compare_exchange(RUNNING, RESPONDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The abort's claim; false if the command already answered (the task completed).
    pub fn abort(&self) -> bool {
        match self
            .decision
            .compare_exchange(RUNNING, ABORTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == ABORTED,
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.decision.load(Ordering::Acquire) == ABORTED
    }

    pub fn is_finished(&self) -> bool {
        // SeqCst pairs with `AbortWaits`: see `AbortWaits::finished`.
        self.finished.load(Ordering::SeqCst)
    }
}

/// Tasks admitted to a LU, per I_T nexus. Lives under the LU's access lock (next to the PR state).
#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    by_nexus: Vec<(ItNexus, Vec<Arc<TaskClaim>>)>,
}

impl TaskSet {
    /// Records a task that passed the access check.
    pub(crate) fn admit(&mut self, nexus: &ItNexus, claim: &Arc<TaskClaim>) {
        let i = match self.by_nexus.iter().position(|(n, _)| n == nexus) {
            Some(i) => i,
            None => {
                self.by_nexus.push((nexus.clone(), Vec::new()));
                self.by_nexus.len() - 1
            }
        };
        let claims = &mut self.by_nexus[i].1;
        // Prune only when the list is full: amortized O(1) per task, and the list stays within twice
        // the nexus's peak of tasks in flight.
        if claims.len() == claims.capacity() {
            claims.retain(|c| !c.is_finished());
        }
        claims.push(Arc::clone(claim));
    }

    /// Unfinished tasks of the I_T nexuses `victim` selects, except `own` (the PERSISTENT RESERVE OUT
    /// doing the preempting).
    pub(crate) fn running_of(
        &self,
        victim: impl Fn(&ItNexus) -> bool,
        own: &Arc<TaskClaim>,
    ) -> Vec<(ItNexus, Arc<TaskClaim>)> {
        self.by_nexus
            .iter()
            .filter(|(n, _)| victim(n))
            .flat_map(|(n, claims)| {
                claims
                    .iter()
                    .filter(|c| !c.is_finished() && !Arc::ptr_eq(c, own))
                    .map(move |c| (n.clone(), Arc::clone(c)))
            })
            .collect()
    }

    /// Drops a nexus that logged out (its session has waited for its tasks).
    pub(crate) fn forget(&mut self, nexus: &ItNexus) {
        self.by_nexus.retain_mut(|(n, claims)| {
            if n == nexus {
                claims.retain(|c| !c.is_finished());
            }
            !claims.is_empty() || n != nexus
        });
    }
}

/// Lets a PREEMPT AND ABORT wait for the tasks it aborted without making every command pay for it:
/// a finishing task only reads a counter, and wakes waiters only while someone waits.
#[derive(Debug, Default)]
pub(crate) struct AbortWaits {
    waiters: AtomicUsize,
    wake: Notify,
}

impl AbortWaits {
    /// Marks `claim` finished and wakes a waiting PREEMPT AND ABORT. The store and the load below and
    /// their mirror images in `wait_finished` are SeqCst: either this task sees the waiter (and wakes
    /// it) or the waiter sees the claim finished.
    pub(crate) fn finished(&self, claim: &TaskClaim) {
        claim.finished.store(true, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
    }

    /// Returns once every claim in `tasks` is finished.
    pub(crate) async fn wait_finished(&self, tasks: &[Arc<TaskClaim>]) {
        if tasks.is_empty() {
            return;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            // Created before the check: a `notify_waiters` after this point completes it.
            let woken = self.wake.notified();
            if tasks.iter().all(|t| t.is_finished()) {
                break;
            }
            woken.await;
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks an admitted task finished when the command is done with the LU, also if its future is
/// dropped mid-way.
pub(crate) struct AdmittedTask<'a> {
    pub(crate) claim: &'a TaskClaim,
    pub(crate) waits: &'a AbortWaits,
}

impl Drop for AdmittedTask<'_> {
    fn drop(&mut self) {
        self.waits.finished(self.claim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nexus(isid: u8) -> ItNexus {
        ItNexus {
            initiator: "iqn.i".into(),
            isid: [0, 0, 0, 0, 0, isid],
            target: "iqn.t".into(),
            tpgt: 1,
            relative_port: 1,
        }
    }

    #[test]
    fn claim_decides_once() {
        let c = TaskClaim::default();
        assert!(c.abort());
        assert!(
            c.abort(),
            "a second abort of an aborted task still reports it aborted"
        );
        assert!(!c.respond());
        let c = TaskClaim::default();
        assert!(c.respond());
        assert!(!c.abort());
        assert!(!c.is_aborted());
    }

    #[test]
    fn set_prunes_finished_claims_and_skips_the_preemptor() {
        let waits = AbortWaits::default();
        let mut set = TaskSet::default();
        let (a, b) = (nexus(1), nexus(2));
        let own = Arc::new(TaskClaim::default());
        set.admit(&b, &own);
        let mut live = Vec::new();
        for i in 0..1000 {
            let c = Arc::new(TaskClaim::default());
            set.admit(&a, &c);
            if i % 100 == 0 {
                live.push(c);
            } else {
                waits.finished(&c);
            }
        }
        let len = set.by_nexus[0].1.len();
        assert!(len < 64, "finished claims are pruned ({len} kept)");
        assert_eq!(set.running_of(|n| n == &a, &own).len(), live.len());
        assert!(set.running_of(|n| n == &b, &own).is_empty());
        for c in &live {
            waits.finished(c);
        }
        set.forget(&a);
        set.forget(&b);
        assert_eq!(set.by_nexus.len(), 1, "b's unfinished task keeps its entry");
    }

    #[tokio::test]
    async fn wait_returns_when_the_last_task_finishes() {
        let waits = Arc::new(AbortWaits::default());
        let tasks: Vec<_> = (0..3).map(|_| Arc::new(TaskClaim::default())).collect();
        let waiter = {
            let (waits, tasks) = (Arc::clone(&waits), tasks.clone());
            tokio::spawn(async move { waits.wait_finished(&tasks).await })
        };
        for t in &tasks {
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            waits.finished(t);
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("no panic");
    }
}
