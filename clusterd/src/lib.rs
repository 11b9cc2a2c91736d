//! clusterd: configuration, the per-node daemon and the control API server.
pub mod config;
pub mod adjust;
pub mod haadm;
pub mod heartbeat;
pub mod control;
pub mod daemon;
pub mod failover;
pub mod fencing;
pub mod target;
pub mod netops;
pub mod monitor;
pub mod versions;
