//! A seeded, deterministic world for two replication state machines, shared by the replicator's own
//! simulation (`tests/simulation.rs`) and the cluster daemon's failover simulation, which runs the
//! failover sequencer against these real machines instead of a model of them.
//!
//! Compiled only with the `sim` feature: it is test machinery (it panics on its own invariants and
//! keeps whole disks in memory), never part of the product.

pub mod model;
pub mod world;
