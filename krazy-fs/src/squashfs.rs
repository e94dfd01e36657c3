//! A squashfs 4.0 writer: the root file system of every krazy image.
//!
//! Our own writer rather than a crate (see the crate README, "squashfs", for
//! the benchmark that decided it): data blocks are compressed in parallel
//! with rayon while a reader thread fetches the next files, file tails are
//! packed into shared fragment blocks, and the output depends only on the
//! [`Tree`] and the [`SquashfsOptions`] (the superblock's time comes from the
//! options, never from the clock), so the same inputs give the same bytes.
//!
//! Layout, as mksquashfs writes it: superblock, data and fragment blocks,
//! inode table, directory table, fragment table, id table; the image is
//! padded with zeros to a multiple of 4 KiB. Files with equal contents are
//! stored once. No export table, no xattrs.
//!
//! ```
//! use krazy_fs::squashfs::{self, SquashfsOptions};
//! use krazy_fs::{Contents, Tree};
//! let mut tree = Tree::new();
//! tree.add_file("hello", Contents::bytes("hi\n"), 0o644, 0).unwrap();
//! let mut image = std::io::Cursor::new(Vec::new());
//! let summary = squashfs::write(&mut image, &tree, &SquashfsOptions::default()).unwrap();
//! assert_eq!(summary.image_len as usize, image.get_ref().len());
//! assert_eq!(&image.get_ref()[..4], b"hsqs");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;
use std::sync::mpsc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::dev::BlockDevice;
use crate::tree::{Contents, Kind, NameRules, Tree, TreeError, Validated};

/// What squashfs can hold: Unix names of up to 255 bytes, symlinks, devices.
pub const NAME_RULES: NameRules = NameRules {
    format: "squashfs",
    ..NameRules::UNIX
};

/// The default data block size, 128 KiB (as mksquashfs).
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_LEN: usize = 96;
const METADATA_SIZE: usize = 8192;
const METADATA_UNCOMPRESSED: u16 = 0x8000;
const DATA_UNCOMPRESSED: u32 = 1 << 24;
const NO_FRAGMENT: u32 = 0xffff_ffff;
const NO_XATTR: u32 = 0xffff_ffff;
const NO_TABLE: u64 = u64::MAX;
const PAD: u64 = 4096;
/// Bytes of raw data handed to the compressor threads at once.
const BATCH_BYTES: usize = 8 << 20;
/// Files up to this size are read into memory in one go.
const WHOLE_FILE_MAX: u64 = 32 << 20;
/// Longest symlink target the Linux driver accepts (it rejects more than a page).
const MAX_SYMLINK: usize = 4096;

// Superblock flags.
const FLAG_UNCOMPRESSED_INODES: u16 = 0x0001;
const FLAG_UNCOMPRESSED_DATA: u16 = 0x0002;
const FLAG_UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
const FLAG_DUPLICATES: u16 = 0x0040;
const FLAG_NO_XATTRS: u16 = 0x0200;
const FLAG_UNCOMPRESSED_IDS: u16 = 0x0800;

// Inode types.
const T_DIR: u16 = 1;
const T_FILE: u16 = 2;
const T_SYMLINK: u16 = 3;
const T_CHR: u16 = 5;
const T_LDIR: u16 = 8;
const T_LFILE: u16 = 9;

