//! The MBR at LBA 0: protective, hybrid or plain.

use std::io::{self, Read, Seek, SeekFrom};

use super::u32_at;
use crate::layout::{SECTOR, SECTOR_BYTES};
use crate::table::MBR_TYPE_PROTECTIVE;

/// Why LBA 0 is not a usable MBR.
#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    /// Reading LBA 0 failed.
    #[error("reading the MBR failed")]
    Io(#[source] io::Error),
    /// Bytes 510..512 are not 55 AA.
    #[error("the MBR has signature {found:#06x}, not 0xaa55")]
    BadSignature {
        /// The little-endian value found.
        found: u16,
    },
    /// A status byte is neither 0x00 nor 0x80.
    #[error("MBR entry {entry} has status {status:#04x} (only 0x00 and 0x80 are valid)")]
    BadStatus {
        /// The 1-based entry.
        entry: u8,
        /// The status byte.
        status: u8,
    },
    /// A used entry has no sectors.
    #[error("MBR entry {entry} is used (type {kind:#04x}) but has no sectors")]
    EmptyEntry {
        /// The 1-based entry.
        entry: u8,
        /// Its partition type.
        kind: u8,
    },
    /// An entry reaches past the end of the disk.
    #[error("MBR entry {entry} (sectors {first_lba}, {sectors} long) passes the end of the disk ({disk_sectors} sectors)")]
    PastEndOfDisk {
        /// The 1-based entry.
        entry: u8,
        /// Its first sector.
        first_lba: u32,
        /// Its length.
        sectors: u32,
        /// The disk size in sectors.
        disk_sectors: u64,
    },
    /// Two entries share sectors, or one covers LBA 0.
    #[error("MBR entries {a} and {b} overlap")]
    Overlap {
        /// One 1-based entry (0 stands for the MBR sector itself).
        a: u8,
        /// The other.
        b: u8,
    },
}

/// A used MBR partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    /// 1-based slot (1 to 4).
    pub index: u8,
    /// Whether the active (boot) flag 0x80 is set.
    pub active: bool,
    /// The partition type byte.
    pub kind: u8,
    /// First sector.
    pub first_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

/// What kind of MBR it is, in GPT terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbrKind {
    /// One 0xEE entry starting at LBA 1 and nothing else: a GPT disk.
    Protective,
    /// A 0xEE entry starting at LBA 1 beside ordinary entries.
    Hybrid,
    /// No 0xEE entry at LBA 1: a plain MBR disk (or an empty one).
    Legacy,
}

/// A parsed MBR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    /// The disk signature (bytes 440..444, little-endian); Linux's MBR
    /// PARTUUIDs are `%08x-%02d` of it and the entry number.
    pub disk_signature: u32,
    /// The used entries, by slot.
    pub entries: Vec<MbrEntry>,
}

impl Mbr {
    /// Whether this MBR protects a GPT, and how.
    pub fn kind(&self) -> MbrKind {
        let protective = self
            .entries
            .iter()
            .any(|e| e.kind == MBR_TYPE_PROTECTIVE && e.first_lba == 1);
        match (protective, self.entries.len()) {
            (true, 1) => MbrKind::Protective,
            (true, _) => MbrKind::Hybrid,
            (false, _) => MbrKind::Legacy,
        }
    }

    /// The MBR-style PARTUUID Linux gives entry `index` (`ssssssss-nn`).
    pub fn partuuid(&self, index: u8) -> String {
        format!("{:08x}-{:02x}", self.disk_signature, index)
    }
}

/// Parses LBA 0 of a disk of `disk_bytes` bytes as an MBR. A 0xEE entry of
/// 0xFFFFFFFF sectors is accepted on any disk (the usual protective entry of
/// a disk larger than 2 TiB, written by some tools on any disk).
pub fn read_mbr<R: Read + Seek>(r: &mut R, disk_bytes: u64) -> Result<Mbr, MbrError> {
    let mut m = [0u8; SECTOR_BYTES];
    r.seek(SeekFrom::Start(0)).map_err(MbrError::Io)?;
    r.read_exact(&mut m).map_err(MbrError::Io)?;
    let sig = u16::from_le_bytes([m[510], m[511]]);
    if sig != 0xAA55 {
        return Err(MbrError::BadSignature { found: sig });
    }
    let disk_sectors = disk_bytes / SECTOR;
    let mut entries = Vec::with_capacity(4);
    for (index, e) in (1u8..).zip(m[446..510].chunks_exact(16)) {
        let (status, kind) = (e[0], e[4]);
        if status != 0 && status != 0x80 {
            return Err(MbrError::BadStatus {
                entry: index,
                status,
            });
        }
        if kind == 0 {
            continue;
        }
        let first_lba = u32_at(e, 8);
        let sectors = u32_at(e, 12);
        if sectors == 0 {
            return Err(MbrError::EmptyEntry { entry: index, kind });
        }
        let whole_disk_marker = kind == MBR_TYPE_PROTECTIVE && sectors == u32::MAX;
        if !whole_disk_marker && u64::from(first_lba) + u64::from(sectors) > disk_sectors {
            return Err(MbrError::PastEndOfDisk {
                entry: index,
                first_lba,
                sectors,
                disk_sectors,
            });
        }
        if first_lba == 0 {
            return Err(MbrError::Overlap { a: 0, b: index });
        }
        entries.push(MbrEntry {
            index,
            active: status == 0x80,
            kind,
            first_lba,
            sectors,
        });
    }
    for (i, a) in entries.iter().enumerate() {
        for b in entries.iter().skip(i + 1) {
            let a_end = u64::from(a.first_lba) + u64::from(a.sectors);
            let b_end = u64::from(b.first_lba) + u64::from(b.sectors);
            if u64::from(a.first_lba) < b_end && u64::from(b.first_lba) < a_end {
                return Err(MbrError::Overlap {
                    a: a.index,
                    b: b.index,
                });
            }
        }
    }
    Ok(Mbr {
        disk_signature: u32_at(&m, 440),
        entries,
    })
}
