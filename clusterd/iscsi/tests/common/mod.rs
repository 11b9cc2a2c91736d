//! A small iSCSI test initiator built on the crate's own codec, plus a helper that starts a
//! `TargetServer` with a memory-backed LUN on 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_target::backend::{BlockBackend, MemBackend};
use iscsi_target::login::chap::{ChapAlgorithm, decode_binary, encode_hex};
use iscsi_target::login::{ChapAccount, TargetParams, encode_text, parse_text};
use iscsi_target::pdu::*;
use iscsi_target::scsi::{LogicalUnit, LunIdentity, MemPrStore, ScsiTarget};
use iscsi_target::server::{Acl, ServerConfig, TargetConfig, TargetServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const TARGET: &str = "iqn.2026-01.test.ha:disk0";
pub const HIDDEN: &str = "iqn.2026-01.test.ha:hidden";
pub const INITIATOR: &str = "iqn.2026-01.test.ha:client";
pub const LUN_BYTES: u64 = 4 * 1024 * 1024;

pub struct TestServer {
    pub server: Arc<TargetServer>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub fn scsi_target(name: &str) -> Arc<ScsiTarget> {
    scsi_target_on(name, Arc::new(MemBackend::new(LUN_BYTES)))
}

/// A target with one LUN on `backend`.
pub fn scsi_target_on(name: &str, backend: Arc<dyn BlockBackend>) -> Arc<ScsiTarget> {
    let identity = LunIdentity {
        vendor: "TEST".into(),
        product: "MEMDISK".into(),
        revision: "0001".into(),
        serial: "SN0001".into(),
        naa: 0x6001_4050_0000_0001,
        naa_ext: 1,
        target_port_group: 1,
        write_cache: false,
        thin: false,
    };
    let lu = LogicalUnit::new(identity, backend, 512, Arc::new(MemPrStore::new()))
        .expect("logical unit");
    let mut luns = BTreeMap::new();
    luns.insert(0, Arc::new(lu));
    Arc::new(ScsiTarget::new(name.into(), luns))
}

/// Starts a server with TARGET (open ACL unless changed) and HIDDEN (ACL that refuses INITIATOR).
pub async fn start(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    start_with(scsi_target(TARGET), configure).await
}

/// Like [`start`], with TARGET's LUNs given.
pub async fn start_with(
    main_scsi: Arc<ScsiTarget>,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let main = TargetConfig {
        iqn: TARGET.into(),
        alias: Some("test disk".into()),
        tpgt: 1,
        scsi: main_scsi,
        acl: Acl::default(),
        chap: None,
        mutual_chap: None,
        params: TargetParams::default(),
        portal_groups: Vec::new(),
    };
    let hidden = TargetConfig {
        iqn: HIDDEN.into(),
        alias: None,
        tpgt: 1,
        scsi: scsi_target(HIDDEN),
        acl: Acl {
            initiators: vec!["iqn.2026-01.test.ha:someone-else".into()],
            networks: vec![],
        },
        chap: None,
        mutual_chap: None,
        params: TargetParams::default(),
        portal_groups: Vec::new(),
    };
    let mut config = ServerConfig::new(vec![addr], vec![main, hidden]);
    configure(&mut config);
    let server = Arc::new(TargetServer::new(config));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.clone().serve(listener, shutdown.clone()));
    TestServer {
        server,
        addr,
        shutdown,
        task,
    }
}

pub struct Initiator {
    stream: TcpStream,
    buf: BytesMut,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    itt: u32,
    pub digests: DigestConfig,
}

pub type Keys = Vec<(String, String)>;

pub fn key(keys: &Keys, k: &str) -> Option<String> {
    keys.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone())
}

/// Result of a SCSI command.
#[derive(Debug)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
    pub residual: (bool, bool, u32),
}

