//! The apt package source: [`PackageSource`] and the system's apt
//! ([`AptGet`], with its own [`AptError`]), resolving a metapackage to the
//! versioned image package, the hint for a foreign architecture, and the
//! download cache (`fetch_deb`, `default_cache_dir`, private temporary
//! paths).

use super::KernelError;
use crate::deb;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the system's apt could not show or download a package. Each message
/// includes its cause.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// An apt command could not run or failed.
    #[error("`{command}` failed: {detail}; is this a Debian system with the package in its sources (apt-get update)?")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// The private download directory could not be made or read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AptError + '_ {
    move |error| AptError::Io {
        path: path.to_path_buf(),
        error,
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

fn run(cmd: &mut Command) -> Result<String, AptError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| AptError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(AptError::Command {
            command: line,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl AptGet {
    fn show(package: &str) -> Result<BTreeMap<String, String>, AptError> {
        let text = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
            .map_err(|e| match (e, foreign_arch_hint(package)) {
                (AptError::Command { command, detail }, Some(hint)) => AptError::Command {
                    command,
                    detail: format!("{detail} ({hint})"),
                },
                (e, _) => e,
            })?;
        Ok(deb::parse_control(&text))
    }

    fn download(package: &str, version: &str, dir: &Path) -> Result<PathBuf, AptError> {
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
        let src = found.ok_or_else(|| AptError::Command {
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

impl PackageSource for AptGet {
    fn show(&self, package: &str) -> Result<BTreeMap<String, String>, KernelError> {
        Ok(AptGet::show(package)?)
    }

    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, KernelError> {
        Ok(AptGet::download(package, version, dir)?)
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

/// The `.deb` of `package` at `version` in `debs` (the cache), downloaded
/// with `apt` when not there yet.
pub fn fetch_deb(
    apt: &dyn PackageSource,
    debs: &Path,
    package: &str,
    version: &str,
) -> Result<PathBuf, KernelError> {
    fs::create_dir_all(debs).map_err(super::io_err(debs))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeApt;
    impl PackageSource for FakeApt {
        fn show(&self, p: &str) -> Result<BTreeMap<String, String>, KernelError> {
            let t = match p {
                "linux-image-cloud-amd64" => "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n",
                "linux-image-6.1.0-56-cloud-amd64" => "Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.192-2\nDepends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n",
                _ => return Err(AptError::Command { command: format!("apt-cache show {p}"), detail: "E: No packages found".into() }.into()),
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
}
