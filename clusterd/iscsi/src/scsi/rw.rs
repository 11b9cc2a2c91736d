//! Block commands (SBC-3): READ/WRITE, WRITE AND VERIFY, VERIFY, PRE-FETCH, SYNCHRONIZE CACHE,
//! WRITE SAME, UNMAP, COMPARE AND WRITE, GET LBA STATUS.
//!
//! Every LBA + length is range checked with checked arithmetic before it is turned into a byte
//! offset (tgt's GET LBA STATUS shifted first and wrapped). When the initiator's Expected Data Transfer
//! Length differs from the CDB's transfer length, see [`LogicalUnit::carried_blocks`].

use bytes::{Bytes, BytesMut};

use super::cdb::{BlockRange, be16, be32, be64, block_range, param_be16, param_be32, param_be64};
use super::inquiry::{MAX_CAW_BLOCKS, MAX_UNMAP_DESCRIPTORS};
use super::lu::LogicalUnit;
use super::opcodes::op;
use super::sense::{
    CmdResult, Failure, Sense, asc, invalid_cdb_field, invalid_opcode, invalid_param_field, key,
    param_list_length_error,
};

/// Byte span of LBA-status queries: bounds work per GET LBA STATUS (the initiator asks again from
/// where the answer ended).
const LBA_STATUS_SPAN: u64 = 64 << 20;
/// Buffer size used to expand a WRITE SAME pattern.
const WRITE_SAME_CHUNK: usize = 1 << 20;

fn is_6_byte(c: &[u8; 16]) -> bool {
    c[0] == op::READ_6 || c[0] == op::WRITE_6
}

/// RDPROTECT/WRPROTECT/VRPROTECT must be 0: the LU is not formatted with protection information.
fn check_protect(c: &[u8; 16]) -> Result<(), Failure> {
    if !is_6_byte(c) && c[1] & 0xE0 != 0 {
        return Err(invalid_cdb_field(1, Some(7)));
    }
    Ok(())
}

fn range(c: &[u8; 16]) -> Result<BlockRange, Failure> {
    block_range(c).ok_or_else(|| invalid_cdb_field(0, None))
}

fn fua_bit(c: &[u8; 16]) -> bool {
    !is_6_byte(c) && c[1] & 0x08 != 0
}

impl LogicalUnit {
    /// Validates a block range for a data transfer: size limit, then medium bounds.
    fn check_transfer(&self, r: BlockRange, length_field: u16) -> Result<(), Failure> {
        self.check_range(r.lba, u64::from(r.blocks))?;
        if r.blocks > self.max_transfer_blocks() {
            return Err(invalid_cdb_field(length_field, None));
        }
        Ok(())
    }

    fn len_bytes(&self, blocks: u32) -> Result<u32, Failure> {
        blocks
            .checked_mul(self.block_size)
            .ok_or_else(|| invalid_cdb_field(0, None))
    }

    /// Writes are durable on completion unless the LU runs with a write-back cache.
    fn effective_fua(&self, fua: bool) -> bool {
        fua || !self.identity.write_cache
    }

    async fn read_blocks(&self, lba: u64, blocks: u32) -> CmdResult {
        if blocks == 0 {
            return Ok(Bytes::new());
        }
        let offset = self.byte_offset(lba)?;
        let len = self.len_bytes(blocks)?;
        self.backend
            .read(offset, len)
            .await
            .map_err(|e| self.backend_failure(e, false))
    }

