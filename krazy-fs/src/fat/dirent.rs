//! Directory entries as the reader sees them: [`DirEntry`], and the
//! parser of raw directory bytes (long names checked against their short
//! name, free, deleted, `.`, `..` and label entries skipped).

use super::names::{lfn_checksum, LFN_OFFSETS};

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The long name when there is a valid one, else the 8.3 name (`NAME.EXT`).
    pub name: String,
    /// The 8.3 name as `NAME.EXT`.
    pub short_name: String,
    /// Attribute bits (0x10 directory, 0x20 archive, 0x01 read-only, ...).
    pub attributes: u8,
    /// First cluster (0 for empty files).
    pub first_cluster: u32,
    /// Size in bytes (0 for directories).
    pub size: u32,
    /// Last-modified DOS date.
    pub date: u16,
    /// Last-modified DOS time.
    pub time: u16,
}

impl DirEntry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.attributes & 0x10 != 0
    }
}

pub(super) fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

pub(super) fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Parses directory entries: long names (checked against their short
/// name's checksum and sequence) and short names; skips free, deleted, `.`,
/// `..` and label entries; stops at the end marker.
pub(super) fn parse_dir(raw: &[u8], fat32: bool) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut lfn: Vec<u16> = Vec::new();
    let mut expect: u8 = 0;
    let mut sum: u8 = 0;
    let mut valid = false;
    for e in raw.chunks_exact(32) {
        let first = e[0];
        if first == 0 {
            break;
        }
        if first == 0xe5 {
            valid = false;
            continue;
        }
        let attr = e[11];
        if attr & 0x3f == 0x0f {
            let ord = first & 0x1f;
            if first & 0x40 != 0 {
                valid = (1..=20).contains(&ord);
                lfn = vec![0xffff; usize::from(ord) * 13];
                sum = e[13];
                expect = ord;
            } else if !valid || ord != expect || e[13] != sum {
                valid = false;
                continue;
            }
            if valid {
                let base = (usize::from(ord) - 1) * 13;
                for (i, &off) in LFN_OFFSETS.iter().enumerate() {
                    if let Some(slot) = lfn.get_mut(base + i) {
                        *slot = le16(e, off);
                    }
                }
                expect = ord - 1;
            }
            continue;
        }
        let had_lfn = valid && expect == 0;
        valid = false;
        if attr & 0x08 != 0 {
            continue;
        }
        let mut short = [0u8; 11];
        short.copy_from_slice(&e[..11]);
        if short[0] == b'.' {
            continue;
        }
        let short_name = short_display(&short, e[12]);
        let name = if had_lfn && lfn_checksum(&short) == sum {
            let end = lfn.iter().position(|&u| u == 0).unwrap_or(lfn.len());
            String::from_utf16_lossy(&lfn[..end])
        } else {
            short_name.clone()
        };
        let hi = if fat32 {
            u32::from(le16(e, 20)) << 16
        } else {
            0
        };
        out.push(DirEntry {
            name,
            short_name,
            attributes: attr,
            first_cluster: hi | u32::from(le16(e, 26)),
            size: le32(e, 28),
            date: le16(e, 24),
            time: le16(e, 22),
        });
    }
    out
}

/// `NAME.EXT` from an 11-byte short name, honouring the lowercase flags
/// (0x08 base, 0x10 extension) that Linux and Windows NT set.
fn short_display(short: &[u8; 11], case: u8) -> String {
    let conv = |b: &[u8], lower: bool, is_base: bool| -> String {
        let mut s = String::new();
        for (i, &c) in b.iter().enumerate() {
            let c = if is_base && i == 0 && c == 0x05 {
                0xe5
            } else {
                c
            };
            let ch = char::from(c);
            s.push(if lower { ch.to_ascii_lowercase() } else { ch });
        }
        s.trim_end_matches(' ').to_string()
    };
    let base = conv(&short[..8], case & 0x08 != 0, true);
    let ext = conv(&short[8..], case & 0x10 != 0, false);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}
