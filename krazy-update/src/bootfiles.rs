//! In-place edits of fixed-capacity files on a boot FAT volume (the ESP on
//! pc, the autoboot partition on pi3).
//!
//! Updates never change FAT metadata: every file they rewrite was given a
//! fixed capacity when the image was built, and is rewritten within it.
//! [`BootFiles`] is that seam. [`FatBootFiles`] edits the FAT volume itself
//! (the ESP's partition, unmounted): it finds each file's clusters once with
//! [`krazy_fs::fat::FatVolume`] and then writes only inside them.
//! [`DirBootFiles`] edits files under a directory (a mounted volume, or a
//! temp dir in tests), never growing or truncating them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use krazy_fs::fat::{self, FatVolume};
use krazy_fs::BlockDevice;

/// Fixed-capacity files that can be rewritten in place.
///
/// Paths are relative to the volume's root, with `/` separators
/// (`loader/loader.conf`).
pub trait BootFiles {
    /// The file's capacity (its size on the volume) in bytes.
    fn capacity(&mut self, path: &str) -> io::Result<u64>;

    /// Writes `bytes` at `offset` inside the file; fails rather than pass
    /// its capacity.
    fn write_at(&mut self, path: &str, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Reads the whole file; fails for files over `max` bytes.
    fn read(&mut self, path: &str, max: u64) -> io::Result<Vec<u8>>;

    /// Makes earlier writes durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Replaces the file's contents with `contents` followed by `pad` bytes
    /// up to its capacity, in chunks of at most 1 MiB.
    fn overwrite(&mut self, path: &str, contents: &[u8], pad: u8) -> io::Result<()> {
        let cap = self.capacity(path)?;
        if contents.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes do not fit {path:?}, whose capacity is {cap} bytes",
                    contents.len()
                ),
            ));
        }
        self.write_at(path, 0, contents)?;
        pad_to(self, path, contents.len() as u64, cap, pad)?;
        self.flush()
    }
}

