//! Kernels: where they come from (a directory, a `.deb`, or an apt package
//! fetched into a cache), the `krazy.lock` that pins them, and the module
//! dependency closure that stage 1 loads.
//!
//! Debian's kernel packages ship no `modules.dep`; every `.ko` carries a
//! `.modinfo` section of NUL-separated `key=value` strings, whose `name=` and
//! `depends=` entries give the module graph. [`ModuleIndex::scan`] reads them
//! all, [`ModuleIndex::closure`] returns the modules a request needs with
//! every dependency before its users: the order stage 1 loads them in.
//!
//! This file holds [`KernelError`] and [`resolve_kernel`], which ties the
//! pieces together; `tree.rs` finds a [`Kernel`] in a directory or `.deb`,
//! `lock.rs` is `krazy.lock`, `apt.rs` the apt package source and the
//! download cache, `modules.rs` the module index and closure.

mod apt;
mod lock;
mod modules;
mod tree;

pub(crate) use apt::unique_tmp;
pub use apt::{
    default_cache_dir, fetch_deb, package_arch, resolve_kernel_package, AptError, AptGet,
    PackageSource,
};
pub use lock::{sha256_file, Lock, LockedPackage, LOCK_FILE};
pub use modules::{
    normalize_module_name, parse_modinfo, read_module, ModInfo, Module, ModuleIndex, ModuleRequest,
};
pub use tree::Kernel;

use crate::config::KernelSource;
use crate::deb::{self, DebError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a kernel could not be found, fetched, pinned or its modules resolved.
/// Each message includes its cause (the `error` fields); only the wrapped
/// [`DebError`] and [`AptError`] are passed through, as they are.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Reading a file or directory failed.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
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
    /// The system's apt could not show or download a package.
    #[error(transparent)]
    Apt(#[from] AptError),
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
    #[error("{} is damaged: {error}; delete it and build again to re-resolve", path.display())]
    BadLock {
        /// The lock file.
        path: PathBuf,
        /// toml's error.
        error: Box<toml::de::Error>,
    },
    /// Writing the lock file failed.
    #[error("cannot write {}: {error}", path.display())]
    WriteLock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |error| KernelError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Options for [`resolve_kernel`].
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Where downloaded `.deb`s and unpacked kernels are kept.
    pub cache_dir: PathBuf,
    /// `krazy lock --upgrade`: resolve afresh and move the lock.
    pub upgrade: bool,
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
