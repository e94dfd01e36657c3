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
        let mut w = Counter { inner: gz, len: 0 };
        let entries = write_entries(&mut w, &v)?;
        w.inner.finish().map_err(Error::Write)?;
        Ok(CpioSummary {
            entries,
            archive_len: w.len,
        })
    } else {
        let mut w = Counter { inner: out, len: 0 };
        let entries = write_entries(&mut w, &v)?;
        w.inner.flush().map_err(Error::Write)?;
        Ok(CpioSummary {
            entries,
            archive_len: w.len,
        })
    }
}

struct Counter<W> {
    inner: W,
    len: u64,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.inner.write_all(b).map_err(Error::Write)?;
        self.len += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), Error> {
        let n = (4 - (self.len % 4) as usize) % 4;
        self.put(&[0; 3][..n])
    }
}

/// One header's fields.
struct Header<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

fn put_header<W: Write>(w: &mut Counter<W>, h: &Header<'_>) -> Result<(), Error> {
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.size,
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        h.name.len() as u32 + 1,
        0, // check
    ];
    let mut s = String::with_capacity(110 + h.name.len() + 4);
    s.push_str("070701");
    for f in fields {
        s.push_str(&format!("{f:08x}"));
    }
    s.push_str(h.name);
    s.push('\0');
    w.put(s.as_bytes())?;
    w.pad()
}

fn write_entries<W: Write>(
    w: &mut Counter<W>,
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
        let mut h = Header {
            name: path,
            ino: count,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            nlink: 1,
            mtime: fit("mtime", e.mtime)?,
            size: 0,
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
                put_header(w, &h)?;
            }
            Kind::Symlink(target) => {
                h.mode |= S_IFLNK;
                h.size = fit("symlink length", target.len() as u64)?;
                put_header(w, &h)?;
                w.put(target.as_bytes())?;
                w.pad()?;
            }
            Kind::CharDevice { major, minor } => {
                h.mode |= S_IFCHR;
                h.rdev = (*major, *minor);
                put_header(w, &h)?;
            }
            Kind::File(contents) => {
                h.mode |= S_IFREG;
                let rerr = |source| Error::Read {
                    path: path.to_string(),
                    source,
                };
                let len = contents.len().map_err(rerr)?;
                h.size = fit("file size", len)?;
                put_header(w, &h)?;
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
                    w.put(&buf[..k])?;
                }
                if copied != len {
                    return Err(Error::SizeChanged {
                        path: path.to_string(),
                        expected: len,
                    });
                }
                w.pad()?;
            }
        }
    }
    put_header(
        w,
        &Header {
            name: "TRAILER!!!",
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        },
    )?;
    Ok(count)
}
