//! The replication link as seen by the state machine: handshake (version, HMAC challenge/response,
//! parameters, generations and bitmaps), applying the sync decision, liveness timers, and teardown.
//!
//! Handshake, both sides at once (each side's frames arrive in this order because each is sent in
//! reaction to the previous one): Hello → AuthChallenge → AuthResponse → Params → Uuids + Bitmap
//! chunks → decision → State (confirmation that the two decisions mirror each other).
//! Application writes on a Primary are held while the handshake runs, so the generations both sides
//! compare are the ones that hold when the decision applies.

use super::node::{Action, Link, Node, Resync, Stage, SyncProgress};
use super::policy::{decide, Decision, HandshakeFacts, Policies};
use super::policy::{AfterSb0, AfterSb1, AfterSb2, RrConflict};
use super::state::{ConnState, DiskState, ReplState, Role};
use super::uuids::{Fixup, SideInfo, Uuids};
use crate::meta::superblock::flags;
use crate::wire::auth;
use crate::wire::frame::{Frame, Params, UuidsMsg, PROTOCOL_RESIZE};
use crate::wire::version::{negotiate, VersionRange};

/// Bitmap words per BitmapChunk frame (512 KiB).
const WORDS_PER_CHUNK: usize = 64 * 1024;
/// Abort codes: the receiver retries, gives up, or gives up and flags a split brain.
pub(crate) const ABORT_RETRY: u32 = 0;
pub(crate) const ABORT_FATAL: u32 = 1;
pub(crate) const ABORT_SPLIT_BRAIN: u32 = 2;
pub(crate) const UF_DISCARD_MY_DATA: u64 = 1;
const UF_CRASHED_PRIMARY: u64 = 2;
/// Uuids flag: the sender's persistent-reservation state is newer than its peer's copy (`pr.rs`).
pub(crate) const UF_PR_STALE: u64 = 4;

impl Node {
    pub(crate) fn on_transport_up(&mut self, conn: u64) {
        let resolve_only = self.reachable_for_resolution();
        if (self.conn == ConnState::StandAlone && !resolve_only) || self.diskless() {
            // Not wanted: refuse it.
            self.out.push(Action::Close { conn });
            return;
        }
        if self.link.is_some() {
            // The peer only reconnects when it considers the old connection dead; believe it rather
            // than wait for our own timers to notice a half-open socket.
            self.drop_link("peer reconnected", true);
        }
        let challenge = if self.p.secret.is_some() { auth::new_challenge() } else { [0u8; 64] };
        self.link = Some(Link {
            conn,
            stage: Stage::Hello,
            my_challenge: challenge,
            peer_uuids: None,
            peer_words: Vec::new(),
            peer_discard: false,
            started_ms: self.now_ms,
            last_rx_ms: self.now_ms,
            ping_sent_ms: None,
            expected_peer_repl: None,
            proto: 0,
            resolve_only,
        });
        self.send(conn, Frame::Hello {
            proto_min: self.p.protocols.min,
            proto_max: self.p.protocols.max,
            node: self.p.node.clone(),
        });
    }

    pub(crate) fn on_transport_down(&mut self, conn: u64, reason: &str) {
        if self.link.as_ref().is_some_and(|l| l.conn == conn) {
            self.drop_link(&format!("connection lost: {reason}"), true);
        }
    }

