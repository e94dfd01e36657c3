//! CRC-32C (Castagnoli), the checksum of ext4's `metadata_csum` feature.
//!
//! ext4 chains the raw CRC register: it starts from a seed (`!0` for the
//! superblock and the UUID, a per-filesystem or per-inode seed elsewhere)
//! and never inverts the result, so [`update`] exposes exactly that
//! register. The standard CRC-32C of `data` is `!update(!0, data)`.
//! Slicing-by-8 tables keep it near a byte per cycle without `unsafe`.

const POLY: u32 = 0x82F6_3B78;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    let mut byte = 0u32; // i, as the u32 the register starts from
    while i < 256 {
        let mut c = byte;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
        byte += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Feeds `data` into the raw CRC-32C register `crc` (no pre- or post-inversion).
pub(crate) fn update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::update;

    #[test]
    fn standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720, B.4).
        assert_eq!(!update(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass, across the 8-byte slicing boundary.
        let data: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            update(update(!0, &data[..13]), &data[13..]),
            update(!0, &data)
        );
    }

    #[test]
    fn iscsi_zeros_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(!update(!0, &[0u8; 32]), 0x8A91_36AA);
    }
}
