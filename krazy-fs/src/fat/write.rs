//! The FAT writer: plans names, sizes and clusters for the whole tree first,
//! then writes the volume front to back in one sequential pass.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::Read;

use super::names::{exact_short, lfn_checksum, lfn_entries, push_lfn, ShortNames};
use super::{dos_datetime, io_err, Error, FatOptions, FatSummary, FatType, NAME_RULES};
use crate::dev::BlockDevice;
use crate::tree::{Contents, Kind, Tree, TreeError};

use super::geometry::Geometry;
use super::records::*;

pub(crate) const SECTOR: u32 = 512;
/// Entries a directory may hold (FAT's 2 MiB directory limit).
pub(crate) const MAX_DIR_ENTRIES: usize = 65536;
/// Entries the FAT16 root can have (a 16-bit count, whole sectors).
pub(super) const MAX_FAT16_ROOT: usize = 65520;
pub(super) const ATTR_READ_ONLY: u8 = 0x01;
pub(super) const ATTR_VOLUME_ID: u8 = 0x08;
pub(super) const ATTR_DIRECTORY: u8 = 0x10;
pub(super) const ATTR_ARCHIVE: u8 = 0x20;
pub(super) const CHUNK: usize = 1 << 20;

/// One directory entry to write (besides `.`, `..` and the label).
struct Child {
    node: usize,
    short: [u8; 11],
    lfn: Option<Vec<u16>>,
}

