//! Where everything sits in a volume: FAT16 or FAT32, cluster size,
//! reserved sectors, FAT and root directory sizes, chosen from the device
//! size and the options.

use super::write::*;
use super::*;

pub(super) const FAT16_MIN: u32 = 4085;
pub(super) const FAT16_MAX: u32 = 65524;
pub(super) const FAT32_MIN: u32 = 65525;
pub(super) const FAT32_MAX: u32 = 0x0FFF_FFF4;

/// Where everything sits in a volume (sectors of 512 bytes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) fat32: bool,
    pub(super) total_sectors: u32,
    pub(super) sectors_per_cluster: u32,
    pub(super) reserved: u32,
    pub(super) fat_sectors: u32,
    pub(super) root_entries: u32,
    pub(super) cluster_count: u32,
}

impl Geometry {
    pub(super) fn root_sectors(&self) -> u32 {
        (self.root_entries * 32).div_ceil(SECTOR)
    }
    pub(super) fn cluster_size(&self) -> u32 {
        self.sectors_per_cluster * SECTOR
    }
    pub(super) fn data_sector(&self) -> u32 {
        self.reserved + 2 * self.fat_sectors + self.root_sectors()
    }
    pub(super) fn cluster_offset(&self, cluster: u32) -> u64 {
        (u64::from(self.data_sector())
            + u64::from(cluster - 2) * u64::from(self.sectors_per_cluster))
            * u64::from(SECTOR)
    }

    /// The layout for `total` sectors, or `None` when the metadata alone does not fit.
    pub(super) fn compute(
        total: u32,
        spc: u32,
        fat32: bool,
        root_entries: u32,
    ) -> Option<Geometry> {
        let reserved0: u32 = if fat32 { 32 } else { 1 };
        let root_sectors = (root_entries * 32).div_ceil(SECTOR);
        let entry_bytes: u64 = if fat32 { 4 } else { 2 };
        let mut fat = 1u32;
        loop {
            let meta = reserved0
                .checked_add(fat.checked_mul(2)?)?
                .checked_add(root_sectors)?;
            let clusters = total.checked_sub(meta)? / spc;
            let need = ((u64::from(clusters) + 2) * entry_bytes).div_ceil(u64::from(SECTOR));
            let need = u32::try_from(need).ok()?;
            if need <= fat {
                break;
            }
            fat = need;
        }
        // Align the data region to the cluster size, as mkfs.fat does, by
        // growing the reserved area.
        let meta = reserved0 + 2 * fat + root_sectors;
        let reserved = reserved0 + (spc - meta % spc) % spc;
        let clusters = total.checked_sub(reserved + 2 * fat + root_sectors)? / spc;
        Some(Geometry {
            fat32,
            total_sectors: total,
            sectors_per_cluster: spc,
            reserved,
            fat_sectors: fat,
            root_entries,
            cluster_count: clusters,
        })
    }

    /// Picks the cluster size (Microsoft's size tables, then doubled or
    /// halved until the cluster count suits the FAT type).
    pub(super) fn choose(
        bytes: u64,
        fat32: bool,
        root_entries: u32,
        fixed_spc: Option<u8>,
    ) -> Result<Self, Error> {
        let name = if fat32 { "FAT32" } else { "FAT16" };
        let bad = |reason: String| Error::BadSize {
            bytes,
            fat: name,
            reason,
        };
        let total = u32::try_from(bytes / u64::from(SECTOR))
            .map_err(|_| bad("more than 2^32 sectors of 512 bytes".into()))?;
        let (min, max) = if fat32 {
            (FAT32_MIN, FAT32_MAX)
        } else {
            (FAT16_MIN, FAT16_MAX)
        };
        let mut spc = match fixed_spc {
            Some(s) if s.is_power_of_two() && s <= 64 => u32::from(s),
            Some(_) => return Err(bad("sectors per cluster must be 1, 2, 4, ..., 64".into())),
            None => {
                let table: &[(u32, u32)] = if fat32 {
                    &[
                        (532_480, 1),
                        (16_777_216, 8),
                        (33_554_432, 16),
                        (67_108_864, 32),
                    ]
                } else {
                    &[
                        (32_680, 2),
                        (262_144, 4),
                        (524_288, 8),
                        (1_048_576, 16),
                        (2_097_152, 32),
                    ]
                };
                table
                    .iter()
                    .find(|&&(max, _)| total <= max)
                    .map_or(64, |&(_, spc)| spc)
            }
        };
        let fixed = fixed_spc.is_some();
        loop {
            let g = Geometry::compute(total, spc, fat32, root_entries)
                .ok_or_else(|| bad("the metadata alone does not fit".into()))?;
            if g.cluster_count < min {
                if spc > 1 && !fixed {
                    spc /= 2;
                    continue;
                }
                return Err(bad(format!(
                    "{} clusters of {} bytes, fewer than the {min} {name} needs",
                    g.cluster_count,
                    g.cluster_size()
                )));
            }
            if g.cluster_count > max {
                if spc < 64 && !fixed {
                    spc *= 2;
                    continue;
                }
                return Err(bad(format!(
                    "{} clusters of {} bytes, more than the {max} {name} allows",
                    g.cluster_count,
                    g.cluster_size()
                )));
            }
            return Ok(g);
        }
    }
}