    pub(crate) fn on_frame(&mut self, conn: u64, frame: Frame) {
        let Some(link) = self.link.as_mut().filter(|l| l.conn == conn) else { return };
        link.last_rx_ms = self.now_ms;
        link.ping_sent_ms = None;
        let stage = link.stage;
        let resolve_only = link.resolve_only;
        match (stage, frame) {
            (_, Frame::Abort { .. }) if resolve_only => {
                self.link = None;
                self.out.push(Action::Close { conn });
            }
            (_, Frame::Abort { code, reason }) => {
                let msg = format!("peer aborted the connection: {reason}");
                let peer_uuids = link.peer_uuids;
                let was_keeping = self.resolve_keep_me;
                if code == ABORT_SPLIT_BRAIN {
                    self.split_brain = true;
                    self.stats.split_brains += 1;
                    self.out.push(Action::RunHandler("split-brain"));
                    // The peer found it (or still holds one): keep both sides for `split-brain`.
                    if let Some(pu) = peer_uuids {
                        self.record_split_brain(&pu, Role::from_code(pu.role).unwrap_or(Role::Unknown));
                    }
                }
                self.fatal(&msg, code == ABORT_RETRY);
                if was_keeping {
                    // The victim refused our resolution: still a split brain, still resolvable.
                    self.split_brain = true;
                }
                if code == ABORT_SPLIT_BRAIN || was_keeping {
                    self.stay_reachable_for_resolution();
                }
            }
            (_, Frame::Ping { nonce }) => self.send(conn, Frame::PingAck { nonce }),
            (_, Frame::PingAck { .. }) => {}
            (Stage::Hello, Frame::Hello { proto_min, proto_max, node }) => self.on_hello(conn, proto_min, proto_max, &node),
            (Stage::Challenge, Frame::AuthChallenge { challenge }) => self.on_challenge(conn, &challenge),
            (Stage::Response, Frame::AuthResponse { mac }) => self.on_response(conn, &mac),
            (Stage::Params, Frame::Params(p)) => self.on_params(conn, &p),
            (Stage::Uuids, Frame::Uuids(u)) if resolve_only => self.on_resolve_uuids(conn, u),
            (Stage::Uuids, Frame::Uuids(u)) => {
                if let Some(l) = self.link.as_mut() {
                    l.peer_discard = u.flags & UF_DISCARD_MY_DATA != 0;
                    l.peer_uuids = Some(u);
                    l.stage = Stage::Bitmap;
                }
            }
            (Stage::Bitmap, Frame::BitmapChunk { start_word, words, last }) => self.on_bitmap_chunk(start_word, words, last),
            (Stage::Confirm, Frame::State { role, disk, flags }) => self.on_confirm(role, disk, flags),
            (Stage::Up, f) => self.on_up_frame(conn, f),
            (Stage::Params | Stage::Hello, Frame::AuthChallenge { .. }) => {
                self.abort(conn, "the peer requires authentication (cram-hmac-alg/shared-secret) but this node has no shared secret configured", false);
            }
            (Stage::Challenge, Frame::Params(_)) => {
                self.abort(conn, "this node requires authentication but the peer sent no challenge (configure the same shared secret on both nodes)", false);
            }
            (s, f) => {
                let msg = format!("protocol error: unexpected {} during handshake stage {s:?}", frame_name(&f));
                self.abort(conn, &msg, true);
            }
        }
    }

    fn on_hello(&mut self, conn: u64, min: u32, max: u32, node: &str) {
        let peer = VersionRange::new(min, max);
        self.peer_protocols = Some(peer);
        let agreed = match negotiate("replication", self.p.protocols, peer) {
            Ok(v) => v,
            Err(e) => {
                // Retrying cannot help until one node is upgraded: StandAlone with the reason in
                // status (not a reconnect loop that logs the same refusal every connect-int).
                self.abort(conn, &e.to_string(), false);
                return;
            }
        };
        if self.p.peer.as_deref() != Some(node) {
            let msg = format!("peer introduced itself as `{node}`, expected `{}`", self.p.peer.as_deref().unwrap_or("-"));
            self.abort(conn, &msg, false);
            return;
        }
        if agreed < self.p.protocols.max {
            self.log(false, format!("{}: peer `{node}` speaks replication protocol {peer}: using version {agreed}", self.p.resource));
        }
        let Some(link) = self.link.as_mut() else { return };
        link.proto = agreed;
        if self.p.secret.is_some() {
            link.stage = Stage::Challenge;
            let c = bytes::Bytes::copy_from_slice(&link.my_challenge);
            self.send(conn, Frame::AuthChallenge { challenge: c });
        } else {
            link.stage = Stage::Params;
            self.send_params(conn);
        }
    }

    fn on_challenge(&mut self, conn: u64, theirs: &[u8]) {
        let Some(secret) = self.p.secret.clone() else { return };
        let Some(link) = self.link.as_mut() else { return };
        if let Err(e) = auth::check_peer_challenge(&link.my_challenge, theirs) {
            let msg = format!("authentication of peer failed: {e}");
            self.abort(conn, &msg, false);
            return;
        }
        link.stage = Stage::Response;
        let mac = auth::respond(&secret, theirs, &self.p.node);
        self.send(conn, Frame::AuthResponse { mac: bytes::Bytes::copy_from_slice(&mac) });
    }

