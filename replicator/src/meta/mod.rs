//! On-disk metadata: superblock (two slots), bitmap (1 bit per 4 KiB, per-page CRCs) and activity log,
//! internal (at the end of the backing device) or external (a file or device, optionally indexed).
//! Every structure has a magic, a version and a checksum, and is written so that a crash never leaves
//! it half-new: the superblock alternates slots; bitmap pages whose CRC fails read as all-ones; torn
//! activity-log transactions are skipped.

pub mod activity_log;
pub mod bitmap;
pub mod layout;
pub mod store;
pub mod superblock;

/// Errors of reading or writing metadata. Every variant says what and where.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{what}: {source}")]
    Io { what: String, #[source] source: std::io::Error },
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    #[error("no metadata here: bad magic (wrong device or index? otherwise run `haadm create-md`)")]
    BadMagic { offset: u64 },
    #[error("metadata format version {found} is not supported (this build reads version {})", superblock::FORMAT_VERSION)]
    UnsupportedVersion { found: u32 },
    #[error("superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): corrupt or torn")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("no valid superblock: slot A: {a}; slot B: {b}")]
    NoValidSuperblock { a: String, b: String },
    #[error("metadata for resource `{resource}` already exists; use --force to overwrite it")]
    AlreadyExists { resource: String },
    #[error("{what}: need {need} bytes, have {have}")]
    TooSmall { what: String, need: u64, have: u64 },
    #[error("{0}")]
    Geometry(String),
    #[error("the backing device shrank: the metadata describes {recorded} bytes of data, the device now has room for {available} (short by {})", recorded.saturating_sub(*available))]
    DeviceShrank { recorded: u64, available: u64 },
    #[error("metadata geometry mismatch: {field} is {recorded} on disk but {computed} for this device")]
    GeometryMismatch { field: &'static str, recorded: u64, computed: u64 },
    #[error("resource name `{0}` must be 1..=63 bytes")]
    BadResourceName(String),
    #[error("no randomness for the device uuid: {0}")]
    Entropy(String),
    #[error("superblock field {field}: {problem}")]
    BadField { field: &'static str, problem: String },
}
