//! Roles, disk states and connection/replication states, named exactly as DRBD names them so that
//! operators' habits (and `drbdadm status` muscle memory) carry over.

use std::fmt;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// Wire code (stable across versions).
            pub fn code(self) -> u8 { match self { $(Self::$variant => $code),+ } }
            /// Inverse of [`Self::code`].
            pub fn from_code(c: u8) -> Option<Self> { match c { $($code => Some(Self::$variant),)+ _ => None } }
            /// The DRBD spelling.
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => stringify!($variant)),+ } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

named_enum!(
    /// Role of a node for one resource. `Unknown` is only ever used for the peer while disconnected.
    Role { Secondary = 0, Primary = 1, Unknown = 2 }
);

named_enum!(
    /// Disk states, ordered from worst to best as in DRBD (the order matters for comparisons).
    DiskState { Diskless = 0, Attaching = 1, Failed = 2, Inconsistent = 3, Outdated = 4, DUnknown = 5,
        Consistent = 6, UpToDate = 7 }
);

named_enum!(
    /// Connection state of the replication link (DRBD 9 naming).
    ConnState { StandAlone = 0, Disconnecting = 1, Connecting = 2, Connected = 3 }
);

named_enum!(
    /// Per-volume replication state while connected (DRBD 9 naming; `Off` when not connected).
    ReplState { Off = 0, WFBitMapS = 1, WFBitMapT = 2, Established = 3, SyncSource = 4, SyncTarget = 5,
        PausedSyncS = 6, PausedSyncT = 7, VerifyS = 8, VerifyT = 9 }
);

impl DiskState {
    /// Data on this disk may be served/promoted without a peer's help.
    pub fn is_consistent(self) -> bool {
        matches!(self, DiskState::Consistent | DiskState::UpToDate | DiskState::Outdated)
    }
}
