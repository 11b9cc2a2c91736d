//! INQUIRY (standard data and VPD pages), READ CAPACITY and REPORT TARGET PORT GROUPS.
//!
//! Everything an initiator uses to decide "which device is this" (VPD 0x80/0x83) comes from
//! [`LunIdentity`](super::LunIdentity) and the nexus's target port, never from per-node state, so both
//! HA nodes answer identically. What pages 0xB0/0xB2 and READ CAPACITY(16) advertise matches exactly
//! what `rw.rs` implements.

use bytes::Bytes;

use super::ItNexus;
use super::alua::Alua;
use super::cdb::{be16, be32};
use super::lu::LogicalUnit;
use super::sense::{CmdResult, invalid_cdb_field};

/// Largest READ/WRITE transfer we accept, in bytes (advertised in VPD 0xB0).
pub(super) const MAX_TRANSFER_BYTES: u32 = 8 << 20;
/// COMPARE AND WRITE limit in blocks (VPD 0xB0 MAXIMUM COMPARE AND WRITE LENGTH).
pub(super) const MAX_CAW_BLOCKS: u32 = 255;
/// UNMAP limits (VPD 0xB0).
pub(super) const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// 256 MiB keeps MAXIMUM UNMAP LBA COUNT at or below 2^20 blocks for every supported block size,
/// the bound libiscsi's `Inquiry.BlockLimits` treats as sane for an explicit limit.
pub(super) const MAX_UNMAP_BYTES: u64 = 256 << 20;
/// WRITE SAME limit (VPD 0xB0 MAXIMUM WRITE SAME LENGTH).
/// In blocks, like LIO's default: WRITE SAME is expanded in chunks, so the bound only caps the work
/// one command can cause. Staying below 2^16 also means initiators (and libiscsi's
/// `WriteSame16.Unmap`) never need a single plain WRITE larger than MAX_TRANSFER_BYTES to set up a
/// range of the largest advertised WRITE SAME length.
pub(super) const MAX_WRITE_SAME_BLOCKS: u64 = 0xFFFF;

