//! The login state machine (RFC 7143 §6.3, §11.12–§11.13) as a pure type: login request PDUs in,
//! login response PDUs out. The session layer does the I/O, assigns the TSIH and performs session
//! reinstatement between [`LoginOutcome::Complete`] and sending the final response.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use super::chap::{self, ChapAccount, ChapChallenge};
use super::keys::{KeyAnswer, SessionParams, SessionType, TargetParams, negotiate_key};
use super::text::{encode_text, parse_text};
use crate::pdu::{LoginRequest, LoginResponse};

/// Login status class/detail pairs (RFC 7143 §11.13.5; anchors §1.2).
pub mod status {
    pub const SUCCESS: (u8, u8) = (0, 0);
    pub const INITIATOR_ERROR: (u8, u8) = (2, 0);
    pub const AUTH_FAILURE: (u8, u8) = (2, 1);
    pub const AUTHORIZATION_FAILURE: (u8, u8) = (2, 2);
    pub const NOT_FOUND: (u8, u8) = (2, 3);
    pub const TARGET_REMOVED: (u8, u8) = (2, 4);
    pub const UNSUPPORTED_VERSION: (u8, u8) = (2, 5);
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (2, 6);
    pub const MISSING_PARAMETER: (u8, u8) = (2, 7);
    pub const CANNOT_INCLUDE: (u8, u8) = (2, 8);
    pub const SESSION_TYPE_NOT_SUPPORTED: (u8, u8) = (2, 9);
    pub const SESSION_DOES_NOT_EXIST: (u8, u8) = (2, 10);
    pub const INVALID_DURING_LOGIN: (u8, u8) = (2, 11);
    pub const TARGET_ERROR: (u8, u8) = (3, 0);
    pub const SERVICE_UNAVAILABLE: (u8, u8) = (3, 1);
    pub const OUT_OF_RESOURCES: (u8, u8) = (3, 2);
}

const STAGE_SECURITY: u8 = 0;
const STAGE_OPERATIONAL: u8 = 1;
const STAGE_FULL_FEATURE: u8 = 3;
/// Bound on text accumulated over C-bit continuations; login text is small.
const MAX_LOGIN_TEXT: usize = 64 * 1024;

/// What the login machine needs to know about a target.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    pub name: String,
    pub alias: Option<String>,
    pub tpgt: u16,
    pub chap: Option<ChapAccount>,
    pub mutual_chap: Option<ChapAccount>,
    pub params: TargetParams,
}

/// Result of looking a target up for an initiator.
#[derive(Debug, Clone)]
pub enum TargetLookup {
    Found(Box<LoginTarget>),
    NotFound,
    /// The target exists but its ACL refuses this initiator (status 02/02).
    Denied,
}

/// Where the login machine finds targets, ACL decisions and discovery credentials.
pub trait LoginDirectory: Send + Sync {
    fn lookup(&self, target_name: &str, initiator_name: &str, peer: IpAddr) -> TargetLookup;
    /// [`Self::lookup`] for a connection that arrived on `local` (the target's portal group, hence
    /// the TPGT, may depend on it). Defaults to `lookup`.
    fn lookup_at(
        &self,
        target_name: &str,
        initiator_name: &str,
        peer: IpAddr,
        local: Option<SocketAddr>,
    ) -> TargetLookup {
        let _ = local;
        self.lookup(target_name, initiator_name, peer)
    }
    fn discovery_chap(&self) -> Option<ChapAccount>;
    fn discovery_params(&self) -> TargetParams;
}

/// Everything the session layer needs once login succeeded.
#[derive(Debug, Clone)]
pub struct LoginResult {
    pub session_type: SessionType,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// `None` for discovery sessions.
    pub target: Option<LoginTarget>,
    pub isid: [u8; 6],
    /// TSIH the initiator sent (0 = new session).
    pub requested_tsih: u16,
    pub cid: u16,
    pub params: SessionParams,
    /// ExpCmdSN for the full feature phase (the login's CmdSN; login requests are immediate).
    pub exp_cmd_sn: u32,
    /// StatSN to use for the first full-feature response.
    pub next_stat_sn: u32,
}

#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// Send the response and wait for the next login request.
    Continue,
    /// Login done: the session layer sets `response.tsih` and sends the response.
    Complete(Box<LoginResult>),
    /// Send the (error status) response and close the connection.
    Failed,
}

#[derive(Debug, Clone)]
pub struct LoginStep {
    pub response: LoginResponse,
    pub data: Bytes,
    pub outcome: LoginOutcome,
}

