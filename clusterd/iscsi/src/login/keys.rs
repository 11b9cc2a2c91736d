//! Operational key negotiation (RFC 7143 §13, result functions per §6.2 and the anchors table §1.3).
//!
//! The target is always the responder here: it answers each key the initiator offers with the result of
//! the key's result function applied to the offer and the target's configured value. Keys the initiator
//! does not offer keep their RFC defaults, which are why the defaults of [`TargetParams`] are the RFC's
//! permissive values plus large lengths (anchors §5.2: ImmediateData, InitialR2T=No, big bursts).

/// A digest algorithm for HeaderDigest/DataDigest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    None,
    Crc32c,
}

impl Digest {
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }
    fn parse(s: &str) -> Option<Digest> {
        match s {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

/// Target-side settings of every negotiable key (the ietd.conf set). Lengths are in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetParams {
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// What the target declares it can receive per PDU.
    pub max_recv_data_segment_length: u32,
    /// Upper bound on what the target sends per PDU, whatever the initiator declares.
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
    /// Acceptable header digests, in the target's order of preference.
    pub header_digest: Vec<Digest>,
    pub data_digest: Vec<Digest>,
}

impl Default for TargetParams {
    fn default() -> Self {
        TargetParams {
            max_connections: 1,
            initial_r2t: false,
            immediate_data: true,
            max_recv_data_segment_length: 262_144,
            max_xmit_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            default_time2wait: 2,
            default_time2retain: 0,
            max_outstanding_r2t: 16,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            header_digest: vec![Digest::Crc32c, Digest::None],
            data_digest: vec![Digest::Crc32c, Digest::None],
        }
    }
}

/// Session type (RFC 7143 §13.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// Negotiated values in force for a session/connection, starting from the RFC defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub header_digest: Digest,
    pub data_digest: Digest,
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// What the target declared (limit for PDUs we receive).
    pub max_recv_data_segment_length: u32,
    /// The initiator's declared receive limit, capped by the target's transmit limit.
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
}

impl SessionParams {
    /// RFC defaults, with the target's declared MRDSL and the transmit limit capped by the target.
    pub fn rfc_defaults(target: &TargetParams) -> Self {
        SessionParams {
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: target.max_recv_data_segment_length,
            max_xmit_data_segment_length: 8192.min(target.max_xmit_data_segment_length),
            max_burst_length: 262_144.min(target.max_burst_length),
            first_burst_length: 65_536.min(target.first_burst_length),
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }

    /// The key=value pairs describing these parameters, for `haadm target show` and logs.
    pub fn describe(&self) -> Vec<(String, String)> {
        let yn = |b: bool| if b { "Yes" } else { "No" }.to_string();
        vec![
            ("HeaderDigest".into(), self.header_digest.as_str().into()),
            ("DataDigest".into(), self.data_digest.as_str().into()),
            ("MaxConnections".into(), self.max_connections.to_string()),
            ("InitialR2T".into(), yn(self.initial_r2t)),
            ("ImmediateData".into(), yn(self.immediate_data)),
            (
                "MaxRecvDataSegmentLength".into(),
                self.max_recv_data_segment_length.to_string(),
            ),
            (
                "MaxXmitDataSegmentLength".into(),
                self.max_xmit_data_segment_length.to_string(),
            ),
            ("MaxBurstLength".into(), self.max_burst_length.to_string()),
            (
                "FirstBurstLength".into(),
                self.first_burst_length.to_string(),
            ),
            (
                "DefaultTime2Wait".into(),
                self.default_time2wait.to_string(),
            ),
            (
                "DefaultTime2Retain".into(),
                self.default_time2retain.to_string(),
            ),
            (
                "MaxOutstandingR2T".into(),
                self.max_outstanding_r2t.to_string(),
            ),
            ("DataPDUInOrder".into(), yn(self.data_pdu_in_order)),
            (
                "DataSequenceInOrder".into(),
                yn(self.data_sequence_in_order),
            ),
            (
                "ErrorRecoveryLevel".into(),
                self.error_recovery_level.to_string(),
            ),
        ]
    }
}

/// What to answer for one offered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAnswer {
    /// Send `key=value` back.
    Reply(String),
    /// Declarative or already-answered: nothing to send.
    Silent,
    /// Not an operational key: the login machine handles it.
    NotOperational,
}