/// Why a squashfs image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tree breaks a rule of the tree or of squashfs.
    #[error("the tree cannot be written as squashfs: {0}")]
    Tree(#[from] TreeError),
    /// A file's contents could not be read.
    #[error("cannot read the contents of {path:?}: {source}")]
    Read {
        /// The entry's path in the tree.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the image failed (for a device: perhaps it is too small).
    #[error("writing the squashfs image failed: {0}")]
    Write(#[source] io::Error),
    /// An entry's time does not fit squashfs's unsigned 32-bit seconds.
    #[error("{path:?} has mtime {mtime}, past squashfs's limit of 2^32-1 seconds (year 2106)")]
    TimeOutOfRange {
        /// The entry.
        path: String,
        /// Its time.
        mtime: u64,
    },
    /// A device number does not fit the 32-bit encoding squashfs stores.
    #[error("{path:?} has device number {major}:{minor}, which squashfs cannot store (major < 4096, minor < 2^20)")]
    DeviceNumber {
        /// The entry.
        path: String,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A symlink target is empty or longer than Linux accepts from squashfs.
    #[error("symlink {path:?} has a target of {len} bytes; squashfs on Linux needs 1 to 4096")]
    SymlinkTarget {
        /// The symlink.
        path: String,
        /// The target's length.
        len: usize,
    },
    /// More distinct owners and groups than the 16-bit id index can address.
    #[error("the tree uses {count} distinct uids and gids; squashfs holds at most 65536")]
    TooManyIds {
        /// How many there are.
        count: usize,
    },
    /// The block size is not a power of two from 4 KiB to 1 MiB.
    #[error("block size {0} is not a power of two from 4096 to 1048576")]
    BlockSize(u32),
    /// The compression level is outside the compressor's range.
    #[error("compression level {level} is outside {compression}'s range {min}..={max}")]
    Level {
        /// The compressor.
        compression: Compression,
        /// The level asked for.
        level: u32,
        /// Lowest level.
        min: u32,
        /// Highest level.
        max: u32,
    },
    /// The compressor was not compiled in.
    #[error("{0} support is not compiled in (enable krazy-fs's squashfs-{0} feature)")]
    NotCompiled(Compression),
    /// The compressor itself failed.
    #[error("compressing a block with {compression} failed: {source}")]
    Compress {
        /// The compressor.
        compression: Compression,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tree has more entries than squashfs can number.
    #[error("the tree has {0} entries; squashfs numbers at most 2^32-2")]
    TooManyEntries(usize),
}

/// The compressor of data and metadata blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zlib streams (squashfs calls it gzip); pure Rust (zlib-rs). Default level 9.
    Gzip,
    /// zstd; the bundled C library, behind the `squashfs-zstd` feature. Default level 15.
    Zstd,
    /// No compression: every block is stored as is (the uncompressed flags are set).
    None,
}

impl Compression {
    /// The level used when [`SquashfsOptions::level`] is `None` (mksquashfs's defaults).
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 9,
            Compression::Zstd => 15,
            Compression::None => 0,
        }
    }

    /// The range of valid levels.
    pub fn levels(self) -> (u32, u32) {
        match self {
            Compression::Gzip => (1, 9),
            Compression::Zstd => (1, 22),
            Compression::None => (0, 0),
        }
    }

    /// The name used on command lines and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    fn id(self) -> u16 {
        match self {
            // An uncompressed image still names a compressor; mksquashfs uses gzip.
            Compression::Gzip | Compression::None => 1,
            Compression::Zstd => 6,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compressor name that is not known.
#[derive(Debug, thiserror::Error)]
#[error("unknown squashfs compression {0:?} (expected gzip, zstd or none)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

/// How to write an image.
#[derive(Debug, Clone)]
pub struct SquashfsOptions {
    /// The compressor (default: gzip, which the benchmarks in the README favour:
    /// pure Rust, as fast as mksquashfs, within 1 % of zstd's size on a root tree).
    pub compression: Compression,
    /// The compression level; `None` for [`Compression::default_level`].
    pub level: Option<u32>,
    /// Data block size: a power of two from 4 KiB to 1 MiB (default 128 KiB).
    pub block_size: u32,
    /// The superblock's creation time, seconds since the epoch (default 0);
    /// set it from `SOURCE_DATE_EPOCH` for reproducible builds.
    pub mkfs_time: u32,
    /// Also pack the last partial block of files larger than a block into
    /// fragments (mksquashfs `-tailends`); smaller images. Default true.
    pub tail_ends: bool,
    /// Store files with equal contents once (found by size and SHA-256, as
    /// mksquashfs does by default). Default true.
    pub dedup: bool,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            block_size: DEFAULT_BLOCK_SIZE,
            mkfs_time: 0,
            tail_ends: true,
            dedup: true,
        }
    }
}

/// What [`write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsSummary {
    /// The superblock's `bytes_used`: the file system proper.
    pub bytes_used: u64,
    /// Bytes written: `bytes_used` padded with zeros to a multiple of 4 KiB.
    pub image_len: u64,
    /// Number of inodes (every entry, the root included).
    pub inodes: u32,
    /// Number of fragment blocks.
    pub fragments: u32,
    /// Bytes of file contents before compression.
    pub data_bytes: u64,
}

