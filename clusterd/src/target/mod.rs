//! The embedded iSCSI target inside clusterd: LUNs from ha.yaml (plain files for a standalone target,
//! replicated volumes for the HA group), started when this node serves and stopped when it hands over.

mod assemble;
mod runtime;
mod show;
mod volume_backend;
mod volume_pr;

pub use assemble::{Assembled, LunSummary, Reuse, assemble, assemble_reusing, target_params};
pub use runtime::TargetRuntime;
pub use show::{render_json, render_text};
pub use volume_backend::VolumeBackend;
