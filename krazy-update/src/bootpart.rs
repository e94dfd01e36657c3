//! The `pi3` boot part of protocol 2: a cpio "newc" archive of the files of
//! the slot's boot partition (firmware, kernel, device trees, overlays,
//! `config.txt`, `cmdline.txt`), instead of protocol 1's whole partition
//! image (128 MiB, about 13 minutes over a Pi 3's USB network).
//!
//! The device reads the archive into memory, bounded by the partition's
//! size ([`read_tree`]); only once the whole part verified against the
//! manifest does [`install`] write a fresh FAT over the slot's boot
//! partition, keeping the label, volume id and hidden sectors the
//! partition had (what the image builder gave it). Until the switch the
//! slot is not bootable, so a power cut mid-write costs nothing.
//! [`write_tree`] makes the archive on the build host.

use std::io::{self, Read, Write};

use krazy_fs::fat::{self, FatOptions};
use krazy_fs::tree::{Contents, Kind};
use krazy_fs::{BlockDevice, Tree};

use crate::bootarchive::{for_each_entry, ArchiveError, ArchiveWriter};
use crate::protocol::Slot;

/// The most members a boot archive may have.
pub const MAX_MEMBERS: usize = 4096;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

fn check_name(name: &str) -> Result<(), ArchiveError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255)
        || name.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(ArchiveError::Unknown(name.chars().take(80).collect()));
    }
    Ok(())
}

/// Reads a boot archive from `src` into a tree: regular files and
/// directories only, relative names without `.` or `..`, no duplicates, at
/// most [`MAX_MEMBERS`] members and `limit` bytes of file data in all.
pub fn read_tree(src: &mut dyn Read, limit: u64) -> Result<Tree, ArchiveError> {
    let mut tree = Tree::new();
    let mut total = 0u64;
    let mut members = 0usize;
    for_each_entry(src, |m, body| {
        members += 1;
        if members > MAX_MEMBERS {
            return Err(ArchiveError::TooMany(MAX_MEMBERS));
        }
        let name = m.name.strip_prefix("./").unwrap_or(&m.name);
        if name == "." {
            return Ok(());
        }
        check_name(name)?;
        if tree.get(name).is_some() {
            return Err(ArchiveError::Duplicate(name.to_string()));
        }
        let tree_err = |e: krazy_fs::tree::TreeError| ArchiveError::Tree(e.to_string());
        if let Some((parent, _)) = name.rsplit_once('/') {
            tree.add_dir_all(parent, m.mtime).map_err(tree_err)?;
        }
        match m.mode & S_IFMT {
            S_IFDIR => tree
                .add_dir(name, m.mode & 0o7777, m.mtime)
                .map_err(tree_err),
            S_IFREG => {
                total = total.saturating_add(m.size);
                if total > limit {
                    return Err(ArchiveError::TooLarge {
                        name: "the boot files",
                        size: total,
                        path: "the boot partition".into(),
                        capacity: limit,
                    });
                }
                // Bounded by `limit` (the partition's size), checked above.
                let mut data = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
                body.read_to_end(&mut data).map_err(ArchiveError::Read)?;
                if data.len() as u64 != m.size {
                    return Err(ArchiveError::Read(io::ErrorKind::UnexpectedEof.into()));
                }
                tree.add_file(name, Contents::bytes(data), m.mode & 0o7777, m.mtime)
                    .map_err(tree_err)
            }
            _ => Err(ArchiveError::NotFile(name.to_string())),
        }
    })?;
    if !tree.iter().any(|(_, e)| matches!(e.kind, Kind::File(_))) {
        return Err(ArchiveError::Missing("any file"));
    }
    Ok(tree)
}

/// Writes `tree` (directories and regular files) as a boot archive to
/// `out`, in path order, every member's time `mtime`.
pub fn write_tree(out: impl Write, tree: &Tree, mtime: u64) -> io::Result<u64> {
    let t = u32::try_from(mtime).unwrap_or(u32::MAX);
    let mut w = ArchiveWriter::new(out);
    for (path, e) in tree.iter() {
        let path = path.trim_start_matches('/');
        match &e.kind {
            Kind::Dir => w.member(path, S_IFDIR | (e.mode & 0o7777), t, &[])?,
            Kind::File(c) => w.member(path, S_IFREG | (e.mode & 0o7777), t, &c.read_all()?)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{path}: a boot partition holds only files and directories"),
                ))
            }
        }
    }
    w.finish()
}

/// What a FAT boot sector says about its volume: kept across a rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeIdentity {
    /// The volume serial number.
    pub volume_id: u32,
    /// The label, if the boot sector has one.
    pub label: Option<String>,
    /// The partition's start sector on its disk.
    pub hidden_sectors: u32,
}

