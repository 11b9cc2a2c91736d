//! Control PDUs of the full feature phase: task management, logout and text (SendTargets).

use bytes::Bytes;

use super::{Conn, Flow, Queued, Task};
use crate::login::{SessionParams, SessionType};
use crate::pdu::{
    BHS_LEN, LogoutResponse, Pdu, RESERVED_TAG, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
};
use crate::session::ConnError;
use crate::session::cmdsn::{Submitted, serial_lt};
use crate::session::decode_lun;
use crate::session::text_exchange::{TextAnswer, TextContext};
use crate::session::writer::{Outbound, Stat};

/// TMF response codes (RFC 7143 §11.6.1).
mod tmf_response {
    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const NO_LUN: u8 = 2;
    pub const REASSIGN_NOT_SUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
}

impl Conn {
    pub(super) async fn task_management(&mut self, t: TaskMgmtRequest) -> Result<Flow, ConnError> {
        let lun = decode_lun(t.lun);
        if let Some(s) = &self.stats {
            s.counters().task_management(t.function);
        }
        let mut close = false;
        let response = match (t.function, &self.ctx) {
            (_, None) => tmf_response::NOT_SUPPORTED,
            (1, Some(_)) => {
                let (response, flow) = self.abort_task(&t).await?;
                close = matches!(flow, Flow::Stop);
                response
            }
            (2 | 4, Some(_)) => {
                self.abort_tasks(|task| task.lun == lun).await;
                tmf_response::COMPLETE
            }
            (5, Some(ctx)) => {
                let (scsi, nexus) = (ctx.scsi.clone(), ctx.nexus.clone());
                self.abort_tasks(|task| task.lun == lun).await;
                if scsi.lun_reset(&nexus, lun) {
                    tmf_response::COMPLETE
                } else {
                    tmf_response::NO_LUN
                }
            }
            (6 | 7, Some(ctx)) => {
                let (scsi, nexus) = (ctx.scsi.clone(), ctx.nexus.clone());
                self.abort_tasks(|_| true).await;
                scsi.target_reset(&nexus, t.function == 7);
                // A cold reset also drops the connections (RFC 7143 §11.5.1).
                close = t.function == 7;
                tmf_response::COMPLETE
            }
            (8, Some(_)) => tmf_response::REASSIGN_NOT_SUPPORTED,
            _ => tmf_response::NOT_SUPPORTED,
        };
        let pdu = TaskMgmtResponse {
            response,
            itt: t.itt,
            ..TaskMgmtResponse::default()
        };
        self.send(Pdu::TaskMgmtResponse(pdu), Bytes::new(), Stat::Advance)
            .await;
        if close {
            // A cold reset, or a logout an ABORT TASK released from the CmdSN queue (it has already
            // answered and drained).
            if t.function == 7 {
                let _ = self.out.send(Outbound::Close).await;
            }
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// ABORT TASK (RFC 7143 §11.5.1, SAM-5 §7.2): "Function complete" only when the task really was
    /// aborted (it will never answer) or was never received; a task that already answered, or a CmdSN
    /// outside the window, is "Task does not exist".
    /// The second value says whether a logout the abort released from the CmdSN queue ended the
    /// connection.
    async fn abort_task(&mut self, t: &TaskMgmtRequest) -> Result<(u8, Flow), ConnError> {
        let itt = t.referenced_task_tag;
        let lun = decode_lun(t.lun);
        if self.tasks.get(&itt).is_some_and(|task: &Task| task.lun == lun) {
            let response = if self.abort_one(itt).await {
                tmf_response::COMPLETE
            } else {
                tmf_response::NO_TASK
            };
            return Ok((response, Flow::Continue));
        }
        let (exp, max) = self.counters.snapshot();
        let in_window = !serial_lt(t.ref_cmd_sn, exp) && !serial_lt(max, t.ref_cmd_sn);
        if !in_window || !serial_lt(t.ref_cmd_sn, t.cmd_sn) {
            return Ok((tmf_response::NO_TASK, Flow::Continue));
        }
        // Never seen but owed: consider that CmdSN received, so the command is ignored if it still
        // arrives and the commands after it are not held up by the gap.
        match self
            .seq
            .submit(&self.counters, t.ref_cmd_sn, Queued::Received, false)
        {
            // Boxed: delivery can reach another TMF, so the future is recursive.
            Submitted::Deliver(items) => {
                let flow = Box::pin(self.deliver(items)).await?;
                Ok((tmf_response::COMPLETE, flow))
            }
            Submitted::Buffered => Ok((tmf_response::COMPLETE, Flow::Continue)),
            Submitted::Ignored => Ok((tmf_response::NO_TASK, Flow::Continue)),
        }
    }

    pub(super) async fn logout(&mut self, itt: u32, reason: u8, cid: u16) -> Flow {
        let response = match reason {
            0 => 0,
            1 if cid == self.cid => 0,
            1 => 1,
            // Removing a connection for recovery needs ERL 2.
            _ => 2,
        };
        if response == 0 {
            self.drain().await;
        }
        let pdu = LogoutResponse {
            response,
            itt,
            time2wait: self.params.default_time2wait.min(u32::from(u16::MAX)) as u16,
            time2retain: self.params.default_time2retain.min(u32::from(u16::MAX)) as u16,
            ..LogoutResponse::default()
        };
        self.send(Pdu::LogoutResponse(pdu), Bytes::new(), Stat::Advance)
            .await;
        if response != 0 {
            return Flow::Continue;
        }
        let _ = self.out.send(Outbound::Close).await;
        Flow::Stop
    }

    /// Answers a Text Request: every one gets a Text Response or a Reject (see `TextExchange`).
    pub(super) async fn text(&mut self, req: TextRequest, data: &[u8], header: [u8; BHS_LEN]) {
        let mut exchange = std::mem::take(&mut self.text);
        let ctx = TextCtx {
            conn: self,
            current: match self.session_type {
                SessionType::Normal => self.target_name.as_deref(),
                SessionType::Discovery => None,
            },
        };
        let mut next_ttt = self.next_ttt;
        let mut alloc = || {
            let t = next_ttt;
            next_ttt = next_ttt.wrapping_add(1);
            if next_ttt == RESERVED_TAG || next_ttt == 0 {
                next_ttt = 1;
            }
            t
        };
        let answer = exchange.step(&req, data, &ctx, &mut alloc);
        self.text = exchange;
        self.next_ttt = next_ttt;
        match answer {
            TextAnswer::Response(pdu, data) => {
                self.send(Pdu::TextResponse(pdu), data, Stat::Advance).await;
            }
            TextAnswer::Reject { reason, why } => {
                tracing::debug!(itt = req.itt, why, "Text Request rejected");
                self.reject(reason, header).await;
            }
        }
    }
}

/// What a text exchange needs to know about this connection.
struct TextCtx<'a> {
    conn: &'a Conn,
    current: Option<&'a str>,
}

impl TextContext for TextCtx<'_> {
    fn session_type(&self) -> SessionType {
        self.conn.session_type
    }
    fn send_targets(&self, value: &str) -> Vec<(String, String)> {
        let c = self.conn;
        c.server
            .send_targets(value, &c.initiator, c.peer.ip(), c.local, self.current)
    }
    fn params(&self) -> &SessionParams {
        &self.conn.params
    }
}
