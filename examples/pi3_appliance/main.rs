//! Builds a Raspberry Pi 3 image of the `hello` appliance through the
//! builder API (no `krazy.toml`):
//!
//! ```sh
//! cargo run --release --example pi3_appliance -- --firmware DIR -o pi3.img
//! ```
//!
//! `DIR` holds the Raspberry Pi firmware (`bootcode.bin`, `start*.elf`,
//! `fixup*.dat`); see README.md.

mod appliance;

use anyhow::{bail, Context};
use clap::Parser;
use krazy_build::config::KernelSource;
use krazy_build::pipeline::BuildOptions;
use std::path::{Path, PathBuf};

/// Builds a Raspberry Pi 3 image of the hello appliance.
#[derive(Debug, Parser)]
#[command(name = "pi3_appliance")]
struct Args {
    /// A directory of Raspberry Pi firmware: bootcode.bin, start*.elf, fixup*.dat.
    #[arg(long, value_name = "DIR")]
    firmware: PathBuf,
    /// The image file to write.
    #[arg(short, long, value_name = "IMAGE")]
    output: PathBuf,
    /// Use this kernel .deb instead of apt's linux-image-arm64.
    #[arg(long, value_name = "PATH", conflicts_with = "kernel_dir")]
    kernel_deb: Option<PathBuf>,
    /// Use this unpacked kernel (boot/vmlinuz-VER, lib/modules/VER, usr/lib/linux-image-VER).
    #[arg(long, value_name = "DIR")]
    kernel_dir: Option<PathBuf>,
    /// The instance's secrets (web password, update key, TLS certificate);
    /// made here when missing.
    #[arg(long, value_name = "DIR", default_value = "pi3-secrets")]
    secrets: PathBuf,
    /// The lock file that pins the kernel (written by the first build).
    #[arg(long, value_name = "FILE", default_value = "pi3.lock")]
    lock: PathBuf,
    /// The disk size (2G, 4G, …); QEMU's raspi3b wants a power of two.
    #[arg(long, default_value = "2G", value_parser = krazy_build::image::parse_disk_size)]
    size: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `p` made absolute (the build runs cargo in other directories).
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kernel = match (&args.kernel_deb, &args.kernel_dir) {
        (Some(deb), _) => KernelSource::Deb(absolute(deb)?),
        (_, Some(dir)) => KernelSource::Dir(absolute(dir)?),
        (None, None) => KernelSource::Apt(appliance::DEFAULT_KERNEL_APT.into()),
    };
    if !args.firmware.is_dir() {
        bail!(
            "--firmware {}: no such directory; it must hold bootcode.bin, start*.elf and fixup*.dat",
            args.firmware.display()
        );
    }
    let config = appliance::config(&absolute(&args.firmware)?, kernel)?;
    if appliance::ensure_secrets(&args.secrets)? {
        eprintln!(
            "made new secrets in {} (keep them: updates need the key)",
            args.secrets.display()
        );
    }
    if !args.size.is_power_of_two() {
        eprintln!(
            "note: {} bytes is not a power of two; QEMU's raspi3b refuses such SD images",
            args.size
        );
    }
    let mut opts = BuildOptions::for_dir(Path::new("."));
    opts.secrets_dir = args.secrets.clone();
    opts.lock_path = args.lock.clone();
    opts.disk_bytes = args.size;
    opts.progress = !args.json;
    let report = appliance::build(&config, &opts, &args.output)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!("image      {}", report.path.display());
    println!("build id   {}", report.build_id);
    println!("disk       {:.0} MiB (sparse)", mib(report.disk_bytes));
    println!("root       {:.1} MiB squashfs", mib(report.root_bytes));
    match report.initramfs_bytes {
        Some(b) => println!("initramfs  {:.1} MiB", mib(b)),
        None => println!("initramfs  none (the kernel needs no modules)"),
    }
    for p in &report.partitions {
        println!(
            "  p{} {:<9} {:>8.0} MiB at {:>6.0} MiB  PARTUUID={}",
            p.number,
            p.name,
            mib(p.bytes),
            mib(p.start),
            p.partuuid
        );
    }
    Ok(())
}
