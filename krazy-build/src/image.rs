//! Assembling an appliance image from resolved inputs: the root, boot and
//! initramfs trees, their file systems, the partition table, all written
//! into one sparse image file.
//!
//! The work is split in two so each half can be used (and timed) alone:
//! [`assemble`] turns [`Inputs`] (a configuration plus the kernel, firmware,
//! binaries and secrets already on the host) into [`Trees`] and the build id;
//! [`write_image`] writes those trees into a disk image. Neither runs cargo
//! or apt; [`crate::pipeline`] does that first.
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
//! ([`PcCapacities`]) and is contiguous, so an update rewrites slot B in
//! place (krazy-update's `bootarchive` and `bootfiles`). Kernels and
//! initramfs are padded with zeros, text files with spaces.
//!
//! # Reproducibility
//!
//! Every time stamp is [`Inputs::mtime`] (`SOURCE_DATE_EPOCH` when set), GUIDs
//! derive from the instance id, the password's salt derives from the instance
//! id and the password, and trees are written in path order: the same inputs
//! give the same bytes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

use krazy_disk::{Guid, InstanceId, Layout, LayoutOptions, PartitionTable, Role};
use krazy_fs::fat::{Capacity, FatOptions, Pad};
use krazy_fs::tree::{Contents, Entry, Kind, Tree, TreeError};
use krazy_fs::{BlockDevice, FileDevice};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Health, Platform, Restart, Start};
use crate::firmware::Firmware;
use crate::kernel::{Kernel, ModuleIndex, ModuleRequest};
use crate::sbom::{Component, CrateVersion, Sbom, SBOM_PATH};
use crate::secrets::Secrets;
use krazy_init::config::{HealthCheck, ServiceEntry, ServicesToml, UpdateFile};

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

/// Fixed capacities of the `pc` ESP's per-slot files. The defaults leave
/// room for kernels and initramfs several times the size of Debian's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcCapacities {
    /// `krazy/<slot>/vmlinuz`.
    pub vmlinuz: u64,
    /// `krazy/<slot>/initrd`.
    pub initrd: u64,
    /// `loader/entries/krazy-<slot>.conf`.
    pub entry: u64,
    /// `loader/loader.conf`.
    pub loader_conf: u64,
}

impl Default for PcCapacities {
    fn default() -> Self {
        PcCapacities {
            vmlinuz: 48 << 20,
            initrd: 32 << 20,
            entry: 1024,
            loader_conf: 512,
        }
    }
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
}

/// The kernel command line of `slot` (`a` or `b`) for a root and perm partition.
pub fn kernel_cmdline(config: &Config, root: Guid, perm: Guid, slot: char) -> String {
    let mut args = vec![
        format!("root=PARTUUID={root}"),
        format!("krazy.perm=PARTUUID={perm}"),
        format!("krazy.slot={slot}"),
    ];
    match config.platform {
        Platform::Pc => args.push("console=tty1".into()),
        Platform::Pi3 => args.push("console=tty1".into()),
    }
    args.push(format!("console={}", config.serial_console()));
    // No `rootwait`: stage 1 waits for the root itself, and a kernel that
    // cannot reach stage 1 must panic (and so reset, ending a trial boot)
    // rather than wait forever.
    args.push("panic=10".into());
    args.extend(config.kernel_args.iter().cloned());
    args.join(" ")
}

/// The `services.toml` table for `config`: `dhcp` and `ntp` (always
/// restarted), then each package as `/user/<name>`.
pub fn services_table(config: &Config) -> ServicesToml {
    let system = |name: &str| ServiceEntry {
        name: Some(name.into()),
        path: format!("/krazy/{name}"),
        restart: Restart::Always,
        start: Start::Boot,
        ..ServiceEntry::default()
    };
    let mut service = vec![system("dhcp"), system("ntp")];
    for p in &config.package {
        service.push(ServiceEntry {
            name: Some(p.name.clone()),
            path: format!("/user/{}", p.name),
            args: p.args.clone(),
            env: p.env.clone(),
            restart: p.restart,
            start: p.start,
            wait_for: p.wait_for.clone(),
            ..ServiceEntry::default()
        });
    }
    ServicesToml {
        version: ServicesToml::VERSION,
        home_base: None,
        service,
    }
}

