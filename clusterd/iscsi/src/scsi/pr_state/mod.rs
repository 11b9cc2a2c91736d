//! Persistent reservation state, its versioned on-store encoding, and where it is stored.
//!
//! The full state (not only APTPL registrations) is saved before every PERSISTENT RESERVE OUT
//! completes: after a failover the initiator sees an I_T nexus loss, not a power loss, so its
//! registrations and reservation must still be there on the peer. For a replicated LUN the store is
//! the resource itself (clusterd's `VolumePrStore`: the blob lives in the replicated metadata and a save
//! completes only when the peer has it too); a standalone LUN keeps a local file.
//!
//! # Model
//!
//! A registration belongs to an I_T nexus: an initiator port (`<iqn>,i,0x<isid>`, so two sessions of
//! one initiator name with different ISIDs are different registrants) through a target port
//! (`<iqn>,t,0x<tpgt>`, with its relative target port identifier). A registration made with ALL_TG_PT
//! is one registration for the initiator port through every target port of the LU ([`TargetPorts::All`]),
//! not one copy per port. At most one registration covers any I_T nexus.
//!
//! # Encoding (version 2)
//!
//! Big-endian; names are stored once in two tables and registrations refer to them by index, because
//! the replicated store keeps about 3.5 KiB per LUN:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SCPR` |
//! | 1 | version 2 |
//! | 1 | flags: bit 0 APTPL, bit 1 a reservation follows the registrations |
//! | 4 | PRgeneration |
//! | 1 + P × (5 + name) | target ports: count P ≤ 255, then relative port id u16, TPGT u16, name length u8, target name |
//! | 1 + N × (1 + name) | initiator names: count N ≤ 255, then length u8, name |
//! | 2 + R × 16 | registrations: count R, then key u64, initiator name index u8, ISID (6), target port index u8 (0xFF: ALL_TG_PT) |
//! | 0 or 4 | reservation: SCOPE/TYPE byte as in PR data, holder registration index u16 and the holder's target port index u8 (0xFFFF / 0xFF for all-registrants types) |
//! | 4 | CRC32C of everything before it |
//!
//! Names are iSCSI names, at most 223 bytes (RFC 7143 §4.2.7.1). Size = 18 + Σ(5 + target name) +
//! Σ(1 + initiator name) + 16·R bytes, 4 more with a reservation. **Capacity**: with one 40-byte target
//! name and every registration from a different 50-byte initiator name (the worst case for typical
//! names: 67 bytes per registration), 52 registrations and a reservation fit in 3.5 KiB (3584 bytes);
//! when initiators register several paths (ISIDs) under one name, each further path costs 16 bytes.
//! Version 1 (the previous release: every registration carried its full nexus, ~110 bytes) is still
//! decoded; it is rewritten as version 2 by the next change.

mod codec;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

#[cfg(test)]
pub(crate) use codec::validate;
pub use codec::{MAX_NAME_BYTES, decode_pr_state, encode_pr_state};

use super::reservation::pr_type;
use super::{ItNexus, ScsiError};
use crate::backend::BoxFut;

/// An iSCSI initiator port: initiator name + ISID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InitiatorPort {
    pub name: String,
    pub isid: [u8; 6],
}

impl InitiatorPort {
    pub fn of(nexus: &ItNexus) -> Self {
        Self {
            name: nexus.initiator.clone(),
            isid: nexus.isid,
        }
    }

    /// Whether `nexus` starts at this initiator port.
    pub fn is_of(&self, nexus: &ItNexus) -> bool {
        self.isid == nexus.isid && self.name == nexus.initiator
    }

    /// `<name>,i,0x<isid>`, as in TransportIDs.
    pub fn port_name(&self) -> String {
        format!("{},i,0x{}", self.name, hex::encode(self.isid))
    }
}

/// A target port: target name + TPGT, and the relative target port identifier it reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetPort {
    pub name: String,
    pub tpgt: u16,
    pub relative_id: u16,
}

