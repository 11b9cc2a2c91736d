//! Asymmetric logical unit access (ALUA, SPC-4 §5.16): which target port group may serve I/O.
//!
//! Both HA nodes export the same LUs (same identity) through their own target port group; an
//! [`Alua`] holds the access state of every group and is shared by all targets of a failover group.
//! The cluster daemon changes the states ([`Alua::set_states`], an *implicit* transition: the
//! initiator cannot ask for one, INQUIRY reports TPGS = 01b); the SCSI layer reads them to
//!
//! - answer REPORT TARGET PORT GROUPS (every group, its state, PREF bit and relative ports),
//! - name the nexus's group in VPD 0x83,
//! - gate commands: a port whose group is Standby, Unavailable or Transitioning only serves the
//!   commands on an allow-list ([`STANDBY_ALLOWED`], [`INACCESSIBLE_ALLOWED`]); everything else is
//!   terminated with NOT READY before it is admitted, so no read or write ever reaches the backend
//!   through such a port, whatever the initiator sends.
//!
//! A change queues ASYMMETRIC ACCESS STATE CHANGED (2A/06) for every I_T nexus then logged in to
//! every LU of every target using the `Alua` (SPC-4 §5.16.2.5: after an implicit change, a unit
//! attention for every I_T nexus).

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::ItNexus;
use super::opcodes::Handler;
use super::sense::{Failure, asc, check, key};

/// Primary target port asymmetric access states (SPC-4 §5.16.2.4) this target implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessState {
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    Transitioning,
}

impl AccessState {
    /// ASYMMETRIC ACCESS STATE field value (SPC-4 REPORT TARGET PORT GROUPS).
    pub fn code(self) -> u8 {
        match self {
            AccessState::ActiveOptimized => 0x0,
            AccessState::ActiveNonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xF,
        }
    }

    /// Whether a port in this state serves every command (active/non-optimized serves exactly like
    /// active/optimized; only the preference differs).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AccessState::ActiveOptimized | AccessState::ActiveNonOptimized
        )
    }

    /// NOT READY additional sense code for a command refused in this state (None when active).
    pub fn not_ready_code(self) -> Option<asc::Code> {
        match self {
            AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => None,
            AccessState::Standby => Some(asc::NOT_READY_ALUA_STANDBY),
            AccessState::Unavailable => Some(asc::NOT_READY_ALUA_UNAVAILABLE),
            AccessState::Transitioning => Some(asc::NOT_READY_ALUA_TRANSITION),
        }
    }

    /// Whether a port in this state runs a command with `handler`: an allow-list, so a command
    /// added to the table later is refused through non-active ports until someone decides otherwise.
    pub fn allows(self, handler: Handler) -> bool {
        match self {
            AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => true,
            AccessState::Standby => STANDBY_ALLOWED.contains(&handler),
            AccessState::Unavailable | AccessState::Transitioning => {
                INACCESSIBLE_ALLOWED.contains(&handler)
            }
        }
    }
}

/// What a Standby port serves: SPC-4 §5.16.2.4.4's list as far as this target implements it
/// (INQUIRY, REPORT LUNS, REPORT TARGET PORT GROUPS, REQUEST SENSE, MODE SENSE/SELECT, PERSISTENT
/// RESERVE IN/OUT; LOG SENSE/SELECT, SEND/RECEIVE DIAGNOSTIC and READ/WRITE BUFFER are not
/// implemented at all), plus READ CAPACITY(10)/(16), which SPC-4 permits ("may support other
/// commands") and Linux LIO allows too: sd reads the capacity when it probes a path, and a standby
/// path probed as 0 blocks refuses every I/O after it becomes active ("access beyond end of device")
/// until the host rescans. READ CAPACITY only reads the LU's block count, never the medium.
///
/// Not listed, so refused: TEST UNIT READY (NOT READY with 04/0B is what dm-multipath's `tur`
/// checker takes as a ghost path, and what LIO answers), every READ/WRITE/VERIFY/WRITE SAME/UNMAP/
/// COMPARE AND WRITE/ORWRITE/PRE-FETCH/SYNCHRONIZE CACHE/EXTENDED COPY, GET LBA STATUS, RESERVE/
/// RELEASE(6/10), START STOP UNIT, PREVENT ALLOW, READ DEFECT DATA, RECEIVE COPY RESULTS, REPORT
/// SUPPORTED OPERATION CODES, and anything added to the table later.
pub const STANDBY_ALLOWED: &[Handler] = &[
    Handler::Inquiry,
    Handler::ReportLuns,
    Handler::ReportTargetPortGroups,
    Handler::RequestSense,
    Handler::ModeSense,
    Handler::ModeSelect,
    Handler::PrIn,
    Handler::PrOut,
    Handler::ReadCapacity10,
    Handler::ReadCapacity16,
];

