//! Arbitrary bytes as a disk: read the GPT and the MBR; must never panic.
//!
//! Input format: an 8-byte little-endian disk size in sectors, then the
//! disk's head and tail. The first 34 sectors of what follows are placed at
//! the start of the disk, the rest at its very end, zeros between; so a seed
//! of a few dozen KiB describes a multi-GiB (or multi-TiB) disk. The same
//! bytes are also read once as a plain image of their own length.
#![no_main]

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use libfuzzer_sys::fuzz_target;

const HEAD: usize = 34 * 512;

/// A disk of `len` bytes that is zero except for `head` and `tail`.
struct SparseDisk<'a> {
    len: u64,
    head: &'a [u8],
    tail: &'a [u8],
    pos: u64,
}

impl Read for SparseDisk<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        let tail_start = self.len.saturating_sub(self.tail.len() as u64);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = if at < self.head.len() as u64 {
                self.head[at as usize]
            } else if at >= tail_start {
                self.tail.get((at - tail_start) as usize).copied().unwrap_or(0)
            } else {
                0
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SparseDisk<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).ok_or(io::ErrorKind::InvalidInput)?,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or(io::ErrorKind::InvalidInput)?,
        };
        Ok(self.pos)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = krazy_disk::read_gpt(&mut Cursor::new(data), data.len() as u64);
    let _ = krazy_disk::read_mbr(&mut Cursor::new(data), data.len() as u64);

    let Some((size, rest)) = data.split_first_chunk::<8>() else { return };
    // At most 16 TiB, so reads stay cheap to emulate.
    let len = (u64::from_le_bytes(*size) % (1 << 35)) * 512;
    let (head, tail) = rest.split_at(rest.len().min(HEAD));
    let mut disk = SparseDisk { len, head, tail, pos: 0 };
    if let Ok(gpt) = krazy_disk::read_gpt(&mut disk, len) {
        // A successful read must describe a consistent table.
        for p in &gpt.partitions {
            assert!(p.first_lba <= p.last_lba && p.last_lba < len / 512);
            assert!(p.first_lba >= gpt.header.first_usable_lba);
            assert!(p.last_lba <= gpt.header.last_usable_lba);
        }
    }
    let _ = krazy_disk::read_mbr(&mut disk, len);
});
