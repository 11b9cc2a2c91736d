//! The PERSISTENT RESERVE OUT state machine (SPC-4 §5.13.5–5.13.11) and its execution on a LU.
//!
//! [`apply_prout`] is pure: old state + request → new state, the unit attentions owed (to registrants,
//! resolved to I_T nexuses by the LU, never to the issuer) and the registrants whose tasks a PREEMPT AND
//! ABORT aborts. An error leaves nothing changed. PRgeneration counts every change of registrations
//! (REGISTER*, CLEAR, PREEMPT*, REGISTER AND MOVE), never RESERVE or RELEASE.

use std::sync::Arc;

use bytes::Bytes;

use super::params::{ProutAction, ProutRequest, SpecifiedInitiator, parse_prout};
use super::pr_type;
use super::transport_id::invalid_param;
use crate::scsi::ItNexus;
use crate::scsi::lu::{LogicalUnit, lock};
use crate::scsi::pr_state::{
    InitiatorPort, PrRegistration, PrReservation, PrState, Registrant, TargetPort, TargetPorts,
    encode_pr_state,
};
use crate::scsi::sense::{CmdResult, Failure, asc, check, illegal, invalid_cdb_field, key};
use crate::scsi::task_set::TaskClaim;

/// Offsets in the parameter list, for field pointers.
const SA_KEY_FIELD: usize = 8;
const SPEC_I_PT_FIELD: usize = 20;
const MOVE_RELATIVE_PORT_FIELD: usize = 18;
const MOVE_TRANSPORT_ID_FIELD: usize = 24;

/// What a successful PERSISTENT RESERVE OUT does besides answering GOOD.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProutOutcome {
    /// The new state; None when nothing changed (nothing to save).
    pub state: Option<PrState>,
    /// Unit attentions for every I_T nexus of each registrant, except the issuing one.
    pub unit_attentions: Vec<(Registrant, asc::Code)>,
    /// PREEMPT AND ABORT: the registrants whose tasks are aborted (the issuing command excepted).
    pub abort: Vec<Registrant>,
}

impl ProutOutcome {
    fn changed(state: PrState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }

    fn notify<'a>(&mut self, to: impl IntoIterator<Item = &'a PrRegistration>, code: asc::Code) {
        self.unit_attentions
            .extend(to.into_iter().map(|r| (r.registrant.clone(), code)));
    }
}

/// The PERSISTENT RESERVE OUT state machine. `target_ports` are the LU's target ports (REGISTER AND
/// MOVE names its destination's port by relative port identifier).
pub(crate) fn apply_prout(
    old: &PrState,
    nexus: &ItNexus,
    req: &ProutRequest,
    target_ports: &[TargetPort],
) -> Result<ProutOutcome, Failure> {
    let own = old.registration_index(nexus);
    // Every service action but REGISTER* needs a registered I_T nexus presenting its own key
    // (§6.17.3), checked before anything else about the request.
    let own_with_key = || {
        own.filter(|&i| old.registrations[i].key == req.key)
            .ok_or(Failure::ReservationConflict)
    };
    match &req.action {
        ProutAction::Register {
            ignore_existing_key,
            all_target_ports,
            specify_initiator_ports,
            specified,
        } => {
            let how = Register {
                ignore_existing_key: *ignore_existing_key,
                all_target_ports: *all_target_ports,
                specify_initiator_ports: *specify_initiator_ports,
                specified,
            };
            register(old, nexus, own, req, how)
        }
        ProutAction::Reserve { pr_type } => {
            own_with_key()?;
            reserve(old, nexus, *pr_type)
        }
        ProutAction::Release { pr_type } => {
            own_with_key()?;
            release(old, nexus, *pr_type)
        }
        ProutAction::Clear => {
            own_with_key()?;
            Ok(clear(old))
        }
        ProutAction::Preempt { pr_type, abort } => {
            let own = own_with_key()?;
            preempt(old, nexus, own, req.sa_key, *pr_type, *abort)
        }
        ProutAction::RegisterAndMove {
            destination,
            relative_port,
            unregister,
        } => {
            let own = own_with_key()?;
            let how = Move {
                destination,
                relative_port: *relative_port,
                unregister: *unregister,
            };
            register_and_move(old, nexus, own, req, how, target_ports)
        }
    }
}

struct Register<'a> {
    ignore_existing_key: bool,
    all_target_ports: bool,
    specify_initiator_ports: bool,
    specified: &'a [SpecifiedInitiator],
}