/// Writes `tree` as a squashfs image to `out`, starting at `out`'s current
/// position, and returns its summary. `out` is left just after the image.
///
/// To write into a partition of a disk image, use [`write_to_device`].
pub fn write<W: Write + Seek>(
    out: &mut W,
    tree: &Tree,
    opts: &SquashfsOptions,
) -> Result<SquashfsSummary, Error> {
    let codec = Codec::new(opts)?;
    let v = tree.validate(&NAME_RULES)?;
    let n = v.nodes.len();
    if n > u32::MAX as usize - 2 {
        return Err(Error::TooManyEntries(n));
    }
    check_entries(&v)?;
    let ids = IdTable::new(&v)?;

    let base = out.stream_position().map_err(Error::Write)?;
    let mut w = Out { inner: out, pos: 0 };
    w.write(&[0; SUPERBLOCK_LEN])?;

    let data = write_data(
        &mut w,
        &v,
        &codec,
        opts.block_size,
        opts.tail_ends,
        opts.dedup,
    )?;

    let order = post_order(&v);
    let mut number = vec![0u32; n];
    for (i, &node) in order.iter().enumerate() {
        number[node] = i as u32 + 1;
    }
    let tables = write_inodes_and_dirs(&v, &order, &number, &data.files, &ids, &codec)?;

    let inode_table_start = w.pos;
    w.write(&tables.inodes)?;
    let directory_table_start = w.pos;
    w.write(&tables.dirs)?;

    let mut frag_bytes = Vec::with_capacity(data.fragments.len() * 16);
    for &(start, size) in &data.fragments {
        frag_bytes.extend_from_slice(&start.to_le_bytes());
        frag_bytes.extend_from_slice(&size.to_le_bytes());
        frag_bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    let fragment_table_start = write_table(&mut w, &frag_bytes, &codec)?;
    let id_bytes: Vec<u8> = ids.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let id_table_start = write_table(&mut w, &id_bytes, &codec)?;
    let bytes_used = w.pos;

    let padded = bytes_used.div_ceil(PAD) * PAD;
    w.write(&vec![0; (padded - bytes_used) as usize])?;

    let mut flags = FLAG_NO_XATTRS;
    if opts.dedup {
        flags |= FLAG_DUPLICATES;
    }
    if codec.compression == Compression::None {
        flags |= FLAG_UNCOMPRESSED_INODES
            | FLAG_UNCOMPRESSED_DATA
            | FLAG_UNCOMPRESSED_FRAGMENTS
            | FLAG_UNCOMPRESSED_IDS;
    }
    let mut sb = Vec::with_capacity(SUPERBLOCK_LEN);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&(n as u32).to_le_bytes());
    sb.extend_from_slice(&opts.mkfs_time.to_le_bytes());
    sb.extend_from_slice(&opts.block_size.to_le_bytes());
    sb.extend_from_slice(&(data.fragments.len() as u32).to_le_bytes());
    sb.extend_from_slice(&codec.compression.id().to_le_bytes());
    sb.extend_from_slice(&(opts.block_size.trailing_zeros() as u16).to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&(ids.ids.len() as u16).to_le_bytes());
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&tables.root_ref.to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&NO_TABLE.to_le_bytes()); // xattr id table
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&fragment_table_start.to_le_bytes());
    sb.extend_from_slice(&NO_TABLE.to_le_bytes()); // export table
    debug_assert_eq!(sb.len(), SUPERBLOCK_LEN);

    let out = w.inner;
    out.seek(SeekFrom::Start(base)).map_err(Error::Write)?;
    out.write_all(&sb).map_err(Error::Write)?;
    out.seek(SeekFrom::Start(base + padded))
        .map_err(Error::Write)?;
    out.flush().map_err(Error::Write)?;

    Ok(SquashfsSummary {
        bytes_used,
        image_len: padded,
        inodes: n as u32,
        fragments: data.fragments.len() as u32,
        data_bytes: data.data_bytes,
    })
}

