//! Debian `.deb` packages unpacked without dpkg: the `ar` archive (parsed
//! here), then `data.tar.{xz,zst,gz}` (or uncompressed) with the `tar` crate,
//! then the files that are asked for. zstd (`ruzstd`) and gzip (`flate2`)
//! are pure Rust; xz uses liblzma built from its bundled C source (the
//! `liblzma` crate): the pure-Rust `lzma-rs` was 2.5 times slower than
//! `dpkg-deb` on a kernel package and panicked (integer overflow) on a
//! fuzzed xz header.
//!
//! Nothing is ever written outside the target directory: member paths with
//! `..` are rejected, absolute paths are taken relative to the target, and no
//! write goes through a symlink (symlinks in the package are created as
//! links but never followed). In-memory extraction has a byte limit.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why a package could not be unpacked. Every variant names the package (or
/// `<memory>`) and, where known, the member or path.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Opening or reading the package file failed.
    #[error("cannot read {}: {source}", deb.display())]
    Read {
        /// The package.
        deb: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not an `ar` archive (a .deb starts with `!<arch>\n`).
    #[error("{} is not a Debian package: {reason}", deb.display())]
    NotAr {
        /// The package.
        deb: PathBuf,
        /// What was found.
        reason: String,
    },
    /// An `ar` member header is malformed or the archive ends inside a member.
    #[error("{} is corrupt: {reason}", deb.display())]
    Corrupt {
        /// The package.
        deb: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The package has no `data.tar*` (or `control.tar*`) member.
    #[error("{} has no {member}.tar* member; is it really a .deb?", deb.display())]
    MissingMember {
        /// The package.
        deb: PathBuf,
        /// `data` or `control`.
        member: &'static str,
    },
    /// The member is compressed with a method this crate does not read.
    #[error("{}: member {member} uses an unsupported compression (xz, zst, gz or none are read)", deb.display())]
    UnsupportedCompression {
        /// The package.
        deb: PathBuf,
        /// The member's name.
        member: String,
    },
    /// Decompressing or reading the tar stream failed.
    #[error("{}: cannot unpack {member}: {source}", deb.display())]
    Tar {
        /// The package.
        deb: PathBuf,
        /// The member.
        member: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A tar entry's path would leave the target directory.
    #[error("{}: entry {path:?} is unsafe: {reason}", deb.display())]
    UnsafePath {
        /// The package.
        deb: PathBuf,
        /// The entry's path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// Writing an extracted file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// In-memory extraction would exceed its byte limit.
    #[error("{}: the selected files exceed the limit of {limit} bytes", deb.display())]
    TooLarge {
        /// The package.
        deb: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The control file lacks a field.
    #[error("{}: the control file has no {field} field", deb.display())]
    MissingControlField {
        /// The package.
        deb: PathBuf,
        /// The field.
        field: &'static str,
    },
}

/// What a package member holds, as extracted into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemKind {
    /// A regular file's bytes.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(String),
}

/// One extracted entry: its normalized path (no leading `./` or `/`), its
/// permission bits and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemEntry {
    /// The path inside the package, normalized (`boot/vmlinuz-6.1.0-56-amd64`).
    pub path: String,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// The contents.
    pub kind: MemKind,
}

/// What [`extract_to_dir`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files written, as normalized package paths, in archive order.
    pub files: Vec<String>,
    /// Symlinks created, with their targets.
    pub symlinks: Vec<(String, String)>,
}

/// The `ar` magic at the start of every `.deb`.
const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
/// Largest `ar` member size accepted (a kernel package is well under this).
const MAX_MEMBER: u64 = 4 << 30;
/// Largest zstd window accepted (Debian packages use far less).
const MAX_ZSTD_WINDOW: u64 = 128 << 20;
/// Memory limit of the xz decoder (its dictionary; Debian uses 8 MiB or less).
const MAX_XZ_MEMORY: u64 = 256 << 20;
/// Largest control file read into memory.
const MAX_CONTROL: u64 = 1 << 20;

/// One `ar` member's header.
struct ArMember {
    name: String,
    size: u64,
}

/// Reads the next `ar` member header, or `None` at a clean end of archive.
/// `pos` tracks the offset for the even-alignment padding.
fn next_member<R: Read>(
    r: &mut R,
    deb: &Path,
    pos: &mut u64,
) -> Result<Option<ArMember>, DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        deb: deb.to_path_buf(),
        reason,
    };
    if *pos % 2 == 1 {
        let mut pad = [0u8; 1];
        match r.read(&mut pad) {
            Ok(0) => return Ok(None),
            Ok(_) => *pos += 1,
            Err(source) => return Err(read_err(deb, source)),
        }
    }
    let mut hdr = [0u8; 60];
    let mut got = 0;
    while got < hdr.len() {
        match r.read(&mut hdr[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(read_err(deb, source)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < hdr.len() {
        return Err(corrupt(format!(
            "the archive ends inside a member header at offset {pos}"
        )));
    }
    *pos += 60;
    if &hdr[58..60] != b"`\n" {
        return Err(corrupt(format!(
            "bad member header magic at offset {}",
            *pos - 60
        )));
    }
    let field = |a: usize, b: usize| String::from_utf8_lossy(&hdr[a..b]).trim_end().to_string();
    let name = field(0, 16);
    let name = name.strip_suffix('/').unwrap_or(&name).to_string();
    let size_s = field(48, 58);
    let size: u64 = size_s
        .parse()
        .map_err(|_| corrupt(format!("member {name:?} has a bad size field {size_s:?}")))?;
    if size > MAX_MEMBER {
        return Err(corrupt(format!("member {name:?} claims {size} bytes")));
    }
    Ok(Some(ArMember { name, size }))
}

fn read_err(deb: &Path, source: io::Error) -> DebError {
    DebError::Read {
        deb: deb.to_path_buf(),
        source,
    }
}

/// Skips `n` bytes of `r`, failing if the archive ends first.
fn skip<R: Read>(r: &mut R, n: u64, deb: &Path, member: &str) -> Result<(), DebError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| read_err(deb, e))?;
    if copied < n {
        return Err(DebError::Corrupt {
            deb: deb.to_path_buf(),
            reason: format!("the archive ends inside member {member:?}"),
        });
    }
    Ok(())
}

/// The compression of a `*.tar*` member, from its name.
#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn compression_of(name: &str, prefix: &str) -> Option<Compression> {
    match name.strip_prefix(prefix)? {
        ".tar" => Some(Compression::None),
        ".tar.xz" => Some(Compression::Xz),
        ".tar.zst" => Some(Compression::Zstd),
        ".tar.gz" => Some(Compression::Gzip),
        _ => None,
    }
}

