//! Recognising an existing ext2/3/4 file system: [`probe`] reads the
//! superblock of any bytes and never panics.

use super::bytes::{le16, le32};
use super::{
    COMPAT_HAS_JOURNAL, INCOMPAT_64BIT, MAGIC, SB_BLOCKS_HI, SB_BLOCKS_LO, SB_FEATURE_COMPAT,
    SB_FEATURE_INCOMPAT, SB_FEATURE_RO_COMPAT, SB_LABEL, SB_LOG_BLOCK_SIZE, SB_MAGIC, SB_MKFS_TIME,
    SB_MKFS_TIME_HI, SB_OFFSET, SB_SIZE, SB_UUID,
};

/// What [`probe`] found in an ext2/3/4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Info {
    /// The file system UUID.
    pub uuid: [u8; 16],
    /// The volume label (lossily decoded, up to the first NUL).
    pub label: String,
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system (64-bit when the `64bit` feature is set).
    pub blocks: u64,
    /// Compatible feature flags.
    pub feature_compat: u32,
    /// Incompatible feature flags.
    pub feature_incompat: u32,
    /// Read-only-compatible feature flags.
    pub feature_ro_compat: u32,
    /// When the file system was made, in seconds since 1970.
    pub mkfs_time: u64,
}

impl Ext4Info {
    /// Whether the file system has a journal (ext3 or ext4 rather than ext2).
    pub fn has_journal(&self) -> bool {
        self.feature_compat & COMPAT_HAS_JOURNAL != 0
    }
}

/// Reads the superblock at byte 1024 and returns what it says if it carries
/// the ext2/3/4 magic and a sane block size; `None` for anything else,
/// including a device too short to hold one. Never panics on any bytes.
pub fn probe(dev: &mut impl crate::BlockDevice) -> Option<Ext4Info> {
    let mut sb = [0u8; SB_SIZE];
    dev.read_at(SB_OFFSET, &mut sb).ok()?;
    if le16(&sb, SB_MAGIC) != MAGIC {
        return None;
    }
    let log = le32(&sb, SB_LOG_BLOCK_SIZE);
    if log > 6 {
        return None;
    }
    let block_size = 1024u32 << log;
    let incompat = le32(&sb, SB_FEATURE_INCOMPAT);
    let mut blocks = u64::from(le32(&sb, SB_BLOCKS_LO));
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(&sb, SB_BLOCKS_HI)) << 32;
    }
    let label_bytes = &sb[SB_LABEL..SB_LABEL + 16];
    let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[SB_UUID..SB_UUID + 16]);
    Some(Ext4Info {
        uuid,
        label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
        block_size,
        blocks,
        feature_compat: le32(&sb, SB_FEATURE_COMPAT),
        feature_incompat: incompat,
        feature_ro_compat: le32(&sb, SB_FEATURE_RO_COMPAT),
        mkfs_time: u64::from(le32(&sb, SB_MKFS_TIME)) | (u64::from(sb[SB_MKFS_TIME_HI]) << 32),
    })
}

/// Whether the device holds an ext2, ext3 or ext4 file system.
pub fn has_filesystem(dev: &mut impl crate::BlockDevice) -> bool {
    probe(dev).is_some()
}
