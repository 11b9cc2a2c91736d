//! The replication link's wire format and peer authentication: pure functions over bytes, no I/O.
//!
//! - [`frame`]: the frames, their byte layout, `parse`/`decode`/`encode`.
//! - [`codec`]: the same as a `tokio_util` codec for `FramedRead`/`FramedWrite`.
//! - [`version`]: protocol version ranges and their negotiation (rolling upgrade).
//! - [`auth`]: the HMAC-SHA1 challenge/response run right after `Hello`.

pub mod auth;
pub mod codec;
mod fields;
pub mod frame;
pub mod version;
