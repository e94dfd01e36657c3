//! Writing a [`Layout`] as a GPT (primary and backup) with a protective
//! (`pc`) or hybrid (`pi3`) MBR in LBA 0.

use std::io::{self, Seek, SeekFrom, Write};

use crate::guid::{Guid, InstanceId};
use crate::layout::{Layout, Partition, Platform, Role, GPT_TAIL_SECTORS, SECTOR, SECTOR_BYTES};

/// Number of entries in the partition entry array krazy writes.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry in bytes.
pub const ENTRY_SIZE: u32 = 128;
/// Size of the GPT header in bytes (UEFI revision 1.0).
pub const HEADER_SIZE: u32 = 92;
/// The GPT header signature, "EFI PART".
pub const GPT_SIGNATURE: [u8; 8] = *b"EFI PART";
/// MBR partition type of a GPT protective entry.
pub const MBR_TYPE_PROTECTIVE: u8 = 0xEE;
/// MBR partition type of a FAT32 (LBA) partition, which the Pi firmware reads.
pub const MBR_TYPE_FAT32_LBA: u8 = 0x0C;

const ENTRY_ARRAY_BYTES: usize = (ENTRY_COUNT * ENTRY_SIZE) as usize;
const ENTRY_ARRAY_SECTORS: u64 = ENTRY_ARRAY_BYTES as u64 / SECTOR;

/// Why a layout cannot be written as a partition table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A partition that the hybrid MBR must list lies beyond what MBR's
    /// 32-bit sector numbers reach (2 TiB).
    #[error(
        "the {role} partition (sectors {first_lba}..={last_lba}) lies beyond the 2 TiB an MBR entry can address"
    )]
    BeyondMbrLimit {
        /// The partition.
        role: Role,
        /// Its first sector.
        first_lba: u64,
        /// Its last sector.
        last_lba: u64,
    },
}

/// A partition of a [`PartitionTable`]: the layout's partition and its
/// derived GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The partition as laid out.
    pub partition: Partition,
    /// Its unique partition GUID (what Linux calls its PARTUUID).
    pub guid: Guid,
}

impl TableEntry {
    /// The PARTUUID as Linux shows it for a GPT partition (lowercase GUID).
    pub fn partuuid(&self) -> String {
        self.guid.to_string()
    }

    /// The kernel command-line argument that mounts this partition as root,
    /// `root=PARTUUID=<guid>`.
    pub fn root_arg(&self) -> String {
        format!("root=PARTUUID={}", self.guid)
    }
}

/// A layout together with its deterministic GUIDs and MBR disk signature:
/// everything needed to write the partition table bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    platform: Platform,
    disk_sectors: u64,
    disk_guid: Guid,
    mbr_signature: u32,
    entries: Vec<TableEntry>,
}

impl PartitionTable {
    /// Derives the disk GUID (tag `disk`), each partition's GUID (tag
    /// [`Role::name`]) and the MBR disk signature from `id`.
    ///
    /// Fails only for `pi3` layouts whose FAT partitions end beyond 2 TiB.
    pub fn from_layout(layout: &Layout, id: &InstanceId) -> Result<PartitionTable, TableError> {
        let entries: Vec<TableEntry> = layout
            .partitions()
            .iter()
            .map(|p| TableEntry {
                partition: p.clone(),
                guid: id.derive_guid(p.role.name()),
            })
            .collect();
        if layout.platform() == Platform::Pi3 {
            for e in &entries {
                let p = &e.partition;
                if hybrid_role(p.role) && p.last_lba() > u64::from(u32::MAX) {
                    return Err(TableError::BeyondMbrLimit {
                        role: p.role,
                        first_lba: p.first_lba,
                        last_lba: p.last_lba(),
                    });
                }
            }
        }
        Ok(PartitionTable {
            platform: layout.platform(),
            disk_sectors: layout.disk_sectors(),
            disk_guid: id.derive_guid("disk"),
            mbr_signature: id.mbr_signature(),
            entries,
        })
    }

    /// The disk GUID.
    pub fn disk_guid(&self) -> Guid {
        self.disk_guid
    }

    /// The MBR disk signature (bytes 440..444 of LBA 0, little-endian).
    pub fn mbr_signature(&self) -> u32 {
        self.mbr_signature
    }

    /// The disk size in sectors.
    pub fn disk_sectors(&self) -> u64 {
        self.disk_sectors
    }

    /// The partitions with their GUIDs, in partition-number order.
    pub fn entries(&self) -> &[TableEntry] {
        &self.entries
    }

    /// The partition with `role`, if there is one.
    pub fn entry(&self, role: Role) -> Option<&TableEntry> {
        self.entries.iter().find(|e| e.partition.role == role)
    }

    /// The bytes of LBA 0 to 33: the MBR, the primary GPT header and the
    /// primary entry array (17,408 bytes, written at offset 0).
    pub fn head_bytes(&self) -> Vec<u8> {
        let entries = self.entry_array();
        let crc = crc32fast::hash(&entries);
        let mut out = Vec::with_capacity(2 * SECTOR_BYTES + ENTRY_ARRAY_BYTES);
        out.extend_from_slice(&self.mbr());
        out.extend_from_slice(&self.header(1, self.disk_sectors - 1, 2, crc));
        out.extend_from_slice(&entries);
        out
    }

