//! Protocol version ranges and their negotiation (rolling upgrade).
//!
//! Each side announces the range of versions it speaks (`Hello`'s `proto_min..=proto_max` on the
//! replication link; the heartbeat and the control API use the same rule). The link then runs at the
//! highest version both speak: `min(max_a, max_b)`, provided it is not below either side's minimum.
//! A node one release older shares at least its own maximum with the newer one, so the two
//! interoperate; ranges that do not overlap are refused with both ranges named, so the operator knows
//! which node to upgrade.

use std::fmt;

/// An inclusive range of protocol versions a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: u32,
    pub max: u32,
}

impl VersionRange {
    pub const fn new(min: u32, max: u32) -> VersionRange {
        VersionRange { min, max }
    }

    /// The same range with its maximum lowered to `cap` (never below `min`): how a test emulates a
    /// node of an older release.
    pub fn capped(self, cap: u32) -> VersionRange {
        VersionRange { min: self.min, max: self.max.min(cap).max(self.min) }
    }

    pub fn contains(self, v: u32) -> bool {
        self.min <= v && v <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// The two ranges share no version (or the peer's range is malformed: min above max).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "incompatible {what} protocol versions: the peer speaks {peer}, this node speaks {ours}; upgrade {}",
    if peer.max < ours.min { "the peer" } else { "this node" }
)]
pub struct NoCommonVersion {
    pub what: &'static str,
    pub ours: VersionRange,
    pub peer: VersionRange,
}

/// The highest version both ranges contain.
pub fn negotiate(what: &'static str, ours: VersionRange, peer: VersionRange) -> Result<u32, NoCommonVersion> {
    let agreed = ours.max.min(peer.max);
    if peer.min > peer.max || agreed < ours.min.max(peer.min) {
        return Err(NoCommonVersion { what, ours, peer });
    }
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: VersionRange = VersionRange::new(1, 2);

    #[test]
    fn highest_common_version_wins() {
        assert_eq!(negotiate("replication", TODAY, VersionRange::new(1, 2)), Ok(2));
        assert_eq!(negotiate("replication", TODAY, VersionRange::new(1, 1)), Ok(1));
        assert_eq!(negotiate("replication", TODAY, VersionRange::new(2, 7)), Ok(2));
        assert_eq!(negotiate("replication", VersionRange::new(1, 1), TODAY), Ok(1));
    }

    #[test]
    fn disjoint_or_malformed_ranges_are_refused_naming_both() {
        let e = negotiate("replication", TODAY, VersionRange::new(3, 4)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("peer speaks 3..=4") && msg.contains("this node speaks 1..=2"), "{msg}");
        assert!(msg.ends_with("upgrade this node"), "{msg}");
        let e = negotiate("replication", VersionRange::new(3, 4), TODAY).unwrap_err();
        assert!(e.to_string().ends_with("upgrade the peer"), "{e}");
        assert!(negotiate("replication", TODAY, VersionRange::new(2, 1)).is_err());
        assert!(negotiate("replication", TODAY, VersionRange::new(0, 0)).is_err());
    }

    #[test]
    fn a_cap_never_goes_below_the_minimum() {
        assert_eq!(TODAY.capped(1), VersionRange::new(1, 1));
        assert_eq!(TODAY.capped(9), TODAY);
        assert_eq!(VersionRange::new(2, 3).capped(1), VersionRange::new(2, 2));
    }
}