/// `/etc/krazy/services.toml` for `config` ([`services_table`]).
pub fn services_toml(config: &Config) -> String {
    // Plain strings, enums and maps: serializing cannot fail.
    let body = toml::to_string(&services_table(config)).unwrap_or_default();
    format!("# Written by krazy-build from krazy.toml; read by krazy-init (services.toml version 1).\n{body}")
}

/// `/etc/krazy/web.toml`: the instance's `[web]` table, field for field.
pub fn web_toml(config: &Config) -> String {
    toml::to_string(&config.web).unwrap_or_default()
}

/// The `update.toml` table for `config`: `[update]` and each package's health check.
pub fn update_table(config: &Config) -> UpdateFile {
    let health = config
        .package
        .iter()
        .filter_map(|p| {
            p.health.as_ref().map(|h| match h {
                Health::Http(u) => HealthCheck {
                    service: p.name.clone(),
                    http: Some(u.clone()),
                    command: None,
                },
                Health::Command(c) => HealthCheck {
                    service: p.name.clone(),
                    http: None,
                    command: Some(c.clone()),
                },
            })
        })
        .collect();
    UpdateFile {
        settle_seconds: config.update.settle_seconds.into(),
        deadline_seconds: Some(config.update.deadline_seconds.into()),
        fail_after_restarts: config.update.fail_after_restarts.into(),
        health,
    }
}

/// `/etc/krazy/update.toml` for `config` ([`update_table`]).
pub fn update_toml(config: &Config) -> String {
    toml::to_string(&update_table(config)).unwrap_or_default()
}

fn add_dirs(t: &mut Tree, dirs: &[&str], mtime: u64) -> Result<(), ImageError> {
    for d in dirs {
        t.add_dir_all(d, mtime)
            .map_err(tree_err(format!("root: /{d}")))?;
    }
    Ok(())
}

fn add_bytes(
    t: &mut Tree,
    tree: &str,
    path: &str,
    bytes: impl Into<Vec<u8>>,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    add_contents(t, tree, path, Contents::bytes(bytes.into()), mode, mtime)
}

fn add_host(
    t: &mut Tree,
    tree: &str,
    path: &str,
    host: &Path,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    add_contents(
        t,
        tree,
        path,
        Contents::Host(host.to_path_buf()),
        mode,
        mtime,
    )
}

/// Adds a file at `path` of `tree`, with its parent directories.
fn add_contents(
    t: &mut Tree,
    tree: &str,
    path: &str,
    contents: Contents,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    if let Some((parent, _)) = path.rsplit_once('/') {
        t.add_dir_all(parent, mtime)
            .map_err(tree_err(format!("{tree}: /{parent}")))?;
    }
    t.add_file(path, contents, mode, mtime)
        .map_err(tree_err(format!("{tree}: /{path}")))
}

