//! Assembling an appliance image from resolved inputs: the root, boot and
//! initramfs trees, their file systems, the partition table, all written
//! into one sparse image file.
//!
//! The work is split in two so each half can be used (and timed) alone:
//! [`assemble`] turns [`Inputs`] (a configuration plus the kernel, firmware,
//! binaries and secrets already on the host) into [`Trees`] and the build id;
//! [`write_image`] writes those trees into a disk image. Neither runs cargo
//! or apt; [`crate::pipeline`] does that first. What differs by board (boot
//! trees, boot file systems, module request) is asked of
//! [`crate::board::Board`].
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Inputs`], [`Trees`], [`assemble`] (module closure, initramfs, SBOM, build id) |
//! | `root.rs` | the root tree and the initramfs |
//! | `tables.rs` | the kernel command line and the `/etc/krazy/*.toml` tables |
//! | `write.rs` | [`write_image`], [`root_image`] |
//!
//! # What goes where (`pc`)
//!
//! | partition | contents |
//! |---|---|
//! | ESP (FAT) | `EFI/BOOT/BOOTX64.EFI` (systemd-boot), `loader/loader.conf`, `loader/entries/krazy-{a,b}.conf`, `krazy/{a,b}/{vmlinuz,initrd}` |
//! | root A, root B (squashfs) | the same root tree in both slots |
//! | perm (ext4) | empty |
//!
//! Every per-slot ESP file and `loader.conf` has a fixed capacity
//! ([`crate::board::pc::PcCapacities`]) and is contiguous, so an update rewrites slot B in
//! place (krazy-update's `bootarchive` and `bootfiles`). Kernels and
//! initramfs are padded with zeros, text files with spaces.
//!
//! # Reproducibility
//!
//! Every time stamp is [`Inputs::mtime`] (`SOURCE_DATE_EPOCH` when set), GUIDs
//! derive from the instance id, the password's salt derives from the instance
//! id and the password, and trees are written in path order: the same inputs
//! give the same bytes.

mod root;
mod tables;
mod write;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use krazy_disk::{InstanceId, Layout, LayoutOptions, PartitionTable};
use krazy_fs::fat::Capacity;
use krazy_fs::tree::{Tree, TreeError};
use sha2::{Digest, Sha256};

pub use crate::board::pc::{loader_conf, loader_entry, PcCapacities};
pub use crate::board::pi3::pi3_config_txt;
use crate::config::{Config, Platform};
use crate::firmware::Firmware;
use crate::kernel::{Kernel, ModuleIndex};
use crate::sbom::{Component, CrateVersion, Sbom, SBOM_PATH};
use crate::secrets::Secrets;
pub(crate) use root::{add_bytes, add_host, check_capacity, file_len};
pub use tables::{
    kernel_cmdline, services_table, services_toml, update_table, update_toml, web_toml,
};
pub use write::{root_image, write_atomic, write_image, ImageFile, ImageReport, PartitionReport};

/// Where the build id is written in the root (excluded from the SBOM it names).
pub const BUILD_ID_PATH: &str = "etc/krazy/build-id";
/// The services file krazy-init reads.
pub const SERVICES_PATH: &str = "etc/krazy/services.toml";
/// The update settings (settle time, health checks) the device reads.
pub const UPDATE_PATH: &str = "etc/krazy/update.toml";
/// The root's update version floor (its build epoch), in Unix seconds.
pub const MIN_VERSION_PATH: &str = "etc/krazy/min-version";
/// Where the root keeps the `[web]` settings krazy-init reads (ports, TLS,
/// connection limits; krazy-init's `config::WebSettings`).
pub const WEB_PATH: &str = "etc/krazy/web.toml";
/// The default image size when none is given: 2 GiB, written sparse.
pub const DEFAULT_DISK_BYTES: u64 = 2 << 30;

/// Why a disk size given by a user is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A suffix other than K, M, G or T.
    #[error("unknown size unit {0:?}: use K, M, G or T")]
    Unit(char),
    /// Not a number (with an optional unit).
    #[error("{0:?} is not a size like 2G, 512M or 1073741824")]
    NotANumber(String),
    /// Not whole 512-byte sectors, or too large.
    #[error("{0:?} must be a multiple of 512 bytes")]
    NotSectors(String),
}

/// Parses a disk size as users write it (`2G`, `512m`, `1073741824`;
/// binary units), which must be whole 512-byte sectors.
pub fn parse_disk_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(SizeError::Unit(c)),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_string()))?;
    n.checked_mul(mult)
        .filter(|b| b % 512 == 0)
        .ok_or_else(|| SizeError::NotSectors(s.to_string()))
}

/// Why an image could not be assembled or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tree could not be built (a bad path from `[[file]]`, say).
    #[error("{what}: {source}")]
    Tree {
        /// Which tree and entry.
        what: String,
        /// The cause.
        #[source]
        source: TreeError,
    },
    /// A `[[file]]` source could not be read.
    #[error("[[file]] {dest}: cannot read {}: {source}", source_path.display())]
    FileSource {
        /// The destination in the root.
        dest: String,
        /// The host file.
        source_path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The instance id is not usable for GUIDs.
    #[error("instance_id: {0}")]
    InstanceId(#[from] krazy_disk::InstanceIdError),
    /// The disk is too small or misaligned for the layout.
    #[error("{0} (pass a larger --size)")]
    Layout(#[from] krazy_disk::LayoutError),
    /// The partition table could not be made.
    #[error(transparent)]
    Table(#[from] krazy_disk::TableError),
    /// The kernel's modules could not be indexed or a needed one is missing.
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    /// The firmware does not fit the platform.
    #[error("the {platform} platform needs {needed} firmware; check [firmware] in krazy.toml")]
    FirmwareMismatch {
        /// The platform.
        platform: Platform,
        /// What it needs.
        needed: &'static str,
    },
    /// Boot trees of one board were handed to another.
    #[error("boot trees of another board were given to the {0} board")]
    BoardMismatch(Platform),
    /// The Pi 3 device tree is missing from the kernel.
    #[error(transparent)]
    Firmware(#[from] crate::firmware::FirmwareError),
    /// A file system did not fit its partition or could not be written.
    #[error("{part}: {reason}")]
    FileSystem {
        /// The partition.
        part: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A boot file is larger than its fixed capacity.
    #[error("{path} is {size} bytes, more than its {capacity}-byte capacity; raise the capacity in PcCapacities")]
    TooLarge {
        /// The ESP path.
        path: String,
        /// Its size.
        size: u64,
        /// Its capacity.
        capacity: u64,
    },
    /// The SBOM could not hash a file.
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    /// Writing the image file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn tree_err(what: impl Into<String>) -> impl FnOnce(TreeError) -> ImageError {
    let what = what.into();
    move |source| ImageError::Tree { what, source }
}

/// A program that goes into the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Its path in the root, without a leading `/` (`krazy/init`, `user/hello`).
    pub dest: String,
    /// The (already ELF-checked) executable on the host.
    pub host: PathBuf,
}

/// The instance secrets in the form the image needs: never the password
/// itself, never the update signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageSecrets {
    /// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` of the web password.
    pub password_hash: String,
    /// The update public key.
    pub update_public_key: [u8; 32],
    /// The TLS certificate and key (PEM), when TLS is on.
    pub tls: Option<(String, String)>,
}

impl std::fmt::Debug for ImageSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSecrets")
            .field("password_hash", &self.password_hash)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ImageSecrets {
    /// The image's view of `secrets` for `config`. The password's salt is
    /// derived from the instance id and the password (so a rebuild gives the
    /// same bytes, and two instances with one password differ).
    pub fn new(secrets: &Secrets, config: &Config) -> Self {
        let salt = Sha256::new()
            .chain_update(b"krazy password salt\0")
            .chain_update(config.instance_id.as_bytes())
            .chain_update([0])
            .chain_update(secrets.password.as_bytes())
            .finalize();
        ImageSecrets {
            password_hash: crate::secrets::hash_password_with_salt(&secrets.password, &salt[..16]),
            update_public_key: secrets.update_public_key,
            tls: config
                .web
                .tls
                .then(|| (secrets.tls_cert_pem.clone(), secrets.tls_key_pem.clone())),
        }
    }
}

/// Everything an image is made from, already on the host.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The configuration (paths resolved).
    pub config: Config,
    /// The kernel.
    pub kernel: Kernel,
    /// The boot firmware.
    pub firmware: Firmware,
    /// System and user programs.
    pub programs: Vec<Program>,
    /// The secrets' image form.
    pub secrets: ImageSecrets,
    /// Crates of the programs, for the SBOM.
    pub crates: Vec<CrateVersion>,
    /// A CA bundle for `/etc/ssl/certs/ca-certificates.crt`, when wanted.
    pub ca_bundle: Option<PathBuf>,
    /// The one time stamp of every entry (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
}

/// The boot side of an image.
#[derive(Debug, Clone)]
pub enum BootTrees {
    /// `pc`: one ESP with both slots, and its fixed capacities.
    Pc {
        /// The ESP's tree.
        esp: Tree,
        /// Capacities by ESP path.
        capacities: BTreeMap<String, Capacity>,
    },
    /// `pi3`: the autoboot partition and one boot partition per slot.
    Pi3 {
        /// Partition 1: bootcode.bin, autoboot.txt, an empty config.txt.
        autoboot: Tree,
        /// Partition 2: slot A's firmware, kernel, DTB, config.txt, cmdline.txt.
        boot_a: Tree,
        /// Partition 3: slot B's.
        boot_b: Tree,
    },
}

/// The trees of one image and the build id that names them.
#[derive(Debug, Clone)]
pub struct Trees {
    /// The root file system (the same in both slots).
    pub root: Tree,
    /// The boot partition(s).
    pub boot: BootTrees,
    /// The gzip'd cpio initramfs, when the kernel needs modules to boot.
    pub initramfs: Option<Vec<u8>>,
    /// Modules in the initramfs, in load order (names).
    pub initramfs_modules: Vec<String>,
    /// The SBOM (also at `/etc/krazy/sbom.json`).
    pub sbom: Sbom,
    /// SHA-256 of the SBOM, hex.
    pub build_id: String,
    /// The disk layout the trees were assembled for.
    pub layout: Layout,
    /// Its partition table (GUIDs from the instance id).
    pub table: PartitionTable,
    /// The one time stamp of every entry.
    pub mtime: u64,
}

impl BootTrees {
    /// The boot trees by SBOM name (`esp`; `autoboot`, `boot-a`, `boot-b`).
    pub fn named(&self) -> Vec<(&'static str, &Tree)> {
        match self {
            BootTrees::Pc { esp, .. } => vec![("esp", esp)],
            BootTrees::Pi3 {
                autoboot,
                boot_a,
                boot_b,
            } => vec![
                ("autoboot", autoboot),
                ("boot-a", boot_a),
                ("boot-b", boot_b),
            ],
        }
    }
}
/// The disk layout of `platform` for a disk of `disk_bytes`.
pub fn layout(
    platform: Platform,
    disk_bytes: u64,
    opts: &LayoutOptions,
) -> Result<Layout, ImageError> {
    crate::board::for_platform(platform).layout(disk_bytes, opts)
}

/// Builds every tree of the image for a disk laid out as `layout`, and the
/// SBOM and build id that name them.
pub fn assemble(inputs: &Inputs, layout: &Layout) -> Result<Trees, ImageError> {
    let id = InstanceId::new(inputs.config.instance_id.clone())?;
    let table = PartitionTable::from_layout(layout, &id)?;
    let board = crate::board::for_platform(layout.platform());
    let m = inputs.mtime;
    // The module closure stage 1 loads, when the kernel has modules.
    let (modules, order, names) = match &inputs.kernel.modules_dir {
        Some(dir) => {
            let idx = ModuleIndex::scan(dir, &inputs.kernel.version)?;
            let closure = idx.closure(&board.modules())?;
            let t = idx
                .closure_tree(&closure, m)
                .map_err(tree_err("module closure"))?;
            let order: Vec<String> = closure.iter().map(|m| m.rel_path.clone()).collect();
            let names = closure.iter().map(|m| m.name.clone()).collect();
            (Some(t), order, names)
        }
        None => (None, Vec::new(), Vec::new()),
    };
    let init = inputs
        .programs
        .iter()
        .find(|p| p.dest == "krazy/init")
        .map(|p| p.host.clone());
    let initramfs = match (&modules, init) {
        (Some(t), Some(init)) if !order.is_empty() => Some(root::initramfs(
            &init,
            &inputs.kernel.version,
            t,
            &order,
            m,
        )?),
        _ => None,
    };
    let mut root = root::root_tree(inputs, modules.as_ref())?;
    let boot = board.boot_trees(inputs, &table, initramfs.as_deref())?;
    let mut sbom = Sbom::new();
    sbom.add_tree("root", &root)?;
    for (name, tree) in boot.named() {
        sbom.add_tree(name, tree)?;
    }
    sbom.files.remove(&format!("root:/{BUILD_ID_PATH}"));
    sbom.add_crates(inputs.crates.iter().cloned());
    if let Some(p) = &inputs.kernel.package {
        sbom.kernel = Component {
            package: p.package.clone(),
            version: p.version.clone(),
            sha256: p.deb_sha256.clone(),
        };
    }
    if sbom.kernel.version.is_empty() {
        sbom.kernel.version = inputs.kernel.version.clone();
    }
    sbom.firmware = match &inputs.firmware {
        Firmware::SystemdBoot {
            package: Some(p), ..
        } => Component {
            package: p.package.clone(),
            version: p.version.clone(),
            sha256: p.deb_sha256.clone(),
        },
        Firmware::SystemdBoot { efi, .. } => Component {
            package: "systemd-boot".into(),
            version: efi.display().to_string(),
            sha256: crate::kernel::sha256_file(efi)?,
        },
        Firmware::RaspberryPi { .. } => Component {
            package: "raspberrypi-firmware".into(),
            version: String::new(),
            sha256: String::new(),
        },
    };
    let build_id = sbom.build_id();
    add_bytes(
        &mut root,
        "root",
        SBOM_PATH,
        sbom.canonical_json(),
        0o644,
        m,
    )?;
    add_bytes(
        &mut root,
        "root",
        BUILD_ID_PATH,
        format!("{build_id}\n"),
        0o644,
        m,
    )?;
    Ok(Trees {
        root,
        boot,
        initramfs,
        initramfs_modules: names,
        sbom,
        build_id,
        layout: layout.clone(),
        table,
        mtime: m,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_disk_size, SizeError};

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_disk_size("2G"), Ok(2 << 30));
        assert_eq!(parse_disk_size(" 512m "), Ok(512 << 20));
        assert_eq!(parse_disk_size("1048576"), Ok(1 << 20));
        assert_eq!(
            parse_disk_size("1000"),
            Err(SizeError::NotSectors("1000".into()))
        );
        assert_eq!(parse_disk_size("2X"), Err(SizeError::Unit('X')));
        assert!(matches!(
            parse_disk_size("G"),
            Err(SizeError::NotANumber(_))
        ));
        assert!(matches!(
            parse_disk_size("99999999999T"),
            Err(SizeError::NotSectors(_))
        ));
    }
}