const IRRELEVANT: &str = "Irrelevant";
const REJECT: &str = "Reject";
const NOT_UNDERSTOOD: &str = "NotUnderstood";

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

fn parse_num(v: &str, min: u32, max: u32) -> Option<u32> {
    // RFC 7143 §5.1 allows decimal and hex ("0x") numerical values.
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()?
    } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 10 {
        v.parse::<u64>().ok().and_then(|n| u32::try_from(n).ok())?
    } else {
        return None;
    };
    (min..=max).contains(&n).then_some(n)
}

const LEN_MAX: u32 = 16_777_215;

/// Keys that are irrelevant in a discovery session (RFC 7143 §13: they only concern SCSI data transfer).
fn irrelevant_for_discovery(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
    )
}

/// Negotiates one operational key offered by the initiator, updating `session`.
pub fn negotiate_key(
    key: &str,
    value: &str,
    target: &TargetParams,
    session_type: SessionType,
    session: &mut SessionParams,
) -> KeyAnswer {
    // An initiator's answer of Reject/Irrelevant/NotUnderstood ends that key's negotiation.
    if matches!(value, REJECT | IRRELEVANT | NOT_UNDERSTOOD) {
        return KeyAnswer::Silent;
    }
    if session_type == SessionType::Discovery && irrelevant_for_discovery(key) {
        return KeyAnswer::Reply(IRRELEVANT.into());
    }
    let reject = || KeyAnswer::Reply(REJECT.into());
    macro_rules! num {
        ($min:expr, $max:expr) => {
            match parse_num(value, $min, $max) {
                Some(n) => n,
                None => return reject(),
            }
        };
    }
    macro_rules! boolean {
        () => {
            match parse_bool(value) {
                Some(b) => b,
                None => return reject(),
            }
        };
    }
    match key {
        "HeaderDigest" | "DataDigest" => {
            let ours = if key == "HeaderDigest" {
                &target.header_digest
            } else {
                &target.data_digest
            };
            let chosen = value
                .split(',')
                .filter_map(Digest::parse)
                .find(|d| ours.contains(d));
            match chosen {
                Some(d) => {
                    if key == "HeaderDigest" {
                        session.header_digest = d;
                    } else {
                        session.data_digest = d;
                    }
                    KeyAnswer::Reply(d.as_str().into())
                }
                None => reject(),
            }
        }
        "MaxConnections" => {
            let n = num!(1, 65_535).min(target.max_connections.max(1));
            session.max_connections = n;
            KeyAnswer::Reply(n.to_string())
        }
        "InitialR2T" => {
            let r = boolean!() || target.initial_r2t;
            session.initial_r2t = r;
            KeyAnswer::Reply(yes_no(r))
        }
        "ImmediateData" => {
            let r = boolean!() && target.immediate_data;
            session.immediate_data = r;
            KeyAnswer::Reply(yes_no(r))
        }
        "MaxRecvDataSegmentLength" => {
            let n = num!(512, LEN_MAX);
            session.max_xmit_data_segment_length = n.min(target.max_xmit_data_segment_length);
            // Declarative: the target states its own limit separately (see LoginMachine).
            KeyAnswer::Silent
        }
        "MaxBurstLength" => {
            let n = num!(512, LEN_MAX).min(target.max_burst_length);
            session.max_burst_length = n;
            session.first_burst_length = session.first_burst_length.min(n);
            KeyAnswer::Reply(n.to_string())
        }
        "FirstBurstLength" => {
            let n = num!(512, LEN_MAX)
                .min(target.first_burst_length)
                .min(session.max_burst_length);
            session.first_burst_length = n;
            KeyAnswer::Reply(n.to_string())
        }
        "DefaultTime2Wait" => {
            let n = num!(0, 3600).max(target.default_time2wait);
            session.default_time2wait = n;
            KeyAnswer::Reply(n.to_string())
        }
        "DefaultTime2Retain" => {
            let n = num!(0, 3600).min(target.default_time2retain);
            session.default_time2retain = n;
            KeyAnswer::Reply(n.to_string())
        }
        "MaxOutstandingR2T" => {
            let n = num!(1, 65_535).min(target.max_outstanding_r2t.max(1));
            session.max_outstanding_r2t = n;
            KeyAnswer::Reply(n.to_string())
        }
        "DataPDUInOrder" => {
            let r = boolean!() || target.data_pdu_in_order;
            session.data_pdu_in_order = r;
            KeyAnswer::Reply(yes_no(r))
        }
        "DataSequenceInOrder" => {
            let r = boolean!() || target.data_sequence_in_order;
            session.data_sequence_in_order = r;
            KeyAnswer::Reply(yes_no(r))
        }
        "ErrorRecoveryLevel" => {
            let n = num!(0, 2).min(target.error_recovery_level);
            session.error_recovery_level = n;
            KeyAnswer::Reply(n.to_string())
        }
        // Obsolete marker keys (RFC 7143 §13.25 lists them as obsoleted). libiscsi 1.19 still sends
        // IFMarker=No/OFMarker=No and expects an answer (anchors §1.2): markers are never used, so the
        // Boolean-AND answer is always No, and the interval keys are irrelevant without markers.
        "IFMarker" | "OFMarker" => {
            if parse_bool(value).is_none() {
                return reject();
            }
            KeyAnswer::Reply("No".into())
        }
        "IFMarkInt" | "OFMarkInt" => KeyAnswer::Reply(IRRELEVANT.into()),
        "TaskReporting" => {
            let ok = value.split(',').any(|v| v == "RFC3720");
            if ok {
                KeyAnswer::Reply("RFC3720".into())
            } else {
                reject()
            }
        }
        "iSCSIProtocolLevel" => {
            num!(0, 31);
            KeyAnswer::Reply("0".into())
        }
        // RDMA extensions (RFC 7145) are not supported: the answer to a Boolean AND key is No.
        "RDMAExtensions" => KeyAnswer::Reply("No".into()),
        // Declaratives and keys the login machine owns.
        "InitiatorName"
        | "InitiatorAlias"
        | "TargetName"
        | "TargetAlias"
        | "SessionType"
        | "TargetPortalGroupTag"
        | "TargetAddress"
        | "AuthMethod"
        | "SendTargets" => KeyAnswer::NotOperational,
        k if k.starts_with("CHAP_") => KeyAnswer::NotOperational,
        _ => KeyAnswer::Reply(NOT_UNDERSTOOD.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(key: &str, value: &str) -> (KeyAnswer, SessionParams) {
        let t = TargetParams::default();
        let mut s = SessionParams::rfc_defaults(&t);
        let a = negotiate_key(key, value, &t, SessionType::Normal, &mut s);
        (a, s)
    }
    fn reply(v: &str) -> KeyAnswer {
        KeyAnswer::Reply(v.into())
    }

    #[test]
    fn digest_lists_pick_first_acceptable_of_initiator() {
        let (a, s) = neg("HeaderDigest", "None,CRC32C");
        assert_eq!(a, reply("None"));
        assert_eq!(s.header_digest, Digest::None);
        let (a, s) = neg("DataDigest", "CRC32C,None");
        assert_eq!(a, reply("CRC32C"));
        assert_eq!(s.data_digest, Digest::Crc32c);
        assert_eq!(neg("HeaderDigest", "MD5").0, reply("Reject"));
        let t = TargetParams {
            header_digest: vec![Digest::None],
            ..TargetParams::default()
        };
        let mut s = SessionParams::rfc_defaults(&t);
        assert_eq!(
            negotiate_key(
                "HeaderDigest",
                "CRC32C,None",
                &t,
                SessionType::Normal,
                &mut s
            ),
            reply("None")
        );
    }

    #[test]
    fn booleans_use_and_or() {
        assert_eq!(neg("InitialR2T", "No").0, reply("No"));
        assert_eq!(neg("InitialR2T", "Yes").0, reply("Yes"));
        assert_eq!(neg("ImmediateData", "Yes").0, reply("Yes"));
        assert_eq!(neg("ImmediateData", "No").0, reply("No"));
        assert_eq!(neg("DataPDUInOrder", "No").0, reply("Yes"));
        assert_eq!(neg("DataSequenceInOrder", "No").0, reply("Yes"));
        assert_eq!(neg("ImmediateData", "maybe").0, reply("Reject"));
        let t = TargetParams {
            initial_r2t: true,
            immediate_data: false,
            ..TargetParams::default()
        };
        let mut s = SessionParams::rfc_defaults(&t);
        assert_eq!(
            negotiate_key("InitialR2T", "No", &t, SessionType::Normal, &mut s),
            reply("Yes")
        );
        assert_eq!(
            negotiate_key("ImmediateData", "Yes", &t, SessionType::Normal, &mut s),
            reply("No")
        );
        assert!(s.initial_r2t && !s.immediate_data);
    }

    #[test]
    fn numbers_use_min_max() {
        let (a, s) = neg("MaxBurstLength", "16776192");
        assert_eq!(a, reply("1048576"));
        assert_eq!(s.max_burst_length, 1_048_576);
        assert_eq!(neg("MaxBurstLength", "4096").0, reply("4096"));
        assert_eq!(neg("FirstBurstLength", "16776192").0, reply("262144"));
        assert_eq!(neg("DefaultTime2Wait", "0").0, reply("2"));
        assert_eq!(neg("DefaultTime2Wait", "10").0, reply("10"));
        assert_eq!(neg("DefaultTime2Retain", "20").0, reply("0"));
        assert_eq!(neg("MaxOutstandingR2T", "1").0, reply("1"));
        assert_eq!(neg("MaxOutstandingR2T", "100").0, reply("16"));
        assert_eq!(neg("ErrorRecoveryLevel", "2").0, reply("0"));
        assert_eq!(neg("MaxConnections", "8").0, reply("1"));
        assert_eq!(neg("MaxConnections", "0").0, reply("Reject"));
        assert_eq!(neg("MaxBurstLength", "100").0, reply("Reject"));
        assert_eq!(neg("MaxBurstLength", "0x1000").0, reply("4096"));
        assert_eq!(neg("DefaultTime2Wait", "99999999999999").0, reply("Reject"));
    }

    #[test]
    fn first_burst_never_exceeds_max_burst() {
        let t = TargetParams::default();
        let mut s = SessionParams::rfc_defaults(&t);
        negotiate_key(
            "FirstBurstLength",
            "262144",
            &t,
            SessionType::Normal,
            &mut s,
        );
        negotiate_key("MaxBurstLength", "8192", &t, SessionType::Normal, &mut s);
        assert_eq!(s.first_burst_length, 8192);
    }

    #[test]
    fn mrdsl_is_declarative() {
        let (a, s) = neg("MaxRecvDataSegmentLength", "8192");
        assert_eq!(a, KeyAnswer::Silent);
        assert_eq!(s.max_xmit_data_segment_length, 8192);
        let (_, s) = neg("MaxRecvDataSegmentLength", "16777215");
        assert_eq!(s.max_xmit_data_segment_length, 262_144);
    }

    #[test]
    fn markers_unknown_and_discovery() {
        assert_eq!(neg("IFMarker", "No").0, reply("No"));
        assert_eq!(neg("OFMarker", "Yes").0, reply("No"));
        assert_eq!(neg("OFMarkInt", "2048~8192").0, reply("Irrelevant"));
        assert_eq!(neg("X-com.example.Foo", "1").0, reply("NotUnderstood"));
        assert_eq!(neg("Bogus", "1").0, reply("NotUnderstood"));
        assert_eq!(neg("InitialR2T", "Reject").0, KeyAnswer::Silent);
        assert_eq!(neg("TargetName", "iqn.x").0, KeyAnswer::NotOperational);
        assert_eq!(neg("CHAP_A", "5").0, KeyAnswer::NotOperational);
        let t = TargetParams::default();
        let mut s = SessionParams::rfc_defaults(&t);
        assert_eq!(
            negotiate_key("ImmediateData", "Yes", &t, SessionType::Discovery, &mut s),
            reply("Irrelevant")
        );
        assert_eq!(
            negotiate_key("HeaderDigest", "None", &t, SessionType::Discovery, &mut s),
            reply("None")
        );
    }
}
