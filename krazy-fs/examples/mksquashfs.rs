//! Writes a directory as a squashfs image:
//! `mksquashfs SRC_DIR OUT [--compression gzip|zstd|none] [--level N] [--block-size B] [--all-root]`.
//!
//! Owners and modes come from the source tree (`--all-root` forces 0:0);
//! every time, the superblock's included, comes from `SOURCE_DATE_EPOCH`
//! when it is set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use krazy_fs::squashfs::{self, Compression, SquashfsOptions};
use krazy_fs::{FromDirOptions, Tree};

#[derive(Parser)]
#[command(about = "Write a directory as a squashfs image")]
struct Args {
    /// The directory to pack.
    src: PathBuf,
    /// The image to write (replaced if it exists).
    out: PathBuf,
    /// Compressor: gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Compression level (default: the compressor's, as mksquashfs).
    #[arg(long)]
    level: Option<u32>,
    /// Data block size in bytes.
    #[arg(long, default_value_t = squashfs::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// Store the last partial block of large files as a block of its own
    /// instead of packing it into a fragment (mksquashfs's default).
    #[arg(long)]
    no_tail_ends: bool,
    /// Store files with equal contents as many times as they occur.
    #[arg(long)]
    no_dedup: bool,
    /// Make every entry owned by uid 0, gid 0.
    #[arg(long)]
    all_root: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let from = FromDirOptions::from_env(args.all_root);
    let tree = Tree::from_dir(&args.src, &from)
        .with_context(|| format!("reading {}", args.src.display()))?;
    let mkfs_time = match from.mtime {
        Some(t) => u32::try_from(t).context("SOURCE_DATE_EPOCH is past 2106")?,
        None => 0,
    };
    let opts = SquashfsOptions {
        compression: args.compression,
        level: args.level,
        block_size: args.block_size,
        mkfs_time,
        tail_ends: !args.no_tail_ends,
        dedup: !args.no_dedup,
    };
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?,
    );
    let s = squashfs::write(&mut out, &tree, &opts)
        .with_context(|| format!("writing {}", args.out.display()))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{}: {} inodes, {} fragments, {} bytes of data in {} bytes ({} padded), {:.2?}",
        args.out.display(),
        s.inodes,
        s.fragments,
        s.data_bytes,
        s.bytes_used,
        s.image_len,
        started.elapsed()
    );
    Ok(())
}
