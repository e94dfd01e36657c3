//! The whole build: from a [`Config`] to an image file.
//!
//! The steps, in order: [`resolve_lock`] (the kernel and firmware through
//! the lock and the cache; `krazy lock` stops here), [`prepare`] (plus
//! cargo for the system and user programs, ELF checks, the secrets, crate
//! versions), [`assemble`] (the trees and the build id, for the board the
//! config names), then either [`crate::image::write_image`]
//! ([`build_config`], `krazy build`) or [`Assembled::update_parts`]
//! ([`build_update`], `krazy update`).
//!
//! ```no_run
//! use krazy_build::pipeline::{build_image, BuildOptions};
//! use std::path::Path;
//!
//! let config = Path::new("my-appliance/krazy.toml");
//! let opts = BuildOptions::for_config(config);
//! let report = build_image(config, &opts, Path::new("disk.img"))?;
//! println!("{} (build {})", report.path.display(), report.build_id);
//! # Ok::<(), krazy_build::pipeline::BuildError>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use krazy_update::protocol::{SecretKey, Slot};

use crate::cargo::{self, BuildSpec, SystemPrograms, Toolchain};
use crate::config::{Config, ConfigError};
use crate::elf;
use crate::firmware::{self, Firmware, FirmwareError};
use crate::image::{self, ImageError, ImageReport, ImageSecrets, Inputs, Program, Trees};
use crate::kernel::{self, AptGet, Kernel, KernelError, Lock, ResolveOptions};
use crate::sbom::{self, SbomError};
use crate::secrets::{Secrets, SecretsError};
use crate::update::{self, Signing, UpdateError, UpdateParts};

