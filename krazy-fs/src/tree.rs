//! The in-memory [`Tree`] of entries that every writer takes.
//!
//! A tree is built in any order, then [`Tree::validate`]d once against a
//! format's [`NameRules`]; writers walk the resulting [`Validated`] view, whose
//! directories list their children sorted by name bytes, so output does not
//! depend on insertion order.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("cannot read {path}: {source}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

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

/// The limits of one format, checked by [`Tree::validate`].
#[derive(Debug, Clone)]
pub struct NameRules {
    /// The format's name, for messages.
    pub format: &'static str,
    /// Longest name in bytes of UTF-8, if limited.
    pub max_name_bytes: Option<usize>,
    /// Longest name in UTF-16 code units, if limited (FAT long names: 255).
    pub max_name_utf16: Option<usize>,
    /// Characters a name may not contain (besides `/` and NUL, never allowed).
    pub forbidden_chars: &'static [char],
    /// Whether names must be valid UTF-8 and differ other than by case.
    pub case_insensitive: bool,
    /// Whether character devices can be stored.
    pub devices: bool,
    /// Whether symlinks can be stored.
    pub symlinks: bool,
}

impl NameRules {
    /// Rules that accept everything a Unix file system can hold.
    pub const UNIX: NameRules = NameRules {
        format: "unix",
        max_name_bytes: Some(255),
        max_name_utf16: None,
        forbidden_chars: &[],
        case_insensitive: false,
        devices: true,
        symlinks: true,
    };
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

    /// Checks the whole tree against `rules` and returns the hierarchy that
    /// writers walk. Fails on the first problem, naming its path.
    pub fn validate(&self, rules: &NameRules) -> Result<Validated<'_>, TreeError> {
        let mut nodes = Vec::with_capacity(self.entries.len() + 1);
        nodes.push(Node {
            path: "",
            name: "",
            entry: &self.root,
            parent: 0,
            children: Vec::new(),
        });
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        index.insert("", 0);
        // BTreeMap order puts "a" before "a/b" but "a-b" between them;
        // parents always sort before their children, which is all we need.
        for (path, entry) in &self.entries {
            let (parent_path, name) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => ("", path.as_str()),
            };
            let Some(&parent) = index.get(parent_path) else {
                return Err(TreeError::MissingParent {
                    path: path.clone(),
                    parent: parent_path.to_string(),
                });
            };
            if !nodes[parent].entry.is_dir() {
                return Err(TreeError::ParentNotDirectory {
                    path: path.clone(),
                    parent: parent_path.to_string(),
                });
            }
            check_name(path, name, entry, rules)?;
            let id = nodes.len();
            nodes.push(Node {
                path,
                name,
                entry,
                parent,
                children: Vec::new(),
            });
            nodes[parent].children.push(id);
            index.insert(path, id);
        }
        for i in 0..nodes.len() {
            let mut children = std::mem::take(&mut nodes[i].children);
            children.sort_by(|&a, &b| nodes[a].name.as_bytes().cmp(nodes[b].name.as_bytes()));
            if rules.case_insensitive {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for &c in &children {
                    if let Some(&o) = seen.get(&nodes[c].name.to_lowercase()) {
                        return Err(TreeError::CaseCollision {
                            path: nodes[c].path.to_string(),
                            other: nodes[o].path.to_string(),
                            format: rules.format,
                        });
                    }
                    seen.insert(nodes[c].name.to_lowercase(), c);
                }
            }
            nodes[i].children = children;
        }
        Ok(Validated { nodes })
    }

    /// Reads a host directory into a tree: files (as [`Contents::Host`]),
    /// directories, symlinks and character devices, with their modes and
    /// owners. `opts` can force ownership to root and fix every time.
    pub fn from_dir(dir: &Path, opts: &FromDirOptions) -> Result<Tree, TreeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Io { path, source }
        };
        let meta = fs::metadata(dir).map_err(io(dir))?;
        let mut tree = Tree::new();
        tree.root = entry_from_meta(Kind::Dir, &meta, opts);
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((host, rel)) = stack.pop() {
            let mut names: Vec<_> = fs::read_dir(&host)
                .map_err(io(&host))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io(&host))?;
            names.sort();
            for name in names {
                let hp = host.join(&name);
                let name = name.to_str().ok_or_else(|| TreeError::BadName {
                    path: hp.display().to_string(),
                    format: "krazy tree",
                    reason: "not valid UTF-8".into(),
                })?;
                let rp = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let m = fs::symlink_metadata(&hp).map_err(io(&hp))?;
                let ft = m.file_type();
                let kind = if ft.is_dir() {
                    stack.push((hp.clone(), rp.clone()));
                    Kind::Dir
                } else if ft.is_symlink() {
                    let t = fs::read_link(&hp).map_err(io(&hp))?;
                    Kind::Symlink(t.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    Kind::File(Contents::Host(hp.clone()))
                } else if ft.is_char_device() {
                    let rdev = m.rdev();
                    Kind::CharDevice {
                        major: ((rdev >> 8) & 0xfff) as u32 | ((rdev >> 32) & !0xfff) as u32,
                        minor: (rdev & 0xff) as u32 | ((rdev >> 12) & !0xff) as u32,
                    }
                } else {
                    return Err(TreeError::UnsupportedKind {
                        path: hp.display().to_string(),
                        kind: "socket, fifo or block device",
                        format: "krazy tree",
                    });
                };
                tree.insert(&rp, entry_from_meta(kind, &m, opts))?;
            }
        }
        Ok(tree)
    }
}

