//! Authenticated UDP heartbeats between the two nodes and the peer-liveness decision built on them
//! (Linux-HA Heartbeat's model, cluster-anchors §1):
//!
//! - [`packet`]: the datagram codec (envelope + protobuf body + HMAC-SHA1), pure;
//! - [`authkeys`]: the key file (`auth N` + `N sha1 SECRET`), keys can be rolled;
//! - [`generation`]: the persistent boot generation used for replay protection;
//! - [`membership`]: the liveness state machine (links, deadtime, initdead, replay), no I/O;
//! - [`service`]: the tokio task that sends and receives on every link and drives the core.
//!
//! Parameters are this module's own structs; mapping the daemon configuration onto them is the
//! caller's job, so the heartbeat does not depend on the config format.

pub mod authkeys;
pub mod generation;
pub mod membership;
pub mod packet;
pub mod service;

pub use authkeys::{AuthKeys, AuthKeysError};
pub use generation::{Generation, GenerationError};
pub use membership::{
    DropCounts, LinkStatus, Membership, MembershipEvent, MembershipInput, MembershipParams, MembershipParamsError,
    MembershipStatus, PeerLiveness, PeerVersions, RejectReason,
};
pub use packet::{EncodeError, Heartbeat, PacketError, decode_packet, encode_packet};
pub use service::{HeartbeatError, HeartbeatHandle, HeartbeatRuntimeConfig, HeartbeatService, LinkMode, LinkRuntime};