/// Writes `tree` as a squashfs image at offset 0 of `dev` (a partition
/// window of a disk image, say). Fails with [`Error::Write`] if the image
/// does not fit; bytes of `dev` after [`SquashfsSummary::image_len`] are
/// left untouched.
pub fn write_to_device<D: BlockDevice>(
    dev: &mut D,
    tree: &Tree,
    opts: &SquashfsOptions,
) -> Result<SquashfsSummary, Error> {
    let mut w = DeviceWriter { dev, pos: 0 };
    write(&mut w, tree, opts)
}

/// `Write + Seek` over a [`BlockDevice`], writing straight through.
struct DeviceWriter<'a, D: BlockDevice> {
    dev: &'a mut D,
    pos: u64,
}

impl<D: BlockDevice> Write for DeviceWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dev.write_at(self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
}

impl<D: BlockDevice> Seek for DeviceWriter<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.dev.len().checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the device's start",
            )
        })?;
        Ok(self.pos)
    }
}

/// The output, with the position relative to the image's start.
struct Out<'a, W> {
    inner: &'a mut W,
    pos: u64,
}

impl<W: Write> Out<'_, W> {
    fn write(&mut self, b: &[u8]) -> Result<(), Error> {
        self.inner.write_all(b).map_err(Error::Write)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

fn check_entries(v: &Validated<'_>) -> Result<(), Error> {
    for node in &v.nodes {
        let e = node.entry;
        if e.mtime > u32::MAX as u64 {
            return Err(Error::TimeOutOfRange {
                path: node.path.to_string(),
                mtime: e.mtime,
            });
        }
        match &e.kind {
            Kind::CharDevice { major, minor } => {
                encode_dev(*major, *minor).ok_or_else(|| Error::DeviceNumber {
                    path: node.path.to_string(),
                    major: *major,
                    minor: *minor,
                })?;
            }
            Kind::Symlink(t) if t.is_empty() || t.len() > MAX_SYMLINK => {
                return Err(Error::SymlinkTarget {
                    path: node.path.to_string(),
                    len: t.len(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Linux's `new_encode_dev`, which squashfs stores.
fn encode_dev(major: u32, minor: u32) -> Option<u32> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return None;
    }
    Some((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// The compressor with its level, shared by the compressing threads.
struct Codec {
    compression: Compression,
    level: u32,
}

impl Codec {
    fn new(opts: &SquashfsOptions) -> Result<Self, Error> {
        let bs = opts.block_size;
        if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
            return Err(Error::BlockSize(bs));
        }
        let c = opts.compression;
        let level = opts.level.unwrap_or(c.default_level());
        let (min, max) = c.levels();
        if !(min..=max).contains(&level) {
            return Err(Error::Level {
                compression: c,
                level,
                min,
                max,
            });
        }
        if c == Compression::Zstd && !cfg!(feature = "squashfs-zstd") {
            return Err(Error::NotCompiled(c));
        }
        Ok(Self {
            compression: c,
            level,
        })
    }

    /// Compresses `raw`; `None` when compressing would not make it smaller
    /// (the block is then stored as is).
    fn compress(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let err = |source| Error::Compress {
            compression: self.compression,
            source,
        };
        let out = match self.compression {
            Compression::None => return Ok(None),
            Compression::Gzip => {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(raw.len() / 2),
                    flate2::Compression::new(self.level),
                );
                e.write_all(raw).map_err(err)?;
                e.finish().map_err(err)?
            }
            Compression::Zstd => zstd_compress(raw, self.level).map_err(err)?,
        };
        Ok((out.len() < raw.len()).then_some(out))
    }
}

#[cfg(feature = "squashfs-zstd")]
fn zstd_compress(raw: &[u8], level: u32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, level as i32)
}

#[cfg(not(feature = "squashfs-zstd"))]
fn zstd_compress(_raw: &[u8], _level: u32) -> io::Result<Vec<u8>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "zstd is not compiled in",
    ))
}

/// Distinct uids and gids, sorted, and their indices.
struct IdTable {
    ids: Vec<u32>,
}

impl IdTable {
    fn new(v: &Validated<'_>) -> Result<Self, Error> {
        let mut ids: Vec<u32> = v
            .nodes
            .iter()
            .flat_map(|n| [n.entry.uid, n.entry.gid])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 << 16 {
            return Err(Error::TooManyIds { count: ids.len() });
        }
        Ok(Self { ids })
    }

    fn index(&self, id: u32) -> u16 {
        // Every id of the tree is in the table, and there are at most 2^16.
        self.ids.binary_search(&id).unwrap_or(0) as u16
    }
}

/// A fragment block index and an offset in it.
type Fragment = (u32, u32);

/// Where one file's contents went.
#[derive(Debug, Default, Clone)]
struct FileData {
    size: u64,
    blocks_start: u64,
    /// Stored size of each block (bit 24: uncompressed; 0: a hole of zeros).
    blocks: Vec<u32>,
    /// Fragment index and offset of the tail, if the tail is in a fragment.
    fragment: Option<Fragment>,
    sparse: u64,
}

struct DataOut {
    /// Per node index; default for non-files.
    files: Vec<FileData>,
    /// Start and stored size of each fragment block.
    fragments: Vec<(u64, u32)>,
    data_bytes: u64,
}

/// Work for the compressor threads, in output order.
enum Job {
    /// A full or final block of file `node`.
    Block { node: usize, data: Vec<u8> },
    /// A block of zeros of file `node`, stored as a hole.
    Hole { node: usize },
    /// A fragment block.
    Fragment { data: Vec<u8> },
}

/// What the reader thread learned about files, beside the jobs it sent.
struct ReadOut {
    /// Node, size and fragment of each file written.
    sizes: Vec<(usize, u64, Option<Fragment>)>,
    /// Files whose contents equal an earlier file's: (node, earlier node).
    dups: Vec<(usize, usize)>,
}

/// Reads every file in tree order on a helper thread, packing tails into
/// fragments, while this thread compresses batches in parallel and writes
/// them in order.
fn write_data<W: Write>(
    w: &mut Out<'_, W>,
    v: &Validated<'_>,
    codec: &Codec,
    block_size: u32,
    tail_ends: bool,
    dedup: bool,
) -> Result<DataOut, Error> {
    let mut files = vec![FileData::default(); v.nodes.len()];
    let mut fragments = Vec::new();
    let (tx, rx) = mpsc::sync_channel::<Vec<Job>>(2);
    let read = std::thread::scope(|s| {
        let reader = s.spawn(move || read_files(v, block_size as usize, tail_ends, dedup, tx));
        let mut result = Ok(());
        for batch in rx {
            if result.is_err() {
                continue; // drain so the reader finishes
            }
            result = write_batch(w, codec, batch, block_size, &mut files, &mut fragments);
        }
        let read = match reader.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        result.and(read)
    })?;
    let mut data_bytes = 0;
    for (node, size, fragment) in read.sizes {
        let f = &mut files[node];
        f.size = size;
        f.fragment = fragment;
        data_bytes += size;
    }
    for (node, orig) in read.dups {
        files[node] = files[orig].clone();
        data_bytes += files[node].size;
    }
    Ok(DataOut {
        files,
        fragments,
        data_bytes,
    })
}

fn write_batch<W: Write>(
    w: &mut Out<'_, W>,
    codec: &Codec,
    batch: Vec<Job>,
    block_size: u32,
    files: &mut [FileData],
    fragments: &mut Vec<(u64, u32)>,
) -> Result<(), Error> {
    let compressed: Vec<Option<Vec<u8>>> = batch
        .par_iter()
        .map(|job| match job {
            Job::Block { data, .. } | Job::Fragment { data } => codec.compress(data),
            Job::Hole { .. } => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    for (job, c) in batch.into_iter().zip(compressed) {
        let (raw, node) = match &job {
            Job::Block { node, data } => (Some(data), Some(*node)),
            Job::Hole { node } => (None, Some(*node)),
            Job::Fragment { data } => (Some(data), None),
        };
        let start = w.pos;
        let size = match (raw, c) {
            (None, _) => 0,
            (Some(_), Some(c)) => {
                w.write(&c)?;
                c.len() as u32
            }
            (Some(raw), None) => {
                w.write(raw)?;
                raw.len() as u32 | DATA_UNCOMPRESSED
            }
        };
        match node {
            Some(node) => {
                let f = &mut files[node];
                if f.blocks.is_empty() {
                    f.blocks_start = start;
                }
                if raw.is_none() {
                    f.sparse += block_size as u64;
                }
                f.blocks.push(size);
            }
            None => fragments.push((start, size)),
        }
    }
    Ok(())
}

fn read_files(
    v: &Validated<'_>,
    bs: usize,
    tail_ends: bool,
    dedup: bool,
    tx: mpsc::SyncSender<Vec<Job>>,
) -> Result<ReadOut, Error> {
    let mut sizes = Vec::new();
    let mut seen: HashMap<(u64, [u8; 32]), usize> = HashMap::new();
    let mut dups = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut frag = Vec::with_capacity(bs);
    let mut frag_count = 0u32;
    let send = |batch: &mut Vec<Job>, bytes: &mut usize| {
        *bytes = 0;
        // A closed channel means the writer failed; it reports its error.
        tx.send(std::mem::take(batch)).is_ok()
    };
    for (node, n) in v.nodes.iter().enumerate() {
        let Kind::File(contents) = &n.entry.kind else {
            continue;
        };
        let rerr = |source| Error::Read {
            path: n.path.to_string(),
            source,
        };
        // Small files are read once into memory; larger ones are streamed,
        // twice when deduplicating (a hashing pass first).
        let whole = match contents {
            Contents::Bytes(b) => Some(b.clone()),
            Contents::Host(_) if contents.len().map_err(rerr)? <= WHOLE_FILE_MAX => {
                Some(contents.read_all().map_err(rerr)?)
            }
            Contents::Host(_) => None,
        };
        if dedup {
            let key = match &whole {
                Some(b) => (b.len() as u64, Sha256::digest(b).into()),
                None => {
                    let mut h = Sha256::new();
                    let mut r = contents.open().map_err(rerr)?;
                    let len = io::copy(&mut r, &mut h).map_err(rerr)?;
                    (len, h.finalize().into())
                }
            };
            if key.0 > 0 {
                if let Some(&orig) = seen.get(&key) {
                    dups.push((node, orig));
                    continue;
                }
                seen.insert(key, node);
            }
        }
        let mut r: Box<dyn Read + Send + '_> = match &whole {
            Some(b) => Box::new(&b[..]),
            None => contents.open().map_err(rerr)?,
        };
        let mut size = 0u64;
        let mut full_blocks = 0u64;
        let mut fragment = None;
        loop {
            let mut buf = vec![0u8; bs];
            let got = read_full(&mut r, &mut buf).map_err(rerr)?;
            size += got as u64;
            buf.truncate(got);
            if got == bs {
                full_blocks += 1;
                batch_bytes += got;
                if buf.iter().all(|&b| b == 0) {
                    batch.push(Job::Hole { node });
                } else {
                    batch.push(Job::Block { node, data: buf });
                }
                if batch_bytes >= BATCH_BYTES && !send(&mut batch, &mut batch_bytes) {
                    return Ok(ReadOut { sizes, dups });
                }
                continue;
            }
            if got > 0 {
                if full_blocks == 0 || tail_ends {
                    if frag.len() + got > bs {
                        batch.push(Job::Fragment {
                            data: std::mem::replace(&mut frag, Vec::with_capacity(bs)),
                        });
                        frag_count += 1;
                    }
                    fragment = Some((frag_count, frag.len() as u32));
                    frag.extend_from_slice(&buf);
                } else {
                    batch_bytes += got;
                    batch.push(Job::Block { node, data: buf });
                }
            }
            break;
        }
        sizes.push((node, size, fragment));
    }
    if !frag.is_empty() {
        batch.push(Job::Fragment { data: frag });
    }
    send(&mut batch, &mut batch_bytes);
    Ok(ReadOut { sizes, dups })
}

/// Reads until `buf` is full or the reader ends; returns the count.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Node indices with every directory after its children, children in name
/// order: the order of inodes (and of inode numbers), the root last.
fn post_order(v: &Validated<'_>) -> Vec<usize> {
    let mut order = Vec::with_capacity(v.nodes.len());
    // (node, next child position)
    let mut stack = vec![(0usize, 0usize)];
    while let Some(top) = stack.last_mut() {
        let (node, pos) = *top;
        let children = &v.nodes[node].children;
        if pos < children.len() {
            top.1 += 1;
            let c = children[pos];
            if v.nodes[c].entry.is_dir() {
                stack.push((c, 0));
            } else {
                order.push(c);
            }
        } else {
            order.push(node);
            stack.pop();
        }
    }
    order
}

/// Packs bytes into 8 KiB metadata blocks, each compressed when that helps.
struct MetaWriter<'c> {
    codec: &'c Codec,
    out: Vec<u8>,
    cur: Vec<u8>,
}

impl<'c> MetaWriter<'c> {
    fn new(codec: &'c Codec) -> Self {
        Self {
            codec,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
        }
    }

    /// The reference of the next byte: block start << 16 | offset.
    fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.cur.len() as u16)
    }

    fn push(&mut self, mut b: &[u8]) -> Result<(), Error> {
        while !b.is_empty() {
            let take = (METADATA_SIZE - self.cur.len()).min(b.len());
            self.cur.extend_from_slice(&b[..take]);
            b = &b[take..];
            if self.cur.len() == METADATA_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        match self.codec.compress(&self.cur)? {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let h = self.cur.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&h.to_le_bytes());
                self.out.extend_from_slice(&self.cur);
            }
        }
        self.cur.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, Error> {
        if !self.cur.is_empty() {
            self.flush()?;
        }
        Ok(self.out)
    }
}

/// Writes `bytes` as metadata blocks followed by their index of u64
/// positions (the fragment and id tables); returns the index's position.
fn write_table<W: Write>(w: &mut Out<'_, W>, bytes: &[u8], codec: &Codec) -> Result<u64, Error> {
    let mut index = Vec::new();
    for chunk in bytes.chunks(METADATA_SIZE) {
        index.extend_from_slice(&w.pos.to_le_bytes());
        let mut m = MetaWriter::new(codec);
        m.push(chunk)?;
        w.write(&m.finish()?)?;
    }
    let start = w.pos;
    w.write(&index)?;
    Ok(start)
}

struct Tables {
    inodes: Vec<u8>,
    dirs: Vec<u8>,
    root_ref: u64,
}

/// A directory entry as its listing needs it.
struct DirEntry<'a> {
    name: &'a str,
    block: u64,
    offset: u16,
    number: u32,
    kind: u16,
}