/// The time stamp of every file when `SOURCE_DATE_EPOCH` is unset
/// (2024-01-01T00:00:00Z): images are reproducible by default.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// Why a build failed; each variant's message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel could not be obtained or does not match the lock.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The firmware could not be obtained.
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    /// cargo failed.
    #[error(transparent)]
    Cargo(#[from] cargo::CargoError),
    /// A binary is not static or not for the image's architecture.
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    /// The instance's secrets are missing or malformed.
    #[error("{source}; an instance made by `krazy new DIR` has them in DIR/secrets")]
    Secrets {
        /// The cause.
        #[from]
        source: SecretsError,
    },
    /// Crate versions could not be read.
    #[error(transparent)]
    Sbom(#[from] SbomError),
    /// Assembling or writing the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The update could not be made.
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// How the pipeline builds (the image file to write is an argument of
/// [`build_config`]).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The disk size in bytes (the image is sparse).
    pub disk_bytes: u64,
    /// Partition sizes.
    pub layout: krazy_disk::LayoutOptions,
    /// The instance's secrets directory (default: `secrets/` beside krazy.toml).
    pub secrets_dir: PathBuf,
    /// The lock file (default: `krazy.lock` beside krazy.toml).
    pub lock_path: PathBuf,
    /// Downloaded packages and unpacked kernels.
    pub cache_dir: PathBuf,
    /// Parent of cargo's target directories.
    pub target_dir: PathBuf,
    /// Where the system programs come from.
    pub system: SystemPrograms,
    /// Resolve the kernel and firmware afresh and move the lock.
    pub upgrade_lock: bool,
    /// Progress on stderr.
    pub progress: bool,
    /// The time stamp of every entry (default `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`]).
    pub mtime: u64,
    /// A CA bundle for the root (default: the host's, when present).
    pub ca_bundle: Option<PathBuf>,
}

impl BuildOptions {
    /// Defaults for the instance whose `krazy.toml` is `config_path`.
    pub fn for_config(config_path: &Path) -> Self {
        let dir = config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::for_dir(dir)
    }

    /// Defaults for an instance directory `dir` (secrets and lock inside it).
    pub fn for_dir(dir: &Path) -> Self {
        let cache = kernel::default_cache_dir();
        let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
        BuildOptions {
            disk_bytes: image::DEFAULT_DISK_BYTES,
            layout: krazy_disk::LayoutOptions::default(),
            secrets_dir: dir.join("secrets"),
            lock_path: dir.join(kernel::LOCK_FILE),
            target_dir: cache.join("target"),
            cache_dir: cache,
            system: SystemPrograms::locate(),
            upgrade_lock: false,
            progress: false,
            mtime: krazy_fs::tree::source_date_epoch().unwrap_or(DEFAULT_EPOCH),
            ca_bundle: ca.is_file().then(|| ca.to_path_buf()),
        }
    }
}

/// Progress of the steps on stderr (hidden unless asked for).
struct Steps {
    pb: ProgressBar,
    started: Instant,
}

impl Steps {
    fn new(show: bool) -> Self {
        let pb = ProgressBar::with_draw_target(
            None,
            if show {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        pb.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        Steps {
            pb,
            started: Instant::now(),
        }
    }

    fn step(&self, msg: &str) {
        tracing::info!("{msg}");
        self.pb.set_message(msg.to_string());
    }

    fn done(&self, msg: &str) {
        self.pb.finish_with_message(format!(
            "{msg} in {:.1} s",
            self.started.elapsed().as_secs_f64()
        ));
    }
}

/// Everything except assembly: kernel, firmware, programs, secrets, crates.
pub fn prepare(config: &Config, opts: &BuildOptions) -> Result<Inputs, BuildError> {
    let steps = Steps::new(opts.progress);
    let r = prepare_with(config, opts, &steps);
    steps.pb.finish_and_clear();
    r
}

/// The kernel and firmware `config` needs, through `opts.lock_path` and the
/// cache (moved when `opts.upgrade_lock`, written when it changed).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The kernel.
    pub kernel: Kernel,
    /// The firmware, when the config names one (`pi3` without
    /// `[firmware]` has none).
    pub firmware: Option<Firmware>,
    /// Whether the lock file changed.
    pub lock_changed: bool,
}

/// Resolves the kernel and firmware through the lock: the first step of
/// [`prepare`], and all of `krazy lock`.
pub fn resolve_lock(config: &Config, opts: &BuildOptions) -> Result<Resolved, BuildError> {
    let mut lock = Lock::read(&opts.lock_path)?;
    let ropts = ResolveOptions {
        cache_dir: opts.cache_dir.clone(),
        upgrade: opts.upgrade_lock,
    };
    let (kernel, kchanged) = kernel::resolve_kernel(&config.kernel, &mut lock, &ropts, &AptGet)?;
    let mut fchanged = false;
    let firmware = match config.firmware() {
        Some(source) => {
            let (f, c) = firmware::resolve_firmware(&source, &mut lock, &ropts, &AptGet)?;
            fchanged = c;
            Some(f)
        }
        None => None,
    };
    if kchanged || fchanged {
        lock.write(&opts.lock_path)?;
    }
    Ok(Resolved {
        kernel,
        firmware,
        lock_changed: kchanged || fchanged,
    })
}

fn prepare_with(config: &Config, opts: &BuildOptions, steps: &Steps) -> Result<Inputs, BuildError> {
    let secrets = Secrets::read(&opts.secrets_dir)?;
    steps.step("resolving the kernel and firmware");
    let Resolved {
        kernel, firmware, ..
    } = resolve_lock(config, opts)?;
    let firmware = firmware.ok_or_else(|| ConfigError::Invalid {
        path: opts.lock_path.with_file_name(crate::config::CONFIG_FILE),
        field: "firmware".into(),
        reason: "pi3 needs `[firmware] dir = \"path/to/raspberry-pi-firmware\"`".into(),
    })?;
    steps.step("building the programs");
    let arch = config.platform.arch();
    let tc = Toolchain::detect(arch)?;
    if tc.fallback {
        tracing::warn!(
            "the musl target is not installed: building with {} +crt-static (run `rustup target add {}` for musl)",
            tc.triple,
            config.platform.arch().musl_target()
        );
    }
    let mut specs: Vec<BuildSpec> = config
        .package
        .iter()
        .map(|p| BuildSpec::package(&p.name, &p.path, p.bin.as_deref()))
        .collect();
    if let SystemPrograms::Workspace(ws) = &opts.system {
        specs.push(SystemPrograms::workspace_spec(ws));
    }
    let built = cargo::build_all(
        &specs,
        &tc,
        &cargo::BuildOptions {
            target_dir: opts.target_dir.clone(),
            release: true,
            progress: opts.progress,
            locked: false,
        },
    )?;
    let mut programs = Vec::new();
    for (p, b) in config.package.iter().zip(&built) {
        programs.push(Program {
            dest: format!("user/{}", p.name),
            host: b.path.clone(),
        });
    }
    for (dest, host) in opts.system.programs(&built, &tc, &opts.cache_dir)? {
        programs.push(Program { dest, host });
    }
    steps.step("checking the binaries");
    for p in &programs {
        elf::check_static(&p.host, arch)?;
    }
    let mut crates = Vec::new();
    for s in &specs {
        crates.extend(sbom::crate_versions(&s.manifest, Some(&tc.triple))?);
    }
    Ok(Inputs {
        secrets: ImageSecrets::new(&secrets, config),
        config: config.clone(),
        kernel,
        firmware,
        programs,
        crates,
        ca_bundle: opts.ca_bundle.clone(),
        mtime: opts.mtime,
    })
}

/// An image's inputs and its assembled trees (which carry the layout and
/// partition table): what [`image::write_image`] writes and an update is
/// made of.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// What the image was made from.
    pub inputs: Inputs,
    /// The trees, layout, table and build id.
    pub trees: Trees,
}

impl Assembled {
    /// The signed parts of an update into `slot` ([`update::parts`]).
    pub fn update_parts(
        &self,
        slot: Slot,
        key: &SecretKey,
        signing: &Signing,
    ) -> Result<UpdateParts, UpdateError> {
        update::parts(&self.inputs, &self.trees, slot, key, signing)
    }
}

/// Prepares `config` and assembles its trees for the disk `opts` describes.
/// A disk too small for the layout fails before anything is built.
pub fn assemble(config: &Config, opts: &BuildOptions) -> Result<Assembled, BuildError> {
    let layout =
        crate::board::for_platform(config.platform).layout(opts.disk_bytes, &opts.layout)?;
    let inputs = prepare(config, opts)?;
    let steps = Steps::new(opts.progress);
    steps.step("assembling the image");
    let trees = image::assemble(&inputs, &layout)?;
    steps.pb.finish_and_clear();
    Ok(Assembled { inputs, trees })
}

/// Builds the image of `config` into `output`.
///
/// A disk too small for the layout fails before anything is built or
/// written; any later failure leaves `output` as it was (absent, or an
/// earlier image) and no partial file beside it (see [`image::write_image`]).
pub fn build_config(
    config: &Config,
    opts: &BuildOptions,
    output: &Path,
) -> Result<ImageReport, BuildError> {
    let a = assemble(config, opts)?;
    let steps = Steps::new(opts.progress);
    steps.step("writing the image");
    let report = image::write_image(&a.trees, output)?;
    steps.done(&format!("wrote {}", output.display()));
    Ok(report)
}

/// Reads the krazy.toml at `config_path` and builds its image into `output`.
pub fn build_image(
    config_path: &Path,
    opts: &BuildOptions,
    output: &Path,
) -> Result<ImageReport, BuildError> {
    let config = Config::load(config_path)?;
    build_config(&config, opts, output)
}

/// Builds `config` and makes the signed parts of an update into `slot`.
pub fn build_update(
    config: &Config,
    opts: &BuildOptions,
    slot: Slot,
    key: &SecretKey,
    signing: &Signing,
) -> Result<UpdateParts, BuildError> {
    Ok(assemble(config, opts)?.update_parts(slot, key, signing)?)
}
