//! 8.3 short names and VFAT long-name entries.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::{HashMap, HashSet};

/// Whether `b` may appear in a short name we write (uppercase ASCII only).
pub(crate) fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b)
}

/// The 11-byte short name of `name` when it is already a valid uppercase
/// 8.3 name (then no long-name entries are needed).
pub(crate) fn exact_short(name: &str) -> Option<[u8; 11]> {
    let b = name.as_bytes();
    let (base, ext) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 {
        return None;
    }
    if b.contains(&b'.') && ext.is_empty() {
        return None;
    }
    if !base.iter().chain(ext).all(|&c| short_char_ok(c)) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    Some(out)
}

/// The basis of a generated short name: uppercase, invalid characters as
/// `_`, spaces and extra dots dropped; `lossless` when nothing was changed
/// but case and the result fits 8.3.
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let trimmed = name.trim_start_matches('.');
    let mut lossless = trimmed.len() == name.len();
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut conv = |s: &str, max: usize| {
        let mut out = Vec::new();
        for c in s.chars() {
            let u = c.to_ascii_uppercase();
            let b = if u.is_ascii() && short_char_ok(u as u8) {
                u as u8
            } else if c == ' ' || c == '.' {
                lossless = false;
                continue;
            } else {
                lossless = false;
                b'_'
            };
            if out.len() == max {
                lossless = false;
                break;
            }
            out.push(b);
        }
        out
    };
    let mut b = conv(base, 8);
    let e = conv(ext, 3);
    if b.is_empty() {
        lossless = false;
        b.push(b'_');
    }
    (b, e, lossless)
}

/// Hands out unique short names within one directory, deterministically.
#[derive(Default)]
pub(crate) struct ShortNames {
    used: HashSet<[u8; 11]>,
    next_tail: HashMap<[u8; 11], u32>,
}

impl ShortNames {
    /// Reserves a name that is stored as itself.
    pub(crate) fn reserve(&mut self, short: [u8; 11]) {
        self.used.insert(short);
    }

    /// A fresh short name for a long name (`None` when all tails are taken).
    pub(crate) fn generate(&mut self, name: &str) -> Option<[u8; 11]> {
        let (base, ext, lossless) = basis(name);
        let mut out = [b' '; 11];
        out[8..8 + ext.len()].copy_from_slice(&ext);
        if lossless {
            out[..base.len()].copy_from_slice(&base);
            if self.used.insert(out) {
                return Some(out);
            }
        }
        // Tails cut the basis to at most 6 characters, so names that share
        // those share one counter (and never rescan the taken tails).
        let mut key = [b' '; 11];
        let k = base.len().min(6);
        key[..k].copy_from_slice(&base[..k]);
        key[8..].copy_from_slice(&out[8..]);
        let n = self.next_tail.entry(key).or_insert(1);
        while *n <= 999_999 {
            let tail = format!("~{n}");
            *n += 1;
            let keep = base.len().min(8 - tail.len());
            let mut cand = out;
            cand[..8].fill(b' ');
            cand[..keep].copy_from_slice(&base[..keep]);
            cand[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
            if self.used.insert(cand) {
                return Some(cand);
            }
        }
        None
    }
}

/// The checksum of a short name that every long-name entry carries.
pub(crate) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |s, &b| (s >> 1).wrapping_add(s << 7).wrapping_add(b))
}

/// Number of long-name entries for `units` UTF-16 code units.
pub(crate) fn lfn_entries(units: usize) -> usize {
    units.div_ceil(13)
}

/// Byte offsets of the 13 name characters inside a long-name entry.
pub(crate) const LFN_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// Appends the long-name entries of `units` (last part first, as on disk).
pub(crate) fn push_lfn(out: &mut Vec<u8>, units: &[u16], checksum: u8) {
    let n = lfn_entries(units.len());
    for seq in (1..=n).rev() {
        let mut e = [0u8; 32];
        e[0] = seq as u8 | if seq == n { 0x40 } else { 0 };
        e[11] = 0x0f;
        e[13] = checksum;
        for (i, &off) in LFN_OFFSETS.iter().enumerate() {
            let k = (seq - 1) * 13 + i;
            let u = match k.cmp(&units.len()) {
                std::cmp::Ordering::Less => units[k],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xffff,
            };
            e[off..off + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(names: &[&str]) -> Vec<String> {
        let mut s = ShortNames::default();
        for n in names {
            if let Some(x) = exact_short(n) {
                s.reserve(x);
            }
        }
        names
            .iter()
            .map(|n| {
                let b = exact_short(n).or_else(|| s.generate(n)).unwrap();
                String::from_utf8(b.to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn short_names() {
        assert_eq!(
            gen(&[
                "BOOTX64.EFI",
                "vmlinuz",
                "loader.conf",
                "loader.confs",
                "A_B~1",
                "a+b",
                ".hidden",
                "日本語.txt",
                "x.tar.gz"
            ]),
            [
                "BOOTX64 EFI",
                "VMLINUZ    ",
                "LOADER~1CON",
                "LOADER~2CON",
                "A_B~1      ",
                "A_B~2      ",
                "HIDDEN~1   ",
                "___~1   TXT",
                "XTAR~1  GZ "
            ]
        );
        let many: Vec<String> = (0..20000).map(|i| format!("file-{i:05}.txt")).collect();
        let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        let out = gen(&refs);
        assert_eq!(out[0], "FILE-0~1TXT");
        assert_eq!(out[10000], "FILE-1~1TXT");
        assert!(out.iter().all(|n| n.contains('~') && n.ends_with("TXT")));
        assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
    }

    #[test]
    fn checksum_matches_known_value() {
        // The sum over "FILE-~1 TXT" computed by hand with the spec's rotate-right-add.
        let mut s = 0u8;
        for &b in b"FILE-~1 TXT" {
            s = (if s & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(s >> 1)
                .wrapping_add(b);
        }
        assert_eq!(lfn_checksum(b"FILE-~1 TXT"), s);
    }
}