/// Writes a FAT16 or FAT32 volume holding `tree` over the whole of `dev`.
///
/// Everything is planned before the first write: names that FAT cannot
/// hold, a tree too big for the device and capacities smaller than their
/// contents fail without touching `dev`. Every file and directory gets one
/// contiguous run of clusters; capacity files get clusters for their whole
/// capacity. Writes are not flushed; call [`BlockDevice::flush`] when
/// durability matters.
pub fn write(
    dev: &mut impl BlockDevice,
    tree: &Tree,
    opts: &FatOptions,
) -> Result<FatSummary, Error> {
    let v = tree.validate(&NAME_RULES)?;
    let n = v.nodes.len();
    for node in &v.nodes[1..] {
        if node.name.ends_with(['.', ' ']) {
            return Err(TreeError::BadName {
                path: node.path.to_string(),
                format: NAME_RULES.format,
                reason: "ends with a dot or space, which FAT drops".into(),
            }
            .into());
        }
    }
    let label = label_bytes(opts.label.as_deref())?;
    let oem = oem_bytes(&opts.oem_name)?;

    // Sizes of files, capacities checked.
    let mut size = vec![0u64; n];
    let mut len = vec![0u64; n];
    let mut pad = vec![0u8; n];
    for (i, node) in v.nodes.iter().enumerate() {
        if let Kind::File(c) = &node.entry.kind {
            let l = c
                .len()
                .map_err(io_err(format!("reading the size of {:?}", node.path)))?;
            len[i] = l;
            size[i] = l;
        }
    }
    let index: std::collections::HashMap<&str, usize> = v
        .nodes
        .iter()
        .enumerate()
        .map(|(i, nd)| (nd.path, i))
        .collect();
    for (path, cap) in &opts.capacities {
        let i = match index.get(path.as_str()) {
            Some(&i) if matches!(v.nodes[i].entry.kind, Kind::File(_)) => i,
            _ => return Err(Error::CapacityNotAFile { path: path.clone() }),
        };
        if len[i] > cap.bytes {
            return Err(Error::CapacityTooSmall {
                path: path.clone(),
                len: len[i],
                capacity: cap.bytes,
            });
        }
        size[i] = cap.bytes;
        pad[i] = cap.pad.byte();
    }
    for (i, node) in v.nodes.iter().enumerate() {
        if size[i] > u64::from(u32::MAX) {
            return Err(Error::FileTooLarge {
                path: node.path.to_string(),
                size: size[i],
            });
        }
    }

    let bytes = dev.len();
    let fat32 = match opts.fat_type {
        FatType::Fat16 => false,
        FatType::Fat32 => true,
        FatType::Auto => bytes >= 512 << 20,
    };

    // Names and entry counts per directory.
    let mut dirs: Vec<(usize, Vec<Child>, usize)> = Vec::new();
    for (i, node) in v.nodes.iter().enumerate() {
        if !node.entry.is_dir() {
            continue;
        }
        let mut names = ShortNames::default();
        let exact: Vec<Option<[u8; 11]>> = node
            .children
            .iter()
            .map(|&c| exact_short(v.nodes[c].name))
            .collect();
        for s in exact.iter().flatten() {
            names.reserve(*s);
        }
        let mut children = Vec::with_capacity(node.children.len());
        let mut slots = if i == 0 {
            usize::from(label.is_some())
        } else {
            2
        };
        for (&c, ex) in node.children.iter().zip(exact) {
            let child = match ex {
                Some(short) => Child {
                    node: c,
                    short,
                    lfn: None,
                },
                None => {
                    let name = v.nodes[c].name;
                    let short = names
                        .generate(name)
                        .ok_or_else(|| Error::ShortNamesExhausted {
                            path: v.nodes[c].path.to_string(),
                        })?;
                    Child {
                        node: c,
                        short,
                        lfn: Some(name.encode_utf16().collect()),
                    }
                }
            };
            slots += 1 + child.lfn.as_ref().map_or(0, |u| lfn_entries(u.len()));
            children.push(child);
        }
        if i == 0 && !fat32 && slots > MAX_FAT16_ROOT {
            return Err(Error::RootDirFull {
                needed: slots,
                max: MAX_FAT16_ROOT,
            });
        }
        if slots > MAX_DIR_ENTRIES {
            return Err(Error::DirectoryTooLarge {
                path: node.path.to_string(),
                needed: slots,
            });
        }
        dirs.push((i, children, slots));
    }

    // Geometry.
    let root_slots = dirs[0].2;
    let root_entries = if fat32 {
        0
    } else {
        root_slots.max(512).next_multiple_of(16) as u32
    };
    let g = Geometry::choose(bytes, fat32, root_entries, opts.sectors_per_cluster)?;
    let cs = u64::from(g.cluster_size());

    // Clusters: directories first (FAT32's root first of all), then files,
    // each one contiguous run.
    let mut first = vec![0u32; n];
    let mut count = vec![0u64; n];
    for (i, _, slots) in &dirs {
        if *i != 0 || fat32 {
            count[*i] = ((*slots as u64) * 32).div_ceil(cs).max(1);
        }
    }
    for (i, node) in v.nodes.iter().enumerate() {
        if !node.entry.is_dir() {
            count[i] = size[i].div_ceil(cs);
        }
    }
    let order: Vec<usize> = dirs
        .iter()
        .map(|d| d.0)
        .chain((0..n).filter(|&i| !v.nodes[i].entry.is_dir()))
        .collect();
    let needed: u64 = count.iter().sum();
    if needed > u64::from(g.cluster_count) {
        return Err(Error::DoesNotFit {
            needed,
            available: g.cluster_count,
            cluster_size: g.cluster_size(),
        });
    }
    let mut next = 2u32;
    for &i in &order {
        if count[i] > 0 {
            first[i] = next;
            next += count[i] as u32;
        }
    }
    let used = next - 2;

    // Write, front to back.
    let mut w = SeqWriter::new(dev);
    w.skip_zeros = opts.device_zeroed;
    let boot = boot_sector(&g, opts, &label, &oem);
    w.write(&boot)?;
    if g.fat32 {
        let info = fs_info(&g, used);
        w.write(&info)?;
        w.fill(0, 4 * SECTOR as usize)?; // sectors 2..6
        w.write(&boot)?; // backup boot sector at 6
        w.write(&info)?; // backup FSInfo at 7
        w.fill(0, ((g.reserved - 8) * SECTOR) as usize)?;
    } else {
        w.fill(0, ((g.reserved - 1) * SECTOR) as usize)?;
    }
    let fat = fat_table(&g, &first, &count, &order, next);
    let fat_bytes = u64::from(g.fat_sectors) * u64::from(SECTOR);
    for _ in 0..2 {
        w.write(&fat)?;
        w.fill_u64(0, fat_bytes - fat.len() as u64)?;
    }
    let times = |i: usize| {
        let t = opts.timestamp.unwrap_or(v.nodes[i].entry.mtime);
        (dos_datetime(t), (t % 2) as u8 * 100)
    };
    for (i, children, slots) in &dirs {
        let mut buf = Vec::with_capacity(slots * 32);
        if *i == 0 {
            if let Some(l) = &label {
                buf.extend_from_slice(&short_entry(l, ATTR_VOLUME_ID, times(0), 0, 0));
            }
        } else {
            let parent = v.nodes[*i].parent;
            buf.extend_from_slice(&short_entry(
                b".          ",
                ATTR_DIRECTORY,
                times(*i),
                first[*i],
                0,
            ));
            buf.extend_from_slice(&short_entry(
                b"..         ",
                ATTR_DIRECTORY,
                times(*i),
                if parent == 0 { 0 } else { first[parent] },
                0,
            ));
        }
        for ch in children {
            if let Some(units) = &ch.lfn {
                push_lfn(&mut buf, units, lfn_checksum(&ch.short));
            }
            let e = v.nodes[ch.node].entry;
            let attr = if e.is_dir() {
                ATTR_DIRECTORY
            } else if e.mode & 0o222 == 0 {
                ATTR_ARCHIVE | ATTR_READ_ONLY
            } else {
                ATTR_ARCHIVE
            };
            buf.extend_from_slice(&short_entry(
                &ch.short,
                attr,
                times(ch.node),
                first[ch.node],
                size[ch.node] as u32,
            ));
        }
        let room = if *i == 0 && !fat32 {
            u64::from(g.root_sectors()) * u64::from(SECTOR)
        } else {
            w.seek(g.cluster_offset(first[*i]))?;
            count[*i] * cs
        };
        w.write(&buf)?;
        w.fill_u64(0, room - buf.len() as u64)?;
    }
    let mut files = 0;
    for &i in &order[dirs.len()..] {
        files += 1;
        if count[i] == 0 {
            continue;
        }
        w.seek(g.cluster_offset(first[i]))?;
        let Kind::File(c) = &v.nodes[i].entry.kind else {
            continue;
        };
        write_contents(&mut w, c, len[i], v.nodes[i].path)?;
        w.fill_u64(pad[i], size[i] - len[i])?;
        w.fill_u64(0, count[i] * cs - size[i])?;
    }
    w.flush_buf()?;
    Ok(FatSummary {
        fat_type: if fat32 {
            FatType::Fat32
        } else {
            FatType::Fat16
        },
        total_sectors: g.total_sectors,
        cluster_size: g.cluster_size(),
        cluster_count: g.cluster_count,
        used_clusters: used,
        root_entries: root_entries as u16,
        data_offset: g.cluster_offset(2),
        files,
        dirs: dirs.len() - 1,
    })
}

