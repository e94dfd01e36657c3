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
//!
//! This file holds [`DebError`] and the extracted-entry types; `ar.rs` reads
//! the `ar` archive and walks the tar stream of one member, `extract.rs`
//! writes entries to a directory or collects them in memory, `control.rs`
//! reads the control file.

mod ar;
mod control;
mod extract;
#[cfg(test)]
mod tests;

pub use control::{control_fields, package_id, parse_control};
pub use extract::{extract_reader_to_dir, extract_to_dir, extract_to_memory};

use std::io;
use std::path::PathBuf;

/// Why a package could not be unpacked. Every variant names the package (or
/// `<memory>`) and, where known, the member or path, and includes its cause
/// (the `error` fields), so no variant also reports it as its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Opening or reading the package file failed.
    #[error("cannot read {}: {error}", deb.display())]
    Read {
        /// The package.
        deb: PathBuf,
        /// The underlying error.
        error: io::Error,
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
    #[error("{}: cannot unpack {member}: {error}", deb.display())]
    Tar {
        /// The package.
        deb: PathBuf,
        /// The member.
        member: String,
        /// The underlying error.
        error: io::Error,
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
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
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