/// The root tree without the SBOM and build id.
fn root_tree(inputs: &Inputs, modules: Option<&Tree>) -> Result<Tree, ImageError> {
    let c = &inputs.config;
    let m = inputs.mtime;
    let mut t = Tree::new();
    t.root_mut().mtime = m;
    add_dirs(
        &mut t,
        &[
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "perm",
            "etc/krazy",
            "krazy",
            "user",
        ],
        m,
    )?;
    for p in &inputs.programs {
        add_host(&mut t, "root", &p.dest, &p.host, 0o755, m)?;
    }
    add_bytes(
        &mut t,
        "root",
        "etc/hostname",
        format!("{}\n", c.hostname),
        0o644,
        m,
    )?;
    add_bytes(
        &mut t,
        "root",
        "etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{}\n",
            c.hostname
        ),
        0o644,
        m,
    )?;
    t.add_symlink("etc/resolv.conf", "/run/resolv.conf", m)
        .map_err(tree_err("root: /etc/resolv.conf"))?;
    if let Some(ca) = &inputs.ca_bundle {
        add_host(
            &mut t,
            "root",
            "etc/ssl/certs/ca-certificates.crt",
            ca,
            0o644,
            m,
        )?;
    }
    add_bytes(&mut t, "root", SERVICES_PATH, services_toml(c), 0o644, m)?;
    add_bytes(&mut t, "root", UPDATE_PATH, update_toml(c), 0o644, m)?;
    add_bytes(&mut t, "root", WEB_PATH, web_toml(c), 0o644, m)?;
    add_bytes(
        &mut t,
        "root",
        "etc/krazy/password",
        format!("{}\n", inputs.secrets.password_hash),
        0o600,
        m,
    )?;
    add_bytes(
        &mut t,
        "root",
        "etc/krazy/update.pub",
        krazy_update::protocol::PublicKey(inputs.secrets.update_public_key).to_text(),
        0o644,
        m,
    )?;
    // The version floor a device falls back to when its update state is
    // lost: the build epoch (reproducible, unlike the signing time).
    add_bytes(
        &mut t,
        "root",
        MIN_VERSION_PATH,
        format!("{}\n", m.max(1)),
        0o644,
        m,
    )?;
    if let Some((cert, key)) = &inputs.secrets.tls {
        add_bytes(
            &mut t,
            "root",
            "etc/krazy/tls/cert.pem",
            cert.clone(),
            0o644,
            m,
        )?;
        add_bytes(
            &mut t,
            "root",
            "etc/krazy/tls/key.pem",
            key.clone(),
            0o600,
            m,
        )?;
    }
    if let Some(mods) = modules {
        for (path, e) in mods.iter() {
            if t.get(path).is_none() {
                t.insert(path, e.clone())
                    .map_err(tree_err(format!("root: /{path}")))?;
            }
        }
    }
    for f in &c.file {
        let dest = f.path.trim_start_matches('/').to_string();
        let contents = match (&f.contents, &f.source) {
            (Some(s), _) => Contents::bytes(s.as_bytes().to_vec()),
            (None, Some(src)) => {
                let b = fs::read(src).map_err(|source| ImageError::FileSource {
                    dest: f.path.clone(),
                    source_path: src.clone(),
                    source,
                })?;
                Contents::bytes(b)
            }
            (None, None) => Contents::bytes(Vec::new()),
        };
        if let Some((parent, _)) = dest.rsplit_once('/') {
            t.add_dir_all(parent, m)
                .map_err(tree_err(format!("[[file]] {}", f.path)))?;
        }
        // A [[file]] replaces what krazy put there (an /etc/hosts, say).
        t.remove(&dest);
        t.add_file(&dest, contents, f.mode.0, m)
            .map_err(tree_err(format!("[[file]] {}", f.path)))?;
    }
    Ok(t)
}

/// The initramfs: krazy-init as `/init`, the module closure and
/// `/modules.order` listing it with absolute paths.
fn initramfs(
    init: &Path,
    version: &str,
    modules: &Tree,
    order: &[String],
    mtime: u64,
) -> Result<Vec<u8>, ImageError> {
    let mut t = Tree::new();
    t.root_mut().mtime = mtime;
    add_dirs(&mut t, &["dev", "proc", "sys", "root"], mtime)?;
    let mut console = Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600);
    console.mtime = mtime;
    t.insert("dev/console", console)
        .map_err(tree_err("initramfs: /dev/console"))?;
    add_host(&mut t, "initramfs", "init", init, 0o755, mtime)?;
    for (path, e) in modules.iter() {
        if (path == "lib" || path.starts_with("lib/")) && t.get(path).is_none() {
            t.insert(path, e.clone())
                .map_err(tree_err(format!("initramfs: /{path}")))?;
        }
    }
    let list: String = order
        .iter()
        .map(|rel| format!("/lib/modules/{version}/{rel}\n"))
        .collect();
    add_bytes(&mut t, "initramfs", "modules.order", list, 0o644, mtime)?;
    let mut out = Vec::new();
    krazy_fs::cpio::write(
        &mut out,
        &t,
        &krazy_fs::cpio::CpioOptions {
            gzip: true,
            level: 9,
        },
    )
    .map_err(|e| ImageError::FileSystem {
        part: "initramfs",
        reason: e.to_string(),
    })?;
    Ok(out)
}

