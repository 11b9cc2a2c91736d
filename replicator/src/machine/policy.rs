//! The connect-time sync decision: [`uuid_compare`] followed by DRBD's post-processing
//! (`drbd_sync_handshake`, replication-anchors.md §1.5–1.6): disk-state override, split-brain
//! auto-recovery policies (after-sb-0pri/1pri/2pri), manual `--discard-my-data`, and rr-conflict.
//!
//! Both nodes run this independently on the same facts; every branch is mirror-symmetric (ties are
//! broken by the `i_resolve` flag, which exactly one side holds), so they reach opposite roles.

use super::state::{DiskState, Role};
use super::uuids::{uuid_compare, Comparison, SideInfo};
use std::fmt;

macro_rules! policy_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr, $text:expr);+ $(;)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn code(self) -> u8 { match self { $($name::$variant => $code),+ } }
            pub fn from_code(c: u8) -> Option<Self> { match c { $($code => Some($name::$variant),)+ _ => None } }
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn parse(s: &str) -> Option<Self> { Self::ALL.iter().copied().find(|p| p.as_str() == s) }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

policy_enum!(
    /// after-sb-0pri: split brain detected while neither node is Primary.
    AfterSb0 {
        Disconnect = 0, "disconnect";
        DiscardYoungerPrimary = 1, "discard-younger-primary";
        DiscardOlderPrimary = 2, "discard-older-primary";
        DiscardZeroChanges = 3, "discard-zero-changes";
        DiscardLeastChanges = 4, "discard-least-changes";
        DiscardLocal = 5, "discard-local";
        DiscardRemote = 6, "discard-remote";
    }
);

policy_enum!(
    /// after-sb-1pri: split brain detected while exactly one node is Primary.
    AfterSb1 {
        Disconnect = 0, "disconnect";
        Consensus = 1, "consensus";
        ViolentlyAs0p = 2, "violently-as0p";
        DiscardSecondary = 3, "discard-secondary";
        CallPriLostAfterSb = 4, "call-pri-lost-after-sb";
    }
);

policy_enum!(
    /// after-sb-2pri: split brain detected while both nodes are Primary.
    AfterSb2 {
        Disconnect = 0, "disconnect";
        ViolentlyAs0p = 1, "violently-as0p";
        CallPriLostAfterSb = 2, "call-pri-lost-after-sb";
    }
);

policy_enum!(
    /// rr-conflict: the decision would make the current Primary a SyncTarget.
    RrConflict {
        Disconnect = 0, "disconnect";
        Violently = 1, "violently";
        CallPriLost = 2, "call-pri-lost";
    }
);

/// The four policies of one resource; both nodes must configure the same ones (checked at handshake),
/// except that `discard-node-NAME` is turned into Local/Remote per node by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    pub after_sb_0pri: AfterSb0,
    pub after_sb_1pri: AfterSb1,
    pub after_sb_2pri: AfterSb2,
    pub rr_conflict: RrConflict,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            after_sb_0pri: AfterSb0::Disconnect,
            after_sb_1pri: AfterSb1::Disconnect,
            after_sb_2pri: AfterSb2::Disconnect,
            rr_conflict: RrConflict::Disconnect,
        }
    }
}

/// Everything one side knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeFacts {
    pub me: SideInfo,
    pub peer: SideInfo,
    pub my_disk: DiskState,
    pub peer_disk: DiskState,
    /// Out-of-sync blocks recorded in each side's bitmap (the "changes" of discard-least-changes).
    pub my_dirty: u64,
    pub peer_dirty: u64,
    pub i_resolve: bool,
    pub my_discard: bool,
    pub peer_discard: bool,
    pub policies: Policies,
}

/// What the connection does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NoSync,
    Source { full: bool },
    Target { full: bool },
    /// Drop the connection and stay StandAlone (split brain left unresolved, or a refused rr-conflict).
    StandAlone { reason: String, split_brain: bool },
}

/// A configured handler to run, and whether this node must give up its Primary role first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerCall {
    InitialSplitBrain,
    SplitBrain,
    PriLostAfterSb,
    PriLost,
}

impl HandlerCall {
    pub fn name(self) -> &'static str {
        match self {
            HandlerCall::InitialSplitBrain => "initial-split-brain",
            HandlerCall::SplitBrain => "split-brain",
            HandlerCall::PriLostAfterSb => "pri-lost-after-sb",
            HandlerCall::PriLost => "pri-lost",
        }
    }
}

