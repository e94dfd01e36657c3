//! The GPT: both headers and their entry arrays, checked, and the choice
//! of which copy to use.

use std::io::{self, Read, Seek, SeekFrom};

use super::{guid_at, u32_at, u64_at};
use crate::guid::Guid;
use crate::layout::{SECTOR, SECTOR_BYTES};
use crate::table::GPT_SIGNATURE;

/// The largest partition entry array the reader accepts (1 MiB, 8,192
/// entries of 128 bytes); anything larger is [`GptError::TooManyEntries`].
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
/// The largest partition entry size accepted (entries are 128 × 2ⁿ bytes).
pub const MAX_ENTRY_SIZE: u32 = 4096;

/// Which of the two GPT headers a [`Gpt`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCopy {
    /// The primary header at LBA 1.
    Primary,
    /// The backup header (normally the disk's last sector).
    Backup,
}

/// Why a GPT (or one of its two copies) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Reading the disk failed (or the disk ended early). The cause is in
    /// the message, not `source()`: [`GptError::NoValidGpt`] shows both
    /// copies' errors in its own message.
    #[error("reading sector {lba} failed: {error}")]
    Io {
        /// The first sector of the failed read.
        lba: u64,
        /// The I/O error.
        error: io::Error,
    },
    /// The disk is too small to hold a GPT at all.
    #[error("the disk has {sectors} sectors, too few for a GPT")]
    DiskTooSmall {
        /// The disk size in sectors.
        sectors: u64,
    },
    /// The header does not start with "EFI PART".
    #[error("the GPT header at sector {lba} has no \"EFI PART\" signature")]
    BadSignature {
        /// The header's sector.
        lba: u64,
    },
    /// The header size field is below 92 or above the sector size.
    #[error("the GPT header at sector {lba} claims a size of {size} bytes (92 to 512 allowed)")]
    HeaderSizeOutOfRange {
        /// The header's sector.
        lba: u64,
        /// The size field.
        size: u32,
    },
    /// The header's CRC32 does not match its bytes.
    #[error("the GPT header at sector {lba} has CRC {stored:#010x}, but its bytes give {computed:#010x}")]
    BadHeaderCrc {
        /// The header's sector.
        lba: u64,
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the header's bytes.
        computed: u32,
    },
    /// The header's own-LBA field names another sector.
    #[error("the GPT header at sector {lba} says it lives at sector {recorded}")]
    WrongHeaderLba {
        /// Where the header was read.
        lba: u64,
        /// Where it says it is.
        recorded: u64,
    },
    /// The usable range is empty, covers a header, or passes the disk's end.
    #[error(
        "the GPT header at sector {lba} has a usable range {first}..={last} that does not fit a disk of {disk_sectors} sectors"
    )]
    BadUsableRange {
        /// The header's sector.
        lba: u64,
        /// First usable sector.
        first: u64,
        /// Last usable sector.
        last: u64,
        /// The disk size in sectors.
        disk_sectors: u64,
    },
    /// The entry size is not 128 × 2ⁿ bytes up to [`MAX_ENTRY_SIZE`].
    #[error("the GPT header at sector {lba} has partition entries of {size} bytes (128, 256, ... 4096 allowed)")]
    BadEntrySize {
        /// The header's sector.
        lba: u64,
        /// The entry size field.
        size: u32,
    },
    /// The entry array would exceed [`MAX_ENTRY_ARRAY_BYTES`].
    #[error("the GPT header at sector {lba} has {count} entries of {size} bytes, more than the 1 MiB accepted")]
    TooManyEntries {
        /// The header's sector.
        lba: u64,
        /// The entry count field.
        count: u32,
        /// The entry size field.
        size: u32,
    },
    /// The entry array lies outside the disk or over a header or the usable range.
    #[error(
        "the GPT header at sector {lba} puts its entry array at sectors {entries_lba}..{end}, outside the space reserved for it"
    )]
    EntriesOutOfRange {
        /// The header's sector.
        lba: u64,
        /// The array's first sector.
        entries_lba: u64,
        /// One past the array's last sector.
        end: u64,
    },
    /// The entry array's CRC32 does not match its bytes.
    #[error("the GPT entry array of the header at sector {lba} has CRC {stored:#010x}, but its bytes give {computed:#010x}")]
    BadEntriesCrc {
        /// The header's sector.
        lba: u64,
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the array's bytes.
        computed: u32,
    },
    /// A partition's first sector is after its last.
    #[error("GPT partition {number} starts at sector {first}, after its last sector {last}")]
    PartitionFirstAfterLast {
        /// The 1-based entry number.
        number: u32,
        /// Its first sector.
        first: u64,
        /// Its last sector.
        last: u64,
    },
    /// A partition ends beyond the disk.
    #[error("GPT partition {number} ends at sector {last}, past the end of the disk ({disk_sectors} sectors)")]
    PartitionPastEndOfDisk {
        /// The 1-based entry number.
        number: u32,
        /// Its last sector.
        last: u64,
        /// The disk size in sectors.
        disk_sectors: u64,
    },
    /// A partition lies (partly) outside the header's usable range.
    #[error(
        "GPT partition {number} (sectors {first}..={last}) lies outside the usable sectors {first_usable}..={last_usable}"
    )]
    PartitionOutsideUsable {
        /// The 1-based entry number.
        number: u32,
        /// Its first sector.
        first: u64,
        /// Its last sector.
        last: u64,
        /// First usable sector.
        first_usable: u64,
        /// Last usable sector.
        last_usable: u64,
    },
    /// Two partitions share sectors.
    #[error("GPT partitions {a} and {b} overlap")]
    PartitionsOverlap {
        /// One partition's 1-based entry number.
        a: u32,
        /// The other's.
        b: u32,
    },
    /// Both copies are valid on their own but disagree.
    #[error("the backup GPT header disagrees with the primary about the {field}")]
    BackupMismatch {
        /// The field that differs.
        field: &'static str,
    },
    /// Neither the primary nor the backup GPT is usable.
    #[error("no valid GPT: the primary is broken ({primary}) and so is the backup ({backup})")]
    NoValidGpt {
        /// What is wrong with the primary.
        primary: Box<GptError>,
        /// What is wrong with the backup.
        backup: Box<GptError>,
    },
}

