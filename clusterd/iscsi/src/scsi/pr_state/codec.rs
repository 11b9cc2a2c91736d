//! The on-store encoding of [`PrState`] (layout in the parent module) and the validation every decoded
//! state passes, so a LU never runs with a state its own state machine could not have produced.

use std::collections::HashMap;

use super::{
    InitiatorPort, PrRegistration, PrReservation, PrState, Registrant, TargetPort, TargetPorts,
};
use crate::scsi::reservation::pr_type;
use crate::scsi::{ItNexus, ScsiError};

const MAGIC: &[u8; 4] = b"SCPR";
/// The previous release's layout: every registration and the holder carried a whole nexus.
const VERSION_1: u8 = 1;
/// Name tables + indexed registrations.
const VERSION_2: u8 = 2;
const FLAG_APTPL: u8 = 0x01;
const FLAG_RESERVATION: u8 = 0x02;
/// Target port index of an ALL_TG_PT registration (and of an all-registrants reservation's holder).
const ALL_PORTS: u8 = 0xFF;
/// Holder registration index of an all-registrants reservation.
const NO_SINGLE_HOLDER: u16 = 0xFFFF;
/// Longest iSCSI name (RFC 7143 §4.2.7.1); both name tables store lengths in one byte.
pub const MAX_NAME_BYTES: usize = 223;
/// Table sizes: the counts are one byte, and port index 0xFF means "all ports".
const MAX_TABLE_ENTRIES: usize = 255;
/// Registration count is two bytes, and holder index 0xFFFF means "all registrants".
const MAX_REGISTRATIONS: usize = 0xFFFF;
/// Version 1 capped names at 1024 bytes and counts at 65536 (only used to bound allocation).
const V1_MAX_NAME: usize = 1024;
const V1_MAX_REGISTRATIONS: u32 = 65_536;

fn too_large(why: String) -> ScsiError {
    ScsiError::PrStateTooLarge(why)
}

fn corrupt(why: &str) -> ScsiError {
    ScsiError::CorruptPrState(why.to_string())
}

/// Index of `item` in `table`, appending it first if absent.
fn intern<'a, T: PartialEq + ?Sized>(table: &mut Vec<&'a T>, item: &'a T) -> usize {
    match table.iter().position(|t| *t == item) {
        Some(i) => i,
        None => {
            table.push(item);
            table.len() - 1
        }
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), ScsiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(too_large(format!(
            "name of {} bytes (iSCSI names are 1 to {MAX_NAME_BYTES})",
            name.len()
        )));
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Serializes `state` as version 2. Fails (and the PERSISTENT RESERVE OUT that produced the state gets
/// INSUFFICIENT REGISTRATION RESOURCES) when a name or a table does not fit the layout.
pub fn encode_pr_state(state: &PrState) -> Result<Vec<u8>, ScsiError> {
    if state.registrations.len() > MAX_REGISTRATIONS {
        return Err(too_large(format!(
            "{} registrations, at most {MAX_REGISTRATIONS}",
            state.registrations.len()
        )));
    }
    let mut ports: Vec<&TargetPort> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut indexed = Vec::with_capacity(state.registrations.len());
    for r in &state.registrations {
        let name = intern(&mut names, r.registrant.initiator.name.as_str());
        let port = match &r.registrant.ports {
            TargetPorts::One(p) => Some(intern(&mut ports, p)),
            TargetPorts::All => None,
        };
        indexed.push((name, port));
    }
    let holder = match state
        .reservation
        .as_ref()
        .and_then(|res| res.holder.as_ref())
    {
        None => None,
        Some(h) => {
            let reg = state
                .registration_index(h)
                .ok_or_else(|| too_large("the reservation holder is not registered".into()))?;
            let port = TargetPort::of(h);
            let port_index = match ports.iter().position(|p| **p == port) {
                Some(i) => i,
                None => ports.len(),
            };
            Some((reg, port_index, port))
        }
    };
    let holder_port_is_new = holder.as_ref().is_some_and(|(_, i, _)| *i == ports.len());
    let port_count = ports.len() + usize::from(holder_port_is_new);
    if port_count > MAX_TABLE_ENTRIES || names.len() > MAX_TABLE_ENTRIES {
        return Err(too_large(format!(
            "{port_count} target ports and {} initiator names, at most {MAX_TABLE_ENTRIES} each",
            names.len()
        )));
    }

    let mut out = Vec::with_capacity(64 + state.registrations.len() * 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION_2);
    let mut flags = 0;
    if state.aptpl {
        flags |= FLAG_APTPL;
    }
    if state.reservation.is_some() {
        flags |= FLAG_RESERVATION;
    }
    out.push(flags);
    out.extend_from_slice(&state.generation.to_be_bytes());
    out.push(port_count as u8);
    let holder_port = holder.as_ref().filter(|_| holder_port_is_new).map(|h| &h.2);
    for p in ports.iter().copied().chain(holder_port) {
        out.extend_from_slice(&p.relative_id.to_be_bytes());
        out.extend_from_slice(&p.tpgt.to_be_bytes());
        put_name(&mut out, &p.name)?;
    }
    out.push(names.len() as u8);
    for n in &names {
        put_name(&mut out, n)?;
    }
    out.extend_from_slice(&(state.registrations.len() as u16).to_be_bytes());
    for (r, (name, port)) in state.registrations.iter().zip(indexed) {
        out.extend_from_slice(&r.key.to_be_bytes());
        out.push(name as u8);
        out.extend_from_slice(&r.registrant.initiator.isid);
        out.push(port.map_or(ALL_PORTS, |p| p as u8));
    }
    if let Some(res) = &state.reservation {
        out.push((res.scope << 4) | (res.pr_type & 0x0F));
        let (reg, port) = holder
            .as_ref()
            .map_or((NO_SINGLE_HOLDER, ALL_PORTS), |(reg, port, _)| {
                (*reg as u16, *port as u8)
            });
        out.extend_from_slice(&reg.to_be_bytes());
        out.push(port);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
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
    fn isid(&mut self) -> Result<[u8; 6], ScsiError> {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(self.take(6)?);
        Ok(isid)
    }
    fn text(&mut self, len: usize) -> Result<String, ScsiError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| corrupt("name is not UTF-8"))
    }
    /// A version 2 name: one length byte.
    fn short_name(&mut self) -> Result<String, ScsiError> {
        let len = usize::from(self.u8()?);
        self.text(len)
    }
    /// A version 1 name: two length bytes.
    fn long_name(&mut self) -> Result<String, ScsiError> {
        let len = usize::from(self.u16()?);
        if len > V1_MAX_NAME {
            return Err(corrupt("name too long"));
        }
        self.text(len)
    }
    fn v1_nexus(&mut self) -> Result<ItNexus, ScsiError> {
        let initiator = self.long_name()?;
        let target = self.long_name()?;
        let isid = self.isid()?;
        Ok(ItNexus {
            initiator,
            isid,
            target,
            tpgt: self.u16()?,
            relative_port: self.u16()?,
        })
    }
}