fn write_contents<D: BlockDevice>(
    w: &mut SeqWriter<'_, D>,
    c: &Contents,
    len: u64,
    path: &str,
) -> Result<(), Error> {
    let changed = || Error::ContentsChanged {
        path: path.to_string(),
        expected: len,
    };
    match c {
        Contents::Bytes(b) => {
            if b.len() as u64 != len {
                return Err(changed());
            }
            w.write(b)
        }
        Contents::Host(_) => {
            let what = || format!("reading the contents of {path:?}");
            let mut r = c.open().map_err(io_err(what()))?;
            let mut left = len;
            while left > 0 {
                let n = w.read_into(&mut r, left).map_err(io_err(what()))?;
                if n == 0 {
                    return Err(changed());
                }
                left -= n as u64;
            }
            let mut extra = [0u8; 1];
            if r.read(&mut extra).map_err(io_err(what()))? != 0 {
                return Err(changed());
            }
            Ok(())
        }
    }
}

/// Buffers writes at increasing offsets into large device writes.
struct SeqWriter<'a, D: BlockDevice> {
    dev: &'a mut D,
    /// Device offset of `buf[0]`.
    pos: u64,
    buf: Vec<u8>,
    /// Skip long runs of zeros instead of writing them (the device reads
    /// as zeros already).
    skip_zeros: bool,
}

impl<'a, D: BlockDevice> SeqWriter<'a, D> {
    fn new(dev: &'a mut D) -> Self {
        Self {
            dev,
            pos: 0,
            buf: Vec::with_capacity(CHUNK),
            skip_zeros: false,
        }
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            let at = self.pos;
            self.dev.write_at(at, &self.buf).map_err(io_err(format!(
                "writing {} bytes at offset {at}",
                self.buf.len()
            )))?;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn seek(&mut self, to: u64) -> Result<(), Error> {
        if to != self.pos + self.buf.len() as u64 {
            self.flush_buf()?;
            self.pos = to;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.buf.len() + data.len() <= CHUNK {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.flush_buf()?;
        if data.len() >= CHUNK {
            let at = self.pos;
            self.dev.write_at(at, data).map_err(io_err(format!(
                "writing {} bytes at offset {at}",
                data.len()
            )))?;
            self.pos += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    fn fill(&mut self, byte: u8, n: usize) -> Result<(), Error> {
        self.fill_u64(byte, n as u64)
    }

    fn fill_u64(&mut self, byte: u8, mut n: u64) -> Result<(), Error> {
        if byte == 0 && self.skip_zeros && n >= CHUNK as u64 {
            self.flush_buf()?;
            self.pos += n;
            return Ok(());
        }
        while n > 0 {
            if self.buf.len() == CHUNK {
                self.flush_buf()?;
            }
            let k = n.min((CHUNK - self.buf.len()) as u64) as usize;
            self.buf.resize(self.buf.len() + k, byte);
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads up to `max` bytes from `r` into the buffer; returns how many.
    fn read_into(&mut self, r: &mut dyn Read, max: u64) -> std::io::Result<usize> {
        if self.buf.len() == CHUNK {
            self.flush_buf().map_err(|e| match e {
                Error::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })?;
        }
        let start = self.buf.len();
        let k = max.min((CHUNK - start) as u64) as usize;
        self.buf.resize(start + k, 0);
        let got = loop {
            match r.read(&mut self.buf[start..]) {
                Ok(g) => break g,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(start + got);
        Ok(got)
    }
}