fn entry_from_meta(kind: Kind, m: &fs::Metadata, opts: &FromDirOptions) -> Entry {
    Entry {
        kind,
        mode: m.mode() & 0o7777,
        uid: if opts.all_root { 0 } else { m.uid() },
        gid: if opts.all_root { 0 } else { m.gid() },
        mtime: opts.mtime.unwrap_or(m.mtime().max(0) as u64),
    }
}

/// How [`Tree::from_dir`] maps host metadata.
#[derive(Debug, Clone, Default)]
pub struct FromDirOptions {
    /// Force every owner and group to 0.
    pub all_root: bool,
    /// Use this time for every entry instead of the host's mtimes.
    pub mtime: Option<u64>,
}

impl FromDirOptions {
    /// Options from the environment: `mtime` from `SOURCE_DATE_EPOCH` when set.
    pub fn from_env(all_root: bool) -> Self {
        Self {
            all_root,
            mtime: source_date_epoch(),
        }
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, when set to a number.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

fn check_name(path: &str, name: &str, entry: &Entry, rules: &NameRules) -> Result<(), TreeError> {
    let too_long = |max, unit| TreeError::NameTooLong {
        path: path.to_string(),
        format: rules.format,
        max,
        unit,
    };
    if let Some(max) = rules.max_name_bytes {
        if name.len() > max {
            return Err(too_long(max, "bytes"));
        }
    }
    if let Some(max) = rules.max_name_utf16 {
        if name.encode_utf16().count() > max {
            return Err(too_long(max, "UTF-16 code units"));
        }
    }
    if let Some(c) = name.chars().find(|c| rules.forbidden_chars.contains(c)) {
        return Err(TreeError::BadName {
            path: path.to_string(),
            format: rules.format,
            reason: format!("contains {c:?}"),
        });
    }
    let unsupported = match entry.kind {
        Kind::CharDevice { .. } if !rules.devices => true,
        Kind::Symlink(_) if !rules.symlinks => true,
        _ => false,
    };
    if unsupported {
        return Err(TreeError::UnsupportedKind {
            path: path.to_string(),
            kind: entry.kind.name(),
            format: rules.format,
        });
    }
    Ok(())
}

/// One entry of a validated tree.
#[derive(Debug)]
pub struct Node<'a> {
    /// Full path without a leading `/` (`""` for the root).
    pub path: &'a str,
    /// Last path component (`""` for the root).
    pub name: &'a str,
    /// The entry.
    pub entry: &'a Entry,
    /// Index of the parent node (the root is its own parent).
    pub parent: usize,
    /// Indices of the children, sorted by name bytes.
    pub children: Vec<usize>,
}

/// A tree that passed [`Tree::validate`]: nodes with parent and child links.
/// Node 0 is the root; parents come before their children.
#[derive(Debug)]
pub struct Validated<'a> {
    /// All nodes; index 0 is the root.
    pub nodes: Vec<Node<'a>>,
}

impl<'a> Validated<'a> {
    /// The root node.
    pub fn root(&self) -> &Node<'a> {
        &self.nodes[0]
    }

    /// The node at index `i`.
    pub fn node(&self, i: usize) -> &Node<'a> {
        &self.nodes[i]
    }

    /// The children of node `i`, sorted by name bytes.
    pub fn children(&self, i: usize) -> impl Iterator<Item = &Node<'a>> {
        self.nodes[i].children.iter().map(|&c| &self.nodes[c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_orders_children_and_finds_problems() {
        let mut t = Tree::new();
        t.add_dir("a", 0o755, 0).unwrap();
        t.add_file("a/z", Contents::bytes("z"), 0o644, 0).unwrap();
        t.add_file("a/b", Contents::bytes("b"), 0o644, 0).unwrap();
        t.add_file("a-b", Contents::bytes(""), 0o644, 0).unwrap();
        let v = t.validate(&NameRules::UNIX).unwrap();
        let a = v.children(0).find(|n| n.name == "a").unwrap();
        let names: Vec<_> = a.children.iter().map(|&c| v.node(c).name).collect();
        assert_eq!(names, ["b", "z"]);

        assert!(matches!(
            t.add_file("/a/b", Contents::bytes(""), 0o644, 0),
            Err(TreeError::Duplicate { .. })
        ));
        t.add_file("x/y", Contents::bytes(""), 0o644, 0).unwrap();
        let e = t.validate(&NameRules::UNIX).unwrap_err();
        assert!(matches!(e, TreeError::MissingParent { ref parent, .. } if parent == "x"));
        t.remove("x/y");
        t.add_file("a/b/c", Contents::bytes(""), 0o644, 0).unwrap();
        assert!(matches!(
            t.validate(&NameRules::UNIX),
            Err(TreeError::ParentNotDirectory { .. })
        ));
    }

    #[test]
    fn rules_and_paths() {
        for bad in ["", "/", "a//b", "a/./b", "../x", "a\0b"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
        let mut t = Tree::new();
        t.add_file(&"n".repeat(256), Contents::bytes(""), 0o644, 0)
            .unwrap();
        assert!(matches!(
            t.validate(&NameRules::UNIX),
            Err(TreeError::NameTooLong { .. })
        ));
        let mut t = Tree::new();
        t.add_file("A", Contents::bytes(""), 0o644, 0).unwrap();
        t.add_file("a", Contents::bytes(""), 0o644, 0).unwrap();
        let rules = NameRules {
            case_insensitive: true,
            ..NameRules::UNIX
        };
        assert!(matches!(
            t.validate(&rules),
            Err(TreeError::CaseCollision { .. })
        ));
        let mut t = Tree::new();
        t.add_dir_all("/a/b/c", 0).unwrap();
        t.add_dir_all("a/b/d", 0).unwrap();
        assert_eq!(t.len(), 4);
    }
}