impl Initiator {
    pub async fn connect(addr: SocketAddr, isid_last: u8) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Initiator {
            stream,
            buf: BytesMut::new(),
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, isid_last],
            tsih: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 0x100,
            digests: DigestConfig::default(),
        }
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    pub async fn send(&mut self, pdu: &Pdu, data: Bytes) {
        let out = encode(pdu, data, self.digests).expect("encode");
        self.stream.write_all(&out.to_vec()).await.expect("send");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send raw");
    }

    /// Next PDU, or None on EOF / connection reset / 3 s of silence.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Frame> {
        let fut = async {
            loop {
                if let Some(f) =
                    decode_frame(&mut self.buf, self.digests, 16 << 20).expect("decode")
                {
                    return Some(f);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(wait, fut).await.ok().flatten()
    }

    pub async fn recv(&mut self) -> Frame {
        let f = self
            .try_recv(Duration::from_secs(5))
            .await
            .expect("expected a PDU");
        if let Some(sn) = stat_sn_of(&f.pdu) {
            self.exp_stat_sn = sn.wrapping_add(1);
        }
        f
    }

    pub async fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> (LoginResponse, Keys) {
        let itt = self.itt;
        let req = LoginRequest {
            transit,
            csg,
            nsg,
            isid: self.isid,
            tsih: self.tsih,
            itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ..LoginRequest::default()
        };
        self.send(&Pdu::LoginRequest(req), Bytes::from(encode_text(keys)))
            .await;
        let f = self.recv().await;
        let Pdu::LoginResponse(r) = f.pdu else {
            panic!("expected login response, got {:?}", f.pdu)
        };
        if r.transit && r.nsg == 3 && r.status_class == 0 {
            self.tsih = r.tsih;
        }
        (r, parse_text(&f.data).expect("login text"))
    }

    /// Operational-stage-only login to TARGET with extra keys.
    pub async fn login_normal(&mut self, extra: &[(&str, &str)]) -> (LoginResponse, Keys) {
        let mut keys = vec![
            ("InitiatorName", INITIATOR),
            ("SessionType", "Normal"),
            ("TargetName", TARGET),
        ];
        keys.extend_from_slice(extra);
        let (r, k) = self.login_step(1, 3, true, &keys).await;
        if r.status_class == 0 {
            let on = |name: &str| key(&k, name).as_deref() == Some("CRC32C");
            self.digests = DigestConfig {
                header: on("HeaderDigest"),
                data: on("DataDigest"),
            };
        }
        (r, k)
    }

    /// Security-stage CHAP login (MD5); `mutual` adds an initiator challenge. Returns the final
    /// response and, for mutual, the target's CHAP_N/CHAP_R with the challenge sent.
    pub async fn login_chap(
        &mut self,
        target: &str,
        session_type: &str,
        account: &ChapAccount,
        mutual: Option<&[u8]>,
    ) -> (LoginResponse, Keys) {
        let mut keys = vec![
            ("InitiatorName", INITIATOR),
            ("SessionType", session_type),
            ("AuthMethod", "CHAP,None"),
        ];
        if session_type == "Normal" {
            keys.push(("TargetName", target));
        }
        let (r, k) = self.login_step(0, 1, false, &keys).await;
        if r.status_class != 0 {
            return (r, k);
        }
        assert_eq!(key(&k, "AuthMethod").as_deref(), Some("CHAP"));
        let (r, k) = self.login_step(0, 1, false, &[("CHAP_A", "5")]).await;
        assert_eq!(r.status_class, 0);
        let id: u8 = key(&k, "CHAP_I").expect("CHAP_I").parse().expect("id");
        let challenge = decode_binary(&key(&k, "CHAP_C").expect("CHAP_C")).expect("challenge");
        let resp =
            encode_hex(&ChapAlgorithm::Md5.response(id, account.secret.as_bytes(), &challenge));
        let mut keys = vec![("CHAP_N", account.user.as_str()), ("CHAP_R", resp.as_str())];
        let mutual_c = mutual.map(encode_hex);
        if let Some(c) = &mutual_c {
            keys.push(("CHAP_I", "77"));
            keys.push(("CHAP_C", c.as_str()));
        }
        let (r, k) = self.login_step(0, 1, true, &keys).await;
        if r.status_class != 0 {
            return (r, k);
        }
        let (r2, mut k2) = self.login_step(1, 3, true, &[]).await;
        k2.extend(k);
        (r2, k2)
    }

    /// Runs one SCSI command to completion, answering R2Ts with Data-Out. `immediate` bytes of
    /// `data_out` go as immediate data; `unsolicited` more as unsolicited Data-Out.
    pub async fn scsi(
        &mut self,
        cdb: &[u8],
        edtl: u32,
        data_out: &[u8],
        immediate: usize,
        unsolicited: usize,
    ) -> ScsiResult {
        let itt = self.next_itt();
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let write = !data_out.is_empty();
        let cmd = ScsiCommandPdu {
            final_bit: unsolicited == 0,
            read: !write && edtl > 0,
            write,
            task_attr: 1,
            lun: 0,
            itt,
            expected_data_len: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
            ..ScsiCommandPdu::default()
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(
            &Pdu::ScsiCommand(cmd),
            Bytes::copy_from_slice(&data_out[..immediate]),
        )
        .await;
        if unsolicited > 0 {
            self.data_out(itt, RESERVED_TAG, data_out, immediate, unsolicited, 8192)
                .await;
        }
        let mut data = vec![0u8; 0];
        loop {
            let f = self.recv().await;
            match f.pdu {
                Pdu::R2t(r) => {
                    assert_eq!(r.itt, itt);
                    self.data_out(
                        itt,
                        r.ttt,
                        data_out,
                        r.buffer_offset as usize,
                        r.desired_len as usize,
                        8192,
                    )
                    .await;
                }
                Pdu::DataIn(d) => {
                    assert_eq!(d.itt, itt);
                    let off = d.buffer_offset as usize;
                    if data.len() < off + f.data.len() {
                        data.resize(off + f.data.len(), 0);
                    }
                    data[off..off + f.data.len()].copy_from_slice(&f.data);
                    if d.status_present {
                        return ScsiResult {
                            status: d.status,
                            data,
                            sense: vec![],
                            residual: (d.overflow, d.underflow, d.residual),
                        };
                    }
                }
                Pdu::ScsiResponse(r) => {
                    assert_eq!(r.itt, itt);
                    let sense = if f.data.len() > 2 {
                        f.data[2..].to_vec()
                    } else {
                        vec![]
                    };
                    return ScsiResult {
                        status: r.status,
                        data,
                        sense,
                        residual: (r.overflow, r.underflow, r.residual),
                    };
                }
                Pdu::NopIn(_) | Pdu::AsyncMessage(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn data_out(
        &mut self,
        itt: u32,
        ttt: u32,
        data: &[u8],
        offset: usize,
        len: usize,
        chunk: usize,
    ) {
        let mut sent = 0;
        let mut data_sn = 0;
        while sent < len {
            let n = chunk.min(len - sent);
            let d = DataOut {
                final_bit: sent + n == len,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn,
                buffer_offset: (offset + sent) as u32,
                ..DataOut::default()
            };
            let start = offset + sent;
            self.send(
                &Pdu::DataOut(d),
                Bytes::copy_from_slice(&data[start..start + n]),
            )
            .await;
            sent += n;
            data_sn += 1;
        }
    }

    /// Clears the power-on unit attention every new nexus starts with.
    pub async fn clear_unit_attention(&mut self) {
        for _ in 0..4 {
            if self.scsi(&[0x00, 0, 0, 0, 0, 0], 0, &[], 0, 0).await.status == 0 {
                return;
            }
        }
        panic!("TEST UNIT READY never succeeded");
    }

    pub async fn text(&mut self, keys: &[(&str, &str)]) -> Keys {
        let all = self.text_bytes(keys).await;
        parse_text(&all).expect("text")
    }

    /// Every `key=value` of a text answer in order, repeated keys included (SendTargets answers
    /// repeat `TargetAddress`, which `parse_text` refuses as a negotiation would).
    pub async fn text_all(&mut self, keys: &[(&str, &str)]) -> Keys {
        let all = self.text_bytes(keys).await;
        all.split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    async fn text_bytes(&mut self, keys: &[(&str, &str)]) -> Vec<u8> {
        let itt = self.next_itt();
        let req = TextRequest {
            immediate: false,
            final_bit: true,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ..TextRequest::default()
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&Pdu::TextRequest(req), Bytes::from(encode_text(keys)))
            .await;
        let mut all = Vec::new();
        loop {
            let f = self.recv().await;
            let Pdu::TextResponse(r) = f.pdu else {
                panic!("expected text response: {:?}", f.pdu)
            };
            all.extend_from_slice(&f.data);
            if r.final_bit {
                break;
            }
            let more = TextRequest {
                final_bit: true,
                itt,
                ttt: r.ttt,
                cmd_sn: self.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
                ..TextRequest::default()
            };
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
            self.send(&Pdu::TextRequest(more), Bytes::new()).await;
        }
        all
    }

    pub async fn logout(&mut self) -> LogoutResponse {
        let itt = self.next_itt();
        let req = LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ..LogoutRequest::default()
        };
        self.send(&Pdu::LogoutRequest(req), Bytes::new()).await;
        loop {
            let f = self.recv().await;
            if let Pdu::LogoutResponse(r) = f.pdu {
                return r;
            }
        }
    }

    /// True when the target closes the connection within 5 s (PDUs before EOF are discarded).
    pub async fn closed(&mut self) -> bool {
        self.wait_eof(Duration::from_secs(5)).await
    }

    pub async fn wait_eof(&mut self, wait: Duration) -> bool {
        let fut = async {
            let mut scratch = [0u8; 4096];
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(wait, fut).await.unwrap_or(false)
    }
}

fn stat_sn_of(pdu: &Pdu) -> Option<u32> {
    match pdu {
        Pdu::ScsiResponse(p) => Some(p.stat_sn),
        Pdu::DataIn(p) if p.status_present => Some(p.stat_sn),
        Pdu::NopIn(p) if p.itt != RESERVED_TAG => Some(p.stat_sn),
        Pdu::TaskMgmtResponse(p) => Some(p.stat_sn),
        Pdu::LoginResponse(p) => Some(p.stat_sn),
        Pdu::TextResponse(p) => Some(p.stat_sn),
        Pdu::LogoutResponse(p) => Some(p.stat_sn),
        Pdu::Reject(p) => Some(p.stat_sn),
        Pdu::AsyncMessage(p) => Some(p.stat_sn),
        _ => None,
    }
}

pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