/// A validated GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// The revision field (0x00010000 for 1.0).
    pub revision: u32,
    /// The header size field.
    pub header_size: u32,
    /// Where this header lives.
    pub my_lba: u64,
    /// Where the other copy lives.
    pub alternate_lba: u64,
    /// First sector partitions may use.
    pub first_usable_lba: u64,
    /// Last sector partitions may use.
    pub last_usable_lba: u64,
    /// The disk GUID.
    pub disk_guid: Guid,
    /// First sector of the entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub entry_count: u32,
    /// Size of one entry in bytes.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc: u32,
}

/// A used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based entry number (the `N` in `/dev/sdaN`).
    pub number: u32,
    /// Its partition type.
    pub type_guid: Guid,
    /// Its unique GUID (PARTUUID).
    pub guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Its name (UTF-16 decoded, invalid units replaced).
    pub name: String,
}

impl GptPartition {
    /// Its size in sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// A GPT read from a disk: the header used, its partitions, and what (if
/// anything) was wrong with the other copy.
#[derive(Debug)]
pub struct Gpt {
    /// Which copy the partitions come from.
    pub used: HeaderCopy,
    /// The header of that copy.
    pub header: GptHeader,
    /// The used entries, in entry order.
    pub partitions: Vec<GptPartition>,
    /// Why the primary was not used or, when it was, was found faulty
    /// (`None`: the primary is fine).
    pub primary_problem: Option<GptError>,
    /// What is wrong with the backup, or how it disagrees with the primary
    /// (`None`: it is fine and matches).
    pub backup_problem: Option<GptError>,
}

impl Gpt {
    /// The partition whose unique GUID is `guid`.
    pub fn find(&self, guid: Guid) -> Option<&GptPartition> {
        self.partitions.iter().find(|p| p.guid == guid)
    }

