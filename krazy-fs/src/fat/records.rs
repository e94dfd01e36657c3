//! The fixed records of a volume: boot sector and its stub, FSInfo, the
//! FAT itself, short directory entries, label and OEM name.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::geometry::Geometry;
use super::names::short_char_ok;
use super::write::*;
use super::*;

/// The FAT for clusters below `next` (everything after is free, zero).
pub(super) fn fat_table(
    g: &Geometry,
    first: &[u32],
    count: &[u64],
    order: &[usize],
    next: u32,
) -> Vec<u8> {
    let width = if g.fat32 { 4 } else { 2 };
    let mut fat = vec![0u8; next as usize * width];
    let mut put = |k: u32, val: u32| {
        let o = k as usize * width;
        if g.fat32 {
            fat[o..o + 4].copy_from_slice(&val.to_le_bytes());
        } else {
            fat[o..o + 2].copy_from_slice(&(val as u16).to_le_bytes());
        }
    };
    let eoc = if g.fat32 { 0x0FFF_FFFF } else { 0xFFFF };
    put(0, if g.fat32 { 0x0FFF_FFF8 } else { 0xFFF8 });
    put(1, eoc);
    for &i in order {
        if count[i] == 0 {
            continue;
        }
        let last = first[i] + count[i] as u32 - 1;
        for k in first[i]..last {
            put(k, k + 1);
        }
        put(last, eoc);
    }
    fat
}

pub(super) fn short_entry(
    name: &[u8; 11],
    attr: u8,
    t: ((u16, u16), u8),
    cluster: u32,
    size: u32,
) -> [u8; 32] {
    let ((date, time), tenth) = t;
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[13] = tenth;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

pub(super) fn label_bytes(label: Option<&str>) -> Result<Option<[u8; 11]>, Error> {
    let Some(l) = label else { return Ok(None) };
    let bad = |reason| Error::BadOption {
        what: "volume label",
        value: l.to_string(),
        reason,
    };
    let up = l.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 {
        return Err(bad("must be 1 to 11 characters"));
    }
    if up.starts_with(' ') || !up.bytes().all(|b| b == b' ' || short_char_ok(b)) {
        return Err(bad(
            "only A-Z, 0-9, spaces (not first) and !#$%&'()-@^_`{}~ are allowed",
        ));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(Some(out))
}

pub(super) fn oem_bytes(oem: &str) -> Result<[u8; 8], Error> {
    if oem.len() > 8 || !oem.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::BadOption {
            what: "OEM name",
            value: oem.to_string(),
            reason: "must be at most 8 printable ASCII characters",
        });
    }
    let mut out = [b' '; 8];
    out[..oem.len()].copy_from_slice(oem.as_bytes());
    Ok(out)
}

/// A tiny real-mode program for the boot sector that says the volume is not
/// bootable and halts (written for krazy; the offsets are relative jumps).
pub(super) fn boot_stub(start: usize) -> Vec<u8> {
    let msg_addr = (0x7c00 + start + 27) as u16;
    let mut code = vec![
        0xfa, // cli
        0x31,
        0xc0, // xor ax, ax
        0x8e,
        0xd8, // mov ds, ax
        0xbe,
        msg_addr as u8,
        (msg_addr >> 8) as u8, // mov si, msg
        0xfc,                  // cld
        0xfb,                  // sti
        0xac,                  // loop: lodsb
        0x84,
        0xc0, // test al, al
        0x74,
        0x09, // jz halt
        0xb4,
        0x0e, // mov ah, 0x0e
        0xbb,
        0x07,
        0x00, // mov bx, 7
        0xcd,
        0x10, // int 0x10
        0xeb,
        0xf2, // jmp loop
        0xf4, // halt: hlt
        0xeb,
        0xfd, // jmp halt
    ];
    code.extend_from_slice(b"This is not a bootable disk (krazy FAT volume).\r\n\0");
    code
}

pub(super) fn boot_sector(
    g: &Geometry,
    opts: &FatOptions,
    label: &Option<[u8; 11]>,
    oem: &[u8; 8],
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let start: usize = if g.fat32 { 0x5a } else { 0x3e };
    b[0] = 0xeb;
    b[1] = (start - 2) as u8;
    b[2] = 0x90;
    b[3..11].copy_from_slice(oem);
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes());
    b[16] = 2;
    b[17..19].copy_from_slice(&(g.root_entries as u16).to_le_bytes());
    if !g.fat32 && g.total_sectors < 65536 {
        b[19..21].copy_from_slice(&(g.total_sectors as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
    }
    b[21] = 0xf8;
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    let ext = if g.fat32 {
        b[22..24].fill(0);
        b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
        b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
        b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
        64
    } else {
        b[22..24].copy_from_slice(&(g.fat_sectors as u16).to_le_bytes());
        36
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    b[ext + 3..ext + 7].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(label.as_ref().unwrap_or(b"NO NAME    "));
    b[ext + 18..ext + 26].copy_from_slice(if g.fat32 { b"FAT32   " } else { b"FAT16   " });
    let stub = boot_stub(start);
    b[start..start + stub.len()].copy_from_slice(&stub);
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

pub(super) fn fs_info(g: &Geometry, used: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&(g.cluster_count - used).to_le_bytes());
    let next_free = if used < g.cluster_count {
        used + 2
    } else {
        u32::MAX
    };
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}