/// VPD pages served, ascending (page 0x00 lists exactly these).
const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3 (they switch on libiscsi's SBC-3 tests).
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// iSCSI protocol identifier (SPC-4 table 362).
const PROTOCOL_ISCSI: u8 = 0x05;

impl LogicalUnit {
    pub(super) fn max_transfer_blocks(&self) -> u32 {
        MAX_TRANSFER_BYTES / self.block_size
    }
    pub(super) fn max_unmap_blocks(&self) -> u32 {
        (MAX_UNMAP_BYTES / u64::from(self.block_size)) as u32
    }
    pub(super) fn max_write_same_blocks(&self) -> u64 {
        MAX_WRITE_SAME_BLOCKS
    }
}

fn padded_ascii(out: &mut Vec<u8>, s: &str, width: usize) {
    let b = s.as_bytes();
    let n = b.len().min(width);
    out.extend_from_slice(&b[..n]);
    out.resize(out.len() + (width - n), b' ');
}

fn finish(mut data: Vec<u8>, alloc: usize) -> CmdResult {
    data.truncate(alloc);
    Ok(Bytes::from(data))
}

pub(super) fn inquiry(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    alua: Option<&Alua>,
) -> CmdResult {
    let evpd = c[1] & 0x01 != 0;
    if c[1] & 0x02 != 0 {
        return Err(invalid_cdb_field(1, Some(1))); // CMDDT is obsolete
    }
    let page = c[2];
    let alloc = usize::from(be16(c, 3));
    if !evpd {
        if page != 0 {
            return Err(invalid_cdb_field(2, None));
        }
        return finish(standard_inquiry(lu), alloc);
    }
    let body = match page {
        0x00 => VPD_PAGES.to_vec(),
        0x80 => lu.identity.serial.as_bytes().to_vec(),
        0x83 => device_identification(lu, nexus, alua),
        0xB0 => block_limits(lu),
        0xB1 => block_device_characteristics(),
        0xB2 => logical_block_provisioning(lu),
        _ => return Err(invalid_cdb_field(2, None)),
    };
    let mut data = vec![0x00, page];
    data.extend_from_slice(&(body.len() as u16).to_be_bytes());
    data.extend_from_slice(&body);
    finish(data, alloc)
}

/// Peripheral qualifier 3 / device type 0x1F: "no LU at this LUN" (SPC-4 §6.6.2).
pub(super) fn inquiry_missing_lun(c: &[u8; 16]) -> CmdResult {
    if c[1] & 0x01 != 0 || c[2] != 0 {
        // VPD pages of a nonexistent LU: still answer with the qualifier so scanners move on.
        let data = vec![0x7F, c[2], 0, 0];
        return finish(data, usize::from(be16(c, 3)));
    }
    let mut data = vec![0u8; 36];
    data[0] = 0x7F;
    data[2] = 0x06;
    data[3] = 0x02;
    data[4] = 31;
    finish(data, usize::from(be16(c, 3)))
}

fn standard_inquiry(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = Vec::with_capacity(96);
    d.push(0x00); // PQ 0, direct-access block device
    d.push(0x00); // not removable
    d.push(0x06); // SPC-4
    d.push(0x12); // HISUP, response data format 2
    d.push(0); // additional length, patched below
    // TPGS = 01b: implicit ALUA (REPORT TARGET PORT GROUPS); 3PC: EXTENDED COPY copy manager.
    d.push(0x10 | 0x08);
    d.push(0x00);
    d.push(0x02); // CMDQUE
    padded_ascii(&mut d, &lu.identity.vendor, 8);
    padded_ascii(&mut d, &lu.identity.product, 16);
    padded_ascii(&mut d, &lu.identity.revision, 4);
    d.resize(58, 0);
    for v in VERSION_DESCRIPTORS {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d.resize(96, 0);
    d[4] = (d.len() - 5) as u8;
    d
}

fn designator(out: &mut Vec<u8>, code_set: u8, piv_assoc_type: u8, value: &[u8]) {
    out.push(code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// SCSI name strings are NUL terminated and padded to a multiple of 4 bytes.
fn name_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().iter().copied().take(251).collect::<Vec<u8>>();
    v.push(0);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// The NAA IEEE Registered Extended designator of a LU (VPD 0x83, and what EXTENDED COPY target
/// descriptors name the LU by).
pub(super) fn naa_designator(id: &super::LunIdentity) -> [u8; 16] {
    let mut naa = [0u8; 16];
    naa[..8].copy_from_slice(&((id.naa & 0x0FFF_FFFF_FFFF_FFFF) | (0x6 << 60)).to_be_bytes());
    naa[8..].copy_from_slice(&id.naa_ext.to_be_bytes());
    naa
}

/// `alua`: the TARGET PORT GROUP designator names the group holding the nexus's relative port (the
/// configured `target_port_group` without ALUA or for a port in no group).
fn device_identification(lu: &LogicalUnit, nexus: &ItNexus, alua: Option<&Alua>) -> Vec<u8> {
    let id = &lu.identity;
    let mut out = Vec::new();
    // NAA IEEE Registered Extended: binary, LU association. First on purpose: udev/multipath prefer it.
    designator(&mut out, 0x01, 0x03, &naa_designator(id));
    // T10 vendor ID: ASCII, vendor padded to 8 then the serial.
    let mut t10 = Vec::new();
    padded_ascii(&mut t10, &id.vendor, 8);
    t10.extend(id.serial.as_bytes().iter().take(240));
    designator(&mut out, 0x02, 0x01, &t10);
    let iscsi_binary = (PROTOCOL_ISCSI << 4) | 0x01;
    let iscsi_utf8 = (PROTOCOL_ISCSI << 4) | 0x03;
    // Relative target port and target port group: PIV, target-port association.
    let mut rtpi = vec![0, 0];
    rtpi.extend_from_slice(&nexus.relative_port.to_be_bytes());
    designator(&mut out, iscsi_binary, 0x80 | 0x10 | 0x04, &rtpi);
    let group = alua
        .and_then(|a| a.group_of_port(nexus.relative_port))
        .unwrap_or(id.target_port_group);
    let mut tpg = vec![0, 0];
    tpg.extend_from_slice(&group.to_be_bytes());
    designator(&mut out, iscsi_binary, 0x80 | 0x10 | 0x05, &tpg);
    // SCSI name strings: the target port and the target device.
    let port = format!("{},t,0x{:04x}", nexus.target, nexus.tpgt);
    designator(
        &mut out,
        iscsi_utf8,
        0x80 | 0x10 | 0x08,
        &name_string(&port),
    );
    designator(
        &mut out,
        iscsi_utf8,
        0x80 | 0x20 | 0x08,
        &name_string(&nexus.target),
    );
    out
}

fn block_limits(lu: &LogicalUnit) -> Vec<u8> {
    let mut p = vec![0u8; 0x3C];
    let bs = lu.block_size;
    // WSNZ stays 0: WRITE SAME with zero blocks means "to the last LBA", bounded by MAXIMUM WRITE
    // SAME LENGTH like any other WRITE SAME.
    p[1] = MAX_CAW_BLOCKS as u8;
    let gran = (4096 / bs).max(1) as u16;
    p[2..4].copy_from_slice(&gran.to_be_bytes());
    p[4..8].copy_from_slice(&lu.max_transfer_blocks().to_be_bytes());
    p[8..12].copy_from_slice(&((1u32 << 20) / bs).to_be_bytes());
    if lu.thin() {
        p[16..20].copy_from_slice(&lu.max_unmap_blocks().to_be_bytes());
        p[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        p[24..28].copy_from_slice(&1u32.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
    }
    p[32..40].copy_from_slice(&lu.max_write_same_blocks().to_be_bytes());
    p
}

fn block_device_characteristics() -> Vec<u8> {
    let mut p = vec![0u8; 0x3C];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // non-rotating medium
    p
}

fn logical_block_provisioning(lu: &LogicalUnit) -> Vec<u8> {
    let mut p = vec![0u8; 4];
    if lu.thin() {
        p[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
        p[2] = 0x02; // thin provisioned
    }
    p
}

pub(super) fn read_capacity_10(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    if c[8] & 0x01 == 0 && be32(c, 2) != 0 {
        return Err(invalid_cdb_field(2, None)); // LBA must be 0 unless PMI
    }
    let last = lu.capacity_blocks().saturating_sub(1);
    let mut d = Vec::with_capacity(8);
    d.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
    d.extend_from_slice(&lu.block_size.to_be_bytes());
    Ok(Bytes::from(d))
}

pub(super) fn read_capacity_16(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let alloc = be32(c, 10) as usize;
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&lu.capacity_blocks().saturating_sub(1).to_be_bytes());
    d[8..12].copy_from_slice(&lu.block_size.to_be_bytes());
    // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0 (physical == logical): the backend's real
    // physical geometry is unknown here, and every block is individually addressable for UNMAP and
    // GET LBA STATUS. The 4 KiB alignment hint is carried by VPD 0xB0 OPTIMAL TRANSFER LENGTH
    // GRANULARITY instead (Linux turns it into io_min). libiscsi's GetLBAStatus.UnmapSingle also
    // assumes one logical block per physical block when it checks descriptor LBAs.
    d[13] = 0;
    if lu.thin() {
        d[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    finish(d, alloc)
}

/// REPORT TARGET PORT GROUPS. With an [`Alua`]: its groups and states. Without: one group, one
/// port, always active/optimized (the VIP follows the Primary, so the path an initiator can reach is
/// the optimized one).
pub(super) fn report_target_port_groups(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    alua: Option<&Alua>,
) -> CmdResult {
    let extended = (c[1] >> 5) == 0x01;
    let alloc = be32(c, 6) as usize;
    if let Some(alua) = alua {
        return finish(alua.report_target_port_groups(extended), alloc);
    }
    let mut desc = vec![0x80, 0x01]; // PREF, active/optimized; AO_SUP
    desc.extend_from_slice(&lu.identity.target_port_group.to_be_bytes());
    desc.extend_from_slice(&[0, 0, 0, 1]); // reserved, status code, vendor, port count
    desc.extend_from_slice(&[0, 0]);
    desc.extend_from_slice(&nexus.relative_port.to_be_bytes());
    let mut d = Vec::new();
    if extended {
        d.extend_from_slice(&((desc.len() + 4) as u32).to_be_bytes());
        d.extend_from_slice(&[0x10, 0, 0, 0]);
    } else {
        d.extend_from_slice(&(desc.len() as u32).to_be_bytes());
    }
    d.extend_from_slice(&desc);
    finish(d, alloc)
}
