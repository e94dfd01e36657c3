//! Kernels: where they come from (a directory, a `.deb`, or an apt package
//! fetched into a cache), the `krazy.lock` that pins them, and the module
//! dependency closure that stage 1 loads.
//!
//! Debian's kernel packages ship no `modules.dep`; every `.ko` carries a
//! `.modinfo` section of NUL-separated `key=value` strings, whose `name=` and
//! `depends=` entries give the module graph. [`ModuleIndex::scan`] reads them
//! all, [`ModuleIndex::closure`] returns the modules a request needs with
//! every dependency before its users: the order stage 1 loads them in.

use crate::config::KernelSource;
use crate::deb::{self, DebError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lock file's name beside `krazy.toml`.
pub const LOCK_FILE: &str = "krazy.lock";

/// Largest decompressed module accepted (real ones are a few MiB).
const MAX_MODULE: u64 = 256 << 20;

/// Why a kernel could not be found, fetched, pinned or its modules resolved.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Reading a file or directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Unpacking the kernel package failed.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// The source holds no kernel image.
    #[error("no kernel in {}: expected boot/vmlinuz-VERSION (an unpacked Debian kernel package) or a file named vmlinuz; check [kernel] in krazy.toml", path.display())]
    NoKernel {
        /// The directory or package.
        path: PathBuf,
    },
    /// The source holds several kernels and it is unclear which to use.
    #[error("{} holds several kernels ({found}); keep one", path.display())]
    SeveralKernels {
        /// The directory or package.
        path: PathBuf,
        /// The versions found.
        found: String,
    },
    /// An apt command could not run or failed.
    #[error("`{command}` failed: {detail}; is this a Debian system with the package in its sources (apt-get update)?")]
    Apt {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// A package's metadata lacks a field.
    #[error("apt knows no {field} for package {package}")]
    AptField {
        /// The package.
        package: String,
        /// The field.
        field: &'static str,
    },
    /// A fetched or unpacked file's hash differs from the lock.
    #[error("{what} does not match {LOCK_FILE}: locked sha256 {locked}, found {found}; if this change is intended, run `krazy lock --upgrade`")]
    LockMismatch {
        /// What was compared (`the .deb of linux-image-…`).
        what: String,
        /// The hash in the lock.
        locked: String,
        /// The hash found.
        found: String,
    },
    /// The lock file is not valid TOML of the expected shape.
    #[error("{} is damaged: {source}; delete it and build again to re-resolve", path.display())]
    BadLock {
        /// The lock file.
        path: PathBuf,
        /// toml's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// Writing the lock file failed.
    #[error("cannot write {}: {source}", path.display())]
    WriteLock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A module file is not an ELF object with a readable `.modinfo`.
    #[error("module {}: {reason}", path.display())]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A requested module (or a dependency) is neither a module nor built in.
    #[error("kernel {version} has no module {name:?} (needed by {needed_by}) and does not build it in; pick a kernel that has it")]
    MissingModule {
        /// The kernel release.
        version: String,
        /// The module name.
        name: String,
        /// Who needs it (`the request` or a module name).
        needed_by: String,
    },
    /// Module dependencies form a cycle.
    #[error("kernel modules depend on each other in a cycle through {name:?}")]
    DependencyCycle {
        /// A module on the cycle.
        name: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A kernel ready to be put into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`, when the kernel has modules.
    pub modules_dir: Option<PathBuf>,
    /// The device-tree directory (Debian: `usr/lib/linux-image-<version>`),
    /// holding e.g. `broadcom/bcm2837-rpi-3-b.dtb`.
    pub dtbs_dir: Option<PathBuf>,
    /// The package it came from, when it came from one.
    pub package: Option<LockedPackage>,
}

impl Kernel {
    /// Finds the kernel in an unpacked tree: `boot/vmlinuz-VER` with
    /// `lib/modules/VER` or `usr/lib/modules/VER` and
    /// `usr/lib/linux-image-VER`, or a plain `vmlinuz` file with optional
    /// `lib/modules/VER` (one version) and `dtbs/`.
    pub fn from_dir(dir: &Path) -> Result<Kernel, KernelError> {
        let boot = dir.join("boot");
        let mut versions = Vec::new();
        if boot.is_dir() {
            for e in fs::read_dir(&boot).map_err(io_err(&boot))? {
                let e = e.map_err(io_err(&boot))?;
                if let Some(v) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                {
                    versions.push(v.to_string());
                }
            }
        }
        versions.sort();
        let (version, vmlinuz) = match versions.as_slice() {
            [v] => (v.clone(), boot.join(format!("vmlinuz-{v}"))),
            [] => {
                let flat = dir.join("vmlinuz");
                if !flat.is_file() {
                    return Err(KernelError::NoKernel {
                        path: dir.to_path_buf(),
                    });
                }
                let mods = list_dirs(&dir.join("lib/modules"))?;
                let v = match mods.as_slice() {
                    [v] => v.clone(),
                    [] => "unknown".to_string(),
                    _ => {
                        return Err(KernelError::SeveralKernels {
                            path: dir.to_path_buf(),
                            found: mods.join(", "),
                        })
                    }
                };
                (v, flat)
            }
            _ => {
                return Err(KernelError::SeveralKernels {
                    path: dir.to_path_buf(),
                    found: versions.join(", "),
                })
            }
        };
        let modules_dir = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|m| dir.join(m).join(&version))
            .find(|p| p.is_dir());
        let dtbs_dir = [format!("usr/lib/linux-image-{version}"), "dtbs".to_string()]
            .iter()
            .map(|d| dir.join(d))
            .find(|p| p.is_dir());
        Ok(Kernel {
            version,
            vmlinuz,
            modules_dir,
            dtbs_dir,
            package: None,
        })
    }

    /// Unpacks a kernel `.deb` into `cache/kernels/<sha256 prefix>` (reused
    /// when already there) and finds the kernel in it.
    pub fn from_deb(debp: &Path, cache: &Path) -> Result<Kernel, KernelError> {
        let sha = sha256_file(debp)?;
        Self::from_deb_with_hash(debp, &sha, cache)
    }

    fn from_deb_with_hash(debp: &Path, sha: &str, cache: &Path) -> Result<Kernel, KernelError> {
        let dest = cache.join("kernels").join(&sha[..sha.len().min(32)]);
        let marker = dest.join(".krazy-complete");
        if !marker.is_file() {
            let tmp = unique_tmp(&cache.join("kernels"), &sha[..8.min(sha.len())]);
            let _ = fs::remove_dir_all(&tmp);
            deb::extract_to_dir(debp, &tmp, |p| {
                p.starts_with("boot/vmlinuz-")
                    || p.starts_with("boot/config-")
                    || p.starts_with("lib/modules/")
                    || p.starts_with("usr/lib/modules/")
                    || p.starts_with("usr/lib/linux-image-")
            })?;
            fs::write(tmp.join(".krazy-complete"), sha).map_err(io_err(&tmp))?;
            if marker.is_file() {
                // Another build unpacked the same package meanwhile: use theirs.
                let _ = fs::remove_dir_all(&tmp);
            } else {
                let _ = fs::remove_dir_all(&dest);
                if let Err(e) = fs::rename(&tmp, &dest) {
                    let _ = fs::remove_dir_all(&tmp);
                    if !marker.is_file() {
                        return Err(io_err(&dest)(e));
                    }
                }
            }
        }
        Kernel::from_dir(&dest).map_err(|e| match e {
            KernelError::NoKernel { .. } => KernelError::NoKernel {
                path: debp.to_path_buf(),
            },
            e => e,
        })
    }

    /// Whether the kernel's build config says `CONFIG_<option>=y` (from
    /// `boot/config-VER` beside the image); `None` when there is no config.
    pub fn config_builtin(&self, option: &str) -> Option<bool> {
        let cfg = self
            .vmlinuz
            .parent()?
            .join(format!("config-{}", self.version));
        let text = fs::read_to_string(cfg).ok()?;
        let key = format!("CONFIG_{option}=y");
        Some(text.lines().any(|l| l == key))
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>, KernelError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        if e.path().is_dir() {
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One pinned package in `krazy.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// What krazy.toml asked for (an apt name, or a `.deb`/dir path).
    pub requested: String,
    /// The resolved package (`linux-image-6.1.0-56-cloud-amd64`); empty for a
    /// directory source.
    #[serde(default)]
    pub package: String,
    /// The package version (`6.1.192-2`); empty for a directory source.
    #[serde(default)]
    pub version: String,
    /// SHA-256 of the `.deb` (hex); empty for a directory source.
    #[serde(default)]
    pub deb_sha256: String,
    /// SHA-256 of the kernel image (hex), for kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmlinuz_sha256: Option<String>,
    /// The kernel release (`6.1.0-56-cloud-amd64`), for kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// `krazy.lock`: the exact kernel (and firmware package) later builds use
/// until `krazy lock --upgrade`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The pinned kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<LockedPackage>,
    /// The pinned firmware package (pc: systemd-boot-efi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<LockedPackage>,
}

impl Lock {
    /// The lock beside a `krazy.toml`.
    pub fn path_for(config_file: &Path) -> PathBuf {
        config_file.with_file_name(LOCK_FILE)
    }

    /// Reads a lock file; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Lock, KernelError> {
        match fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).map_err(|e| KernelError::BadLock {
                path: path.to_path_buf(),
                source: Box::new(e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Writes the lock atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), KernelError> {
        let werr = |source| KernelError::WriteLock {
            path: path.to_path_buf(),
            source,
        };
        let body = toml::to_string(self).map_err(|e| werr(io::Error::other(e)))?;
        let text = format!("# krazy.lock: the exact kernel and firmware this instance builds with.\n# Written by krazy; change it with `krazy lock --upgrade`.\n\n{body}");
        let tmp = path.with_extension("lock.tmp");
        fs::write(&tmp, text).map_err(werr)?;
        fs::rename(&tmp, path).map_err(werr)
    }
}

/// Package metadata and downloads, as apt provides them; a trait so tests
/// and offline builds can stand in for apt.
pub trait PackageSource {
    /// The fields of the candidate version of `package` (`apt-cache show`).
    fn show(&self, package: &str) -> Result<BTreeMap<String, String>, KernelError>;
    /// Downloads `package` at `version` into `dir`, returning the `.deb`.
    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, KernelError>;
}

/// The system's apt: `apt-cache show --no-all-versions` and
/// `apt-get download NAME=VERSION` (no root needed).
#[derive(Debug, Clone, Copy, Default)]
pub struct AptGet;

fn run(cmd: &mut Command) -> Result<String, KernelError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| KernelError::Apt {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(KernelError::Apt {
            command: line,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PackageSource for AptGet {
    fn show(&self, package: &str) -> Result<BTreeMap<String, String>, KernelError> {
        let text = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
            .map_err(|e| match (e, foreign_arch_hint(package)) {
                (KernelError::Apt { command, detail }, Some(hint)) => KernelError::Apt {
                    command,
                    detail: format!("{detail} ({hint})"),
                },
                (e, _) => e,
            })?;
        Ok(deb::parse_control(&text))
    }

    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, KernelError> {
        // A private directory per download, so the one .deb in it is ours.
        let tmp = unique_tmp(dir, &format!("download-{package}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        run(Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(&tmp))?;
        let mut found = None;
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let p = e.map_err(io_err(&tmp))?.path();
            if p.extension().is_some_and(|x| x == "deb") {
                found = Some(p);
            }
        }
        let src = found.ok_or_else(|| KernelError::Apt {
            command: format!("apt-get download {package}={version}"),
            detail: "no .deb was written".into(),
        })?;
        let name = src.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = dir.join(name);
        fs::rename(&src, &dest).map_err(io_err(&dest))?;
        let _ = fs::remove_dir_all(&tmp);
        Ok(dest)
    }
}

/// The Debian architecture a package's name ends in (`linux-image-arm64`
/// gives `arm64`), for the architectures Debian builds kernels for.
pub fn package_arch(package: &str) -> Option<&str> {
    const ARCHES: [&str; 9] = [
        "amd64", "arm64", "armhf", "armel", "i386", "ppc64el", "s390x", "riscv64", "mips64el",
    ];
    let (_, last) = package.rsplit_once('-')?;
    ARCHES.contains(&last).then_some(last)
}

/// When `package` is for an architecture dpkg does not know yet (an arm64
/// kernel on an amd64 host, say), the commands that make apt see it.
fn foreign_arch_hint(package: &str) -> Option<String> {
    let arch = package_arch(package)?;
    let dpkg = |arg: &str| {
        Command::new("dpkg")
            .arg(arg)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let native = dpkg("--print-architecture")?;
    let foreign = dpkg("--print-foreign-architectures").unwrap_or_default();
    let known = native
        .split_whitespace()
        .chain(foreign.split_whitespace())
        .any(|a| a == arch);
    (!known).then(|| {
        format!(
            "{arch} packages need `dpkg --add-architecture {arch} && apt-get update` on this {} host first",
            native.trim()
        )
    })
}

/// A fresh private path `dir/.tmp-<pid>-<n>-<stem>`, unique within this
/// process too, so parallel builds sharing a cache never collide.
pub(crate) fn unique_tmp(dir: &Path, stem: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}-{stem}", std::process::id()))
}

/// Resolves a metapackage (`linux-image-cloud-amd64`) to the versioned image
/// package it depends on (`linux-image-6.1.0-56-cloud-amd64`) and its
/// version, following at most a few levels.
pub fn resolve_kernel_package(
    apt: &dyn PackageSource,
    name: &str,
) -> Result<(String, String), KernelError> {
    let mut name = name.to_string();
    for _ in 0..4 {
        let f = apt.show(&name)?;
        let version = f.get("Version").cloned().ok_or(KernelError::AptField {
            package: name.clone(),
            field: "Version",
        })?;
        if is_versioned_image(&name) {
            return Ok((name, version));
        }
        let depends = f.get("Depends").cloned().unwrap_or_default();
        let next = depends
            .split(',')
            .flat_map(|alt| alt.split('|'))
            .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
            .find(|d| is_versioned_image(d) || d.starts_with("linux-image-"));
        match next {
            Some(n) if n != name => name = n,
            _ => return Ok((name, version)),
        }
    }
    Err(KernelError::AptField {
        package: name,
        field: "Depends on a versioned linux-image package",
    })
}

/// `linux-image-` followed by a digit: a real, versioned image package.
fn is_versioned_image(name: &str) -> bool {
    name.strip_prefix("linux-image-")
        .and_then(|r| r.bytes().next())
        .is_some_and(|b| b.is_ascii_digit())
}

/// Options for [`resolve_kernel`].
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Where downloaded `.deb`s and unpacked kernels are kept.
    pub cache_dir: PathBuf,
    /// `krazy lock --upgrade`: resolve afresh and move the lock.
    pub upgrade: bool,
}

/// The default cache: `$KRAZY_CACHE`, else `$XDG_CACHE_HOME/krazy`, else
/// `$HOME/.cache/krazy`, else `.krazy-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KRAZY_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("krazy");
    }
    if let Some(p) = std::env::var_os("HOME") {
        return PathBuf::from(p).join(".cache/krazy");
    }
    PathBuf::from(".krazy-cache")
}

/// Obtains the kernel for `source`, honouring and updating `lock.kernel`.
///
/// With a lock entry for the same request and no `upgrade`, exactly the
/// locked package version is used, and the `.deb` and `vmlinuz` must hash as
/// locked. Otherwise (no entry, a changed request in krazy.toml, or
/// `upgrade`) the source is resolved afresh and `lock.kernel` is replaced.
/// Returns the kernel and whether the lock changed (the caller writes it).
pub fn resolve_kernel(
    source: &KernelSource,
    lock: &mut Lock,
    opts: &ResolveOptions,
    apt: &dyn PackageSource,
) -> Result<(Kernel, bool), KernelError> {
    let requested = match source {
        KernelSource::Apt(n) => n.clone(),
        KernelSource::Deb(p) | KernelSource::Dir(p) => p.display().to_string(),
    };
    let locked = lock
        .kernel
        .clone()
        .filter(|l| !opts.upgrade && l.requested == requested);
    let debs = opts.cache_dir.join("debs");
    let (mut kernel, mut entry) = match source {
        KernelSource::Apt(name) => {
            let (package, version) = match &locked {
                Some(l) => (l.package.clone(), l.version.clone()),
                None => resolve_kernel_package(apt, name)?,
            };
            fs::create_dir_all(&debs).map_err(io_err(&debs))?;
            let debp = fetch_deb(apt, &debs, &package, &version)?;
            let sha = sha256_file(&debp)?;
            let k = Kernel::from_deb_with_hash(&debp, &sha, &opts.cache_dir)?;
            let e = LockedPackage {
                requested: requested.clone(),
                package,
                version,
                deb_sha256: sha,
                vmlinuz_sha256: None,
                release: None,
            };
            (k, e)
        }
        KernelSource::Deb(p) => {
            let sha = sha256_file(p)?;
            let (package, version) = deb::package_id(p)?;
            let k = Kernel::from_deb_with_hash(p, &sha, &opts.cache_dir)?;
            let e = LockedPackage {
                requested: requested.clone(),
                package,
                version,
                deb_sha256: sha,
                vmlinuz_sha256: None,
                release: None,
            };
            (k, e)
        }
        KernelSource::Dir(p) => {
            let k = Kernel::from_dir(p)?;
            let e = LockedPackage {
                requested: requested.clone(),
                package: String::new(),
                version: String::new(),
                deb_sha256: String::new(),
                vmlinuz_sha256: None,
                release: None,
            };
            (k, e)
        }
    };
    entry.vmlinuz_sha256 = Some(sha256_file(&kernel.vmlinuz)?);
    entry.release = Some(kernel.version.clone());
    if let Some(l) = &locked {
        if l.deb_sha256 != entry.deb_sha256 {
            return Err(KernelError::LockMismatch {
                what: format!("the .deb of {} {}", entry.package, entry.version),
                locked: l.deb_sha256.clone(),
                found: entry.deb_sha256,
            });
        }
        if l.vmlinuz_sha256 != entry.vmlinuz_sha256 {
            return Err(KernelError::LockMismatch {
                what: format!("the kernel image {}", kernel.vmlinuz.display()),
                locked: l.vmlinuz_sha256.clone().unwrap_or_default(),
                found: entry.vmlinuz_sha256.unwrap_or_default(),
            });
        }
    }
    let changed = lock.kernel.as_ref() != Some(&entry);
    lock.kernel = Some(entry.clone());
    kernel.package = Some(entry);
    Ok((kernel, changed))
}

/// The `.deb` of `package` at `version` in `debs` (the cache), downloaded
/// with `apt` when not there yet.
pub fn fetch_deb(
    apt: &dyn PackageSource,
    debs: &Path,
    package: &str,
    version: &str,
) -> Result<PathBuf, KernelError> {
    fs::create_dir_all(debs).map_err(io_err(debs))?;
    match cached_deb(debs, package, version) {
        Some(p) => Ok(p),
        None => apt.download(package, version, debs),
    }
}

/// A `.deb` for `package` at `version` already in the cache, as
/// `apt-get download` names it (`NAME_VERSION_ARCH.deb`, `:` as `%3a`).
fn cached_deb(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
    let mut hits: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    hits.sort();
    hits.pop()
}

/// What a module's `.modinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, normalized (`-` as `_`); empty when absent.
    pub name: String,
    /// `depends=`, normalized, in order.
    pub depends: Vec<String>,
    /// `alias=` entries.
    pub aliases: Vec<String>,
}

/// Normalizes a module name: `-` and `_` are equivalent; `_` is canonical.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses the bytes of a `.modinfo` section (NUL-separated `key=value`).
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut mi = ModInfo::default();
    for item in section.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(item) else {
            continue;
        };
        let Some((k, v)) = s.split_once('=') else {
            continue;
        };
        match k {
            "name" => mi.name = normalize_module_name(v),
            "depends" => mi.depends.extend(
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(normalize_module_name),
            ),
            "alias" => mi.aliases.push(v.to_string()),
            _ => {}
        }
    }
    mi
}

/// Reads the `.modinfo` of a module file (`.ko`, `.ko.xz` or `.ko.zst`).
pub fn read_module(path: &Path) -> Result<ModInfo, KernelError> {
    let bad = |reason: String| KernelError::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let raw = fs::read(path).map_err(io_err(path))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let data = if name.ends_with(".ko.xz") {
        let stream = liblzma::stream::Stream::new_stream_decoder(MAX_MODULE, 0)
            .map_err(|e| bad(format!("xz: {e}")))?;
        let mut dec = liblzma::read::XzDecoder::new_stream(&raw[..], stream);
        let mut out = Vec::new();
        (&mut dec)
            .take(MAX_MODULE)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("xz: {e}")))?;
        out
    } else if name.ends_with(".ko.zst") {
        let mut dec = ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| bad(format!("zstd: {e}")))?;
        let mut out = Vec::new();
        (&mut dec)
            .take(MAX_MODULE)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("zstd: {e}")))?;
        out
    } else {
        raw
    };
    use object::{Object, ObjectSection};
    let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let sec = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("has no .modinfo section".into()))?;
    let bytes = sec
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo: {e}")))?;
    let mut mi = parse_modinfo(bytes);
    if mi.name.is_empty() {
        mi.name = normalize_module_name(module_stem(name));
    }
    Ok(mi)
}