/// Parses a blob written by [`encode_pr_state`] (version 2) or by the previous release (version 1);
/// rejects bad magic, unknown versions, CRC mismatch, truncation, trailing bytes, and states that break
/// the model's rules (see `validate`).
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
    let state = match r.u8()? {
        VERSION_1 => decode_v1(&mut r)?,
        VERSION_2 => decode_v2(&mut r)?,
        version => {
            return Err(ScsiError::CorruptPrState(format!(
                "unsupported version {version}"
            )));
        }
    };
    if r.pos != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    validate(&state)?;
    Ok(state)
}

fn decode_v2(r: &mut Reader<'_>) -> Result<PrState, ScsiError> {
    let flags = r.u8()?;
    if flags & !(FLAG_APTPL | FLAG_RESERVATION) != 0 {
        return Err(corrupt("unknown flags"));
    }
    let generation = r.u32()?;
    let port_count = r.u8()?;
    let mut ports = Vec::with_capacity(usize::from(port_count));
    for _ in 0..port_count {
        let relative_id = r.u16()?;
        let tpgt = r.u16()?;
        ports.push(TargetPort {
            name: r.short_name()?,
            tpgt,
            relative_id,
        });
    }
    let name_count = r.u8()?;
    let mut names = Vec::with_capacity(usize::from(name_count));
    for _ in 0..name_count {
        names.push(r.short_name()?);
    }
    let count = r.u16()?;
    let mut registrations = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let key = r.u64()?;
        let name = names
            .get(usize::from(r.u8()?))
            .ok_or_else(|| corrupt("initiator name index out of range"))?;
        let isid = r.isid()?;
        let ports = match r.u8()? {
            ALL_PORTS => TargetPorts::All,
            i => TargetPorts::One(
                ports
                    .get(usize::from(i))
                    .ok_or_else(|| corrupt("target port index out of range"))?
                    .clone(),
            ),
        };
        registrations.push(PrRegistration {
            key,
            registrant: Registrant {
                initiator: InitiatorPort {
                    name: name.clone(),
                    isid,
                },
                ports,
            },
        });
    }
    let reservation = if flags & FLAG_RESERVATION == 0 {
        None
    } else {
        let scope_type = r.u8()?;
        let holder = match (r.u16()?, r.u8()?) {
            (NO_SINGLE_HOLDER, ALL_PORTS) => None,
            (NO_SINGLE_HOLDER, _) => return Err(corrupt("holder port without a holder")),
            (reg, port) => {
                let reg = registrations
                    .get(usize::from(reg))
                    .ok_or_else(|| corrupt("holder index out of range"))?;
                let port = ports
                    .get(usize::from(port))
                    .ok_or_else(|| corrupt("holder port index out of range"))?;
                Some(ItNexus {
                    initiator: reg.registrant.initiator.name.clone(),
                    isid: reg.registrant.initiator.isid,
                    target: port.name.clone(),
                    tpgt: port.tpgt,
                    relative_port: port.relative_id,
                })
            }
        };
        Some(PrReservation {
            pr_type: scope_type & 0x0F,
            scope: scope_type >> 4,
            holder,
        })
    };
    Ok(PrState {
        generation,
        aptpl: flags & FLAG_APTPL != 0,
        registrations,
        reservation,
    })
}

