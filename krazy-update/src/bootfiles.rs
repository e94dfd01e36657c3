//! In-place edits of fixed-capacity files on a boot FAT volume (the ESP on
//! pc, the autoboot partition on pi3).
//!
//! Updates never change FAT metadata: every file they rewrite was given a
//! fixed capacity when the image was built, and is rewritten within it.
//! [`BootFiles`] is that seam. [`DirBootFiles`] edits files under a
//! directory (a mounted volume, or a temp dir in tests), never growing or
//! truncating them.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

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
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} is not a plain relative path"),
            ));
        }
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
