//! `krazy`: the command line over krazy-build.
//!
//! Every verb that reads an instance takes `-c DIR|FILE` (an instance
//! directory made by `krazy new`, or the path of a krazy.toml; default the
//! current directory). The logic lives in the libraries; this file parses
//! arguments, drives progress and prints results.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use krazy_build::config::{resolve_config_path, Config};
use krazy_build::pipeline::{self, BuildOptions};

mod device;
mod new;
mod vm;

/// `3600`, `90s`, `90m`, `12h` or `7d`, in seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 3600, 90m, 12h or 7d"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(mul) {
        Some(0) | None => Err(format!("{s:?} is not a positive duration")),
        Some(v) => Ok(v),
    }
}

#[derive(Parser)]
#[command(
    name = "krazy",
    version,
    about = "Build, run and update krazy appliances: your Rust programs on a tiny memory-safe Linux userland",
    after_help = "Start with `krazy new my-appliance`, then `krazy vm run -c my-appliance`."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `-c DIR|FILE`, shared by the verbs that read an instance.
#[derive(Args, Clone)]
struct Instance {
    /// The instance directory (holding krazy.toml) or the krazy.toml itself.
    #[arg(short = 'c', long = "config", value_name = "DIR|FILE")]
    config: Option<PathBuf>,
}

