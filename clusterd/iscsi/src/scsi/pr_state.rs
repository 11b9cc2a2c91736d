//! Persistent reservation state, its versioned on-disk encoding, and where it is stored.
//!
//! The full state (not only APTPL registrations) is saved before every PERSISTENT RESERVE OUT
//! completes: after a failover the initiator sees an I_T nexus loss, not a power loss, so its
//! registrations and reservation must still be there on the peer. For a replicated LUN the store is
//! the resource itself (clusterd's `VolumePrStore`: the blob lives in the replicated metadata and a save
//! completes only when the peer has it too); a standalone LUN keeps a local file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{ItNexus, ScsiError};
use crate::backend::BoxFut;

/// Encoding version written in the first byte after the magic.
const VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SCPR";
/// Hard caps so a corrupt blob cannot make us allocate unboundedly.
const MAX_REGISTRATIONS: u32 = 65_536;
const MAX_NAME: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrRegistration {
    pub key: u64,
    pub nexus: ItNexus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrReservation {
    /// The nexus that established the reservation. For all-registrants types every registrant is a
    /// holder; this field then only records who reserved.
    pub holder: ItNexus,
    /// PR TYPE (1 WE, 3 EA, 5 WERO, 6 EARO, 7 WEAR, 8 EAAR).
    pub pr_type: u8,
    /// SCOPE (always 0, LU_SCOPE).
    pub scope: u8,
}

/// Complete PR state of one logical unit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PrState {
    pub generation: u32,
    /// Activate Persist Through Power Loss, as last set by a REGISTER.
    pub aptpl: bool,
    pub registrations: Vec<PrRegistration>,
    pub reservation: Option<PrReservation>,
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
}

fn put_nexus(out: &mut Vec<u8>, n: &ItNexus) {
    for s in [&n.initiator, &n.target] {
        let b = s.as_bytes();
        let len = b.len().min(MAX_NAME);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&b[..len]);
    }
    out.extend_from_slice(&n.isid);
    out.extend_from_slice(&n.tpgt.to_be_bytes());
    out.extend_from_slice(&n.relative_port.to_be_bytes());
}

/// Serializes `state`: magic, version, body, crc32c of everything before the crc.
pub fn encode_pr_state(state: &PrState) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + state.registrations.len() * 96);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&state.generation.to_be_bytes());
    out.push(u8::from(state.aptpl));
    let count = state.registrations.len().min(MAX_REGISTRATIONS as usize);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    for r in state.registrations.iter().take(count) {
        out.extend_from_slice(&r.key.to_be_bytes());
        put_nexus(&mut out, &r.nexus);
    }
    match &state.reservation {
        None => out.push(0),
        Some(res) => {
            out.push(1);
            put_nexus(&mut out, &res.holder);
            out.push(res.pr_type);
            out.push(res.scope);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScsiError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| corrupt("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| corrupt("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ScsiError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ScsiError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ScsiError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ScsiError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn string(&mut self) -> Result<String, ScsiError> {
        let len = usize::from(self.u16()?);
        if len > MAX_NAME {
            return Err(corrupt("name too long"));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| corrupt("name is not UTF-8"))
    }
    fn nexus(&mut self) -> Result<ItNexus, ScsiError> {
        let initiator = self.string()?;
        let target = self.string()?;
        let mut isid = [0u8; 6];
        isid.copy_from_slice(self.take(6)?);
        Ok(ItNexus {
            initiator,
            isid,
            target,
            tpgt: self.u16()?,
            relative_port: self.u16()?,
        })
    }
}

fn corrupt(why: &str) -> ScsiError {
    ScsiError::CorruptPrState(why.to_string())
}

/// Parses a blob written by [`encode_pr_state`]; rejects bad magic, unknown versions, crc mismatch,
/// truncation and trailing bytes.
pub fn decode_pr_state(blob: &[u8]) -> Result<PrState, ScsiError> {
    let body_len = blob
        .len()
        .checked_sub(4)
        .ok_or_else(|| corrupt("too short"))?;
    let (body, crc_bytes) = blob.split_at(body_len);
    let stored = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { buf: body, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(ScsiError::CorruptPrState(format!(
            "unsupported version {version}"
        )));
    }
    let generation = r.u32()?;
    let aptpl = r.u8()? != 0;
    let count = r.u32()?;
    if count > MAX_REGISTRATIONS {
        return Err(corrupt("too many registrations"));
    }
    let mut registrations = Vec::new();
    for _ in 0..count {
        let key = r.u64()?;
        registrations.push(PrRegistration {
            key,
            nexus: r.nexus()?,
        });
    }
    let reservation = match r.u8()? {
        0 => None,
        1 => {
            let holder = r.nexus()?;
            Some(PrReservation {
                holder,
                pr_type: r.u8()?,
                scope: r.u8()?,
            })
        }
        _ => return Err(corrupt("bad reservation flag")),
    };
    if r.pos != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(PrState {
        generation,
        aptpl,
        registrations,
        reservation,
    })
}

/// In-memory store (tests, or LUs whose PR state need not survive a restart).
#[derive(Default)]
pub struct MemPrStore {
    blob: Mutex<Option<Vec<u8>>>,
}

impl MemPrStore {
    pub fn new() -> Self {
        Self::default()
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
}

/// File store (standalone LUNs): write a temp file, fsync it, rename over the old one, fsync the
/// directory, so a crash leaves either the old or the new state, never a torn one.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PrState {
        let n = |i: &str, p| ItNexus {
            initiator: i.into(),
            isid: [0x40, 0, 1, 0x37, 0, p as u8],
            target: "iqn.2024-01.example:t".into(),
            tpgt: 1,
            relative_port: p,
        };
        PrState {
            generation: 7,
            aptpl: true,
            registrations: vec![
                PrRegistration {
                    key: 0xAA,
                    nexus: n("iqn.a", 1),
                },
                PrRegistration {
                    key: u64::MAX,
                    nexus: n("iqn.b", 2),
                },
            ],
            reservation: Some(PrReservation {
                holder: n("iqn.a", 1),
                pr_type: 5,
                scope: 0,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(decode_pr_state(&encode_pr_state(&s)).unwrap(), s);
        let empty = PrState::default();
        assert_eq!(decode_pr_state(&encode_pr_state(&empty)).unwrap(), empty);
    }

    #[test]
    fn corrupt_blobs_rejected() {
        let blob = encode_pr_state(&sample());
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x01;
            assert!(decode_pr_state(&b).is_err(), "flip at {i} accepted");
        }
        for n in 0..blob.len() {
            assert!(
                decode_pr_state(&blob[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
        // A valid checksum over an unknown version is still rejected.
        let mut b = blob[..blob.len() - 4].to_vec();
        b[4] = 9;
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(decode_pr_state(&b), Err(ScsiError::CorruptPrState(m)) if m.contains("version"))
        );
    }

    #[tokio::test]
    async fn file_store_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilePrStore::new(dir.path().join("pr.bin"));
        assert!(store.load().unwrap().is_none());
        store.save(Bytes::from_static(b"one")).await.unwrap();
        store.save(Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"two"[..]));
        let mem = MemPrStore::new();
        mem.save(Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(mem.load().unwrap().as_deref(), Some(&b"x"[..]));
    }
}
