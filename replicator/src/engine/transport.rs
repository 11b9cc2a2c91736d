//! TCP for the replication link: one connection per resource on its dedicated address:port. The node
//! whose name sorts first connects (from its own address, so traffic stays on the dedicated link); the
//! other listens and accepts only the peer's address. Each connection gets a reader task (frames →
//! state machine) and an [`Outbox`] that the actor sends through (`outbox.rs`: small batches written by
//! the actor itself, the rest by a writer task). The state machine decides what a connection means;
//! this module only moves bytes.

use super::bufpool::BufPool;
use super::outbox::Outbox;
use crate::machine::Input;
use crate::wire::frame::{block_data_lead, decode, decode_payload, peek_header, Frame, WireError, HEADER_LEN};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// Commands from the state machine's actor (frames go straight to the connection's [`Outbox`]).
#[derive(Debug)]
pub enum TransportCmd {
    SetConnecting(bool),
    Close { conn: u64 },
}

/// The open connections' outboxes, by connection id: registered before the connection is announced
/// to the actor (`Input::TransportUp`), removed when it closes.
pub type Outboxes = Arc<Mutex<HashMap<u64, Arc<Outbox>>>>;

pub struct TransportSpec {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// This node initiates connections (the other accepts).
    pub connector: bool,
    pub connect_int: Duration,
    /// Buffers for received block data.
    pub bufs: BufPool,
}

type ToActor = Arc<dyn Fn(Input) + Send + Sync>;

enum Event {
    Cmd(TransportCmd),
    Stream(TcpStream),
    Gone(u64),
}

/// Start the transport. For the accepting side the listener is bound here, so a busy port is an error
/// at start-up rather than a silent retry loop.
pub async fn start(
    spec: TransportSpec,
    to_actor: ToActor,
    shutdown: CancellationToken,
) -> std::io::Result<(UnboundedSender<TransportCmd>, Outboxes)> {
    let (cmd_tx, mut cmd_rx) = unbounded_channel::<TransportCmd>();
    let outboxes: Outboxes = Arc::default();
    let registry = Arc::clone(&outboxes);
    let (ev_tx, mut ev_rx) = unbounded_channel::<Event>();
    if !spec.connector {
        // Accepted sockets inherit the listener's buffer sizes (set before listen, so the window scale
        // is negotiated for them).
        let sock = new_socket(spec.local)?;
        sock.set_reuseaddr(true)?;
        sock.bind(spec.local)?;
        let listener: TcpListener = sock.listen(128)?;
        let ev = ev_tx.clone();
        let peer_ip = spec.peer.ip();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((s, from)) if from.ip() == peer_ip => {
                        if ev.send(Event::Stream(s)).is_err() {
                            return;
                        }
                    }
                    Ok((_, from)) => tracing::warn!(%from, "replication link: refused a connection from an address that is not the peer's"),
                    Err(e) => {
                        tracing::warn!("replication link: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    let ev = ev_tx.clone();
    tokio::spawn(async move {
        while let Some(c) = cmd_rx.recv().await {
            if ev.send(Event::Cmd(c)).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut conns: HashMap<u64, CancellationToken> = HashMap::new();
        let unregister = |conn: u64| registry.lock().unwrap_or_else(|e| e.into_inner()).remove(&conn);
        let mut next_conn = 1u64;
        let mut connecting = false;
        let mut dialing = false;
        let mut retry = tokio::time::interval(spec.connect_int);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => break,
                e = ev_rx.recv() => match e { Some(e) => e, None => break },
                _ = retry.tick(), if spec.connector && connecting && conns.is_empty() && !dialing => {
                    dialing = true;
                    let ev = ev_tx.clone();
                    let (local, peer, int) = (spec.local, spec.peer, spec.connect_int);
                    tokio::spawn(async move {
                        match tokio::time::timeout(int.max(Duration::from_millis(500)), dial(local, peer)).await {
                            Ok(Ok(s)) => { let _ = ev.send(Event::Stream(s)); }
                            Ok(Err(e)) => { tracing::debug!("connect to {peer} failed: {e}"); let _ = ev.send(Event::Gone(0)); }
                            Err(_) => { let _ = ev.send(Event::Gone(0)); }
                        }
                    });
                    continue;
                }
            };
            match ev {
                Event::Cmd(TransportCmd::SetConnecting(on)) => connecting = on,
                Event::Cmd(TransportCmd::Close { conn }) => {
                    // The writer task writes what is queued (e.g. an Abort) first.
                    if let Some(out) = unregister(conn) {
                        out.close();
                    }
                    if let Some(cancel) = conns.remove(&conn) {
                        let c = cancel.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            c.cancel();
                        });
                    }
                }
                Event::Gone(0) => dialing = false,
                Event::Gone(conn) => {
                    conns.remove(&conn);
                    unregister(conn);
                }
                Event::Stream(s) => {
                    dialing = false;
                    let conn = next_conn;
                    next_conn += 1;
                    let cancel = shutdown.child_token();
                    conns.insert(conn, cancel.clone());
                    let _ = s.set_nodelay(true);
                    let (rd, wr) = s.into_split();
                    // Registered before the actor hears of the connection, so its first frames have
                    // somewhere to go.
                    let out = Outbox::start(wr, cancel.clone());
                    registry.lock().unwrap_or_else(|e| e.into_inner()).insert(conn, out);
                    // Announce the connection before its reader can deliver a frame: the reader task may
                    // run on another worker at once, and a Hello that reached the actor before
                    // TransportUp would be dropped (the handshake then fails on the next frame).
                    to_actor(Input::TransportUp { conn });
                    run_reader(conn, rd, cancel, Arc::clone(&to_actor), ev_tx.clone(), spec.bufs.clone());
                }
            }
        }
        for (_, c) in conns {
            c.cancel();
        }
        registry.lock().unwrap_or_else(|e| e.into_inner()).clear();
    });
    Ok((cmd_tx, outboxes))
}

