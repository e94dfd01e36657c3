//! What one entry of a tree is: its [`Kind`], [`Contents`] and metadata.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's contents: bytes in memory, or a host file read when written.
#[derive(Debug, Clone)]
pub enum Contents {
    /// The bytes themselves (cheap to clone).
    Bytes(Arc<[u8]>),
    /// A host file, read when the image is written.
    Host(PathBuf),
}

impl Contents {
    /// Contents from bytes.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        Contents::Bytes(Arc::from(b.into()))
    }

    /// The length in bytes (a `stat` for host files).
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Contents::Bytes(b) => Ok(b.len() as u64),
            Contents::Host(p) => Ok(fs::metadata(p)?.len()),
        }
    }

    /// Whether the contents are empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// All of the contents in memory.
    pub fn read_all(&self) -> io::Result<Arc<[u8]>> {
        match self {
            Contents::Bytes(b) => Ok(b.clone()),
            Contents::Host(p) => Ok(Arc::from(fs::read(p)?)),
        }
    }

    /// A reader over the contents, for streaming large files.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        match self {
            Contents::Bytes(b) => Ok(Box::new(&b[..])),
            Contents::Host(p) => Ok(Box::new(io::BufReader::new(fs::File::open(p)?))),
        }
    }

    /// The host path, when the contents live in a host file.
    pub fn host_path(&self) -> Option<&Path> {
        match self {
            Contents::Host(p) => Some(p),
            Contents::Bytes(_) => None,
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file.
    File(Contents),
    /// A directory; its children are the entries whose parent path it is.
    Dir,
    /// A symbolic link to the target (relative or absolute, stored as given).
    Symlink(String),
    /// A character device node (cpio and squashfs only), e.g. `dev/console` (5, 1).
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl Kind {
    /// A short name of the kind for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::CharDevice { .. } => "character device",
        }
    }
}

/// One entry: its kind plus ownership, permissions and time.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the entry is.
    pub kind: Kind,
    /// Permission bits, including setuid/setgid/sticky (`0o7777`); no type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

impl Entry {
    /// A root-owned entry of `kind` with permission bits `mode` and time 0.
    pub fn new(kind: Kind, mode: u32) -> Self {
        Self {
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}