    /// How many blocks of a WRITE's range the command really carries (RFC 7143 §11.4.5.2, SAM-5 "data
    /// beyond the EDTL is neither requested nor transferred"). EDTL ≥ the CDB's length: all `r.blocks`
    /// (the surplus is ignored, the transport reports the underflow). EDTL shorter by whole blocks: the
    /// leading blocks that arrived (overflow residual; libiscsi's residual tests read them back). EDTL
    /// ending inside a block: that block cannot be written as a unit, so nothing is written and the
    /// command fails with INVALID FIELD IN COMMAND INFORMATION UNIT (FCP-4's option "transfer no data").
    fn carried_blocks(&self, r: BlockRange, data: &Bytes) -> Result<u32, Failure> {
        let bs = self.block_size as usize;
        let wanted = r.blocks as usize * bs;
        if data.len() >= wanted {
            return Ok(r.blocks);
        }
        if !data.len().is_multiple_of(bs) {
            return Err(Failure::Check(Sense::new(
                key::ILLEGAL_REQUEST,
                asc::INVALID_FIELD_IN_COMMAND_IU,
            )));
        }
        Ok((data.len() / bs) as u32)
    }

    /// Writes the whole blocks present in `data` (at most `blocks` of them).
    async fn write_blocks(
        &self,
        lba: u64,
        blocks: u32,
        data: &Bytes,
        fua: bool,
    ) -> Result<u32, Failure> {
        let bs = self.block_size as usize;
        let have = u32::try_from(data.len() / bs).unwrap_or(u32::MAX);
        let n = blocks.min(have);
        if n == 0 {
            return Ok(0);
        }
        let offset = self.byte_offset(lba)?;
        let payload = data.slice(..n as usize * bs);
        let _gate = self.write_gate.read().await;
        self.backend
            .write(offset, payload, self.effective_fua(fua))
            .await
            .map_err(|e| self.backend_failure(e, true))?;
        Ok(n)
    }
}

fn length_field(c: &[u8; 16]) -> u16 {
    match c[0] {
        op::READ_6 | op::WRITE_6 => 4,
        0x20..=0x5F => 7,
        0xA0..=0xBF => 6,
        _ => 10,
    }
}

pub(super) async fn read(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    lu.check_transfer(r, length_field(c))?;
    lu.read_blocks(r.lba, r.blocks).await
}

pub(super) async fn write(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    lu.check_transfer(r, length_field(c))?;
    lu.check_writable()?;
    let blocks = lu.carried_blocks(r, data)?;
    lu.write_blocks(r.lba, blocks, data, fua_bit(c)).await?;
    Ok(Bytes::new())
}

/// WRITE AND VERIFY: written durably; the verify step cannot fail against what we just wrote.
pub(super) async fn write_and_verify(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    lu.check_transfer(r, length_field(c))?;
    lu.check_writable()?;
    let blocks = lu.carried_blocks(r, data)?;
    lu.write_blocks(r.lba, blocks, data, true).await?;
    Ok(Bytes::new())
}

fn miscompare(offset: usize) -> Failure {
    Failure::Check(
        Sense::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY).with_information(offset as u64),
    )
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub(super) async fn verify(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    let bytchk = (c[1] >> 1) & 0x03;
    if bytchk == 0x02 {
        return Err(invalid_cdb_field(1, Some(2)));
    }
    lu.check_range(r.lba, u64::from(r.blocks))?;
    if bytchk == 0 || r.blocks == 0 {
        // Medium verification: the backend has no media defects to find.
        return Ok(Bytes::new());
    }
    lu.check_transfer(r, length_field(c))?;
    let medium = lu.read_blocks(r.lba, r.blocks).await?;
    let bs = lu.block_size as usize;
    if bytchk == 0x01 {
        let n = data.len().min(medium.len());
        if let Some(at) = first_difference(&medium[..n], &data[..n]) {
            return Err(miscompare(at));
        }
    } else {
        let pattern = data.get(..bs).ok_or_else(param_list_length_error)?;
        for (i, blk) in medium.chunks(bs).enumerate() {
            if let Some(at) = first_difference(blk, pattern) {
                return Err(miscompare(i * bs + at));
            }
        }
    }
    Ok(Bytes::new())
}

pub(super) fn pre_fetch(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let r = range(c)?;
    lu.check_range(r.lba, u64::from(r.blocks))?;
    Ok(Bytes::new())
}