fn module_stem(file_name: &str) -> &str {
    for ext in [".ko.xz", ".ko.zst", ".ko.gz", ".ko"] {
        if let Some(s) = file_name.strip_suffix(ext) {
            return s;
        }
    }
    file_name
}

/// One module in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The normalized name (`virtio_pci`).
    pub name: String,
    /// The path relative to the modules directory (`kernel/drivers/…/virtio_pci.ko`).
    pub rel_path: String,
    /// Its dependencies, normalized.
    pub depends: Vec<String>,
}

/// Every module of one kernel, by normalized name, plus the built-ins.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    /// The kernel release.
    pub version: String,
    /// The modules directory scanned.
    pub dir: PathBuf,
    /// Modules by normalized name.
    pub modules: BTreeMap<String, Module>,
    /// Names built into the kernel (from `modules.builtin`), normalized.
    pub builtin: BTreeSet<String>,
}

/// What stage 1 should load: names that must be there and names taken only
/// when the kernel has them as modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleRequest {
    /// Modules the image cannot boot without (unless built in).
    pub required: Vec<String>,
    /// Modules loaded when present (efivarfs, a watchdog, ext4 if modular).
    pub optional: Vec<String>,
}

impl ModuleRequest {
    /// What a `pc` image needs from Debian's kernels to reach its root and
    /// file systems: virtio (PCI, block, net), squashfs, vfat with both nls
    /// modules; optionally ext4 (modular on the generic kernel), efivarfs
    /// (trial boots) and a watchdog (`i6300esb`, else `softdog`).
    pub fn pc() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ModuleRequest {
            required: s(&[
                "virtio_pci",
                "virtio_blk",
                "virtio_net",
                "squashfs",
                "vfat",
                "nls_cp437",
                "nls_ascii",
            ]),
            optional: s(&["ext4", "efivarfs", "i6300esb|softdog"]),
        }
    }

    /// What a Raspberry Pi 3 image needs from Debian's arm64 kernel: squashfs
    /// and vfat with both nls modules are required. Taken when present as
    /// modules: the MMC block layer (Debian builds it in), both SD host
    /// drivers (`bcm2835`, the SDHOST controller that drives the card slot
    /// with the mainline device tree, and `sdhci_iproc`, the Arasan
    /// controller, to which QEMU's `raspi3b` wires the card until the pins
    /// are switched), ext4, the USB host (`dwc2` and its PHY `phy_generic`,
    /// which the device tree names but no `depends=` does), the Ethernet
    /// chips of the 3 B (`smsc95xx`) and 3 B+ (`lan78xx`), and the watchdog
    /// (`bcm2835_wdt`).
    pub fn pi3() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ModuleRequest {
            required: s(&["squashfs", "vfat", "nls_cp437", "nls_ascii"]),
            optional: s(&[
                "mmc_block",
                "bcm2835",
                "sdhci_iproc",
                "ext4",
                "phy_generic",
                "dwc2",
                "smsc95xx",
                "lan78xx",
                "bcm2835_wdt",
            ]),
        }
    }
}

