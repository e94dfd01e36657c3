//! A minimal FAT16/FAT32 reader and the in-place editor over it.
//!
//! Everything read comes from an untrusted device: every field is checked,
//! every cluster chain is followed with a bound (so cycles end), every
//! allocation is bounded by the device's size, and nothing here panics.

pub use super::dirent::DirEntry;
use super::dirent::{le16, le32, parse_dir};
use super::write::MAX_DIR_ENTRIES;
use super::{io_err, Error, FatType};
use crate::dev::BlockDevice;

const FAT_BLOCK: u64 = 4096;
const CHUNK: usize = 1 << 20;

/// Where a directory's entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirLoc {
    /// The FAT16 root: a fixed region of `entries` entries at a byte offset.
    Fixed { offset: u64, entries: u32 },
    /// A cluster chain starting here.
    Chain(u32),
}

/// An opened FAT16 or FAT32 volume on a [`BlockDevice`].
///
/// Only [`FatVolume::overwrite`] writes, and only into the clusters of the
/// file it is given. The device may be shorter than the volume claims (a
/// truncated image); reads past its end fail with [`Error::Io`].
#[derive(Debug)]
pub struct FatVolume<D: BlockDevice> {
    dev: D,
    fat32: bool,
    cluster_size: u32,
    fat_offset: u64,
    fat_bytes: u64,
    data_offset: u64,
    cluster_count: u32,
    root: DirLoc,
    cache: Option<(u64, Vec<u8>)>,
}

