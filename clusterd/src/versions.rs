//! The versions this build speaks on each of its protocols (rolling upgrade), and the test-only knob
//! that makes a daemon behave like the previous release.
//!
//! - replication link: [`replicator::wire::frame::PROTOCOLS`], agreed in Hello;
//! - heartbeat: [`crate::heartbeat::packet::VERSIONS`], announced in every packet;
//! - control API (haadm ↔ clusterd): [`CONTROL_PROTOCOL`], reported by the `Version` RPC.
//!
//! Each side uses the highest version both speak; a node one release older is always inside the
//! range, so the two nodes interoperate while they are upgraded one at a time.

use replicator::wire::version::VersionRange;
use std::sync::OnceLock;

/// clusterd's (and haadm's) package version.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Control API versions this daemon serves. 1: the first release (no `Version` RPC); 2: adds the
/// `Version` RPC and the verbs of the day-2 operations (issue 15).
pub const CONTROL_PROTOCOL: VersionRange = VersionRange::new(1, 2);

/// TEST ONLY. `CLUSTERD_TEST_MAX_PROTOCOL=N` caps the replication protocol this daemon offers at
/// `N`; with `N` below today's maximum the daemon also behaves like the previous release on the
/// other protocols: its heartbeats carry no version fields and it has no `Version` RPC (answers
/// Unimplemented). The rolling-upgrade tests use it to run a "previous release" next to this one.
/// Never set it in production: the node then does not use features its peer supports.
pub const TEST_MAX_PROTOCOL_ENV: &str = "CLUSTERD_TEST_MAX_PROTOCOL";

/// How this process presents itself: today's release, or (tests only) the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Replication protocol versions offered in Hello.
    pub replication: VersionRange,
    /// Emulating the release before version negotiation reached heartbeats and the control API.
    pub previous: bool,
}

impl Release {
    pub const CURRENT: Release = Release { replication: replicator::wire::frame::PROTOCOLS, previous: false };

    /// From the value of [`TEST_MAX_PROTOCOL_ENV`] (`None`: unset).
    pub fn from_test_cap(value: Option<&str>) -> Result<Release, String> {
        let Some(value) = value else { return Ok(Release::CURRENT) };
        let full = replicator::wire::frame::PROTOCOLS;
        let cap: u32 = value
            .trim()
            .parse()
            .ok()
            .filter(|v| full.contains(*v))
            .ok_or_else(|| format!("{TEST_MAX_PROTOCOL_ENV}={value:?}: expected a replication protocol version in {full}"))?;
        Ok(Release { replication: full.capped(cap), previous: cap < full.max })
    }
}

static RELEASE: OnceLock<Result<Release, String>> = OnceLock::new();

/// This process's release, read once from the environment.
pub fn release() -> Result<Release, String> {
    RELEASE
        .get_or_init(|| Release::from_test_cap(std::env::var(TEST_MAX_PROTOCOL_ENV).ok().as_deref()))
        .clone()
}

/// [`release`], or today's when the knob is malformed (the daemon refuses to start on that at
/// startup, see `daemon::run`, so this fallback is never used by a running daemon).
pub fn release_or_current() -> Release {
    release().unwrap_or(Release::CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_knob_caps_replication_and_marks_the_previous_release() {
        assert_eq!(Release::from_test_cap(None), Ok(Release::CURRENT));
        let max = replicator::wire::frame::PROTOCOL_VERSION_MAX;
        assert_eq!(Release::from_test_cap(Some(&max.to_string())), Ok(Release::CURRENT));
        let old = Release::from_test_cap(Some("1")).unwrap();
        assert_eq!(old.replication, VersionRange::new(1, 1));
        assert!(old.previous);
        for bad in ["0", "99", "two", ""] {
            let e = Release::from_test_cap(Some(bad)).unwrap_err();
            assert!(e.contains(TEST_MAX_PROTOCOL_ENV), "{e}");
        }
    }
}