    /// The partition with entry number `number` (1-based).
    pub fn partition(&self, number: u32) -> Option<&GptPartition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

fn read_at<R: Read + Seek>(r: &mut R, lba: u64, buf: &mut [u8]) -> Result<(), GptError> {
    let io = |error| GptError::Io { lba, error };
    let off = lba.checked_mul(SECTOR).ok_or_else(|| {
        io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "offset overflows",
        ))
    })?;
    r.seek(SeekFrom::Start(off)).map_err(io)?;
    r.read_exact(buf).map_err(io)
}

/// Reads and checks one header and its entries at `lba`.
fn read_copy<R: Read + Seek>(
    r: &mut R,
    lba: u64,
    disk_sectors: u64,
) -> Result<(GptHeader, Vec<GptPartition>), GptError> {
    let mut h = [0u8; SECTOR_BYTES];
    read_at(r, lba, &mut h)?;
    if h[0..8] != GPT_SIGNATURE {
        return Err(GptError::BadSignature { lba });
    }
    let header_size = u32_at(&h, 12);
    if !(92..=SECTOR).contains(&u64::from(header_size)) {
        return Err(GptError::HeaderSizeOutOfRange {
            lba,
            size: header_size,
        });
    }
    let stored = u32_at(&h, 16);
    let mut copy = h;
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy[..header_size as usize]);
    if stored != computed {
        return Err(GptError::BadHeaderCrc {
            lba,
            stored,
            computed,
        });
    }
    let hdr = GptHeader {
        revision: u32_at(&h, 8),
        header_size,
        my_lba: u64_at(&h, 24),
        alternate_lba: u64_at(&h, 32),
        first_usable_lba: u64_at(&h, 40),
        last_usable_lba: u64_at(&h, 48),
        disk_guid: guid_at(&h, 56),
        entries_lba: u64_at(&h, 72),
        entry_count: u32_at(&h, 80),
        entry_size: u32_at(&h, 84),
        entries_crc: u32_at(&h, 88),
    };
    if hdr.my_lba != lba {
        return Err(GptError::WrongHeaderLba {
            lba,
            recorded: hdr.my_lba,
        });
    }
    let (first, last) = (hdr.first_usable_lba, hdr.last_usable_lba);
    if first < 2 || first > last || last >= disk_sectors || (first..=last).contains(&lba) {
        return Err(GptError::BadUsableRange {
            lba,
            first,
            last,
            disk_sectors,
        });
    }
    let size = hdr.entry_size;
    if !(128..=MAX_ENTRY_SIZE).contains(&size) || !size.is_power_of_two() {
        return Err(GptError::BadEntrySize { lba, size });
    }
    let array_bytes = u64::from(hdr.entry_count) * u64::from(size);
    if array_bytes > MAX_ENTRY_ARRAY_BYTES {
        return Err(GptError::TooManyEntries {
            lba,
            count: hdr.entry_count,
            size,
        });
    }
    let array_sectors = array_bytes.div_ceil(SECTOR);
    let start = hdr.entries_lba;
    let end = start.saturating_add(array_sectors);
    let clear_of_usable = end <= first || start > last;
    if start < 1 || end > disk_sectors || (start..end).contains(&lba) || !clear_of_usable {
        return Err(GptError::EntriesOutOfRange {
            lba,
            entries_lba: start,
            end,
        });
    }
    // Bounded by MAX_ENTRY_ARRAY_BYTES and known to lie on the disk.
    #[allow(clippy::cast_possible_truncation)] // at most 1 MiB (checked above)
    let mut array = vec![0u8; array_bytes as usize];
    read_at(r, start, &mut array)?;
    let computed = crc32fast::hash(&array);
    if computed != hdr.entries_crc {
        return Err(GptError::BadEntriesCrc {
            lba,
            stored: hdr.entries_crc,
            computed,
        });
    }
    let mut parts = Vec::new();
    for (number, e) in (1u32..).zip(array.chunks_exact(size as usize)) {
        let type_guid = guid_at(e, 0);
        if type_guid.is_nil() {
            continue;
        }
        let (pf, pl) = (u64_at(e, 32), u64_at(e, 40));
        if pf > pl {
            return Err(GptError::PartitionFirstAfterLast {
                number,
                first: pf,
                last: pl,
            });
        }
        if pl >= disk_sectors {
            return Err(GptError::PartitionPastEndOfDisk {
                number,
                last: pl,
                disk_sectors,
            });
        }
        if pf < first || pl > last {
            return Err(GptError::PartitionOutsideUsable {
                number,
                first: pf,
                last: pl,
                first_usable: first,
                last_usable: last,
            });
        }
        let units = (0..36).map(|k| u16::from_le_bytes([e[56 + 2 * k], e[57 + 2 * k]]));
        let name: String = char::decode_utf16(units.take_while(|&u| u != 0))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        parts.push(GptPartition {
            number,
            type_guid,
            guid: guid_at(e, 16),
            first_lba: pf,
            last_lba: pl,
            attributes: u64_at(e, 48),
            name,
        });
    }
    let mut by_start: Vec<&GptPartition> = parts.iter().collect();
    by_start.sort_by_key(|p| (p.first_lba, p.number));
    for w in by_start.windows(2) {
        if let [a, b] = w {
            if b.first_lba <= a.last_lba {
                return Err(GptError::PartitionsOverlap {
                    a: a.number,
                    b: b.number,
                });
            }
        }
    }
    Ok((hdr, parts))
}

