//! One iSCSI target's LUN map: routes commands to logical units and answers the target-level ones
//! (REPORT LUNS, and INQUIRY / everything else for LUNs that do not exist).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use super::alua::{AccessStateListener, Alua};
use super::cdb::be32;
use super::lu::LogicalUnit;
use super::opcodes::op;
use super::pr_state::TargetPort;
use super::sense::{CmdResult, Sense, asc, illegal, invalid_cdb_field, key};
use super::task_set::TaskClaim;
use super::{ItNexus, ScsiCommand, ScsiResponse, inquiry};

/// The LUN → LU map of a target, replaced whole when `haadm adjust` adds or removes LUNs.
struct LunMap {
    luns: BTreeMap<u64, Arc<LogicalUnit>>,
    lun_list: Vec<u64>,
}

impl LunMap {
    fn new(luns: BTreeMap<u64, Arc<LogicalUnit>>) -> Arc<LunMap> {
        let lun_list = luns.keys().copied().collect();
        Arc::new(LunMap { luns, lun_list })
    }
}

/// A target: name plus LUN → LU map. Sessions keep the target for their lifetime; the map can be
/// replaced under them ([`ScsiTarget::replace_luns`]), and they see the new one from their next command.
pub struct ScsiTarget {
    name: String,
    /// Shared with the [`Alua`] the target uses, which queues its unit attentions on a change.
    shared: Arc<TargetShared>,
    /// Every target port the LUs are exported through (given to LUs added later too).
    ports: Mutex<Vec<TargetPort>>,
}

/// The part of a target an [`Alua`] reaches when the access states change.
struct TargetShared {
    /// Read once per command (an uncontended lock: the data path never waits for a replacement
    /// longer than a pointer swap).
    map: RwLock<Arc<LunMap>>,
    /// The I_T nexuses logged in to this target, so LUNs added later greet them like a power-on.
    nexuses: Mutex<Vec<ItNexus>>,
    /// Target port group access states; None = no ALUA gating, one always active/optimized group.
    alua: RwLock<Option<Arc<Alua>>>,
}

impl AccessStateListener for TargetShared {
    /// SPC-4 §5.16.2.5: after an implicit transition, ASYMMETRIC ACCESS STATE CHANGED for every I_T
    /// nexus, on every LU (only if this target still uses `alua`).
    fn access_state_changed(&self, alua: &Alua) {
        let ours = self
            .alua
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|a| std::ptr::eq(Arc::as_ptr(a), alua));
        if !ours {
            return;
        }
        let nexuses = lock(&self.nexuses).clone();
        let map = Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()));
        for lu in map.luns.values() {
            lu.ua
                .add_where(|n| nexuses.contains(n), asc::ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
    }
}

impl ScsiTarget {
    pub fn new(name: String, luns: BTreeMap<u64, Arc<LogicalUnit>>) -> Self {
        let shared = Arc::new(TargetShared {
            map: RwLock::new(LunMap::new(luns)),
            nexuses: Mutex::new(Vec::new()),
            alua: RwLock::new(None),
        });
        Self { name, shared, ports: Mutex::new(Vec::new()) }
    }

    /// Gates and describes this target's ports by `alua` from the next command on: REPORT TARGET
    /// PORT GROUPS lists its groups, VPD 0x83 names the nexus's group, and a port whose group is not
    /// active serves only the allow-listed commands (see `alua`). Its changes queue 2A/06 on this
    /// target's nexuses. Several targets may share one `Alua`.
    pub fn set_alua(&self, alua: Arc<Alua>) {
        let listener: Arc<dyn AccessStateListener> = self.shared.clone();
        alua.subscribe(Arc::downgrade(&listener));
        *self.shared.alua.write().unwrap_or_else(|p| p.into_inner()) = Some(alua);
    }

