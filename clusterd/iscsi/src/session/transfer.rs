//! Data movement for one SCSI command (RFC 7143 §11.7–§11.8): collecting write data (immediate,
//! unsolicited Data-Out, R2T-solicited Data-Out) with DataSN/offset validation, and building the
//! Data-In/SCSI Response PDUs of a completed command.
//!
//! Both directions are pure so the rules can be tested without sockets. With DataPDUInOrder=Yes and
//! DataSequenceInOrder=Yes (what this target negotiates), write data arrives at strictly increasing
//! offsets, so the collector only has to track "next expected byte".

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::pdu::{DataIn, DataOut, Pdu, RESERVED_TAG, ScsiResponsePdu};

/// Largest write a single command may carry; bounds the memory one command can make us buffer.
pub const MAX_WRITE_BYTES: u32 = 64 * 1024 * 1024;

/// Protocol violations in a data transfer; at ERL 0 each fails the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("immediate data of {got} bytes exceeds the allowed {allowed}")]
    TooMuchImmediateData { got: u32, allowed: u32 },
    #[error("unsolicited data not allowed (InitialR2T=Yes)")]
    UnsolicitedNotAllowed,
    #[error("Data-Out TTT {ttt:#x} does not match any outstanding transfer")]
    UnexpectedTtt { ttt: u32 },
    #[error("Data-Out DataSN {got} where {expected} was expected")]
    DataSn { got: u32, expected: u32 },
    #[error("Data-Out buffer offset {got} where {expected} was expected")]
    Offset { got: u32, expected: u32 },
    #[error("Data-Out overruns its sequence")]
    Overrun,
    #[error("Data-Out F bit does not match the end of the sequence")]
    FinalBit,
}

/// Negotiated limits relevant to data transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    pub first_burst: u32,
    pub max_burst: u32,
    pub max_outstanding_r2t: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
}

/// One R2T to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRequest {
    pub ttt: u32,
    pub r2t_sn: u32,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug)]
struct Sequence {
    ttt: u32,
    end: u32,
    next_data_sn: u32,
}

/// Writes at least this large that arrive in more than one PDU are collected in one buffer of the
/// command's full length, into which Data-Out segments are read straight from the socket (see
/// [`WriteCollector::dest_for`]); smaller ones keep their PDUs' segments and join them at the end.
pub const DIRECT_COLLECT_MIN: u32 = 64 * 1024;
/// Larger writes keep the per-PDU segments: the one buffer is reserved up front, and this bounds what
/// a command that announces much but sends little can reserve.
pub const DIRECT_COLLECT_MAX: u32 = 16 * 1024 * 1024;

/// Collects the Data-Out of one write command.
#[derive(Debug)]
pub struct WriteCollector {
    edtl: u32,
    chunks: Vec<Bytes>,
    /// The command's whole data, filled in offset order (large multi-PDU writes only).
    dest: Option<BytesMut>,
    received: u32,
    /// The unsolicited sequence, while it is open.
    unsolicited: Option<Sequence>,
    solicited: VecDeque<Sequence>,
    next_r2t_offset: u32,
    next_r2t_sn: u32,
    limits: TransferLimits,
}

impl WriteCollector {
    /// `final_bit` is the SCSI Command's F bit: clear means unsolicited Data-Out follows.
    pub fn new(
        edtl: u32,
        immediate: Bytes,
        final_bit: bool,
        limits: TransferLimits,
    ) -> Result<Self, TransferError> {
        let imm_len = u32::try_from(immediate.len()).unwrap_or(u32::MAX);
        let unsolicited_limit = edtl.min(limits.first_burst);
        let allowed = if limits.immediate_data {
            unsolicited_limit
        } else {
            0
        };
        if imm_len > allowed {
            return Err(TransferError::TooMuchImmediateData {
                got: imm_len,
                allowed,
            });
        }
        let unsolicited = if !final_bit && imm_len < unsolicited_limit {
            if limits.initial_r2t {
                return Err(TransferError::UnsolicitedNotAllowed);
            }
            Some(Sequence {
                ttt: RESERVED_TAG,
                end: unsolicited_limit,
                next_data_sn: 0,
            })
        } else {
            None
        };
        // WHY one buffer: joining a 1 MiB write's four 256 KiB PDUs at the end was a full extra copy (and
        // page faults on the joined buffer); reading the later segments straight into place is not.
        let mut dest = None;
        let mut chunks = Vec::new();
        if (DIRECT_COLLECT_MIN..=DIRECT_COLLECT_MAX).contains(&edtl) && imm_len < edtl {
            let mut d = BytesMut::with_capacity(edtl as usize);
            d.extend_from_slice(&immediate);
            dest = Some(d);
        } else if !immediate.is_empty() {
            chunks.push(immediate);
        }
        Ok(WriteCollector {
            edtl,
            chunks,
            dest,
            received: imm_len,
            unsolicited,
            solicited: VecDeque::new(),
            next_r2t_offset: if final_bit {
                imm_len
            } else {
                imm_len.max(unsolicited_limit)
            },
            next_r2t_sn: 0,
            limits,
        })
    }