impl TargetPort {
    /// The port of target `name` in portal group `tpgt`. The relative port identifier follows the
    /// TPGT (0 is not a valid identifier), so both HA nodes report the same port.
    pub fn for_tpgt(name: &str, tpgt: u16) -> Self {
        Self {
            name: name.to_string(),
            tpgt,
            relative_id: tpgt.max(1),
        }
    }

    pub fn of(nexus: &ItNexus) -> Self {
        Self {
            name: nexus.target.clone(),
            tpgt: nexus.tpgt,
            relative_id: nexus.relative_port,
        }
    }

    /// Whether `nexus` arrives through this target port.
    pub fn is_of(&self, nexus: &ItNexus) -> bool {
        self.tpgt == nexus.tpgt
            && self.relative_id == nexus.relative_port
            && self.name == nexus.target
    }
}

/// Which target ports a registration applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPorts {
    One(TargetPort),
    /// Registered with ALL_TG_PT: every target port of the LU.
    All,
}

/// The I_T nexuses one registration covers: an initiator port through one or every target port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Registrant {
    pub initiator: InitiatorPort,
    pub ports: TargetPorts,
}

impl Registrant {
    /// The registrant that is exactly `nexus` (ALL_TG_PT = 0).
    pub fn nexus(nexus: &ItNexus) -> Self {
        Self {
            initiator: InitiatorPort::of(nexus),
            ports: TargetPorts::One(TargetPort::of(nexus)),
        }
    }

    pub fn covers(&self, nexus: &ItNexus) -> bool {
        self.initiator.is_of(nexus)
            && match &self.ports {
                TargetPorts::One(port) => port.is_of(nexus),
                TargetPorts::All => true,
            }
    }

    /// Whether some I_T nexus is covered by both.
    pub fn overlaps(&self, other: &Registrant) -> bool {
        self.initiator == other.initiator
            && match (&self.ports, &other.ports) {
                (TargetPorts::One(a), TargetPorts::One(b)) => a == b,
                _ => true,
            }
    }

    pub fn all_target_ports(&self) -> bool {
        self.ports == TargetPorts::All
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrRegistration {
    /// Never 0: registering key 0 removes the registration instead.
    pub key: u64,
    pub registrant: Registrant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrReservation {
    /// PR TYPE (1 WE, 3 EA, 5 WERO, 6 EARO, 7 WEAR, 8 EAAR).
    pub pr_type: u8,
    /// SCOPE (always 0, LU_SCOPE).
    pub scope: u8,
    /// The I_T nexus holding the reservation; None exactly for the all-registrants types, where every
    /// registered I_T nexus is a holder. A holder is always registered.
    pub holder: Option<ItNexus>,
}

impl PrReservation {
    /// A LU_SCOPE reservation of `pr_type` established through `nexus`.
    pub fn new(pr_type: u8, nexus: &ItNexus) -> Self {
        Self {
            pr_type,
            scope: 0,
            holder: (!pr_type::is_all_registrants(pr_type)).then(|| nexus.clone()),
        }
    }

    pub fn is_all_registrants(&self) -> bool {
        pr_type::is_all_registrants(self.pr_type)
    }
}

/// Complete PR state of one logical unit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PrState {
    pub generation: u32,
    /// Activate Persist Through Power Loss, as last set by a REGISTER (or REGISTER AND MOVE).
    pub aptpl: bool,
    /// In registration order (READ KEYS and READ FULL STATUS report them in this order).
    pub registrations: Vec<PrRegistration>,
    pub reservation: Option<PrReservation>,
}

impl PrState {
    /// Index of the registration covering `nexus`.
    pub fn registration_index(&self, nexus: &ItNexus) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.registrant.covers(nexus))
    }

    pub fn is_registered(&self, nexus: &ItNexus) -> bool {
        self.registration_index(nexus).is_some()
    }