impl<D: BlockDevice> FatVolume<D> {
    /// Reads and checks the boot sector. The FAT type follows from the
    /// cluster count, as the specification says; FAT12 is refused.
    pub fn open(mut dev: D) -> Result<Self, Error> {
        let bad = Error::BadBootSector;
        if dev.len() < 512 {
            return Err(bad("the device is shorter than one sector"));
        }
        let mut b = [0u8; 512];
        dev.read_at(0, &mut b)
            .map_err(io_err("reading the boot sector"))?;
        if b[510] != 0x55 || b[511] != 0xaa {
            return Err(bad("no 0x55AA signature"));
        }
        let bps = u32::from(le16(&b, 11));
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad("bytes per sector is not 512, 1024, 2048 or 4096"));
        }
        let spc = u32::from(b[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad("sectors per cluster is not a power of two"));
        }
        let cluster_size = bps * spc;
        if cluster_size > 64 * 1024 {
            return Err(bad("clusters are larger than 64 KiB"));
        }
        let reserved = u64::from(le16(&b, 14));
        if reserved == 0 {
            return Err(bad("no reserved sectors"));
        }
        let nfats = u64::from(b[16]);
        if !(1..=4).contains(&nfats) {
            return Err(bad("the number of FATs is not 1 to 4"));
        }
        let root_entries = u32::from(le16(&b, 17));
        let total = match le16(&b, 19) {
            0 => u64::from(le32(&b, 32)),
            t => u64::from(t),
        };
        let fat16_size = u64::from(le16(&b, 22));
        let fat_size = if fat16_size != 0 {
            fat16_size
        } else {
            u64::from(le32(&b, 36))
        };
        if total == 0 || fat_size == 0 {
            return Err(bad("zero total sectors or FAT size"));
        }
        let bps64 = u64::from(bps);
        let root_sectors = (u64::from(root_entries) * 32).div_ceil(bps64);
        let data_sector = reserved + nfats * fat_size + root_sectors;
        if data_sector >= total {
            return Err(bad("the metadata is larger than the volume"));
        }
        let clusters = (total - data_sector) / u64::from(spc);
        if clusters < 4085 {
            return Err(bad("fewer than 4085 clusters: FAT12 is not supported"));
        }
        let fat32 = clusters >= 65525;
        if clusters > 0x0FFF_FFF4 {
            return Err(bad("more clusters than FAT32 can address"));
        }
        let width = if fat32 { 4 } else { 2 };
        let fat_bytes = fat_size * bps64;
        if fat_bytes < (clusters + 2) * width {
            return Err(bad("the FAT is too small for the cluster count"));
        }
        let fat_offset = reserved * bps64;
        let root = if fat32 {
            if root_entries != 0 || fat16_size != 0 {
                return Err(bad(
                    "a FAT32 cluster count with a FAT16 root directory or FAT size",
                ));
            }
            let rc = le32(&b, 44) & 0x0FFF_FFFF;
            if rc < 2 || u64::from(rc) >= clusters + 2 {
                return Err(bad("the FAT32 root cluster is out of range"));
            }
            DirLoc::Chain(rc)
        } else {
            if root_entries == 0 {
                return Err(bad("a FAT16 cluster count with no root directory entries"));
            }
            DirLoc::Fixed {
                offset: (reserved + nfats * fat_size) * bps64,
                entries: root_entries,
            }
        };
        Ok(Self {
            dev,
            fat32,
            cluster_size,
            fat_offset,
            fat_bytes,
            data_offset: data_sector * bps64,
            // At most 0x0FFF_FFF4 (checked above).
            cluster_count: u32::try_from(clusters).unwrap_or(u32::MAX),
            root,
            cache: None,
        })
    }

    /// FAT16 or FAT32.
    pub fn fat_type(&self) -> FatType {
        if self.fat32 {
            FatType::Fat32
        } else {
            FatType::Fat16
        }
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.cluster_size
    }

    /// Number of data clusters.
    pub fn cluster_count(&self) -> u32 {
        self.cluster_count
    }

    /// Byte offset of cluster `cluster` (2 or more) from the volume's start.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster.saturating_sub(2)) * u64::from(self.cluster_size)
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.dev
    }

    fn fat_entry(&mut self, cluster: u32, path: &str) -> Result<u32, Error> {
        let width: u64 = if self.fat32 { 4 } else { 2 };
        let off = u64::from(cluster) * width;
        let block = off / FAT_BLOCK;
        if self.cache.as_ref().map(|c| c.0) != Some(block) {
            let start = block * FAT_BLOCK;
            let end = (start + FAT_BLOCK)
                .min(self.fat_bytes)
                .min(self.dev.len().saturating_sub(self.fat_offset));
            // At most FAT_BLOCK bytes.
            let mut buf = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
            self.dev
                .read_at(self.fat_offset + start, &mut buf)
                .map_err(io_err(format!("reading the FAT for {path:?}")))?;
            self.cache = Some((block, buf));
        }
        let buf = self.cache.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[]);
        // Below FAT_BLOCK.
        let at = usize::try_from(off - block * FAT_BLOCK).unwrap_or(usize::MAX);
        Ok(if self.fat32 {
            le32(buf, at) & 0x0FFF_FFFF
        } else {
            u32::from(le16(buf, at))
        })
    }

    /// The chain from `first`, at most `limit` clusters long; a chain that
    /// ends before `want` clusters (when given) or loops is corrupt.
    fn chain(
        &mut self,
        first: u32,
        limit: u64,
        want: Option<u64>,
        path: &str,
    ) -> Result<Vec<u32>, Error> {
        let corrupt = |reason| Error::Corrupt {
            path: path.to_string(),
            reason,
        };
        let width: u64 = if self.fat32 { 4 } else { 2 };
        let on_device = self.dev.len().saturating_sub(self.fat_offset) / width;
        let limit = limit.min(u64::from(self.cluster_count)).min(on_device);
        let eoc = if self.fat32 { 0x0FFF_FFF8 } else { 0xFFF8 };
        let mut out = Vec::new();
        // Clusters above every earlier one are new; others are looked up.
        let mut max_seen = 0;
        let mut seen: Option<std::collections::HashSet<u32>> = None;
        let mut c = first;
        loop {
            if c < 2 || u64::from(c) >= u64::from(self.cluster_count) + 2 {
                return Err(corrupt("a cluster chain points outside the volume"));
            }
            if out.len() as u64 >= limit {
                return Err(corrupt("a cluster chain is longer than allowed"));
            }
            if c <= max_seen {
                let set = seen.get_or_insert_with(|| out.iter().copied().collect());
                if !set.insert(c) {
                    return Err(corrupt("a cluster chain loops"));
                }
            } else if let Some(set) = seen.as_mut() {
                set.insert(c);
            }
            max_seen = max_seen.max(c);
            out.push(c);
            if Some(out.len() as u64) == want {
                return Ok(out);
            }
            let next = self.fat_entry(c, path)?;
            if next >= eoc {
                break;
            }
            c = next;
        }
        if want.is_some() {
            return Err(corrupt("a cluster chain is shorter than the file's size"));
        }
        Ok(out)
    }

    fn read_dir(&mut self, loc: DirLoc, path: &str) -> Result<Vec<DirEntry>, Error> {
        let raw = match loc {
            DirLoc::Fixed { offset, entries } => {
                let mut buf = vec![0u8; entries as usize * 32];
                self.dev
                    .read_at(offset, &mut buf)
                    .map_err(io_err(format!("reading directory {path:?}")))?;
                buf
            }
            DirLoc::Chain(first) => {
                let limit = ((MAX_DIR_ENTRIES * 32) as u64).div_ceil(u64::from(self.cluster_size));
                let chain = self.chain(first, limit, None, path)?;
                let cs = self.cluster_size as usize;
                let mut buf = vec![0u8; chain.len() * cs];
                for (k, &c) in chain.iter().enumerate() {
                    let at = self.cluster_offset(c);
                    self.dev
                        .read_at(at, &mut buf[k * cs..(k + 1) * cs])
                        .map_err(io_err(format!("reading directory {path:?}")))?;
                }
                buf
            }
        };
        Ok(parse_dir(&raw, self.fat32))
    }

    fn dir_loc(&self, e: &DirEntry) -> DirLoc {
        if e.first_cluster == 0 {
            self.root
        } else {
            DirLoc::Chain(e.first_cluster)
        }
    }

    fn root_entry() -> DirEntry {
        DirEntry {
            name: String::new(),
            short_name: String::new(),
            attributes: 0x10,
            first_cluster: 0,
            size: 0,
            date: 0,
            time: 0,
        }
    }

    /// The entry at `path` (`/`-separated, case-insensitive, long or 8.3
    /// names; `""` or `"/"` is the root).
    pub fn lookup(&mut self, path: &str) -> Result<DirEntry, Error> {
        let mut cur = Self::root_entry();
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_dir() {
                return Err(Error::NotADirectory { path: walked });
            }
            let loc = self.dir_loc(&cur);
            let list = self.read_dir(loc, &walked)?;
            walked.push('/');
            walked.push_str(comp);
            let want = comp.to_lowercase();
            cur = list
                .into_iter()
                .find(|e| e.name.to_lowercase() == want || e.short_name.eq_ignore_ascii_case(comp))
                .ok_or_else(|| Error::NotFound {
                    path: walked.clone(),
                })?;
        }
        Ok(cur)
    }

    /// The entries of the directory at `path`, without `.`, `..` and the label.
    pub fn list(&mut self, path: &str) -> Result<Vec<DirEntry>, Error> {
        let e = self.lookup(path)?;
        if !e.is_dir() {
            return Err(Error::NotADirectory {
                path: path.to_string(),
            });
        }
        let loc = self.dir_loc(&e);
        self.read_dir(loc, path)
    }

    /// The clusters of the file or directory at `path`, in chain order
    /// (empty for an empty file and the FAT16 root).
    pub fn clusters(&mut self, path: &str) -> Result<Vec<u32>, Error> {
        let e = self.lookup(path)?;
        self.entry_clusters(&e, path)
    }

    /// The clusters of an entry from [`FatVolume::list`]; `path` is only for
    /// error messages.
    pub fn entry_clusters(&mut self, e: &DirEntry, path: &str) -> Result<Vec<u32>, Error> {
        if e.is_dir() {
            return match self.dir_loc(e) {
                DirLoc::Fixed { .. } => Ok(Vec::new()),
                DirLoc::Chain(c) => {
                    let limit =
                        ((MAX_DIR_ENTRIES * 32) as u64).div_ceil(u64::from(self.cluster_size));
                    self.chain(c, limit, None, path)
                }
            };
        }
        self.file_chain(e, path)
    }

    fn file_chain(&mut self, e: &DirEntry, path: &str) -> Result<Vec<u32>, Error> {
        let need = u64::from(e.size).div_ceil(u64::from(self.cluster_size));
        if need == 0 {
            return Ok(Vec::new());
        }
        if u64::from(e.size) > self.dev.len() {
            return Err(Error::Corrupt {
                path: path.to_string(),
                reason: "the file is larger than the device",
            });
        }
        self.chain(e.first_cluster, need, Some(need), path)
    }

    fn file_entry(&mut self, path: &str) -> Result<DirEntry, Error> {
        let e = self.lookup(path)?;
        if e.is_dir() {
            return Err(Error::IsADirectory {
                path: path.to_string(),
            });
        }
        Ok(e)
    }

    /// The whole contents of the file at `path`.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        let e = self.file_entry(path)?;
        self.read_entry(&e, path)
    }

    /// The contents of a file entry from [`FatVolume::list`]; `path` is only
    /// for error messages.
    pub fn read_entry(&mut self, e: &DirEntry, path: &str) -> Result<Vec<u8>, Error> {
        if e.is_dir() {
            return Err(Error::IsADirectory {
                path: path.to_string(),
            });
        }
        let chain = self.file_chain(e, path)?;
        let size = e.size as usize;
        let mut out = vec![0u8; size];
        let cs = self.cluster_size as usize;
        for (k, &c) in chain.iter().enumerate() {
            let at = self.cluster_offset(c);
            let end = ((k + 1) * cs).min(size);
            self.dev
                .read_at(at, &mut out[k * cs..end])
                .map_err(io_err(format!("reading {path:?}")))?;
        }
        Ok(out)
    }

    /// Replaces the contents of the file at `path` in place: `contents`,
    /// then `pad` bytes up to the file's size, written into the file's own
    /// clusters. FAT tables, directory entries and every other cluster stay
    /// untouched (the file's size and times do not change), and the device is
    /// flushed. Fails with [`Error::TooLong`] before writing anything when
    /// `contents` is longer than the file.
    pub fn overwrite(&mut self, path: &str, contents: &[u8], pad: u8) -> Result<(), Error> {
        let e = self.file_entry(path)?;
        let size = u64::from(e.size);
        if contents.len() as u64 > size {
            return Err(Error::TooLong {
                path: path.to_string(),
                len: contents.len() as u64,
                size: e.size,
            });
        }
        let chain = self.file_chain(&e, path)?;
        let end = chain
            .iter()
            .map(|&c| self.cluster_offset(c) + u64::from(self.cluster_size))
            .max()
            .unwrap_or(0);
        if end > self.dev.len() {
            return Err(Error::Corrupt {
                path: path.to_string(),
                reason: "the file's clusters pass the end of the device",
            });
        }
        let cs = u64::from(self.cluster_size);
        let mut buf = Vec::with_capacity(usize::try_from(size).map_or(CHUNK, |s| CHUNK.min(s)));
        let mut k = 0;
        while k < chain.len() {
            // A run of consecutive clusters is one region of the device.
            let mut run = 1;
            while k + run < chain.len()
                && u32::try_from(run).is_ok_and(|r| chain[k + run] == chain[k].wrapping_add(r))
            {
                run += 1;
            }
            let file_start = k as u64 * cs;
            let file_end = ((k + run) as u64 * cs).min(size);
            let mut pos = file_start;
            while pos < file_end {
                // n <= CHUNK, and pos < clen indexes `contents`: both fit a usize.
                let n = (file_end - pos).min(CHUNK as u64);
                buf.clear();
                let clen = contents.len() as u64;
                let small = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
                if pos < clen {
                    let take = small((clen - pos).min(n));
                    buf.extend_from_slice(&contents[small(pos)..small(pos) + take]);
                }
                buf.resize(small(n), pad);
                let at = self.cluster_offset(chain[k]) + (pos - file_start);
                self.dev
                    .write_at(at, &buf)
                    .map_err(io_err(format!("writing {path:?} in place")))?;
                pos += n;
            }
            k += run;
        }
        self.dev
            .flush()
            .map_err(io_err(format!("flushing {path:?}")))
    }
}