/// Socket buffer size for both directions. WHY: with autotuning the buffers start small and every 1 MiB
/// write or resync block takes several send/receive rounds (each a wake-up on both sides) until the
/// window grows; a fixed size of a few in-flight blocks keeps the pipe full from the first write.
const SOCKET_BUF: u32 = 4 * 1024 * 1024;

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Best effort: a kernel that caps the sizes lower still works, just with a smaller window.
    let _ = sock.set_send_buffer_size(SOCKET_BUF);
    let _ = sock.set_recv_buffer_size(SOCKET_BUF);
    Ok(sock)
}

async fn dial(local: SocketAddr, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = new_socket(peer)?;
    sock.bind(SocketAddr::new(local.ip(), 0))?;
    sock.connect(peer).await
}

fn run_reader(
    conn: u64,
    rd: tokio::net::tcp::OwnedReadHalf,
    cancel: CancellationToken,
    to_actor: ToActor,
    ev: UnboundedSender<Event>,
    bufs: BufPool,
) {
    tokio::spawn(async move {
        let reason = tokio::select! {
            _ = cancel.cancelled() => "closed".to_string(),
            r = read_frames(rd, &bufs, |frame| to_actor(Input::Frame { conn, frame })) => r,
        };
        cancel.cancel();
        to_actor(Input::TransportDown { conn, reason });
        let _ = ev.send(Event::Gone(conn));
    });
}

