//! `replicator`: a userspace DRBD-like block replication engine.
//!
//! See ARCHITECTURE.md at the repository root for the map of modules and invariants.

pub mod engine;
pub mod machine;
pub mod meta;
pub mod wire;
#[cfg(feature = "sim")]
pub mod sim;
