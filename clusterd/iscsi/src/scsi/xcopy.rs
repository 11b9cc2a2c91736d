//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18): the copy manager behind the
//! standard INQUIRY 3PC bit, used by hypervisors to clone blocks without moving them over the network.
//!
//! Scope, kept deliberately small and advertised exactly through OPERATING PARAMETERS: identification
//! CSCD descriptors (0xE4) that name this logical unit, block→block segment descriptors (0x02), no
//! inline or held data. Copies run to completion inside the command, so COPY STATUS always reports a
//! finished operation; its result is held per (I_T nexus, list identifier) when LIST ID USAGE asks.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::ItNexus;
use super::cdb::{be32, param_be16, param_be32, param_be64};
use super::inquiry::naa_designator;
use super::lu::{LogicalUnit, lock};
use super::opcodes::op;
use super::sense::{
    CmdResult, Failure, asc, check, illegal, invalid_cdb_field, invalid_param_field, key,
    param_list_length_error,
};

/// Parameter list header length (the descriptor lists start after it).
const HEADER_LEN: usize = 16;
/// Every CSCD descriptor we accept is 32 bytes.
const CSCD_LEN: usize = 32;
/// CSCD descriptor type: identification descriptor.
const CSCD_IDENTIFICATION: u8 = 0xE4;
/// Segment descriptor type: block device to block device.
const SEG_BLOCK_TO_BLOCK: u8 = 0x02;
/// Length of a block→block segment descriptor, including its 4-byte header.
const SEG_B2B_LEN: usize = 28;

/// Advertised limits (RECEIVE COPY RESULTS / OPERATING PARAMETERS).
const MAX_CSCD_DESCRIPTORS: u16 = 2;
const MAX_SEGMENT_DESCRIPTORS: u16 = 8;
const MAX_DESCRIPTOR_LIST_LEN: u32 = 1024;
/// Bytes moved per backend read/write while copying a segment.
const COPY_CHUNK: u64 = 1 << 20;
/// Copy results kept for RECEIVE COPY RESULTS per LU (oldest dropped first).
const HELD_RESULTS: usize = 32;

/// Outcome of one finished EXTENDED COPY, as COPY STATUS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CopyResult {
    nexus: ItNexus,
    list_id: u8,
    ok: bool,
    segments_processed: u16,
    bytes_copied: u64,
}

/// Results held for RECEIVE COPY RESULTS (bounded).
#[derive(Default, Debug)]
pub(super) struct HeldCopyResults(VecDeque<CopyResult>);

impl HeldCopyResults {
    fn put(&mut self, r: CopyResult) {
        self.0
            .retain(|h| !(h.nexus == r.nexus && h.list_id == r.list_id));
        if self.0.len() >= HELD_RESULTS {
            self.0.pop_front();
        }
        self.0.push_back(r);
    }

    fn get(&self, nexus: &ItNexus, list_id: u8) -> Option<&CopyResult> {
        self.0
            .iter()
            .find(|h| &h.nexus == nexus && h.list_id == list_id)
    }
}