/// REGISTER / REGISTER AND IGNORE EXISTING KEY (§5.13.7, tables "register behaviors"). From a
/// registered I_T nexus it changes or removes the registration that covers the nexus, whatever
/// ALL_TG_PT says (an ALL_TG_PT registration is one registration). From an unregistered one it
/// registers the nexus (all target ports with ALL_TG_PT) and, with SPEC_I_PT, every listed initiator
/// port the same way: all of them or, on any error, none.
fn register(
    old: &PrState,
    nexus: &ItNexus,
    own: Option<usize>,
    req: &ProutRequest,
    how: Register<'_>,
) -> Result<ProutOutcome, Failure> {
    let mut st = old.clone();
    let mut out = ProutOutcome::default();
    match own {
        Some(i) => {
            if !how.ignore_existing_key && req.key != old.registrations[i].key {
                return Err(Failure::ReservationConflict);
            }
            if how.specify_initiator_ports {
                return Err(invalid_param(SPEC_I_PT_FIELD, Some(3)));
            }
            if req.sa_key == 0 {
                unregister(&mut st, i, &mut out);
            } else {
                st.registrations[i].key = req.sa_key;
            }
        }
        None => {
            if !how.ignore_existing_key && req.key != 0 {
                return Err(Failure::ReservationConflict);
            }
            if req.sa_key == 0 {
                // Unregistered and asked to unregister: GOOD, nothing happens (not even APTPL).
                return Ok(ProutOutcome::default());
            }
            let ports = if how.all_target_ports {
                TargetPorts::All
            } else {
                TargetPorts::One(TargetPort::of(nexus))
            };
            let issuer = Registrant {
                initiator: InitiatorPort::of(nexus),
                ports: ports.clone(),
            };
            // ALL_TG_PT acts as if received through every target port: where this initiator port is
            // registered through another one, REGISTER presents key 0 there (a conflict) and REGISTER
            // AND IGNORE EXISTING KEY replaces that registration (a holder stays covered).
            if st
                .registrations
                .iter()
                .any(|r| r.registrant.overlaps(&issuer))
            {
                if !how.ignore_existing_key {
                    return Err(Failure::ReservationConflict);
                }
                st.registrations.retain(|r| !r.registrant.overlaps(&issuer));
            }
            let mut added = vec![issuer];
            for s in how.specified {
                let r = Registrant {
                    initiator: s.port.clone(),
                    ports: ports.clone(),
                };
                // Already registered, or the issuer itself: the list names an I_T nexus twice.
                if added
                    .iter()
                    .chain(st.registrations.iter().map(|r| &r.registrant))
                    .any(|other| other.overlaps(&r))
                {
                    return Err(invalid_param(usize::from(s.offset), None));
                }
                added.push(r);
            }
            st.registrations
                .extend(added.into_iter().map(|registrant| PrRegistration {
                    key: req.sa_key,
                    registrant,
                }));
        }
    }
    st.aptpl = req.aptpl;
    st.generation = st.generation.wrapping_add(1);
    out.state = Some(st);
    Ok(out)
}

/// Removes registration `index` (§5.13.11.3): a single holder covered by it loses the reservation
/// (registrants-only types tell the other registrants RESERVATIONS RELEASED); an all-registrants
/// reservation goes with its last registrant.
fn unregister(st: &mut PrState, index: usize, out: &mut ProutOutcome) {
    let removed = st.registrations.remove(index);
    let Some(res) = &st.reservation else {
        return;
    };
    if res.is_all_registrants() {
        if st.registrations.is_empty() {
            st.reservation = None;
        }
    } else if res
        .holder
        .as_ref()
        .is_some_and(|h| removed.registrant.covers(h))
    {
        let registrants_only =
            !pr_type::is_all_registrants(res.pr_type) && pr_type::admits_registrants(res.pr_type);
        st.reservation = None;
        if registrants_only {
            out.notify(&st.registrations, asc::RESERVATIONS_RELEASED);
        }
    }
}

/// RESERVE (§5.13.9): a new reservation, or a no-op for a holder asking for the same type.
fn reserve(old: &PrState, nexus: &ItNexus, pr_type: u8) -> Result<ProutOutcome, Failure> {
    match &old.reservation {
        None => {
            let mut st = old.clone();
            st.reservation = Some(PrReservation::new(pr_type, nexus));
            Ok(ProutOutcome::changed(st))
        }
        Some(res) if old.is_holder(nexus) && res.pr_type == pr_type => Ok(ProutOutcome::default()),
        Some(_) => Err(Failure::ReservationConflict),
    }
}