    /// Whether `nexus` is a persistent reservation holder (SPC-4 §5.13.10): the holder, or any
    /// registered I_T nexus under an all-registrants reservation.
    pub fn is_holder(&self, nexus: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(res) if res.is_all_registrants() => self.is_registered(nexus),
            Some(res) => res.holder.as_ref() == Some(nexus),
        }
    }

    /// The reservation key READ RESERVATION reports: the holder's, or 0 for all-registrants types.
    pub fn reservation_key(&self) -> u64 {
        self.reservation
            .as_ref()
            .and_then(|res| res.holder.as_ref())
            .and_then(|h| self.registration_index(h))
            .map_or(0, |i| self.registrations[i].key)
    }

    /// The state a logical unit starts with after a power loss (SPC-4 §5.13.4 and the PRgeneration
    /// field): registrations and the reservation persist only if the last APTPL was one, and the
    /// PRgeneration starts again at zero either way.
    pub fn at_power_on(self) -> Self {
        if self.aptpl {
            Self {
                generation: 0,
                ..self
            }
        } else {
            Self::default()
        }
    }
}

/// Where a LU keeps its PR state. A `save` that returns Ok is durable (for a replicated LUN: on both
/// nodes, or recorded as owed to a disconnected peer, exactly like a protocol-C write); one that fails
/// may or may not have landed, and the LU then keeps its old state.
pub trait PrStore: Send + Sync {
    fn load(&self) -> Result<Option<Vec<u8>>, ScsiError>;
    fn save(&self, blob: Bytes) -> BoxFut<'_, Result<(), ScsiError>>;
    /// Largest encoded state the store holds; a PERSISTENT RESERVE OUT whose new state would not fit
    /// fails with INSUFFICIENT REGISTRATION RESOURCES and changes nothing.
    fn capacity(&self) -> usize {
        usize::MAX
    }
    /// Whether the state `load` returns is from before a power loss of the logical unit, as initiators
    /// see it (a standalone target that restarts), rather than the state a failover carries over (the
    /// initiators only lost their I_T nexuses). After a power loss only APTPL state survives
    /// ([`PrState::at_power_on`]).
    fn loads_after_power_loss(&self) -> bool {
        false
    }
}

/// In-memory store (tests, or LUs whose PR state need not survive a restart).
#[derive(Default)]
pub struct MemPrStore {
    blob: Mutex<Option<Vec<u8>>>,
    capacity: Option<usize>,
}

impl MemPrStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that holds at most `capacity` bytes (like the replicated metadata).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            blob: Mutex::new(None),
            capacity: Some(capacity),
        }
    }
}

impl PrStore for MemPrStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ScsiError> {
        Ok(self.blob.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    fn save(&self, blob: Bytes) -> BoxFut<'_, Result<(), ScsiError>> {
        *self.blob.lock().unwrap_or_else(|e| e.into_inner()) = Some(blob.to_vec());
        Box::pin(async { Ok(()) })
    }
    fn capacity(&self) -> usize {
        self.capacity.unwrap_or(usize::MAX)
    }
}

/// File store (standalone LUNs): write a temp file, fsync it, rename over the old one, fsync the
/// directory, so a crash leaves either the old or the new state, never a torn one. The file is read
/// when the target starts, which initiators see as a power loss: only APTPL state survives it.
pub struct FilePrStore {
    path: Arc<PathBuf>,
}

impl FilePrStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::new(path.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn save_file(path: &Path, blob: &[u8]) -> Result<(), ScsiError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(blob)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl PrStore for FilePrStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ScsiError> {
        match std::fs::read(&*self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, blob: Bytes) -> BoxFut<'_, Result<(), ScsiError>> {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || save_file(&path, &blob)).await {
                Ok(r) => r,
                Err(e) => Err(ScsiError::PrStoreIo(std::io::Error::other(e.to_string()))),
            }
        })
    }

    fn loads_after_power_loss(&self) -> bool {
        true
    }
}