fn write_inodes_and_dirs(
    v: &Validated<'_>,
    order: &[usize],
    number: &[u32],
    files: &[FileData],
    ids: &IdTable,
    codec: &Codec,
) -> Result<Tables, Error> {
    let n = v.nodes.len();
    let mut inodes = MetaWriter::new(codec);
    let mut dirs = MetaWriter::new(codec);
    // Where each node's inode went, and its basic type.
    let mut at: Vec<(u64, u16, u16)> = vec![(0, 0, 0); n];
    let mut ino = Vec::with_capacity(64);
    for &i in order {
        let node = &v.nodes[i];
        let e = node.entry;
        ino.clear();
        let header = |ino: &mut Vec<u8>, t: u16| {
            ino.extend_from_slice(&t.to_le_bytes());
            ino.extend_from_slice(&((e.mode & 0o7777) as u16).to_le_bytes());
            ino.extend_from_slice(&ids.index(e.uid).to_le_bytes());
            ino.extend_from_slice(&ids.index(e.gid).to_le_bytes());
            ino.extend_from_slice(&(e.mtime as u32).to_le_bytes());
            ino.extend_from_slice(&number[i].to_le_bytes());
        };
        let basic = match &e.kind {
            Kind::Dir => {
                let (block, offset) = dirs.pos();
                let listing = dir_listing(v, i, &at, number);
                dirs.push(&listing)?;
                let size = listing.len() as u64 + 3;
                let subdirs = node
                    .children
                    .iter()
                    .filter(|&&c| v.nodes[c].entry.is_dir())
                    .count() as u32;
                let parent = if i == 0 {
                    n as u32 + 1
                } else {
                    number[node.parent]
                };
                if size <= u16::MAX as u64 && block <= u32::MAX as u64 {
                    header(&mut ino, T_DIR);
                    ino.extend_from_slice(&(block as u32).to_le_bytes());
                    ino.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    ino.extend_from_slice(&(size as u16).to_le_bytes());
                    ino.extend_from_slice(&offset.to_le_bytes());
                    ino.extend_from_slice(&parent.to_le_bytes());
                } else {
                    header(&mut ino, T_LDIR);
                    ino.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    ino.extend_from_slice(&(size as u32).to_le_bytes());
                    ino.extend_from_slice(&(block as u32).to_le_bytes());
                    ino.extend_from_slice(&parent.to_le_bytes());
                    ino.extend_from_slice(&0u16.to_le_bytes()); // no index
                    ino.extend_from_slice(&offset.to_le_bytes());
                    ino.extend_from_slice(&NO_XATTR.to_le_bytes());
                }
                T_DIR
            }
            Kind::File(_) => {
                let f = &files[i];
                let (frag, frag_off) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                if f.blocks_start <= u32::MAX as u64 && f.size <= u32::MAX as u64 {
                    header(&mut ino, T_FILE);
                    ino.extend_from_slice(&(f.blocks_start as u32).to_le_bytes());
                    ino.extend_from_slice(&frag.to_le_bytes());
                    ino.extend_from_slice(&frag_off.to_le_bytes());
                    ino.extend_from_slice(&(f.size as u32).to_le_bytes());
                } else {
                    header(&mut ino, T_LFILE);
                    ino.extend_from_slice(&f.blocks_start.to_le_bytes());
                    ino.extend_from_slice(&f.size.to_le_bytes());
                    ino.extend_from_slice(&f.sparse.to_le_bytes());
                    ino.extend_from_slice(&1u32.to_le_bytes());
                    ino.extend_from_slice(&frag.to_le_bytes());
                    ino.extend_from_slice(&frag_off.to_le_bytes());
                    ino.extend_from_slice(&NO_XATTR.to_le_bytes());
                }
                for b in &f.blocks {
                    ino.extend_from_slice(&b.to_le_bytes());
                }
                T_FILE
            }
            Kind::Symlink(target) => {
                header(&mut ino, T_SYMLINK);
                ino.extend_from_slice(&1u32.to_le_bytes());
                ino.extend_from_slice(&(target.len() as u32).to_le_bytes());
                ino.extend_from_slice(target.as_bytes());
                T_SYMLINK
            }
            Kind::CharDevice { major, minor } => {
                header(&mut ino, T_CHR);
                ino.extend_from_slice(&1u32.to_le_bytes());
                // Checked by check_entries.
                let dev = encode_dev(*major, *minor).unwrap_or(0);
                ino.extend_from_slice(&dev.to_le_bytes());
                T_CHR
            }
        };
        let (block, offset) = inodes.pos();
        at[i] = (block, offset, basic);
        inodes.push(&ino)?;
    }
    let (rb, ro, _) = at[0];
    Ok(Tables {
        inodes: inodes.finish()?,
        dirs: dirs.finish()?,
        root_ref: (rb << 16) | ro as u64,
    })
}

