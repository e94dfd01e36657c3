//! Writing assembled [`Trees`] into a sparse disk image: the partition
//! table, the squashfs root in both slots, the board's boot file systems
//! and an empty ext4 perm, through a temporary file renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

use krazy_disk::{Layout, PartitionTable, Role};
use krazy_fs::fat::FatOptions;
use krazy_fs::{BlockDevice, FileDevice};
use serde::Serialize;

use super::{ImageError, Trees};
use crate::board;

/// What [`write_image`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The image file.
    pub path: PathBuf,
    /// Its size in bytes (the disk size).
    pub disk_bytes: u64,
    /// The build id.
    pub build_id: String,
    /// The squashfs root's size in bytes.
    pub root_bytes: u64,
    /// The initramfs's size in bytes, when there is one.
    pub initramfs_bytes: Option<u64>,
    /// Partitions: name, first byte, size, PARTUUID.
    pub partitions: Vec<PartitionReport>,
}

/// One partition of a written image.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Its GPT name (`esp`, `root-a`, …).
    pub name: String,
    /// Its number (1-based).
    pub number: u32,
    /// Offset of its first byte.
    pub start: u64,
    /// Its size.
    pub bytes: u64,
    /// Its PARTUUID.
    pub partuuid: String,
}

fn fs_err(part: &'static str) -> impl FnOnce(String) -> ImageError {
    move |reason| ImageError::FileSystem { part, reason }
}

/// Writes `trees` into `out`, laid out as the trees say, to a temporary
/// file beside it that is renamed into place only when complete: a failed
/// build leaves no partial image behind.
pub fn write_image(trees: &Trees, out: &Path) -> Result<ImageReport, ImageError> {
    let tmp = tmp_path(out);
    let r = write_image_to(trees, &tmp, out);
    match r {
        Ok(rep) => {
            fs::rename(&tmp, out).map_err(|source| ImageError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(rep)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn tmp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    out.with_file_name(format!(".{name}.partial"))
}

/// A new image file being written: its partitions as devices, for a
/// board's [`board::Board::write_boot`].
#[derive(Debug)]
pub struct ImageFile<'a> {
    file: &'a File,
    path: &'a Path,
    layout: &'a Layout,
    table: &'a PartitionTable,
    mtime: u64,
}

impl ImageFile<'_> {
    /// `role`'s partition as a device (the file reads as zeros until written).
    pub fn partition(&self, role: Role) -> Result<FileDevice, ImageError> {
        let p = self
            .layout
            .partition(role)
            .ok_or_else(|| ImageError::FileSystem {
                part: "layout",
                reason: format!("the layout has no {} partition", role.name()),
            })?;
        let f = self.file.try_clone().map_err(|source| ImageError::Io {
            path: self.path.to_path_buf(),
            source,
        })?;
        Ok(FileDevice::new(f, p.start_bytes(), p.size_bytes()))
    }

    /// The partition table being written.
    pub fn table(&self) -> &PartitionTable {
        self.table
    }

    /// The one time stamp of every entry.
    pub fn mtime(&self) -> u64 {
        self.mtime
    }

    /// FAT options for `role`'s partition: `label`, a volume id derived
    /// from the disk's MBR signature, the partition's start as hidden
    /// sectors, the image's time, and a device that reads as zeros.
    pub fn fat_options(&self, label: &str, role: Role) -> FatOptions {
        let start = self
            .layout
            .partition(role)
            .map(|p| p.first_lba)
            .unwrap_or(0);
        FatOptions {
            label: Some(label.to_string()),
            timestamp: Some(self.mtime),
            volume_id: self.table.mbr_signature() ^ (role as u32),
            hidden_sectors: u32::try_from(start).unwrap_or(0),
            // The file was truncated and resized: it reads as zeros, so
            // the capacity files' zero padding stays a hole.
            device_zeroed: true,
            ..Default::default()
        }
    }
}

fn write_image_to(trees: &Trees, tmp: &Path, out: &Path) -> Result<ImageReport, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let (layout, table) = (&trees.layout, &trees.table);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io(tmp))?;
    file.set_len(layout.disk_bytes()).map_err(io(tmp))?;
    {
        let mut f = file.try_clone().map_err(io(tmp))?;
        table.write(&mut f).map_err(io(tmp))?;
    }
    let image = ImageFile {
        file: &file,
        path: tmp,
        layout,
        table,
        mtime: trees.mtime,
    };
    // The root, once in memory, into both slots.
    let sq = root_image(trees)?;
    for role in [Role::RootA, Role::RootB] {
        let mut dev = image.partition(role)?;
        if sq.len() as u64 > dev.len() {
            return Err(ImageError::FileSystem {
                part: "root",
                reason: format!(
                    "the root file system is {} bytes but its partition holds {}: raise root_bytes",
                    sq.len(),
                    dev.len()
                ),
            });
        }
        dev.write_at(0, &sq).map_err(io(tmp))?;
    }
    board::for_platform(layout.platform()).write_boot(&trees.boot, &image)?;
    let perm_guid = table.entry(Role::Perm).map(|e| e.guid).unwrap_or_default();
    let mut perm = image.partition(Role::Perm)?;
    krazy_fs::ext4::format(
        &mut perm,
        &krazy_fs::ext4::Ext4Options::new(perm_guid.to_gpt_bytes(), trees.mtime).label("perm"),
    )
    .map_err(|e| fs_err("perm")(e.to_string()))?;
    perm.flush().map_err(io(tmp))?;
    file.sync_all().map_err(io(tmp))?;
    let partitions = table
        .entries()
        .iter()
        .map(|e| PartitionReport {
            name: e.partition.name.to_string(),
            number: e.partition.number,
            start: e.partition.start_bytes(),
            bytes: e.partition.size_bytes(),
            partuuid: e.partuuid(),
        })
        .collect();
    Ok(ImageReport {
        path: out.to_path_buf(),
        disk_bytes: layout.disk_bytes(),
        build_id: trees.build_id.clone(),
        root_bytes: sq.len() as u64,
        initramfs_bytes: trees.initramfs.as_ref().map(|i| i.len() as u64),
        partitions,
    })
}

/// The root file system as squashfs bytes (what each root slot holds, and
/// the `root` part of an update).
pub fn root_image(trees: &Trees) -> Result<Vec<u8>, ImageError> {
    let mut sq = Cursor::new(Vec::new());
    krazy_fs::squashfs::write(
        &mut sq,
        &trees.root,
        &krazy_fs::squashfs::SquashfsOptions {
            mkfs_time: u32::try_from(trees.mtime).unwrap_or(u32::MAX),
            ..Default::default()
        },
    )
    .map_err(|e| fs_err("root")(e.to_string()))?;
    Ok(sq.into_inner())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
