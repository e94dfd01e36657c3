//! A [`Kernel`] found in an unpacked tree (`boot/vmlinuz-VER` with its
//! modules and device trees, or a plain `vmlinuz`) or in a `.deb` unpacked
//! into the cache.

use super::{io_err, sha256_file, unique_tmp, KernelError, LockedPackage};
use crate::deb;
use std::fs;
use std::path::{Path, PathBuf};

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

    pub(super) fn from_deb_with_hash(
        debp: &Path,
        sha: &str,
        cache: &Path,
    ) -> Result<Kernel, KernelError> {
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
