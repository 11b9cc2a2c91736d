//! MODE SENSE / MODE SELECT (6 and 10) with pages 0x01, 0x08, 0x0A and 0x1C.
//!
//! Only SWP (software write protect) in the control page is changeable. WCE reflects the configured
//! durability semantics and is deliberately not changeable from the initiator: the cluster, not the
//! initiator, decides whether an acknowledged write is durable. Saved pages are not supported.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::ItNexus;
use super::cdb::{be16, param_be16};
use super::lu::LogicalUnit;
use super::opcodes::op;
use super::sense::{
    CmdResult, asc, illegal, invalid_cdb_field, invalid_param_field, param_list_length_error,
};

const PAGE_RW_ERROR_RECOVERY: u8 = 0x01;
const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0A;
const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
const ALL_PAGES: u8 = 0x3F;
const PAGES: [u8; 4] = [
    PAGE_RW_ERROR_RECOVERY,
    PAGE_CACHING,
    PAGE_CONTROL,
    PAGE_INFORMATIONAL_EXCEPTIONS,
];

/// Control page byte 4, SWP bit.
const SWP_BIT: u8 = 0x08;

#[derive(Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

fn page(lu: &LogicalUnit, code: u8, pc: PageControl) -> Vec<u8> {
    let changeable = pc == PageControl::Changeable;
    match code {
        PAGE_RW_ERROR_RECOVERY => {
            let mut p = vec![0u8; 12];
            p[0] = code;
            p[1] = 0x0A;
            p
        }
        PAGE_CACHING => {
            let mut p = vec![0u8; 20];
            p[0] = code;
            p[1] = 0x12;
            if !changeable {
                p[2] = if lu.identity.write_cache { 0x04 } else { 0 };
                p[4..6].copy_from_slice(&[0xFF, 0xFF]); // disable prefetch transfer length
                p[8..12].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]); // max prefetch / ceiling
            }
            p
        }
        PAGE_CONTROL => {
            let mut p = vec![0u8; 12];
            p[0] = code;
            p[1] = 0x0A;
            match pc {
                PageControl::Changeable => p[4] = SWP_BIT,
                PageControl::Current | PageControl::Default => {
                    p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
                    if pc == PageControl::Current && lu.swp.load(Ordering::Acquire) {
                        p[4] = SWP_BIT;
                    }
                    p[8..10].copy_from_slice(&[0xFF, 0xFF]); // busy timeout: unlimited
                }
            }
            p
        }
        PAGE_INFORMATIONAL_EXCEPTIONS => {
            let mut p = vec![0u8; 12];
            p[0] = code;
            p[1] = 0x0A;
            if !changeable {
                p[2] = 0x08; // DEXCPT: no informational exception reporting
            }
            p
        }
        _ => Vec::new(),
    }
}

fn changeable_mask(lu: &LogicalUnit, code: u8) -> Vec<u8> {
    page(lu, code, PageControl::Changeable)
}

pub(super) fn mode_sense(lu: &LogicalUnit, c: &[u8; 16]) -> CmdResult {
    let ten = c[0] == op::MODE_SENSE_10;
    let dbd = c[1] & 0x08 != 0;
    let llbaa = ten && c[1] & 0x10 != 0;
    let pc = match c[2] >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => return Err(illegal(asc::SAVING_PARAMETERS_NOT_SUPPORTED)),
    };
    let code = c[2] & 0x3F;
    let subpage = c[3];
    let alloc = if ten {
        usize::from(be16(c, 7))
    } else {
        usize::from(c[4])
    };

    let mut pages = Vec::new();
    match (code, subpage) {
        (ALL_PAGES, 0x00 | 0xFF) => {
            for p in PAGES {
                pages.extend_from_slice(&page(lu, p, pc));
            }
        }
        (p, 0x00) if PAGES.contains(&p) => pages = page(lu, p, pc),
        (p, _) if PAGES.contains(&p) || p == ALL_PAGES => return Err(invalid_cdb_field(3, None)),
        _ => return Err(invalid_cdb_field(2, Some(5))),
    }

    let mut bd = Vec::new();
    if !dbd {
        let blocks = if pc == PageControl::Changeable {
            0
        } else {
            lu.capacity_blocks()
        };
        let bs = if pc == PageControl::Changeable {
            0
        } else {
            lu.block_size
        };
        if llbaa {
            bd.extend_from_slice(&blocks.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&bs.to_be_bytes());
        } else {
            bd.extend_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&bs.to_be_bytes()[1..]);
        }
    }
    // DPOFUA: we honour FUA; WP mirrors SWP.
    let device_specific = 0x10
        | if lu.swp.load(Ordering::Acquire) {
            0x80
        } else {
            0
        };
    let mut d = Vec::with_capacity(8 + bd.len() + pages.len());
    if ten {
        let total = 8 + bd.len() + pages.len();
        d.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        d.push(0);
        d.push(device_specific);
        d.push(if llbaa && !bd.is_empty() { 0x01 } else { 0 });
        d.push(0);
        d.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    } else {
        let total = 4 + bd.len() + pages.len();
        d.push((total - 1) as u8);
        d.push(0);
        d.push(device_specific);
        d.push(bd.len() as u8);
    }
    d.extend_from_slice(&bd);
    d.extend_from_slice(&pages);
    d.truncate(alloc);
    Ok(Bytes::from(d))
}