fn file_len(p: &Path) -> Result<u64, ImageError> {
    fs::metadata(p)
        .map(|m| m.len())
        .map_err(|source| ImageError::Io {
            path: p.to_path_buf(),
            source,
        })
}

fn check_capacity(path: &str, size: u64, capacity: u64) -> Result<(), ImageError> {
    if size > capacity {
        return Err(ImageError::TooLarge {
            path: path.into(),
            size,
            capacity,
        });
    }
    Ok(())
}

/// The `loader.conf` text committing `slot`.
pub fn loader_conf(slot: char) -> String {
    format!("default krazy-{slot}.conf\ntimeout 0\nconsole-mode keep\neditor no\n")
}

/// A loader entry for `slot` with `cmdline`.
pub fn loader_entry(
    hostname: &str,
    build: &str,
    slot: char,
    cmdline: &str,
    initrd: bool,
) -> String {
    let mut s = format!(
        "title krazy {hostname} (slot {slot})\nversion {build}\nlinux /krazy/{slot}/vmlinuz\n"
    );
    if initrd {
        s.push_str(&format!("initrd /krazy/{slot}/initrd\n"));
    }
    s.push_str(&format!("options {cmdline}\n"));
    s
}

fn pc_esp(
    inputs: &Inputs,
    table: &PartitionTable,
    initramfs: Option<&[u8]>,
    caps: &PcCapacities,
) -> Result<BootTrees, ImageError> {
    let Firmware::SystemdBoot { efi, .. } = &inputs.firmware else {
        return Err(ImageError::FirmwareMismatch {
            platform: Platform::Pc,
            needed: "systemd-boot (`[firmware] apt = \"systemd-boot-efi\"` or `file = ...`)",
        });
    };
    let m = inputs.mtime;
    let mut t = Tree::new();
    t.root_mut().mtime = m;
    let mut capacities = BTreeMap::new();
    add_host(&mut t, "ESP", "EFI/BOOT/BOOTX64.EFI", efi, 0o644, m)?;
    let conf = loader_conf('a');
    check_capacity("loader/loader.conf", conf.len() as u64, caps.loader_conf)?;
    add_bytes(&mut t, "ESP", "loader/loader.conf", conf, 0o644, m)?;
    capacities.insert(
        "loader/loader.conf".to_string(),
        Capacity::new(caps.loader_conf, Pad::Space),
    );
    let guid = |role| table.entry(role).map(|e| e.guid).unwrap_or_default();
    let perm = guid(Role::Perm);
    let kernel_len = file_len(&inputs.kernel.vmlinuz)?;
    let release = &inputs.kernel.version;
    for (slot, root) in [('a', Role::RootA), ('b', Role::RootB)] {
        let cmdline = kernel_cmdline(&inputs.config, guid(root), perm, slot);
        let entry = loader_entry(
            &inputs.config.hostname,
            release,
            slot,
            &cmdline,
            initramfs.is_some(),
        );
        let ep = format!("loader/entries/krazy-{slot}.conf");
        check_capacity(&ep, entry.len() as u64, caps.entry)?;
        add_bytes(&mut t, "ESP", &ep, entry, 0o644, m)?;
        capacities.insert(ep, Capacity::new(caps.entry, Pad::Space));
        let kp = format!("krazy/{slot}/vmlinuz");
        check_capacity(&kp, kernel_len, caps.vmlinuz)?;
        add_host(&mut t, "ESP", &kp, &inputs.kernel.vmlinuz, 0o644, m)?;
        capacities.insert(kp, Capacity::new(caps.vmlinuz, Pad::Zero));
        // The initrd file exists even without an initramfs, so an update can add one.
        let ip = format!("krazy/{slot}/initrd");
        let bytes = initramfs.map(<[u8]>::to_vec).unwrap_or_default();
        check_capacity(&ip, bytes.len() as u64, caps.initrd)?;
        add_bytes(&mut t, "ESP", &ip, bytes, 0o644, m)?;
        capacities.insert(ip, Capacity::new(caps.initrd, Pad::Zero));
    }
    Ok(BootTrees::Pc { esp: t, capacities })
}