/// Full outcome with an explanation for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub comparison: Comparison,
    pub split_brain_detected: bool,
    pub handlers: Vec<HandlerCall>,
    /// This node must demote itself (call-pri-lost-after-sb lost by a Primary).
    pub demote: bool,
    pub log: Vec<String>,
}

/// Undecided marker, as DRBD's −100.
const UNDECIDED: i32 = -100;

/// Runs the whole decision from `facts`' point of view.
pub fn decide(facts: &HandshakeFacts) -> Outcome {
    let cmp = uuid_compare(&facts.me, &facts.peer, facts.i_resolve);
    let mut out = Outcome {
        decision: Decision::NoSync,
        comparison: cmp,
        split_brain_detected: false,
        handlers: Vec::new(),
        demote: false,
        log: vec![format!(
            "uuid_compare()={} by rule={} ({}); self {} peer {}",
            cmp.verdict.code(),
            cmp.rule,
            cmp.rule_name(),
            facts.me.uuids,
            facts.peer.uuids
        )],
    };
    let mut hg = cmp.verdict.code();
    if hg == -1000 {
        out.decision = standalone("unrelated data: the two disks never shared a generation; refusing to sync");
        return out;
    }
    // (a) Exactly one side Inconsistent: the consistent one is the source whatever the UUIDs say.
    let mine_ok = facts.my_disk.is_consistent();
    let peer_ok = facts.peer_disk.is_consistent();
    if mine_ok != peer_ok && (facts.my_disk == DiskState::Inconsistent || facts.peer_disk == DiskState::Inconsistent) {
        let full = hg == UNDECIDED || hg.abs() == 2 || hg == 100;
        hg = if mine_ok { 1 } else { -1 };
        if full {
            hg *= 2;
        }
        out.log.push(format!("disk-state override: {} side is Inconsistent", if mine_ok { "peer" } else { "my" }));
    }
    // Bitmaps only cover the divergence when both sides forked from the same bitmap generation
    // (rule 90). After any other split brain a resolution must copy everything.
    let sb_needs_full = cmp.rule != 90;
    if hg.abs() == 100 {
        out.split_brain_detected = true;
        out.handlers.push(HandlerCall::InitialSplitBrain);
    }
    if hg == 100 {
        let pcount = u8::from(facts.me.role == Role::Primary) + u8::from(facts.peer.role == Role::Primary);
        let r = match pcount {
            0 => recover_0p(facts, facts.policies.after_sb_0pri),
            1 => recover_1p(facts, &mut out),
            _ => recover_2p(facts, &mut out),
        };
        hg = r;
        if hg.abs() < 100 {
            out.log.push(format!(
                "Split-Brain detected, {pcount} primaries, automatically solved. Sync from {} node",
                if hg > 0 { "this" } else { "peer" }
            ));
        } else {
            hg = UNDECIDED;
        }
    }
    if hg == UNDECIDED {
        if facts.my_discard && !facts.peer_discard {
            hg = -1;
        } else if facts.peer_discard && !facts.my_discard {
            hg = 1;
        }
        if hg.abs() < 100 {
            out.log.push(format!(
                "Split-Brain detected, manually solved. Sync from {} node",
                if hg > 0 { "this" } else { "peer" }
            ));
        }
    }
    if hg == UNDECIDED {
        out.handlers.push(HandlerCall::SplitBrain);
        out.split_brain_detected = true;
        out.decision = Decision::StandAlone {
            reason: "Split-Brain detected but unresolved, dropping connection".into(),
            split_brain: true,
        };
        return out;
    }
    if out.split_brain_detected && sb_needs_full && hg.abs() == 1 {
        hg *= 2;
        out.log.push("histories forked before the common bitmap generation: full sync".into());
    }
    if hg > 0 && !mine_ok {
        out.decision = standalone("I shall become SyncSource, but I am inconsistent!");
        return out;
    }
    if hg < 0 && !peer_ok && facts.peer_disk != DiskState::DUnknown {
        out.decision = standalone("I shall become SyncTarget, but the peer is inconsistent!");
        return out;
    }
    // A Primary that just gave up its role (call-pri-lost-after-sb) is no longer in conflict.
    if hg < 0 && facts.me.role == Role::Primary && !out.demote {
        match facts.policies.rr_conflict {
            RrConflict::Disconnect => {
                out.decision = standalone("I shall become SyncTarget, but I am primary! (rr-conflict disconnect)");
                return out;
            }
            RrConflict::CallPriLost => {
                out.handlers.push(HandlerCall::PriLost);
                out.decision = standalone("I shall become SyncTarget, but I am primary! (rr-conflict call-pri-lost)");
                return out;
            }
            RrConflict::Violently => {
                out.log.push("Becoming SyncTarget, violating the stable-data assumption (rr-conflict violently)".into());
            }
        }
    }
    out.decision = match hg {
        0 => Decision::NoSync,
        1 => Decision::Source { full: false },
        2 => Decision::Source { full: true },
        -1 => Decision::Target { full: false },
        _ => Decision::Target { full: true },
    };
    out
}