/// RELEASE (§5.13.11.2): only a holder releases, with the reservation's own type; registrants-only
/// and all-registrants types tell the other registrants RESERVATIONS RELEASED.
fn release(old: &PrState, nexus: &ItNexus, pr_type: u8) -> Result<ProutOutcome, Failure> {
    let Some(res) = &old.reservation else {
        return Ok(ProutOutcome::default());
    };
    if !old.is_holder(nexus) {
        return Ok(ProutOutcome::default());
    }
    if res.pr_type != pr_type {
        return Err(illegal(asc::INVALID_RELEASE_OF_PR));
    }
    let mut st = old.clone();
    st.reservation = None;
    let mut out = ProutOutcome::default();
    if pr_type::admits_registrants(res.pr_type) {
        out.notify(&st.registrations, asc::RESERVATIONS_RELEASED);
    }
    out.state = Some(st);
    Ok(out)
}

/// CLEAR (§5.13.11.6): no reservation, no registrations; RESERVATIONS PREEMPTED to the others.
fn clear(old: &PrState) -> ProutOutcome {
    let mut out = ProutOutcome::default();
    out.notify(&old.registrations, asc::RESERVATIONS_PREEMPTED);
    out.state = Some(PrState {
        generation: old.generation.wrapping_add(1),
        aptpl: old.aptpl,
        registrations: Vec::new(),
        reservation: None,
    });
    out
}

/// PREEMPT and PREEMPT AND ABORT (§5.13.11.4–5, figure "device server interpretation of PREEMPT").
///
/// - All-registrants reservation and SERVICE ACTION RESERVATION KEY 0: every other registration goes
///   and the issuer holds a new reservation of the CDB's type.
/// - The key is the single holder's: the holder's reservation goes to the issuer with the CDB's type,
///   every other registration with that key goes (the issuer's stays: preempting oneself is allowed).
/// - Otherwise (no reservation, another key, or an all-registrants reservation and a non-zero key):
///   the registrations with that key go, the issuer's included, and the reservation stays unless no
///   registrant is left to hold an all-registrants one; key 0 is invalid, a key nobody has conflicts.
///
/// Lost registrations get REGISTRATIONS PREEMPTED; a reservation whose type changed tells the
/// remaining registrants RESERVATIONS RELEASED. PREEMPT AND ABORT aborts the tasks of every I_T nexus
/// registered with the key (all registered ones for key 0), the issuer's other tasks included.
fn preempt(
    old: &PrState,
    nexus: &ItNexus,
    own: usize,
    sa_key: u64,
    pr_type: u8,
    abort: bool,
) -> Result<ProutOutcome, Failure> {
    let res = old.reservation.as_ref();
    let all_registrants = res.is_some_and(|r| r.is_all_registrants());
    let takes_reservation = match res {
        Some(r) if r.is_all_registrants() => sa_key == 0,
        Some(_) => old.reservation_key() == sa_key,
        None => false,
    };
    if sa_key == 0 && !all_registrants {
        return Err(invalid_param(SA_KEY_FIELD, None));
    }
    let targeted = |r: &PrRegistration| sa_key == 0 || r.key == sa_key;
    let mut out = ProutOutcome::default();
    if abort {
        out.abort = old
            .registrations
            .iter()
            .filter(|r| targeted(r))
            .map(|r| r.registrant.clone())
            .collect();
    }
    let mut st = old.clone();
    let (lost, kept): (Vec<_>, Vec<_>) = old
        .registrations
        .iter()
        .enumerate()
        .partition(|(i, r)| targeted(r) && !(takes_reservation && *i == own));
    if lost.is_empty() && !takes_reservation {
        return Err(Failure::ReservationConflict);
    }
    out.notify(lost.iter().map(|(_, r)| *r), asc::REGISTRATIONS_PREEMPTED);
    st.registrations = kept.into_iter().map(|(_, r)| r.clone()).collect();
    if takes_reservation {
        let type_changed = res.is_some_and(|r| r.pr_type != pr_type);
        st.reservation = Some(PrReservation::new(pr_type, nexus));
        if type_changed {
            out.notify(&st.registrations, asc::RESERVATIONS_RELEASED);
        }
    } else if all_registrants && st.registrations.is_empty() {
        st.reservation = None;
    }
    st.generation = st.generation.wrapping_add(1);
    out.state = Some(st);
    Ok(out)
}

struct Move<'a> {
    destination: &'a InitiatorPort,
    relative_port: u16,
    unregister: bool,
}