/// The listing of directory `dir`: runs of entries under headers that
/// share one inode metadata block and a base inode number.
fn dir_listing(v: &Validated<'_>, dir: usize, at: &[(u64, u16, u16)], number: &[u32]) -> Vec<u8> {
    let entries: Vec<DirEntry<'_>> = v.nodes[dir]
        .children
        .iter()
        .map(|&c| DirEntry {
            name: v.nodes[c].name,
            block: at[c].0,
            offset: at[c].1,
            number: number[c],
            kind: at[c].2,
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let mut j = i;
        while j < entries.len()
            && j - i < 256
            && entries[j].block == first.block
            && i16::try_from(entries[j].number as i64 - first.number as i64).is_ok()
        {
            j += 1;
        }
        out.extend_from_slice(&((j - i - 1) as u32).to_le_bytes());
        out.extend_from_slice(&(first.block as u32).to_le_bytes());
        out.extend_from_slice(&first.number.to_le_bytes());
        for e in &entries[i..j] {
            out.extend_from_slice(&e.offset.to_le_bytes());
            let diff = (e.number as i64 - first.number as i64) as i16;
            out.extend_from_slice(&diff.to_le_bytes());
            out.extend_from_slice(&e.kind.to_le_bytes());
            out.extend_from_slice(&((e.name.len() - 1) as u16).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
        }
        i = j;
    }
    out
}