fn standalone(reason: &str) -> Decision {
    Decision::StandAlone { reason: reason.into(), split_brain: false }
}

/// DRBD `drbd_asb_recover_0p`; returns +1/−1 or UNDECIDED. Younger/older fall through to
/// zero-changes and least-changes when the "was primary" bits cannot tell.
fn recover_0p(f: &HandshakeFacts, policy: AfterSb0) -> i32 {
    let self_pri = f.me.uuids.bitmap & 1;
    let peer_pri = f.peer.uuids.bitmap & 1;
    let tie = if f.i_resolve { -1 } else { 1 };
    let least = || match f.my_dirty.cmp(&f.peer_dirty) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Equal => tie,
    };
    let zero = |then_least: bool| {
        if f.my_dirty == 0 && f.peer_dirty == 0 {
            tie
        } else if f.peer_dirty == 0 {
            1
        } else if f.my_dirty == 0 {
            -1
        } else if then_least {
            least()
        } else {
            UNDECIDED
        }
    };
    match policy {
        AfterSb0::Disconnect => UNDECIDED,
        AfterSb0::DiscardYoungerPrimary | AfterSb0::DiscardOlderPrimary => {
            let younger_loses = policy == AfterSb0::DiscardYoungerPrimary;
            match (self_pri, peer_pri) {
                (0, 1) => if younger_loses { -1 } else { 1 },
                (1, 0) => if younger_loses { 1 } else { -1 },
                _ => zero(true),
            }
        }
        AfterSb0::DiscardZeroChanges => zero(false),
        AfterSb0::DiscardLeastChanges => least(),
        AfterSb0::DiscardLocal => -1,
        AfterSb0::DiscardRemote => 1,
    }
}

fn recover_1p(f: &HandshakeFacts, out: &mut Outcome) -> i32 {
    let i_am_primary = f.me.role == Role::Primary;
    match f.policies.after_sb_1pri {
        AfterSb1::Disconnect => UNDECIDED,
        AfterSb1::Consensus => {
            let hg = recover_0p(f, f.policies.after_sb_0pri);
            // Accept only a result that discards the Secondary's data.
            if (hg == -1 && !i_am_primary) || (hg == 1 && i_am_primary) { hg } else { UNDECIDED }
        }
        AfterSb1::ViolentlyAs0p => recover_0p(f, f.policies.after_sb_0pri),
        AfterSb1::DiscardSecondary => if i_am_primary { 1 } else { -1 },
        AfterSb1::CallPriLostAfterSb => pri_lost_after_sb(f, out),
    }
}

fn recover_2p(f: &HandshakeFacts, out: &mut Outcome) -> i32 {
    match f.policies.after_sb_2pri {
        AfterSb2::Disconnect => UNDECIDED,
        AfterSb2::ViolentlyAs0p => recover_0p(f, f.policies.after_sb_0pri),
        AfterSb2::CallPriLostAfterSb => pri_lost_after_sb(f, out),
    }
}

