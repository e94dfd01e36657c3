//! `metadata_csum`: the crc32c checksums of inodes, bitmaps, group
//! descriptors and directory blocks, all seeded by the UUID.

use super::bytes::{le16, lo16, put16, put32};
use super::crc32c;

/// The checksum state of one file system.
pub(super) struct Csum {
    seed: u32,
}

impl Csum {
    pub(super) fn new(uuid: &[u8; 16]) -> Self {
        Self {
            seed: crc32c::update(!0, uuid),
        }
    }

    /// The per-inode seed: inode number and generation over the fs seed.
    pub(super) fn inode_seed(&self, ino: u32) -> u32 {
        let c = crc32c::update(self.seed, &ino.to_le_bytes());
        crc32c::update(c, &0u32.to_le_bytes())
    }

    pub(super) fn inode(&self, ino: u32, raw: &mut [u8]) {
        put16(raw, 0x7C, 0);
        put16(raw, 0x82, 0);
        let c = crc32c::update(self.inode_seed(ino), raw);
        put16(raw, 0x7C, lo16(c));
        if le16(raw, 0x80) >= 4 {
            put16(raw, 0x82, lo16(c >> 16));
        }
    }

    pub(super) fn bitmap(&self, bits: &[u8]) -> u16 {
        lo16(crc32c::update(self.seed, bits))
    }

    pub(super) fn group_desc(&self, g: u32, desc: &mut [u8]) {
        put16(desc, 0x1E, 0);
        let c = crc32c::update(self.seed, &g.to_le_bytes());
        put16(desc, 0x1E, lo16(crc32c::update(c, desc)));
    }

    /// Fills the 12-byte checksum tail of a directory leaf block.
    pub(super) fn dir_block(&self, ino: u32, block: &mut [u8]) {
        let t = block.len() - 12;
        block[t..].fill(0);
        put16(block, t + 4, 12);
        block[t + 7] = 0xDE;
        let c = crc32c::update(self.inode_seed(ino), &block[..t]);
        put32(block, t + 8, c);
    }
}