impl ModuleIndex {
    /// Reads the `.modinfo` of every module under `dir`
    /// (`lib/modules/<version>`) in parallel, and `modules.builtin`.
    pub fn scan(dir: &Path, version: &str) -> Result<ModuleIndex, KernelError> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        files.sort();
        let infos: Vec<(String, ModInfo)> = files
            .par_iter()
            .map(|rel| Ok((rel.clone(), read_module(&dir.join(rel))?)))
            .collect::<Result<_, KernelError>>()?;
        let mut modules = BTreeMap::new();
        for (rel, mi) in infos {
            modules.entry(mi.name.clone()).or_insert(Module {
                name: mi.name,
                rel_path: rel,
                depends: mi.depends,
            });
        }
        let mut builtin = BTreeSet::new();
        let bfile = dir.join("modules.builtin");
        if let Ok(text) = fs::read_to_string(&bfile) {
            for l in text.lines() {
                let base = l.rsplit('/').next().unwrap_or(l);
                builtin.insert(normalize_module_name(module_stem(base)));
            }
        }
        Ok(ModuleIndex {
            version: version.to_string(),
            dir: dir.to_path_buf(),
            modules,
            builtin,
        })
    }

    /// The modules `req` needs, every dependency before its users: the order
    /// stage 1 loads them in. A required name must be a module or built in;
    /// an optional name (or `a|b` alternatives, first present wins) is
    /// skipped when absent. Built-in names contribute nothing.
    pub fn closure(&self, req: &ModuleRequest) -> Result<Vec<Module>, KernelError> {
        let mut order = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false = visiting, true = done
        for r in &req.required {
            let n = normalize_module_name(r);
            if self.modules.contains_key(&n) {
                self.visit(&n, "the request", &mut state, &mut order)?;
            } else if !self.builtin.contains(&n) {
                return Err(KernelError::MissingModule {
                    version: self.version.clone(),
                    name: n,
                    needed_by: "the image (stage 1)".into(),
                });
            }
        }
        for r in &req.optional {
            let pick = r
                .split('|')
                .map(normalize_module_name)
                .find(|n| self.modules.contains_key(n) || self.builtin.contains(n));
            if let Some(n) = pick {
                if self.modules.contains_key(&n) {
                    self.visit(&n, "the request", &mut state, &mut order)?;
                }
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        state: &mut HashMap<String, bool>,
        order: &mut Vec<Module>,
    ) -> Result<(), KernelError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(KernelError::DependencyCycle {
                    name: name.to_string(),
                })
            }
            None => {}
        }
        let Some(m) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(KernelError::MissingModule {
                version: self.version.clone(),
                name: name.to_string(),
                needed_by: needed_by.to_string(),
            });
        };
        state.insert(name.to_string(), false);
        for d in &m.depends {
            self.visit(d, name, state, order)?;
        }
        state.insert(name.to_string(), true);
        order.push(m.clone());
        Ok(())
    }

    /// The closure as a tree for an initramfs or root: the module files
    /// under `lib/modules/<version>/`, plus `etc/krazy/modules` listing their
    /// paths (relative to `lib/modules/<version>`) in load order, one a line.
    pub fn closure_tree(
        &self,
        closure: &[Module],
        mtime: u64,
    ) -> Result<krazy_fs::tree::Tree, krazy_fs::tree::TreeError> {
        use krazy_fs::tree::{Contents, Tree};
        let mut t = Tree::new();
        let base = format!("lib/modules/{}", self.version);
        let mut list = String::new();
        for m in closure {
            let p = format!("{base}/{}", m.rel_path);
            if let Some((parent, _)) = p.rsplit_once('/') {
                t.add_dir_all(parent, mtime)?;
            }
            t.add_file(&p, Contents::Host(self.dir.join(&m.rel_path)), 0o644, mtime)?;
            list.push_str(&m.rel_path);
            list.push('\n');
        }
        t.add_dir_all("etc/krazy", mtime)?;
        t.add_file("etc/krazy/modules", Contents::bytes(list), 0o644, mtime)?;
        Ok(t)
    }
}

