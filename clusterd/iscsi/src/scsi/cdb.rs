//! CDB field decoding. The CDB arrives as a zero-padded 16-byte array, so constant indexes below 16
//! can never panic; everything variable goes through `get`.

use super::opcodes::op;

pub fn be16(cdb: &[u8; 16], at: usize) -> u16 {
    u16::from_be_bytes([byte(cdb, at), byte(cdb, at + 1)])
}

pub fn be24(cdb: &[u8; 16], at: usize) -> u32 {
    u32::from_be_bytes([0, byte(cdb, at), byte(cdb, at + 1), byte(cdb, at + 2)])
}

pub fn be32(cdb: &[u8; 16], at: usize) -> u32 {
    u32::from_be_bytes([
        byte(cdb, at),
        byte(cdb, at + 1),
        byte(cdb, at + 2),
        byte(cdb, at + 3),
    ])
}

pub fn be64(cdb: &[u8; 16], at: usize) -> u64 {
    (u64::from(be32(cdb, at)) << 32) | u64::from(be32(cdb, at + 4))
}

/// Byte `at` or 0 past the end (callers only use constant offsets below 16).
pub fn byte(cdb: &[u8; 16], at: usize) -> u8 {
    cdb.get(at).copied().unwrap_or(0)
}

/// Big-endian reads from a parameter list (untrusted length): None if too short.
pub fn param_be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

pub fn param_be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn param_be64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

/// LBA and length of a block-addressed command, as written in the CDB (not yet range checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub lba: u64,
    pub blocks: u32,
}

/// Decodes the LBA/transfer-length fields of the READ/WRITE/VERIFY/WRITE SAME/PRE-FETCH/CAW families.
pub fn block_range(cdb: &[u8; 16]) -> Option<BlockRange> {
    let opcode = cdb[0];
    let r = match opcode {
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(be24(cdb, 1) & 0x1F_FFFF);
            // SBC-3: a TRANSFER LENGTH of 0 means 256 blocks for the 6-byte commands.
            let blocks = if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) };
            BlockRange { lba, blocks }
        }
        op::READ_10
        | op::WRITE_10
        | op::WRITE_VERIFY_10
        | op::VERIFY_10
        | op::WRITE_SAME_10
        | op::PRE_FETCH_10 => BlockRange {
            lba: u64::from(be32(cdb, 2)),
            blocks: u32::from(be16(cdb, 7)),
        },
        op::READ_12 | op::WRITE_12 | op::WRITE_VERIFY_12 | op::VERIFY_12 => BlockRange {
            lba: u64::from(be32(cdb, 2)),
            blocks: be32(cdb, 6),
        },
        op::READ_16
        | op::WRITE_16
        | op::WRITE_VERIFY_16
        | op::VERIFY_16
        | op::WRITE_SAME_16
        | op::PRE_FETCH_16
        | op::ORWRITE_16 => BlockRange {
            lba: be64(cdb, 2),
            blocks: be32(cdb, 10),
        },
        op::COMPARE_AND_WRITE => BlockRange {
            lba: be64(cdb, 2),
            blocks: u32::from(cdb[13]),
        },
        _ => return None,
    };
    Some(r)
}

/// Bytes of Data-Out a CDB implies, for commands whose length does not depend on the block size
/// (parameter lists). Block-addressed writes return None: use [`data_out_len_with_block_size`].
pub fn data_out_len(cdb: &[u8]) -> Option<u32> {
    let mut c = [0u8; 16];
    let n = cdb.len().min(16);
    c.get_mut(..n)?.copy_from_slice(cdb.get(..n)?);
    param_list_len(&c)
}

fn param_list_len(c: &[u8; 16]) -> Option<u32> {
    match c[0] {
        op::MODE_SELECT_6 => Some(u32::from(c[4])),
        op::MODE_SELECT_10 | op::UNMAP => Some(u32::from(be16(c, 7))),
        op::PERSISTENT_RESERVE_OUT => Some(be32(c, 5)),
        op::EXTENDED_COPY => Some(be32(c, 10)),
        _ => None,
    }
}