#[derive(Debug, Clone)]
enum AuthState {
    AwaitMethod,
    AwaitChapA,
    AwaitChapResponse(ChapChallenge),
    Complete,
}

struct Identity {
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    session_type: SessionType,
    initiator_name: String,
    initiator_alias: Option<String>,
    target: Option<LoginTarget>,
    /// Account the initiator must authenticate with (None = no authentication required).
    chap: Option<ChapAccount>,
    mutual_chap: Option<ChapAccount>,
}

/// The login state machine for one connection.
pub struct LoginMachine {
    directory: Arc<dyn LoginDirectory>,
    peer: IpAddr,
    /// The target address the connection arrived on, if known (decides the portal group).
    local: Option<SocketAddr>,
    identity: Option<Identity>,
    stage: u8,
    auth: AuthState,
    params: Option<SessionParams>,
    target_params: TargetParams,
    stat_sn: Option<u32>,
    pending_text: Vec<u8>,
    declared_limits: bool,
    finished: bool,
}

struct Failure((u8, u8));

impl LoginMachine {
    pub fn new(directory: Arc<dyn LoginDirectory>, peer: IpAddr) -> Self {
        LoginMachine {
            directory,
            peer,
            local: None,
            identity: None,
            stage: STAGE_SECURITY,
            auth: AuthState::AwaitMethod,
            params: None,
            target_params: TargetParams::default(),
            stat_sn: None,
            pending_text: Vec::new(),
            declared_limits: false,
            finished: false,
        }
    }

    /// A machine for a connection that arrived on `local`: the target is looked up with
    /// [`LoginDirectory::lookup_at`], so the TPGT is that of `local`'s portal group.
    pub fn with_local(directory: Arc<dyn LoginDirectory>, peer: IpAddr, local: SocketAddr) -> Self {
        LoginMachine {
            local: Some(local),
            ..Self::new(directory, peer)
        }
    }

    /// Processes one login request with its data segment.
    pub fn step(&mut self, req: &LoginRequest, data: &[u8]) -> LoginStep {
        let stat_sn = *self.stat_sn.get_or_insert(req.exp_stat_sn);
        self.stat_sn = Some(stat_sn.wrapping_add(1));
        let mut response = LoginResponse {
            csg: req.csg,
            nsg: req.nsg,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn,
            ..LoginResponse::default()
        };
        match self.process(req, data, &mut response) {
            Ok((pairs, outcome)) => {
                if matches!(outcome, LoginOutcome::Complete(_)) {
                    self.finished = true;
                }
                LoginStep {
                    response,
                    data: Bytes::from(encode_text(&pairs)),
                    outcome,
                }
            }
            Err(Failure((class, detail))) => {
                self.finished = true;
                response.transit = false;
                response.continue_bit = false;
                response.nsg = 0;
                response.status_class = class;
                response.status_detail = detail;
                LoginStep {
                    response,
                    data: Bytes::new(),
                    outcome: LoginOutcome::Failed,
                }
            }
        }
    }