    /// The attached [`Alua`], if any.
    pub fn alua(&self) -> Option<Arc<Alua>> {
        self.shared.alua.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn map(&self) -> Arc<LunMap> {
        Arc::clone(&self.shared.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn luns(&self) -> Vec<(u64, Arc<LogicalUnit>)> {
        self.map().luns.iter().map(|(n, lu)| (*n, Arc::clone(lu))).collect()
    }

    pub fn lun(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        self.map().luns.get(&lun).cloned()
    }

    /// Replaces the LUN map (`haadm adjust` added or removed LUNs; LUs defined as before are passed
    /// in as the same objects). If the set of LUNs changed, every logged-in nexus gets REPORTED LUNS
    /// DATA HAS CHANGED (SPC-4 6.37 / SAM-5 5.14) on every LU, and a new LU greets them with POWER ON,
    /// RESET first, as a LU that just came into existence. A removed LUN answers LOGICAL UNIT NOT
    /// SUPPORTED from the next command on (commands already running on it finish). Returns whether the
    /// LUN set changed.
    pub fn replace_luns(&self, luns: BTreeMap<u64, Arc<LogicalUnit>>) -> bool {
        let nexuses = lock(&self.shared.nexuses).clone();
        let ports = lock(&self.ports).clone();
        let mut map = self.shared.map.write().unwrap_or_else(|p| p.into_inner());
        let same_set = map.luns.len() == luns.len()
            && map.luns.iter().all(|(n, lu)| luns.get(n).is_some_and(|new| Arc::ptr_eq(lu, new)));
        if same_set {
            return false;
        }
        for (n, lu) in &luns {
            if !map.luns.get(n).is_some_and(|old| Arc::ptr_eq(old, lu)) {
                for port in &ports {
                    lu.add_target_port(port.clone());
                }
                for nexus in &nexuses {
                    lu.nexus_added(nexus);
                }
            }
        }
        for lu in luns.values() {
            lu.ua.add_where(|n| nexuses.contains(n), asc::REPORTED_LUNS_DATA_CHANGED);
        }
        *map = LunMap::new(luns);
        true
    }

    /// Bytes of Data-Out the CDB implies for `lun` (block size aware); None if no Data-Out or no LU.
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        let lu = self.lun(lun)?;
        super::cdb::data_out_len_with_block_size(cdb, lu.block_size())
    }

    /// Executes one command. Safe to call concurrently from many tasks.
    pub async fn execute(&self, nexus: &ItNexus, cmd: ScsiCommand) -> ScsiResponse {
        self.execute_task(nexus, cmd, &Arc::new(TaskClaim::default()))
            .await
    }

    /// Executes one command whose response the caller sends only if `claim.respond()`: an abort (ABORT
    /// TASK, or a PREEMPT AND ABORT from another I_T nexus) claims it instead.
    pub async fn execute_task(
        &self,
        nexus: &ItNexus,
        cmd: ScsiCommand,
        claim: &Arc<TaskClaim>,
    ) -> ScsiResponse {
        let map = self.map();
        let alua = self.alua();
        match map.luns.get(&cmd.lun) {
            Some(lu) => lu.execute(nexus, &cmd, &map.lun_list, alua.as_deref(), claim).await,
            None => Self::execute_missing_lun(&cmd, &map.lun_list),
        }
    }

    /// Records a target port every LU of this target (and every LU added later) is exported
    /// through: REGISTER AND MOVE names one by its relative port identifier, also a port of the peer
    /// node that no nexus of this node arrives through.
    pub fn add_target_port(&self, port: TargetPort) {
        {
            let mut ports = lock(&self.ports);
            if !ports.contains(&port) {
                ports.push(port.clone());
            }
        }
        for lu in self.map().luns.values() {
            lu.add_target_port(port.clone());
        }
    }

    /// SPC-4 §4.6.? / SAM-5: a LUN without a LU still answers INQUIRY (qualifier 3), REPORT LUNS and
    /// REQUEST SENSE; anything else gets LOGICAL UNIT NOT SUPPORTED.
    fn execute_missing_lun(cmd: &ScsiCommand, lun_list: &[u64]) -> ScsiResponse {
        let c = &cmd.cdb;
        let result: CmdResult = match c[0] {
            op::INQUIRY => inquiry::inquiry_missing_lun(c),
            op::REPORT_LUNS => report_luns(c, lun_list),
            op::REQUEST_SENSE => {
                let mut d = Sense::new(key::ILLEGAL_REQUEST, asc::LUN_NOT_SUPPORTED)
                    .to_fixed()
                    .to_vec();
                d.truncate(usize::from(c[4]));
                Ok(Bytes::from(d))
            }
            _ => Err(illegal(asc::LUN_NOT_SUPPORTED)),
        };
        let alloc = match c[0] {
            op::INQUIRY => u32::from(super::cdb::be16(c, 3)),
            op::REPORT_LUNS => be32(c, 6),
            op::REQUEST_SENSE => u32::from(c[4]),
            _ => 0,
        };
        match result {
            Ok(d) => ScsiResponse::good(d, alloc),
            Err(f) => ScsiResponse::from_failure(&f, alloc),
        }
    }

    /// Registers a new I_T nexus: POWER ON, RESET unit attention on every LU.
    pub fn nexus_added(&self, nexus: &ItNexus) {
        {
            let mut known = lock(&self.shared.nexuses);
            if !known.contains(nexus) {
                known.push(nexus.clone());
            }
        }
        for lu in self.map().luns.values() {
            lu.nexus_added(nexus);
        }
    }

    /// Forgets an I_T nexus: drops its SPC-2 reservation and pending UAs. PR registrations persist.
    pub fn nexus_removed(&self, nexus: &ItNexus) {
        lock(&self.shared.nexuses).retain(|n| n != nexus);
        for lu in self.map().luns.values() {
            lu.nexus_removed(nexus);
        }
    }

    /// LOGICAL UNIT RESET from `nexus`. Returns false if the LUN does not exist.
    pub fn lun_reset(&self, nexus: &ItNexus, lun: u64) -> bool {
        let _ = nexus; // every nexus, the requester included, sees the reset
        match self.lun(lun) {
            Some(lu) => {
                lu.reset(asc::BUS_DEVICE_RESET);
                true
            }
            None => false,
        }
    }

    /// TARGET WARM/COLD RESET: every LU is reset.
    pub fn target_reset(&self, nexus: &ItNexus, cold: bool) {
        let _ = nexus;
        let code = if cold {
            asc::POWER_ON_RESET
        } else {
            asc::BUS_RESET
        };
        for lu in self.map().luns.values() {
            lu.reset(code);
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the list is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Encodes a LUN number in SAM-5 single-level format (peripheral ≤ 255, flat space ≤ 16383).
fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | ((lun >> 8) as u8);
        b[1] = lun as u8;
    } else {
        // Larger numbers are passed through as an already-encoded 8-byte LUN.
        b = lun.to_be_bytes();
    }
    b
}

pub(super) fn report_luns(c: &[u8; 16], luns: &[u64]) -> CmdResult {
    let select = c[2];
    let alloc = be32(c, 6) as usize;
    if alloc < 16 {
        return Err(invalid_cdb_field(6, None));
    }
    // SELECT REPORT 0, 2: all LUNs; 1: well-known LUNs only (we have none).
    let list: &[u64] = match select {
        0x00 | 0x02 => luns,
        0x01 => &[],
        _ => return Err(invalid_cdb_field(2, None)),
    };
    let mut d = Vec::with_capacity(8 + list.len() * 8);
    d.extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for &l in list {
        d.extend_from_slice(&encode_lun(l));
    }
    d.truncate(alloc);
    Ok(Bytes::from(d))
}
