//! A small block-device trait with two backends: a file (or device) window
//! at an offset, and an in-memory buffer.
//!
//! Every writer and reader in this crate goes through [`BlockDevice`], so the
//! same code runs on a real disk image and, in tests, in memory without root.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Random-access storage of a fixed length, addressed in bytes.
///
/// Offsets are relative to the start of the device (for a [`FileDevice`],
/// to its window's start). Accesses past [`BlockDevice::len`] fail with
/// [`io::ErrorKind::UnexpectedEof`] instead of growing the device.
pub trait BlockDevice {
    /// The device's size in bytes.
    fn len(&self) -> u64;

    /// Whether the device has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`; fails if they are not all there.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `buf` at `offset`; fails if it would pass the end.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes earlier writes durable (a no-op in memory).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

fn check_range(offset: u64, n: usize, len: u64) -> io::Result<()> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("access of {n} bytes at offset {offset} passes the device's end ({len} bytes)"),
        )),
    }
}

/// An in-memory device: a `Vec<u8>` of fixed length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDevice {
    data: Vec<u8>,
}

impl MemDevice {
    /// A zero-filled device of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self { data: vec![0; len] }
    }

    /// A device over existing bytes (its length is theirs).
    pub fn from_vec(data: Vec<u8>) -> Self {
        Self { data }
    }

    /// The device's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The device's bytes, mutably (tests use this to corrupt images).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Takes the bytes out.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }
}

/// An offset into memory (checked against its length, so it fits).
fn mem_offset(offset: u64) -> io::Result<usize> {
    usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl BlockDevice for MemDevice {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let start = mem_offset(offset)?;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let start = mem_offset(offset)?;
        self.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

/// A window of `len` bytes starting at `offset` in a file or block device,
/// for example one partition of a disk image.
///
/// Writes use `pwrite`, so regions never written stay holes in a sparse file.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    offset: u64,
    len: u64,
}

impl FileDevice {
    /// A window over `file` from byte `offset`, `len` bytes long.
    ///
    /// The file is not resized: create a sparse image with
    /// [`File::set_len`] first when writing a new one.
    pub fn new(file: File, offset: u64, len: u64) -> Self {
        Self { file, offset, len }
    }

    /// The whole of `file`, from its start to its current length.
    pub fn whole(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self::new(file, 0, len))
    }

    /// Gives the file back.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl BlockDevice for FileDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.read_exact_at(buf, self.offset + offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.write_all_at(buf, self.offset + offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_bounds() {
        let mut d = MemDevice::zeroed(16);
        d.write_at(12, b"abcd").unwrap();
        let mut b = [0u8; 4];
        d.read_at(12, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert_eq!(
            d.write_at(13, b"abcd").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(d.read_at(u64::MAX, &mut b).is_err());
    }

    #[test]
    fn file_device_window() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(100).unwrap();
        let mut d = FileDevice::new(f, 10, 20);
        d.write_at(0, b"xy").unwrap();
        assert!(d.write_at(19, b"xy").is_err());
        let f = d.into_inner();
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"xy");
    }
}
