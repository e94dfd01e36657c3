//! Writes a sparse disk image holding only a krazy partition table and
//! prints its layout.
//!
//! ```sh
//! cargo run --release -p krazy-disk --example mkdisk -- --platform pi3 --size-mib 2048 disk.img
//! ```

use std::fs::OpenOptions;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use krazy_disk::{Arch, InstanceId, Layout, LayoutOptions, PartitionTable, Platform};

#[derive(Clone, Copy, ValueEnum)]
enum PlatformArg {
    Pc,
    Pi3,
}

/// Write a sparse image with a krazy GPT (and protective or hybrid MBR).
#[derive(Parser)]
struct Args {
    /// Which layout to write.
    #[arg(long, value_enum)]
    platform: PlatformArg,
    /// Disk size in MiB.
    #[arg(long)]
    size_mib: u64,
    /// The instance id the GUIDs derive from.
    #[arg(long, default_value = "krazy-example")]
    instance_id: String,
    /// Size of each root slot in MiB (default 512).
    #[arg(long)]
    root_mib: Option<u64>,
    /// The image file to create (truncated if it exists).
    out: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (platform, arch) = match args.platform {
        PlatformArg::Pc => (Platform::Pc, Arch::X86_64),
        PlatformArg::Pi3 => (Platform::Pi3, Arch::Aarch64),
    };
    let mut opts = LayoutOptions::default();
    if let Some(r) = args.root_mib {
        opts = opts.with_root_bytes(r << 20);
    }
    let bytes = args
        .size_mib
        .checked_mul(1 << 20)
        .context("the disk size overflows")?;
    let layout = Layout::new(platform, arch, bytes, &opts)?;
    let table = PartitionTable::from_layout(&layout, &InstanceId::new(args.instance_id)?)?;
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    f.set_len(bytes)?;
    table.write(&mut f)?;
    f.sync_all()?;

    println!(
        "{}: {platform} layout, {} MiB, disk GUID {}, MBR signature {:08x}",
        args.out.display(),
        args.size_mib,
        table.disk_guid(),
        table.mbr_signature()
    );
    println!(
        "{:>2}  {:<8}  {:<8}  {:>10}  {:>10}  {:<36}  PARTUUID",
        "#", "role", "name", "start MiB", "size MiB", "type"
    );
    for e in table.entries() {
        let p = &e.partition;
        println!(
            "{:>2}  {:<8}  {:<8}  {:>10.2}  {:>10.2}  {}  {}",
            p.number,
            format!("{:?}", p.role),
            p.name,
            p.start_bytes() as f64 / (1 << 20) as f64,
            p.size_bytes() as f64 / (1 << 20) as f64,
            p.type_guid,
            e.partuuid()
        );
    }
    Ok(())
}