/// Version 1 carried every nexus in full and kept the establishing nexus of an all-registrants
/// reservation (possibly no longer registered); this release keeps no holder for those types, and an
/// all-registrants reservation without registrants (left behind by the previous PREEMPT) is released.
fn decode_v1(r: &mut Reader<'_>) -> Result<PrState, ScsiError> {
    let generation = r.u32()?;
    let aptpl = r.u8()? != 0;
    let count = r.u32()?;
    if count > V1_MAX_REGISTRATIONS {
        return Err(corrupt("too many registrations"));
    }
    let mut registrations = Vec::new();
    for _ in 0..count {
        let key = r.u64()?;
        let nexus = r.v1_nexus()?;
        registrations.push(PrRegistration {
            key,
            registrant: Registrant::nexus(&nexus),
        });
    }
    let mut state = PrState {
        generation,
        aptpl,
        registrations,
        reservation: None,
    };
    state.reservation = match r.u8()? {
        0 => None,
        1 => {
            let holder = r.v1_nexus()?;
            let pr_type = r.u8()?;
            let scope = r.u8()?;
            if pr_type::is_all_registrants(pr_type) {
                (!state.registrations.is_empty()).then_some(PrReservation {
                    pr_type,
                    scope,
                    holder: None,
                })
            } else {
                Some(PrReservation {
                    pr_type,
                    scope,
                    holder: Some(holder),
                })
            }
        }
        _ => return Err(corrupt("bad reservation flag")),
    };
    Ok(state)
}

fn check_name(name: &str) -> Result<(), ScsiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(corrupt("name length out of range"));
    }
    Ok(())
}

/// The rules the PERSISTENT RESERVE OUT state machine keeps: non-zero keys, iSCSI-sized names, at
/// most one registration per I_T nexus, a LU_SCOPE reservation of a defined type, a registered holder
/// for the single-holder types and at least one registrant for the all-registrants types.
pub(crate) fn validate(state: &PrState) -> Result<(), ScsiError> {
    // Per initiator port: whether it has an ALL_TG_PT registration, and its single-port ones.
    let mut seen: HashMap<&InitiatorPort, (bool, Vec<&TargetPort>)> = HashMap::new();
    for r in &state.registrations {
        if r.key == 0 {
            return Err(corrupt("registration with key 0"));
        }
        check_name(&r.registrant.initiator.name)?;
        let entry = seen.entry(&r.registrant.initiator).or_default();
        let overlap = match &r.registrant.ports {
            TargetPorts::All => entry.0 || !entry.1.is_empty(),
            TargetPorts::One(p) => {
                check_name(&p.name)?;
                entry.0 || entry.1.contains(&p)
            }
        };
        if overlap {
            return Err(corrupt("two registrations for one I_T nexus"));
        }
        match &r.registrant.ports {
            TargetPorts::All => entry.0 = true,
            TargetPorts::One(p) => entry.1.push(p),
        }
    }
    if let Some(res) = &state.reservation {
        if !pr_type::ALL.contains(&res.pr_type) || res.scope != 0 {
            return Err(corrupt("reservation type or scope not defined"));
        }
        match &res.holder {
            None if !res.is_all_registrants() => {
                return Err(corrupt("single-holder reservation without a holder"));
            }
            None if state.registrations.is_empty() => {
                return Err(corrupt("all-registrants reservation without registrants"));
            }
            None => {}
            Some(_) if res.is_all_registrants() => {
                return Err(corrupt("all-registrants reservation with a single holder"));
            }
            Some(h) => {
                check_name(&h.target)?;
                if !state.is_registered(h) {
                    return Err(corrupt("the reservation holder is not registered"));
                }
            }
        }
    }
    Ok(())
}