/// Reads the identity of the FAT volume on `dev`, or `None` when its first
/// sector is not a FAT boot sector.
pub fn volume_identity(dev: &mut dyn BlockDevice) -> Option<VolumeIdentity> {
    let mut b = [0u8; 512];
    dev.read_at(0, &mut b).ok()?;
    if b[510..] != [0x55, 0xaa] {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let fat32 = u16::from_le_bytes([b[0x16], b[0x17]]) == 0;
    let (sig, id, label) = if fat32 {
        (0x42, 0x43, 0x47)
    } else {
        (0x26, 0x27, 0x2b)
    };
    if b[sig] != 0x29 {
        return None;
    }
    let text = String::from_utf8_lossy(&b[label..label + 11])
        .trim_end()
        .to_string();
    Some(VolumeIdentity {
        volume_id: u32_at(id),
        label: (!text.is_empty() && text != "NO NAME").then_some(text),
        hidden_sectors: u32_at(0x1c),
    })
}

impl VolumeIdentity {
    /// The identity a fresh image gives `slot`'s boot partition, and what
    /// [`install`] falls back to on a volume it cannot read: label
    /// `KRAZY-A`/`KRAZY-B`.
    pub fn new(slot: Slot, volume_id: u32, hidden_sectors: u32) -> Self {
        VolumeIdentity {
            volume_id,
            label: Some(slot_label(slot)),
            hidden_sectors,
        }
    }
}

fn slot_label(slot: Slot) -> String {
    format!("KRAZY-{}", slot.as_str().to_ascii_uppercase())
}

/// The one writer of a pi3 boot slot's FAT, for a fresh image (krazy-build)
/// and for an update ([`install`]): `tree` over the whole of `dev`, with
/// the volume identity `id` and every time `mtime`. `zeroed` says `dev`
/// already reads as zeros (a new sparse image), so runs of zeros are
/// skipped; the bytes that end up on `dev` are the same either way.
pub fn format(
    dev: &mut dyn BlockDevice,
    tree: &Tree,
    id: &VolumeIdentity,
    mtime: u64,
    zeroed: bool,
) -> Result<(), fat::Error> {
    let opts = FatOptions {
        label: id.label.clone(),
        timestamp: Some(mtime),
        volume_id: id.volume_id,
        hidden_sectors: id.hidden_sectors,
        device_zeroed: zeroed,
        ..Default::default()
    };
    let mut d = dev;
    fat::write(&mut d, tree, &opts).map(|_| ())
}

/// Writes a FAT holding `tree` over the whole of `dev` (slot `slot`'s boot
/// partition) with [`format`], keeping the volume's identity (a volume it
/// cannot read gets [`VolumeIdentity::new`] with the default volume id and
/// no hidden sectors), with every time `mtime`.
pub fn install(
    dev: &mut dyn BlockDevice,
    slot: Slot,
    tree: &Tree,
    mtime: u64,
) -> Result<(), ArchiveError> {
    let mut id = volume_identity(dev)
        .unwrap_or_else(|| VolumeIdentity::new(slot, FatOptions::default().volume_id, 0));
    if id.label.is_none() {
        id.label = Some(slot_label(slot));
    }
    format(dev, tree, &id, mtime, false).map_err(|e| ArchiveError::Write {
        path: format!("the boot-{slot} partition"),
        source: io::Error::other(e.to_string()),
    })?;
    dev.flush().map_err(|source| ArchiveError::Write {
        path: format!("the boot-{slot} partition"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        let mut t = Tree::new();
        t.add_file(
            "config.txt",
            Contents::bytes(&b"arm_64bit=1\n"[..]),
            0o644,
            5,
        )
        .unwrap();
        t.add_dir_all("overlays", 5).unwrap();
        t.add_file(
            "overlays/x.dtbo",
            Contents::bytes(vec![7u8; 5000]),
            0o644,
            5,
        )
        .unwrap();
        t
    }

    #[test]
    fn round_trip_and_install_keeps_the_identity() {
        let mut ar = Vec::new();
        write_tree(&mut ar, &tree(), 1_700_000_000).unwrap();
        let back = read_tree(&mut &ar[..], 1 << 20).unwrap();
        let names: Vec<&str> = back.iter().map(|(p, _)| p).collect();
        assert_eq!(names, ["config.txt", "overlays", "overlays/x.dtbo"]);

        let mut dev = krazy_fs::MemDevice::zeroed(8 << 20);
        let opts = FatOptions {
            label: Some("KRAZY-B".into()),
            volume_id: 0x1234_5678,
            hidden_sectors: 2048,
            ..Default::default()
        };
        fat::write(&mut dev, &Tree::new(), &opts).unwrap();
        install(&mut dev, Slot::B, &back, 1_700_000_000).unwrap();
        let id = volume_identity(&mut dev).unwrap();
        assert_eq!(
            id,
            VolumeIdentity {
                volume_id: 0x1234_5678,
                label: Some("KRAZY-B".into()),
                hidden_sectors: 2048
            }
        );
        let mut v = fat::FatVolume::open(dev).unwrap();
        assert_eq!(v.read_file("overlays/x.dtbo").unwrap(), vec![7u8; 5000]);
    }

    #[test]
    fn bad_archives_are_refused() {
        let mut t = Tree::new();
        t.add_file("big", Contents::bytes(vec![1u8; 3000]), 0o644, 0)
            .unwrap();
        let mut ar = Vec::new();
        write_tree(&mut ar, &t, 0).unwrap();
        assert!(matches!(
            read_tree(&mut &ar[..], 2000),
            Err(ArchiveError::TooLarge { .. })
        ));
        for name in ["../etc/passwd", "/abs", "a//b", "a/./b"] {
            let mut ar = Vec::new();
            let mut w = ArchiveWriter::new(&mut ar);
            w.member(name, 0o100644, 0, b"x").unwrap();
            w.finish().unwrap();
            assert!(read_tree(&mut &ar[..], 1 << 20).is_err(), "{name}");
        }
        let mut ar = Vec::new();
        let mut w = ArchiveWriter::new(&mut ar);
        w.member("link", 0o120777, 0, b"target").unwrap();
        w.finish().unwrap();
        assert!(matches!(
            read_tree(&mut &ar[..], 1 << 20),
            Err(ArchiveError::NotFile(_))
        ));
    }
}