    fn on_response(&mut self, conn: u64, mac: &[u8]) {
        let Some(secret) = self.p.secret.clone() else { return };
        let Some(link) = self.link.as_mut() else { return };
        let peer = self.p.peer.clone().unwrap_or_default();
        if auth::verify(&secret, &link.my_challenge, &peer, mac).is_err() {
            self.abort(conn, "authentication of peer failed: wrong shared secret (HMAC-SHA1 response did not match)", false);
            return;
        }
        link.stage = Stage::Params;
        // Probes for a split-brain resolution repeat every connect-int: not worth a line each.
        if !link.resolve_only {
            self.log(false, "peer authenticated using 20 bytes HMAC".into());
        }
        self.send_params(conn);
    }

    fn send_params(&mut self, conn: u64) {
        let pol = self.p.policies;
        let params = Params {
            resource: self.p.resource.clone(),
            data_size: self.p.data_size,
            protocol: self.p.protocol.wire_byte(),
            after_sb_0pri: pol.after_sb_0pri.code(),
            after_sb_1pri: pol.after_sb_1pri.code(),
            after_sb_2pri: pol.after_sb_2pri.code(),
            rr_conflict: pol.rr_conflict.code(),
            discard_my_data: self.discard_my_data,
            verify_alg: self.p.verify_alg.clone(),
        };
        self.send(conn, Frame::Params(params));
    }

    fn on_params(&mut self, conn: u64, p: &Params) {
        if p.resource != self.p.resource {
            let msg = format!("peer replicates resource `{}`, this node expected `{}`", p.resource, self.p.resource);
            self.abort(conn, &msg, false);
            return;
        }
        let proto = self.link.as_ref().map_or(0, |l| l.proto);
        if p.data_size > self.p.data_size && proto >= PROTOCOL_RESIZE {
            if let Err(msg) = self.adopt_peer_size(p.data_size) {
                self.abort(conn, &msg, false);
                return;
            }
        } else if p.data_size < self.p.data_size && proto >= PROTOCOL_RESIZE {
            // The peer adopts ours (or refuses the handshake) when it reads our Params.
            self.log(true, format!("{}: the peer's volume is smaller ({} < {} bytes): it finishes the interrupted resize", self.p.resource, p.data_size, self.p.data_size));
        } else if p.data_size != self.p.data_size {
            let msg = format!(
                "size mismatch: peer's usable size is {} bytes, this node's is {} bytes; both backing devices must give the same size",
                p.data_size, self.p.data_size
            );
            self.abort(conn, &msg, false);
            return;
        }
        if let Err(msg) = self.check_peer_protocol(p.protocol) {
            self.abort(conn, &msg, false);
            return;
        }
        let theirs = Policies {
            after_sb_0pri: AfterSb0::from_code(p.after_sb_0pri).unwrap_or(AfterSb0::Disconnect),
            after_sb_1pri: AfterSb1::from_code(p.after_sb_1pri).unwrap_or(AfterSb1::Disconnect),
            after_sb_2pri: AfterSb2::from_code(p.after_sb_2pri).unwrap_or(AfterSb2::Disconnect),
            rr_conflict: RrConflict::from_code(p.rr_conflict).unwrap_or(RrConflict::Disconnect),
        };
        if !policies_compatible(&self.p.policies, &theirs) {
            let msg = format!("incompatible after-sb/rr-conflict settings: this node {:?}, peer {:?}", self.p.policies, theirs);
            self.abort(conn, &msg, false);
            return;
        }
        if p.discard_my_data && self.discard_my_data {
            self.abort(conn, "both nodes asked to discard their data (--discard-my-data on both): refusing", false);
            return;
        }
        let Some(link) = self.link.as_mut() else { return };
        link.stage = Stage::Uuids;
        let resolve_only = link.resolve_only;
        let msg = self.uuids_msg();
        self.send(conn, Frame::Uuids(msg));
        // A resolve-only link sends its bitmap only once the peer's offer passed (`split_brain.rs`).
        if !resolve_only {
            self.send_bitmap(conn);
        }
    }