/// Runs `f` with a decompressing reader over `input` (an `ar` member).
fn with_decoder<R, T>(
    input: R,
    c: Compression,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> io::Result<T>
where
    R: Read,
{
    match c {
        Compression::None => f(&mut BufReader::new(input)),
        Compression::Gzip => f(&mut flate2::read::GzDecoder::new(BufReader::new(input))),
        Compression::Zstd => {
            let mut input = BufReader::new(input);
            let dec = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                &mut input,
                MAX_ZSTD_WINDOW,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            f(&mut ZstdRead(dec))
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(MAX_XZ_MEMORY, 0)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xz: {e}")))?;
            f(&mut liblzma::read::XzDecoder::new_stream(
                BufReader::new(input),
                stream,
            ))
        }
    }
}

/// Adapts ruzstd's decoder errors to `io::Error` (its `Read` impl already
/// returns io errors; this only names the type).
struct ZstdRead<D: Read>(D);

impl<D: Read> Read for ZstdRead<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Normalizes a tar path: drops `./` and a leading `/`, rejects `..`.
/// Returns `None` for the archive root itself.
fn normalize_entry(raw: &Path, deb: &Path) -> Result<Option<String>, DebError> {
    let mut parts: Vec<String> = Vec::new();
    for c in raw.components() {
        match c {
            Component::CurDir | Component::RootDir => {}
            Component::Normal(n) => {
                let s = n.to_str().ok_or_else(|| DebError::UnsafePath {
                    deb: deb.to_path_buf(),
                    path: raw.display().to_string(),
                    reason: "the path is not UTF-8",
                })?;
                parts.push(s.to_string());
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(DebError::UnsafePath {
                    deb: deb.to_path_buf(),
                    path: raw.display().to_string(),
                    reason: "the path contains '..'",
                })
            }
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Walks the `ar` archive in `r` to the member `{prefix}.tar*` and runs `f`
/// on each tar entry with its normalized path.
fn walk_member<R, F>(r: R, deb: &Path, prefix: &'static str, mut f: F) -> Result<(), DebError>
where
    R: Read,
    F: FnMut(&str, &mut tar::Entry<'_, &mut dyn Read>) -> Result<(), DebError>,
{
    let mut r = r;
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DebError::NotAr {
                deb: deb.to_path_buf(),
                reason: "the file is shorter than the ar magic".into(),
            }
        } else {
            read_err(deb, e)
        }
    })?;
    if &magic != AR_MAGIC {
        return Err(DebError::NotAr {
            deb: deb.to_path_buf(),
            reason: format!(
                "it starts with {:?}, not \"!<arch>\\n\"",
                String::from_utf8_lossy(&magic)
            ),
        });
    }
    let mut pos = 8u64;
    while let Some(m) = next_member(&mut r, deb, &mut pos)? {
        if !m.name.starts_with(prefix) {
            skip(&mut r, m.size, deb, &m.name)?;
            pos += m.size;
            continue;
        }
        let c =
            compression_of(&m.name, prefix).ok_or_else(|| DebError::UnsupportedCompression {
                deb: deb.to_path_buf(),
                member: m.name.clone(),
            })?;
        let member = m.name.clone();
        let tar_err = |source: io::Error| DebError::Tar {
            deb: deb.to_path_buf(),
            member: member.clone(),
            source,
        };
        // Errors from `f` travel inside io::Error so they cross the decoder.
        let mut inner: Option<DebError> = None;
        let res = with_decoder((&mut r).take(m.size), c, |dec| {
            let mut ar = tar::Archive::new(dec);
            for entry in ar.entries()? {
                let mut entry = entry?;
                let raw = entry.path()?.into_owned();
                let path = match normalize_entry(&raw, deb) {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        inner = Some(e);
                        return Err(io::Error::other("stop"));
                    }
                };
                if let Err(e) = f(&path, &mut entry) {
                    inner = Some(e);
                    return Err(io::Error::other("stop"));
                }
            }
            Ok(())
        });
        if let Some(e) = inner {
            return Err(e);
        }
        return res.map_err(tar_err);
    }
    Err(DebError::MissingMember {
        deb: deb.to_path_buf(),
        member: prefix,
    })
}

/// Kind of a tar entry that extraction handles.
enum EntryKind {
    File,
    Dir,
    Symlink(String),
    HardLink(String),
    Other,
}

fn entry_kind<R: Read>(
    e: &tar::Entry<'_, R>,
    deb: &Path,
    path: &str,
) -> Result<EntryKind, DebError> {
    let t = e.header().entry_type();
    let link = || -> Result<String, DebError> {
        let l = e
            .link_name()
            .ok()
            .flatten()
            .ok_or_else(|| DebError::UnsafePath {
                deb: deb.to_path_buf(),
                path: path.to_string(),
                reason: "a link without a target",
            })?;
        l.to_str()
            .map(str::to_string)
            .ok_or_else(|| DebError::UnsafePath {
                deb: deb.to_path_buf(),
                path: path.to_string(),
                reason: "the link target is not UTF-8",
            })
    };
    Ok(if t.is_file() || t == tar::EntryType::Continuous {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink(link()?)
    } else if t.is_hard_link() {
        EntryKind::HardLink(link()?)
    } else {
        EntryKind::Other
    })
}

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
    let wr = |path: PathBuf| move |source| DebError::Write { path, source };
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
                io::copy(entry, &mut f).map_err(|source| DebError::Tar {
                    deb: deb.to_path_buf(),
                    member: path.to_string(),
                    source,
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
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|source| DebError::Write {
        path: p.to_path_buf(),
        source,
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
            source: io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way"),
        }),
        Ok(_) => fs::remove_file(p).map_err(|source| DebError::Write {
            path: p.to_path_buf(),
            source,
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
            Err(_) => fs::create_dir(&cur).map_err(|source| DebError::Write {
                path: cur.clone(),
                source,
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

fn read_limited(
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
        .map_err(|source| DebError::Tar {
            deb: deb.to_path_buf(),
            member: path.to_string(),
            source,
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

/// The fields of a package's `control` file (`Package`, `Version`,
/// `Architecture`, `Depends`, …), continuation lines joined.
pub fn control_fields<R: Read>(r: R, deb: &Path) -> Result<BTreeMap<String, String>, DebError> {
    let mut text = None;
    let mut total = 0;
    walk_member(r, deb, "control", |path, entry| {
        if path == "control" {
            let b = read_limited(entry, deb, path, MAX_CONTROL, &mut total)?;
            text = Some(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(())
    })?;
    let text = text.ok_or(DebError::MissingControlField {
        deb: deb.to_path_buf(),
        field: "control file",
    })?;
    Ok(parse_control(&text))
}

/// Parses RFC 822-style control text (one stanza) into fields.
pub fn parse_control(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in io::Cursor::new(text).lines().map_while(Result::ok) {
        if line.is_empty() {
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last {
                if let Some(v) = fields.get_mut(k) {
                    let v: &mut String = v;
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

/// The package name and version from a `.deb` file's control file.
pub fn package_id(deb: &Path) -> Result<(String, String), DebError> {
    let f = fs::File::open(deb).map_err(|e| read_err(deb, e))?;
    let fields = control_fields(f, deb)?;
    let get = |field: &'static str| {
        fields
            .get(field)
            .cloned()
            .ok_or(DebError::MissingControlField {
                deb: deb.to_path_buf(),
                field,
            })
    };
    Ok((get("Package")?, get("Version")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut v = AR_MAGIC.to_vec();
        for (name, data) in members {
            v.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    "100644",
                    data.len()
                )
                .as_bytes(),
            );
            v.extend_from_slice(data);
            if data.len() % 2 == 1 {
                v.push(b'\n');
            }
        }
        v
    }

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Write the name bytes directly so '..' can be tested.
            let name = &mut h.as_old_mut().name;
            name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, *d).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_an_uncompressed_deb_built_by_hand() {
        let data = tar_with(&[("./boot/vmlinuz-1", b"kernel"), ("./etc/x", b"odd")]);
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        let got = extract_to_memory(
            &deb[..],
            Path::new("t.deb"),
            |p| p.starts_with("boot/"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "boot/vmlinuz-1");
        assert_eq!(got[0].kind, MemKind::File(b"kernel".to_vec()));
    }

    #[test]
    fn rejects_parent_dir_components() {
        let data = tar_with(&[("../evil", b"x")]);
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        let d = tempfile::tempdir().unwrap();
        let e = extract_reader_to_dir(&deb[..], Path::new("t.deb"), &d.path().join("out"), |_| {
            true
        })
        .unwrap_err();
        assert!(matches!(e, DebError::UnsafePath { .. }), "{e}");
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "lib", "/tmp").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "lib/pwned", &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        let d = tempfile::tempdir().unwrap();
        let e =
            extract_reader_to_dir(&deb[..], Path::new("t.deb"), d.path(), |_| true).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!Path::new("/tmp/pwned").exists());
        assert_eq!(
            fs::read_link(d.path().join("lib")).unwrap(),
            Path::new("/tmp")
        );
    }

    #[test]
    fn memory_limit_is_enforced() {
        let data = tar_with(&[("big", &[7u8; 5000])]);
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        let e = extract_to_memory(&deb[..], Path::new("t.deb"), |_| true, 4096).unwrap_err();
        assert!(matches!(e, DebError::TooLarge { limit: 4096, .. }), "{e}");
    }

    #[test]
    fn truncated_and_foreign_files_are_clear_errors() {
        let e =
            extract_to_memory(&b"hello world"[..], Path::new("x.deb"), |_| true, 1).unwrap_err();
        assert!(e.to_string().contains("not a Debian package"), "{e}");
        let data = tar_with(&[("a", b"abc")]);
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        let e = extract_to_memory(
            &deb[..deb.len() - 700],
            Path::new("x.deb"),
            |_| true,
            1 << 20,
        )
        .unwrap_err();
        assert!(e.to_string().contains("x.deb"), "{e}");
        let e = extract_to_memory(
            &ar(&[("debian-binary", b"2.0\n")])[..],
            Path::new("x.deb"),
            |_| true,
            1,
        )
        .unwrap_err();
        assert!(
            matches!(e, DebError::MissingMember { member: "data", .. }),
            "{e}"
        );
        let e = extract_to_memory(
            &ar(&[("data.tar.bz2", b"zz")])[..],
            Path::new("x.deb"),
            |_| true,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, DebError::UnsupportedCompression { .. }), "{e}");
    }

    #[test]
    fn control_text_parses() {
        let f = parse_control(
            "Package: linux-image-cloud-amd64\nVersion: 6.1.158-1\nDescription: x\n more\n",
        );
        assert_eq!(f["Package"], "linux-image-cloud-amd64");
        assert_eq!(f["Version"], "6.1.158-1");
        assert_eq!(f["Description"], "x\nmore");
    }
}