/// Where two valid copies disagree, if they do.
fn mismatch(p: &GptHeader, b: &GptHeader) -> Option<&'static str> {
    if p.disk_guid != b.disk_guid {
        Some("disk GUID")
    } else if (p.first_usable_lba, p.last_usable_lba) != (b.first_usable_lba, b.last_usable_lba) {
        Some("usable range")
    } else if (p.entry_count, p.entry_size) != (b.entry_count, b.entry_size) {
        Some("entry count or size")
    } else if p.entries_crc != b.entries_crc {
        Some("partition entries")
    } else if p.alternate_lba != b.my_lba || b.alternate_lba != p.my_lba {
        Some("location of the other header")
    } else {
        None
    }
}

/// Reads the GPT of a disk of `disk_bytes` bytes (rounded down to whole
/// sectors): the primary at LBA 1 if it and its entries are valid, else the
/// backup (at the primary's alternate LBA when that is on the disk,
/// otherwise the last sector). [`Gpt::used`] says which copy was used and
/// [`Gpt::primary_problem`]/[`Gpt::backup_problem`] what was wrong with the
/// other. Fails with [`GptError::NoValidGpt`] when neither copy is usable.
pub fn read_gpt<R: Read + Seek>(r: &mut R, disk_bytes: u64) -> Result<Gpt, GptError> {
    let disk_sectors = disk_bytes / SECTOR;
    if disk_sectors < 4 {
        return Err(GptError::DiskTooSmall {
            sectors: disk_sectors,
        });
    }
    let last = disk_sectors - 1;
    match read_copy(r, 1, disk_sectors) {
        Ok((header, partitions)) => {
            let backup_lba = if header.alternate_lba > 1 && header.alternate_lba < disk_sectors {
                header.alternate_lba
            } else {
                last
            };
            let backup_problem = match read_copy(r, backup_lba, disk_sectors) {
                Ok((b, _)) => mismatch(&header, &b).map(|field| GptError::BackupMismatch { field }),
                Err(e) => Some(e),
            };
            Ok(Gpt {
                used: HeaderCopy::Primary,
                header,
                partitions,
                primary_problem: None,
                backup_problem,
            })
        }
        Err(primary) => match read_copy(r, last, disk_sectors) {
            Ok((header, partitions)) => Ok(Gpt {
                used: HeaderCopy::Backup,
                header,
                partitions,
                primary_problem: Some(primary),
                backup_problem: None,
            }),
            Err(backup) => Err(GptError::NoValidGpt {
                primary: Box::new(primary),
                backup: Box::new(backup),
            }),
        },
    }
}
