//! Control PDUs of the full feature phase: task management, logout and text (SendTargets).

use bytes::Bytes;

use super::{Conn, Flow, reject_reason};
use crate::login::keys::{KeyAnswer, negotiate_key};
use crate::login::{SessionType, encode_text, parse_text};
use crate::pdu::{
    BHS_LEN, LogoutResponse, Pdu, RESERVED_TAG, TaskMgmtRequest, TaskMgmtResponse, TextResponse,
};
use crate::session::ConnError;
use crate::session::cmdsn::serial_lt;
use crate::session::decode_lun;
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
        let mut close = false;
        let response = match (t.function, &self.ctx) {
            (_, None) => tmf_response::NOT_SUPPORTED,
            (1, Some(_)) => {
                if self.tasks.contains_key(&t.referenced_task_tag) {
                    self.abort_one(t.referenced_task_tag).await;
                    tmf_response::COMPLETE
                } else if serial_lt(t.ref_cmd_sn, self.counters.exp_cmd_sn()) {
                    // Already completed and answered: the abort is trivially complete.
                    tmf_response::COMPLETE
                } else {
                    tmf_response::NO_TASK
                }
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
            let _ = self.out.send(Outbound::Close).await;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
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

    pub(super) async fn text(
        &mut self,
        itt: u32,
        ttt: u32,
        continue_bit: bool,
        data: &[u8],
        header: [u8; BHS_LEN],
    ) {
        if ttt != RESERVED_TAG {
            match self.text_pending.take() {
                Some((pending_ttt, rest)) if pending_ttt == ttt => self.send_text(itt, rest).await,
                _ => self.reject(reject_reason::INVALID_PDU_FIELD, header).await,
            }
            return;
        }
        self.text_pending = None;
        let pairs = match parse_text(data) {
            Ok(p) if !continue_bit => p,
            _ => {
                self.reject(reject_reason::INVALID_PDU_FIELD, header).await;
                return;
            }
        };
        let mut reply = Vec::new();
        for (k, v) in pairs {
            if k == "SendTargets" {
                let current = match self.session_type {
                    SessionType::Normal => self.target_name.as_deref(),
                    SessionType::Discovery => None,
                };
                let peer = self.peer.ip();
                reply.extend(self.server.send_targets(
                    &v,
                    &self.initiator,
                    peer,
                    self.local,
                    current,
                ));
            } else {
                // Renegotiation in the full feature phase is not supported: known keys are refused.
                let mut scratch = self.params.clone();
                let dummy = crate::login::TargetParams::default();
                let answer = match negotiate_key(&k, &v, &dummy, self.session_type, &mut scratch) {
                    KeyAnswer::Reply(a) if a == "NotUnderstood" => a,
                    _ => "Reject".to_string(),
                };
                reply.push((k, answer));
            }
        }
        self.send_text(itt, Bytes::from(encode_text(&reply))).await;
    }

    /// Sends a text response, split with the C bit when longer than the initiator's receive limit.
    async fn send_text(&mut self, itt: u32, data: Bytes) {
        let max = self.params.max_xmit_data_segment_length.max(512) as usize;
        let (pdu, chunk) = if data.len() <= max {
            (
                TextResponse {
                    final_bit: true,
                    itt,
                    ttt: RESERVED_TAG,
                    ..TextResponse::default()
                },
                data,
            )
        } else {
            let ttt = self.alloc_ttt();
            self.text_pending = Some((ttt, data.slice(max..)));
            (
                TextResponse {
                    continue_bit: true,
                    itt,
                    ttt,
                    ..TextResponse::default()
                },
                data.slice(..max),
            )
        };
        self.send(Pdu::TextResponse(pdu), chunk, Stat::Advance)
            .await;
    }
}
