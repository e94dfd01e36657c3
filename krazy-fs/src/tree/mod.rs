//! The in-memory [`Tree`] of entries that every writer takes.
//!
//! A tree is built in any order, then [`Tree::validate`]d once against a
//! format's [`NameRules`]; writers walk the resulting [`Validated`] view, whose
//! directories list their children sorted by name bytes, so output does not
//! depend on insertion order.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

mod entry;
mod from_dir;
#[cfg(test)]
mod tests;
mod validate;

pub use entry::{Contents, Entry, Kind};
pub use from_dir::{source_date_epoch, FromDirOptions};
pub use validate::{NameRules, Node, Validated};

/// Why a tree cannot be written. Every variant names the offending path.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The path is empty where a name was needed, or has `.`/`..`/empty components.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two entries share one path.
    #[error("duplicate path {path:?}")]
    Duplicate {
        /// The path given twice.
        path: String,
    },
    /// An entry's parent directory is not in the tree.
    #[error("{path:?} has no parent directory {parent:?} in the tree")]
    MissingParent {
        /// The entry.
        path: String,
        /// The parent that is missing.
        parent: String,
    },
    /// An entry's parent is a file, symlink or device.
    #[error("{path:?} is inside {parent:?}, which is not a directory")]
    ParentNotDirectory {
        /// The entry.
        path: String,
        /// The parent that is not a directory.
        parent: String,
    },
    /// A name is longer than the format allows.
    #[error("name of {path:?} is too long for {format}: at most {max} {unit}")]
    NameTooLong {
        /// The entry.
        path: String,
        /// The format's name.
        format: &'static str,
        /// The limit.
        max: usize,
        /// What the limit counts (bytes, UTF-16 units).
        unit: &'static str,
    },
    /// A name holds a character or shape the format cannot store.
    #[error("name of {path:?} cannot be stored in {format}: {reason}")]
    BadName {
        /// The entry.
        path: String,
        /// The format's name.
        format: &'static str,
        /// Why.
        reason: String,
    },
    /// Two names differ only in case on a case-insensitive format.
    #[error("{path:?} and {other:?} differ only in case, which {format} cannot hold")]
    CaseCollision {
        /// The entry.
        path: String,
        /// The entry it collides with.
        other: String,
        /// The format's name.
        format: &'static str,
    },
    /// The format cannot hold this kind of entry (a device node on FAT, say).
    #[error("{path:?} is a {kind}, which {format} cannot hold")]
    UnsupportedKind {
        /// The entry.
        path: String,
        /// The entry's kind.
        kind: &'static str,
        /// The format's name.
        format: &'static str,
    },
    /// Reading a host file or directory failed.
    #[error("cannot read {path}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// An in-memory directory tree: the input of every writer.
///
/// Paths are `/`-separated and relative to the root (a leading `/` is
/// accepted and dropped). The root directory always exists; change its
/// metadata with [`Tree::root_mut`].
#[derive(Debug, Clone)]
pub struct Tree {
    root: Entry,
    entries: BTreeMap<String, Entry>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// Normalizes `path`: drops one leading `/`, rejects empty, `.` and `..`
/// components and NUL bytes.
pub fn normalize(path: &str) -> Result<String, TreeError> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let invalid = |reason| TreeError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if p.is_empty() {
        return Err(invalid("the root cannot be inserted; use Tree::root_mut"));
    }
    if p.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(invalid("has an empty component")),
            "." | ".." => return Err(invalid("has a '.' or '..' component")),
            _ => {}
        }
    }
    Ok(p.to_string())
}

impl Tree {
    /// An empty tree: a root directory `0755`, owned by 0:0, time 0.
    pub fn new() -> Self {
        Self {
            root: Entry::new(Kind::Dir, 0o755),
            entries: BTreeMap::new(),
        }
    }

    /// The root directory's metadata.
    pub fn root(&self) -> &Entry {
        &self.root
    }

    /// The root directory's metadata, to change mode, owner or time.
    pub fn root_mut(&mut self) -> &mut Entry {
        &mut self.root
    }

    /// Adds `entry` at `path`. Parents may be added before or after; they are
    /// checked by [`Tree::validate`].
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), TreeError> {
        let p = normalize(path)?;
        if self.entries.contains_key(&p) {
            return Err(TreeError::Duplicate { path: p });
        }
        self.entries.insert(p, entry);
        Ok(())
    }

    /// Adds a root-owned file with time `mtime`.
    pub fn add_file(
        &mut self,
        path: &str,
        contents: Contents,
        mode: u32,
        mtime: u64,
    ) -> Result<(), TreeError> {
        let mut e = Entry::new(Kind::File(contents), mode);
        e.mtime = mtime;
        self.insert(path, e)
    }

    /// Adds a root-owned directory with time `mtime`.
    pub fn add_dir(&mut self, path: &str, mode: u32, mtime: u64) -> Result<(), TreeError> {
        let mut e = Entry::new(Kind::Dir, mode);
        e.mtime = mtime;
        self.insert(path, e)
    }

    /// Adds a root-owned symlink (mode `0777`) with time `mtime`.
    pub fn add_symlink(&mut self, path: &str, target: &str, mtime: u64) -> Result<(), TreeError> {
        let mut e = Entry::new(Kind::Symlink(target.to_string()), 0o777);
        e.mtime = mtime;
        self.insert(path, e)
    }

    /// Adds every missing directory on the way to `path` (and `path` itself)
    /// as root-owned `0755` directories with time `mtime`.
    pub fn add_dir_all(&mut self, path: &str, mtime: u64) -> Result<(), TreeError> {
        let p = normalize(path)?;
        let mut end = 0;
        loop {
            end = match p[end..].find('/') {
                Some(i) => end + i,
                None => p.len(),
            };
            let prefix = &p[..end];
            match self.entries.get(prefix) {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    return Err(TreeError::ParentNotDirectory {
                        path: p.clone(),
                        parent: prefix.to_string(),
                    })
                }
                None => self.add_dir(prefix, 0o755, mtime)?,
            }
            if end == p.len() {
                return Ok(());
            }
            end += 1;
        }
    }

    /// The entry at `path`, if any (`""` or `"/"` is the root).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let p = path.strip_prefix('/').unwrap_or(path);
        if p.is_empty() {
            return Some(&self.root);
        }
        self.entries.get(p)
    }

    /// The entry at `path`, mutably.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        let p = path.strip_prefix('/').unwrap_or(path);
        if p.is_empty() {
            return Some(&mut self.root);
        }
        self.entries.get_mut(p)
    }

    /// Removes the entry at `path` (not its children), returning it.
    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        self.entries.remove(path.strip_prefix('/').unwrap_or(path))
    }

    /// Number of entries, not counting the root.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree holds nothing but its root.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry but the root, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}