pub(super) async fn synchronize_cache(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let (lba, blocks) = if c[0] == op::SYNCHRONIZE_CACHE_10 {
        (u64::from(be32(c, 2)), u64::from(be16(c, 7)))
    } else {
        (be64(c, 2), u64::from(be32(c, 10)))
    };
    lu.check_range(lba, blocks)?;
    lu.backend
        .flush()
        .await
        .map_err(|e| lu.backend_failure(e, true))?;
    Ok(Bytes::new())
}

pub(super) async fn write_same(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    if c[1] & 0x10 != 0 {
        return Err(invalid_cdb_field(1, Some(4))); // ANCHOR: ANC_SUP is 0
    }
    let ndob = c[1] & 0x01 != 0;
    if ndob && c[0] == op::WRITE_SAME_10 {
        return Err(invalid_cdb_field(1, Some(0)));
    }
    let unmap = c[1] & 0x08 != 0;
    if unmap && !lu.thin() {
        // A fully provisioned LU (LBPME=0, LBPWS/LBPWS10=0) cannot unmap: accepting the bit and writing
        // the pattern would tell the initiator that deallocation works while the VPD says it does not.
        return Err(invalid_cdb_field(1, Some(3)));
    }
    let r = range(c)?;
    lu.check_writable()?;
    lu.check_range(r.lba, u64::from(r.blocks))?;
    let capacity = lu.capacity_blocks();
    // WSNZ=0 (VPD 0xB0): zero blocks means every block from LBA to the end of the medium.
    let blocks = if r.blocks == 0 {
        if r.lba >= capacity {
            return Err(super::sense::lba_out_of_range());
        }
        capacity - r.lba
    } else {
        u64::from(r.blocks)
    };
    if blocks > lu.max_write_same_blocks() {
        return Err(invalid_cdb_field(length_field(c), None));
    }
    let bs = lu.block_size as usize;
    let pattern: Bytes = if ndob {
        Bytes::from(vec![0u8; bs])
    } else {
        data.slice(..bs.min(data.len()))
    };
    if pattern.len() < bs {
        return Err(param_list_length_error());
    }
    if !ndob && data.len() > bs {
        // Data-Out is exactly one block: more means the initiator and the CDB disagree about what is
        // being written, so nothing is written.
        return Err(invalid_cdb_field(length_field(c), None));
    }
    let offset = lu.byte_offset(r.lba)?;
    let total = blocks * bs as u64;
    let _gate = lu.write_gate.read().await;
    // UNMAP=1 on a thin LU deallocates whatever the pattern is (as LIO and tgt do): LBPRZ=1 then
    // defines the blocks to read back as zeroes, which is what initiators asking to unmap expect.
    if unmap && lu.thin() {
        return lu
            .backend
            .unmap(offset, total)
            .await
            .map(|()| Bytes::new())
            .map_err(|e| lu.backend_failure(e, true));
    }
    let per_chunk = (WRITE_SAME_CHUNK / bs).max(1);
    let chunk_blocks = per_chunk.min(usize::try_from(blocks).unwrap_or(usize::MAX));
    let mut buf = BytesMut::with_capacity(chunk_blocks * bs);
    for _ in 0..chunk_blocks {
        buf.extend_from_slice(&pattern);
    }
    let buf = buf.freeze();
    let mut done = 0u64;
    let fua = lu.effective_fua(fua_bit(c));
    while done < total {
        let n = (total - done).min(buf.len() as u64) as usize;
        lu.backend
            .write(offset + done, buf.slice(..n), fua)
            .await
            .map_err(|e| lu.backend_failure(e, true))?;
        done += n as u64;
    }
    Ok(Bytes::new())
}