impl Instance {
    fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(resolve_config_path(self.config.as_deref())?)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new instance: krazy.toml with a fresh instance id, secrets, and a hello service.
    New(new::NewArgs),
    /// Build the appliance image.
    Build {
        #[command(flatten)]
        instance: Instance,
        /// The image file to write.
        #[arg(short = 'o', long = "output", value_name = "IMAGE")]
        output: PathBuf,
        /// The disk size, e.g. 2G, 4096M or bytes (default 2G; the image is sparse).
        #[arg(long, value_name = "SIZE", value_parser = krazy_build::image::parse_disk_size)]
        size: Option<u64>,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Build the image for a disk or SD card and write it there (with read-back verification).
    Overwrite {
        #[command(flatten)]
        instance: Instance,
        /// The whole-disk block device, e.g. /dev/sdb or /dev/mmcblk0 (never a partition).
        #[arg(long, value_name = "DEV")]
        device: PathBuf,
        /// Zero every unused byte too (slower; by default only what file systems read is zeroed).
        #[arg(long)]
        zero_all: bool,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the appliance in a virtual machine (QEMU).
    #[command(subcommand)]
    Vm(VmCmd),
    /// Show a running device's status (host, build, addresses, memory, services).
    Status {
        #[command(flatten)]
        instance: Instance,
        /// The device's HOST:PORT (default: its host name on the web port).
        #[arg(long, value_name = "HOST:PORT")]
        host: Option<String>,
        /// Print the device's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a service's stdout and stderr.
    Logs {
        #[command(flatten)]
        instance: Instance,
        /// The device's HOST:PORT (default: its host name on the web port).
        #[arg(long, value_name = "HOST:PORT")]
        host: Option<String>,
        /// The service (`hello`, `dhcp`, `ntp`, ...).
        service: String,
        /// Keep following new lines.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Build, push a signed A/B update, reboot into it as a trial, and wait for the commit.
    Update {
        #[command(flatten)]
        instance: Instance,
        /// The device's HOST:PORT (default: its host name on the web port).
        #[arg(long, value_name = "HOST:PORT")]
        host: Option<String>,
        /// How long to wait for the new build to commit, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The update's monotonic version (default: the signing time in Unix
        /// seconds); the device takes only versions above its committed one.
        #[arg(long = "version", value_name = "N")]
        update_version: Option<u64>,
        /// How long the signed update stays valid: seconds, or with a unit
        /// (`90m`, `12h`, `7d`; default 7d, at most 1h with --allow-downgrade).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<u64>,
        /// Sign a deliberate downgrade of the build the device runs now (valid
        /// for that build only, for at most an hour).
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Resolve the kernel and firmware and pin them in krazy.lock.
    Lock {
        #[command(flatten)]
        instance: Instance,
        /// Resolve afresh (a newer kernel) and move the lock.
        #[arg(long)]
        upgrade: bool,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Build the pc image and boot it in QEMU (UEFI, virtio, watchdog), in the foreground.
    Run(vm::RunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KRAZY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::New(a) => new::run(&a),
        Cmd::Build {
            instance,
            output,
            size,
            json,
        } => build(&instance, &output, size, json),
        Cmd::Lock { instance, upgrade } => lock(&instance, upgrade),
        Cmd::Overwrite {
            instance,
            device,
            zero_all,
            json,
        } => overwrite(&instance, &device, zero_all, json),
        Cmd::Vm(VmCmd::Run(a)) => vm::run(&a),
        Cmd::Update {
            instance,
            host,
            timeout,
            update_version,
            expires,
            allow_downgrade,
        } => device::update(
            &instance.path()?,
            host.as_deref(),
            std::time::Duration::from_secs(timeout),
            &device::UpdateSigning {
                version: update_version,
                expires,
                allow_downgrade,
            },
        ),
        Cmd::Status {
            instance,
            host,
            json,
        } => {
            let path = instance.path()?;
            let config = Config::load(&path)?;
            device::status(&device::client(&path, &config, host.as_deref())?, json)
        }
        Cmd::Logs {
            instance,
            host,
            service,
            follow,
        } => {
            let path = instance.path()?;
            let config = Config::load(&path)?;
            device::logs(
                &device::client(&path, &config, host.as_deref())?,
                &service,
                follow,
            )
        }
    }
}

fn build_options(config_path: &Path, size: Option<u64>) -> BuildOptions {
    let mut o = BuildOptions::for_config(config_path);
    if let Some(s) = size {
        o.disk_bytes = s;
    }
    o.progress = true;
    o
}

fn build(instance: &Instance, output: &Path, size: Option<u64>, json: bool) -> anyhow::Result<()> {
    let path = instance.path()?;
    if output.is_dir() {
        bail!(
            "{} is a directory: pass the image file to write, e.g. -o {}/disk.img",
            output.display(),
            output.display()
        );
    }
    let opts = build_options(&path, size);
    let report = pipeline::build_image(&path, &opts, output)
        .with_context(|| format!("building {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} MiB disk, root {:.1} MiB, build {}",
            report.path.display(),
            report.disk_bytes >> 20,
            report.root_bytes as f64 / (1 << 20) as f64,
            &report.build_id[..16]
        );
    }
    Ok(())
}

fn overwrite(instance: &Instance, dev: &Path, zero_all: bool, json: bool) -> anyhow::Result<()> {
    use krazy_build::flash::{self, Holes, WriteOptions};
    let path = instance.path()?;
    // Checks first: a mounted disk or the system disk is refused before building.
    let target = flash::inspect_target(dev)?;
    let cache = krazy_build::kernel::default_cache_dir();
    std::fs::create_dir_all(&cache)?;
    let tmp = tempfile::Builder::new()
        .prefix("overwrite-")
        .suffix(".img")
        .tempfile_in(&cache)?;
    let opts = build_options(&path, Some(target.size));
    let report = pipeline::build_image(&path, &opts, tmp.path())
        .with_context(|| format!("building {} for {}", path.display(), dev.display()))?;
    let pb = indicatif::ProgressBar::new(target.size);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let wo = WriteOptions {
        holes: if zero_all { Holes::All } else { Holes::Auto },
        ..Default::default()
    };
    let r = flash::write_image_with(tmp.path(), &target, &wo, |p| {
        pb.set_message(p.phase.to_string());
        pb.set_length(p.total.max(1));
        pb.set_position(p.done);
    })?;
    pb.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "device": dev,
                "build_id": report.build_id,
                "disk_bytes": report.disk_bytes,
                "data_bytes": r.data_bytes,
                "zeroed_bytes": r.zeroed_bytes,
                "verified_bytes": r.verified_bytes,
            })
        );
    } else {
        println!(
            "wrote build {} to {} ({} MiB data, verified)",
            &report.build_id[..16],
            dev.display(),
            r.data_bytes >> 20
        );
    }
    Ok(())
}

fn lock(instance: &Instance, upgrade: bool) -> anyhow::Result<()> {
    let path = instance.path()?;
    let config = Config::load(&path)?;
    let mut opts = BuildOptions::for_config(&path);
    opts.upgrade_lock = upgrade;
    let r = pipeline::resolve_lock(&config, &opts)?;
    let (k, kc) = (&r.kernel, r.lock_changed);
    println!(
        "kernel {} ({}){}",
        k.version,
        k.package
            .as_ref()
            .map(|p| format!("{} {}", p.package, p.version))
            .unwrap_or_default(),
        if kc { ", lock updated" } else { "" }
    );
    Ok(())
}
