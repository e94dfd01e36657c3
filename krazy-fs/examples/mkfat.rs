//! Writes a FAT16 or FAT32 image of a host directory.
//!
//! `cargo run --release -p krazy-fs --example mkfat -- SRC_DIR OUT --size-mib N [--fat 16|32]`
//!
//! OUT is created as a sparse file of N MiB. Times come from
//! `SOURCE_DATE_EPOCH` when set. FAT stores no owners, so `--all-root` is
//! accepted for symmetry with the other examples and changes nothing.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use krazy_fs::fat::{self, FatOptions, FatType};
use krazy_fs::{FileDevice, FromDirOptions, Tree};

/// Write a FAT image of a directory.
#[derive(Parser)]
struct Args {
    /// The directory to copy into the image.
    src_dir: PathBuf,
    /// The image file to create (sparse).
    out: PathBuf,
    /// The image size in MiB.
    #[arg(long)]
    size_mib: u64,
    /// 16 or 32; by default FAT16 below 512 MiB, FAT32 from 512 MiB.
    #[arg(long)]
    fat: Option<u8>,
    /// Force owners to root (FAT has no owners; accepted for symmetry).
    #[arg(long)]
    all_root: bool,
    /// Volume label (up to 11 characters).
    #[arg(long)]
    label: Option<String>,
    /// Volume id as 8 hex digits.
    #[arg(long, value_parser = parse_hex)]
    volume_id: Option<u32>,
}

fn parse_hex(s: &str) -> Result<u32, std::num::ParseIntError> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let fat_type = match args.fat {
        None => FatType::Auto,
        Some(16) => FatType::Fat16,
        Some(32) => FatType::Fat32,
        Some(n) => bail!("--fat must be 16 or 32, not {n}"),
    };
    let tree = Tree::from_dir(&args.src_dir, &FromDirOptions::from_env(args.all_root))
        .with_context(|| format!("reading {}", args.src_dir.display()))?;
    let mut opts = FatOptions {
        fat_type,
        label: args.label,
        ..FatOptions::default()
    };
    if let Some(id) = args.volume_id {
        opts.volume_id = id;
    }
    let file =
        File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    file.set_len(args.size_mib << 20)
        .with_context(|| format!("sizing {}", args.out.display()))?;
    let mut dev = FileDevice::whole(file)?;
    let s = fat::write(&mut dev, &tree, &opts)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {:?}, {} clusters of {} bytes, {} used; {} files, {} directories",
        args.out.display(),
        s.fat_type,
        s.cluster_count,
        s.cluster_size,
        s.used_clusters,
        s.files,
        s.dirs
    );
    Ok(())
}
