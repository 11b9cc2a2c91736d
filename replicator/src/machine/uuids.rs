//! Generation identifiers (DRBD's "GI tuple") and the connect-time comparison that decides the sync
//! direction (DRBD 8.4 `drbd_uuid_compare`, replication-anchors.md §1.5), with the rule that decided.
//!
//! Differences from DRBD, and why:
//! - A new current UUID is made lazily, on the first write while no up-to-date peer is connected and the
//!   bitmap UUID is free (DRBD 9 style): a promote that never writes does not fork the data history.
//! - We never rotate a "sync UUID" at resync start (DRBD's `P_SYNC_UUID`); a SyncTarget keeps its current
//!   UUID and is Inconsistent until it adopts the source's tuple at the end. So DRBD's rules 51/71 ("lost
//!   P_SYNC_UUID") cannot arise and are not implemented; rules 34–37 ("missed resync-finished") still can
//!   and are.

use super::state::Role;
use std::fmt;

/// `current` value written by create-md: "no data yet" (DRBD's UUID_JUST_CREATED).
pub const UUID_JUST_CREATED: u64 = 4;

/// Bit 0 of a UUID records "made/held while Primary"; comparisons ignore it.
const PRI_BIT: u64 = 1;

/// The generation tuple of one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uuids {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
}

impl Uuids {
    /// The tuple create-md writes.
    pub fn just_created() -> Self {
        Uuids { current: UUID_JUST_CREATED, bitmap: 0, history: [0, 0] }
    }

    /// Start a new data generation: the old current becomes the bitmap UUID (the point since which the
    /// bitmap records changes). `fresh` must be random; bit 0 is set to `primary`.
    pub fn new_current(&mut self, fresh: u64, primary: bool) {
        assert!(self.bitmap == 0, "new generation while the bitmap UUID is still in use: {self:?}");
        self.bitmap = self.current & !PRI_BIT;
        self.current = with_pri_bit(fresh, primary);
    }

    /// A full-sync source that had no history with the peer: a fresh current, the old one kept in history.
    pub fn new_current_for_full_sync(&mut self, fresh: u64, primary: bool) {
        if self.bitmap != 0 {
            self.push_history(self.bitmap);
            self.bitmap = 0;
        }
        if self.current != UUID_JUST_CREATED && self.current != 0 {
            self.push_history(self.current & !PRI_BIT);
        }
        self.current = with_pri_bit(fresh, primary);
    }

    /// End of a resync on the source side: the bitmap generation is history now.
    pub fn finish_resync_as_source(&mut self) {
        if self.bitmap != 0 {
            self.push_history(self.bitmap);
            self.bitmap = 0;
        }
    }

    /// Record the role in bit 0 of the current UUID (DRBD does the same on promote/demote).
    pub fn set_role_bit(&mut self, primary: bool) {
        if self.current != UUID_JUST_CREATED && self.current != 0 {
            self.current = with_pri_bit(self.current, primary);
        }
    }

    fn push_history(&mut self, uuid: u64) {
        self.history[1] = self.history[0];
        self.history[0] = uuid & !PRI_BIT;
    }
}

fn with_pri_bit(v: u64, primary: bool) -> u64 {
    if primary { v | PRI_BIT } else { v & !PRI_BIT }
}

impl fmt::Display for Uuids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}:{:016X}:{:016X}:{:016X}", self.current, self.bitmap, self.history[0], self.history[1])
    }
}

/// What one side knows about a disk at handshake time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideInfo {
    pub uuids: Uuids,
    /// The disk's node crashed while Primary (its activity log was applied at start).
    pub crashed_primary: bool,
    pub role: Role,
}

/// The raw result of the comparison, in DRBD's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// +2: become SyncSource, full sync.
    SourceFull,
    /// +1: become SyncSource, bitmap-based.
    SourceBitmap,
    /// 0: in sync.
    NoSync,
    /// −1: become SyncTarget, bitmap-based.
    TargetBitmap,
    /// −2: become SyncTarget, full sync.
    TargetFull,
    /// +100: split brain with a common ancestor: auto-recovery policies may apply.
    SplitBrainAutoRecover,
    /// −100: split brain, the histories share only an older ancestor: disconnect.
    SplitBrainDisconnect,
    /// −1000: the two disks never shared data.
    Unrelated,
}