/// REGISTER AND MOVE (§5.13.8): the single holder registers the destination I_T nexus with the
/// SERVICE ACTION RESERVATION KEY and hands it the reservation (same type and scope: the CDB's are
/// ignored); with UNREG the issuer's registration goes. No unit attentions.
fn register_and_move(
    old: &PrState,
    nexus: &ItNexus,
    own: usize,
    req: &ProutRequest,
    how: Move<'_>,
    target_ports: &[TargetPort],
) -> Result<ProutOutcome, Failure> {
    if req.sa_key == 0 {
        return Err(invalid_param(SA_KEY_FIELD, None));
    }
    let port = target_ports
        .iter()
        .find(|p| p.relative_id == how.relative_port)
        .cloned()
        .or_else(|| (how.relative_port == nexus.relative_port).then(|| TargetPort::of(nexus)))
        .ok_or_else(|| invalid_param(MOVE_RELATIVE_PORT_FIELD, None))?;
    if how.destination.is_of(nexus) {
        // The destination is the issuer's own initiator port (through any target port).
        return Err(invalid_param(MOVE_TRANSPORT_ID_FIELD, None));
    }
    let Some(res) = &old.reservation else {
        return Err(invalid_cdb_field(1, Some(4)));
    };
    if res.is_all_registrants() || !old.is_holder(nexus) {
        return Err(Failure::ReservationConflict);
    }
    let destination = ItNexus {
        initiator: how.destination.name.clone(),
        isid: how.destination.isid,
        target: port.name.clone(),
        tpgt: port.tpgt,
        relative_port: port.relative_id,
    };
    let mut st = old.clone();
    match st.registration_index(&destination) {
        Some(i) => st.registrations[i].key = req.sa_key,
        None => st.registrations.push(PrRegistration {
            key: req.sa_key,
            registrant: Registrant::nexus(&destination),
        }),
    }
    st.reservation = Some(PrReservation {
        pr_type: res.pr_type,
        scope: res.scope,
        holder: Some(destination),
    });
    if how.unregister {
        // Pushing the destination left the issuer's index where it was.
        st.registrations.remove(own);
    }
    st.aptpl = req.aptpl;
    st.generation = st.generation.wrapping_add(1);
    Ok(ProutOutcome::changed(st))
}

/// Executes a PERSISTENT RESERVE OUT on `lu`: decide, save, install, notify, abort.
pub(crate) async fn persistent_reserve_out(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    data: &Bytes,
    claim: &Arc<TaskClaim>,
) -> CmdResult {
    let req = parse_prout(c, data)?;
    let serial = lu.pr_update.lock().await;
    let old = lock(&lu.access).pr.clone();
    let outcome = apply_prout(&old, nexus, &req, &lu.target_ports())?;
    let mut victims = Vec::new();
    if let Some(new_state) = outcome.state {
        // Durable before visible: a failover right after GOOD must not lose this PROUT.
        let blob = encode_pr_state(&new_state)
            .ok()
            .filter(|b| b.len() <= lu.pr_store.capacity())
            .ok_or_else(|| illegal(asc::INSUFFICIENT_REGISTRATION_RESOURCES))?;
        if let Err(e) = lu.pr_store.save(Bytes::from(blob)).await {
            tracing::error!(error = %e, "saving persistent reservation state failed");
            return Err(check(key::HARDWARE_ERROR, asc::INTERNAL_TARGET_FAILURE));
        }
        let mut access = lock(&lu.access);
        access.pr = new_state;
        // In the same critical section: a task admitted after this checks the new state.
        if !outcome.abort.is_empty() {
            victims = access
                .tasks
                .running_of(|n| outcome.abort.iter().any(|r| r.covers(n)), claim);
        }
    }
    for (registrant, code) in &outcome.unit_attentions {
        lu.unit_attention_to(registrant, nexus, *code);
    }
    // Released before waiting: a preempted task may itself be a PERSISTENT RESERVE OUT waiting here.
    drop(serial);
    let mut aborted = Vec::with_capacity(victims.len());
    for (victim, task) in victims {
        // Aborted tasks send nothing (TAS = 0); their nexus learns it from a unit attention
        // (SAM-5 §5.6: COMMANDS CLEARED BY ANOTHER INITIATOR).
        if task.abort() && &victim != nexus {
            lu.ua
                .add(&victim, asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
        }
        aborted.push(task);
    }
    // Not GOOD before no aborted task can touch the medium any more (fence_scsi relies on it).
    lu.abort_waits.wait_finished(&aborted).await;
    Ok(Bytes::new())
}