/// What an Unavailable (SPC-4 §5.16.2.4.5) or Transitioning (§5.16.2.6) port serves: INQUIRY,
/// REPORT LUNS, REPORT TARGET PORT GROUPS and REQUEST SENSE (SET TARGET PORT GROUPS and the echo
/// buffer modes of READ/WRITE BUFFER are not implemented).
pub const INACCESSIBLE_ALLOWED: &[Handler] = &[
    Handler::Inquiry,
    Handler::ReportLuns,
    Handler::ReportTargetPortGroups,
    Handler::RequestSense,
];

/// Seconds reported as IMPLICIT TRANSITION TIME in the extended REPORT TARGET PORT GROUPS header:
/// how long an initiator should allow for a group to leave Transitioning. A failover (promote the
/// replica, then switch the groups) takes a few seconds; 10 s leaves margin without making a
/// multipath host wait long on a transition that never ends.
pub const IMPLICIT_TRANSITION_SECS: u8 = 10;

/// SUPPORTED STATES byte of every group: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP (not O_SUP, LBD_SUP):
/// exactly the states [`AccessState`] has.
const SUPPORT_BITS: u8 = 0x80 | 0x08 | 0x04 | 0x02 | 0x01;

/// STATUS CODE 02h: the state was changed by an implicit transition.
const STATUS_IMPLICIT_CHANGE: u8 = 0x02;

/// One target port group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroupDef {
    /// TARGET PORT GROUP identifier (reported in RTPG and VPD 0x83).
    pub id: u16,
    /// Relative target port identifiers of the group's ports.
    pub relative_ports: Vec<u16>,
    /// PREF bit: the group an initiator should prefer when several are active.
    pub preferred: bool,
}

#[derive(Debug, Clone, Copy)]
struct GroupState {
    state: AccessState,
    /// Set once `set_states` changed this group's state (RTPG STATUS CODE 02h).
    changed: bool,
}

/// Told when the states change (a target's shared state, which queues the unit attentions).
pub(super) trait AccessStateListener: Send + Sync {
    fn access_state_changed(&self, alua: &Alua);
}

/// The access states of a set of target port groups, shared by every target that uses them.
pub struct Alua {
    groups: Vec<PortGroupDef>,
    /// Parallel to `groups`.
    states: Mutex<Vec<GroupState>>,
    listeners: Mutex<Vec<Weak<dyn AccessStateListener>>>,
}

/// A poisoned lock only means a panic elsewhere; the data is whole (single assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Alua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alua")
            .field("groups", &self.groups)
            .field("states", &self.states())
            .finish()
    }
}

