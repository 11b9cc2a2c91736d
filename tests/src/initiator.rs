//! A minimal iSCSI initiator over tokio TCP, for the failover drills: enough of RFC 7143 to log in
//! without authentication, run READ(10)/WRITE(10)/SYNCHRONIZE CACHE(10)/READ CAPACITY(10) one command at
//! a time, answer the target's NOP-In pings and notice an Async Message asking for logout.
//!
//! It is deliberately simple (one connection, one outstanding command, ERL 0, no digests) because the
//! drills want to see exactly when each command is acknowledged; every network await is bounded so a
//! drill can never hang on a dead connection. It builds on the project's own PDU codec (`iscsi_target::pdu`)
//! so the drills exercise the same framing rules the target uses.

use bytes::{Bytes, BytesMut};
use iscsi_target::login::text::{encode_text, parse_text};
use iscsi_target::pdu::{
    DataOut, DigestConfig, Frame, LoginRequest, LogoutRequest, NopOut, Pdu, PduError, R2t, RESERVED_TAG,
    ScsiCommandPdu, decode_frame, encode,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest data segment we accept from the target (declared at login).
const OUR_MAX_RECV: u32 = 262_144;
/// The default ISID (type "random", RFC 7143 §11.12.5): one fixed value, as open-iscsi keeps one per
/// interface, so a reconnect after a failover is the same I_T nexus.
pub const DEFAULT_ISID: [u8; 6] = [0x80, 0x12, 0x34, 0x56, 0x00, 0x01];
const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
/// SCSI sense key UNIT ATTENTION.
pub const SENSE_UNIT_ATTENTION: u8 = 0x06;
/// Async Message event "target requests logout" (RFC 7143 §11.9.1).
const ASYNC_LOGOUT_REQUESTED: u8 = 1;
/// Async Message events that mean the connection or session is being dropped by the target.
const ASYNC_DROPPING: [u8; 3] = [2, 3, 4];

/// Errors of the initiator. The writer branches on them: a logout request or a lost connection means
/// "reconnect", a CHECK CONDITION is a SCSI-level failure (unit attentions excepted).
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out ({0})")]
    Timeout(&'static str),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the target")]
    Closed,
    #[error("PDU codec: {0}")]
    Pdu(#[from] PduError),
    #[error("login rejected: status class {class:#04x} detail {detail:#04x}")]
    LoginRejected { class: u8, detail: u8 },
    #[error("the target asked for logout (Async Message event 1, Time2Wait {time2wait} s)")]
    LogoutRequested { time2wait: u16 },
    #[error("the target is dropping the connection (Async Message event {0})")]
    TargetDropping(u8),
    #[error("CHECK CONDITION: sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}")]
    CheckCondition { key: u8, asc: u8, ascq: u8 },
    #[error("SCSI status {0:#04x}")]
    ScsiStatus(u8),
    #[error("iSCSI response code {0:#04x}")]
    Response(u8),
    #[error("the target rejected a PDU (reason {0:#04x})")]
    Reject(u8),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl InitiatorError {
    /// A unit attention is the target reporting an event (e.g. a power-on/reset after a failover), not a
    /// failed command: the initiator simply retries.
    pub fn is_unit_attention(&self) -> bool {
        matches!(self, InitiatorError::CheckCondition { key, .. } if *key == SENSE_UNIT_ATTENTION)
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    /// `host:port` of the portal.
    pub addr: String,
    pub target_name: String,
    pub initiator_name: String,
    pub connect_timeout: Duration,
    /// Bound on every other await (one PDU read or write, one command's whole exchange).
    pub io_timeout: Duration,
    /// The initiator part of the I_T nexus, with `initiator_name` (persistent reservations key on it).
    pub isid: [u8; 6],
}

impl InitiatorConfig {
    pub fn new(addr: &str, target_name: &str) -> Self {
        InitiatorConfig {
            addr: addr.to_string(),
            target_name: target_name.to_string(),
            initiator_name: "iqn.2026-11.org.example:drill-initiator".to_string(),
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(5),
            isid: DEFAULT_ISID,
        }
    }
}

/// Operational values the target answered at login that shape how we send data.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    /// The target's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub max_xmit_data_segment_length: u32,
}

/// One logged-in connection (a session with a single connection).
pub struct Initiator {
    stream: TcpStream,
    rbuf: BytesMut,
    cfg: InitiatorConfig,
    pub negotiated: Negotiated,
    cmd_sn: u32,
    exp_stat_sn: u32,
    next_itt: u32,
    /// Time2Wait of the target's logout request, once one has arrived.
    logout_requested: Option<u16>,
}

/// Reads SenseKey/ASC/ASCQ from a sense buffer in fixed (0x70/0x71) or descriptor (0x72/0x73) format.
pub fn parse_sense(sense: &[u8]) -> Option<(u8, u8, u8)> {
    let code = sense.first()? & 0x7f;
    match code {
        0x70 | 0x71 => Some((sense.get(2)? & 0x0f, *sense.get(12)?, *sense.get(13)?)),
        0x72 | 0x73 => Some((sense.get(1)? & 0x0f, *sense.get(2)?, *sense.get(3)?)),
        _ => None,
    }
}

fn cdb10(op: u8, lba: u32, blocks: u16) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = op;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// What a command returned when it completed with GOOD status.
struct Completed {
    data: Vec<u8>,
}

impl Initiator {
    /// Connects and logs in (operational stage directly, no authentication), with every step bounded.
    pub async fn connect(cfg: &InitiatorConfig) -> Result<Initiator, InitiatorError> {
        let stream =
            match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr)).await {
                Err(_) => return Err(InitiatorError::Timeout("connect")),
                Ok(Err(source)) => {
                    return Err(InitiatorError::Connect {
                        addr: cfg.addr.clone(),
                        source,
                    });
                }
                Ok(Ok(s)) => s,
            };
        stream.set_nodelay(true)?;
        let mut ini = Initiator {
            stream,
            rbuf: BytesMut::with_capacity(1 << 16),
            cfg: cfg.clone(),
            negotiated: Negotiated {
                immediate_data: true,
                initial_r2t: true,
                first_burst_length: 65_536,
                max_burst_length: 262_144,
                max_xmit_data_segment_length: 8192,
            },
            cmd_sn: 1,
            exp_stat_sn: 0,
            next_itt: 1,
            logout_requested: None,
        };
        ini.login().await?;
        Ok(ini)
    }

    /// Whether the target has asked this session to log out (seen while waiting for a response).
    pub fn logout_requested(&self) -> bool {
        self.logout_requested.is_some()
    }

    async fn login(&mut self) -> Result<(), InitiatorError> {
        let keys: Vec<(&str, String)> = vec![
            ("InitiatorName", self.cfg.initiator_name.clone()),
            ("TargetName", self.cfg.target_name.clone()),
            ("SessionType", "Normal".into()),
            ("HeaderDigest", "None".into()),
            ("DataDigest", "None".into()),
            ("ImmediateData", "Yes".into()),
            ("InitialR2T", "No".into()),
            ("MaxRecvDataSegmentLength", OUR_MAX_RECV.to_string()),
            ("FirstBurstLength", "262144".into()),
            ("MaxBurstLength", "1048576".into()),
            ("ErrorRecoveryLevel", "0".into()),
        ];
        let itt = self.take_itt();
        let mut req = LoginRequest {
            transit: true,
            continue_bit: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: self.cfg.isid,
            tsih: 0,
            itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: 0,
        };
        let mut text = Bytes::from(encode_text(&keys));
        // The target may answer with T=0 (more negotiation); repeat the exchange with no new keys then.
        for _ in 0..4 {
            self.send(&Pdu::LoginRequest(req.clone()), text.clone())
                .await?;
            let frame = self.recv().await?;
            let Pdu::LoginResponse(resp) = frame.pdu else {
                return Err(InitiatorError::Protocol(format!(
                    "expected a Login Response, got opcode {:#x}",
                    frame.pdu.opcode()
                )));
            };
            if resp.status_class != 0 {
                return Err(InitiatorError::LoginRejected {
                    class: resp.status_class,
                    detail: resp.status_detail,
                });
            }
            self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
            let pairs = parse_text(&frame.data)
                .map_err(|e| InitiatorError::Protocol(format!("login text: {e}")))?;
            self.apply_keys(&pairs);
            if resp.transit && resp.nsg == 3 {
                self.cmd_sn = resp.exp_cmd_sn;
                return Ok(());
            }
            req.exp_stat_sn = self.exp_stat_sn;
            req.tsih = resp.tsih;
            text = Bytes::new();
        }
        Err(InitiatorError::Protocol(
            "login did not reach the full feature phase".into(),
        ))
    }

    fn apply_keys(&mut self, pairs: &[(String, String)]) {
        let num = |v: &str| v.parse::<u32>().ok();
        for (k, v) in pairs {
            match k.as_str() {
                "ImmediateData" => self.negotiated.immediate_data = v == "Yes",
                "InitialR2T" => self.negotiated.initial_r2t = v == "Yes",
                "FirstBurstLength" => {
                    if let Some(n) = num(v) {
                        self.negotiated.first_burst_length = n;
                    }
                }
                "MaxBurstLength" => {
                    if let Some(n) = num(v) {
                        self.negotiated.max_burst_length = n;
                    }
                }
                "MaxRecvDataSegmentLength" => {
                    if let Some(n) = num(v).filter(|n| *n >= 512) {
                        self.negotiated.max_xmit_data_segment_length = n;
                    }
                }
                _ => {}
            }
        }
    }

    fn take_itt(&mut self) -> u32 {
        let itt = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1);
        if self.next_itt == RESERVED_TAG {
            self.next_itt = 1;
        }
        itt
    }

    async fn send(&mut self, pdu: &Pdu, data: Bytes) -> Result<(), InitiatorError> {
        let out = encode(pdu, data, DigestConfig::default())?;
        let bytes = out.to_vec();
        match tokio::time::timeout(self.cfg.io_timeout, self.stream.write_all(&bytes)).await {
            Err(_) => Err(InitiatorError::Timeout("send")),
            Ok(r) => Ok(r?),
        }
    }

    async fn recv(&mut self) -> Result<Frame, InitiatorError> {
        loop {
            if let Some(frame) =
                decode_frame(&mut self.rbuf, DigestConfig::default(), OUR_MAX_RECV)?
            {
                return Ok(frame);
            }
            match tokio::time::timeout(self.cfg.io_timeout, self.stream.read_buf(&mut self.rbuf))
                .await
            {
                Err(_) => return Err(InitiatorError::Timeout("receive")),
                Ok(Ok(0)) => return Err(InitiatorError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Handles PDUs that are not part of the current command (pings, async events). Returns the frame
    /// back when it belongs to the caller.
    async fn housekeeping(&mut self, frame: Frame) -> Result<Option<Frame>, InitiatorError> {
        match &frame.pdu {
            Pdu::NopIn(n) if n.itt == RESERVED_TAG => {
                // A target ping: answer with the same TTT, our current CmdSN, immediate (not advancing).
                if n.ttt != RESERVED_TAG {
                    let out = Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: RESERVED_TAG,
                        ttt: n.ttt,
                        cmd_sn: self.cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                    });
                    self.send(&out, frame.data.clone()).await?;
                }
                Ok(None)
            }
            Pdu::AsyncMessage(a) => {
                self.exp_stat_sn = a.stat_sn.wrapping_add(1);
                if a.event == ASYNC_LOGOUT_REQUESTED {
                    self.logout_requested = Some(a.param3);
                } else if ASYNC_DROPPING.contains(&a.event) {
                    return Err(InitiatorError::TargetDropping(a.event));
                }
                Ok(None)
            }
            Pdu::Reject(r) => Err(InitiatorError::Reject(r.reason)),
            _ => Ok(Some(frame)),
        }
    }

    /// Runs one SCSI command to completion: sends the command with immediate data (and unsolicited
    /// Data-Out up to FirstBurstLength when InitialR2T=No), answers R2Ts, gathers Data-In.
    async fn command(
        &mut self,
        cdb: [u8; 16],
        write_data: Option<Bytes>,
        read_len: u32,
    ) -> Result<Completed, InitiatorError> {
        if let Some(time2wait) = self.logout_requested {
            return Err(InitiatorError::LogoutRequested { time2wait });
        }
        let deadline = tokio::time::Instant::now() + self.cfg.io_timeout;
        match tokio::time::timeout_at(deadline, self.command_inner(cdb, write_data, read_len)).await
        {
            Err(_) => Err(InitiatorError::Timeout("command")),
            Ok(r) => r,
        }
    }

    async fn command_inner(
        &mut self,
        cdb: [u8; 16],
        write_data: Option<Bytes>,
        read_len: u32,
    ) -> Result<Completed, InitiatorError> {
        let itt = self.take_itt();
        let wdata = write_data.unwrap_or_default();
        let wlen = u32::try_from(wdata.len())
            .map_err(|_| InitiatorError::Protocol("write too large".into()))?;
        let n = self.negotiated;
        let seg = n.max_xmit_data_segment_length as usize;
        let first_burst = (n.first_burst_length as usize).min(wdata.len());
        let immediate_len = if n.immediate_data {
            first_burst.min(seg)
        } else {
            0
        };
        let cmd = Pdu::ScsiCommand(ScsiCommandPdu {
            immediate: false,
            final_bit: n.initial_r2t || immediate_len >= first_burst,
            read: read_len > 0,
            write: wlen > 0,
            task_attr: 1, // SIMPLE
            lun: 0,
            itt,
            expected_data_len: if wlen > 0 { wlen } else { read_len },
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb,
        });
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&cmd, wdata.slice(..immediate_len)).await?;
        if !n.initial_r2t && immediate_len < first_burst {
            self.send_data_out(itt, RESERVED_TAG, &wdata, immediate_len, first_burst)
                .await?;
        }
        let mut read_buf = vec![0u8; read_len as usize];
        loop {
            let frame = self.recv().await?;
            let Some(frame) = self.housekeeping(frame).await? else {
                continue;
            };
            match frame.pdu {
                Pdu::R2t(r) if r.itt == itt => {
                    let start = r.buffer_offset as usize;
                    let end = start
                        .checked_add(r.desired_len as usize)
                        .filter(|e| *e <= wdata.len())
                        .ok_or_else(|| {
                            InitiatorError::Protocol(format!(
                                "R2T for bytes beyond the write ({r:?})"
                            ))
                        })?;
                    self.send_data_out(itt, r.ttt, &wdata, start, end).await?;
                }
                Pdu::DataIn(d) if d.itt == itt => {
                    let start = d.buffer_offset as usize;
                    let end = start
                        .checked_add(frame.data.len())
                        .filter(|e| *e <= read_buf.len())
                        .ok_or_else(|| {
                            InitiatorError::Protocol("Data-In beyond the read buffer".into())
                        })?;
                    read_buf
                        .get_mut(start..end)
                        .ok_or_else(|| InitiatorError::Protocol("Data-In range".into()))?
                        .copy_from_slice(&frame.data);
                    if d.status_present {
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                        return finish(d.status, &[], read_buf);
                    }
                }
                Pdu::ScsiResponse(r) if r.itt == itt => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    if r.response != 0 {
                        return Err(InitiatorError::Response(r.response));
                    }
                    return finish(r.status, &frame.data, read_buf);
                }
                other => {
                    return Err(InitiatorError::Protocol(format!(
                        "unexpected PDU (opcode {:#x}) during a command",
                        other.opcode()
                    )));
                }
            }
        }
    }

    async fn send_data_out(
        &mut self,
        itt: u32,
        ttt: u32,
        data: &Bytes,
        start: usize,
        end: usize,
    ) -> Result<(), InitiatorError> {
        let seg = (self.negotiated.max_xmit_data_segment_length as usize).max(512);
        let mut off = start;
        let mut data_sn = 0u32;
        while off < end {
            let len = seg.min(end - off);
            let pdu = Pdu::DataOut(DataOut {
                final_bit: off + len >= end,
                lun: 0,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn,
                buffer_offset: u32::try_from(off)
                    .map_err(|_| InitiatorError::Protocol("offset".into()))?,
            });
            self.send(&pdu, data.slice(off..off + len)).await?;
            off += len;
            data_sn = data_sn.wrapping_add(1);
        }
        Ok(())
    }

    /// WRITE(10) of `data` (a whole number of blocks) at `lba`.
    pub async fn write10(
        &mut self,
        lba: u32,
        block_size: u32,
        data: Bytes,
    ) -> Result<(), InitiatorError> {
        let blocks = blocks_of(data.len(), block_size)?;
        self.command(cdb10(0x2a, lba, blocks), Some(data), 0)
            .await
            .map(|_| ())
    }

    /// READ(10) of `blocks` blocks at `lba`.
    pub async fn read10(
        &mut self,
        lba: u32,
        block_size: u32,
        blocks: u16,
    ) -> Result<Vec<u8>, InitiatorError> {
        let len = u32::from(blocks)
            .checked_mul(block_size)
            .ok_or_else(|| InitiatorError::Protocol("read length".into()))?;
        self.command(cdb10(0x28, lba, blocks), None, len)
            .await
            .map(|c| c.data)
    }

    /// PERSISTENT RESERVE IN with service action `sa` (0 READ KEYS, 1 READ RESERVATION, 2 REPORT
    /// CAPABILITIES, 3 READ FULL STATUS): the parameter data.
    pub async fn persistent_reserve_in(&mut self, sa: u8, alloc: u16) -> Result<Vec<u8>, InitiatorError> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x5e;
        cdb[1] = sa & 0x1f;
        cdb[7..9].copy_from_slice(&alloc.to_be_bytes());
        let mut d = self.command(cdb, None, u32::from(alloc)).await?.data;
        // The target may return less than allocated; the residual says how much.
        if let Some(n) = prin_len(sa, &d) {
            d.truncate(n);
        }
        Ok(d)
    }

    /// PERSISTENT RESERVE OUT (basic 24-byte parameter list): `sa` service action, `pr_type` (0 where
    /// the action has none), reservation key, service action reservation key, and the flags byte
    /// (SPEC_I_PT 0x08, ALL_TG_PT 0x04, APTPL 0x01).
    pub async fn persistent_reserve_out(
        &mut self,
        sa: u8,
        pr_type: u8,
        key: u64,
        sa_key: u64,
        flags: u8,
    ) -> Result<(), InitiatorError> {
        let mut params = vec![0u8; 24];
        params[..8].copy_from_slice(&key.to_be_bytes());
        params[8..16].copy_from_slice(&sa_key.to_be_bytes());
        params[20] = flags;
        let mut cdb = [0u8; 16];
        cdb[0] = 0x5f;
        cdb[1] = sa & 0x1f;
        cdb[2] = pr_type & 0x0f;
        cdb[5..9].copy_from_slice(&24u32.to_be_bytes());
        self.command(cdb, Some(Bytes::from(params)), 0).await.map(|_| ())
    }

    /// INQUIRY: standard data (`page` None) or a VPD page; the data the target returned.
    pub async fn inquiry(&mut self, page: Option<u8>, alloc: u16) -> Result<Vec<u8>, InitiatorError> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x12;
        if let Some(p) = page {
            cdb[1] = 0x01;
            cdb[2] = p;
        }
        cdb[3..5].copy_from_slice(&alloc.to_be_bytes());
        let mut d = self.command(cdb, None, u32::from(alloc)).await?.data;
        let len = match page {
            None => d.get(4).map(|n| usize::from(*n) + 5),
            Some(_) => d.get(2..4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])) + 4),
        };
        if let Some(n) = len {
            d.truncate(n);
        }
        Ok(d)
    }

    /// SYNCHRONIZE CACHE(10) of the whole LU.
    pub async fn sync_cache(&mut self) -> Result<(), InitiatorError> {
        self.command(cdb10(0x35, 0, 0), None, 0).await.map(|_| ())
    }

    /// Test support for protocol-violation tests: a WRITE(10) of `blocks` blocks sent without data;
    /// returns the target's first R2T.
    pub async fn write10_until_r2t(&mut self, lba: u32, block_size: u32, blocks: u16) -> Result<R2t, InitiatorError> {
        let itt = self.take_itt();
        let cmd = Pdu::ScsiCommand(ScsiCommandPdu {
            immediate: false,
            final_bit: true,
            read: false,
            write: true,
            task_attr: 1,
            lun: 0,
            itt,
            expected_data_len: u32::from(blocks) * block_size,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: cdb10(0x2a, lba, blocks),
        });
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&cmd, Bytes::new()).await?;
        loop {
            let frame = tokio::time::timeout(self.cfg.io_timeout, self.recv()).await.map_err(|_| InitiatorError::Timeout("R2T"))??;
            let Some(frame) = self.housekeeping(frame).await? else { continue };
            return match frame.pdu {
                Pdu::R2t(r) if r.itt == itt => Ok(r),
                other => Err(InitiatorError::Protocol(format!("expected an R2T, got opcode {:#x}", other.opcode()))),
            };
        }
    }

    /// Test support: raw bytes on the connection (a PDU cut short, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), InitiatorError> {
        Ok(self.stream.write_all(bytes).await?)
    }

    /// Test support: waits up to `limit` for the target to close the connection (true if it did).
    pub async fn closed_by_target_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {} // NOP-In pings and the like
            }
        }
    }

    /// TEST UNIT READY; used after login to consume a pending unit attention.
    pub async fn test_unit_ready(&mut self) -> Result<(), InitiatorError> {
        self.command([0u8; 16], None, 0).await.map(|_| ())
    }

    /// READ CAPACITY(10): (number of blocks, block size).
    pub async fn read_capacity10(&mut self) -> Result<(u64, u32), InitiatorError> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x25;
        let c = self.command(cdb, None, 8).await?;
        let b = c
            .data
            .get(..8)
            .ok_or_else(|| InitiatorError::Protocol("short READ CAPACITY data".into()))?;
        let last = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let bs = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        Ok((u64::from(last) + 1, bs))
    }

    /// Logout (reason: close the session), bounded; the connection is unusable afterwards.
    pub async fn logout(&mut self) -> Result<(), InitiatorError> {
        let itt = self.take_itt();
        let req = Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        });
        self.send(&req, Bytes::new()).await?;
        loop {
            let frame = self.recv().await?;
            let Some(frame) = self.housekeeping(frame).await? else {
                continue;
            };
            if let Pdu::LogoutResponse(r) = frame.pdu {
                return if r.response == 0 {
                    Ok(())
                } else {
                    Err(InitiatorError::Response(r.response))
                };
            }
        }
    }
}

