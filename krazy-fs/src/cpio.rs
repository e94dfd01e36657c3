//! A cpio "newc" writer for initramfs archives, optionally gzip-compressed.
//!
//! Entries are written in path order, so every directory comes before its
//! children (what the kernel's initramfs unpacker needs). The root itself
//! is not written (the kernel's rootfs already has one). Inode numbers are
//! assigned 1, 2, 3… in that order and the gzip header carries no time or
//! name, so the same tree always gives the same bytes.
//!
//! ```
//! use krazy_fs::cpio::{self, CpioOptions};
//! use krazy_fs::{Contents, Entry, Kind, Tree};
//! let mut tree = Tree::new();
//! tree.add_dir("dev", 0o755, 0).unwrap();
//! tree.insert("dev/console", Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600)).unwrap();
//! tree.add_file("init", Contents::bytes("#!/bin/sh\n"), 0o755, 0).unwrap();
//! let mut out = Vec::new();
//! let summary = cpio::write(&mut out, &tree, &CpioOptions::default()).unwrap();
//! assert_eq!(summary.entries, 3);
//! assert!(out.starts_with(b"070701"));
//! ```

use std::io::{self, Read, Write};

use crate::tree::{Kind, NameRules, Tree, TreeError};

/// What cpio newc can hold (names up to 255 bytes: the Linux limit).
pub const NAME_RULES: NameRules = NameRules {
    format: "cpio",
    ..NameRules::UNIX
};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Why a cpio archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tree breaks a rule of the tree or of cpio.
    #[error("the tree cannot be written as cpio")]
    Tree(#[from] TreeError),
    /// A file's contents could not be read.
    #[error("cannot read the contents of {path:?}")]
    Read {
        /// The entry's path in the tree.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A host file's length changed between its `stat` and its read.
    #[error("{path:?} changed size while being archived: expected {expected} bytes")]
    SizeChanged {
        /// The entry's path in the tree.
        path: String,
        /// The length announced in the header.
        expected: u64,
    },
    /// A field does not fit newc's eight hex digits.
    #[error("{path:?}: its {field} {value} does not fit cpio newc's 32-bit field")]
    FieldTooLarge {
        /// The entry.
        path: String,
        /// Which field (file size, mtime, device number, …).
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// Writing the archive failed.
    #[error("writing the cpio archive failed")]
    Write(#[source] io::Error),
}

/// How to write an archive.
#[derive(Debug, Clone)]
pub struct CpioOptions {
    /// Compress the archive with gzip (as the kernel accepts for an initramfs).
    pub gzip: bool,
    /// gzip level 0–9 (default 9).
    pub level: u32,
}

impl Default for CpioOptions {
    fn default() -> Self {
        Self {
            gzip: false,
            level: 9,
        }
    }
}

/// What [`write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioSummary {
    /// Entries written, not counting the trailer.
    pub entries: u32,
    /// Bytes of the uncompressed archive.
    pub archive_len: u64,
}

/// Writes `tree` as a cpio newc archive (gzip-compressed when
/// `opts.gzip`) to `out`.
pub fn write<W: Write>(out: W, tree: &Tree, opts: &CpioOptions) -> Result<CpioSummary, Error> {
    let v = tree.validate(&NAME_RULES)?;
    if opts.gzip {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(out, flate2::Compression::new(opts.level.min(9)));
        let mut w = NewcWriter::new(gz);
        let entries = write_entries(&mut w, &v)?;
        let archive_len = w.len();
        w.into_inner().finish().map_err(Error::Write)?;
        Ok(CpioSummary {
            entries,
            archive_len,
        })
    } else {
        let mut w = NewcWriter::new(out);
        let entries = write_entries(&mut w, &v)?;
        let archive_len = w.len();
        w.into_inner().flush().map_err(Error::Write)?;
        Ok(CpioSummary {
            entries,
            archive_len,
        })
    }
}

/// One newc member's header fields, but its size (which
/// [`NewcWriter::member`] takes from the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Its path in the archive (no leading `/`).
    pub name: &'a str,
    /// Inode number.
    pub ino: u32,
    /// Type and permission bits (`0o100644` for a regular file).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Device number (major, minor) of a device node.
    pub rdev: (u32, u32),
}

impl<'a> Member<'a> {
    /// A member `name` with `mode`, link count 1 and every other field 0.
    pub fn new(name: &'a str, mode: u32) -> Self {
        Member {
            name,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        }
    }
}

/// The name of the member that ends every newc archive.
pub const TRAILER: &str = "TRAILER!!!";

/// Writes a newc archive member by member: the one place that lays out
/// newc headers and padding, under [`write`] and for callers that stream
/// their own members (krazy-update's boot archive).
///
/// ```
/// use krazy_fs::cpio::{Member, NewcWriter};
/// let mut w = NewcWriter::new(Vec::new());
/// w.member(&Member { mtime: 7, ..Member::new("hello", 0o100644) }, b"hi\n").unwrap();
/// w.trailer().unwrap();
/// let out = w.into_inner();
/// assert!(out.starts_with(b"070701"));
/// assert_eq!(out.len() % 4, 0);
/// ```
#[derive(Debug)]
pub struct NewcWriter<W> {
    inner: W,
    len: u64,
}

impl<W: Write> NewcWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        NewcWriter { inner: out, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The writer written into.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.len += b.len() as u64;
        Ok(())
    }

    /// Writes zeros up to the next multiple of 4 bytes.
    pub fn pad(&mut self) -> io::Result<()> {
        let n = match self.len % 4 {
            0 => 0,
            1 => 3,
            2 => 2,
            _ => 1,
        };
        self.put(&[0; 3][..n])
    }

    /// Writes the header of a member whose data is `size` bytes, and its
    /// name; the caller writes the data with [`data`](Self::data) and then
    /// calls [`pad`](Self::pad).
    pub fn header(&mut self, m: &Member<'_>, size: u32) -> io::Result<()> {
        let namesize = u32::try_from(m.name.len() + 1).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "cpio member name too long")
        })?;
        let fields = [
            m.ino, m.mode, m.uid, m.gid, m.nlink, m.mtime, size, 0, // devmajor
            0, // devminor
            m.rdev.0, m.rdev.1, namesize, 0, // check
        ];
        let mut s = String::with_capacity(110 + m.name.len() + 4);
        s.push_str("070701");
        for f in fields {
            s.push_str(&format!("{f:08x}"));
        }
        s.push_str(m.name);
        s.push('\0');
        self.put(s.as_bytes())?;
        self.pad()
    }

    /// Writes (part of) a member's data.
    pub fn data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    /// Writes a whole member: header, name, `data` and padding. Data longer
    /// than newc's 32-bit size field is refused (`InvalidInput`).
    pub fn member(&mut self, m: &Member<'_>, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: too large for a cpio newc member", m.name),
            )
        })?;
        self.header(m, size)?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the trailer member ([`TRAILER`]).
    pub fn trailer(&mut self) -> io::Result<()> {
        self.member(&Member::new(TRAILER, 0), &[])
    }
}