/// Bytes of Data-Out a CDB implies for a LU with `block_size`-byte blocks; None if the CDB carries no
/// Data-Out (or the length overflows u32).
pub fn data_out_len_with_block_size(cdb: &[u8], block_size: u32) -> Option<u32> {
    let mut c = [0u8; 16];
    let n = cdb.len().min(16);
    c.get_mut(..n)?.copy_from_slice(cdb.get(..n)?);
    if let Some(len) = param_list_len(&c) {
        return Some(len);
    }
    let r = block_range(&c)?;
    match c[0] {
        op::WRITE_6
        | op::WRITE_10
        | op::WRITE_12
        | op::WRITE_16
        | op::WRITE_VERIFY_10
        | op::WRITE_VERIFY_12
        | op::WRITE_VERIFY_16
        | op::ORWRITE_16 => r.blocks.checked_mul(block_size),
        op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => {
            // BYTCHK 01b sends the blocks, 11b sends one block; 00b sends nothing.
            match (c[1] >> 1) & 0x03 {
                0x01 => r.blocks.checked_mul(block_size),
                0x03 => Some(block_size),
                _ => None,
            }
        }
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
            if c[1] & 0x01 != 0 {
                None
            } else {
                Some(block_size)
            } // NDOB: no data-out buffer
        }
        op::COMPARE_AND_WRITE => r.blocks.checked_mul(block_size)?.checked_mul(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdb(bytes: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    #[test]
    fn decodes_rw_fields() {
        let r = block_range(&cdb(&[0x08, 0x1F, 0xFF, 0xFF, 0])).unwrap();
        assert_eq!(
            r,
            BlockRange {
                lba: 0x1F_FFFF,
                blocks: 256
            }
        );
        let r = block_range(&cdb(&[0x28, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x01, 0x02])).unwrap();
        assert_eq!(
            r,
            BlockRange {
                lba: 0xFFFF_FFFF,
                blocks: 0x0102
            }
        );
        let r = block_range(&cdb(&[0xA8, 0, 0, 0, 0, 9, 0, 0, 1, 0])).unwrap();
        assert_eq!(
            r,
            BlockRange {
                lba: 9,
                blocks: 256
            }
        );
        let r = block_range(&cdb(&[0x88, 0, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2])).unwrap();
        assert_eq!(
            r,
            BlockRange {
                lba: 0x8000_0000_0000_0001,
                blocks: 2
            }
        );
        let r = block_range(&cdb(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 3])).unwrap();
        assert_eq!(r, BlockRange { lba: 5, blocks: 3 });
        assert_eq!(block_range(&cdb(&[0x00])), None);
    }

    #[test]
    fn data_out_lengths() {
        assert_eq!(
            data_out_len(&[0x55, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0]),
            Some(256)
        );
        assert_eq!(data_out_len(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0]), None);
        assert_eq!(
            data_out_len_with_block_size(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0], 512),
            Some(4096)
        );
        assert_eq!(
            data_out_len_with_block_size(&cdb(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]), 512),
            Some(2048)
        );
        assert_eq!(
            data_out_len_with_block_size(&[0x41, 1, 0, 0, 0, 0, 0, 0, 8, 0], 512),
            None
        );
        assert_eq!(
            data_out_len_with_block_size(
                &cdb(&[0xAA, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]),
                4096
            ),
            None
        );
        assert_eq!(
            data_out_len_with_block_size(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 512),
            None
        );
        assert_eq!(data_out_len(&[]), None);
        assert_eq!(
            data_out_len_with_block_size(&cdb16_len(op::ORWRITE_16, 3), 512),
            Some(1536)
        );
    }

    fn cdb16_len(opcode: u8, blocks: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = opcode;
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }
}
