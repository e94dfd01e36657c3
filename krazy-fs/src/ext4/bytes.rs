//! Little- and big-endian field access and bitmap filling for the
//! on-disk structures.

pub(super) fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

pub(super) fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(super) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put32be(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

pub(super) fn set_bits(bitmap: &mut [u8], from: u64, to: u64) {
    for i in from..to {
        bitmap[(i / 8) as usize] |= 1 << (i % 8);
    }
}

/// The low 32 bits of `x`: ext4 splits wide values into `_lo` and `_hi`
/// fields, and this is the `_lo` half by design.
#[allow(clippy::cast_possible_truncation)] // masked to 32 bits
pub(super) fn lo32(x: u64) -> u32 {
    (x & 0xFFFF_FFFF) as u32
}

/// Bits 32 to 47 of `x`: the 16-bit `_hi` half of a 48-bit field.
#[allow(clippy::cast_possible_truncation)] // masked to 16 bits
pub(super) fn hi16(x: u64) -> u16 {
    ((x >> 32) & 0xFFFF) as u16
}

/// The low 16 bits of `x` (a 16-bit `_lo` field, or a crc16-sized checksum
/// taken from a crc32c, as ext4 defines them).
#[allow(clippy::cast_possible_truncation)] // masked to 16 bits
pub(super) fn lo16(x: u32) -> u16 {
    (x & 0xFFFF) as u16
}
