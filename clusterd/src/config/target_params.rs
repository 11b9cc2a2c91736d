//! `targets.IQN.params:` — iSCSI login parameters the target offers, spelled as in ietd.conf, checked
//! against the ranges of RFC 7143 and against what the embedded target implements.

use super::ConfigError;
use super::fields::Fields;
use super::raw::{RawTargetParams, Scalar};

/// Accepted Max{Recv,Xmit}DataSegmentLength, MaxBurstLength and FirstBurstLength (RFC 7143 §13).
pub const DATA_LENGTH_RANGE: std::ops::RangeInclusive<u32> = 512..=16_777_215;
/// The digest names of RFC 7143 §13.1, as written in ha.yaml.
pub const DIGESTS: [&str; 2] = ["CRC32C", "None"];

/// Per-target overrides; `None` keeps the target's built-in value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetParamOverrides {
    pub max_connections: Option<u32>,
    pub initial_r2t: Option<bool>,
    pub immediate_data: Option<bool>,
    pub max_recv_data_segment_length: Option<u32>,
    pub max_xmit_data_segment_length: Option<u32>,
    pub max_burst_length: Option<u32>,
    pub first_burst_length: Option<u32>,
    pub default_time2wait: Option<u32>,
    pub default_time2retain: Option<u32>,
    pub max_outstanding_r2t: Option<u32>,
    pub data_pdu_in_order: Option<bool>,
    pub data_sequence_in_order: Option<bool>,
    pub error_recovery_level: Option<u32>,
    /// In order of preference, each `CRC32C` or `None`.
    pub header_digest: Option<Vec<String>>,
    pub data_digest: Option<Vec<String>>,
}

pub(super) fn build_params(
    f: &Fields<'_>,
    raw: &RawTargetParams,
) -> Result<TargetParamOverrides, ConfigError> {
    let num = |key: &str, v: &Option<Scalar>, range: std::ops::RangeInclusive<u32>| {
        v.as_ref().map(|s| f.number(key, s, range)).transpose()
    };
    let flag = |key: &str, v: &Option<Scalar>| -> Result<Option<bool>, ConfigError> {
        v.as_ref().map(|s| f.flag(key, Some(s), false)).transpose()
    };
    let max_connections = num("MaxConnections", &raw.max_connections, 1..=65535)?;
    if let Some(n) = max_connections
        && n != 1
    {
        return Err(f.invalid(
            "MaxConnections",
            format_args!(
                "{n} is not supported: the target runs one connection per session (use 1)"
            ),
        ));
    }
    let error_recovery_level = num("ErrorRecoveryLevel", &raw.error_recovery_level, 0..=2)?;
    if let Some(n) = error_recovery_level
        && n != 0
    {
        return Err(f.invalid(
            "ErrorRecoveryLevel",
            format_args!(
                "{n} is not supported: the target implements error recovery level 0 only (use 0)"
            ),
        ));
    }
    let max_burst_length = num("MaxBurstLength", &raw.max_burst_length, DATA_LENGTH_RANGE)?;
    let first_burst_length = num(
        "FirstBurstLength",
        &raw.first_burst_length,
        DATA_LENGTH_RANGE,
    )?;
    if let (Some(first), Some(max)) = (first_burst_length, max_burst_length)
        && first > max
    {
        return Err(f.invalid(
            "FirstBurstLength",
            format_args!("{first} must not exceed MaxBurstLength ({max}) (RFC 7143 §13.14)"),
        ));
    }
    Ok(TargetParamOverrides {
        max_connections,
        initial_r2t: flag("InitialR2T", &raw.initial_r2t)?,
        immediate_data: flag("ImmediateData", &raw.immediate_data)?,
        max_recv_data_segment_length: num(
            "MaxRecvDataSegmentLength",
            &raw.max_recv_data_segment_length,
            DATA_LENGTH_RANGE,
        )?,
        max_xmit_data_segment_length: num(
            "MaxXmitDataSegmentLength",
            &raw.max_xmit_data_segment_length,
            DATA_LENGTH_RANGE,
        )?,
        max_burst_length,
        first_burst_length,
        default_time2wait: num("DefaultTime2Wait", &raw.default_time2wait, 0..=3600)?,
        default_time2retain: num("DefaultTime2Retain", &raw.default_time2retain, 0..=3600)?,
        max_outstanding_r2t: num("MaxOutstandingR2T", &raw.max_outstanding_r2t, 1..=65535)?,
        data_pdu_in_order: flag("DataPDUInOrder", &raw.data_pdu_in_order)?,
        data_sequence_in_order: flag("DataSequenceInOrder", &raw.data_sequence_in_order)?,
        error_recovery_level,
        header_digest: raw
            .header_digest
            .as_ref()
            .map(|s| digest_list(f, "HeaderDigest", s))
            .transpose()?,
        data_digest: raw
            .data_digest
            .as_ref()
            .map(|s| digest_list(f, "DataDigest", s))
            .transpose()?,
    })
}

/// `CRC32C,None` → ["CRC32C", "None"], names in their RFC spelling whatever case was written.
fn digest_list(f: &Fields<'_>, key: &str, value: &Scalar) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for item in value.text.split(',') {
        let item = item.trim();
        let Some(name) = DIGESTS.iter().find(|d| d.eq_ignore_ascii_case(item)) else {
            return Err(f.invalid(
                key,
                format_args!(
                    "unknown digest {item:?} in {}; expected a comma-separated list of: {}",
                    value.shown(),
                    DIGESTS.join(", ")
                ),
            ));
        };
        if out.iter().any(|d| d == name) {
            return Err(f.invalid(
                key,
                format_args!("{name} is listed twice in {}", value.shown()),
            ));
        }
        out.push((*name).to_string());
    }
    Ok(out)
}
