//! The direct path for large Data-Out segments: read from the socket straight into the command's
//! buffer (see `WriteCollector::dest_for`), one copy where the ordinary path copies into the receive
//! buffer and later joins the segments.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Conn, ConnError, TaskState};
use crate::pdu::{BHS_LEN, DataOut, pad_len};
use std::time::Duration;

/// Outcome of [`Conn::directed_data_out`].
pub(super) enum Directed {
    /// The PDU was consumed.
    Done,
    /// Not a PDU for the direct path: decode it as usual.
    No,
    /// The connection ended meanwhile.
    Closed,
}

impl Conn {
    /// Reads a large Data-Out segment straight from the socket into its command's buffer (one copy,
    /// where the ordinary path copies into the receive buffer and later joins the segments). Only for
    /// a PDU that passes every check the ordinary path makes; anything else is left to that path.
    pub(super) async fn directed_data_out<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        d: &DataOut,
        len: u32,
        shutdown: &CancellationToken,
    ) -> Result<Directed, ConnError> {
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return Ok(Directed::No);
        };
        let TaskState::Collecting(Some(col)) = &mut task.state else {
            return Ok(Directed::No);
        };
        let Some(dest) = col.dest_for(d, len) else {
            return Ok(Directed::No);
        };
        // The main loop's keepalive does not run meanwhile: an initiator that stops sending inside the
        // segment is given what keepalive would give it (a ping interval and its timeout), then dropped.
        let cfg = self.server.config();
        let stall = (!cfg.nop_interval.is_zero()).then(|| cfg.nop_interval + cfg.nop_timeout);
        let seg = len as usize;
        buf.advance(BHS_LEN);
        let have = buf.len().min(seg);
        dest.extend_from_slice(&buf[..have]);
        buf.advance(have);
        let end = dest.len() + (seg - have);
        let closed = &self.conn_closed;
        while dest.len() < end {
            let want = end - dest.len();
            if !read_some(rd, &mut (&mut *dest).limit(want), shutdown, closed, stall).await? {
                return Ok(Directed::Closed);
            }
        }
        let pad = pad_len(seg);
        while buf.len() < pad {
            if !read_some(rd, buf, shutdown, closed, stall).await? {
                return Ok(Directed::Closed);
            }
        }
        buf.advance(pad);
        col.commit_data_out(d, len);
        task.last_progress = Instant::now();
        let admitted = task.admitted;
        self.last_rx = Instant::now();
        self.ping = None;
        if admitted {
            self.progress(d.itt).await?;
        }
        Ok(Directed::Done)
    }
}

/// One read from the socket into `dst`; false when the connection ended meanwhile. An initiator silent
/// for `stall` (None: keepalive off, no bound) fails the connection.
async fn read_some<R: AsyncRead + Unpin, B: BufMut>(
    rd: &mut R,
    dst: &mut B,
    shutdown: &CancellationToken,
    closed: &CancellationToken,
    stall: Option<Duration>,
) -> Result<bool, ConnError> {
    let stalled = async {
        match stall {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(false),
        _ = closed.cancelled() => Ok(false),
        _ = stalled => Err(ConnError::Protocol("initiator stopped sending inside a Data-Out PDU".into())),
        n = tokio::io::AsyncReadExt::read_buf(rd, dst) => Ok(n? != 0),
    }
}
