//! Writes an empty ext4 file system into a new sparse image file.
//!
//! `cargo run --release -p krazy-fs --example mkext4 -- OUT --size-mib N [--uuid UUID] [--label L]`
//!
//! Time: `SOURCE_DATE_EPOCH` when set, else the current time. UUID: `--uuid`
//! when given, else derived from the time and the label (so a build with
//! `SOURCE_DATE_EPOCH` set is byte-reproducible without extra flags).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use krazy_fs::ext4::{self, Ext4Options, InodeTableInit};
use krazy_fs::FileDevice;

/// Write an empty ext4 file system into a new sparse image file.
#[derive(Parser)]
struct Args {
    /// The image file to create (replaced if it exists).
    out: PathBuf,
    /// Size of the image in MiB.
    #[arg(long)]
    size_mib: u64,
    /// File system UUID, e.g. 01234567-89ab-cdef-0123-456789abcdef.
    #[arg(long)]
    uuid: Option<String>,
    /// Volume label (at most 16 bytes).
    #[arg(long, default_value = "")]
    label: String,
    /// Block size in bytes (1024, 2048 or 4096).
    #[arg(long, default_value_t = 4096)]
    block_size: u32,
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        bail!("UUID {s:?} does not have 32 hex digits");
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("UUID {s:?} is not hexadecimal"))?;
    }
    Ok(out)
}

/// A version-4-shaped UUID derived from the time and label (FNV-1a, twice).
fn derived_uuid(time: u64, label: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, chunk) in out.chunks_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ half as u64;
        for b in time.to_le_bytes().iter().chain(label.as_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out[6] = (out[6] & 0x0F) | 0x40;
    out[8] = (out[8] & 0x3F) | 0x80;
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    let time = match krazy_fs::tree::source_date_epoch() {
        Some(t) => t,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    };
    let uuid = match &args.uuid {
        Some(s) => parse_uuid(s)?,
        None => derived_uuid(time, &args.label),
    };
    let size = args
        .size_mib
        .checked_mul(1 << 20)
        .context("size overflows")?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    file.set_len(size)
        .with_context(|| format!("sizing {}", args.out.display()))?;
    let mut dev = FileDevice::new(file, 0, size);
    // A freshly truncated file reads zeros: the inode tables need no writes.
    let opts = Ext4Options::new(uuid, time)
        .label(args.label.clone())
        .block_size(args.block_size)
        .inode_tables(InodeTableInit::AssumeZeroed);
    let start = Instant::now();
    let s = ext4::format(&mut dev, &opts)
        .with_context(|| format!("formatting {}", args.out.display()))?;
    println!(
        "{}: ext4, {} blocks of {} bytes in {} groups, {} inodes, journal {} blocks, {} KiB written in {:.1?}",
        args.out.display(),
        s.blocks,
        s.block_size,
        s.groups,
        s.inodes,
        s.journal_blocks,
        s.bytes_written / 1024,
        start.elapsed()
    );
    Ok(())
}