/// Collects module files under `dir`, relative to `base`, without following
/// symlinks.
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), KernelError> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let ft = e.file_type().map_err(io_err(dir))?;
        let p = e.path();
        if ft.is_dir() {
            walk(base, &p, out)?;
        } else if ft.is_file() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.ends_with(".ko") || n.ends_with(".ko.xz") || n.ends_with(".ko.zst") {
                if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_parses_and_normalizes() {
        let mi = parse_modinfo(b"license=GPL\0depends=virtio_ring,virtio-pci-modern-dev,\0name=virtio-pci\0alias=pci:v00001AF4d*\0\0\xff\0");
        assert_eq!(mi.name, "virtio_pci");
        assert_eq!(mi.depends, ["virtio_ring", "virtio_pci_modern_dev"]);
        assert_eq!(mi.aliases, ["pci:v00001AF4d*"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }

    struct FakeApt;
    impl PackageSource for FakeApt {
        fn show(&self, p: &str) -> Result<BTreeMap<String, String>, KernelError> {
            let t = match p {
                "linux-image-cloud-amd64" => "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n",
                "linux-image-6.1.0-56-cloud-amd64" => "Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.192-2\nDepends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n",
                _ => return Err(KernelError::Apt { command: format!("apt-cache show {p}"), detail: "E: No packages found".into() }),
            };
            Ok(deb::parse_control(t))
        }
        fn download(&self, _: &str, _: &str, _: &Path) -> Result<PathBuf, KernelError> {
            unreachable!()
        }
    }

    #[test]
    fn metapackage_resolves_to_versioned_image() {
        let (p, v) = resolve_kernel_package(&FakeApt, "linux-image-cloud-amd64").unwrap();
        assert_eq!(
            (p.as_str(), v.as_str()),
            ("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")
        );
        let e = resolve_kernel_package(&FakeApt, "linux-image-nope").unwrap_err();
        assert!(e.to_string().contains("No packages found"), "{e}");
    }

    #[test]
    fn package_arch_is_the_name_suffix() {
        assert_eq!(package_arch("linux-image-arm64"), Some("arm64"));
        assert_eq!(
            package_arch("linux-image-6.1.0-56-cloud-amd64"),
            Some("amd64")
        );
        assert_eq!(package_arch("systemd-boot-efi"), None);
        assert_eq!(package_arch("arm64"), None);
    }

    #[test]
    fn lock_roundtrip_and_missing_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LOCK_FILE);
        assert_eq!(Lock::read(&p).unwrap(), Lock::default());
        let l = Lock {
            kernel: Some(LockedPackage {
                requested: "linux-image-cloud-amd64".into(),
                package: "linux-image-6.1.0-56-cloud-amd64".into(),
                version: "6.1.192-2".into(),
                deb_sha256: "ab".repeat(32),
                vmlinuz_sha256: Some("cd".repeat(32)),
                release: Some("6.1.0-56-cloud-amd64".into()),
            }),
            firmware: None,
        };
        l.write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), l);
        fs::write(&p, "[kernel]\nbogus = 1\n").unwrap();
        assert!(matches!(Lock::read(&p), Err(KernelError::BadLock { .. })));
    }
}