impl<B: BootFiles + ?Sized> BootFiles for Box<B> {
    fn capacity(&mut self, path: &str) -> io::Result<u64> {
        (**self).capacity(path)
    }
    fn write_at(&mut self, path: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        (**self).write_at(path, offset, bytes)
    }
    fn read(&mut self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        (**self).read(path, max)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// Fills `path` from `from` to `to` with `pad`, in 64 KiB writes.
pub fn pad_to<B: BootFiles + ?Sized>(
    files: &mut B,
    path: &str,
    from: u64,
    to: u64,
    pad: u8,
) -> io::Result<()> {
    let block = vec![pad; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(block.len() as u64) as usize;
        files.write_at(path, at, &block[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// [`BootFiles`] on a FAT16/FAT32 volume (the ESP partition, unmounted),
/// through [`krazy_fs::fat`]'s reader.
///
/// Each file's directory entry and cluster chain are read once and kept as
/// runs of consecutive clusters; writes then go straight to those bytes of
/// the device, chunk by chunk as the caller streams them. FAT tables,
/// directory entries and every other cluster are never written, so the
/// file's size is its capacity and a power cut can damage only the file
/// being written. Two handles on the same volume (the update's and the boot
/// flow's) stay consistent because the metadata they cache never changes.
#[derive(Debug)]
pub struct FatBootFiles<D: BlockDevice> {
    dev: D,
    extents: BTreeMap<String, Extent>,
}

/// Where a file's bytes lie on the device.
#[derive(Debug, Clone)]
struct Extent {
    size: u64,
    /// (offset in the file, offset on the device, length), in file order.
    runs: Vec<(u64, u64, u64)>,
}

/// A FAT error as an `io::Error` of a fitting kind, keeping its sentence.
fn fat_io(e: fat::Error) -> io::Error {
    let kind = match &e {
        fat::Error::NotFound { .. } => io::ErrorKind::NotFound,
        fat::Error::Io { source, .. } => source.kind(),
        fat::Error::IsADirectory { .. } | fat::Error::NotADirectory { .. } => {
            io::ErrorKind::InvalidInput
        }
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

impl<D: BlockDevice> FatBootFiles<D> {
    /// Opens the volume on `dev`, checking its boot sector.
    pub fn open(mut dev: D) -> Result<Self, fat::Error> {
        FatVolume::open(&mut dev)?;
        Ok(FatBootFiles {
            dev,
            extents: BTreeMap::new(),
        })
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.dev
    }

    /// The byte ranges `(device offset, length)` holding the file at
    /// `path`, in file order; their lengths add up to its size.
    pub fn ranges(&mut self, path: &str) -> io::Result<Vec<(u64, u64)>> {
        Ok(self
            .extent(path)?
            .runs
            .iter()
            .map(|&(_, d, n)| (d, n))
            .collect())
    }

    fn extent(&mut self, path: &str) -> io::Result<&Extent> {
        check_rel(path)?;
        let key = path.to_lowercase();
        if !self.extents.contains_key(&key) {
            let e = self.find(path).map_err(fat_io)?;
            self.extents.insert(key.clone(), e);
        }
        self.extents
            .get(&key)
            .ok_or_else(|| io::Error::other("extent cache lost an entry"))
    }

    fn find(&mut self, path: &str) -> Result<Extent, fat::Error> {
        let dev_len = self.dev.len();
        let mut vol = FatVolume::open(&mut self.dev)?;
        let entry = vol.lookup(path)?;
        if entry.is_dir() {
            return Err(fat::Error::IsADirectory {
                path: path.to_string(),
            });
        }
        let chain = vol.entry_clusters(&entry, path)?;
        let cs = u64::from(vol.cluster_size());
        let size = u64::from(entry.size);
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        let mut file_off = 0u64;
        for &c in &chain {
            let n = cs.min(size - file_off);
            let at = vol.cluster_offset(c);
            if at.checked_add(n).is_none_or(|end| end > dev_len) {
                return Err(fat::Error::Corrupt {
                    path: path.to_string(),
                    reason: "the file's clusters pass the end of the device",
                });
            }
            match runs.last_mut() {
                Some(last) if last.1 + last.2 == at => last.2 += n,
                _ => runs.push((file_off, at, n)),
            }
            file_off += n;
        }
        Ok(Extent { size, runs })
    }
}

fn check_rel(path: &str) -> io::Result<()> {
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not a plain relative path"),
        ));
    }
    Ok(())
}

impl<D: BlockDevice> BootFiles for FatBootFiles<D> {
    fn capacity(&mut self, path: &str) -> io::Result<u64> {
        Ok(self.extent(path)?.size)
    }

    fn write_at(&mut self, path: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let ext = self.extent(path)?.clone();
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|e| e > ext.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "writing {} bytes at {offset} passes the {}-byte capacity of {path:?}",
                    bytes.len(),
                    ext.size
                ),
            ));
        }
        let end = offset + bytes.len() as u64;
        for (file_off, dev_off, len) in ext.runs {
            let (lo, hi) = (offset.max(file_off), end.min(file_off + len));
            if lo >= hi {
                continue;
            }
            let src = bytes
                .get((lo - offset) as usize..(hi - offset) as usize)
                .ok_or_else(|| io::Error::other("run arithmetic out of range"))?;
            self.dev.write_at(dev_off + (lo - file_off), src)?;
        }
        Ok(())
    }

    fn read(&mut self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        let ext = self.extent(path)?.clone();
        if ext.size > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{path:?} is {} bytes, more than the {max} expected",
                    ext.size
                ),
            ));
        }
        let mut out = vec![0u8; ext.size as usize];
        for (file_off, dev_off, len) in ext.runs {
            let dst = out
                .get_mut(file_off as usize..(file_off + len) as usize)
                .ok_or_else(|| io::Error::other("run arithmetic out of range"))?;
            self.dev.read_at(dev_off, dst)?;
        }
        Ok(out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
}

/// [`BootFiles`] over a directory: a mounted boot volume, or a temp dir in
/// tests. Files are opened without truncation and never grow.
#[derive(Debug, Clone)]
pub struct DirBootFiles {
    root: PathBuf,
}

impl DirBootFiles {
    /// Files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirBootFiles { root: root.into() }
    }

    fn path(&self, path: &str) -> io::Result<PathBuf> {
        check_rel(path)?;
        Ok(self.root.join(path))
    }
}

impl BootFiles for DirBootFiles {
    fn capacity(&mut self, path: &str) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(path)?)?.len())
    }

    fn write_at(&mut self, path: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let p = self.path(path)?;
        let f = OpenOptions::new().write(true).open(&p)?;
        let cap = f.metadata()?.len();
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|e| e > cap)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "writing {} bytes at {offset} passes the {cap}-byte capacity of {path:?}",
                    bytes.len()
                ),
            ));
        }
        f.write_all_at(bytes, offset)
    }

    fn read(&mut self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        let p = self.path(path)?;
        let len = std::fs::metadata(&p)?.len();
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path:?} is {len} bytes, more than the {max} expected"),
            ));
        }
        std::fs::read(p)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_pads_and_never_grows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![b'x'; 100]).unwrap();
        let mut b = DirBootFiles::new(dir.path());
        b.overwrite("f", b"hello", b' ').unwrap();
        let got = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(got.len(), 100);
        assert!(got.starts_with(b"hello     "));
        assert!(b.overwrite("f", &[0; 101], 0).is_err());
        assert!(b.write_at("f", 99, b"ab").is_err());
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 100);
        assert!(b.capacity("../f").is_err());
    }
}
