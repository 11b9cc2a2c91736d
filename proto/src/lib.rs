//! Generated gRPC types for the clusterd control API (`proto/control.proto`).
//!
//! The client lives in `clusterd::haadm`, the server in `clusterd::control`.

/// Messages, `control_client::ControlClient` and `control_server::{Control, ControlServer}`.
pub mod control {
    tonic::include_proto!("ha.control.v1");
}

/// Heartbeat packet body (`proto/heartbeat.proto`); the envelope and MAC are built by
/// `clusterd::heartbeat::packet`.
pub mod heartbeat {
    tonic::include_proto!("ha.heartbeat.v1");
}

/// Encoded `FileDescriptorSet` of `control.proto` (with source info), e.g. for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/control_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_describes_control_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set");
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "ha.control.v1")
            .expect("control.proto present");
        let service = file.service.iter().find(|s| s.name() == "Control").expect("Control service");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        for verb in [
            "Status", "Events", "Up", "Down", "Primary", "Secondary", "Connect", "Disconnect", "Invalidate",
            "InvalidateRemote", "Verify", "PauseSync", "ResumeSync", "Outdate", "Standby", "Takeover",
            "TargetShow",
        ] {
            assert!(methods.contains(&verb), "missing rpc {verb}");
        }
    }

    #[test]
    fn status_reply_round_trips() {
        let reply = control::StatusReply {
            node: "node1".into(),
            resources: vec![control::ResourceStatus {
                name: "r0".into(),
                role: "Primary".into(),
                sync: Some(control::SyncProgress { done_percent: 42.17, ..Default::default() }),
                uuids: Some(control::GenerationUuids { current: 0xdead_beef, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = reply.encode_to_vec();
        let back = control::StatusReply::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back, reply);
    }
}
