//! One logical unit: identity, backend, and the per-LU SCSI state (unit attentions, reservations,
//! mode parameters), plus the dispatch from the command table to the handlers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::alua::{self, Alua};
use super::opcodes::{self, CommandInfo, Handler as H, Lookup, UaPolicy, op};
use super::pr_state::{PrState, PrStore, Registrant, TargetPort, TargetPorts, decode_pr_state};
use super::reservation::access;
use super::sense::{self, CmdResult, Failure, Sense, asc, check, invalid_cdb_field, key};
use super::task_set::{AbortWaits, AdmittedTask, TaskClaim, TaskSet};
use super::unit_attention::UnitAttentions;
use super::xcopy::HeldCopyResults;
use super::{
    ItNexus, ScsiCommand, ScsiError, ScsiResponse, cdb, inquiry, mode, reservation, rw, xcopy,
};
use crate::backend::{BackendError, BlockBackend};

/// What makes a LU "the same device" to initiators. Must come from cluster-wide configuration so
/// both HA nodes present identical identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunIdentity {
    /// T10 vendor (≤ 8 ASCII chars).
    pub vendor: String,
    /// Product (≤ 16 ASCII chars).
    pub product: String,
    /// Revision (≤ 4 ASCII chars).
    pub revision: String,
    /// Unit serial number (VPD 0x80), printable ASCII.
    pub serial: String,
    /// High 64 bits of the NAA IEEE Registered Extended designator (NAA nibble forced to 6).
    pub naa: u64,
    /// Low 64 bits of the NAA designator.
    pub naa_ext: u64,
    pub target_port_group: u16,
    /// Whether writes are acknowledged before they are durable (caching mode page WCE).
    pub write_cache: bool,
    /// Advertise thin provisioning (UNMAP, WRITE SAME with UNMAP, GET LBA STATUS) if the backend can.
    pub thin: bool,
}

/// What the per-command access check reads and a PERSISTENT RESERVE OUT changes, under one lock: the
/// PR state and the tasks admitted against it, so PREEMPT AND ABORT finds every task that was checked
/// against the old state (see `task_set`). Commands take this lock once, briefly, as before.
#[derive(Default)]
pub(super) struct AccessState {
    pub(super) pr: PrState,
    pub(super) tasks: TaskSet,
}

/// A SCSI logical unit backed by a [`BlockBackend`].
pub struct LogicalUnit {
    pub(super) identity: LunIdentity,
    pub(super) backend: Arc<dyn BlockBackend>,
    pub(super) block_size: u32,
    capacity: AtomicU64,
    pub(super) ua: UnitAttentions,
    /// Software write protect (control mode page SWP), settable with MODE SELECT.
    pub(super) swp: AtomicBool,
    /// SPC-2 RESERVE(6)/(10) holder.
    pub(super) legacy_holder: Mutex<Option<ItNexus>>,
    /// Persistent reservation state and running tasks; read on every command, so a short sync lock.
    pub(super) access: Mutex<AccessState>,
    /// Serializes PERSISTENT RESERVE OUT so save-then-commit is atomic.
    pub(super) pr_update: tokio::sync::Mutex<()>,
    pub(super) pr_store: Arc<dyn PrStore>,
    /// Where PREEMPT AND ABORT waits for the tasks it aborted.
    pub(super) abort_waits: AbortWaits,
    /// The target ports this LU is reachable through (REGISTER AND MOVE names one by its relative
    /// port identifier).
    target_ports: Mutex<Vec<TargetPort>>,
    /// Writes take it shared, COMPARE AND WRITE exclusive: makes CAW atomic against all writes.
    pub(super) write_gate: tokio::sync::RwLock<()>,
    /// Nexuses with PREVENT MEDIUM REMOVAL in effect.
    pub(super) prevent: Mutex<HashSet<ItNexus>>,
    /// EXTENDED COPY results held for RECEIVE COPY RESULTS.
    pub(super) copy_results: Mutex<HeldCopyResults>,
}