impl Verdict {
    /// DRBD's integer code (what its logs print as `uuid_compare()=`).
    pub fn code(self) -> i32 {
        match self {
            Verdict::SourceFull => 2,
            Verdict::SourceBitmap => 1,
            Verdict::NoSync => 0,
            Verdict::TargetBitmap => -1,
            Verdict::TargetFull => -2,
            Verdict::SplitBrainAutoRecover => 100,
            Verdict::SplitBrainDisconnect => -100,
            Verdict::Unrelated => -1000,
        }
    }

    /// The same decision seen from the other side.
    pub fn mirrored(self) -> Verdict {
        match self {
            Verdict::SourceFull => Verdict::TargetFull,
            Verdict::SourceBitmap => Verdict::TargetBitmap,
            Verdict::TargetBitmap => Verdict::SourceBitmap,
            Verdict::TargetFull => Verdict::SourceFull,
            other => other,
        }
    }
}

/// A correction rule 34/36 asks the caller to make to its own persistent UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixup {
    /// "I was SyncSource and missed the resync-finished event": move my bitmap UUID to history.
    RetireOwnBitmapUuid,
}

/// Outcome of [`uuid_compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub verdict: Verdict,
    /// DRBD 8.4 rule number.
    pub rule: u32,
    pub fixup: Option<Fixup>,
}

impl Comparison {
    /// DRBD 9's name for the rule, for logs.
    pub fn rule_name(&self) -> &'static str {
        match self.rule {
            10 => "just-created-both",
            20 => "just-created-self",
            30 => "just-created-peer",
            34 | 36 => "source-missed-finish",
            35 | 37 => "target-missed-finish",
            40 => "crashed-primary",
            41 => "primary-role",
            50 => "bitmap-peer",
            60 => "history-peer",
            70 => "bitmap-self",
            80 => "history-self",
            90 => "bitmap-both",
            100 => "history-both",
            _ => "unrelated-data",
        }
    }
}

