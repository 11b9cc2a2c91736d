//! Protocol cores without I/O: states, generation UUIDs and the sync decision, and the per-resource
//! node state machine driven by `step(input)` that returns actions for the I/O layer to carry out.

pub mod policy;
pub mod state;
pub mod uuids;
pub mod node;
mod snapshot;
mod purpose;

mod barrier;
mod datapath;
pub mod detach;
mod verbs;
mod link;
mod pr;
mod resize;
mod resync;
pub mod resync_controller;
pub mod csums;
mod new_uuid;
pub mod split_brain;
mod verify;
mod repair;
mod options;
pub mod protocol_a;
#[cfg(test)]
mod test_support;

pub use verify::verify_digest;
pub use csums::{CsumAlg, CsumsOptions};
pub use options::LiveOptions;
pub use resync_controller::ControllerOptions;
pub use protocol_a::{AsyncOptions, OnLag, ReplProtocol};

pub use snapshot::{AsyncLag, ControllerStatus, VerifyOutcome};
pub use node::{Action, InFlight, Input, IoFailure, Node, NodeParams, Persisted, Snapshot, Stats, SyncProgress, Timing};