    pub(crate) fn send_bitmap(&mut self, conn: u64) {
        let words = self.bitmap.to_words();
        let total = words.len();
        let mut start = 0usize;
        loop {
            let end = (start + WORDS_PER_CHUNK).min(total);
            let chunk = words.get(start..end).map(<[u64]>::to_vec).unwrap_or_default();
            let last = end >= total;
            self.send(conn, Frame::BitmapChunk { start_word: start as u64, words: chunk, last });
            if last {
                break;
            }
            start = end;
        }
    }

    pub(crate) fn uuids_msg(&self) -> UuidsMsg {
        let mut fl = 0;
        if self.discard_my_data {
            fl |= UF_DISCARD_MY_DATA;
        }
        if self.crashed_primary {
            fl |= UF_CRASHED_PRIMARY;
        }
        if self.link.as_ref().is_some_and(|l| l.resolve_only) {
            fl |= super::split_brain::UF_RESOLVE_PROBE;
        }
        if self.resolve_keep_me {
            fl |= super::split_brain::UF_KEEP_ME;
        }
        if self.persisted.flags & flags::PEER_PR_STALE != 0 {
            fl |= UF_PR_STALE;
        }
        let u = self.persisted.uuids;
        UuidsMsg {
            current: u.current,
            bitmap: u.bitmap,
            history: u.history,
            dirty_bits: self.bitmap.count(),
            flags: fl,
            role: self.role.code(),
            disk: self.disk.code(),
        }
    }

    fn on_bitmap_chunk(&mut self, start_word: u64, words: Vec<u64>, last: bool) {
        let Some(link) = self.link.as_mut() else { return };
        let conn = link.conn;
        if start_word != link.peer_words.len() as u64 {
            self.abort(conn, "protocol error: bitmap chunk out of order", true);
            return;
        }
        link.peer_words.extend_from_slice(&words);
        if link.peer_words.len() > self.bitmap.to_words().len() {
            self.abort(conn, "protocol error: peer bitmap larger than the device", true);
            return;
        }
        if last {
            self.handshake_decide();
        }
    }

