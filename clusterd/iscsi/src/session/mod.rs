//! Connection and session handling on tokio: the login phase over the socket (including session
//! reinstatement), then the full feature phase in [`ffp`].
//!
//! One connection per session (MaxConnections=1, ERL 0): losing the connection ends the session, its
//! in-flight commands are drained first so nothing of it can touch the media afterwards.

pub mod cmdsn;
mod ffp;
pub mod text_exchange;
pub mod transfer;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use writer::{Outbound, Stat};

use crate::login::{LoginMachine, LoginOutcome, LoginResult, SessionType, status};
use crate::pdu::{DigestConfig, Frame, Pdu, PduError, decode_frame, encode};
use crate::server::{SessionEntry, SessionInfo, TargetServer};
use crate::stats::LoginRefusal;
use cmdsn::WindowCounters;

/// Largest login PDU data segment accepted (the RFC's default MRDSL is 8192; be lenient).
const LOGIN_MAX_DATA: u32 = 65_536;
/// How long a reinstating login waits for the old session to drain.
const REINSTATE_WAIT: Duration = Duration::from_secs(30);
/// Queue between command tasks and the writer.
const OUTBOUND_QUEUE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("PDU: {0}")]
    Pdu(#[from] PduError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A PDU that needs an answer could not get one within the reply bound.
    #[error("stalled: {0}")]
    Stalled(String),
}

/// Decodes LUN field addressing (SAM): single-level peripheral (0x00, LUN ≤ 255 with bus 0) and flat
/// space (0x40 | high 6 bits). Other forms map to `u64::MAX`, which no LU uses.
pub fn decode_lun(raw: u64) -> u64 {
    let b = raw.to_be_bytes();
    if b[2..].iter().any(|x| *x != 0) {
        return u64::MAX;
    }
    match b[0] >> 6 {
        0 if b[0] == 0 => u64::from(b[1]),
        1 => (u64::from(b[0] & 0x3f) << 8) | u64::from(b[1]),
        _ => u64::MAX,
    }
}

/// Encodes a LUN number in the form initiators expect (peripheral below 256, flat above).
pub fn encode_lun(lun: u64) -> u64 {
    if lun < 256 {
        lun << 48
    } else {
        (0x4000 | (lun & 0x3fff)) << 48
    }
}

/// Reads until one whole frame is buffered. `Ok(None)` on a clean EOF.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    digests: DigestConfig,
    max_data: u32,
) -> Result<Option<Frame>, ConnError> {
    loop {
        if let Some(frame) = decode_frame(buf, digests, max_data)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

static SESSION_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A byte stream a session runs over: a TCP connection in production, an in-memory pipe in tests that
/// drive whole sessions on a paused clock. Splitting lets the reader and the writer task own a half each.
pub trait SessionIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl SessionIo for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl SessionIo for tokio::io::DuplexStream {
    type Read = tokio::io::ReadHalf<tokio::io::DuplexStream>;
    type Write = tokio::io::WriteHalf<tokio::io::DuplexStream>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// What a successful login hands to the full feature phase.
pub(crate) struct Established {
    pub(crate) login: LoginResult,
    pub(crate) tsih: u16,
    pub(crate) counters: Arc<WindowCounters>,
    pub(crate) outbound: (mpsc::Sender<Outbound>, mpsc::Receiver<Outbound>),
    /// Registry serial and "finished" signal for normal sessions.
    pub(crate) registration: Option<(u64, watch::Sender<bool>)>,
}

/// Serves one connection from accept to close. `local` is the address the connection arrived on
/// (SendTargets answers with it for wildcard portals).
pub(crate) async fn run_connection<S: SessionIo>(
    server: Arc<TargetServer>,
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let timeout = server.config().login_timeout;
    let login = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(timeout, login_phase(&server, &mut stream, &mut buf, peer, local, &shutdown)) => r,
    };
    let established = match login {
        Ok(Ok(Some(e))) => e,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "login failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "login timed out");
            return;
        }
    };
    ffp::run(server, stream, buf, peer, local, established, shutdown).await;
}

async fn send_login_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    pdu: Pdu,
    data: bytes::Bytes,
) -> Result<(), ConnError> {
    let out = encode(&pdu, data, DigestConfig::default())?;
    stream.write_all(&out.to_vec()).await?;
    Ok(())
}

