//! The `ar` archive a `.deb` is: member headers, skipping members, the
//! decompressor for a `*.tar*` member, and a walk over that member's tar
//! entries with their paths normalized (`..` refused).

use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

use super::DebError;

/// The `ar` magic at the start of every `.deb`.
pub(super) const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
/// Largest `ar` member size accepted (a kernel package is well under this).
const MAX_MEMBER: u64 = 4 << 30;
/// Largest zstd window accepted (Debian packages use far less).
const MAX_ZSTD_WINDOW: u64 = 128 << 20;
/// Memory limit of the xz decoder (its dictionary; Debian uses 8 MiB or less).
const MAX_XZ_MEMORY: u64 = 256 << 20;

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
            Err(error) => return Err(read_err(deb, error)),
        }
    }
    let mut hdr = [0u8; 60];
    let mut got = 0;
    while got < hdr.len() {
        match r.read(&mut hdr[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(read_err(deb, error)),
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

pub(super) fn read_err(deb: &Path, error: io::Error) -> DebError {
    DebError::Read {
        deb: deb.to_path_buf(),
        error,
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
pub(super) fn normalize_entry(raw: &Path, deb: &Path) -> Result<Option<String>, DebError> {
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
pub(super) fn walk_member<R, F>(
    r: R,
    deb: &Path,
    prefix: &'static str,
    mut f: F,
) -> Result<(), DebError>
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
        let tar_err = |error: io::Error| DebError::Tar {
            deb: deb.to_path_buf(),
            member: member.clone(),
            error,
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
pub(super) enum EntryKind {
    File,
    Dir,
    Symlink(String),
    HardLink(String),
    Other,
}

pub(super) fn entry_kind<R: Read>(
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
