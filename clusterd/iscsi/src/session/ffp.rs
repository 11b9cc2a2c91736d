//! Full feature phase of one connection: the reader loop, CmdSN ordering, command dispatch, write data
//! collection with R2Ts, task management, text (SendTargets), logout, NOP keepalives and teardown.
//!
//! The reader owns all per-task state; SCSI commands execute in spawned tasks that queue their response
//! PDUs to the writer, so responses go out in completion order while many commands are in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cmdsn::{CmdSequencer, Submitted, WindowCounters};
use super::text_exchange::TextExchange;
use super::transfer::{
    CommandOutcome, DIRECT_COLLECT_MIN, MAX_WRITE_BYTES, ResponseContext, TransferError,
    TransferLimits, WriteCollector, build_response,
};
use super::writer::{Outbound, Stat, run_writer};
use super::{ConnError, Established, SessionIo, decode_lun, unregister};
use crate::login::{Digest, SessionParams, SessionType};
use crate::pdu::{
    BHS_LEN, DataOut, DigestConfig, Frame, NopIn, Pdu, PduError, R2t, RESERVED_TAG, Reject,
    ScsiCommandPdu, decode_frame, peek_data_out,
};
use crate::scsi::{ItNexus, ScsiCommand, ScsiTarget, TargetPort, TaskClaim};
use crate::server::TargetServer;

mod control;
mod directed;
mod job;
mod stall;

use directed::Directed;
use job::CommandJob;

/// Reject reasons (RFC 7143 §11.17.1).
mod reject_reason {
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
}

enum Flow {
    Continue,
    /// Logout done or connection must close.
    Stop,
}

/// A non-immediate PDU waiting for its CmdSN turn.
enum Queued {
    Scsi {
        itt: u32,
        serial: u64,
    },
    Other(Frame),
    /// A CmdSN consumed without a command (see `Conn::abort_task`).
    Received,
}

enum TaskState {
    /// Waiting for CmdSN order and/or write data.
    Collecting(Option<WriteCollector>),
    Running {
        handle: JoinHandle<()>,
        claim: Arc<TaskClaim>,
    },
    /// The data transfer broke the rules: answer CHECK CONDITION (ABORTED COMMAND, asc/ascq) once the
    /// command's CmdSN turn has come.
    Failed { asc: u8, ascq: u8 },
    /// Transitional while being started.
    Starting,
}

struct Task {
    serial: u64,
    lun: u64,
    cmd: ScsiCommandPdu,
    admitted: bool,
    /// Non-immediate commands hold a CmdSN window slot while admitted.
    counted: bool,
    state: TaskState,
    /// When the command arrived or last received data: a command waiting for Data-Out longer than the
    /// reply bound fails the connection (see `stall.rs`).
    last_progress: Instant,
}

/// SCSI-side context of a normal session.
struct ScsiContext {
    scsi: Arc<ScsiTarget>,
    nexus: Arc<ItNexus>,
}

struct Conn {
    server: Arc<TargetServer>,
    params: SessionParams,
    session_type: SessionType,
    initiator: String,
    target_name: Option<String>,
    peer: SocketAddr,
    local: SocketAddr,
    cid: u16,
    digests: DigestConfig,
    ctx: Option<ScsiContext>,
    counters: Arc<WindowCounters>,
    seq: CmdSequencer<Queued>,
    tasks: HashMap<u32, Task>,
    next_serial: u64,
    next_ttt: u32,
    out: mpsc::Sender<Outbound>,
    done_tx: mpsc::UnboundedSender<(u32, u64)>,
    done_rx: mpsc::UnboundedReceiver<(u32, u64)>,
    conn_closed: CancellationToken,
    last_rx: Instant,
    ping: Option<Instant>,
    text: TextExchange,
    /// The oldest PDU that needs an answer the session cannot give yet (a CmdSN gap, or a PDU outside
    /// the window that RFC 7143 says to ignore), with what it was: unless the initiator moves on within
    /// the reply bound, the connection is closed (see `stall.rs`).
    stalled: Option<(Instant, String)>,
    /// This session's monitoring counters (normal sessions, counting enabled); folded into the
    /// target's totals when the session ends.
    stats: Option<crate::stats::SessionShard>,
}