fn write_entries<W: Write>(
    w: &mut NewcWriter<W>,
    v: &crate::tree::Validated<'_>,
) -> Result<u32, Error> {
    let mut count = 0u32;
    for node in v.nodes.iter().skip(1) {
        let e = node.entry;
        let path = node.path;
        let too_large = |field, value| Error::FieldTooLarge {
            path: path.to_string(),
            field,
            value,
        };
        let fit = |field, value: u64| u32::try_from(value).map_err(|_| too_large(field, value));
        count += 1;
        let mut h = Member {
            name: path,
            ino: count,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            nlink: 1,
            mtime: fit("mtime", e.mtime)?,
            rdev: (0, 0),
        };
        match &e.kind {
            Kind::Dir => {
                h.mode |= S_IFDIR;
                let subdirs = node
                    .children
                    .iter()
                    .filter(|&&c| v.nodes[c].entry.is_dir())
                    .count();
                h.nlink = fit("link count", 2 + subdirs as u64)?;
                w.header(&h, 0).map_err(Error::Write)?;
            }
            Kind::Symlink(target) => {
                h.mode |= S_IFLNK;
                let size = fit("symlink length", target.len() as u64)?;
                w.header(&h, size).map_err(Error::Write)?;
                w.data(target.as_bytes()).map_err(Error::Write)?;
                w.pad().map_err(Error::Write)?;
            }
            Kind::CharDevice { major, minor } => {
                h.mode |= S_IFCHR;
                h.rdev = (*major, *minor);
                w.header(&h, 0).map_err(Error::Write)?;
            }
            Kind::File(contents) => {
                h.mode |= S_IFREG;
                let rerr = |source| Error::Read {
                    path: path.to_string(),
                    source,
                };
                let len = contents.len().map_err(rerr)?;
                let size = fit("file size", len)?;
                w.header(&h, size).map_err(Error::Write)?;
                let r = contents.open().map_err(rerr)?;
                // One byte more than announced shows a file that grew.
                let mut r = r.take(len + 1);
                let mut buf = vec![0u8; 64 * 1024];
                let mut copied = 0u64;
                loop {
                    let k = match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(rerr(e)),
                    };
                    copied += k as u64;
                    if copied > len {
                        break;
                    }
                    w.data(&buf[..k]).map_err(Error::Write)?;
                }
                if copied != len {
                    return Err(Error::SizeChanged {
                        path: path.to_string(),
                        expected: len,
                    });
                }
                w.pad().map_err(Error::Write)?;
            }
        }
    }
    w.trailer().map_err(Error::Write)?;
    Ok(count)
}
