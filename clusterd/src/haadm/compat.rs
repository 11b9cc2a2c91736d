//! haadm ↔ clusterd compatibility during a rolling upgrade: haadm asks the daemon for its control
//! protocol range (`Version` RPC) before a verb, refuses a verb the daemon is too old for with a
//! message that says what to upgrade, and turns an Unimplemented answer (a verb the daemon does not
//! know) into the same message instead of tonic's "Operation is not implemented".

use crate::versions::{CONTROL_PROTOCOL, SOFTWARE_VERSION};
use proto::control::VersionReply;
use replicator::wire::version::VersionRange;

/// The control protocol version a verb needs (by the name haadm reports it under). Verbs of the
/// first release need 1; the day-2 verbs (issue 15) need 2. A verb missing here needs 1, and an
/// older daemon that does not know it is still caught by its Unimplemented answer.
pub fn required_control(verb: &str) -> u32 {
    match verb {
        "version" | "adjust" | "dump" | "resize" | "detach" | "attach" | "wait-connect" | "new-current-uuid"
        | "split-brain" => 2,
        _ => 1,
    }
}

/// What haadm knows about the daemon it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// Answered `Version`.
    Known { software: String, control: VersionRange },
    /// Answered `Version` with Unimplemented: a release of control protocol 1.
    Legacy,
}

impl Daemon {
    pub fn from_reply(v: &VersionReply) -> Daemon {
        Daemon::Known { software: v.software_version.clone(), control: VersionRange::new(v.control_min, v.control_max) }
    }

    fn control(&self) -> VersionRange {
        match self {
            Daemon::Known { control, .. } => *control,
            Daemon::Legacy => VersionRange::new(1, 1),
        }
    }

    fn describe(&self) -> String {
        match self {
            Daemon::Known { software, control } => format!("{software} (control protocol {control})"),
            Daemon::Legacy => "an older release (control protocol 1)".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    #[error(
        "clusterd on this node is {}; this haadm ({SOFTWARE_VERSION}) needs control protocol {needed} for `{verb}`; upgrade clusterd on this node",
        .daemon.describe()
    )]
    DaemonTooOld { verb: String, needed: u32, daemon: Daemon },
    #[error(
        "clusterd on this node is {}; this haadm ({SOFTWARE_VERSION}) speaks control protocol {}; upgrade haadm (the clusterd package) on this node",
        .daemon.describe(), CONTROL_PROTOCOL
    )]
    HaadmTooOld { daemon: Daemon },
}

/// Whether `verb` may be sent to `daemon`.
pub fn check(verb: &str, daemon: &Daemon) -> Result<(), CompatError> {
    let theirs = daemon.control();
    if theirs.min > CONTROL_PROTOCOL.max {
        return Err(CompatError::HaadmTooOld { daemon: daemon.clone() });
    }
    let needed = required_control(verb);
    if theirs.max < needed {
        return Err(CompatError::DaemonTooOld { verb: verb.to_string(), needed, daemon: daemon.clone() });
    }
    Ok(())
}

/// Whether `status` says the daemon does not know the RPC: tonic answers an unknown method with
/// Unimplemented and no message; a daemon's own Unimplemented with a reason is passed on as it is,
/// unless the daemon is known to be too old for the verb anyway.
pub fn is_unknown_rpc(status: &tonic::Status, verb: &str, daemon: &Daemon) -> bool {
    status.code() == tonic::Code::Unimplemented && (status.message().is_empty() || daemon.control().max < required_control(verb))
}

/// The daemon answered Unimplemented to `verb`: it is older than this haadm, whatever the table
/// says (a verb added since that is missing from [`required_control`]).
pub fn unimplemented(verb: &str, daemon: &Daemon) -> CompatError {
    let needed = required_control(verb).max(daemon.control().max + 1).min(CONTROL_PROTOCOL.max);
    CompatError::DaemonTooOld { verb: verb.to_string(), needed, daemon: daemon.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(min: u32, max: u32) -> Daemon {
        Daemon::Known { software: "0.1.0".into(), control: VersionRange::new(min, max) }
    }

    #[test]
    fn old_daemon_is_refused_for_new_verbs_only() {
        assert_eq!(check("status", &Daemon::Legacy), Ok(()));
        assert_eq!(check("takeover", &Daemon::Legacy), Ok(()));
        let e = check("resize", &Daemon::Legacy).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "clusterd on this node is an older release (control protocol 1); this haadm ({SOFTWARE_VERSION}) needs control protocol 2 for `resize`; upgrade clusterd on this node"
            )
        );
        assert!(check("resize", &known(1, 2)).is_ok());
        let e = check("detach", &known(1, 1)).unwrap_err();
        assert!(e.to_string().contains("is 0.1.0 (control protocol 1..=1)"), "{e}");
    }

    #[test]
    fn newer_daemon_that_dropped_our_protocol_asks_to_upgrade_haadm() {
        let e = check("status", &known(CONTROL_PROTOCOL.max + 1, CONTROL_PROTOCOL.max + 2)).unwrap_err();
        assert!(matches!(e, CompatError::HaadmTooOld { .. }));
        assert!(e.to_string().contains("upgrade haadm"), "{e}");
    }

    #[test]
    fn only_an_unknown_method_counts_as_an_old_daemon() {
        let unknown = tonic::Status::new(tonic::Code::Unimplemented, "");
        let reason = tonic::Status::unimplemented("standby needs the cluster layer");
        assert!(is_unknown_rpc(&unknown, "standby", &known(1, 2)));
        assert!(!is_unknown_rpc(&reason, "standby", &known(1, 2)));
        assert!(is_unknown_rpc(&reason, "resize", &Daemon::Legacy));
        assert!(!is_unknown_rpc(&tonic::Status::not_found("r9"), "resize", &Daemon::Legacy));
    }

    #[test]
    fn unimplemented_answers_become_the_upgrade_message() {
        let e = unimplemented("some-new-verb", &Daemon::Legacy);
        assert!(e.to_string().contains("needs control protocol 2 for `some-new-verb`"), "{e}");
        assert!(e.to_string().ends_with("upgrade clusterd on this node"), "{e}");
    }
}
