//! The `pc` boot part's wire format: a cpio "newc" archive (magic `070701`)
//! of the files `vmlinuz`, `initrd` and `entry.conf`, parsed as a stream.
//!
//! [`for_each_file`] reads headers and hands each file's bytes to a callback
//! as a bounded [`Read`], so the archive is never held in memory;
//! [`unpack`] writes each file in place into the slot's fixed-capacity file
//! through [`BootFiles`]. [`write_archive`] makes the same format (the same
//! bytes `cpio -o -H newc` writes for these files, apart from inode numbers
//! and times, which are zero here for reproducibility).

// Casts are decisions: this parses outside bytes.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::{self, Read, Write};

use krazy_fs::cpio::{self, NewcWriter, TRAILER};

use crate::bootfiles::{pad_to, BootFiles};
use crate::protocol::Slot;

/// The cpio newc magic.
const MAGIC: &[u8; 6] = b"070701";

/// One of the files a `pc` boot part may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BootFile {
    /// `vmlinuz`: the kernel (EFI stub), required.
    Vmlinuz,
    /// `initrd`: the initramfs, optional.
    Initrd,
    /// `entry.conf`: the systemd-boot loader entry, required.
    Entry,
}

impl BootFile {
    /// Its name inside the archive.
    pub fn name(self) -> &'static str {
        match self {
            BootFile::Vmlinuz => "vmlinuz",
            BootFile::Initrd => "initrd",
            BootFile::Entry => "entry.conf",
        }
    }

    /// The file's name in the archive, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        [BootFile::Vmlinuz, BootFile::Initrd, BootFile::Entry]
            .into_iter()
            .find(|f| f.name() == name)
    }

    /// Where it lives on the ESP for `slot`.
    pub fn esp_path(self, slot: Slot) -> String {
        match self {
            BootFile::Vmlinuz => format!("krazy/{slot}/vmlinuz"),
            BootFile::Initrd => format!("krazy/{slot}/initrd"),
            BootFile::Entry => format!("loader/entries/krazy-{slot}.conf"),
        }
    }

    /// What fills its capacity after the contents.
    pub fn pad(self) -> u8 {
        match self {
            BootFile::Entry => b' ',
            _ => 0,
        }
    }
}