    fn handshake_decide(&mut self) {
        let Some(link) = self.link.as_mut() else { return };
        let conn = link.conn;
        let Some(pu) = link.peer_uuids else { return };
        let peer_words = std::mem::take(&mut link.peer_words);
        // As a split brain's survivor we asked the peer to discard; it agreed by going on.
        let peer_discard = link.peer_discard || self.resolve_keep_me;
        let peer_role = Role::from_code(pu.role).unwrap_or(Role::Secondary);
        let peer_disk = DiskState::from_code(pu.disk).unwrap_or(DiskState::DUnknown);
        let facts = HandshakeFacts {
            me: SideInfo { uuids: self.persisted.uuids, crashed_primary: self.crashed_primary, role: self.role },
            peer: SideInfo {
                uuids: Uuids { current: pu.current, bitmap: pu.bitmap, history: pu.history },
                crashed_primary: pu.flags & UF_CRASHED_PRIMARY != 0,
                role: peer_role,
            },
            my_disk: self.disk,
            peer_disk,
            my_dirty: self.bitmap.count(),
            peer_dirty: pu.dirty_bits,
            i_resolve: self.p.node.as_str() < self.p.peer.as_deref().unwrap_or(""),
            my_discard: self.discard_my_data,
            peer_discard,
            policies: self.p.policies,
        };
        let outcome = decide(&facts);
        if outcome.split_brain_detected {
            self.stats.split_brains += 1;
        }
        for line in &outcome.log {
            self.log(outcome.split_brain_detected, format!("{}: {line}", self.p.resource));
        }
        for h in &outcome.handlers {
            self.out.push(Action::RunHandler(h.name()));
        }
        if outcome.demote && self.role == Role::Primary {
            self.role = Role::Secondary;
            self.persisted.uuids.set_role_bit(false);
            self.persist_flags(self.persisted.flags & !flags::PRIMARY_IND);
            self.fail_waiting(super::node::IoFailure::NotPrimary);
        }
        if let Some(Fixup::RetireOwnBitmapUuid) = outcome.comparison.fixup {
            self.persisted.uuids.finish_resync_as_source();
            self.persist_flags(self.persisted.flags);
        }
        self.peer_role = peer_role;
        self.peer_disk = peer_disk;
        let mut decision = outcome.decision.clone();
        // Same generation on both sides, yet blocks are marked out of sync (an online verify found
        // them, or a write failed on one disk): move them from the Primary, whose data the application
        // has seen. Both sides see both bitmaps and both roles, so they agree. With no Primary there is
        // no authority to pick: the blocks stay marked and status shows them.
        if std::env::var_os("NO_MARKED_RULE").is_none() && decision == Decision::NoSync && self.disk.is_consistent() && peer_disk.is_consistent() {
            let marked = self.bitmap.count() > 0 || peer_words.iter().any(|w| *w != 0);
            match (marked, self.role, peer_role) {
                (true, Role::Primary, _) => decision = Decision::Source { full: false },
                (true, _, Role::Primary) => decision = Decision::Target { full: false },
                (true, _, _) => self.log(true, format!("{}: same generation but blocks are marked out of sync; promote one node and reconnect to resync them from it", self.p.resource)),
                _ => {}
            }
            if decision != Decision::NoSync {
                self.log(false, format!("{}: same generation with blocks marked out of sync: resyncing them from the Primary", self.p.resource));
            }
        }
        if self.role == Role::Primary && peer_role == Role::Primary && !matches!(decision, Decision::StandAlone { .. }) {
            decision = Decision::StandAlone { reason: "both nodes are Primary; refusing to connect (single-primary mode)".into(), split_brain: true };
        }
        let repl = match &decision {
            Decision::StandAlone { reason, split_brain } => {
                self.split_brain = *split_brain;
                if *split_brain {
                    self.record_split_brain(&pu, peer_role);
                }
                let reason = reason.clone();
                let msg = if *split_brain { format!("split brain: {reason}") } else { reason.clone() };
                let code = if *split_brain { ABORT_SPLIT_BRAIN } else { ABORT_FATAL };
                self.send(conn, Frame::Abort { code, reason: msg.clone() });
                self.fatal(&msg, false);
                if *split_brain {
                    self.stay_reachable_for_resolution();
                }
                return;
            }
            Decision::NoSync => ReplState::Established,
            Decision::Source { full } | Decision::Target { full } => {
                // Both sides' recorded changes must move; a full sync moves everything.
                let mut peer_map = crate::meta::bitmap::Bitmap::from_words(self.p.data_size, &peer_words);
                if *full {
                    peer_map.set_all();
                }
                self.bitmap.merge_or(&peer_map);
                if matches!(decision, Decision::Source { .. }) { ReplState::SyncSource } else { ReplState::SyncTarget }
            }
        };
        // In sync on the same generation: our bitmap UUID (if any) is history now, so that a later write
        // without the peer starts a new generation.
        if repl == ReplState::Established
            && self.persisted.uuids.bitmap != 0
            && self.persisted.uuids.current & !1 == pu.current & !1
        {
            self.persisted.uuids.finish_resync_as_source();
        }
        // The crash that made us a source has been accounted for in the merged bitmap.
        self.crashed_primary = false;
        self.discard_my_data = false;
        self.split_brain = false;
        self.split_brain_facts = None;
        self.resolve_keep_me = false;
        let mut fl = self.persisted.flags & !flags::CRASHED_PRIMARY;
        match repl {
            ReplState::SyncTarget => {
                self.disk = DiskState::Inconsistent;
                fl &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
                self.target_progress = Some(SyncProgress {
                    total_blocks: self.bitmap.count(),
                    remaining_blocks: self.bitmap.count(),
                    started_ms: self.now_ms,
                    paused: false,
                });
            }
            ReplState::SyncSource => {
                self.disk = DiskState::UpToDate;
                self.peer_disk = DiskState::Inconsistent;
                fl = (fl | flags::CONSISTENT | flags::WAS_UP_TO_DATE) & !flags::OUTDATED;
            }
            _ => {
                if self.disk.is_consistent() && peer_disk.is_consistent() {
                    self.disk = DiskState::UpToDate;
                    self.peer_disk = DiskState::UpToDate;
                    fl = (fl | flags::CONSISTENT | flags::WAS_UP_TO_DATE) & !flags::OUTDATED;
                }
            }
        }
        // Metadata before anything moves: merged bitmap and the Inconsistent flag are on disk first.
        self.bitmap.mark_all_pages_dirty();
        self.out.push(Action::PersistBitmap(self.bitmap.take_dirty_pages()));
        self.persist_flags(fl | flags::CONNECTED_IND);
        self.repl = repl;
        if let Some(l) = self.link.as_mut() {
            l.stage = Stage::Confirm;
            l.expected_peer_repl = Some(match repl {
                ReplState::SyncSource => ReplState::SyncTarget,
                ReplState::SyncTarget => ReplState::SyncSource,
                r => r,
            });
        }
        let flags = u32::from(repl.code()) | if self.user_paused { super::node::STATE_SYNC_PAUSED } else { 0 } | self.repair_capability();
        self.send(conn, Frame::State { role: self.role.code(), disk: self.disk.code(), flags });
        self.log(false, format!("{}: handshake done, replication {repl}", self.p.resource));
    }

