//! The keyword-valued settings of a resource (protocol, split-brain policies, on-io-error, fencing,
//! algorithms) as enums.
//!
//! The YAML layer reads them as plain strings and converts them here, so an unknown word produces our
//! own message listing the accepted spellings instead of serde's "unknown variant" text. `Display`
//! always gives the spelling used in ha.yaml (and in drbd.conf), so a value can be printed back.

use std::fmt;

/// Why a keyword was not accepted. Display text is meant to follow `FILE: FIELD: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown {what} {shown}; expected one of: {expected}")]
    Unknown {
        what: &'static str,
        shown: String,
        expected: String,
    },
    #[error("{shown} is not supported: {why}")]
    Unsupported { shown: String, why: &'static str },
}

fn unknown(what: &'static str, shown: &str, spellings: &[&str]) -> PolicyError {
    PolicyError::Unknown {
        what,
        shown: shown.to_string(),
        expected: spellings.join(", "),
    }
}

/// Defines a keyword enum with its config spellings, `parse`, `as_str` and `Display`.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $name:ident, what = $what:literal,
        { $($(#[$vmeta:meta])* $variant:ident => $spelling:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every accepted spelling, in documentation order.
            pub const SPELLINGS: &'static [&'static str] = &[$($spelling),+];

            /// The ha.yaml spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling),+
                }
            }

            /// Parses the ha.yaml spelling; `shown` is the value as it should appear in the error.
            pub fn parse(text: &str, shown: &str) -> Result<Self, PolicyError> {
                match text {
                    $($spelling => Ok($name::$variant),)+
                    _ => Err(unknown($what, shown, Self::SPELLINGS)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum! {
    /// Replication protocol. C (the default): a write completes once it is on both disks, which is the
    /// whole point of an HA pair. A (issue 18, for a DR peer on a slow link): a write completes once it
    /// is on the local disk and queued to the peer; the peer may miss the last writes, so failover to
    /// it needs `--force` or `net.allow-async-failover: on`. B is not offered.
    Protocol, what = "protocol",
    { C => "C", A => "A" }
}

impl Protocol {
    /// Like [`Protocol::parse`], but explains why B is refused rather than calling it unknown.
    pub fn parse_explained(text: &str, shown: &str) -> Result<Protocol, PolicyError> {
        match text {
            "B" => Err(PolicyError::Unsupported {
                shown: format!("protocol {text}"),
                why: "B is not supported: use C (synchronous, for the HA pair) or A (asynchronous, for a DR peer)",
            }),
            _ => Protocol::parse(text, shown),
        }
    }
}

keyword_enum! {
    /// Protocol A: what happens when the peer lags beyond `net.max-lag` / `net.max-lag-time`.
    OnLag, what = "on-lag policy",
    {
        /// New writes complete on the peer's acknowledgement (backpressure, like protocol C).
        Wait => "wait",
        /// Drop the replication link and go on alone; the resync after the reconnect catches up.
        Disconnect => "disconnect",
    }
}

keyword_enum! {
    /// After-split-brain policy when both nodes are now Secondary (`after-sb-1pri`).
    AfterSb1Pri, what = "policy",
    {
        Disconnect => "disconnect",
        Consensus => "consensus",
        ViolentlyAs0p => "violently-as0p",
        DiscardSecondary => "discard-secondary",
        CallPriLostAfterSb => "call-pri-lost-after-sb",
    }
}

keyword_enum! {
    /// After-split-brain policy when both nodes are Primary (`after-sb-2pri`).
    AfterSb2Pri, what = "policy",
    {
        Disconnect => "disconnect",
        ViolentlyAs0p => "violently-as0p",
        CallPriLostAfterSb => "call-pri-lost-after-sb",
    }
}

keyword_enum! {
    /// What to do when the resync direction contradicts the roles (the Primary would become target).
    RrConflict, what = "policy",
    {
        Disconnect => "disconnect",
        Violently => "violently",
        CallPriLost => "call-pri-lost",
    }
}

keyword_enum! {
    /// Reaction to an I/O error on the local backing disk.
    OnIoError, what = "value",
    {
        /// Drop the local disk and serve from the peer (the DRBD default).
        Detach => "detach",
        /// Report the error upward and mark the block for resync.
        PassOn => "pass_on",
        /// Run the `local-io-error` handler.
        CallLocalIoError => "call-local-io-error",
    }
}

keyword_enum! {
    /// Fencing policy when a Primary loses its peer.
    Fencing, what = "value",
    {
        DontCare => "dont-care",
        ResourceOnly => "resource-only",
        ResourceAndStonith => "resource-and-stonith",
    }
}

keyword_enum! {
    /// Digest used by online verify.
    VerifyAlg, what = "algorithm",
    {
        Sha1 => "sha1",
        Md5 => "md5",
        Crc32c => "crc32c",
    }
}

keyword_enum! {
    /// Digest compared before a resync moves a block (`csums-alg`, issue 18); `none` moves every block.
    CsumsAlg, what = "algorithm",
    {
        Off => "none",
        Sha1 => "sha1",
        Md5 => "md5",
        Crc32c => "crc32c",
    }
}

keyword_enum! {
    /// Which resyncs compare digests first (`csums-for`): `full` = only those that start with every
    /// block marked (initial sync, invalidate, a returning detached disk), `all` = bitmap resyncs too.
    CsumsFor, what = "value",
    {
        Full => "full",
        All => "all",
    }
}

keyword_enum! {
    /// HMAC used for the peer authentication handshake.
    CramHmacAlg, what = "algorithm",
    { Sha1 => "sha1" }
}

/// After-split-brain policy when neither node is Primary (`after-sb-0pri`).
///
/// Hand-written rather than generated because `discard-node-NAME` carries a node name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AfterSb0Pri {
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    /// Throw away the data of the named node (resync towards it).
    DiscardNode(String),
}

impl AfterSb0Pri {
    pub const SPELLINGS: &'static [&'static str] = &[
        "disconnect",
        "discard-younger-primary",
        "discard-older-primary",
        "discard-zero-changes",
        "discard-least-changes",
        "discard-node-NAME",
    ];

    const DISCARD_NODE_PREFIX: &'static str = "discard-node-";

    /// Parses the ha.yaml spelling. The node name of `discard-node-NAME` is checked against the
    /// cluster's nodes by the caller, which knows them.
    pub fn parse(text: &str, shown: &str) -> Result<AfterSb0Pri, PolicyError> {
        Ok(match text {
            "disconnect" => AfterSb0Pri::Disconnect,
            "discard-younger-primary" => AfterSb0Pri::DiscardYoungerPrimary,
            "discard-older-primary" => AfterSb0Pri::DiscardOlderPrimary,
            "discard-zero-changes" => AfterSb0Pri::DiscardZeroChanges,
            "discard-least-changes" => AfterSb0Pri::DiscardLeastChanges,
            _ => match text.strip_prefix(Self::DISCARD_NODE_PREFIX) {
                Some(node) if !node.is_empty() => AfterSb0Pri::DiscardNode(node.to_string()),
                _ => return Err(unknown("policy", shown, Self::SPELLINGS)),
            },
        })
    }
}

impl fmt::Display for AfterSb0Pri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AfterSb0Pri::Disconnect => f.write_str("disconnect"),
            AfterSb0Pri::DiscardYoungerPrimary => f.write_str("discard-younger-primary"),
            AfterSb0Pri::DiscardOlderPrimary => f.write_str("discard-older-primary"),
            AfterSb0Pri::DiscardZeroChanges => f.write_str("discard-zero-changes"),
            AfterSb0Pri::DiscardLeastChanges => f.write_str("discard-least-changes"),
            AfterSb0Pri::DiscardNode(node) => write!(f, "{}{node}", Self::DISCARD_NODE_PREFIX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips_through_display() {
        for s in AfterSb1Pri::SPELLINGS {
            assert_eq!(
                AfterSb1Pri::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in AfterSb2Pri::SPELLINGS {
            assert_eq!(
                AfterSb2Pri::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in RrConflict::SPELLINGS {
            assert_eq!(
                RrConflict::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in OnIoError::SPELLINGS {
            assert_eq!(
                OnIoError::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in Fencing::SPELLINGS {
            assert_eq!(
                Fencing::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in VerifyAlg::SPELLINGS {
            assert_eq!(
                VerifyAlg::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in CsumsAlg::SPELLINGS {
            assert_eq!(
                CsumsAlg::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in CsumsFor::SPELLINGS {
            assert_eq!(
                CsumsFor::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
        for s in &AfterSb0Pri::SPELLINGS[..5] {
            assert_eq!(
                AfterSb0Pri::parse(s, s).map(|p| p.to_string()).as_deref(),
                Ok(*s)
            );
        }
    }

    #[test]
    fn after_sb_0pri_discard_node_keeps_the_name() {
        assert_eq!(
            AfterSb0Pri::parse("discard-node-node2", "x"),
            Ok(AfterSb0Pri::DiscardNode("node2".to_string()))
        );
        assert_eq!(
            AfterSb0Pri::DiscardNode("node2".into()).to_string(),
            "discard-node-node2"
        );
        assert!(AfterSb0Pri::parse("discard-node-", "x").is_err());
    }

    #[test]
    fn unknown_policy_lists_the_accepted_spellings() {
        let err =
            AfterSb1Pri::parse("discard-yonger-primary", "\"discard-yonger-primary\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown policy \"discard-yonger-primary\"; expected one of: disconnect, consensus, violently-as0p, \
             discard-secondary, call-pri-lost-after-sb"
        );
        let err = AfterSb0Pri::parse("discard-older", "\"discard-older\"").unwrap_err();
        assert!(err.to_string().contains("discard-node-NAME"), "{err}");
    }

    #[test]
    fn policies_are_case_sensitive_like_drbd_conf() {
        assert!(Fencing::parse("Dont-Care", "x").is_err());
        assert!(OnIoError::parse("pass-on", "x").is_err());
    }

    #[test]
    fn protocol_c_and_a_are_accepted_b_is_refused_with_a_reason() {
        assert_eq!(Protocol::parse_explained("C", "C"), Ok(Protocol::C));
        assert_eq!(Protocol::parse_explained("A", "A"), Ok(Protocol::A));
        let err = Protocol::parse_explained("B", "\"B\"").unwrap_err();
        assert!(err.to_string().contains("B is not supported"), "{err}");
        let err = Protocol::parse_explained("D", "\"D\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown protocol \"D\"; expected one of: C, A"
        );
        assert_eq!(OnLag::parse("disconnect", "x"), Ok(OnLag::Disconnect));
        assert!(OnLag::parse("pull-ahead", "\"pull-ahead\"").is_err());
    }

    #[test]
    fn only_sha1_for_peer_authentication() {
        assert_eq!(CramHmacAlg::parse("sha1", "x"), Ok(CramHmacAlg::Sha1));
        assert!(CramHmacAlg::parse("md5", "\"md5\"").is_err());
    }
}
