//! Per-LU unit attention queues, one FIFO per I_T nexus (SPC-4 §5.14 / SAM-5 §5.14).
//!
//! A UA is reported once (by the next command that is not INQUIRY, REPORT LUNS or REQUEST SENSE) and
//! then removed. The same condition is never queued twice for a nexus, so a burst of events cannot
//! grow the queue without bound.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use super::ItNexus;
use super::sense::asc;

/// Upper bound on queued conditions per nexus; older ones are dropped first (SPC-4 allows
/// a device server to report fewer UAs when it runs out of room).
const MAX_PENDING: usize = 16;

#[derive(Default)]
struct UaState {
    /// Nexuses currently logged in to this LU's target (for "every I_T nexus" conditions).
    known: HashSet<ItNexus>,
    pending: HashMap<ItNexus, VecDeque<asc::Code>>,
}

#[derive(Default)]
pub struct UnitAttentions {
    state: Mutex<UaState>,
}

impl UnitAttentions {
    fn lock(&self) -> std::sync::MutexGuard<'_, UaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new nexus and queues POWER ON, RESET for it.
    pub fn nexus_added(&self, nexus: &ItNexus) {
        let mut st = self.lock();
        st.known.insert(nexus.clone());
        let q = st.pending.entry(nexus.clone()).or_default();
        q.clear();
        q.push_back(asc::POWER_ON_RESET);
    }

    /// Forgets a nexus and anything queued for it.
    pub fn nexus_removed(&self, nexus: &ItNexus) {
        let mut st = self.lock();
        st.known.remove(nexus);
        st.pending.remove(nexus);
    }

    /// Queues `code` for one nexus.
    pub fn add(&self, nexus: &ItNexus, code: asc::Code) {
        let mut st = self.lock();
        Self::push(&mut st, nexus, code);
    }

    /// Queues `code` for every known nexus except `except` (if given).
    pub fn add_all(&self, except: Option<&ItNexus>, code: asc::Code) {
        let mut st = self.lock();
        let targets: Vec<ItNexus> = st
            .known
            .iter()
            .filter(|n| Some(*n) != except)
            .cloned()
            .collect();
        for n in targets {
            Self::push(&mut st, &n, code);
        }
    }

    /// Queues `code` for every known nexus `select` picks.
    pub fn add_where(&self, select: impl Fn(&ItNexus) -> bool, code: asc::Code) {
        let mut st = self.lock();
        let targets: Vec<ItNexus> = st.known.iter().filter(|n| select(n)).cloned().collect();
        for n in targets {
            Self::push(&mut st, &n, code);
        }
    }

    fn push(st: &mut UaState, nexus: &ItNexus, code: asc::Code) {
        let q = st.pending.entry(nexus.clone()).or_default();
        if q.contains(&code) {
            return;
        }
        if q.len() >= MAX_PENDING {
            q.pop_front();
        }
        q.push_back(code);
    }

    /// Removes and returns the oldest pending condition for `nexus`.
    pub fn take(&self, nexus: &ItNexus) -> Option<asc::Code> {
        let mut st = self.lock();
        let q = st.pending.get_mut(nexus)?;
        let c = q.pop_front();
        if q.is_empty() {
            st.pending.remove(nexus);
        }
        c
    }

    /// Whether anything is pending for `nexus` (used by tests and diagnostics).
    pub fn pending(&self, nexus: &ItNexus) -> Vec<asc::Code> {
        self.lock()
            .pending
            .get(nexus)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every nexus that is currently known.
    pub fn known(&self) -> Vec<ItNexus> {
        self.lock().known.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nexus(i: &str) -> ItNexus {
        ItNexus {
            initiator: i.into(),
            isid: [0; 6],
            target: "iqn.t".into(),
            tpgt: 1,
            relative_port: 1,
        }
    }

    #[test]
    fn queue_semantics() {
        let ua = UnitAttentions::default();
        let (a, b) = (nexus("a"), nexus("b"));
        ua.nexus_added(&a);
        ua.nexus_added(&b);
        ua.add_all(Some(&a), asc::CAPACITY_DATA_CHANGED);
        ua.add_all(Some(&a), asc::CAPACITY_DATA_CHANGED);
        assert_eq!(ua.pending(&a), vec![asc::POWER_ON_RESET]);
        assert_eq!(
            ua.pending(&b),
            vec![asc::POWER_ON_RESET, asc::CAPACITY_DATA_CHANGED]
        );
        assert_eq!(ua.take(&b), Some(asc::POWER_ON_RESET));
        assert_eq!(ua.take(&b), Some(asc::CAPACITY_DATA_CHANGED));
        assert_eq!(ua.take(&b), None);
        for i in 0..40u8 {
            ua.add(&a, (0x2A, i));
        }
        assert_eq!(ua.pending(&a).len(), MAX_PENDING);
        ua.nexus_removed(&a);
        assert_eq!(ua.take(&a), None);
        assert_eq!(ua.known(), vec![b]);
    }
}