/// DRBD 8.4's rule list, evaluated from `me`'s point of view. `i_resolve` is this side's tie-break
/// flag (exactly one side of a connection has it).
pub fn uuid_compare(me: &SideInfo, peer: &SideInfo, i_resolve: bool) -> Comparison {
    let done = |verdict, rule| Comparison { verdict, rule, fixup: None };
    let m = &me.uuids;
    let p = &peer.uuids;
    let own = m.current & !PRI_BIT;
    let theirs = p.current & !PRI_BIT;
    let empty = |u: u64| u == UUID_JUST_CREATED || u == 0;

    if own == UUID_JUST_CREATED && theirs == UUID_JUST_CREATED {
        return done(Verdict::NoSync, 10);
    }
    if empty(own) && theirs != UUID_JUST_CREATED {
        return done(Verdict::TargetFull, 20);
    }
    if own != UUID_JUST_CREATED && empty(theirs) {
        return done(Verdict::SourceFull, 30);
    }
    if own == theirs {
        let mb = m.bitmap & !PRI_BIT;
        let pb = p.bitmap & !PRI_BIT;
        if pb == 0 && mb != 0 {
            let missed = mb == p.history[0] & !PRI_BIT && m.history[0] & !PRI_BIT == p.history[1] & !PRI_BIT;
            let fixup = missed.then_some(Fixup::RetireOwnBitmapUuid);
            return Comparison { verdict: Verdict::SourceBitmap, rule: if missed { 34 } else { 36 }, fixup };
        }
        if mb == 0 && pb != 0 {
            let missed = pb == m.history[0] & !PRI_BIT && p.history[0] & !PRI_BIT == m.history[1] & !PRI_BIT;
            return done(Verdict::TargetBitmap, if missed { 35 } else { 37 });
        }
        // Common power failure: whoever crashed as Primary may hold writes the other lacks (its
        // activity-log extents are in its bitmap now).
        let rct = u8::from(me.crashed_primary) + 2 * u8::from(peer.crashed_primary);
        if rct == 0 {
            return done(Verdict::NoSync, 40);
        }
        match (me.role == Role::Primary, peer.role == Role::Primary) {
            (true, true) => return done(Verdict::SplitBrainDisconnect, 41),
            (true, false) => return done(Verdict::SourceBitmap, 41),
            (false, true) => return done(Verdict::TargetBitmap, 41),
            (false, false) => {}
        }
        return match rct {
            1 => done(Verdict::SourceBitmap, 40),
            2 => done(Verdict::TargetBitmap, 40),
            _ => done(if i_resolve { Verdict::TargetBitmap } else { Verdict::SourceBitmap }, 40),
        };
    }
    if own == p.bitmap & !PRI_BIT {
        return done(Verdict::TargetBitmap, 50);
    }
    if p.history.iter().any(|h| h & !PRI_BIT == own) {
        return done(Verdict::TargetFull, 60);
    }
    if m.bitmap & !PRI_BIT == theirs {
        return done(Verdict::SourceBitmap, 70);
    }
    if m.history.iter().any(|h| h & !PRI_BIT == theirs) {
        return done(Verdict::SourceFull, 80);
    }
    let mb = m.bitmap & !PRI_BIT;
    if mb == p.bitmap & !PRI_BIT && mb != 0 {
        return done(Verdict::SplitBrainAutoRecover, 90);
    }
    for h in m.history {
        if h & !PRI_BIT != 0 && p.history.iter().any(|ph| ph & !PRI_BIT == h & !PRI_BIT) {
            return done(Verdict::SplitBrainDisconnect, 100);
        }
    }
    done(Verdict::Unrelated, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(current: u64, bitmap: u64, history: [u64; 2]) -> SideInfo {
        SideInfo { uuids: Uuids { current, bitmap, history }, crashed_primary: false, role: Role::Secondary }
    }

    /// Every rule must give mirror-image answers on the two sides, or the nodes would disagree.
    fn both(a: SideInfo, b: SideInfo) -> (Comparison, Comparison) {
        let x = uuid_compare(&a, &b, true);
        let y = uuid_compare(&b, &a, false);
        assert_eq!(x.verdict, y.verdict.mirrored(), "asymmetric: {x:?} vs {y:?}");
        (x, y)
    }

    #[test]
    fn just_created_both_is_no_sync() {
        let (x, _) = both(side(4, 0, [0, 0]), side(4, 0, [0, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::NoSync, 10));
    }

    #[test]
    fn forced_primary_against_fresh_peer_is_full_sync() {
        let (x, _) = both(side(0xAB01, 0, [0, 0]), side(4, 0, [0, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::SourceFull, 30));
    }

    #[test]
    fn primary_that_wrote_while_disconnected_is_bitmap_source() {
        let (x, y) = both(side(0x2001, 0x1000, [0, 0]), side(0x1000, 0, [0, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::SourceBitmap, 70));
        assert_eq!(y.rule, 50);
    }

    #[test]
    fn both_wrote_with_common_ancestor_is_split_brain_auto() {
        let (x, _) = both(side(0x2001, 0x1000, [0, 0]), side(0x3001, 0x1001, [0, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::SplitBrainAutoRecover, 90));
    }

    #[test]
    fn older_common_history_is_split_brain_disconnect() {
        let (x, _) = both(side(0x2000, 0x5000, [0x1000, 0]), side(0x3000, 0x6000, [0x1000, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::SplitBrainDisconnect, 100));
    }

    #[test]
    fn unrelated_data_is_refused() {
        let (x, _) = both(side(0x2000, 0, [0, 0]), side(0x3000, 0, [0, 0]));
        assert_eq!(x.verdict, Verdict::Unrelated);
    }

    #[test]
    fn crashed_primary_becomes_source() {
        let mut a = side(0x2000, 0, [0, 0]);
        a.crashed_primary = true;
        let (x, _) = both(a, side(0x2000, 0, [0, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::SourceBitmap, 40));
    }

    #[test]
    fn missed_finish_is_corrected() {
        // Source persisted nothing after sending "finished"; the target adopted the post-finish tuple.
        let (x, y) = both(side(0x9000, 0x1000, [0x700, 0]), side(0x9000, 0, [0x1000, 0x700]));
        assert_eq!((x.verdict, x.rule, x.fixup), (Verdict::SourceBitmap, 34, Some(Fixup::RetireOwnBitmapUuid)));
        assert_eq!(y.rule, 35);
    }

    #[test]
    fn history_match_is_full_sync() {
        let (x, _) = both(side(0x1000, 0, [0, 0]), side(0x3000, 0, [0x1000, 0]));
        assert_eq!((x.verdict, x.rule), (Verdict::TargetFull, 60));
    }

    #[test]
    fn generation_rotation_keeps_history() {
        let mut u = Uuids { current: 0x1001, bitmap: 0, history: [0, 0] };
        u.new_current(0x2000, true);
        assert_eq!(u, Uuids { current: 0x2001, bitmap: 0x1000, history: [0, 0] });
        u.finish_resync_as_source();
        assert_eq!(u, Uuids { current: 0x2001, bitmap: 0, history: [0x1000, 0] });
    }
}