/// One block→block segment.
#[derive(Clone, Copy, Debug)]
struct Segment {
    src: u16,
    dst: u16,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

fn copy_aborted(code: asc::Code) -> Failure {
    check(key::COPY_ABORTED, code)
}

/// Whether a 32-byte identification CSCD descriptor names `lu` (by its NAA designator). The LU ID
/// TYPE and NUL fields are obsolete/ignored in SPC-4.
fn cscd_names_lu(lu: &LogicalUnit, d: &[u8], at: usize) -> Result<bool, Failure> {
    if d.get(1).is_some_and(|b| b & 0x1F != 0) {
        // Peripheral device type must be 00h (direct access block device).
        return Err(invalid_param_field((at + 1) as u16));
    }
    let code_set = d.get(4).copied().unwrap_or(0) & 0x0F;
    let desig_type = d.get(5).copied().unwrap_or(0) & 0x0F;
    let len = usize::from(d.get(7).copied().unwrap_or(0));
    let value = d.get(8..8 + len.min(20)).unwrap_or(&[]);
    let block_len = param_be32(d, 28).unwrap_or(0) & 0x00FF_FFFF;
    if block_len != lu.block_size {
        return Err(invalid_param_field((at + 29) as u16));
    }
    Ok(code_set == 0x01 && desig_type == 0x03 && value == naa_designator(&lu.identity))
}

/// EXTENDED COPY (LID1).
pub(super) async fn extended_copy(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    data: &Bytes,
) -> CmdResult {
    let plen = be32(c, 10) as usize;
    if plen == 0 {
        return Ok(Bytes::new());
    }
    let list = data.get(..plen).ok_or_else(param_list_length_error)?;
    if list.len() < HEADER_LEN {
        return Err(param_list_length_error());
    }
    let list_id = list[0];
    let list_id_usage = (list[1] >> 3) & 0x03;
    if list_id_usage == 0x01 || (list_id_usage == 0x03 && list_id != 0) {
        return Err(invalid_param_field(1));
    }
    let cscd_len = usize::from(param_be16(list, 2).ok_or_else(param_list_length_error)?);
    let seg_len = param_be32(list, 8).ok_or_else(param_list_length_error)? as usize;
    let inline_len = param_be32(list, 12).ok_or_else(param_list_length_error)? as usize;
    if cscd_len.saturating_add(seg_len) > MAX_DESCRIPTOR_LIST_LEN as usize {
        return Err(param_list_length_error());
    }
    if inline_len != 0 {
        return Err(invalid_param_field(12)); // MAXIMUM INLINE DATA LENGTH is 0
    }
    let body_end = HEADER_LEN + cscd_len + seg_len;
    if body_end > list.len() {
        return Err(param_list_length_error());
    }
    let cscds = parse_cscds(lu, &list[HEADER_LEN..HEADER_LEN + cscd_len])?;
    let segments = parse_segments(
        &list[HEADER_LEN + cscd_len..body_end],
        HEADER_LEN + cscd_len,
    )?;
    lu.check_writable()?;

    let mut result = CopyResult {
        nexus: nexus.clone(),
        list_id,
        ok: true,
        segments_processed: 0,
        bytes_copied: 0,
    };
    let outcome = run_segments(lu, &cscds, &segments, &mut result).await;
    result.ok = outcome.is_ok();
    if list_id_usage == 0x00 {
        lock(&lu.copy_results).put(result);
    }
    outcome.map(|()| Bytes::new())
}

/// Resolves the CSCD list: `true` per descriptor that names this LU.
fn parse_cscds(lu: &LogicalUnit, l: &[u8]) -> Result<Vec<bool>, Failure> {
    if !l.len().is_multiple_of(CSCD_LEN) {
        return Err(param_list_length_error());
    }
    let mut out = Vec::new();
    for (i, d) in l.chunks_exact(CSCD_LEN).enumerate() {
        let at = HEADER_LEN + i * CSCD_LEN;
        if d[0] != CSCD_IDENTIFICATION {
            return Err(illegal(asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE));
        }
        if out.len() >= usize::from(MAX_CSCD_DESCRIPTORS) {
            return Err(illegal(asc::TOO_MANY_TARGET_DESCRIPTORS));
        }
        out.push(cscd_names_lu(lu, d, at)?);
    }
    Ok(out)
}

fn parse_segments(l: &[u8], base: usize) -> Result<Vec<Segment>, Failure> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < l.len() {
        let d = &l[pos..];
        let (Some(&kind), Some(len)) = (d.first(), param_be16(d, 2)) else {
            return Err(param_list_length_error());
        };
        let total = usize::from(len) + 4;
        if kind != SEG_BLOCK_TO_BLOCK {
            return Err(illegal(asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE));
        }
        if total != SEG_B2B_LEN {
            return Err(invalid_param_field((base + pos + 2) as u16));
        }
        let d = d.get(..SEG_B2B_LEN).ok_or_else(param_list_length_error)?;
        if out.len() >= usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(illegal(asc::TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        let field = |r: Option<u64>| r.ok_or_else(param_list_length_error);
        out.push(Segment {
            src: param_be16(d, 4).ok_or_else(param_list_length_error)?,
            dst: param_be16(d, 6).ok_or_else(param_list_length_error)?,
            blocks: u64::from(param_be16(d, 10).ok_or_else(param_list_length_error)?),
            src_lba: field(param_be64(d, 12))?,
            dst_lba: field(param_be64(d, 20))?,
        });
        pos += SEG_B2B_LEN;
    }
    Ok(out)
}

async fn run_segments(
    lu: &LogicalUnit,
    cscds: &[bool],
    segments: &[Segment],
    result: &mut CopyResult,
) -> Result<(), Failure> {
    for s in segments {
        let reachable = |i: u16| cscds.get(usize::from(i)).copied().unwrap_or(false);
        if !reachable(s.src) || !reachable(s.dst) {
            return Err(copy_aborted(asc::UNREACHABLE_COPY_TARGET));
        }
        if lu.check_range(s.src_lba, s.blocks).is_err()
            || lu.check_range(s.dst_lba, s.blocks).is_err()
        {
            return Err(copy_aborted(asc::NO_ADDITIONAL));
        }
        copy_blocks(lu, s).await?;
        result.segments_processed = result.segments_processed.saturating_add(1);
        result.bytes_copied += s.blocks * u64::from(lu.block_size);
    }
    Ok(())
}

/// Copies one range within the LU in chunks; backwards when the destination overlaps the source
/// from above, so every block is read before it is overwritten.
async fn copy_blocks(lu: &LogicalUnit, s: &Segment) -> Result<(), Failure> {
    let bs = u64::from(lu.block_size);
    let total = s.blocks * bs;
    let src = lu.byte_offset(s.src_lba)?;
    let dst = lu.byte_offset(s.dst_lba)?;
    let backwards = dst > src && dst < src + total;
    let fua = !lu.identity.write_cache;
    let _gate = lu.write_gate.read().await;
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(COPY_CHUNK);
        let at = if backwards { total - done - n } else { done };
        let chunk = lu
            .backend
            .read(src + at, n as u32)
            .await
            .map_err(|e| lu.backend_failure(e, false))?;
        lu.backend
            .write(dst + at, chunk, fua)
            .await
            .map_err(|e| lu.backend_failure(e, true))?;
        done += n;
    }
    Ok(())
}

/// RECEIVE COPY RESULTS: COPY STATUS and OPERATING PARAMETERS.
pub(super) fn receive_copy_results(lu: &LogicalUnit, nexus: &ItNexus, c: &[u8; 16]) -> CmdResult {
    let alloc = be32(c, 10) as usize;
    let mut d = BytesMut::new();
    if u16::from(c[1] & 0x1F) == op::RCR_OPERATING_PARAMETERS {
        d.resize(44, 0);
        d[4] = 0x01; // SNLID: a copy without a held list identifier is fine
        d[8..10].copy_from_slice(&MAX_CSCD_DESCRIPTORS.to_be_bytes());
        d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
        d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_LEN.to_be_bytes());
        // The NUMBER OF BLOCKS field is 16 bits: that bounds a segment.
        let max_segment = u32::from(u16::MAX).saturating_mul(lu.block_size);
        d[16..20].copy_from_slice(&max_segment.to_be_bytes());
        // Inline data, held data and stream devices: none (bytes 20..32 stay zero).
        d[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
        d[36] = 1; // MAXIMUM CONCURRENT COPIES
        d[37] = lu.block_size.trailing_zeros() as u8; // DATA SEGMENT GRANULARITY (log2)
        d[43] = 2; // implemented descriptor type codes follow
        d.extend_from_slice(&[SEG_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION]);
    } else {
        let held = lock(&lu.copy_results);
        let r = held
            .get(nexus, c[2])
            .ok_or_else(|| invalid_cdb_field(2, None))?;
        d.resize(12, 0);
        d[4] = if r.ok { 0x01 } else { 0x02 }; // completed without / with errors
        d[5..7].copy_from_slice(&r.segments_processed.to_be_bytes());
        // TRANSFER COUNT in KiB (units code 01h) so large copies fit the 32-bit field.
        d[7] = 0x01;
        let kib = u32::try_from(r.bytes_copied >> 10).unwrap_or(u32::MAX);
        d[8..12].copy_from_slice(&kib.to_be_bytes());
    }
    let avail = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&avail.to_be_bytes());
    d.truncate(alloc);
    Ok(d.freeze())
}