impl Alua {
    /// Groups as given, every one in `initial`. A group id or relative port listed twice: the first
    /// definition wins (the caller builds these from validated configuration).
    pub fn new(groups: Vec<PortGroupDef>, initial: AccessState) -> Arc<Alua> {
        let states = groups
            .iter()
            .map(|_| GroupState {
                state: initial,
                changed: false,
            })
            .collect();
        Arc::new(Alua {
            groups,
            states: Mutex::new(states),
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// Sets the states of the listed groups (others unchanged; ids that are not defined are
    /// ignored); returns true if anything changed. On a change every I_T nexus of every LU of every
    /// ScsiTarget using this Alua gets UA 2A/06 ASYMMETRIC ACCESS STATE CHANGED (nexuses that log in
    /// later do not). Callable from any thread.
    ///
    /// A command already admitted through a port when it leaves the active states completes; every
    /// command checked after this returns sees the new state.
    pub fn set_states(&self, states: &[(u16, AccessState)]) -> bool {
        let mut changed = false;
        {
            let mut current = lock(&self.states);
            for &(id, state) in states {
                if let Some(i) = self.groups.iter().position(|g| g.id == id)
                    && current[i].state != state
                {
                    current[i] = GroupState {
                        state,
                        changed: true,
                    };
                    changed = true;
                }
            }
        }
        if changed {
            tracing::info!(states = ?self.states(), "ALUA target port group states changed");
            // Listeners are called without our locks held: they take target and LU locks.
            let listeners: Vec<Arc<dyn AccessStateListener>> = {
                let mut l = lock(&self.listeners);
                l.retain(|w| w.strong_count() > 0);
                l.iter().filter_map(Weak::upgrade).collect()
            };
            for listener in listeners {
                listener.access_state_changed(self);
            }
        }
        changed
    }

    /// Every group's state, in definition order.
    pub fn states(&self) -> Vec<(u16, AccessState)> {
        let states = lock(&self.states);
        self.groups
            .iter()
            .zip(states.iter())
            .map(|(g, s)| (g.id, s.state))
            .collect()
    }

    /// The state of the group containing `relative_port`, None if no group has it.
    pub fn state_of_port(&self, relative_port: u16) -> Option<AccessState> {
        let i = self.index_of_port(relative_port)?;
        Some(lock(&self.states)[i].state)
    }

    /// The group definitions.
    pub fn groups(&self) -> &[PortGroupDef] {
        &self.groups
    }

    /// Id of the group containing `relative_port`.
    pub fn group_of_port(&self, relative_port: u16) -> Option<u16> {
        self.index_of_port(relative_port).map(|i| self.groups[i].id)
    }

    fn index_of_port(&self, relative_port: u16) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.relative_ports.contains(&relative_port))
    }

    /// The state a command arriving through `relative_port` is gated by. A port in no group is a
    /// configuration error; it is treated as Unavailable so it can never serve I/O.
    pub(super) fn port_state(&self, relative_port: u16) -> AccessState {
        self.state_of_port(relative_port)
            .unwrap_or(AccessState::Unavailable)
    }

    pub(super) fn subscribe(&self, listener: Weak<dyn AccessStateListener>) {
        let mut l = lock(&self.listeners);
        l.retain(|w| w.strong_count() > 0);
        if !l.iter().any(|w| Weak::ptr_eq(w, &listener)) {
            l.push(listener);
        }
    }

    /// REPORT TARGET PORT GROUPS parameter data (SPC-4 §6.36), before allocation-length truncation:
    /// one descriptor per group in definition order. `extended`: the extended header (format type
    /// 001b) with IMPLICIT TRANSITION TIME. RETURN DATA LENGTH counts every byte after itself (the
    /// extended header's other 4 bytes included), as Linux's scsi_dh_alua and sg_rtpg parse it.
    pub(super) fn report_target_port_groups(&self, extended: bool) -> Vec<u8> {
        let states = lock(&self.states).clone();
        let mut desc = Vec::new();
        for (g, s) in self.groups.iter().zip(states) {
            let pref = if g.preferred { 0x80 } else { 0 };
            desc.push(pref | s.state.code());
            desc.push(SUPPORT_BITS);
            desc.extend_from_slice(&g.id.to_be_bytes());
            desc.push(0); // reserved
            desc.push(if s.changed { STATUS_IMPLICIT_CHANGE } else { 0 });
            desc.push(0); // vendor specific
            // TARGET PORT COUNT is one byte: a group never has more than 255 ports here.
            let ports = &g.relative_ports[..g.relative_ports.len().min(255)];
            desc.push(ports.len() as u8);
            for p in ports {
                desc.extend_from_slice(&[0, 0]);
                desc.extend_from_slice(&p.to_be_bytes());
            }
        }
        let mut d = Vec::with_capacity(desc.len() + 8);
        if extended {
            d.extend_from_slice(&((desc.len() + 4) as u32).to_be_bytes());
            d.extend_from_slice(&[0x10, IMPLICIT_TRANSITION_SECS, 0, 0]);
        } else {
            d.extend_from_slice(&(desc.len() as u32).to_be_bytes());
        }
        d.extend_from_slice(&desc);
        d
    }
}

/// The ALUA access check (SPC-4 §5.16.2.4) for a command with `handler` arriving on `nexus`: Ok
/// without an Alua or through an active port, or for an allowed command; otherwise CHECK CONDITION,
/// NOT READY with the state's additional sense code. Runs after the unit attention check (a pending
/// UA, 2A/06 in particular, is reported first: SAM-5 reports a UA to any command but INQUIRY, REPORT
/// LUNS and REQUEST SENSE, and LIO orders it the same way) and before reservations and the task set.
pub(super) fn check_access(
    alua: Option<&Alua>,
    nexus: &ItNexus,
    handler: Handler,
) -> Result<(), Failure> {
    let Some(alua) = alua else { return Ok(()) };
    let state = alua.port_state(nexus.relative_port);
    if state.allows(handler) {
        return Ok(());
    }
    Err(check(
        key::NOT_READY,
        state
            .not_ready_code()
            .unwrap_or(asc::NOT_READY_ALUA_UNAVAILABLE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_groups() -> Arc<Alua> {
        Alua::new(
            vec![
                PortGroupDef {
                    id: 1,
                    relative_ports: vec![1],
                    preferred: true,
                },
                PortGroupDef {
                    id: 2,
                    relative_ports: vec![2, 3],
                    preferred: false,
                },
            ],
            AccessState::Standby,
        )
    }

    #[test]
    fn set_states_reports_changes_only() {
        let a = two_groups();
        assert_eq!(
            a.states(),
            vec![(1, AccessState::Standby), (2, AccessState::Standby)]
        );
        assert!(a.set_states(&[(1, AccessState::ActiveOptimized)]));
        assert!(
            !a.set_states(&[(1, AccessState::ActiveOptimized)]),
            "no change"
        );
        assert!(
            !a.set_states(&[(9, AccessState::Unavailable)]),
            "unknown id"
        );
        assert!(a.set_states(&[
            (1, AccessState::ActiveOptimized),
            (2, AccessState::Unavailable)
        ]));
        assert_eq!(
            a.states(),
            vec![
                (1, AccessState::ActiveOptimized),
                (2, AccessState::Unavailable)
            ]
        );
        assert_eq!(a.state_of_port(3), Some(AccessState::Unavailable));
        assert_eq!(a.state_of_port(1), Some(AccessState::ActiveOptimized));
        assert_eq!(a.state_of_port(4), None);
        assert_eq!(
            a.port_state(4),
            AccessState::Unavailable,
            "no group: never serves"
        );
        assert_eq!(a.group_of_port(3), Some(2));
    }

    #[test]
    fn set_states_from_many_threads() {
        let a = two_groups();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    let s = if i % 2 == 0 {
                        AccessState::ActiveOptimized
                    } else {
                        AccessState::Standby
                    };
                    for _ in 0..100 {
                        a.set_states(&[(1, s), (2, s)]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = a.states();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn gate_without_alua_allows_everything() {
        let n = ItNexus {
            initiator: "i".into(),
            isid: [0; 6],
            target: "t".into(),
            tpgt: 1,
            relative_port: 1,
        };
        assert!(check_access(None, &n, Handler::Write).is_ok());
        let a = two_groups();
        let err = check_access(Some(&a), &n, Handler::Write).unwrap_err();
        assert_eq!(err.code(), Some(asc::NOT_READY_ALUA_STANDBY));
        assert_eq!(err.sense().unwrap().key, key::NOT_READY);
        a.set_states(&[(1, AccessState::ActiveNonOptimized)]);
        assert!(check_access(Some(&a), &n, Handler::Write).is_ok());
    }
}
