//! iscsi-target: RFC 7143 target (PDU codec, login negotiation, CHAP) and the SCSI command layer.
pub mod backend;
pub mod login;
pub mod pdu;
pub mod scsi;
pub mod server;
pub mod session;
pub mod stats;
