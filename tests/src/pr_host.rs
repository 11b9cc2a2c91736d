//! A clustered host for persistent-reservation drills: one initiator (its own name and fixed ISID, so
//! every session is the same I_T nexus, as open-iscsi keeps one ISID per interface) with a long-lived
//! session in a network namespace, driven one operation at a time from the test thread.
//!
//! Like a real host it keeps its session until the target drops it, then logs in again (bounded); unit
//! attentions are collected and the command is retried, so the test sees both what the command finally
//! returned and which unit attentions the host was given on the way.

use crate::initiator::{Initiator, InitiatorConfig, InitiatorError};
use crate::writer::spawn_in_netns;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a host can be asked to do.
#[derive(Debug, Clone)]
pub enum HostOp {
    /// PERSISTENT RESERVE IN with this service action; the parameter data comes back.
    Prin(u8),
    /// PERSISTENT RESERVE OUT: service action, type, key, service action key, flags.
    Prout { sa: u8, pr_type: u8, key: u64, sa_key: u64, flags: u8 },
    /// WRITE(10) of one 512-byte block at this LBA.
    Write(u32),
    /// READ(10) of one 512-byte block.
    Read(u32),
    TestUnitReady,
    /// INQUIRY: standard data (`None`) or a VPD page; the raw data comes back.
    Inquiry(Option<u8>),
}

/// How a command finally ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Good(Vec<u8>),
    ReservationConflict,
    Check { key: u8, asc: u8, ascq: u8 },
    Failed(String),
}

/// The result of one operation and the unit attentions (asc, ascq) received before it completed.
#[derive(Debug, Clone)]
pub struct HostReply {
    pub unit_attentions: Vec<(u8, u8)>,
    pub outcome: Outcome,
    /// Sessions (re)established while running it.
    pub logins: usize,
}

type Request = (HostOp, mpsc::Sender<HostReply>);

/// A host running in its own thread (and namespace).
pub struct PrHost {
    pub name: String,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<Result<Result<()>>>>,
}

/// Bounds: a failover may take a few seconds; nothing here waits longer than these.
const LOGIN_FOR: Duration = Duration::from_secs(30);
const UA_RETRIES: usize = 8;

impl PrHost {
    pub fn spawn(netns: Option<&str>, cfg: InitiatorConfig) -> Result<PrHost> {
        let (tx, rx) = mpsc::channel::<Request>();
        let name = cfg.initiator_name.clone();
        let thread = spawn_in_netns(netns, move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(serve(cfg, rx));
            Ok(())
        })?;
        Ok(PrHost { name, tx: Some(tx), thread: Some(thread) })
    }

    /// Runs `op` and waits for its reply (bounded).
    pub fn run(&self, op: HostOp) -> Result<HostReply> {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .context("host stopped")?
            .send((op.clone(), rtx))
            .map_err(|_| anyhow!("{}: host thread gone", self.name))?;
        rrx.recv_timeout(LOGIN_FOR + Duration::from_secs(30))
            .with_context(|| format!("{}: no reply to {op:?}", self.name))
    }

    /// Runs `op` and returns the final outcome, ignoring unit attentions.
    pub fn outcome(&self, op: HostOp) -> Result<Outcome> {
        Ok(self.run(op)?.outcome)
    }
}

impl Drop for PrHost {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn login(cfg: &InitiatorConfig) -> Result<Initiator, String> {
    let deadline = Instant::now() + LOGIN_FOR;
    loop {
        match Initiator::connect(cfg).await {
            Ok(i) => return Ok(i),
            Err(e) if Instant::now() >= deadline => return Err(format!("login failed for {LOGIN_FOR:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn serve(cfg: InitiatorConfig, rx: mpsc::Receiver<Request>) {
    let mut session: Option<Initiator> = None;
    while let Ok((op, reply)) = rx.recv() {
        let mut uas = Vec::new();
        let mut logins = 0;
        let mut outcome = Outcome::Failed("not run".into());
        for _ in 0..UA_RETRIES + 4 {
            if session.is_none() {
                match login(&cfg).await {
                    Ok(s) => {
                        session = Some(s);
                        logins += 1;
                    }
                    Err(e) => {
                        outcome = Outcome::Failed(e);
                        break;
                    }
                }
            }
            let Some(s) = session.as_mut() else { break };
            match run_op(s, &op).await {
                Ok(data) => {
                    outcome = Outcome::Good(data);
                    break;
                }
                Err(InitiatorError::ScsiStatus(0x18)) => {
                    outcome = Outcome::ReservationConflict;
                    break;
                }
                Err(InitiatorError::CheckCondition { key: 6, asc, ascq }) if uas.len() < UA_RETRIES => {
                    uas.push((asc, ascq));
                }
                Err(InitiatorError::CheckCondition { key, asc, ascq }) => {
                    outcome = Outcome::Check { key, asc, ascq };
                    break;
                }
                // The connection went (a failover, a reinstated session): log in again.
                Err(e) => {
                    session = None;
                    outcome = Outcome::Failed(e.to_string());
                }
            }
        }
        let _ = reply.send(HostReply { unit_attentions: uas, outcome, logins });
    }
    if let Some(mut s) = session {
        let _ = s.logout().await;
    }
}

async fn run_op(s: &mut Initiator, op: &HostOp) -> Result<Vec<u8>, InitiatorError> {
    match *op {
        HostOp::Prin(sa) => s.persistent_reserve_in(sa, 8192).await,
        HostOp::Prout { sa, pr_type, key, sa_key, flags } => {
            s.persistent_reserve_out(sa, pr_type, key, sa_key, flags).await.map(|()| Vec::new())
        }
        HostOp::Write(lba) => s.write10(lba, 512, Bytes::from(vec![0x5au8; 512])).await.map(|()| Vec::new()),
        HostOp::Read(lba) => s.read10(lba, 512, 1).await,
        HostOp::TestUnitReady => s.test_unit_ready().await.map(|()| Vec::new()),
        HostOp::Inquiry(page) => s.inquiry(page, 1024).await,
    }
}