/// Why a boot archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the stream failed.
    #[error("reading the boot archive failed: {0}")]
    Read(#[source] io::Error),
    /// A header does not start with `070701`.
    #[error("the boot archive entry at byte {0} is not a cpio newc header")]
    Magic(u64),
    /// A header field is not 8 hex digits.
    #[error("the boot archive entry at byte {0} has a header field that is not hex")]
    Field(u64),
    /// A name that is empty, too long or not UTF-8.
    #[error("the boot archive entry at byte {0} has a bad name")]
    Name(u64),
    /// A name other than the three allowed.
    #[error("the boot archive holds {0:?}; only vmlinuz, initrd and entry.conf are allowed")]
    Unknown(String),
    /// Not a regular file.
    #[error("the boot archive entry {0:?} is not a regular file")]
    NotFile(String),
    /// The same file twice.
    #[error("the boot archive holds {0:?} twice")]
    Duplicate(String),
    /// A required file is missing.
    #[error("the boot archive lacks {0:?}")]
    Missing(&'static str),
    /// More members than a boot archive may have.
    #[error("the boot archive has more than {0} members")]
    TooMany(usize),
    /// The members do not make a file tree (a file where a directory is).
    #[error("the boot archive's files do not form a tree: {0}")]
    Tree(String),
    /// Non-zero bytes after the trailer.
    #[error("the boot archive has data after its trailer")]
    TrailingData,
    /// A file does not fit its fixed-capacity file on the ESP.
    #[error("{name} is {size} bytes, but {path:?} on the ESP holds only {capacity}")]
    TooLarge {
        /// The archive name.
        name: &'static str,
        /// Its size.
        size: u64,
        /// The ESP path.
        path: String,
        /// The ESP file's capacity.
        capacity: u64,
    },
    /// Writing to the ESP failed.
    #[error("writing {path:?} on the ESP failed: {source}")]
    Write {
        /// The ESP path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// One entry's header, as handed to the callback of [`for_each_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which file.
    pub file: BootFile,
    /// Its size in bytes.
    pub size: u64,
}

fn read_exact(src: &mut dyn Read, buf: &mut [u8]) -> Result<(), ArchiveError> {
    src.read_exact(buf).map_err(ArchiveError::Read)
}

fn skip(src: &mut dyn Read, n: u64) -> Result<(), ArchiveError> {
    let got = io::copy(&mut src.take(n), &mut io::sink()).map_err(ArchiveError::Read)?;
    if got != n {
        return Err(ArchiveError::Read(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

fn field(h: &[u8; 110], i: usize, at: u64) -> Result<u32, ArchiveError> {
    let s = h
        .get(6 + i * 8..14 + i * 8)
        .ok_or(ArchiveError::Field(at))?;
    let s = std::str::from_utf8(s).map_err(|_| ArchiveError::Field(at))?;
    u32::from_str_radix(s, 16).map_err(|_| ArchiveError::Field(at))
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

/// One archive member's header, as [`for_each_entry`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name (a path without a leading `/`, as cpio writes it).
    pub name: String,
    /// Its mode (file type and permission bits).
    pub mode: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (Unix seconds).
    pub mtime: u64,
}

/// Parses any newc archive from `src`, calling `f` for each member up to the
/// trailer with a reader of exactly its bytes (what `f` leaves unread is
/// skipped), and checks that only zeros follow the trailer. Never
/// allocates more than a name's 256 bytes.
pub fn for_each_entry(
    src: &mut dyn Read,
    mut f: impl FnMut(&Member, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut at = 0u64;
    loop {
        let mut h = [0u8; 110];
        read_exact(src, &mut h)?;
        if &h[..6] != MAGIC {
            return Err(ArchiveError::Magic(at));
        }
        let mode = field(&h, 1, at)?;
        let mtime = u64::from(field(&h, 5, at)?);
        let size = u64::from(field(&h, 6, at)?);
        let namesize = field(&h, 11, at)? as usize;
        if namesize == 0 || namesize > 256 {
            return Err(ArchiveError::Name(at));
        }
        let mut name = vec![0u8; namesize];
        read_exact(src, &mut name)?;
        if name.pop() != Some(0) {
            return Err(ArchiveError::Name(at));
        }
        let name = String::from_utf8(name).map_err(|_| ArchiveError::Name(at))?;
        skip(src, pad4(110 + namesize as u64))?;
        at += 110 + namesize as u64 + pad4(110 + namesize as u64);
        if name == TRAILER {
            break;
        }
        let member = Member {
            name,
            mode,
            size,
            mtime,
        };
        let mut body = src.take(size);
        f(&member, &mut body)?;
        let rest = body.limit();
        skip(src, rest + pad4(size))?;
        at += size + pad4(size);
    }
    // Only zero padding may follow the trailer.
    let mut buf = [0u8; 4096];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Read(e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(ArchiveError::TrailingData);
        }
    }
}

/// Parses the pc boot archive from `src`, calling `f` for each file with a
/// reader of exactly its bytes (what `f` leaves unread is skipped). Checks
/// names, types, duplicates and required files, and that only zeros follow
/// the trailer.
pub fn for_each_file(
    src: &mut dyn Read,
    mut f: impl FnMut(Header, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Vec<Header>, ArchiveError> {
    let mut seen: Vec<Header> = Vec::new();
    for_each_entry(src, |m, body| {
        let file =
            BootFile::from_name(&m.name).ok_or_else(|| ArchiveError::Unknown(m.name.clone()))?;
        if m.mode & 0o170000 != 0o100000 {
            return Err(ArchiveError::NotFile(m.name.clone()));
        }
        if seen.iter().any(|s| s.file == file) {
            return Err(ArchiveError::Duplicate(m.name.clone()));
        }
        let header = Header { file, size: m.size };
        f(header, body)?;
        seen.push(header);
        Ok(())
    })?;
    for req in [BootFile::Vmlinuz, BootFile::Entry] {
        if !seen.iter().any(|s| s.file == req) {
            return Err(ArchiveError::Missing(req.name()));
        }
    }
    Ok(seen)
}

/// What [`unpack`] wrote, and the loader entry it held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The archive's files.
    pub headers: Vec<Header>,
    /// `entry.conf`'s bytes: written by [`write_entry`] only once the whole
    /// part verified and the switch arms the slot, so that no unverified
    /// loader entry is ever on the ESP.
    pub entry: Vec<u8>,
}

/// Writes the kernel and initramfs of the archive in `src` into `slot`'s
/// fixed-capacity files through `files`, padded to their capacity, in
/// chunks of at most 1 MiB, and returns the loader entry unwritten. A file
/// larger than its capacity is refused before any of it is written.
pub fn unpack(
    src: &mut dyn Read,
    slot: Slot,
    files: &mut dyn BootFiles,
) -> Result<Unpacked, ArchiveError> {
    let mut buf = vec![0u8; crate::writer::CHUNK];
    let mut entry = Vec::new();
    let seen = for_each_file(src, |h, body| {
        let path = h.file.esp_path(slot);
        let werr = |source| ArchiveError::Write {
            path: path.clone(),
            source,
        };
        let capacity = files.capacity(&path).map_err(werr)?;
        if h.size > capacity {
            return Err(ArchiveError::TooLarge {
                name: h.file.name(),
                size: h.size,
                path: path.clone(),
                capacity,
            });
        }
        if h.file == BootFile::Entry {
            // At most the entry file's capacity (a few KiB), checked above.
            body.read_to_end(&mut entry).map_err(ArchiveError::Read)?;
            if entry.len() as u64 != h.size {
                return Err(ArchiveError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
            return Ok(());
        }
        let mut at = 0u64;
        loop {
            let n = body.read(&mut buf).map_err(ArchiveError::Read)?;
            if n == 0 {
                break;
            }
            files.write_at(&path, at, &buf[..n]).map_err(werr)?;
            at += n as u64;
        }
        if at != h.size {
            return Err(ArchiveError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        pad_to(files, &path, at, capacity, h.file.pad()).map_err(werr)?;
        Ok(())
    })?;
    // An initramfs left over from an older build must not be booted with
    // a new kernel that comes without one: blank it.
    if !seen.iter().any(|h| h.file == BootFile::Initrd) {
        let path = BootFile::Initrd.esp_path(slot);
        if let Ok(cap) = files.capacity(&path) {
            pad_to(files, &path, 0, cap, 0).map_err(|source| ArchiveError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    files.flush().map_err(|source| ArchiveError::Write {
        path: "(flush)".into(),
        source,
    })?;
    Ok(Unpacked {
        headers: seen,
        entry,
    })
}

/// Writes `slot`'s loader entry (padded with spaces to its capacity) and
/// flushes: the step that makes a verified slot selectable.
pub fn write_entry(files: &mut dyn BootFiles, slot: Slot, entry: &[u8]) -> io::Result<()> {
    files.overwrite(&BootFile::Entry.esp_path(slot), entry, b' ')?;
    files.flush()
}

/// Blanks `slot`'s loader entry (a comment, then spaces): systemd-boot
/// lists no entry without a kernel line, so the slot cannot be selected.
pub fn blank_entry(files: &mut dyn BootFiles, slot: Slot) -> io::Result<()> {
    write_entry(files, slot, crate::bootflow::blank_entry(slot).as_bytes())
}

/// Writes a boot archive of `files` (name and bytes, names from
/// [`BootFile::name`]) to `out`: newc headers with zero inode, uid, gid and
/// time, mode `0100644`, and the trailer, padded to a multiple of 512 bytes
/// as cpio does.
pub fn write_archive(mut out: impl Write, files: &[(BootFile, &[u8])]) -> io::Result<u64> {
    let mut w = ArchiveWriter::new(&mut out);
    for (f, data) in files {
        w.member(f.name(), 0o100644, 0, data)?;
    }
    w.finish()
}

/// Writes a newc archive member by member (zero inode, uid, gid), then the
/// trailer and padding to a multiple of 512 bytes, through krazy-fs's newc
/// writer.
pub struct ArchiveWriter<W: Write> {
    out: NewcWriter<W>,
}

impl<W: Write> ArchiveWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        ArchiveWriter {
            out: NewcWriter::new(out),
        }
    }

    /// Writes one member: `name` (no leading `/`), `mode` (type and
    /// permissions), `mtime` and its bytes (at most 4 GiB − 1, newc's limit).
    pub fn member(&mut self, name: &str, mode: u32, mtime: u32, data: &[u8]) -> io::Result<()> {
        let m = cpio::Member {
            mtime,
            ..cpio::Member::new(name, mode)
        };
        self.out.member(&m, data)
    }

    /// Writes the trailer and the padding; returns the archive's length.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.trailer()?;
        let n = self.out.len();
        let tail = (512 - n % 512) % 512;
        self.out
            .data(&[0; 512][..usize::try_from(tail).unwrap_or(0)])?;
        let mut out = self.out.into_inner();
        out.flush()?;
        Ok(n + tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfiles::DirBootFiles;

    fn esp(dir: &std::path::Path, caps: &[(&str, usize)]) -> DirBootFiles {
        for (p, cap) in caps {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, vec![0xee; *cap]).unwrap();
        }
        DirBootFiles::new(dir)
    }

    /// The wire bytes of a fixed archive, pinned by their SHA-256 as the
    /// hand-written writer made them before it moved onto krazy-fs's cpio
    /// writer: the move must not change one byte.
    #[test]
    fn archive_bytes_are_pinned() {
        use sha2::{Digest, Sha256};
        let mut out = Vec::new();
        let kernel: Vec<u8> = (0..1234u32)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let len = write_archive(
            &mut out,
            &[
                (BootFile::Vmlinuz, &kernel[..]),
                (BootFile::Initrd, b"abc"),
                (BootFile::Entry, b"title krazy\n"),
            ],
        )
        .unwrap();
        assert_eq!(len, out.len() as u64);
        assert_eq!(out.len() % 512, 0);
        let mut w = ArchiveWriter::new(&mut out);
        w.member("boot", 0o040755, 1_700_000_000, &[]).unwrap();
        w.member("boot/config.txt", 0o100600, 1_700_000_000, b"x")
            .unwrap();
        assert_eq!(w.finish().unwrap(), 512);
        assert_eq!(
            hex::encode(Sha256::digest(&out)),
            "9cb87684246bf0b0b8b20bd1cff61ce85fdf84fa5c9fa7e9097d596c8a74bc59"
        );
    }

    #[test]
    fn unpacks_into_fixed_capacity_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = esp(
            dir.path(),
            &[
                ("krazy/b/vmlinuz", 4096),
                ("krazy/b/initrd", 8192),
                ("loader/entries/krazy-b.conf", 512),
                ("krazy/a/vmlinuz", 4096),
            ],
        );
        let mut ar = Vec::new();
        write_archive(
            &mut ar,
            &[
                (BootFile::Vmlinuz, b"MZkernel"),
                (BootFile::Initrd, b"07070"),
                (BootFile::Entry, b"title krazy b\nlinux /krazy/b/vmlinuz\n"),
            ],
        )
        .unwrap();
        assert_eq!(ar.len() % 512, 0);
        let seen = unpack(&mut &ar[..], Slot::B, &mut files).unwrap();
        assert_eq!(seen.headers.len(), 3);
        let k = std::fs::read(dir.path().join("krazy/b/vmlinuz")).unwrap();
        assert_eq!(k.len(), 4096);
        assert!(k.starts_with(b"MZkernel\0\0"));
        assert!(k[8..].iter().all(|&b| b == 0));
        // The entry is held back, not written: the slot is not selectable
        // until the whole part verified and a switch writes it.
        let e = std::fs::read(dir.path().join("loader/entries/krazy-b.conf")).unwrap();
        assert!(e.iter().all(|&b| b == 0xee));
        assert_eq!(seen.entry, b"title krazy b\nlinux /krazy/b/vmlinuz\n");
        write_entry(&mut files, Slot::B, &seen.entry).unwrap();
        let e = std::fs::read(dir.path().join("loader/entries/krazy-b.conf")).unwrap();
        assert!(e.starts_with(b"title krazy b\n"));
        assert!(e.ends_with(b"   "));
        blank_entry(&mut files, Slot::B).unwrap();
        let e = std::fs::read(dir.path().join("loader/entries/krazy-b.conf")).unwrap();
        assert_eq!(e.len(), 512);
        assert!(!crate::bootflow::entry_is_bootable(&e));
        // Slot A untouched.
        let a = std::fs::read(dir.path().join("krazy/a/vmlinuz")).unwrap();
        assert!(a.iter().all(|&b| b == 0xee));
    }

    #[test]
    fn oversized_file_is_refused_before_writing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = esp(
            dir.path(),
            &[("krazy/a/vmlinuz", 16), ("loader/entries/krazy-a.conf", 64)],
        );
        let mut ar = Vec::new();
        write_archive(
            &mut ar,
            &[(BootFile::Vmlinuz, &[1; 17]), (BootFile::Entry, b"x")],
        )
        .unwrap();
        let e = unpack(&mut &ar[..], Slot::A, &mut files).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::TooLarge {
                    size: 17,
                    capacity: 16,
                    ..
                }
            ),
            "{e}"
        );
        let k = std::fs::read(dir.path().join("krazy/a/vmlinuz")).unwrap();
        assert!(k.iter().all(|&b| b == 0xee));
    }

    #[test]
    fn bad_archives_are_refused() {
        let mut ok = Vec::new();
        write_archive(
            &mut ok,
            &[(BootFile::Vmlinuz, b"k"), (BootFile::Entry, b"e")],
        )
        .unwrap();
        let mut none = |_: Header, _: &mut dyn Read| Ok(());
        assert!(for_each_file(&mut &ok[..], &mut none).is_ok());
        // Missing entry.conf.
        let mut ar = Vec::new();
        write_archive(&mut ar, &[(BootFile::Vmlinuz, b"k")]).unwrap();
        assert!(matches!(
            for_each_file(&mut &ar[..], &mut none),
            Err(ArchiveError::Missing("entry.conf"))
        ));
        // Duplicate.
        let mut ar = Vec::new();
        write_archive(
            &mut ar,
            &[(BootFile::Vmlinuz, b"k"), (BootFile::Vmlinuz, b"k")],
        )
        .unwrap();
        assert!(matches!(
            for_each_file(&mut &ar[..], &mut none),
            Err(ArchiveError::Duplicate(_))
        ));
        // Garbage after the trailer.
        let mut ar = ok.clone();
        ar.push(1);
        assert!(matches!(
            for_each_file(&mut &ar[..], &mut none),
            Err(ArchiveError::TrailingData)
        ));
        // Truncated.
        assert!(for_each_file(&mut &ok[..150], &mut none).is_err());
        // Bad magic.
        let mut ar = ok.clone();
        ar[5] = b'2';
        assert!(matches!(
            for_each_file(&mut &ar[..], &mut none),
            Err(ArchiveError::Magic(0))
        ));
    }
}