/// Bytes of PERSISTENT RESERVE IN data the header says are there (header included).
fn prin_len(sa: u8, d: &[u8]) -> Option<usize> {
    let be32 = |o: usize| d.get(o..o + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let n = match sa {
        2 => d.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))?,
        _ => 8 + be32(4)?,
    };
    Some(n.min(d.len()))
}

fn blocks_of(len: usize, block_size: u32) -> Result<u16, InitiatorError> {
    let bs = block_size as usize;
    if bs == 0 || !len.is_multiple_of(bs) {
        return Err(InitiatorError::Protocol(format!(
            "{len} bytes is not a whole number of {bs}-byte blocks"
        )));
    }
    u16::try_from(len / bs)
        .map_err(|_| InitiatorError::Protocol("too many blocks for a 10-byte CDB".into()))
}

fn finish(status: u8, resp_data: &[u8], read_buf: Vec<u8>) -> Result<Completed, InitiatorError> {
    match status {
        STATUS_GOOD => Ok(Completed { data: read_buf }),
        STATUS_CHECK_CONDITION => {
            // The data segment of a SCSI Response is SenseLength (2 bytes) followed by the sense data.
            let sense_len = resp_data
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .unwrap_or(0);
            let sense = resp_data.get(2..2 + sense_len).unwrap_or(&[]);
            let (key, asc, ascq) = parse_sense(sense).unwrap_or((0, 0, 0));
            Err(InitiatorError::CheckCondition { key, asc, ascq })
        }
        s => Err(InitiatorError::ScsiStatus(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_formats_are_both_understood() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[12] = 0x29;
        fixed[13] = 0x00;
        assert_eq!(parse_sense(&fixed), Some((6, 0x29, 0)));
        assert_eq!(parse_sense(&[0x72, 0x05, 0x24, 0x01]), Some((5, 0x24, 1)));
        assert_eq!(
            parse_sense(&[0x70, 0, 6]),
            None,
            "short fixed sense must not be read past its end"
        );
        assert_eq!(parse_sense(&[]), None);
    }

    #[test]
    fn check_condition_surfaces_key_and_asc() {
        let mut data = vec![0u8, 18];
        let mut sense = [0u8; 18];
        sense[0] = 0x70;
        sense[2] = 0x06;
        sense[12] = 0x29;
        data.extend_from_slice(&sense);
        let e = finish(STATUS_CHECK_CONDITION, &data, Vec::new()).err();
        assert!(
            matches!(
                e,
                Some(InitiatorError::CheckCondition {
                    key: 6,
                    asc: 0x29,
                    ascq: 0
                })
            ),
            "{e:?}"
        );
        assert!(e.is_some_and(|e| e.is_unit_attention()));
        assert!(matches!(
            finish(0x08, &[], Vec::new()),
            Err(InitiatorError::ScsiStatus(0x08))
        ));
    }

    #[test]
    fn block_counts_must_be_whole() {
        assert_eq!(blocks_of(4096, 512).ok(), Some(8));
        assert!(blocks_of(4000, 512).is_err());
        assert!(blocks_of(512, 0).is_err());
    }
}