/// `config.txt` of a Pi 3 boot slot.
pub fn pi3_config_txt(initrd: bool, serial: bool) -> String {
    let mut s = String::from(
        "# Written by krazy-build.\narm_64bit=1\nkernel=kernel8.img\ndevice_tree=bcm2837-rpi-3-b.dtb\n",
    );
    if initrd {
        s.push_str("initramfs initrd followkernel\n");
    }
    if serial {
        s.push_str("enable_uart=1\n");
    }
    s
}

fn pi3_boot(
    inputs: &Inputs,
    table: &PartitionTable,
    initramfs: Option<&[u8]>,
) -> Result<BootTrees, ImageError> {
    let Firmware::RaspberryPi { files } = &inputs.firmware else {
        return Err(ImageError::FirmwareMismatch {
            platform: Platform::Pi3,
            needed: "a Raspberry Pi firmware directory (`[firmware] dir = ...`)",
        });
    };
    let m = inputs.mtime;
    let dtb = crate::firmware::pi3_dtb(&inputs.kernel)?;
    let guid = |role| table.entry(role).map(|e| e.guid).unwrap_or_default();
    let perm = guid(Role::Perm);
    let mut autoboot = Tree::new();
    autoboot.root_mut().mtime = m;
    for (name, host) in files {
        if name == "bootcode.bin" {
            add_host(&mut autoboot, "autoboot", name, host, 0o644, m)?;
        }
    }
    add_bytes(
        &mut autoboot,
        "autoboot",
        "autoboot.txt",
        krazy_update::bootflow::PiTryboot::autoboot_txt(krazy_update::protocol::Slot::A),
        0o644,
        m,
    )?;
    add_bytes(
        &mut autoboot,
        "autoboot",
        "config.txt",
        Vec::new(),
        0o644,
        m,
    )?;
    let serial = !inputs.config.serial_console().is_empty();
    let slot_tree = |slot: char, root: Role| -> Result<Tree, ImageError> {
        let mut t = Tree::new();
        t.root_mut().mtime = m;
        let name = format!("boot-{slot}");
        for (fname, host) in files {
            if fname != "bootcode.bin" {
                add_host(&mut t, &name, fname, host, 0o644, m)?;
            }
        }
        add_host(
            &mut t,
            &name,
            "kernel8.img",
            &inputs.kernel.vmlinuz,
            0o644,
            m,
        )?;
        add_host(&mut t, &name, "bcm2837-rpi-3-b.dtb", &dtb, 0o644, m)?;
        if let Some(i) = initramfs {
            add_bytes(&mut t, &name, "initrd", i.to_vec(), 0o644, m)?;
        }
        add_bytes(
            &mut t,
            &name,
            "config.txt",
            pi3_config_txt(initramfs.is_some(), serial),
            0o644,
            m,
        )?;
        let cmdline = kernel_cmdline(&inputs.config, guid(root), perm, slot);
        add_bytes(
            &mut t,
            &name,
            "cmdline.txt",
            format!("{cmdline}\n"),
            0o644,
            m,
        )?;
        Ok(t)
    };
    Ok(BootTrees::Pi3 {
        autoboot,
        boot_a: slot_tree('a', Role::RootA)?,
        boot_b: slot_tree('b', Role::RootB)?,
    })
}

/// The disk layout of `platform` for a disk of `disk_bytes`.
pub fn layout(
    platform: Platform,
    disk_bytes: u64,
    opts: &LayoutOptions,
) -> Result<Layout, ImageError> {
    Ok(Layout::new(platform, platform.arch(), disk_bytes, opts)?)
}