    fn on_confirm(&mut self, role: u8, disk: u8, fl: u32) {
        let Some(link) = self.link.as_mut() else { return };
        let conn = link.conn;
        let theirs = ReplState::from_code((fl & 0xff) as u8);
        if theirs != link.expected_peer_repl {
            let msg = format!("sync decision disagreement: peer chose {theirs:?}, expected {:?}", link.expected_peer_repl);
            self.abort(conn, &msg, false);
            return;
        }
        link.stage = Stage::Up;
        self.peer_role = Role::from_code(role).unwrap_or(Role::Unknown);
        self.peer_disk = DiskState::from_code(disk).unwrap_or(DiskState::DUnknown);
        self.peer_paused = fl & super::node::STATE_SYNC_PAUSED != 0;
        self.verify_keeping.peer_can_repair = fl & super::repair::STATE_CAN_REPAIR != 0;
        self.set_conn(ConnState::Connected);
        if self.repl == ReplState::SyncSource {
            self.resync = Some(Resync {
                cursor: 0,
                inflight: Default::default(),
                total_blocks: self.bitmap.count(),
                started_ms: self.now_ms,
                budget_bytes: 0.0,
                last_refill_ms: self.now_ms,
                finishing: false,
                stable: false,
                csums: self.csum_plan(),
                recent_rate: 0,
                rate_window_ms: self.now_ms,
                rate_window_bytes: 0,
            });
            let token = self.token(super::node::Purpose::ResyncFlush { conn });
            self.out.push(Action::DiskFlush { token });
            let how = self.resync.as_ref().and_then(|r| r.csums.as_ref()).map_or(String::new(), |c| format!(", comparing {} digests first", c.alg));
            self.log(false, format!("{}: resync started as SyncSource, {} KiB to sync{how}", self.p.resource, self.bitmap.count() * 4));
        } else if self.repl == ReplState::SyncTarget {
            self.out.push(Action::RunHandler("before-resync-target"));
        }
        self.changed();
        // The peer is back and either has everything or is a SyncTarget (Inconsistent, so it cannot be
        // promoted until it has everything): held acknowledgements are safe now.
        self.thaw("the peer reconnected");
        self.start_waiting_writes();
        self.pr_link_up();
        self.pump_resync();
    }

