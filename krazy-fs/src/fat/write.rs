//! The FAT writer: plans names, sizes and clusters for the whole tree first,
//! then writes the volume front to back in one sequential pass.

use std::io::Read;

use super::names::{exact_short, lfn_checksum, lfn_entries, push_lfn, short_char_ok, ShortNames};
use super::{dos_datetime, io_err, Error, FatOptions, FatSummary, FatType, NAME_RULES};
use crate::dev::BlockDevice;
use crate::tree::{Contents, Kind, Tree, TreeError};

pub(crate) const SECTOR: u32 = 512;
const FAT16_MIN: u32 = 4085;
const FAT16_MAX: u32 = 65524;
const FAT32_MIN: u32 = 65525;
const FAT32_MAX: u32 = 0x0FFF_FFF4;
/// Entries a directory may hold (FAT's 2 MiB directory limit).
pub(crate) const MAX_DIR_ENTRIES: usize = 65536;
/// Entries the FAT16 root can have (a 16-bit count, whole sectors).
const MAX_FAT16_ROOT: usize = 65520;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const CHUNK: usize = 1 << 20;

/// Where everything sits in a volume (sectors of 512 bytes).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    fat32: bool,
    total_sectors: u32,
    sectors_per_cluster: u32,
    reserved: u32,
    fat_sectors: u32,
    root_entries: u32,
    cluster_count: u32,
}

impl Geometry {
    fn root_sectors(&self) -> u32 {
        (self.root_entries * 32).div_ceil(SECTOR)
    }
    fn cluster_size(&self) -> u32 {
        self.sectors_per_cluster * SECTOR
    }
    fn data_sector(&self) -> u32 {
        self.reserved + 2 * self.fat_sectors + self.root_sectors()
    }
    fn cluster_offset(&self, cluster: u32) -> u64 {
        (u64::from(self.data_sector())
            + u64::from(cluster - 2) * u64::from(self.sectors_per_cluster))
            * u64::from(SECTOR)
    }

    /// The layout for `total` sectors, or `None` when the metadata alone does not fit.
    fn compute(total: u32, spc: u32, fat32: bool, root_entries: u32) -> Option<Geometry> {
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
    fn choose(
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

/// The FAT for clusters below `next` (everything after is free, zero).
fn fat_table(g: &Geometry, first: &[u32], count: &[u64], order: &[usize], next: u32) -> Vec<u8> {
    let width = if g.fat32 { 4 } else { 2 };
    let mut fat = vec![0u8; next as usize * width];
    let mut put = |k: u32, val: u32| {
        let o = k as usize * width;
        if g.fat32 {
            fat[o..o + 4].copy_from_slice(&val.to_le_bytes());
        } else {
            fat[o..o + 2].copy_from_slice(&(val as u16).to_le_bytes());
        }
    };
    let eoc = if g.fat32 { 0x0FFF_FFFF } else { 0xFFFF };
    put(0, if g.fat32 { 0x0FFF_FFF8 } else { 0xFFF8 });
    put(1, eoc);
    for &i in order {
        if count[i] == 0 {
            continue;
        }
        let last = first[i] + count[i] as u32 - 1;
        for k in first[i]..last {
            put(k, k + 1);
        }
        put(last, eoc);
    }
    fat
}

fn short_entry(
    name: &[u8; 11],
    attr: u8,
    t: ((u16, u16), u8),
    cluster: u32,
    size: u32,
) -> [u8; 32] {
    let ((date, time), tenth) = t;
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[13] = tenth;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

fn label_bytes(label: Option<&str>) -> Result<Option<[u8; 11]>, Error> {
    let Some(l) = label else { return Ok(None) };
    let bad = |reason| Error::BadOption {
        what: "volume label",
        value: l.to_string(),
        reason,
    };
    let up = l.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 {
        return Err(bad("must be 1 to 11 characters"));
    }
    if up.starts_with(' ') || !up.bytes().all(|b| b == b' ' || short_char_ok(b)) {
        return Err(bad(
            "only A-Z, 0-9, spaces (not first) and !#$%&'()-@^_`{}~ are allowed",
        ));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(Some(out))
}

fn oem_bytes(oem: &str) -> Result<[u8; 8], Error> {
    if oem.len() > 8 || !oem.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::BadOption {
            what: "OEM name",
            value: oem.to_string(),
            reason: "must be at most 8 printable ASCII characters",
        });
    }
    let mut out = [b' '; 8];
    out[..oem.len()].copy_from_slice(oem.as_bytes());
    Ok(out)
}

/// A tiny real-mode program for the boot sector that says the volume is not
/// bootable and halts (written for krazy; the offsets are relative jumps).
fn boot_stub(start: usize) -> Vec<u8> {
    let msg_addr = (0x7c00 + start + 27) as u16;
    let mut code = vec![
        0xfa, // cli
        0x31,
        0xc0, // xor ax, ax
        0x8e,
        0xd8, // mov ds, ax
        0xbe,
        msg_addr as u8,
        (msg_addr >> 8) as u8, // mov si, msg
        0xfc,                  // cld
        0xfb,                  // sti
        0xac,                  // loop: lodsb
        0x84,
        0xc0, // test al, al
        0x74,
        0x09, // jz halt
        0xb4,
        0x0e, // mov ah, 0x0e
        0xbb,
        0x07,
        0x00, // mov bx, 7
        0xcd,
        0x10, // int 0x10
        0xeb,
        0xf2, // jmp loop
        0xf4, // halt: hlt
        0xeb,
        0xfd, // jmp halt
    ];
    code.extend_from_slice(b"This is not a bootable disk (krazy FAT volume).\r\n\0");
    code
}

fn boot_sector(
    g: &Geometry,
    opts: &FatOptions,
    label: &Option<[u8; 11]>,
    oem: &[u8; 8],
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let start: usize = if g.fat32 { 0x5a } else { 0x3e };
    b[0] = 0xeb;
    b[1] = (start - 2) as u8;
    b[2] = 0x90;
    b[3..11].copy_from_slice(oem);
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes());
    b[16] = 2;
    b[17..19].copy_from_slice(&(g.root_entries as u16).to_le_bytes());
    if !g.fat32 && g.total_sectors < 65536 {
        b[19..21].copy_from_slice(&(g.total_sectors as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
    }
    b[21] = 0xf8;
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    let ext = if g.fat32 {
        b[22..24].fill(0);
        b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
        b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
        b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
        64
    } else {
        b[22..24].copy_from_slice(&(g.fat_sectors as u16).to_le_bytes());
        36
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    b[ext + 3..ext + 7].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(label.as_ref().unwrap_or(b"NO NAME    "));
    b[ext + 18..ext + 26].copy_from_slice(if g.fat32 { b"FAT32   " } else { b"FAT16   " });
    let stub = boot_stub(start);
    b[start..start + stub.len()].copy_from_slice(&stub);
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

fn fs_info(g: &Geometry, used: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&(g.cluster_count - used).to_le_bytes());
    let next_free = if used < g.cluster_count {
        used + 2
    } else {
        u32::MAX
    };
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
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
