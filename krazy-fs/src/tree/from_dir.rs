//! Reading a host directory into a tree ([`Tree::from_dir`]).

use super::*;

impl Tree {
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
                    // glibc's major()/minor(): each is at most 32 bits by its masks.
                    #[allow(clippy::cast_possible_truncation)]
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
        mtime: opts.mtime.unwrap_or(u64::try_from(m.mtime()).unwrap_or(0)),
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
