//! Positional I/O on the data device from a small pool of blocking threads. Completions go back to the
//! state machine's actor as `Input::DiskDone`. A bounded job queue gives back-pressure.

use super::bufpool::BufPool;
use crate::machine::Input;
use bytes::{Bytes, BytesMut};
use rustix::io::ReadWriteFlags;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One disk job.
#[derive(Debug)]
pub enum DiskJob {
    Write { token: u64, offset: u64, data: Bytes, fua: bool },
    Read { token: u64, offset: u64, len: u64 },
    Flush { token: u64 },
}

/// The data device and its worker threads.
pub struct DiskPool {
    tx: Option<SyncSender<DiskJob>>,
    workers: Vec<JoinHandle<()>>,
}

/// Queue depth of the pool; the actor blocks (briefly) when the disk is this far behind.
const QUEUE: usize = 1024;

impl DiskPool {
    /// Start `threads` workers on `file`; completions are sent with `done`.
    /// Reads of up to a block take their buffer from `bufs`.
    pub fn start(file: File, threads: usize, bufs: BufPool, done: impl Fn(Input) + Send + Sync + 'static) -> io::Result<DiskPool> {
        let (tx, rx) = sync_channel::<DiskJob>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let file = Arc::new(file);
        let done = Arc::new(done);
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let file = Arc::clone(&file);
            let done = Arc::clone(&done);
            let bufs = bufs.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("disk-io-{i}"))
                    .spawn(move || worker(&rx, &file, &bufs, &*done))?,
            );
        }
        Ok(DiskPool { tx: Some(tx), workers })
    }

    pub fn submit(&self, job: DiskJob) {
        if let Some(tx) = &self.tx {
            // A send error only happens after shutdown; the job's completion is then irrelevant.
            let _ = tx.send(job);
        }
    }

    /// Stop accepting jobs and wait for the queued ones.
    pub fn shutdown(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(rx: &Mutex<Receiver<DiskJob>>, file: &File, bufs: &BufPool, done: &(dyn Fn(Input) + Send + Sync)) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let (token, result) = match job {
            DiskJob::Write { token, offset, data, fua } => (token, write(file, offset, &data, fua).map(|()| None)),
            DiskJob::Read { token, offset, len } => (token, pooled_read(file, bufs, offset, len).map(Some)),
            DiskJob::Flush { token } => (token, rustix::fs::fdatasync(file).map_err(io::Error::from).map(|()| None)),
        };
        done(Input::DiskDone { token, result: result.map_err(|e| e.to_string()) });
    }
}

fn write(file: &File, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
    if !fua {
        return file.write_all_at(data, offset);
    }
    // FUA: the data is stable when the call returns (RWF_DSYNC), without flushing the whole file.
    let mut done = 0usize;
    while done < data.len() {
        let slice = [io::IoSlice::new(&data[done..])];
        let n = rustix::io::pwritev2(file, &slice, offset + done as u64, ReadWriteFlags::DSYNC)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev2 wrote nothing"));
        }
        done += n;
    }
    Ok(())
}

fn read(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "read too large"))?;
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf.freeze())
}

/// A read into a pooled buffer (no allocation, no zeroing) when it fits one.
fn pooled_read(file: &File, bufs: &BufPool, offset: u64, len: u64) -> io::Result<Bytes> {
    let Some(mut buf) = usize::try_from(len).ok().and_then(|n| bufs.take(n)) else {
        return read(file, offset, len);
    };
    file.read_exact_at(buf.as_mut_slice(), offset)?;
    Ok(buf.freeze())
}

/// Direct reads used by the engine's fast read path (no actor round trip).
pub fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    read(file, offset, len)
}