pub(super) async fn unmap(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    if !lu.thin() {
        // LBPU=0 on a fully provisioned LU: the command is not supported there (as LIO answers), so an
        // initiator probing with UNMAP learns the same as from the Logical Block Provisioning VPD page.
        return Err(invalid_opcode());
    }
    if c[1] & 0x01 != 0 {
        return Err(invalid_cdb_field(1, Some(0))); // ANCHOR
    }
    let plen = usize::from(be16(c, 7));
    if plen == 0 {
        return Ok(Bytes::new());
    }
    if plen < 8 {
        return Err(param_list_length_error());
    }
    let list = data.get(..plen).ok_or_else(param_list_length_error)?;
    let bd_len = usize::from(param_be16(list, 2).ok_or_else(param_list_length_error)?);
    let bd_len = bd_len.min(plen - 8) & !0x0F;
    let count = bd_len / 16;
    if count > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(invalid_param_field(2));
    }
    lu.check_writable()?;
    let mut extents = Vec::with_capacity(count);
    let mut total = 0u64;
    for i in 0..count {
        let at = 8 + i * 16;
        let lba = param_be64(list, at).ok_or_else(param_list_length_error)?;
        let blocks = param_be32(list, at + 8).ok_or_else(param_list_length_error)?;
        lu.check_range(lba, u64::from(blocks))?;
        total = total.saturating_add(u64::from(blocks));
        if total > u64::from(lu.max_unmap_blocks()) {
            return Err(invalid_param_field((at + 8) as u16));
        }
        if blocks > 0 {
            extents.push((lba, blocks));
        }
    }
    let bs = u64::from(lu.block_size);
    let _gate = lu.write_gate.read().await;
    for (lba, blocks) in extents {
        lu.backend
            .unmap(lu.byte_offset(lba)?, u64::from(blocks) * bs)
            .await
            .map_err(|e| lu.backend_failure(e, true))?;
    }
    Ok(Bytes::new())
}

pub(super) async fn compare_and_write(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    lu.check_writable()?;
    if r.blocks > MAX_CAW_BLOCKS {
        return Err(invalid_cdb_field(13, None));
    }
    lu.check_range(r.lba, u64::from(r.blocks))?;
    let len = lu.len_bytes(r.blocks)? as usize;
    // The Data-Out buffer must be exactly the verify half plus the write half. Extra data means the
    // CDB and the transfer disagree (e.g. a block count that wrapped in the one-byte field), and
    // acting on only part of it would compare or write the wrong blocks.
    if data.len() > 2 * len {
        return Err(invalid_cdb_field(13, None));
    }
    if r.blocks == 0 {
        return Ok(Bytes::new());
    }
    if data.len() < 2 * len {
        return Err(param_list_length_error());
    }
    let (verify_data, write_data) = (data.slice(..len), data.slice(len..2 * len));
    let offset = lu.byte_offset(r.lba)?;
    // Exclusive gate: no other write can land between our read and our write.
    let _gate = lu.write_gate.write().await;
    let current = lu
        .backend
        .read(offset, len as u32)
        .await
        .map_err(|e| lu.backend_failure(e, false))?;
    if let Some(at) = first_difference(&current, &verify_data) {
        return Err(miscompare(at));
    }
    lu.backend
        .write(offset, write_data, lu.effective_fua(fua_bit(c)))
        .await
        .map_err(|e| lu.backend_failure(e, true))?;
    Ok(Bytes::new())
}

/// ORWRITE(16): each written block becomes the bitwise OR of the Data-Out and the medium. The
/// read-modify-write runs under the exclusive write gate, so no other write can land in between.
pub(super) async fn or_write(lu: &LogicalUnit, c: &[u8; 16], data: &Bytes) -> CmdResult {
    check_protect(c)?;
    let r = range(c)?;
    lu.check_transfer(r, length_field(c))?;
    lu.check_writable()?;
    let bs = lu.block_size as usize;
    let have = u32::try_from(data.len() / bs).unwrap_or(u32::MAX);
    let n = r.blocks.min(have);
    if n == 0 {
        return Ok(Bytes::new());
    }
    let offset = lu.byte_offset(r.lba)?;
    let len = lu.len_bytes(n)?;
    let _gate = lu.write_gate.write().await;
    let current = lu
        .backend
        .read(offset, len)
        .await
        .map_err(|e| lu.backend_failure(e, false))?;
    let mut merged = BytesMut::from(&current[..]);
    for (m, d) in merged.iter_mut().zip(data.iter()) {
        *m |= *d;
    }
    lu.backend
        .write(offset, merged.freeze(), lu.effective_fua(fua_bit(c)))
        .await
        .map_err(|e| lu.backend_failure(e, true))?;
    Ok(Bytes::new())
}

