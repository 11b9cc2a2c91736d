//! iscsi-target: RFC 7143 target (PDU codec, login negotiation, CHAP) and the SCSI command layer.
pub mod pdu;
pub mod login;
pub mod backend;
pub mod scsi;
pub mod session;
pub mod server;