/// Builds every tree of the image for a disk laid out as `layout`, and the
/// SBOM and build id that name them.
pub fn assemble(inputs: &Inputs, layout: &Layout) -> Result<Trees, ImageError> {
    let id = InstanceId::new(inputs.config.instance_id.clone())?;
    let table = PartitionTable::from_layout(layout, &id)?;
    let m = inputs.mtime;
    // The module closure stage 1 loads, when the kernel has modules.
    let (modules, order, names) = match &inputs.kernel.modules_dir {
        Some(dir) => {
            let idx = ModuleIndex::scan(dir, &inputs.kernel.version)?;
            let closure = idx.closure(&request(inputs.config.platform))?;
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
        (Some(t), Some(init)) if !order.is_empty() => {
            Some(initramfs(&init, &inputs.kernel.version, t, &order, m)?)
        }
        _ => None,
    };
    let mut root = root_tree(inputs, modules.as_ref())?;
    let boot = match inputs.config.platform {
        Platform::Pc => pc_esp(
            inputs,
            &table,
            initramfs.as_deref(),
            &PcCapacities::default(),
        )?,
        Platform::Pi3 => pi3_boot(inputs, &table, initramfs.as_deref())?,
    };
    let mut sbom = Sbom::new();
    sbom.add_tree("root", &root)?;
    match &boot {
        BootTrees::Pc { esp, .. } => sbom.add_tree("esp", esp)?,
        BootTrees::Pi3 {
            autoboot,
            boot_a,
            boot_b,
        } => {
            sbom.add_tree("autoboot", autoboot)?;
            sbom.add_tree("boot-a", boot_a)?;
            sbom.add_tree("boot-b", boot_b)?;
        }
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
    })
}

fn request(platform: Platform) -> ModuleRequest {
    match platform {
        Platform::Pc => ModuleRequest::pc(),
        Platform::Pi3 => ModuleRequest::pi3(),
    }
}

/// What [`write_image`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The image file.
    pub path: PathBuf,
    /// Its size in bytes (the disk size).
    pub disk_bytes: u64,
    /// The build id.
    pub build_id: String,
    /// The squashfs root's size in bytes.
    pub root_bytes: u64,
    /// The initramfs's size in bytes, when there is one.
    pub initramfs_bytes: Option<u64>,
    /// Partitions: name, first byte, size, PARTUUID.
    pub partitions: Vec<PartitionReport>,
}

/// One partition of a written image.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Its GPT name (`esp`, `root-a`, …).
    pub name: String,
    /// Its number (1-based).
    pub number: u32,
    /// Offset of its first byte.
    pub start: u64,
    /// Its size.
    pub bytes: u64,
    /// Its PARTUUID.
    pub partuuid: String,
}

fn fs_err(part: &'static str) -> impl FnOnce(String) -> ImageError {
    move |reason| ImageError::FileSystem { part, reason }
}

