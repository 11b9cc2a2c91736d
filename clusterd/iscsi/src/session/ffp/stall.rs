//! The reply bound: every PDU that needs an answer gets one within `ServerConfig::reply_timeout`, or
//! the connection is closed with the reason logged.
//!
//! Most answers come from the session's own progress (commands run, text and TMF requests are
//! answered at once). Two situations depend on the initiator instead, and without a bound would leave
//! it waiting forever with keepalives still flowing:
//! - a non-immediate PDU behind a CmdSN gap, or outside the CmdSN window (which RFC 7143 §4.2.2.1 says
//!   to ignore silently): it is fine if the initiator moves on (fills the gap, or sends in-window
//!   commands as libiscsi's iSCSIcmdsn tests do), but not if it keeps waiting;
//! - a write whose Data-Out (solicited by R2T, or announced as unsolicited) stops arriving.
//!
//! Backend execution time is not bounded here: a write held by I/O fencing is waiting for the cluster,
//! not for the initiator.

use tokio::time::Instant;

use super::{Conn, TaskState};
use crate::session::ConnError;
use crate::session::cmdsn::Submitted;

impl Conn {
    /// Records that a PDU could not be answered now (`outcome` is Buffered or Ignored).
    pub(super) fn note_unanswered<T>(&mut self, opcode: u8, cmd_sn: u32, outcome: &Submitted<T>) {
        let (exp, max) = self.counters.snapshot();
        let what = match outcome {
            Submitted::Buffered => format!(
                "PDU opcode {opcode:#04x} with CmdSN {cmd_sn} waits for the missing CmdSN {exp}"
            ),
            _ => format!(
                "PDU opcode {opcode:#04x} with CmdSN {cmd_sn} is outside the window \
                 [{exp}, {max}] or a duplicate, so it was ignored (RFC 7143 §4.2.2.1)"
            ),
        };
        tracing::debug!(peer = %self.peer, "{what}");
        if self.stalled.is_none() {
            self.stalled = Some((Instant::now(), what));
        }
    }

    /// Fails the connection if something has waited on the initiator longer than the reply bound.
    pub(super) fn check_stalls(&self) -> Result<(), ConnError> {
        let bound = self.server.config().reply_timeout;
        if bound.is_zero() {
            return Ok(());
        }
        if let Some((since, what)) = &self.stalled
            && since.elapsed() >= bound
        {
            return Err(ConnError::Stalled(format!(
                "{what}; the initiator did not move on within {bound:?}"
            )));
        }
        for (itt, task) in &self.tasks {
            let waiting_for_data = task.admitted
                && matches!(&task.state, TaskState::Collecting(Some(col)) if !col.is_complete());
            if waiting_for_data && task.last_progress.elapsed() >= bound {
                return Err(ConnError::Stalled(format!(
                    "write ITT {itt:#x} received no Data-Out for {bound:?}"
                )));
            }
        }
        Ok(())
    }
}
