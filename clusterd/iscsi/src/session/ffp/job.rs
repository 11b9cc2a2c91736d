//! One SCSI command executing in its own task: runs it on the SCSI layer and queues the response PDUs.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::scsi::{ItNexus, ScsiCommand, ScsiTarget, TaskClaim};
use crate::session::cmdsn::WindowCounters;
use crate::session::transfer::{CommandOutcome, ResponseContext, build_response};
use crate::session::writer::{Outbound, Stat};

/// Everything a spawned command needs.
pub(super) struct CommandJob {
    pub(super) scsi: Arc<ScsiTarget>,
    pub(super) nexus: Arc<ItNexus>,
    pub(super) cmd: ScsiCommand,
    pub(super) raw_lun: u64,
    pub(super) is_read: bool,
    pub(super) r2t_count: u32,
    pub(super) counted: bool,
    pub(super) max_xmit: u32,
    pub(super) max_burst: u32,
    pub(super) counters: Arc<WindowCounters>,
    pub(super) out: mpsc::Sender<Outbound>,
    pub(super) closed: CancellationToken,
    pub(super) claim: Arc<TaskClaim>,
    pub(super) done: mpsc::UnboundedSender<(u32, u64)>,
    pub(super) serial: u64,
}

impl CommandJob {
    pub(super) async fn run(self) {
        let itt = self.cmd.task_tag;
        let edtl = self.cmd.expected_len;
        // The claim is shared with the LU: a PREEMPT AND ABORT from another I_T nexus can take it.
        let resp = self
            .scsi
            .execute_task(&self.nexus, self.cmd, &self.claim)
            .await;
        let outcome = CommandOutcome {
            status: resp.status,
            data_in: resp.data_in,
            sense: resp.sense,
            transfer_len: resp.transfer_len,
        };
        let ctx = ResponseContext {
            itt,
            raw_lun: self.raw_lun,
            edtl,
            is_read: self.is_read,
            max_xmit: self.max_xmit,
            max_burst: self.max_burst,
            r2t_count: self.r2t_count,
        };
        let pdus = build_response(&ctx, &outcome);
        // Free the window slot first so the response itself already advertises it.
        if self.counted {
            self.counters.task_finished();
        }
        if self.claim.respond() {
            for p in pdus {
                let stat = if p.has_status {
                    Stat::Advance
                } else {
                    Stat::Current
                };
                let msg = Outbound::Pdu {
                    pdu: p.pdu,
                    data: p.data,
                    stat,
                };
                tokio::select! {
                    r = self.out.send(msg) => if r.is_err() { break },
                    _ = self.closed.cancelled() => break,
                }
            }
        }
        let _ = self.done.send((itt, self.serial));
    }
}