pub(super) fn mode_select(
    lu: &LogicalUnit,
    nexus: &ItNexus,
    c: &[u8; 16],
    data: &[u8],
) -> CmdResult {
    let ten = c[0] == op::MODE_SELECT_10;
    if c[1] & 0x01 != 0 {
        return Err(invalid_cdb_field(1, Some(0))); // SP: saving pages is not supported
    }
    let plen = if ten {
        usize::from(be16(c, 7))
    } else {
        usize::from(c[4])
    };
    if plen == 0 {
        return Ok(Bytes::new());
    }
    let list = data.get(..plen).ok_or_else(param_list_length_error)?;
    let (hdr_len, bd_len, long_lba) = if ten {
        let bd = param_be16(list, 6).ok_or_else(param_list_length_error)?;
        (
            8usize,
            usize::from(bd),
            list.get(4).is_some_and(|b| b & 0x01 != 0),
        )
    } else {
        let bd = *list.get(3).ok_or_else(param_list_length_error)?;
        (4usize, usize::from(bd), false)
    };
    let desc_len = if long_lba { 16 } else { 8 };
    if bd_len % desc_len != 0 {
        return Err(invalid_param_field(if ten { 6 } else { 3 }));
    }
    let pages_at = hdr_len + bd_len;
    let bds = list
        .get(hdr_len..pages_at)
        .ok_or_else(param_list_length_error)?;
    for (i, d) in bds.chunks(desc_len).enumerate() {
        let bl_at = if long_lba { 12 } else { 4 };
        let bs = d
            .get(bl_at..desc_len)
            .map(|b| b.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)));
        // Only the 3-byte (short) or 4-byte (long) block length matters; it must match ours.
        let bs = bs.map(|v| if long_lba { v } else { v & 0x00FF_FFFF });
        if bs != Some(lu.block_size) && bs != Some(0) {
            return Err(invalid_param_field((hdr_len + i * desc_len + bl_at) as u16));
        }
    }

    // Validate every page before applying any, so a bad list changes nothing.
    let mut new_swp = None;
    let mut pos = pages_at;
    while pos < list.len() {
        let b0 = *list.get(pos).ok_or_else(param_list_length_error)?;
        let code = b0 & 0x3F;
        if b0 & 0xC0 != 0 || !PAGES.contains(&code) {
            // PS must be zero in MODE SELECT; subpage formats and unknown pages are not supported.
            return Err(invalid_param_field(pos as u16));
        }
        let len = usize::from(*list.get(pos + 1).ok_or_else(param_list_length_error)?);
        let current = page(lu, code, PageControl::Current);
        if len + 2 != current.len() {
            return Err(invalid_param_field((pos + 1) as u16));
        }
        let new = list
            .get(pos..pos + 2 + len)
            .ok_or_else(param_list_length_error)?;
        let mask = changeable_mask(lu, code);
        for i in 2..new.len() {
            let (n, cur, m) = (new[i], current[i], mask.get(i).copied().unwrap_or(0));
            if (n ^ cur) & !m != 0 {
                return Err(invalid_param_field((pos + i) as u16));
            }
        }
        if code == PAGE_CONTROL {
            new_swp = Some(new[4] & SWP_BIT != 0);
        }
        pos += 2 + len;
    }
    if let Some(swp) = new_swp
        && lu.swp.swap(swp, Ordering::AcqRel) != swp
    {
        lu.ua.add_all(Some(nexus), asc::MODE_PARAMETERS_CHANGED);
    }
    Ok(Bytes::new())
}