    /// Frames once the link is up: data path, resync, state updates.
    fn on_up_frame(&mut self, conn: u64, f: Frame) {
        match f {
            Frame::State { role, disk, flags } => {
                let was = self.peer_role;
                self.peer_role = Role::from_code(role).unwrap_or(Role::Unknown);
                if was != Role::Primary && self.peer_role == Role::Primary {
                    self.resync_marked_from_primary();
                    if self.link.is_none() {
                        return;
                    }
                }
                let peer_disk_was = self.peer_disk;
                self.peer_disk = DiskState::from_code(disk).unwrap_or(DiskState::DUnknown);
                if self.peer_disk == DiskState::Diskless && peer_disk_was != DiskState::Diskless {
                    self.on_peer_detached(flags & super::node::STATE_DETACH_REQUESTED != 0);
                }
                self.changed();
                self.set_peer_paused(flags & super::node::STATE_SYNC_PAUSED != 0);
                self.abort_verify_if_peer_primary();
                let verifying = flags & super::node::STATE_VERIFYING != 0;
                if verifying != self.peer_verifying {
                    self.peer_verifying = verifying;
                    self.changed();
                }
                self.verify_keeping.peer_can_repair = flags & super::repair::STATE_CAN_REPAIR != 0;
                if flags & super::repair::STATE_REPAIR_START != 0 {
                    self.on_repair_start(conn);
                }
            }
            Frame::VerifyRequest { offset, len } => self.on_verify_request(conn, offset, u64::from(len)),
            Frame::VerifyReply { offset, digest, .. } => self.on_verify_reply(offset, digest),
            Frame::OutOfSync { offset, len } => self.on_out_of_sync(offset, u64::from(len)),
            Frame::Data { seq, offset, flags, data } => self.on_peer_data(conn, seq, offset, flags, data),
            Frame::WriteAck { seq } => self.on_write_ack(seq, true),
            Frame::NegAck { seq, .. } => self.on_write_ack(seq, false),
            Frame::Flush { seq } => self.on_peer_flush(conn, seq),
            Frame::FlushAck { seq, ok } => self.on_flush_ack(seq, ok),
            Frame::RsData { offset, data } => self.on_rs_data(conn, offset, data),
            Frame::RsAck { offset, len, ok } => self.on_rs_ack(offset, u64::from(len), ok),
            Frame::CsumRequest { offset, len, alg } => self.on_csum_request(conn, offset, u64::from(len), alg),
            Frame::CsumReply { offset, digests, .. } => self.on_csum_reply(conn, offset, digests),
            Frame::RsInSync { offset, len } => self.on_rs_in_sync(conn, offset, u64::from(len)),
            Frame::ReadRequest { seq, offset, len } => self.on_peer_read(conn, seq, offset, u64::from(len)),
            Frame::ReadReply { seq, ok, data } => self.on_read_reply(seq, ok, data),
            Frame::Uuids(u) => self.on_peer_uuids_up(u),
            Frame::ResyncFinished => self.on_resync_finished(conn),
            Frame::PrState { seq, blob } => self.on_peer_pr(conn, seq, blob),
            Frame::PrAck { seq, ok } => self.on_pr_ack(seq, ok),
            Frame::ResizeRequest { size, explicit, assume_clean } => self.on_resize_request(conn, size, explicit, assume_clean),
            Frame::ResizeReply { ok, size, capacity, reason } => self.on_resize_reply(ok, size, capacity, reason),
            Frame::Outdate => {
                let ok = self.role != Role::Primary;
                if ok && self.disk.is_consistent() {
                    self.disk = DiskState::Outdated;
                    self.persist_flags(self.persisted.flags | flags::OUTDATED);
                    self.changed();
                }
                self.send(conn, Frame::OutdateAck { ok });
            }
            Frame::OutdateAck { ok } => {
                if ok {
                    self.peer_disk = DiskState::Outdated;
                    self.changed();
                }
            }
            other => {
                let msg = format!("protocol error: unexpected {} on an established link", frame_name(&other));
                self.abort(conn, &msg, true);
            }
        }
    }

    pub(crate) fn check_link_timers(&mut self) {
        let now = self.now_ms;
        let t = self.p.timing;
        let Some(link) = self.link.as_mut() else { return };
        let conn = link.conn;
        if link.stage != Stage::Up {
            if now.saturating_sub(link.started_ms) > t.timeout_ms.saturating_mul(2) {
                self.abort(conn, "handshake timed out", true);
            }
            return;
        }
        let silent = now.saturating_sub(link.last_rx_ms);
        match link.ping_sent_ms {
            Some(sent) if now.saturating_sub(sent) > t.ping_timeout_ms.max(t.timeout_ms) => {
                self.out.push(Action::Close { conn });
                self.drop_link(&format!("peer did not answer a ping within {} ms", t.ping_timeout_ms.max(t.timeout_ms)), true);
                return;
            }
            None if silent >= t.ping_int_ms => {
                link.ping_sent_ms = Some(now);
                self.send(conn, Frame::Ping { nonce: now });
            }
            _ => {}
        }
        let ko = t.timeout_ms.saturating_mul(t.ko_count.max(1));
        // Flushes too: a barrier the peer never acknowledges would keep its writes in the activity log.
        let writes = self.writes.values().filter(|w| w.peer_pending > 0).map(|w| w.sent_ms);
        let flushes = self.flushes.values().filter(|f| f.peer_pending).map(|f| f.issued_ms);
        if let Some(oldest) = writes.chain(flushes).min()
            && now.saturating_sub(oldest) > ko
        {
            self.out.push(Action::Close { conn });
            self.drop_link(&format!("peer did not acknowledge a write or flush within {ko} ms (timeout x ko-count)"), true);
        }
    }