/// Payloads at least this large (block data) are read straight into a pooled buffer.
const POOLED_PAYLOAD: usize = 64 * 1024;

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("protocol error from peer: {0}")]
    Protocol(#[from] WireError),
    #[error("peer closed the connection")]
    Closed,
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("read from peer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Read frames until the stream ends or breaks; returns the reason. Small frames are decoded from a
/// stream buffer; a block-data payload is read straight into a pooled buffer, so receiving a 1 MiB write
/// neither allocates nor copies it more than once (kernel → pooled buffer).
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(mut rd: R, bufs: &BufPool, mut deliver: impl FnMut(Frame)) -> String {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let res: Result<(), ReadError> = async {
        loop {
            let Some((code, len)) = peek_header(&buf)? else {
                fill(&mut rd, &mut buf).await?;
                continue;
            };
            if len >= POOLED_PAYLOAD
                && let Some(mut payload) = bufs.take_aligned(len, block_data_lead(code))
            {
                buf.advance(HEADER_LEN);
                let have = buf.len().min(len);
                let dst = payload.as_mut_slice();
                let (head, rest) = dst.split_at_mut(have);
                head.copy_from_slice(&buf[..have]);
                buf.advance(have);
                rd.read_exact(rest).await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => ReadError::Truncated,
                    _ => ReadError::Io(e),
                })?;
                deliver(decode_payload(code, payload.freeze())?);
                continue;
            }
            match decode(&mut buf)? {
                Some(frame) => deliver(frame),
                None => fill(&mut rd, &mut buf).await?,
            }
        }
    }
    .await;
    match res {
        Ok(()) => "closed".to_string(),
        Err(e) => e.to_string(),
    }
}

/// Most bytes one read into the stream buffer takes. WHY: the read that brings a block frame's header
/// also brings the start of its payload, which is then copied into the pooled buffer; reading at most
/// this much keeps that copy to a small part of a 1 MiB payload (it was up to 256 KiB), while a read
/// still takes a dozen 4 KiB Data frames at once.
const READ_CHUNK: u64 = 64 * 1024;

/// Read more bytes into `buf`; the end of the stream is an error (clean between frames, else not).
async fn fill<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), ReadError> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(256 * 1024);
    }
    if (&mut *rd).take(READ_CHUNK).read_buf(buf).await? == 0 {
        return Err(if buf.is_empty() { ReadError::Closed } else { ReadError::Truncated });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::encode;
    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            encode(f, &mut out);
        }
        out.to_vec()
    }

    async fn read_all(bytes: Vec<u8>, bufs: &BufPool) -> (Vec<Frame>, String) {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        // Feed in odd-sized pieces so headers and payloads straddle reads.
        let feeder = tokio::spawn(async move {
            for piece in bytes.chunks(7777) {
                if tx.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let mut got = Vec::new();
        let reason = read_frames(rx, bufs, |f| got.push(f)).await;
        let _ = feeder.await;
        (got, reason)
    }

    #[tokio::test]
    async fn small_and_pooled_block_frames_arrive_in_order_and_intact() {
        let block: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let big = 4 * 1024 * 1024 + 512; // larger than a pooled buffer: the stream-buffer path
        let frames = vec![
            Frame::Ping { nonce: 1 },
            Frame::Data { seq: 2, offset: 4096, flags: 0, data: Bytes::from(block.clone()) },
            Frame::WriteAck { seq: 3 },
            Frame::RsData { offset: 0, data: Bytes::from(vec![9u8; 128 * 1024]) },
            Frame::Data { seq: 4, offset: 0, flags: 0, data: Bytes::from(vec![7u8; big - 4096 - 512]) },
            Frame::Ping { nonce: 5 },
        ];
        let bufs = BufPool::new();
        let (got, reason) = read_all(wire(&frames), &bufs).await;
        assert_eq!(got, frames);
        assert_eq!(reason, "peer closed the connection");
        drop(got);
        assert!(bufs.take(1).is_some());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_block_frame_is_reported_as_truncated() {
        let mut bytes = wire(&[Frame::Data { seq: 1, offset: 0, flags: 0, data: Bytes::from(vec![1u8; 256 * 1024]) }]);
        bytes.truncate(bytes.len() - 100);
        let (got, reason) = read_all(bytes, &BufPool::new()).await;
        assert!(got.is_empty());
        assert_eq!(reason, "peer closed the connection in the middle of a frame");
    }

    #[tokio::test]
    async fn a_bad_header_is_a_protocol_error() {
        let (got, reason) = read_all(vec![0xAB; 64], &BufPool::new()).await;
        assert!(got.is_empty());
        assert!(reason.starts_with("protocol error from peer"), "{reason}");
    }
}
