//! What the caller chooses ([`Ext4Options`], [`InodeTableInit`]) and what
//! [`format`](super::format) reports back ([`Ext4Summary`]).

/// How [`format`] treats the inode tables, which take about 1.6 % of the
/// device with the default inode ratio.
///
/// The group descriptors' `ITABLE_ZEROED` flag says whether a table is known
/// to read as zeros. When it is clear, the kernel zeroes the table itself in
/// the background after the first mount (its `ext4lazyinit` thread, like
/// mke2fs's `lazy_itable_init=1`), and e2fsck trusts only the inodes the
/// descriptors count as used (`bg_itable_unused`), so stale bytes are never
/// read as inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeTableInit {
    /// Write only the block holding the reserved inodes; leave the flag
    /// clear so the kernel zeroes the rest later. Safe on any device.
    #[default]
    Lazy,
    /// Write zeros over every inode table now and set the flag: slow on
    /// large devices, but no background writes after the first mount.
    Zero,
    /// Write nothing and set the flag, promising the device already reads
    /// zeros there: right for a freshly created sparse image file or a
    /// device just discarded with zeroing, wrong for a disk with old data.
    AssumeZeroed,
}

/// What [`format`] writes: identity, time and geometry knobs.
///
/// Build one with [`Ext4Options::new`] and the builder methods; every other
/// field has mke2fs's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// The file system UUID; also seeds the directory hash and the checksums.
    pub uuid: [u8; 16],
    /// Seconds since 1970 for every timestamp (mkfs time, inodes, last check).
    pub time: u64,
    /// The volume label, at most 16 bytes.
    pub label: String,
    /// Block size in bytes: 1024, 2048 or 4096 (default).
    pub block_size: u32,
    /// Bytes of device per inode (default 16384, as mke2fs).
    pub inode_ratio: u32,
    /// Percent of blocks reserved for root (default 5, as mke2fs).
    pub reserved_percent: u8,
    /// Journal size in blocks; `None` scales it with the size as mke2fs does.
    pub journal_blocks: Option<u32>,
    /// How the inode tables are initialised (default [`InodeTableInit::Lazy`]).
    pub inode_tables: InodeTableInit,
    /// Write zeros over the whole journal (default false: not needed, see the module docs).
    pub zero_journal: bool,
}

impl Ext4Options {
    /// Options with the given UUID and time and mke2fs's defaults otherwise.
    pub fn new(uuid: [u8; 16], time: u64) -> Self {
        Self {
            uuid,
            time,
            label: String::new(),
            block_size: 4096,
            inode_ratio: 16384,
            reserved_percent: 5,
            journal_blocks: None,
            inode_tables: InodeTableInit::Lazy,
            zero_journal: false,
        }
    }

    /// Sets the volume label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the block size (1024, 2048 or 4096).
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the bytes of device per inode.
    pub fn inode_ratio(mut self, ratio: u32) -> Self {
        self.inode_ratio = ratio;
        self
    }

    /// Sets the percent of blocks reserved for root.
    pub fn reserved_percent(mut self, percent: u8) -> Self {
        self.reserved_percent = percent;
        self
    }

    /// Sets the journal size in blocks.
    pub fn journal_blocks(mut self, blocks: u32) -> Self {
        self.journal_blocks = Some(blocks);
        self
    }

    /// Sets how the inode tables are initialised.
    pub fn inode_tables(mut self, init: InodeTableInit) -> Self {
        self.inode_tables = init;
        self
    }

    /// Asks for the journal to be overwritten with zeros.
    pub fn zero_journal(mut self, zero: bool) -> Self {
        self.zero_journal = zero;
        self
    }
}

/// What [`format`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Summary {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system (the device's tail may be left out when the
    /// last group would be too small to hold its own metadata).
    pub blocks: u64,
    /// Block groups.
    pub groups: u32,
    /// Inodes in the file system.
    pub inodes: u32,
    /// Free blocks after formatting.
    pub free_blocks: u64,
    /// Free inodes after formatting.
    pub free_inodes: u32,
    /// Journal size in blocks.
    pub journal_blocks: u32,
    /// Bytes written to the device.
    pub bytes_written: u64,
}
