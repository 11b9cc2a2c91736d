//! The connection's writer task: stamps StatSN/ExpCmdSN/MaxCmdSN on each outgoing PDU at send time (so
//! sequence numbers follow wire order even though responses are produced concurrently) and sends
//! batches of PDUs with vectored writes, never copying data segments.

use std::io::IoSlice;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cmdsn::WindowCounters;
use crate::pdu::{DigestConfig, OutgoingPdu, Pdu, encode};

/// How an outgoing PDU uses StatSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Carries the next StatSN and advances it (responses with status).
    Advance,
    /// Carries the next StatSN without advancing it (R2T, Data-In without status, target NOP-In ping).
    Current,
}

/// A message to the writer task.
#[derive(Debug)]
pub enum Outbound {
    Pdu {
        pdu: Pdu,
        data: bytes::Bytes,
        stat: Stat,
    },
    /// Flush everything queued before, then close the connection's write side.
    Close,
}

/// Sets the sequence-number fields every target PDU carries.
pub fn stamp(pdu: &mut Pdu, stat_sn: u32, exp: u32, max: u32) {
    macro_rules! set {
        ($p:expr) => {{
            $p.stat_sn = stat_sn;
            $p.exp_cmd_sn = exp;
            $p.max_cmd_sn = max;
        }};
    }
    match pdu {
        Pdu::NopIn(p) => set!(p),
        Pdu::ScsiResponse(p) => set!(p),
        Pdu::TaskMgmtResponse(p) => set!(p),
        Pdu::LoginResponse(p) => set!(p),
        Pdu::TextResponse(p) => set!(p),
        Pdu::DataIn(p) => set!(p),
        Pdu::LogoutResponse(p) => set!(p),
        Pdu::R2t(p) => set!(p),
        Pdu::AsyncMessage(p) => set!(p),
        Pdu::Reject(p) => set!(p),
        // Initiator PDUs are never sent by the target.
        _ => {}
    }
}

/// Writes all slices, handling short writes.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        let n = w.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Most PDUs gathered into one vectored write.
const BATCH: usize = 64;

/// Runs until the channel closes, `Outbound::Close` is processed, or a write fails. On failure it
/// cancels `conn_closed` so the reader stops too.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Outbound>,
    counters: Arc<WindowCounters>,
    mut stat_sn: u32,
    digests: DigestConfig,
    conn_closed: CancellationToken,
) {
    let mut batch: Vec<OutgoingPdu> = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut close = false;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Outbound::Close => {
                    close = true;
                    break;
                }
                Outbound::Pdu {
                    mut pdu,
                    data,
                    stat,
                } => {
                    let (exp, max) = counters.snapshot();
                    stamp(&mut pdu, stat_sn, exp, max);
                    if stat == Stat::Advance {
                        stat_sn = stat_sn.wrapping_add(1);
                    }
                    match encode(&pdu, data, digests) {
                        Ok(out) => batch.push(out),
                        Err(e) => tracing::error!(error = %e, "cannot encode outgoing PDU"),
                    }
                }
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut slices: Vec<IoSlice<'_>> = batch
            .iter()
            .flat_map(|p| p.io_slices())
            .filter(|s| !s.is_empty())
            .collect();
        let result = write_all_vectored(&mut w, &mut slices).await;
        drop(slices);
        batch.clear();
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed; closing connection");
            conn_closed.cancel();
            return;
        }
        if close {
            let _ = w.flush().await;
            let _ = w.shutdown().await;
            conn_closed.cancel();
            return;
        }
    }
    let _ = w.flush().await;
}
