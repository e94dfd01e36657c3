//! Extraction of a package's data entries: into a directory (never
//! writing through a symlink, parents created as real directories) or into
//! memory under a byte limit.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::ar::{entry_kind, normalize_entry, read_err, walk_member, EntryKind};
use super::{DebError, Extracted, MemEntry, MemKind};

/// Extracts the data files for which `want(path)` is true into `dest`
/// (created if missing). Paths passed to `want` are normalized
/// (`boot/vmlinuz-…`, `lib/modules/…`); parents of wanted entries are created
/// as directories. Existing files are replaced; no write follows a symlink.
pub fn extract_to_dir(
    deb: &Path,
    dest: &Path,
    want: impl Fn(&str) -> bool,
) -> Result<Extracted, DebError> {
    let file = fs::File::open(deb).map_err(|e| read_err(deb, e))?;
    extract_reader_to_dir(file, deb, dest, want)
}

/// Like [`extract_to_dir`], reading the package from `r`; `deb` names it in
/// errors.
pub fn extract_reader_to_dir<R: Read>(
    r: R,
    deb: &Path,
    dest: &Path,
    want: impl Fn(&str) -> bool,
) -> Result<Extracted, DebError> {
    let wr = |path: PathBuf| move |error| DebError::Write { path, error };
    fs::create_dir_all(dest).map_err(wr(dest.to_path_buf()))?;
    let mut out = Extracted::default();
    walk_member(r, deb, "data", |path, entry| {
        if !want(path) {
            return Ok(());
        }
        let kind = entry_kind(entry, deb, path)?;
        let target = safe_target(dest, path, deb)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match kind {
            EntryKind::Dir => {
                if !is_real_dir(&target) {
                    remove_non_dir(&target)?;
                    fs::create_dir(&target).map_err(wr(target.clone()))?;
                }
            }
            EntryKind::File => {
                remove_non_dir(&target)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(wr(target.clone()))?;
                io::copy(entry, &mut f).map_err(|error| DebError::Tar {
                    deb: deb.to_path_buf(),
                    member: path.to_string(),
                    error,
                })?;
                set_mode(&target, mode & 0o777)?;
                out.files.push(path.to_string());
            }
            EntryKind::Symlink(to) => {
                remove_non_dir(&target)?;
                std::os::unix::fs::symlink(&to, &target).map_err(wr(target.clone()))?;
                out.symlinks.push((path.to_string(), to));
            }
            EntryKind::HardLink(to) => {
                let src =
                    normalize_entry(Path::new(&to), deb)?.ok_or_else(|| DebError::UnsafePath {
                        deb: deb.to_path_buf(),
                        path: path.to_string(),
                        reason: "a hard link to the archive root",
                    })?;
                let src = safe_target(dest, &src, deb)?;
                let meta = fs::symlink_metadata(&src).map_err(wr(src.clone()))?;
                if !meta.is_file() {
                    return Err(DebError::UnsafePath {
                        deb: deb.to_path_buf(),
                        path: path.to_string(),
                        reason: "a hard link to something that is not an extracted file",
                    });
                }
                remove_non_dir(&target)?;
                fs::copy(&src, &target).map_err(wr(target.clone()))?;
                out.files.push(path.to_string());
            }
            EntryKind::Other => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), DebError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|error| DebError::Write {
        path: p.to_path_buf(),
        error,
    })
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Removes a file or symlink at `p` (never a directory, never following).
fn remove_non_dir(p: &Path) -> Result<(), DebError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(DebError::Write {
            path: p.to_path_buf(),
            error: io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way"),
        }),
        Ok(_) => fs::remove_file(p).map_err(|error| DebError::Write {
            path: p.to_path_buf(),
            error,
        }),
        Err(_) => Ok(()),
    }
}

/// The host path for `path` under `dest`, creating missing parents as real
/// directories and refusing any parent that is a symlink or a file.
fn safe_target(dest: &Path, path: &str, deb: &Path) -> Result<PathBuf, DebError> {
    let mut cur = dest.to_path_buf();
    let comps: Vec<&str> = path.split('/').collect();
    let (last, parents) = comps.split_last().ok_or_else(|| DebError::UnsafePath {
        deb: deb.to_path_buf(),
        path: path.to_string(),
        reason: "an empty path",
    })?;
    for c in parents {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(DebError::UnsafePath {
                    deb: deb.to_path_buf(),
                    path: path.to_string(),
                    reason: "a parent directory is a symlink, which extraction never follows",
                })
            }
            Ok(_) => {
                return Err(DebError::UnsafePath {
                    deb: deb.to_path_buf(),
                    path: path.to_string(),
                    reason: "a parent directory is a file",
                })
            }
            Err(_) => fs::create_dir(&cur).map_err(|error| DebError::Write {
                path: cur.clone(),
                error,
            })?,
        }
    }
    cur.push(last);
    Ok(cur)
}

/// Extracts the data entries for which `want(path)` is true into memory,
/// failing once file bytes would exceed `limit`.
pub fn extract_to_memory<R: Read>(
    r: R,
    deb: &Path,
    want: impl Fn(&str) -> bool,
    limit: u64,
) -> Result<Vec<MemEntry>, DebError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    walk_member(r, deb, "data", |path, entry| {
        if !want(path) {
            return Ok(());
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = match entry_kind(entry, deb, path)? {
            EntryKind::File => MemKind::File(read_limited(entry, deb, path, limit, &mut total)?),
            EntryKind::Dir => MemKind::Dir,
            EntryKind::Symlink(t) => MemKind::Symlink(t),
            EntryKind::HardLink(to) => {
                let src = normalize_entry(Path::new(&to), deb)?;
                let found = out.iter().find_map(|e: &MemEntry| match (&e.kind, &src) {
                    (MemKind::File(b), Some(s)) if &e.path == s => Some(b.clone()),
                    _ => None,
                });
                match found {
                    Some(b) => {
                        total += b.len() as u64;
                        if total > limit {
                            return Err(DebError::TooLarge {
                                deb: deb.to_path_buf(),
                                limit,
                            });
                        }
                        MemKind::File(b)
                    }
                    None => {
                        return Err(DebError::UnsafePath {
                            deb: deb.to_path_buf(),
                            path: path.to_string(),
                            reason: "a hard link to something that is not an extracted file",
                        })
                    }
                }
            }
            EntryKind::Other => return Ok(()),
        };
        out.push(MemEntry {
            path: path.to_string(),
            mode,
            kind,
        });
        Ok(())
    })?;
    Ok(out)
}

pub(super) fn read_limited(
    entry: &mut dyn Read,
    deb: &Path,
    path: &str,
    limit: u64,
    total: &mut u64,
) -> Result<Vec<u8>, DebError> {
    let room = limit.saturating_sub(*total);
    let mut buf = Vec::new();
    entry
        .take(room.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|error| DebError::Tar {
            deb: deb.to_path_buf(),
            member: path.to_string(),
            error,
        })?;
    *total += buf.len() as u64;
    if *total > limit {
        return Err(DebError::TooLarge {
            deb: deb.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}
