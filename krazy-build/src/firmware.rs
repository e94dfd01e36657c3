//! Boot firmware: for `pc` the systemd-boot EFI binary (from a file or the
//! `systemd-boot-efi` package, pinned in `krazy.lock` like the kernel); for
//! `pi3` a directory of Raspberry Pi firmware files (`bootcode.bin`,
//! `start*.elf`, `fixup*.dat`), whose Pi 3 DTB comes from the kernel.

use crate::config::FirmwareSource;
use crate::kernel::{
    self, Kernel, KernelError, Lock, LockedPackage, PackageSource, ResolveOptions,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Where systemd-boot's EFI binary lives in Debian's `systemd-boot-efi`.
pub const SYSTEMD_BOOT_IN_DEB: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The Pi 3 device tree inside Debian's arm64 kernel's DTB directory.
pub const PI3_DTB: &str = "broadcom/bcm2837-rpi-3-b.dtb";

/// Why the firmware cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// Fetching, unpacking or pinning the package failed.
    #[error(transparent)]
    Package(#[from] KernelError),
    /// A required file is missing.
    #[error("{} is missing {what}; {hint}", path.display())]
    Missing {
        /// The file or directory searched.
        path: PathBuf,
        /// What is missing.
        what: String,
        /// What to do.
        hint: &'static str,
    },
    /// The file is not what it should be.
    #[error("{} is not {what}", path.display())]
    NotFirmware {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
}

/// The firmware files for a boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// pc: systemd-boot's EFI binary, installed as `EFI/BOOT/BOOTX64.EFI`.
    SystemdBoot {
        /// The binary.
        efi: PathBuf,
        /// Its package, when from one.
        package: Option<LockedPackage>,
    },
    /// pi3: firmware files by name (`bootcode.bin`, `start.elf`, …), sorted.
    RaspberryPi {
        /// `(file name, host path)` pairs.
        files: Vec<(String, PathBuf)>,
    },
}

/// Obtains the firmware for `source`, honouring and updating `lock.firmware`
/// for apt sources exactly as [`kernel::resolve_kernel`] does for kernels.
/// Returns the firmware and whether the lock changed.
pub fn resolve_firmware(
    source: &FirmwareSource,
    lock: &mut Lock,
    opts: &ResolveOptions,
    apt: &dyn PackageSource,
) -> Result<(Firmware, bool), FirmwareError> {
    match source {
        FirmwareSource::File(p) => {
            check_pe(p)?;
            Ok((
                Firmware::SystemdBoot {
                    efi: p.clone(),
                    package: None,
                },
                false,
            ))
        }
        FirmwareSource::Dir(d) => Ok((pi_dir(d)?, false)),
        FirmwareSource::Apt(name) => {
            let locked = lock
                .firmware
                .clone()
                .filter(|l| !opts.upgrade && &l.requested == name);
            let (package, version) = match &locked {
                Some(l) => (l.package.clone(), l.version.clone()),
                None => {
                    let f = apt.show(name)?;
                    let v = f.get("Version").cloned().ok_or(KernelError::AptField {
                        package: name.clone(),
                        field: "Version",
                    })?;
                    (name.clone(), v)
                }
            };
            let debp = kernel::fetch_deb(apt, &opts.cache_dir.join("debs"), &package, &version)?;
            let sha = kernel::sha256_file(&debp)?;
            if let Some(l) = &locked {
                if l.deb_sha256 != sha {
                    return Err(KernelError::LockMismatch {
                        what: format!("the .deb of {package} {version}"),
                        locked: l.deb_sha256.clone(),
                        found: sha,
                    }
                    .into());
                }
            }
            let dest = opts.cache_dir.join("firmware").join(&sha[..32]);
            let efi = dest.join(SYSTEMD_BOOT_IN_DEB);
            if !efi.is_file() {
                // Unpack privately and rename, so parallel builds never see half a file.
                let parent = opts.cache_dir.join("firmware");
                let tmp = kernel::unique_tmp(&parent, &sha[..8]);
                crate::deb::extract_to_dir(&debp, &tmp, |p| p == SYSTEMD_BOOT_IN_DEB)
                    .map_err(KernelError::from)?;
                if fs::rename(&tmp, &dest).is_err() {
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
            if !efi.is_file() {
                return Err(FirmwareError::Missing {
                    path: debp,
                    what: SYSTEMD_BOOT_IN_DEB.into(),
                    hint: "use the systemd-boot-efi package, or `[firmware] file = \"…/systemd-bootx64.efi\"`",
                });
            }
            check_pe(&efi)?;
            let entry = LockedPackage {
                requested: name.clone(),
                package,
                version,
                deb_sha256: sha,
                vmlinuz_sha256: None,
                release: None,
            };
            let changed = lock.firmware.as_ref() != Some(&entry);
            lock.firmware = Some(entry.clone());
            Ok((
                Firmware::SystemdBoot {
                    efi,
                    package: Some(entry),
                },
                changed,
            ))
        }
    }
}

/// Checks that `p` is a PE/EFI image (starts with `MZ`).
fn check_pe(p: &Path) -> Result<(), FirmwareError> {
    let mut head = [0u8; 2];
    let ok = fs::File::open(p)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok();
    if !ok {
        return Err(FirmwareError::Missing {
            path: p.to_path_buf(),
            what: "a readable EFI binary".into(),
            hint: "check `[firmware] file` in krazy.toml (Debian: /usr/lib/systemd/boot/efi/systemd-bootx64.efi from systemd-boot-efi)",
        });
    }
    if &head != b"MZ" {
        return Err(FirmwareError::NotFirmware {
            path: p.to_path_buf(),
            what: "an EFI (PE) binary",
        });
    }
    Ok(())
}

/// Collects a Raspberry Pi firmware directory: `bootcode.bin` plus at least
/// one `start*.elf` and `fixup*.dat` (all such files are taken).
pub fn pi_dir(dir: &Path) -> Result<Firmware, FirmwareError> {
    let hint = "put the Raspberry Pi firmware (Debian's raspi-firmware, or github.com/raspberrypi/firmware boot/) there";
    let entries = fs::read_dir(dir).map_err(|_| FirmwareError::Missing {
        path: dir.to_path_buf(),
        what: "(the directory itself)".into(),
        hint,
    })?;
    let mut files = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let take = name == "bootcode.bin"
            || (name.starts_with("start") && name.ends_with(".elf"))
            || (name.starts_with("fixup") && name.ends_with(".dat"));
        if take && e.path().is_file() {
            files.push((name, e.path()));
        }
    }
    files.sort();
    for (what, test) in [
        (
            "bootcode.bin",
            &(|n: &str| n == "bootcode.bin") as &dyn Fn(&str) -> bool,
        ),
        ("start*.elf", &|n: &str| n.ends_with(".elf")),
        ("fixup*.dat", &|n: &str| n.ends_with(".dat")),
    ] {
        if !files.iter().any(|(n, _)| test(n)) {
            return Err(FirmwareError::Missing {
                path: dir.to_path_buf(),
                what: what.into(),
                hint,
            });
        }
    }
    Ok(Firmware::RaspberryPi { files })
}

/// The Pi 3 DTB from an arm64 kernel (`broadcom/bcm2837-rpi-3-b.dtb`).
pub fn pi3_dtb(k: &Kernel) -> Result<PathBuf, FirmwareError> {
    let missing = |path: PathBuf| FirmwareError::Missing {
        path,
        what: PI3_DTB.into(),
        hint: "use Debian's arm64 kernel (linux-image-arm64), which ships it",
    };
    let dir = k
        .dtbs_dir
        .clone()
        .ok_or_else(|| missing(k.vmlinuz.clone()))?;
    let p = dir.join(PI3_DTB);
    if p.is_file() {
        Ok(p)
    } else {
        Err(missing(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_dir_needs_all_three_kinds() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("bootcode.bin"), b"b").unwrap();
        fs::write(d.path().join("start.elf"), b"s").unwrap();
        let e = pi_dir(d.path()).unwrap_err();
        assert!(e.to_string().contains("fixup*.dat"), "{e}");
        fs::write(d.path().join("fixup.dat"), b"f").unwrap();
        fs::write(d.path().join("start_cd.elf"), b"s").unwrap();
        fs::write(d.path().join("README"), b"r").unwrap();
        let Firmware::RaspberryPi { files } = pi_dir(d.path()).unwrap() else {
            panic!()
        };
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["bootcode.bin", "fixup.dat", "start.elf", "start_cd.elf"]
        );
    }

    #[test]
    fn efi_file_must_be_pe() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.efi");
        fs::write(&p, b"ELF").unwrap();
        let mut lock = Lock::default();
        let opts = ResolveOptions {
            cache_dir: d.path().into(),
            upgrade: false,
        };
        let e = resolve_firmware(
            &FirmwareSource::File(p.clone()),
            &mut lock,
            &opts,
            &kernel::AptGet,
        )
        .unwrap_err();
        assert!(matches!(e, FirmwareError::NotFirmware { .. }), "{e}");
        fs::write(&p, b"MZ\x90\0").unwrap();
        resolve_firmware(&FirmwareSource::File(p), &mut lock, &opts, &kernel::AptGet).unwrap();
    }
}
