//! Where the image goes: a [`BlockDevice`] seen as `Write + Seek`, and
//! the writer that counts the image's bytes.

use std::io::{self, Seek, SeekFrom, Write};

use super::Error;
use crate::dev::BlockDevice;

/// `Write + Seek` over a [`BlockDevice`], writing straight through.
pub(super) struct DeviceWriter<'a, D: BlockDevice> {
    pub(super) dev: &'a mut D,
    pub(super) pos: u64,
}

impl<D: BlockDevice> Write for DeviceWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dev.write_at(self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
}

impl<D: BlockDevice> Seek for DeviceWriter<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.dev.len().checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the device's start",
            )
        })?;
        Ok(self.pos)
    }
}

/// The output, with the position relative to the image's start.
pub(super) struct Out<'a, W> {
    pub(super) inner: &'a mut W,
    pub(super) pos: u64,
}

impl<W: Write> Out<'_, W> {
    pub(super) fn write(&mut self, b: &[u8]) -> Result<(), Error> {
        self.inner.write_all(b).map_err(Error::Write)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}
