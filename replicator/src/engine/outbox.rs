//! The sending half of one replication connection, shared by the actor thread and the connection's
//! writer task.
//!
//! WHY: a frame used to travel actor → command channel → the transport's event loop → the connection's
//! channel → its writer task before the `writev`: a thread wake-up and three task polls on each node
//! for every Data frame and every WriteAck, the largest item of the replicated 4 KiB profile. Now the
//! actor encodes the frames of one batch (everything one wake-up of the actor produced) and writes
//! them itself with one non-blocking `writev` when nothing is queued before them. What the socket
//! does not take at once, and batches that carry much block data (their copy into the socket then runs
//! beside the actor instead of on it), go to the writer task, which owns the queue until it is empty
//! again; while it does, the actor only appends, so frames keep their order.

use crate::wire::frame::{encode_split, Frame};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Batches carrying more block data than this are written by the writer task.
pub const DIRECT_MAX: usize = 64 * 1024;

/// At most this many buffers go into one `writev` (the kernel's limit is 1024).
const MAX_IOV: usize = 64;

/// One connection's send side.
pub struct Outbox {
    state: Mutex<OutState>,
    wake: Notify,
    wr: OwnedWriteHalf,
    cancel: CancellationToken,
}

#[derive(Default)]
struct OutState {
    /// Fixed fields being encoded; split off into `chunks` before block data and at the end of a batch.
    head: BytesMut,
    /// Encoded bytes not yet written, in order.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    queued: usize,
    /// The writer task owns the queue: the actor only appends until it hands it back.
    writer_busy: bool,
    /// No more frames: the writer task ends once the queue is written.
    closing: bool,
    /// A write failed; the connection is being torn down and frames are dropped.
    failed: bool,
}

impl OutState {
    fn push(&mut self, frame: &Frame) {
        if let Some(data) = encode_split(frame, &mut self.head) {
            let head = self.head.split().freeze();
            self.queued += head.len() + data.len();
            self.chunks.push_back(head);
            self.chunks.push_back(data);
        }
    }

    fn seal(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split().freeze();
            self.queued += head.len();
            self.chunks.push_back(head);
        }
    }
}

impl Outbox {
    /// The outbox of a new connection and its writer task (spawned on the current runtime).
    pub fn start(wr: OwnedWriteHalf, cancel: CancellationToken) -> Arc<Outbox> {
        let out = Arc::new(Outbox { state: Mutex::new(OutState::default()), wake: Notify::new(), wr, cancel });
        tokio::spawn(run_writer(Arc::clone(&out)));
        out
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send `frames` in order after everything sent before: written now from the calling thread when
    /// the socket takes them and nothing is queued, else queued for the writer task.
    pub fn send(&self, frames: impl IntoIterator<Item = Frame>) {
        let mut st = self.lock();
        if st.failed || st.closing {
            return;
        }
        for f in frames {
            st.push(&f);
        }
        st.seal();
        if st.writer_busy || st.chunks.is_empty() {
            return;
        }
        if st.queued <= DIRECT_MAX {
            match write_now(&self.wr, &mut st.chunks) {
                Ok(n) => st.queued -= n,
                Err(e) => {
                    tracing::debug!("replication link write failed: {e}");
                    st.failed = true;
                    st.chunks.clear();
                    st.queued = 0;
                    self.cancel.cancel();
                    return;
                }
            }
        }
        if !st.chunks.is_empty() {
            st.writer_busy = true;
            drop(st);
            self.wake.notify_one();
        }
    }

    /// No more frames: the writer task writes what is queued, then ends (dropping the last reference
    /// to the write half shuts the socket's sending direction down).
    pub fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }
}

/// Write queued chunks with non-blocking `writev`s until they are all written or the socket is full
/// (the rest stays queued); returns the bytes written.
fn write_now(wr: &OwnedWriteHalf, chunks: &mut VecDeque<Bytes>) -> io::Result<usize> {
    let mut written = 0;
    while !chunks.is_empty() {
        let slices: Vec<io::IoSlice<'_>> = chunks.iter().take(MAX_IOV).map(|c| io::IoSlice::new(c)).collect();
        let n = match wr.try_write_vectored(&slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "replication link closed")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        };
        consume(chunks, n);
        written += n;
    }
    Ok(written)
}