async fn login_phase<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Arc<TargetServer>,
    stream: &mut S,
    buf: &mut BytesMut,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Option<Established>, ConnError> {
    let directory: Arc<dyn crate::login::LoginDirectory> = server.clone();
    // The local address picks the target's portal group (TPGT) for this login.
    let mut machine = LoginMachine::with_local(directory, peer.ip(), local);
    loop {
        let Some(frame) = read_frame(stream, buf, DigestConfig::default(), LOGIN_MAX_DATA).await?
        else {
            return Ok(None);
        };
        let Pdu::LoginRequest(req) = &frame.pdu else {
            return Err(ConnError::Protocol("non-login PDU during login".into()));
        };
        let mut step = machine.step(req, &frame.data);
        match step.outcome {
            LoginOutcome::Continue => {
                send_login_response(stream, Pdu::LoginResponse(step.response), step.data).await?;
            }
            LoginOutcome::Failed => {
                let (class, detail) = (step.response.status_class, step.response.status_detail);
                server.config().stats.login_refused(LoginRefusal::from_status(class, detail));
                send_login_response(stream, Pdu::LoginResponse(step.response), step.data).await?;
                return Ok(None);
            }
            LoginOutcome::Complete(result) => {
                let result = *result;
                let outbound = mpsc::channel(OUTBOUND_QUEUE);
                let admitted = admit_session(server, &result, peer, shutdown, &outbound.0).await;
                let (tsih, registration) = match admitted {
                    Ok(a) => a,
                    Err(code) => {
                        server.config().stats.login_refused(LoginRefusal::from_status(code.0, code.1));
                        step.response.transit = false;
                        step.response.nsg = 0;
                        step.response.status_class = code.0;
                        step.response.status_detail = code.1;
                        send_login_response(
                            stream,
                            Pdu::LoginResponse(step.response),
                            bytes::Bytes::new(),
                        )
                        .await?;
                        return Ok(None);
                    }
                };
                let depth = server.config().cmdsn_depth.max(1);
                let counters = Arc::new(WindowCounters::new(result.exp_cmd_sn, depth));
                step.response.tsih = tsih;
                step.response.max_cmd_sn = counters.max_cmd_sn();
                if let Err(e) =
                    send_login_response(stream, Pdu::LoginResponse(step.response), step.data).await
                {
                    if let Some((serial, _)) = &registration {
                        unregister(server, tsih, *serial);
                    }
                    return Err(e);
                }
                return Ok(Some(Established {
                    login: result,
                    tsih,
                    counters,
                    outbound,
                    registration,
                }));
            }
        }
    }
}

/// Assigns the TSIH and, for normal sessions, performs reinstatement (RFC 7143 §6.3.5): an existing
/// session of the same initiator port (name + ISID) to the same target is closed and drained before
/// the new one is registered.
async fn admit_session(
    server: &Arc<TargetServer>,
    result: &LoginResult,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    outbound: &mpsc::Sender<Outbound>,
) -> Result<(u16, Option<(u64, watch::Sender<bool>)>), (u8, u8)> {
    if result.session_type == SessionType::Discovery {
        return Ok((server.registry().allocate_tsih(), None));
    }
    let target = result.target.as_ref().ok_or(status::TARGET_ERROR)?;
    let same_port = |e: &SessionEntry| {
        e.info
            .initiator
            .eq_ignore_ascii_case(&result.initiator_name)
            && e.info.isid == result.isid
            && e.info.target.eq_ignore_ascii_case(&target.name)
            && e.info.tpgt == target.tpgt
    };
    let old: Vec<(CancellationToken, watch::Receiver<bool>)> = {
        let mut reg = server.registry();
        if result.requested_tsih != 0 {
            match reg.sessions.get(&result.requested_tsih) {
                Some(e) if same_port(e) => {}
                _ => return Err(status::SESSION_DOES_NOT_EXIST),
            }
        }
        let keys: Vec<u16> = reg
            .sessions
            .iter()
            .filter(|(_, e)| same_port(e))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| reg.sessions.remove(k))
            .map(|e| (e.cancel, e.finished))
            .collect()
    };
    for (cancel, mut finished) in old {
        tracing::info!(initiator = %result.initiator_name, "reinstating session: draining the old one");
        cancel.cancel();
        let drained = tokio::time::timeout(REINSTATE_WAIT, finished.wait_for(|done| *done)).await;
        if drained.is_err() {
            return Err(status::TARGET_ERROR);
        }
    }
    let serial = SESSION_SERIAL.fetch_add(1, Ordering::Relaxed);
    let (fin_tx, fin_rx) = watch::channel(false);
    let mut reg = server.registry();
    let tsih = if result.requested_tsih != 0 {
        result.requested_tsih
    } else {
        reg.allocate_tsih()
    };
    let info = SessionInfo {
        initiator: result.initiator_name.clone(),
        initiator_alias: result.initiator_alias.clone(),
        isid: result.isid,
        tsih,
        target: target.name.clone(),
        tpgt: target.tpgt,
        peer,
        params: result.params.clone(),
    };
    reg.sessions.insert(
        tsih,
        SessionEntry {
            info,
            cancel: shutdown.clone(),
            finished: fin_rx,
            outbound: outbound.clone(),
            serial,
        },
    );
    Ok((tsih, Some((serial, fin_tx))))
}

/// Removes a session's registry entry if it is still this session's (a reinstating login may have
/// replaced it already).
pub(crate) fn unregister(server: &TargetServer, tsih: u16, serial: u64) {
    let mut reg = server.registry();
    if reg.sessions.get(&tsih).is_some_and(|e| e.serial == serial) {
        reg.sessions.remove(&tsih);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing() {
        assert_eq!(decode_lun(0), 0);
        assert_eq!(decode_lun(0x0005_0000_0000_0000), 5);
        assert_eq!(decode_lun(0x4101_0000_0000_0000), 0x101);
        assert_eq!(
            decode_lun(0x0105_0000_0000_0000),
            u64::MAX,
            "bus 1 unsupported"
        );
        assert_eq!(decode_lun(0x0005_0000_0000_0001), u64::MAX);
        assert_eq!(decode_lun(0xc000_0000_0000_0000), u64::MAX);
        for lun in [0u64, 1, 255, 256, 0x3fff] {
            assert_eq!(decode_lun(encode_lun(lun)), lun);
        }
    }
}