/// The loser that is Primary gives up its role; if it could not, the handler would run (we can always
/// demote in-process, and also run the handler so the operator's script sees the event).
fn pri_lost_after_sb(f: &HandshakeFacts, out: &mut Outcome) -> i32 {
    let hg = recover_0p(f, f.policies.after_sb_0pri);
    if hg == -1 && f.me.role == Role::Primary {
        out.demote = true;
        out.handlers.push(HandlerCall::PriLostAfterSb);
        out.log.push("Split-brain victim is Primary: giving up the Primary role".into());
    }
    hg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::uuids::Uuids;

    fn facts(me: Uuids, peer: Uuids) -> HandshakeFacts {
        HandshakeFacts {
            me: SideInfo { uuids: me, crashed_primary: false, role: Role::Secondary },
            peer: SideInfo { uuids: peer, crashed_primary: false, role: Role::Secondary },
            my_disk: DiskState::UpToDate,
            peer_disk: DiskState::UpToDate,
            my_dirty: 10,
            peer_dirty: 20,
            i_resolve: true,
            my_discard: false,
            peer_discard: false,
            policies: Policies::default(),
        }
    }

    fn mirror(f: &HandshakeFacts) -> HandshakeFacts {
        HandshakeFacts {
            me: f.peer,
            peer: f.me,
            my_disk: f.peer_disk,
            peer_disk: f.my_disk,
            my_dirty: f.peer_dirty,
            peer_dirty: f.my_dirty,
            i_resolve: !f.i_resolve,
            my_discard: f.peer_discard,
            peer_discard: f.my_discard,
            policies: f.policies,
        }
    }

    fn sb() -> HandshakeFacts {
        facts(Uuids { current: 0x2001, bitmap: 0x1001, history: [0, 0] }, Uuids { current: 0x3000, bitmap: 0x1000, history: [0, 0] })
    }

    #[test]
    fn split_brain_default_policy_disconnects_both() {
        let f = sb();
        for side in [f, mirror(&f)] {
            let o = decide(&side);
            assert!(matches!(o.decision, Decision::StandAlone { split_brain: true, .. }), "{o:?}");
            assert!(o.handlers.contains(&HandlerCall::SplitBrain));
        }
    }

    #[test]
    fn discard_least_changes_picks_the_side_with_fewer_changes() {
        let mut f = sb();
        f.policies.after_sb_0pri = AfterSb0::DiscardLeastChanges;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
        assert_eq!(decide(&mirror(&f)).decision, Decision::Source { full: false });
    }

    #[test]
    fn discard_younger_primary_keeps_the_older_primary() {
        let mut f = sb(); // my bitmap UUID carries the primary bit: I was Primary before the split
        f.policies.after_sb_0pri = AfterSb0::DiscardYoungerPrimary;
        assert_eq!(decide(&f).decision, Decision::Source { full: false });
        f.policies.after_sb_0pri = AfterSb0::DiscardOlderPrimary;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
    }

    #[test]
    fn discard_zero_changes_needs_one_side_without_changes() {
        let mut f = sb();
        f.policies.after_sb_0pri = AfterSb0::DiscardZeroChanges;
        assert!(matches!(decide(&f).decision, Decision::StandAlone { .. }));
        f.my_dirty = 0;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
        assert_eq!(decide(&mirror(&f)).decision, Decision::Source { full: false });
    }

    #[test]
    fn discard_secondary_and_consensus_with_one_primary() {
        let mut f = sb();
        f.me.role = Role::Primary;
        f.policies.after_sb_1pri = AfterSb1::DiscardSecondary;
        assert_eq!(decide(&f).decision, Decision::Source { full: false });
        assert_eq!(decide(&mirror(&f)).decision, Decision::Target { full: false });
        f.policies.after_sb_1pri = AfterSb1::Consensus;
        f.policies.after_sb_0pri = AfterSb0::DiscardLeastChanges; // would discard the Primary (fewer changes)
        assert!(matches!(decide(&f).decision, Decision::StandAlone { .. }));
    }

    #[test]
    fn call_pri_lost_after_sb_demotes_the_losing_primary() {
        let mut f = sb();
        f.me.role = Role::Primary;
        f.peer.role = Role::Primary;
        f.policies.after_sb_2pri = AfterSb2::CallPriLostAfterSb;
        f.policies.after_sb_0pri = AfterSb0::DiscardLeastChanges;
        let o = decide(&f);
        assert!(o.demote);
        assert!(o.handlers.contains(&HandlerCall::PriLostAfterSb));
        assert_eq!(o.decision, Decision::Target { full: false });
    }

    #[test]
    fn manual_discard_my_data_resolves() {
        let mut f = sb();
        f.my_discard = true;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
        assert_eq!(decide(&mirror(&f)).decision, Decision::Source { full: false });
    }

    #[test]
    fn rr_conflict_disconnect_refuses_primary_as_target() {
        let mut f = facts(Uuids { current: 0x1001, bitmap: 0, history: [0, 0] }, Uuids { current: 0x2000, bitmap: 0x1000, history: [0, 0] });
        f.me.role = Role::Primary;
        assert!(matches!(decide(&f).decision, Decision::StandAlone { split_brain: false, .. }));
        f.policies.rr_conflict = RrConflict::Violently;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
    }

    #[test]
    fn inconsistent_side_becomes_target() {
        let mut f = facts(Uuids { current: 0x1000, bitmap: 0, history: [0, 0] }, Uuids { current: 0x1000, bitmap: 0, history: [0, 0] });
        f.my_disk = DiskState::Inconsistent;
        assert_eq!(decide(&f).decision, Decision::Target { full: false });
        assert_eq!(decide(&mirror(&f)).decision, Decision::Source { full: false });
    }
}