    /// Accepts one Data-Out PDU.
    pub fn on_data_out(&mut self, hdr: &DataOut, data: Bytes) -> Result<(), TransferError> {
        let len = u32::try_from(data.len()).map_err(|_| TransferError::Overrun)?;
        self.check_data_out(hdr, len)?;
        match self.dest.as_mut() {
            Some(d) => d.extend_from_slice(&data),
            None if !data.is_empty() => self.chunks.push(data),
            None => {}
        }
        self.commit_data_out(hdr, len);
        Ok(())
    }

    /// Where a Data-Out segment of `len` bytes described by `hdr` goes, if it passes every check of
    /// [`Self::on_data_out`] and this command collects into one buffer: the caller appends exactly
    /// `len` bytes to the returned buffer, then calls [`Self::commit_data_out`]. None: use
    /// `on_data_out` with the PDU (which also reports what is wrong with it).
    pub fn dest_for(&mut self, hdr: &DataOut, len: u32) -> Option<&mut BytesMut> {
        self.check_data_out(hdr, len).ok()?;
        self.dest.as_mut()
    }

    /// The checks of one Data-Out PDU, without changing anything.
    fn check_data_out(&self, hdr: &DataOut, len: u32) -> Result<(), TransferError> {
        let seq = if hdr.ttt == RESERVED_TAG {
            self.unsolicited
                .as_ref()
                .ok_or(TransferError::UnexpectedTtt { ttt: hdr.ttt })?
        } else {
            // In-order sequences: only the oldest outstanding R2T may receive data.
            match self.solicited.front() {
                Some(s) if s.ttt == hdr.ttt && self.unsolicited.is_none() => s,
                _ => return Err(TransferError::UnexpectedTtt { ttt: hdr.ttt }),
            }
        };
        if hdr.data_sn != seq.next_data_sn {
            return Err(TransferError::DataSn {
                got: hdr.data_sn,
                expected: seq.next_data_sn,
            });
        }
        if hdr.buffer_offset != self.received {
            return Err(TransferError::Offset {
                got: hdr.buffer_offset,
                expected: self.received,
            });
        }
        let new_received = self
            .received
            .checked_add(len)
            .ok_or(TransferError::Overrun)?;
        if new_received > seq.end {
            return Err(TransferError::Overrun);
        }
        if hdr.final_bit != (new_received == seq.end) {
            return Err(TransferError::FinalBit);
        }
        Ok(())
    }

    /// Records a Data-Out PDU that passed [`Self::check_data_out`] and whose data is stored.
    pub fn commit_data_out(&mut self, hdr: &DataOut, len: u32) {
        let seq = if hdr.ttt == RESERVED_TAG {
            self.unsolicited.as_mut()
        } else {
            self.solicited.front_mut()
        };
        // Checked by `check_data_out` on this same state: both exist and nothing overflows.
        let Some(seq) = seq else { return };
        let new_received = self.received.saturating_add(len);
        let seq_done = new_received == seq.end;
        seq.next_data_sn = seq.next_data_sn.wrapping_add(1);
        self.received = new_received;
        if seq_done {
            if hdr.ttt == RESERVED_TAG {
                self.unsolicited = None;
            } else {
                self.solicited.pop_front();
            }
        }
    }

    /// R2Ts to send now (the command must have been admitted in CmdSN order). `alloc_ttt` hands out
    /// connection-unique target transfer tags.
    pub fn next_r2ts(&mut self, mut alloc_ttt: impl FnMut() -> u32) -> Vec<R2tRequest> {
        let mut out = Vec::new();
        if self.unsolicited.is_some() {
            return out;
        }
        while self.next_r2t_offset < self.edtl
            && (self.solicited.len() as u64) < u64::from(self.limits.max_outstanding_r2t.max(1))
        {
            let len = (self.edtl - self.next_r2t_offset).min(self.limits.max_burst.max(512));
            let req = R2tRequest {
                ttt: alloc_ttt(),
                r2t_sn: self.next_r2t_sn,
                offset: self.next_r2t_offset,
                len,
            };
            self.next_r2t_sn = self.next_r2t_sn.wrapping_add(1);
            self.next_r2t_offset += len;
            self.solicited.push_back(Sequence {
                ttt: req.ttt,
                end: self.next_r2t_offset,
                next_data_sn: 0,
            });
            out.push(req);
        }
        out
    }

    /// All expected data has arrived.
    pub fn is_complete(&self) -> bool {
        self.unsolicited.is_none() && self.solicited.is_empty() && self.next_r2t_offset >= self.edtl
    }

    /// Number of R2Ts sent so far (ExpDataSN of the SCSI Response).
    pub fn r2t_count(&self) -> u32 {
        self.next_r2t_sn
    }

