//! One iSCSI target's LUN map: routes commands to logical units and answers the target-level ones
//! (REPORT LUNS, and INQUIRY / everything else for LUNs that do not exist).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::cdb::be32;
use super::lu::LogicalUnit;
use super::opcodes::op;
use super::pr_state::TargetPort;
use super::sense::{CmdResult, Sense, asc, illegal, invalid_cdb_field, key};
use super::task_set::TaskClaim;
use super::{ItNexus, ScsiCommand, ScsiResponse, inquiry};

/// A target: name plus LUN → LU map (fixed for the target's lifetime; reconfiguration builds a new one).
pub struct ScsiTarget {
    name: String,
    luns: BTreeMap<u64, Arc<LogicalUnit>>,
    lun_list: Vec<u64>,
}

impl ScsiTarget {
    pub fn new(name: String, luns: BTreeMap<u64, Arc<LogicalUnit>>) -> Self {
        let lun_list = luns.keys().copied().collect();
        Self {
            name,
            luns,
            lun_list,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn luns(&self) -> Vec<(u64, Arc<LogicalUnit>)> {
        self.luns
            .iter()
            .map(|(n, lu)| (*n, Arc::clone(lu)))
            .collect()
    }

    pub fn lun(&self, lun: u64) -> Option<&Arc<LogicalUnit>> {
        self.luns.get(&lun)
    }

    /// Bytes of Data-Out the CDB implies for `lun` (block size aware); None if no Data-Out or no LU.
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        let lu = self.luns.get(&lun)?;
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
        match self.luns.get(&cmd.lun) {
            Some(lu) => lu.execute(nexus, &cmd, &self.lun_list, claim).await,
            None => self.execute_missing_lun(&cmd),
        }
    }

    /// Records a target port every LU of this target is exported through (PR data names ports).
    pub fn add_target_port(&self, port: TargetPort) {
        for lu in self.luns.values() {
            lu.add_target_port(port.clone());
        }
    }

    /// SPC-4 §4.6.? / SAM-5: a LUN without a LU still answers INQUIRY (qualifier 3), REPORT LUNS and
    /// REQUEST SENSE; anything else gets LOGICAL UNIT NOT SUPPORTED.
    fn execute_missing_lun(&self, cmd: &ScsiCommand) -> ScsiResponse {
        let c = &cmd.cdb;
        let result: CmdResult = match c[0] {
            op::INQUIRY => inquiry::inquiry_missing_lun(c),
            op::REPORT_LUNS => report_luns(c, &self.lun_list),
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
        for lu in self.luns.values() {
            lu.nexus_added(nexus);
        }
    }

    /// Forgets an I_T nexus: drops its SPC-2 reservation and pending UAs. PR registrations persist.
    pub fn nexus_removed(&self, nexus: &ItNexus) {
        for lu in self.luns.values() {
            lu.nexus_removed(nexus);
        }
    }

    /// LOGICAL UNIT RESET from `nexus`. Returns false if the LUN does not exist.
    pub fn lun_reset(&self, nexus: &ItNexus, lun: u64) -> bool {
        let _ = nexus; // every nexus, the requester included, sees the reset
        match self.luns.get(&lun) {
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
        for lu in self.luns.values() {
            lu.reset(code);
        }
    }
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