    /// Send an Abort with the reason, then tear down.
    pub(crate) fn abort(&mut self, conn: u64, reason: &str, retry: bool) {
        let code = if retry { ABORT_RETRY } else { ABORT_FATAL };
        self.send(conn, Frame::Abort { code, reason: reason.to_string() });
        self.fatal(reason, retry);
    }

    /// Tear down the link; `retry` keeps Connecting, otherwise StandAlone (DRBD does not retry after an
    /// authentication failure, a split brain or incompatible settings).
    pub(crate) fn fatal(&mut self, reason: &str, retry: bool) {
        self.resolve_keep_me = false;
        if let Some(l) = self.link.take_if(|l| l.resolve_only) {
            // A probe for a split-brain resolution: no state change, no warning (`split_brain.rs`).
            self.out.push(Action::Close { conn: l.conn });
            return;
        }
        self.last_error = Some(reason.to_string());
        self.log(true, format!("{}: {reason}", self.p.resource));
        self.drop_link(reason, retry);
        if !retry {
            self.out.push(Action::SetConnecting(false));
            self.set_conn(ConnState::StandAlone);
        }
    }

    /// Forget the current transport connection: writes that waited for the peer are recorded in the
    /// bitmap and complete locally; a resync stops (it resumes from the bitmap after reconnecting).
    pub(crate) fn drop_link(&mut self, reason: &str, retry: bool) {
        let Some(link) = self.link.take() else { return };
        if link.resolve_only {
            self.out.push(Action::Close { conn: link.conn });
            return;
        }
        self.peer_paused = false;
        self.peer_verifying = false;
        let peer_disk_was = if link.stage == Stage::Up { self.peer_disk } else { DiskState::DUnknown };
        self.freeze_if_fencing(peer_disk_was);
        if let Some(v) = self.verify.take() {
            self.record_aborted_verify(&v);
            self.log(true, format!("{}: online verify aborted at {} KiB (link lost)", self.p.resource, v.cursor / 1024));
        }
        self.out.push(Action::Close { conn: link.conn });
        self.log(link.stage == Stage::Up, format!("{}: disconnected: {reason}", self.p.resource));
        self.peer_role = Role::Unknown;
        self.peer_disk = DiskState::DUnknown;
        self.repl = ReplState::Off;
        self.resync = None;
        self.target_progress = None;
        if retry && !self.diskless() {
            self.set_conn(ConnState::Connecting);
        } else if self.diskless() {
            // Nothing to resync with: a detached node stays StandAlone until it is brought up again.
            self.out.push(Action::SetConnecting(false));
            self.set_conn(ConnState::StandAlone);
        }
        self.async_link_lost(link.stage == Stage::Up);
        self.peer_lost_for_inflight();
        self.pr_peer_lost();
        self.resize_link_lost();
        self.csum_target = None;
        self.changed();
    }
}

fn policies_compatible(a: &Policies, b: &Policies) -> bool {
    // discard-local on one side is discard-remote on the other.
    let zero_ok = match (a.after_sb_0pri, b.after_sb_0pri) {
        (AfterSb0::DiscardLocal, AfterSb0::DiscardRemote) | (AfterSb0::DiscardRemote, AfterSb0::DiscardLocal) => true,
        (x, y) => x == y && x != AfterSb0::DiscardLocal && x != AfterSb0::DiscardRemote,
    };
    zero_ok && a.after_sb_1pri == b.after_sb_1pri && a.after_sb_2pri == b.after_sb_2pri && a.rr_conflict == b.rr_conflict
}

pub(crate) fn frame_name(f: &Frame) -> &'static str {
    f.kind_name()
}