    /// The collected data; a single PDU's data is passed on without copying.
    pub fn into_data(mut self) -> Bytes {
        if let Some(d) = self.dest.take() {
            return d.freeze();
        }
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.received as usize);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        }
    }
}

/// Residual flags and count for EDTL versus the length the command wanted to transfer.
pub fn residual(edtl: u32, transfer_len: u32) -> (bool, bool, u32) {
    if transfer_len > edtl {
        (true, false, transfer_len - edtl)
    } else if transfer_len < edtl {
        (false, true, edtl - transfer_len)
    } else {
        (false, false, 0)
    }
}

/// One PDU of a command's response, before the writer stamps StatSN/ExpCmdSN/MaxCmdSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePdu {
    pub pdu: Pdu,
    pub data: Bytes,
    /// Whether this PDU carries status and so takes (and advances) a StatSN.
    pub has_status: bool,
}

/// What the SCSI layer answered, in transport terms.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub status: u8,
    pub data_in: Bytes,
    pub sense: Option<Bytes>,
    pub transfer_len: u32,
}

/// The command and connection facts a response depends on.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext {
    pub itt: u32,
    /// LUN field as received (echoed, not re-encoded).
    pub raw_lun: u64,
    /// Expected data transfer length from the command PDU.
    pub edtl: u32,
    pub is_read: bool,
    /// The initiator's MaxRecvDataSegmentLength (capped by the target).
    pub max_xmit: u32,
    pub max_burst: u32,
    /// R2Ts already sent for the command (they count towards ExpDataSN).
    pub r2t_count: u32,
}

/// Builds Data-In PDUs (split by `max_xmit`, sequences bounded by `max_burst`) and the SCSI Response.
/// GOOD status without sense rides on the last Data-In (S bit), saving one PDU per read.
pub fn build_response(ctx: &ResponseContext, outcome: &CommandOutcome) -> Vec<ResponsePdu> {
    let ResponseContext {
        itt,
        raw_lun,
        edtl,
        is_read,
        ..
    } = *ctx;
    let exp_data_sn_base = ctx.r2t_count;
    let max_xmit = ctx.max_xmit.max(512) as usize;
    let max_burst = ctx.max_burst.max(512) as usize;
    let send_len = if is_read {
        outcome.data_in.len().min(edtl as usize)
    } else {
        0
    };
    // For a successful read the device's data (already cut to the CDB allocation length) is what it
    // wanted to transfer: MODE SENSE returning 36 of 255 allocated bytes is an underflow (libiscsi
    // ModeSense6.Residuals). Otherwise the CDB's transfer length counts.
    let wanted = if is_read && outcome.status == 0 {
        u32::try_from(outcome.data_in.len()).unwrap_or(u32::MAX)
    } else {
        outcome.transfer_len
    };
    let (overflow, underflow, residual_count) = residual(edtl, wanted);
    let piggyback = send_len > 0 && outcome.status == 0 && outcome.sense.is_none();
    let mut out = Vec::new();
    let mut offset = 0usize;
    let mut data_sn = 0u32;
    let mut burst_used = 0usize;
    while offset < send_len {
        let len = (send_len - offset)
            .min(max_xmit)
            .min(max_burst - burst_used);
        let last = offset + len == send_len;
        burst_used += len;
        let end_of_burst = burst_used == max_burst;
        if end_of_burst {
            burst_used = 0;
        }
        let with_status = last && piggyback;
        let pdu = DataIn {
            final_bit: last || end_of_burst,
            status_present: with_status,
            status: if with_status { outcome.status } else { 0 },
            overflow: with_status && overflow,
            underflow: with_status && underflow,
            residual: if with_status { residual_count } else { 0 },
            lun: raw_lun,
            itt,
            ttt: RESERVED_TAG,
            data_sn,
            buffer_offset: offset as u32,
            ..DataIn::default()
        };
        out.push(ResponsePdu {
            pdu: Pdu::DataIn(pdu),
            data: outcome.data_in.slice(offset..offset + len),
            has_status: with_status,
        });
        data_sn = data_sn.wrapping_add(1);
        offset += len;
    }
    if !piggyback {
        let data = match &outcome.sense {
            Some(sense) => {
                let mut d = BytesMut::with_capacity(2 + sense.len());
                d.extend_from_slice(&(sense.len().min(u16::MAX as usize) as u16).to_be_bytes());
                d.extend_from_slice(&sense[..sense.len().min(u16::MAX as usize)]);
                d.freeze()
            }
            None => Bytes::new(),
        };
        let pdu = ScsiResponsePdu {
            overflow,
            underflow,
            residual: residual_count,
            status: outcome.status,
            response: 0,
            itt,
            exp_data_sn: exp_data_sn_base.wrapping_add(data_sn),
            ..ScsiResponsePdu::default()
        };
        out.push(ResponsePdu {
            pdu: Pdu::ScsiResponse(pdu),
            data,
            has_status: true,
        });
    }
    out
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