    /// The bytes of the last 33 sectors: the backup entry array and the
    /// backup GPT header (16,896 bytes, written at [`Self::tail_offset`]).
    pub fn tail_bytes(&self) -> Vec<u8> {
        let entries = self.entry_array();
        let crc = crc32fast::hash(&entries);
        let last = self.disk_sectors - 1;
        let mut out = Vec::with_capacity(ENTRY_ARRAY_BYTES + SECTOR_BYTES);
        out.extend_from_slice(&entries);
        out.extend_from_slice(&self.header(last, 1, last - ENTRY_ARRAY_SECTORS, crc));
        out
    }

    /// The byte offset of [`Self::tail_bytes`]: the disk size minus 33 sectors.
    pub fn tail_offset(&self) -> u64 {
        (self.disk_sectors - GPT_TAIL_SECTORS) * SECTOR
    }

    /// Writes the table: exactly [`Self::head_bytes`] at offset 0 and
    /// [`Self::tail_bytes`] at [`Self::tail_offset`], nothing else (so on a
    /// sparse file of the disk's size only those 34 + 33 sectors are
    /// allocated). A shorter file is extended by the writes.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> io::Result<()> {
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&self.head_bytes())?;
        w.seek(SeekFrom::Start(self.tail_offset()))?;
        w.write_all(&self.tail_bytes())?;
        w.flush()
    }

    /// The 128 entries of 128 bytes, used ones first in partition order.
    fn entry_array(&self) -> Vec<u8> {
        let mut out = vec![0u8; ENTRY_ARRAY_BYTES];
        for (chunk, e) in out.chunks_exact_mut(ENTRY_SIZE as usize).zip(&self.entries) {
            let p = &e.partition;
            chunk[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
            chunk[16..32].copy_from_slice(&e.guid.to_gpt_bytes());
            chunk[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            chunk[40..48].copy_from_slice(&p.last_lba().to_le_bytes());
            // Attributes (48..56) stay 0.
            for (i, unit) in p.name.encode_utf16().take(36).enumerate() {
                chunk[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    /// One header sector.
    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR_BYTES];
        h[0..8].copy_from_slice(&GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(self.disk_sectors - GPT_TAIL_SECTORS - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// LBA 0: no boot code, the disk signature, and the protective or
    /// hybrid partition entries.
    fn mbr(&self) -> [u8; 512] {
        let mut m = [0u8; 512];
        m[440..444].copy_from_slice(&self.mbr_signature.to_le_bytes());
        let max = u64::from(u32::MAX);
        match self.platform {
            Platform::Pc => {
                let sectors = (self.disk_sectors - 1).min(max);
                m[446..462].copy_from_slice(&mbr_entry(false, MBR_TYPE_PROTECTIVE, 1, sectors));
            }
            Platform::Pi3 => {
                let fat = self
                    .entries
                    .iter()
                    .filter(|e| hybrid_role(e.partition.role));
                for (i, e) in fat.take(3).enumerate() {
                    let p = &e.partition;
                    let at = 446 + 16 * i;
                    m[at..at + 16].copy_from_slice(&mbr_entry(
                        i == 0,
                        MBR_TYPE_FAT32_LBA,
                        p.first_lba,
                        p.sectors,
                    ));
                }
                let first = self
                    .entries
                    .iter()
                    .map(|e| e.partition.first_lba)
                    .min()
                    .unwrap_or(2)
                    .min(max + 1);
                m[494..510].copy_from_slice(&mbr_entry(false, MBR_TYPE_PROTECTIVE, 1, first - 1));
            }
        }
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }
}

/// Whether the hybrid MBR lists this role (the Pi's FAT partitions).
fn hybrid_role(role: Role) -> bool {
    matches!(role, Role::Autoboot | Role::BootA | Role::BootB)
}

/// One 16-byte MBR partition entry. `first` and `sectors` must fit in 32
/// bits (checked by the caller).
fn mbr_entry(active: bool, kind: u8, first: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = if active { 0x80 } else { 0 };
    e[1..4].copy_from_slice(&chs(first));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs((first + sectors).saturating_sub(1)));
    let fit = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
    e[8..12].copy_from_slice(&fit(first).to_le_bytes());
    e[12..16].copy_from_slice(&fit(sectors).to_le_bytes());
    e
}

/// The CHS address of `lba` in the usual 255-head, 63-sector geometry, or
/// the "too large" marker FE FF FF beyond cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (255 * 63);
    if cyl > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    // head < 255, sector <= 63 and cyl <= 1023: each part fits its byte.
    let byte = |x: u64| u8::try_from(x).unwrap_or(u8::MAX);
    [
        byte(head),
        byte(sector) | byte((cyl >> 2) & 0xC0),
        byte(cyl & 0xFF),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_encoding() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1), [0, 2, 0]);
        assert_eq!(chs(63), [1, 1, 0]);
        assert_eq!(chs(255 * 63), [0, 1, 1]);
        assert_eq!(chs(1023 * 255 * 63 + 254 * 63 + 62), [254, 0xFF, 0xFF]);
        assert_eq!(chs(1024 * 255 * 63), [0xFE, 0xFF, 0xFF]);
    }
}
