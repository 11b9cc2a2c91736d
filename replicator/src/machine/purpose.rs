//! What each disk request of the state machine is for: the machine hands the I/O layer a token per
//! request and finds its purpose again when the completion comes back (`Node::on_disk_done`).

/// What a disk token was for.
#[derive(Debug, Clone)]
pub(crate) enum Purpose {
    AppWrite { id: u64 },
    /// A flush: an application's or a barrier (see `barrier.rs`), by flush number.
    Flush { n: u64 },
    AppRead { id: u64, offset: u64, len: u64 },
    PeerWrite { conn: u64, seq: u64, offset: u64, len: u64, fua: bool },
    PeerFlush { conn: u64, seq: u64 },
    PeerRead { conn: u64, seq: u64 },
    ResyncWrite { conn: u64, offset: u64, len: u64 },
    ResyncRead { conn: u64, offset: u64 },
    /// The SyncSource's flush of its own disk before the first block it sends.
    ResyncFlush { conn: u64 },
    VerifyLocal { offset: u64 },
    PeerVerifyRead { conn: u64, offset: u64, len: u64 },
    /// Checksum-based resync (`csums.rs`): the source's read of a range, the target's read to
    /// digest it, the target's flush before its first digest.
    CsumLocal { conn: u64, offset: u64 },
    CsumPeerRead { conn: u64, offset: u64, len: u64, alg: u8 },
    CsumTargetFlush { conn: u64 },
    /// Protocol A, the peer side: the flush before the first write of a new epoch (`protocol_a.rs`).
    EpochFlush,
}

impl Purpose {
    /// What the request was, for log lines.
    pub(crate) fn what(&self) -> &'static str {
        match self {
            Purpose::AppWrite { .. } => "application write",
            Purpose::Flush { .. } => "flush",
            Purpose::AppRead { .. } => "application read",
            Purpose::PeerWrite { .. } => "write for the peer",
            Purpose::PeerFlush { .. } => "flush for the peer",
            Purpose::PeerRead { .. } => "read for the peer",
            Purpose::ResyncWrite { .. } => "resync write",
            Purpose::ResyncRead { .. } | Purpose::CsumLocal { .. } | Purpose::CsumPeerRead { .. } => "resync read",
            Purpose::CsumTargetFlush { .. } => "resync flush",
            Purpose::EpochFlush => "flush for the peer",
            Purpose::ResyncFlush { .. } => "resync flush",
            Purpose::VerifyLocal { .. } | Purpose::PeerVerifyRead { .. } => "verify read",
        }
    }
}