fn consume(chunks: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = chunks.front_mut() else { return };
        if n >= front.len() {
            n -= front.len();
            chunks.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// The writer task: while the actor has handed it the queue, takes everything queued and writes it,
/// waiting for the socket as needed; hands the queue back when it finds it empty.
async fn run_writer(out: Arc<Outbox>) {
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    loop {
        // Take the queue, or hand it back and wait (the guard must not live across an await).
        let wait = {
            let mut st = out.lock();
            if st.failed {
                return;
            }
            if st.chunks.is_empty() {
                st.writer_busy = false;
                if st.closing {
                    return;
                }
                true
            } else {
                std::mem::swap(&mut batch, &mut st.chunks);
                st.queued = 0;
                false
            }
        };
        if wait {
            tokio::select! {
                _ = out.cancel.cancelled() => return,
                _ = out.wake.notified() => continue,
            }
        }
        let result = tokio::select! {
            _ = out.cancel.cancelled() => return,
            r = write_all(&out.wr, &mut batch) => r,
        };
        if let Err(e) = result {
            tracing::debug!("replication link write failed: {e}");
            let mut st = out.lock();
            st.failed = true;
            st.chunks.clear();
            st.queued = 0;
            out.cancel.cancel();
            return;
        }
    }
}

/// Write every chunk, in order, waiting for the socket to take them.
async fn write_all(wr: &OwnedWriteHalf, chunks: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !chunks.is_empty() {
        wr.writable().await?;
        write_now(wr, chunks)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::decode;
    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::OwnedReadHalf;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Arc<Outbox>, TcpStream, OwnedReadHalf) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let (rd, wr) = a.into_split();
        (Outbox::start(wr, CancellationToken::new()), b, rd)
    }

    async fn read_frames(b: &mut TcpStream, n: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < n {
            match decode(&mut buf).unwrap() {
                Some(f) => got.push(f),
                None => {
                    let r = tokio::time::timeout(std::time::Duration::from_secs(10), b.read_buf(&mut buf)).await.unwrap().unwrap();
                    assert!(r > 0, "stream ended after {} frames", got.len());
                }
            }
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_and_large_batches_from_several_threads_arrive_in_order() {
        let (out, mut b, _rd) = pair().await;
        // Small batches (written directly), large ones (handed to the writer task) and enough of both
        // to fill the socket (so direct writes hit WouldBlock and the queue takes over), from a plain
        // thread as the actor is.
        let big = Bytes::from(vec![3u8; 1 << 20]);
        let sent: Vec<Frame> = (0..300u64)
            .map(|i| match i % 3 {
                0 => Frame::WriteAck { seq: i },
                1 => Frame::Data { seq: i, offset: i * 4096, flags: 0, data: Bytes::from(vec![i as u8; 4096]) },
                _ => Frame::Data { seq: i, offset: 0, flags: 0, data: big.clone() },
            })
            .collect();
        let to_send = sent.clone();
        let o = Arc::clone(&out);
        let t = std::thread::spawn(move || {
            for chunk in to_send.chunks(4) {
                o.send(chunk.iter().cloned());
            }
        });
        let got = read_frames(&mut b, sent.len()).await;
        t.join().unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn close_writes_what_is_queued_then_shuts_the_direction_down() {
        let (out, mut b, _rd) = pair().await;
        let big = Bytes::from(vec![5u8; 512 * 1024]);
        out.send((0..4u64).map(|i| Frame::Data { seq: i, offset: 0, flags: 0, data: big.clone() }));
        out.close();
        out.send([Frame::Ping { nonce: 9 }]);
        drop(out);
        let got = read_frames(&mut b, 4).await;
        assert_eq!(got.len(), 4);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), b.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert_eq!(n, 0, "nothing after close, and the stream ends");
    }
}