    fn process(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        response: &mut LoginResponse,
    ) -> Result<(Vec<(String, String)>, LoginOutcome), Failure> {
        if self.finished {
            return Err(Failure(status::INVALID_DURING_LOGIN));
        }
        if req.version_min > 0 {
            return Err(Failure(status::UNSUPPORTED_VERSION));
        }
        if let Some(id) = &self.identity
            && (id.isid != req.isid || id.tsih != req.tsih || id.cid != req.cid)
        {
            return Err(Failure(status::INITIATOR_ERROR));
        }
        if self.identity.is_none() && self.pending_text.is_empty() && req.csg == STAGE_OPERATIONAL {
            // The initiator may skip the security stage (RFC 7143 §6.3); whether that is allowed is
            // decided once the target (and its authentication requirement) is known.
            self.stage = STAGE_OPERATIONAL;
        }
        if req.csg != self.stage || req.csg == 2 || req.csg == STAGE_FULL_FEATURE {
            return Err(Failure(status::INITIATOR_ERROR));
        }
        if req.continue_bit {
            // Text continues in the next PDU (RFC 7143 §11.12.2): answer with an empty response.
            if req.transit || self.pending_text.len() + data.len() > MAX_LOGIN_TEXT {
                return Err(Failure(status::INITIATOR_ERROR));
            }
            self.pending_text.extend_from_slice(data);
            response.transit = false;
            return Ok((Vec::new(), LoginOutcome::Continue));
        }
        let full_text = if self.pending_text.is_empty() {
            parse_text(data)
        } else {
            self.pending_text.extend_from_slice(data);
            let r = parse_text(&self.pending_text);
            self.pending_text.clear();
            r
        };
        let pairs = full_text.map_err(|_| Failure(status::INITIATOR_ERROR))?;
        let mut replies: Vec<(String, String)> = Vec::new();
        if self.identity.is_none() {
            self.establish_identity(req, &pairs, &mut replies)?;
        }
        let auth_required = self.identity.as_ref().is_some_and(|i| i.chap.is_some());
        if req.csg == STAGE_OPERATIONAL
            && auth_required
            && !matches!(self.auth, AuthState::Complete)
        {
            return Err(Failure(status::AUTH_FAILURE));
        }
        if req.csg == STAGE_SECURITY {
            self.security_keys(&pairs, &mut replies)?;
        } else if pairs
            .iter()
            .any(|(k, _)| k == "AuthMethod" || k.starts_with("CHAP_"))
        {
            return Err(Failure(status::INITIATOR_ERROR));
        }
        self.operational_keys(&pairs, &mut replies);

        if !req.transit {
            response.transit = false;
            return Ok((replies, LoginOutcome::Continue));
        }
        let nsg_ok = match req.csg {
            STAGE_SECURITY => req.nsg == STAGE_OPERATIONAL || req.nsg == STAGE_FULL_FEATURE,
            _ => req.nsg == STAGE_FULL_FEATURE,
        };
        if !nsg_ok {
            return Err(Failure(status::INITIATOR_ERROR));
        }
        if req.csg == STAGE_SECURITY {
            match &self.auth {
                AuthState::Complete => {}
                AuthState::AwaitMethod if !auth_required => self.auth = AuthState::Complete,
                // Transit requested without ever offering an acceptable AuthMethod.
                AuthState::AwaitMethod => return Err(Failure(status::AUTH_FAILURE)),
                // Mid-exchange: stay in the security stage until CHAP finishes.
                _ => {
                    response.transit = false;
                    return Ok((replies, LoginOutcome::Continue));
                }
            }
        }
        response.transit = true;
        self.stage = req.nsg;
        if req.nsg == STAGE_OPERATIONAL {
            self.declare_limits(&mut replies);
            return Ok((replies, LoginOutcome::Continue));
        }
        self.declare_limits(&mut replies);
        let id = self
            .identity
            .as_ref()
            .ok_or(Failure(status::TARGET_ERROR))?;
        let params = self.params.clone().ok_or(Failure(status::TARGET_ERROR))?;
        let result = LoginResult {
            session_type: id.session_type,
            initiator_name: id.initiator_name.clone(),
            initiator_alias: id.initiator_alias.clone(),
            target: id.target.clone(),
            isid: id.isid,
            requested_tsih: id.tsih,
            cid: id.cid,
            params,
            exp_cmd_sn: req.cmd_sn,
            next_stat_sn: self.stat_sn.unwrap_or(0),
        };
        Ok((replies, LoginOutcome::Complete(Box::new(result))))
    }

    fn establish_identity(
        &mut self,
        req: &LoginRequest,
        pairs: &[(String, String)],
        replies: &mut Vec<(String, String)>,
    ) -> Result<(), Failure> {
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let initiator_name = get("InitiatorName").filter(|n| !n.is_empty());
        let initiator_name = initiator_name.ok_or(Failure(status::MISSING_PARAMETER))?;
        let session_type = match get("SessionType").as_deref() {
            None | Some("Normal") => SessionType::Normal,
            Some("Discovery") => SessionType::Discovery,
            Some(_) => return Err(Failure(status::SESSION_TYPE_NOT_SUPPORTED)),
        };
        let (target, chap, mutual_chap, target_params) = match session_type {
            SessionType::Discovery => (
                None,
                self.directory.discovery_chap(),
                None,
                self.directory.discovery_params(),
            ),
            SessionType::Normal => {
                let name = get("TargetName").filter(|n| !n.is_empty());
                let name = name.ok_or(Failure(status::MISSING_PARAMETER))?;
                match self
                    .directory
                    .lookup_at(&name, &initiator_name, self.peer, self.local)
                {
                    TargetLookup::Found(t) => {
                        let t = *t;
                        // RFC 7143 §13.9: TargetPortalGroupTag goes in the first response.
                        replies.push(("TargetPortalGroupTag".into(), t.tpgt.to_string()));
                        if let Some(alias) = &t.alias {
                            replies.push(("TargetAlias".into(), alias.clone()));
                        }
                        let (c, m, p) = (t.chap.clone(), t.mutual_chap.clone(), t.params.clone());
                        (Some(t), c, m, p)
                    }
                    TargetLookup::NotFound => return Err(Failure(status::NOT_FOUND)),
                    TargetLookup::Denied => return Err(Failure(status::AUTHORIZATION_FAILURE)),
                }
            }
        };
        self.params = Some(SessionParams::rfc_defaults(&target_params));
        self.target_params = target_params;
        self.identity = Some(Identity {
            isid: req.isid,
            tsih: req.tsih,
            cid: req.cid,
            session_type,
            initiator_name,
            initiator_alias: get("InitiatorAlias"),
            target,
            chap,
            mutual_chap,
        });
        Ok(())
    }

