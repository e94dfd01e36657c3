//! Finding a partition by its GPT PARTUUID on a running Linux system, the
//! way krazy's init finds its root and `/perm` without udev.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::guid::Guid;
use crate::layout::SECTOR;
use crate::read::{read_gpt, GptPartition};

/// Why the block devices could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// Listing the sysfs block directory failed.
    #[error("listing {path} failed")]
    ListSysBlock {
        /// The directory (normally `/sys/block`).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// A partition found by [`find_by_partuuid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPartition {
    /// The whole disk's device node, e.g. `/dev/mmcblk0`.
    pub disk: PathBuf,
    /// The partition's device node, e.g. `/dev/mmcblk0p2`.
    pub device: PathBuf,
    /// The partition as its GPT describes it.
    pub partition: GptPartition,
}

/// The device node of partition `number` of disk `disk_name` under `dev`:
/// Linux puts a `p` between a disk name ending in a digit and the number
/// (`mmcblk0p2`, `nvme0n1p2`, `loop0p2`) and nothing otherwise (`sda2`).
pub fn partition_device(dev: &Path, disk_name: &str, number: u32) -> PathBuf {
    let sep = if disk_name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    dev.join(format!("{disk_name}{sep}{number}"))
}

/// Looks through every disk listed in `sys_block` (normally `/sys/block`),
/// reads the GPT of `dev/<name>` (normally `/dev/<name>`), and returns the
/// partition whose unique GUID is `partuuid`. Disks are tried in name
/// order; one that cannot be opened or has no valid GPT is skipped. A disk's
/// size comes from `sys_block/<name>/size` (512-byte sectors), or from the
/// device node's length when that file is missing.
pub fn find_by_partuuid(
    sys_block: &Path,
    dev: &Path,
    partuuid: Guid,
) -> Result<Option<FoundPartition>, FindError> {
    let list = |source| FindError::ListSysBlock {
        path: sys_block.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map_err(list)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let disk = dev.join(&name);
        let Ok(mut f) = File::open(&disk) else {
            continue;
        };
        let size = match std::fs::read_to_string(sys_block.join(&name).join("size")) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(sectors) => sectors.saturating_mul(SECTOR),
                Err(_) => continue,
            },
            Err(_) => match f.seek(SeekFrom::End(0)) {
                Ok(len) => len,
                Err(_) => continue,
            },
        };
        let Ok(gpt) = read_gpt(&mut f, size) else {
            continue;
        };
        if let Some(p) = gpt.find(partuuid) {
            return Ok(Some(FoundPartition {
                device: partition_device(dev, &name, p.number),
                disk,
                partition: p.clone(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_device_names() {
        let d = Path::new("/dev");
        assert_eq!(partition_device(d, "sda", 2), Path::new("/dev/sda2"));
        assert_eq!(partition_device(d, "vdb", 4), Path::new("/dev/vdb4"));
        assert_eq!(
            partition_device(d, "mmcblk0", 2),
            Path::new("/dev/mmcblk0p2")
        );
        assert_eq!(
            partition_device(d, "nvme0n1", 6),
            Path::new("/dev/nvme0n1p6")
        );
        assert_eq!(partition_device(d, "loop7", 1), Path::new("/dev/loop7p1"));
    }
}