/// Writes `trees` into `out` laid out as `layout`, to a temporary file beside
/// it that is renamed into place only when complete: a failed build leaves
/// no partial image behind.
pub fn write_image(
    trees: &Trees,
    config: &Config,
    layout: &Layout,
    out: &Path,
    mtime: u64,
) -> Result<ImageReport, ImageError> {
    let tmp = tmp_path(out);
    let r = write_image_to(trees, config, layout, &tmp, out, mtime);
    match r {
        Ok(rep) => {
            fs::rename(&tmp, out).map_err(|source| ImageError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(rep)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn tmp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    out.with_file_name(format!(".{name}.partial"))
}

fn window(file: &File, layout: &Layout, role: Role, path: &Path) -> Result<FileDevice, ImageError> {
    let p = layout
        .partition(role)
        .ok_or_else(|| ImageError::FileSystem {
            part: "layout",
            reason: format!("the layout has no {} partition", role.name()),
        })?;
    let f = file.try_clone().map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(FileDevice::new(f, p.start_bytes(), p.size_bytes()))
}

fn write_image_to(
    trees: &Trees,
    config: &Config,
    layout: &Layout,
    tmp: &Path,
    out: &Path,
    mtime: u64,
) -> Result<ImageReport, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let id = InstanceId::new(config.instance_id.clone())?;
    let table = PartitionTable::from_layout(layout, &id)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io(tmp))?;
    file.set_len(layout.disk_bytes()).map_err(io(tmp))?;
    {
        let mut f = file.try_clone().map_err(io(tmp))?;
        table.write(&mut f).map_err(io(tmp))?;
    }
    // The root, once in memory, into both slots.
    let sq = root_image(trees, mtime)?;
    for role in [Role::RootA, Role::RootB] {
        let mut dev = window(&file, layout, role, tmp)?;
        if sq.len() as u64 > dev.len() {
            return Err(ImageError::FileSystem {
                part: "root",
                reason: format!(
                    "the root file system is {} bytes but its partition holds {}: raise root_bytes",
                    sq.len(),
                    dev.len()
                ),
            });
        }
        dev.write_at(0, &sq).map_err(io(tmp))?;
    }
    let fat_opts = |label: &str, role: Role| {
        let start = layout.partition(role).map(|p| p.first_lba).unwrap_or(0);
        FatOptions {
            label: Some(label.to_string()),
            timestamp: Some(mtime),
            volume_id: id.mbr_signature() ^ (role as u32),
            hidden_sectors: u32::try_from(start).unwrap_or(0),
            // The file was truncated and resized above: it reads as zeros,
            // so the capacity files' zero padding stays a hole.
            device_zeroed: true,
            ..Default::default()
        }
    };
    match &trees.boot {
        BootTrees::Pc { esp, capacities } => {
            let mut o = fat_opts("KRAZY-ESP", Role::Esp);
            o.capacities = capacities.clone();
            let mut dev = window(&file, layout, Role::Esp, tmp)?;
            krazy_fs::fat::write(&mut dev, esp, &o).map_err(|e| fs_err("ESP")(e.to_string()))?;
        }
        BootTrees::Pi3 {
            autoboot,
            boot_a,
            boot_b,
        } => {
            for (tree, role, label, part) in [
                (autoboot, Role::Autoboot, "KRAZY-AUTO", "autoboot"),
                (boot_a, Role::BootA, "KRAZY-A", "boot-a"),
                (boot_b, Role::BootB, "KRAZY-B", "boot-b"),
            ] {
                let mut dev = window(&file, layout, role, tmp)?;
                krazy_fs::fat::write(&mut dev, tree, &fat_opts(label, role))
                    .map_err(|e| fs_err(part)(e.to_string()))?;
            }
        }
    }
    let perm_guid = table.entry(Role::Perm).map(|e| e.guid).unwrap_or_default();
    let mut perm = window(&file, layout, Role::Perm, tmp)?;
    krazy_fs::ext4::format(
        &mut perm,
        &krazy_fs::ext4::Ext4Options::new(perm_guid.to_gpt_bytes(), mtime).label("perm"),
    )
    .map_err(|e| fs_err("perm")(e.to_string()))?;
    perm.flush().map_err(io(tmp))?;
    file.sync_all().map_err(io(tmp))?;
    let partitions = table
        .entries()
        .iter()
        .map(|e| PartitionReport {
            name: e.partition.name.to_string(),
            number: e.partition.number,
            start: e.partition.start_bytes(),
            bytes: e.partition.size_bytes(),
            partuuid: e.partuuid(),
        })
        .collect();
    Ok(ImageReport {
        path: out.to_path_buf(),
        disk_bytes: layout.disk_bytes(),
        build_id: trees.build_id.clone(),
        root_bytes: sq.len() as u64,
        initramfs_bytes: trees.initramfs.as_ref().map(|i| i.len() as u64),
        partitions,
    })
}

/// The root file system as squashfs bytes (what each root slot holds, and
/// the `root` part of an update).
pub fn root_image(trees: &Trees, mtime: u64) -> Result<Vec<u8>, ImageError> {
    let mut sq = Cursor::new(Vec::new());
    krazy_fs::squashfs::write(
        &mut sq,
        &trees.root,
        &krazy_fs::squashfs::SquashfsOptions {
            mkfs_time: u32::try_from(mtime).unwrap_or(u32::MAX),
            ..Default::default()
        },
    )
    .map_err(|e| fs_err("root")(e.to_string()))?;
    Ok(sq.into_inner())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
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