    fn security_keys(
        &mut self,
        pairs: &[(String, String)],
        replies: &mut Vec<(String, String)>,
    ) -> Result<(), Failure> {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let (chap_account, mutual) = match &self.identity {
            Some(i) => (i.chap.clone(), i.mutual_chap.clone()),
            None => (None, None),
        };
        let fail = Failure(status::AUTH_FAILURE);
        if let Some(methods) = get("AuthMethod") {
            if !matches!(self.auth, AuthState::AwaitMethod) {
                return Err(Failure(status::INITIATOR_ERROR));
            }
            let offered: Vec<&str> = methods.split(',').collect();
            let chosen = if chap_account.is_some() {
                offered.contains(&"CHAP").then_some("CHAP")
            } else {
                offered.contains(&"None").then_some("None")
            };
            match chosen {
                Some("CHAP") => {
                    replies.push(("AuthMethod".into(), "CHAP".into()));
                    self.auth = AuthState::AwaitChapA;
                }
                Some(_) => {
                    replies.push(("AuthMethod".into(), "None".into()));
                    self.auth = AuthState::Complete;
                }
                None => return Err(fail),
            }
        }
        if let Some(algs) = get("CHAP_A") {
            if !matches!(self.auth, AuthState::AwaitChapA) {
                return Err(Failure(status::INITIATOR_ERROR));
            }
            let alg = chap::select_algorithm(algs, &chap::ALL_ALGORITHMS)
                .ok_or(Failure(status::AUTH_FAILURE))?;
            let challenge =
                ChapChallenge::generate(alg).map_err(|_| Failure(status::TARGET_ERROR))?;
            replies.extend(challenge.keys());
            self.auth = AuthState::AwaitChapResponse(challenge);
        }
        let (name, resp) = (get("CHAP_N"), get("CHAP_R"));
        if name.is_some() || resp.is_some() {
            let AuthState::AwaitChapResponse(challenge) = &self.auth else {
                return Err(Failure(status::INITIATOR_ERROR));
            };
            let (Some(name), Some(resp), Some(account)) = (name, resp, chap_account.as_ref())
            else {
                return Err(fail);
            };
            challenge
                .verify(account, name, resp)
                .map_err(|_| Failure(status::AUTH_FAILURE))?;
            match (get("CHAP_I"), get("CHAP_C")) {
                (Some(id), Some(c)) => {
                    let mutual = mutual.as_ref().ok_or(Failure(status::AUTH_FAILURE))?;
                    let (n, r) = challenge
                        .answer_initiator(mutual, id, c)
                        .map_err(|_| Failure(status::AUTH_FAILURE))?;
                    replies.push(("CHAP_N".into(), n));
                    replies.push(("CHAP_R".into(), r));
                }
                (None, None) => {}
                _ => return Err(fail),
            }
            self.auth = AuthState::Complete;
        } else if get("CHAP_I").is_some() || get("CHAP_C").is_some() {
            return Err(fail);
        }
        Ok(())
    }

    fn operational_keys(
        &mut self,
        pairs: &[(String, String)],
        replies: &mut Vec<(String, String)>,
    ) {
        let Some(id) = &self.identity else { return };
        let session_type = id.session_type;
        let Some(params) = self.params.as_mut() else {
            return;
        };
        for (k, v) in pairs {
            if let KeyAnswer::Reply(answer) =
                negotiate_key(k, v, &self.target_params, session_type, params)
            {
                replies.push((k.clone(), answer));
            }
        }
    }

    /// Declares the target's receive limit once, when the operational stage is reached
    /// (MaxRecvDataSegmentLength is declarative, RFC 7143 §13.12).
    fn declare_limits(&mut self, replies: &mut Vec<(String, String)>) {
        if self.declared_limits {
            return;
        }
        self.declared_limits = true;
        if let Some(p) = &self.params {
            replies.push((
                "MaxRecvDataSegmentLength".into(),
                p.max_recv_data_segment_length.to_string(),
            ));
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