/// ASC/ASCQ for a data-transfer violation (SPC-4 ABORTED COMMAND codes used by iSCSI targets).
fn transfer_sense(e: &TransferError) -> (u8, u8) {
    match e {
        TransferError::UnexpectedTtt { .. } => (0x4b, 0x01),
        TransferError::TooMuchImmediateData { .. } | TransferError::Overrun => (0x4b, 0x02),
        TransferError::Offset { .. } => (0x4b, 0x05),
        TransferError::UnsolicitedNotAllowed => (0x0c, 0x0c),
        TransferError::DataSn { .. } | TransferError::FinalBit => (0x4b, 0x00),
    }
}

fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        _ => 16,
    }
}

pub(crate) async fn run<S: SessionIo>(
    server: Arc<TargetServer>,
    stream: S,
    buf: BytesMut,
    peer: SocketAddr,
    local: SocketAddr,
    est: Established,
    shutdown: CancellationToken,
) {
    let login = est.login;
    let params = login.params.clone();
    let digests = DigestConfig {
        header: params.header_digest == Digest::Crc32c,
        data: params.data_digest == Digest::Crc32c,
    };
    let (read_half, write_half) = stream.into_halves();
    let conn_closed = CancellationToken::new();
    let (out_tx, out_rx) = est.outbound;
    let writer = tokio::spawn(run_writer(
        write_half,
        out_rx,
        est.counters.clone(),
        login.next_stat_sn,
        digests,
        conn_closed.clone(),
    ));
    let ctx = login
        .target
        .as_ref()
        .and_then(|lt| server.target(&lt.name).map(|t| (t, lt.tpgt)))
        .map(|(t, tpgt)| {
            // The TPGT the login answered with (the portal group of the address it arrived on).
            let port = TargetPort::for_tpgt(&t.iqn, tpgt);
            ScsiContext {
                scsi: t.scsi.clone(),
                nexus: Arc::new(ItNexus {
                    initiator: login.initiator_name.clone(),
                    isid: login.isid,
                    target: port.name,
                    tpgt: port.tpgt,
                    relative_port: port.relative_id,
                }),
            }
        });
    if let Some(c) = &ctx {
        c.scsi.nexus_added(&c.nexus);
    }
    let stats = ctx.as_ref().and_then(|c| server.config().stats.session_started(&c.nexus.target));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        server: server.clone(),
        params,
        session_type: login.session_type,
        initiator: login.initiator_name.clone(),
        target_name: login.target.as_ref().map(|t| t.name.clone()),
        peer,
        local,
        cid: login.cid,
        digests,
        ctx,
        counters: est.counters,
        seq: CmdSequencer::new(),
        tasks: HashMap::new(),
        next_serial: 1,
        next_ttt: 1,
        out: out_tx,
        done_tx,
        done_rx,
        conn_closed: conn_closed.clone(),
        last_rx: Instant::now(),
        ping: None,
        text: TextExchange::new(),
        stalled: None,
        stats,
    };
    let graceful = match conn.reader_loop(read_half, buf, &shutdown).await {
        Ok(graceful) => graceful,
        Err(ConnError::Stalled(why)) => {
            tracing::warn!(peer = %conn.peer, initiator = %conn.initiator, reason = %why,
                "closing the connection: a PDU could not be answered within the reply bound");
            false
        }
        Err(e) => {
            tracing::info!(peer = %conn.peer, initiator = %conn.initiator, error = %e, "connection failed");
            false
        }
    };
    if !graceful {
        // ERL 0: connection loss is session loss. Commands still running finish (they may already be
        // touching the media) but send nothing; only then is the nexus gone.
        conn.conn_closed.cancel();
        conn.abort_tasks(|_| true).await;
    }
    if let Some(c) = &conn.ctx {
        c.scsi.nexus_removed(&c.nexus);
    }
    if let Some((serial, fin)) = est.registration {
        unregister(&server, est.tsih, serial);
        let _ = fin.send(true);
    }
    drop(conn);
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Conn {
    /// Returns `Ok(true)` after a logout (everything already drained and answered).
    async fn reader_loop<R: AsyncRead + Unpin>(
        &mut self,
        mut rd: R,
        mut buf: BytesMut,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConnError> {
        // At least once a second: keepalive pings and the reply bound are checked on this tick.
        let nop_interval = self.server.config().nop_interval;
        let tick_every = if nop_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            nop_interval.min(Duration::from_secs(1))
        };
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                if let Some((d, len)) = peek_data_out(
                    &buf,
                    self.digests,
                    self.params.max_recv_data_segment_length,
                    DIRECT_COLLECT_MIN,
                ) {
                    match self
                        .directed_data_out(&mut rd, &mut buf, &d, len, shutdown)
                        .await?
                    {
                        Directed::Done => continue,
                        Directed::Closed => return Ok(false),
                        Directed::No => {}
                    }
                }
                let mut header = [0u8; BHS_LEN];
                if let Some(h) = buf.get(..BHS_LEN) {
                    header.copy_from_slice(h);
                }
                match decode_frame(
                    &mut buf,
                    self.digests,
                    self.params.max_recv_data_segment_length,
                ) {
                    Ok(Some(frame)) => {
                        if let Flow::Stop = self.handle(frame).await? {
                            return Ok(true);
                        }
                    }
                    Ok(None) => break,
                    // The PDU was consumed whole; the stream is still in sync.
                    Err(PduError::UnknownOpcode(_)) => {
                        self.reject(reject_reason::COMMAND_NOT_SUPPORTED, header)
                            .await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(256 * 1024);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = self.conn_closed.cancelled() => return Ok(false),
                n = tokio::io::AsyncReadExt::read_buf(&mut rd, &mut buf) => {
                    if n? == 0 {
                        return Ok(false);
                    }
                    self.last_rx = Instant::now();
                    self.ping = None;
                }
                Some((itt, serial)) = self.done_rx.recv() => {
                    if self.tasks.get(&itt).is_some_and(|t| t.serial == serial) {
                        self.tasks.remove(&itt);
                    }
                }
                _ = tick.tick() => {
                    self.keepalive()?;
                    self.check_stalls()?;
                }
            }
        }
    }

    fn keepalive(&mut self) -> Result<(), ConnError> {
        let cfg = self.server.config();
        if cfg.nop_interval.is_zero() {
            return Ok(());
        }
        if let Some(sent) = self.ping {
            if sent.elapsed() > cfg.nop_timeout {
                return Err(ConnError::Protocol("NOP-In ping not answered".into()));
            }
            return Ok(());
        }
        if self.last_rx.elapsed() >= cfg.nop_interval {
            let ttt = self.alloc_ttt();
            let ping = NopIn {
                itt: RESERVED_TAG,
                ttt,
                ..NopIn::default()
            };
            if self
                .out
                .try_send(Outbound::Pdu {
                    pdu: Pdu::NopIn(ping),
                    data: Bytes::new(),
                    stat: Stat::Current,
                })
                .is_ok()
            {
                self.ping = Some(Instant::now());
            }
        }
        Ok(())
    }

    fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }

    async fn send(&self, pdu: Pdu, data: Bytes, stat: Stat) {
        // A closed channel means the writer is gone; the reader notices via `conn_closed`.
        let _ = self.out.send(Outbound::Pdu { pdu, data, stat }).await;
    }

    async fn reject(&self, reason: u8, header: [u8; BHS_LEN]) {
        let pdu = Pdu::Reject(Reject {
            reason,
            ..Reject::default()
        });
        self.send(pdu, Bytes::copy_from_slice(&header), Stat::Advance)
            .await;
    }

    async fn handle(&mut self, frame: Frame) -> Result<Flow, ConnError> {
        let discovery = self.session_type == SessionType::Discovery;
        match &frame.pdu {
            Pdu::NopOut(n) if n.itt == RESERVED_TAG => Ok(Flow::Continue),
            Pdu::NopOut(n) if n.immediate => self.ordered(frame).await,
            Pdu::NopOut(n) => self.submit_other(n.cmd_sn, frame).await,
            Pdu::ScsiCommand(_) | Pdu::TaskMgmtRequest(_) if discovery => {
                self.reject(reject_reason::PROTOCOL_ERROR, frame.bhs).await;
                Ok(Flow::Continue)
            }
            Pdu::ScsiCommand(c) => {
                let c = c.clone();
                self.new_command(c, frame.data).await
            }
            Pdu::TaskMgmtRequest(t) if t.immediate => self.ordered(frame).await,
            Pdu::TaskMgmtRequest(t) => self.submit_other(t.cmd_sn, frame).await,
            Pdu::TextRequest(t) if t.immediate => self.ordered(frame).await,
            Pdu::TextRequest(t) => self.submit_other(t.cmd_sn, frame).await,
            Pdu::LogoutRequest(l) if l.immediate => self.ordered(frame).await,
            Pdu::LogoutRequest(l) => self.submit_other(l.cmd_sn, frame).await,
            Pdu::DataOut(d) => {
                let d = d.clone();
                self.data_out(d, frame.data).await?;
                Ok(Flow::Continue)
            }
            // SNACK needs ERL ≥ 1; login PDUs and target opcodes are invalid here.
            _ => {
                self.reject(reject_reason::PROTOCOL_ERROR, frame.bhs).await;
                Ok(Flow::Continue)
            }
        }
    }

    async fn submit_other(&mut self, cmd_sn: u32, frame: Frame) -> Result<Flow, ConnError> {
        let opcode = frame.pdu.opcode();
        match self
            .seq
            .submit(&self.counters, cmd_sn, Queued::Other(frame), false)
        {
            Submitted::Deliver(items) => self.deliver(items).await,
            outcome => {
                self.note_unanswered(opcode, cmd_sn, &outcome);
                Ok(Flow::Continue)
            }
        }
    }

    async fn deliver(&mut self, items: Vec<Queued>) -> Result<Flow, ConnError> {
        // The initiator is back in step: whatever was stalled has been answered or overtaken.
        if self.seq.is_empty() {
            self.stalled = None;
        }
        for item in items {
            let flow = match item {
                Queued::Scsi { itt, serial } => {
                    if self.tasks.get(&itt).is_some_and(|t| t.serial == serial) {
                        self.admit(itt).await?;
                    } else {
                        // Aborted before its turn: give back the slot delivery just took.
                        self.counters.task_finished();
                    }
                    Flow::Continue
                }
                Queued::Other(frame) => self.ordered(frame).await?,
                // A CmdSN an ABORT TASK declared received (RFC 7143 §11.5.1 b): nothing to run.
                Queued::Received => Flow::Continue,
            };
            if let Flow::Stop = flow {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Handles a non-SCSI PDU whose CmdSN turn has come (or that is immediate).
    async fn ordered(&mut self, frame: Frame) -> Result<Flow, ConnError> {
        match frame.pdu {
            Pdu::NopOut(n) => {
                let len = frame
                    .data
                    .len()
                    .min(self.params.max_xmit_data_segment_length as usize);
                let reply = NopIn {
                    lun: n.lun,
                    itt: n.itt,
                    ttt: RESERVED_TAG,
                    ..NopIn::default()
                };
                self.send(Pdu::NopIn(reply), frame.data.slice(..len), Stat::Advance)
                    .await;
                Ok(Flow::Continue)
            }
            Pdu::TaskMgmtRequest(t) => self.task_management(t).await,
            Pdu::TextRequest(t) => {
                self.text(t, &frame.data, frame.bhs).await;
                Ok(Flow::Continue)
            }
            Pdu::LogoutRequest(l) => Ok(self.logout(l.itt, l.reason, l.cid).await),
            _ => Ok(Flow::Continue),
        }
    }

    fn limits(&self) -> TransferLimits {
        TransferLimits {
            first_burst: self.params.first_burst_length,
            max_burst: self.params.max_burst_length,
            max_outstanding_r2t: self.params.max_outstanding_r2t,
            initial_r2t: self.params.initial_r2t,
            immediate_data: self.params.immediate_data,
        }
    }

    async fn new_command(&mut self, c: ScsiCommandPdu, data: Bytes) -> Result<Flow, ConnError> {
        if self.tasks.contains_key(&c.itt) {
            // An ITT still in use: the initiator broke task-tag uniqueness.
            return Err(ConnError::Protocol(format!("duplicate ITT {:#x}", c.itt)));
        }
        let collector = if c.write && c.expected_data_len > 0 {
            if c.expected_data_len > MAX_WRITE_BYTES {
                return Err(ConnError::Protocol(format!(
                    "write of {} bytes too large",
                    c.expected_data_len
                )));
            }
            match WriteCollector::new(c.expected_data_len, data, c.final_bit, self.limits()) {
                Ok(col) => TaskState::Collecting(Some(col)),
                Err(e) => {
                    let (asc, ascq) = transfer_sense(&e);
                    TaskState::Failed { asc, ascq }
                }
            }
        } else {
            TaskState::Collecting(None)
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let itt = c.itt;
        let (immediate, cmd_sn) = (c.immediate, c.cmd_sn);
        let task = Task {
            serial,
            lun: decode_lun(c.lun),
            cmd: c,
            admitted: false,
            counted: !immediate,
            state: collector,
            last_progress: Instant::now(),
        };
        self.tasks.insert(itt, task);
        if immediate {
            self.admit(itt).await?;
            return Ok(Flow::Continue);
        }
        match self
            .seq
            .submit(&self.counters, cmd_sn, Queued::Scsi { itt, serial }, true)
        {
            Submitted::Deliver(items) => self.deliver(items).await,
            outcome => {
                if matches!(outcome, Submitted::Ignored) {
                    self.tasks.remove(&itt);
                }
                self.note_unanswered(0x01, cmd_sn, &outcome);
                Ok(Flow::Continue)
            }
        }
    }

    /// The command's CmdSN turn has come: ask for data or start it.
    async fn admit(&mut self, itt: u32) -> Result<(), ConnError> {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return Ok(());
        };
        // Non-immediate commands already took their window slot when the sequencer delivered them.
        task.admitted = true;
        self.progress(itt).await
    }

    /// Sends any R2Ts now allowed and starts the command once all data is in.
    async fn progress(&mut self, itt: u32) -> Result<(), ConnError> {
        let mut next_ttt = self.next_ttt;
        let Some(task) = self.tasks.get_mut(&itt) else {
            return Ok(());
        };
        if let TaskState::Failed { asc, ascq } = task.state {
            self.fail_task(itt, asc, ascq).await;
            return Ok(());
        }
        let TaskState::Collecting(col) = &mut task.state else {
            return Ok(());
        };
        let mut r2ts = Vec::new();
        let mut complete = true;
        if let Some(col) = col {
            r2ts = col.next_r2ts(|| {
                let t = next_ttt;
                next_ttt = next_ttt.wrapping_add(1).max(1);
                if next_ttt == RESERVED_TAG {
                    next_ttt = 1;
                }
                t
            });
            complete = col.is_complete();
        }
        let raw_lun = task.cmd.lun;
        self.next_ttt = next_ttt;
        for r in r2ts {
            let pdu = R2t {
                lun: raw_lun,
                itt,
                ttt: r.ttt,
                r2t_sn: r.r2t_sn,
                buffer_offset: r.offset,
                desired_len: r.len,
                ..R2t::default()
            };
            self.send(Pdu::R2t(pdu), Bytes::new(), Stat::Current).await;
        }
        if complete {
            self.start(itt);
        }
        Ok(())
    }

    async fn data_out(&mut self, d: DataOut, data: Bytes) -> Result<(), ConnError> {
        // Data for an aborted or unknown task is dropped silently.
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return Ok(());
        };
        // Data for a command that is not collecting (already complete, failed, or a read) is dropped.
        let TaskState::Collecting(Some(col)) = &mut task.state else {
            return Ok(());
        };
        task.last_progress = Instant::now();
        // A broken transfer fails the command, not the connection: the framing is intact, and keeping
        // the connection means the initiator sees a definite CHECK CONDITION instead of a reconnect
        // that might retry the write differently (libiscsi iSCSIdatasn relies on this).
        if let Err(e) = col.on_data_out(&d, data) {
            tracing::debug!(itt = d.itt, error = %e, "Data-Out rejected");
            let (asc, ascq) = transfer_sense(&e);
            task.state = TaskState::Failed { asc, ascq };
        }
        if task.admitted {
            self.progress(d.itt).await?;
        }
        Ok(())
    }

    /// Ends a command with CHECK CONDITION / ABORTED COMMAND without executing it.
    async fn fail_task(&mut self, itt: u32, asc: u8, ascq: u8) {
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        if task.admitted && task.counted {
            self.counters.task_finished();
        }
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = 0x0b;
        sense[7] = 10;
        sense[12] = asc;
        sense[13] = ascq;
        let outcome = CommandOutcome {
            status: 0x02,
            data_in: Bytes::new(),
            sense: Some(Bytes::from(sense)),
            transfer_len: task.cmd.expected_data_len,
        };
        let ctx = ResponseContext {
            itt,
            raw_lun: task.cmd.lun,
            edtl: task.cmd.expected_data_len,
            is_read: false,
            max_xmit: self.params.max_xmit_data_segment_length,
            max_burst: self.params.max_burst_length,
            r2t_count: 0,
        };
        for p in build_response(&ctx, &outcome) {
            self.send(p.pdu, p.data, Stat::Advance).await;
        }
    }

    /// Spawns the SCSI execution of a fully received command.
    fn start(&mut self, itt: u32) {
        let Some(ctx) = &self.ctx else { return };
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let (r2t_count, data_out) = match std::mem::replace(&mut task.state, TaskState::Starting) {
            TaskState::Collecting(Some(col)) => (col.r2t_count(), col.into_data()),
            _ => (0, Bytes::new()),
        };
        let c = &task.cmd;
        let cmd = ScsiCommand {
            lun: task.lun,
            cdb: c.cdb,
            cdb_len: cdb_len(c.cdb[0]),
            data_out,
            expected_len: c.expected_data_len,
            task_attr: c.task_attr,
            task_tag: itt,
        };
        let claim = Arc::new(TaskClaim::default());
        let job = CommandJob {
            scsi: ctx.scsi.clone(),
            nexus: ctx.nexus.clone(),
            cmd,
            raw_lun: c.lun,
            is_read: c.read,
            r2t_count,
            counted: task.counted,
            max_xmit: self.params.max_xmit_data_segment_length,
            max_burst: self.params.max_burst_length,
            counters: self.counters.clone(),
            out: self.out.clone(),
            closed: self.conn_closed.clone(),
            claim: claim.clone(),
            done: self.done_tx.clone(),
            serial: task.serial,
            stats: self.stats.as_ref().map(|s| Arc::clone(s.counters())),
        };
        task.state = TaskState::Running {
            handle: tokio::spawn(job.run()),
            claim,
        };
    }

    /// Aborts matching tasks: collecting ones are dropped, running ones are waited for (their response is
    /// suppressed) so that nothing aborted can reach the media after this returns.
    async fn abort_tasks(&mut self, matches: impl Fn(&Task) -> bool) -> usize {
        let itts: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches(t))
            .map(|(k, _)| *k)
            .collect();
        for itt in &itts {
            self.abort_one(*itt).await;
        }
        itts.len()
    }

    /// Aborts one task; false if it had already answered (it completed before the abort). Either way
    /// nothing of it runs or is sent after this returns.
    async fn abort_one(&mut self, itt: u32) -> bool {
        let Some(task) = self.tasks.remove(&itt) else {
            return false;
        };
        match task.state {
            TaskState::Running { handle, claim } => {
                let aborted = claim.abort();
                let _ = handle.await;
                aborted
            }
            TaskState::Collecting(_) | TaskState::Starting | TaskState::Failed { .. } => {
                if task.admitted && task.counted {
                    self.counters.task_finished();
                }
                true
            }
        }
    }

    /// Waits for every running task (responses are sent) and drops tasks still waiting for data.
    async fn drain(&mut self) {
        let itts: Vec<u32> = self.tasks.keys().copied().collect();
        for itt in itts {
            let Some(task) = self.tasks.remove(&itt) else {
                continue;
            };
            match task.state {
                TaskState::Running { handle, .. } => {
                    let _ = handle.await;
                }
                _ => {
                    if task.admitted && task.counted {
                        self.counters.task_finished();
                    }
                }
            }
        }
    }
}