/// READ DEFECT DATA(10)/(12): a virtual medium has no primary or grown defects, so both lists are
/// valid and empty in whichever address format the initiator asks for.
pub(super) fn read_defect_data(c: &[u8; 16]) -> CmdResult {
    let (flags, alloc) = if c[0] == op::READ_DEFECT_DATA_10 {
        (c[2], usize::from(be16(c, 7)))
    } else {
        (c[1], be32(c, 6) as usize)
    };
    let format = flags & 0x07;
    // 000b short block, 011b long block, 100b bytes from index, 101b physical sector, 110b vendor
    // specific; 001b/010b/111b are reserved.
    if matches!(format, 1 | 2 | 7) {
        let byte = if c[0] == op::READ_DEFECT_DATA_10 {
            2
        } else {
            1
        };
        return Err(invalid_cdb_field(byte, Some(0)));
    }
    let valid = flags & 0x18; // PLISTV / GLISTV mirror REQ_PLIST / REQ_GLIST
    let mut d = if c[0] == op::READ_DEFECT_DATA_10 {
        vec![0, valid | format, 0, 0]
    } else {
        vec![0, valid | format, 0, 0, 0, 0, 0, 0]
    };
    d.truncate(alloc);
    Ok(Bytes::from(d))
}

pub(super) async fn get_lba_status(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let lba = be64(c, 2);
    let alloc = be32(c, 10) as usize;
    let capacity = lu.capacity_blocks();
    // Compare in blocks before any multiplication: LBA 2^63 or 2^64-1 must not wrap.
    if lba >= capacity {
        return Err(super::sense::lba_out_of_range());
    }
    let bs = u64::from(lu.block_size);
    let span_blocks = (capacity - lba).min(LBA_STATUS_SPAN / bs);
    let mut descriptors: Vec<(u64, u64, bool)> = Vec::new();
    if lu.thin() {
        let offset = lu.byte_offset(lba)?;
        let extents = lu
            .backend
            .lba_status(offset, span_blocks * bs)
            .await
            .map_err(|e| lu.backend_failure(e, false))?;
        let mut next = lba;
        for (o, l, mapped) in extents {
            let end_byte = o.saturating_add(l);
            // A partially mapped block counts as mapped.
            let end = if mapped {
                end_byte.div_ceil(bs)
            } else {
                end_byte / bs
            };
            if end <= next {
                continue;
            }
            match descriptors.last_mut() {
                Some(last) if last.2 == mapped => last.1 += end - next,
                _ => descriptors.push((next, end - next, mapped)),
            }
            next = end;
        }
    } else {
        descriptors.push((lba, span_blocks, true));
    }
    let mut d = Vec::with_capacity(8 + descriptors.len() * 16);
    d.extend_from_slice(&[0u8; 8]);
    for (start, blocks, mapped) in descriptors {
        // NUMBER OF LOGICAL BLOCKS is 32 bits; the span limit keeps us well below that.
        let blocks = u32::try_from(blocks).unwrap_or(u32::MAX);
        d.extend_from_slice(&start.to_be_bytes());
        d.extend_from_slice(&blocks.to_be_bytes());
        d.push(if mapped { 0 } else { 1 });
        d.extend_from_slice(&[0, 0, 0]);
    }
    let param_len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&param_len.to_be_bytes());
    d.truncate(alloc);
    Ok(Bytes::from(d))
}