fn printable_ascii(s: &str, max: usize, what: &str) -> Result<(), ScsiError> {
    if s.len() > max || !s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(ScsiError::InvalidIdentity(format!(
            "{what} must be ≤ {max} printable ASCII chars: {s:?}"
        )));
    }
    Ok(())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogicalUnit {
    /// Creates a LU and loads its PR state from `pr_store`.
    pub fn new(
        identity: LunIdentity,
        backend: Arc<dyn BlockBackend>,
        block_size: u32,
        pr_store: Arc<dyn PrStore>,
    ) -> Result<Self, ScsiError> {
        if block_size != 512 && block_size != 4096 {
            return Err(ScsiError::InvalidBlockSize(block_size));
        }
        printable_ascii(&identity.vendor, 8, "vendor")?;
        printable_ascii(&identity.product, 16, "product")?;
        printable_ascii(&identity.revision, 4, "revision")?;
        printable_ascii(&identity.serial, 252, "serial")?;
        let size = backend.size();
        if size == 0 || !size.is_multiple_of(u64::from(block_size)) {
            return Err(ScsiError::InvalidBackendSize { size, block_size });
        }
        let mut pr = match pr_store.load()? {
            Some(blob) => decode_pr_state(&blob)?,
            None => PrState::default(),
        };
        if pr_store.loads_after_power_loss() {
            pr = pr.at_power_on();
        }
        Ok(Self {
            identity,
            capacity: AtomicU64::new(size / u64::from(block_size)),
            backend,
            block_size,
            ua: UnitAttentions::default(),
            swp: AtomicBool::new(false),
            legacy_holder: Mutex::new(None),
            access: Mutex::new(AccessState {
                pr,
                tasks: TaskSet::default(),
            }),
            pr_update: tokio::sync::Mutex::new(()),
            pr_store,
            abort_waits: AbortWaits::default(),
            target_ports: Mutex::new(Vec::new()),
            write_gate: tokio::sync::RwLock::new(()),
            prevent: Mutex::new(HashSet::new()),
            copy_results: Mutex::new(HeldCopyResults::default()),
        })
    }

    /// Number of logical blocks.
    pub fn capacity_blocks(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Re-reads the backend size and queues CAPACITY DATA HAS CHANGED for every nexus.
    pub fn capacity_changed(&self) {
        let blocks = self.backend.size() / u64::from(self.block_size);
        self.capacity.store(blocks, Ordering::Release);
        self.ua.add_all(None, asc::CAPACITY_DATA_CHANGED);
    }

    pub fn identity(&self) -> &LunIdentity {
        &self.identity
    }

    pub fn backend(&self) -> &Arc<dyn BlockBackend> {
        &self.backend
    }

    /// A copy of the current persistent reservation state.
    pub fn pr_state(&self) -> PrState {
        lock(&self.access).pr.clone()
    }

    /// Re-reads the persistent-reservation state from the store, as a failover carries it over
    /// (issue 17: an ALUA standby port's LU already exists while the peer holds the group and changes
    /// the reservations; the new holder takes them up before its port becomes active). Serialized
    /// with PERSISTENT RESERVE OUT by the caller holding no PROUT (ports are not active yet).
    pub fn reload_reservations(&self) -> Result<(), ScsiError> {
        let pr = match self.pr_store.load()? {
            Some(blob) => decode_pr_state(&blob)?,
            None => PrState::default(),
        };
        lock(&self.access).pr = pr;
        Ok(())
    }

    /// Records a target port this LU is exported through.
    pub(super) fn add_target_port(&self, port: TargetPort) {
        let mut ports = lock(&self.target_ports);
        if !ports.contains(&port) {
            ports.push(port);
        }
    }

    pub(super) fn target_ports(&self) -> Vec<TargetPort> {
        lock(&self.target_ports).clone()
    }

    /// Queues `code` for every I_T nexus of `registrant` except `issuer` (the nexus whose command
    /// caused it never gets a PR unit attention). For an ALL_TG_PT registrant those are its logged-in
    /// nexuses; a single nexus gets it even if it is not logged in (a later login replaces it with
    /// POWER ON, RESET anyway).
    pub(super) fn unit_attention_to(
        &self,
        registrant: &Registrant,
        issuer: &ItNexus,
        code: asc::Code,
    ) {
        match &registrant.ports {
            TargetPorts::One(port) => {
                let nexus = ItNexus {
                    initiator: registrant.initiator.name.clone(),
                    isid: registrant.initiator.isid,
                    target: port.name.clone(),
                    tpgt: port.tpgt,
                    relative_port: port.relative_id,
                };
                if &nexus != issuer {
                    self.ua.add(&nexus, code);
                }
            }
            TargetPorts::All => self
                .ua
                .add_where(|n| n != issuer && registrant.initiator.is_of(n), code),
        }
    }

    /// Pending unit attentions for `nexus` (diagnostics and tests).
    pub fn pending_unit_attentions(&self, nexus: &ItNexus) -> Vec<(u8, u8)> {
        self.ua.pending(nexus)
    }

    /// Whether thin provisioning is advertised and implemented.
    pub(super) fn thin(&self) -> bool {
        self.identity.thin && self.backend.supports_unmap()
    }

    pub(super) fn nexus_added(&self, nexus: &ItNexus) {
        self.add_target_port(TargetPort::of(nexus));
        self.ua.nexus_added(nexus);
    }

    pub(super) fn nexus_removed(&self, nexus: &ItNexus) {
        self.ua.nexus_removed(nexus);
        let mut holder = lock(&self.legacy_holder);
        if holder.as_ref() == Some(nexus) {
            *holder = None;
        }
        lock(&self.prevent).remove(nexus);
        lock(&self.access).tasks.forget(nexus);
    }

    /// SAM-5 logical unit reset: SPC-2 reservation and PREVENT state cleared, mode parameters back to
    /// defaults, UA on every nexus. Persistent reservations survive.
    pub(super) fn reset(&self, code: asc::Code) {
        *lock(&self.legacy_holder) = None;
        lock(&self.prevent).clear();
        self.swp.store(false, Ordering::Release);
        self.ua.add_all(None, code);
    }

    /// Checks that `[lba, lba+blocks)` lies within the medium, with no overflow.
    pub(super) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Failure> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.capacity_blocks() => Ok(()),
            _ => Err(sense::lba_out_of_range()),
        }
    }

    /// Byte offset of `lba`; only called after [`Self::check_range`], so it cannot overflow in practice,
    /// but stays checked.
    pub(super) fn byte_offset(&self, lba: u64) -> Result<u64, Failure> {
        lba.checked_mul(u64::from(self.block_size))
            .ok_or_else(sense::lba_out_of_range)
    }

    pub(super) fn check_writable(&self) -> Result<(), Failure> {
        if self.swp.load(Ordering::Acquire) {
            return Err(check(key::DATA_PROTECT, asc::SOFTWARE_WRITE_PROTECTED));
        }
        Ok(())
    }

    /// Executes one command for `nexus`; `luns` is the target's LUN list (for REPORT LUNS), `alua`
    /// the target's port group states. `claim` decides between the command's response and an abort
    /// (the caller sends the response only if `claim.respond()`).
    pub(super) async fn execute(
        &self,
        nexus: &ItNexus,
        cmd: &ScsiCommand,
        luns: &[u64],
        alua: Option<&Alua>,
        claim: &Arc<TaskClaim>,
    ) -> ScsiResponse {
        let found = opcodes::lookup(&cmd.cdb);
        let reports_ua = match &found {
            Lookup::Found(info) => info.ua == UaPolicy::Report,
            _ => true,
        };
        if reports_ua && let Some(code) = self.ua.take(nexus) {
            return ScsiResponse::from_failure(&check(key::UNIT_ATTENTION, code), 0);
        }
        let info = match found {
            Lookup::Found(info) => info,
            Lookup::UnknownOpcode => {
                return ScsiResponse::from_failure(&sense::invalid_opcode(), 0);
            }
            Lookup::UnknownServiceAction => {
                return ScsiResponse::from_failure(&invalid_cdb_field(1, Some(4)), 0);
            }
        };
        let transfer_len = self.transfer_len(info, &cmd.cdb);
        // ALUA gate before admission: a refused command is never in the task set nor the backend.
        let admitted = alua::check_access(alua, nexus, info.handler)
            .and_then(|()| self.admit(nexus, info, &cmd.cdb, claim));
        let result = match admitted {
            Ok(()) => {
                let _admitted = AdmittedTask {
                    claim,
                    waits: &self.abort_waits,
                };
                self.run(nexus, info, cmd, luns, alua, claim).await
            }
            Err(f) => Err(f),
        };
        match result {
            Ok(data) => ScsiResponse::good(data, transfer_len),
            Err(f) => ScsiResponse::from_failure(&f, transfer_len),
        }
    }

    /// Bytes the CDB asks to move (for residual computation by the transport).
    fn transfer_len(&self, info: &CommandInfo, c: &[u8; 16]) -> u32 {
        if let Some(n) = cdb::data_out_len_with_block_size(c, self.block_size) {
            return n;
        }
        let alloc = match info.handler {
            H::Read => cdb::block_range(c).and_then(|r| r.blocks.checked_mul(self.block_size)),
            H::Inquiry | H::ModeSense if c[0] != op::MODE_SENSE_10 => {
                Some(if c[0] == op::INQUIRY {
                    u32::from(cdb::be16(c, 3))
                } else {
                    u32::from(c[4])
                })
            }
            H::ModeSense | H::PrIn => Some(u32::from(cdb::be16(c, 7))),
            H::ReadDefectData if c[0] == op::READ_DEFECT_DATA_10 => {
                Some(u32::from(cdb::be16(c, 7)))
            }
            H::ReadDefectData => Some(cdb::be32(c, 6)),
            H::ReceiveCopyResults => Some(cdb::be32(c, 10)),
            H::RequestSense => Some(u32::from(c[4])),
            H::ReadCapacity10 => Some(8),
            H::ReadCapacity16 | H::GetLbaStatus => Some(cdb::be32(c, 10)),
            H::ReportLuns | H::ReportTargetPortGroups | H::ReportSupportedOpcodes => {
                Some(cdb::be32(c, 6))
            }
            _ => None,
        };
        alloc.unwrap_or(0)
    }

    /// Reservation conflict check (SPC-2 reservations, and SPC-4 §5.13.1 for persistent ones, see
    /// `reservation::access`); a command that passes is recorded in the task set under the same lock.
    fn admit(
        &self,
        nexus: &ItNexus,
        info: &CommandInfo,
        cdb: &[u8; 16],
        claim: &Arc<TaskClaim>,
    ) -> Result<(), Failure> {
        if let Some(holder) = lock(&self.legacy_holder).as_ref()
            && holder != nexus
        {
            let allowed = matches!(
                info.handler,
                H::Inquiry
                    | H::ReportLuns
                    | H::RequestSense
                    | H::Release
                    | H::ReportSupportedOpcodes
                    | H::ReportTargetPortGroups
            );
            if !allowed {
                return Err(Failure::ReservationConflict);
            }
        }
        let mut state = lock(&self.access);
        if let Some(res) = &state.pr.reservation
            && !state.pr.is_holder(nexus)
            && access::non_holder_conflicts(
                res.pr_type,
                state.pr.is_registered(nexus),
                access::class_of(info, cdb),
            )
        {
            return Err(Failure::ReservationConflict);
        }
        state.tasks.admit(nexus, claim);
        Ok(())
    }

    async fn run(
        &self,
        nexus: &ItNexus,
        info: &CommandInfo,
        cmd: &ScsiCommand,
        luns: &[u64],
        alua: Option<&Alua>,
        claim: &Arc<TaskClaim>,
    ) -> CmdResult {
        let c = &cmd.cdb;
        match info.handler {
            H::TestUnitReady => Ok(Bytes::new()),
            H::RequestSense => self.request_sense(nexus, c, alua),
            H::Inquiry => inquiry::inquiry(self, nexus, c, alua),
            H::ModeSense => mode::mode_sense(self, c),
            H::ModeSelect => mode::mode_select(self, nexus, c, &cmd.data_out),
            H::StartStopUnit => start_stop_unit(c),
            H::PreventAllow => self.prevent_allow(nexus, c),
            H::ReadCapacity10 => inquiry::read_capacity_10(self, c),
            H::ReadCapacity16 => inquiry::read_capacity_16(self, c),
            H::Read => rw::read(self, c).await,
            H::Write => rw::write(self, c, &cmd.data_out).await,
            H::WriteAndVerify => rw::write_and_verify(self, c, &cmd.data_out).await,
            H::Verify => rw::verify(self, c, &cmd.data_out).await,
            H::PreFetch => rw::pre_fetch(self, c),
            H::SynchronizeCache => rw::synchronize_cache(self, c).await,
            H::WriteSame => rw::write_same(self, c, &cmd.data_out).await,
            H::Unmap => rw::unmap(self, c, &cmd.data_out).await,
            H::CompareAndWrite => rw::compare_and_write(self, c, &cmd.data_out).await,
            H::OrWrite => rw::or_write(self, c, &cmd.data_out).await,
            H::ReadDefectData => rw::read_defect_data(c),
            H::ExtendedCopy => xcopy::extended_copy(self, nexus, c, &cmd.data_out).await,
            H::ReceiveCopyResults => xcopy::receive_copy_results(self, nexus, c),
            H::GetLbaStatus => rw::get_lba_status(self, c).await,
            H::Reserve => reservation::reserve_legacy(self, nexus, c),
            H::Release => reservation::release_legacy(self, nexus, c),
            H::PrIn => reservation::prin::persistent_reserve_in(self, c),
            H::PrOut => {
                reservation::prout::persistent_reserve_out(self, nexus, c, &cmd.data_out, claim)
                    .await
            }
            H::ReportLuns => super::target::report_luns(c, luns),
            H::ReportTargetPortGroups => inquiry::report_target_port_groups(self, nexus, c, alua),
            H::ReportSupportedOpcodes => opcodes::report_supported_opcodes(c, self.thin()),
        }
    }

    /// REQUEST SENSE: reports (and clears) a pending UA as parameter data; else, through a port
    /// whose ALUA group is not active, the NOT READY condition its commands get (SPC-4 pollable
    /// sense data); else NO SENSE.
    fn request_sense(&self, nexus: &ItNexus, c: &[u8; 16], alua: Option<&Alua>) -> CmdResult {
        if c[1] & 0x01 != 0 {
            // DESC=1 asks for descriptor format, which we do not produce.
            return Err(invalid_cdb_field(1, Some(0)));
        }
        let not_ready = alua.and_then(|a| a.port_state(nexus.relative_port).not_ready_code());
        let sense = match (self.ua.take(nexus), not_ready) {
            (Some(code), _) => Sense::new(key::UNIT_ATTENTION, code),
            (None, Some(code)) => Sense::new(key::NOT_READY, code),
            (None, None) => Sense::new(key::NO_SENSE, asc::NO_ADDITIONAL),
        };
        let mut data = sense.to_fixed().to_vec();
        data.truncate(usize::from(c[4]));
        Ok(Bytes::from(data))
    }

    fn prevent_allow(&self, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
        match c[4] & 0x03 {
            0 => {
                lock(&self.prevent).remove(nexus);
            }
            1 => {
                lock(&self.prevent).insert(nexus.clone());
            }
            // PREVENT values 2 and 3 are obsolete / for changers.
            _ => return Err(invalid_cdb_field(4, Some(1))),
        }
        Ok(Bytes::new())
    }

    /// Maps a backend failure to sense data.
    pub(super) fn backend_failure(&self, e: BackendError, write: bool) -> Failure {
        match e {
            BackendError::NotReady(why) => {
                tracing::debug!(%why, "backend not ready");
                check(key::NOT_READY, asc::NOT_READY_ALUA_TRANSITION)
            }
            BackendError::Io(err)
                if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
            {
                check(
                    key::DATA_PROTECT,
                    asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
                )
            }
            BackendError::Io(err) => {
                tracing::warn!(error = %err, backend = %self.backend.describe(), "backend I/O error");
                if write {
                    check(key::MEDIUM_ERROR, asc::WRITE_ERROR)
                } else {
                    check(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR)
                }
            }
            BackendError::OutOfRange => sense::lba_out_of_range(),
            BackendError::ReadOnly => check(key::DATA_PROTECT, asc::WRITE_PROTECTED),
        }
    }
}

/// START STOP UNIT: a disk that is always spinning; accepted for compatibility and otherwise ignored.
fn start_stop_unit(c: &[u8; 16]) -> CmdResult {
    let power_condition = c[4] >> 4;
    // Only START_VALID (0) and the SBC power conditions 1..=3, 7, 0xA, 0xB are defined.
    if !matches!(power_condition, 0..=3 | 7 | 0x0A | 0x0B) {
        return Err(invalid_cdb_field(4, Some(7)));
    }
    Ok(Bytes::new())
}
