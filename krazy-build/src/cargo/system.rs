//! Where the system programs (`krazy-init`, `krazy-dhcp`, `krazy-ntp`)
//! come from and how they are built: from this workspace in one cargo
//! invocation, or `cargo install`ed from the registry at krazy-build's
//! version, and where each goes in the root.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BuildSpec, Built, CargoError, Toolchain};

/// Where the system programs (`krazy-init`, `krazy-dhcp`, `krazy-ntp`) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPrograms {
    /// Built from this workspace (its root `Cargo.toml`).
    Workspace(PathBuf),
    /// Installed from the crates registry at this version (krazy-build's own).
    Registry(String),
}

/// The system programs and where each goes in the root file system.
pub const SYSTEM_BINS: [(&str, &str, &str); 3] = [
    ("krazy-init", "krazy-init", "krazy/init"),
    ("krazy-net", "krazy-dhcp", "krazy/dhcp"),
    ("krazy-net", "krazy-ntp", "krazy/ntp"),
];

/// How the system programs are compiled in release builds, whatever the
/// profile of the workspace or package they come from says: PID 1 stays
/// resident for the device's whole life, so it is built for size. One
/// optimised unit (fat LTO, one codegen unit, `opt-level = "s"`) halves
/// krazy-init (8.0 MB to 4.4 MB, static musl) and its resident memory
/// under `krazy-init supervise` drops from 4.9 to 3.4 MiB, mostly pages of
/// the binary that are no longer touched. The two crates that touch every
/// byte of an update stay at `opt-level = 3`: SHA-256 ran 4.4 times slower
/// at `"s"` (246 against 1,080 MiB/s, static musl on x86-64), and ring's C
/// fallbacks for CPUs without AES instructions (such as QEMU's default
/// CPU) halved the TLS upload into a VM (5.3 against 9.6 MB/s). Panics still
/// unwind, so a failing task is caught instead of taking PID 1 down.
pub const SYSTEM_PROFILE: [&str; 5] = [
    "profile.release.lto=\"fat\"",
    "profile.release.codegen-units=1",
    "profile.release.opt-level=\"s\"",
    "profile.release.package.sha2.opt-level=3",
    "profile.release.package.ring.opt-level=3",
];

impl SystemPrograms {
    /// The workspace when krazy-build was compiled from one that holds
    /// `krazy-init`, else the registry at krazy-build's version.
    pub fn locate() -> SystemPrograms {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self::locate_from(here)
    }

    /// [`SystemPrograms::locate`] for a given krazy-build source directory.
    pub fn locate_from(manifest_dir: &Path) -> SystemPrograms {
        if let Some(ws) = manifest_dir.parent() {
            if ws.join("krazy-init/Cargo.toml").is_file() && ws.join("Cargo.toml").is_file() {
                return SystemPrograms::Workspace(ws.join("Cargo.toml"));
            }
        }
        SystemPrograms::Registry(env!("CARGO_PKG_VERSION").to_string())
    }

    /// The workspace build of all three programs (one cargo invocation).
    pub fn workspace_spec(manifest: &Path) -> BuildSpec {
        BuildSpec {
            name: "krazy-system".into(),
            manifest: manifest.to_path_buf(),
            packages: vec!["krazy-init".into(), "krazy-net".into()],
            bins: SYSTEM_BINS.iter().map(|(_, b, _)| b.to_string()).collect(),
            config: SYSTEM_PROFILE.iter().map(|kv| kv.to_string()).collect(),
        }
    }

    /// The `cargo install` command that fetches the published programs into
    /// `root/bin` for the toolchain's target.
    pub fn install_command(version: &str, root: &Path, tc: &Toolchain) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["install", "--locked", "--root"]).arg(root);
        for kv in SYSTEM_PROFILE {
            c.arg("--config").arg(kv);
        }
        let target_dir = root.join("target");
        c.arg("--config")
            .arg(super::remap_config(&tc.triple, Path::new(""), &target_dir))
            .arg("--target-dir")
            .arg(&target_dir);
        c.args(["--target", &tc.triple])
            .arg(format!("krazy-init@{version}"))
            .arg(format!("krazy-net@{version}"));
        for (k, v) in &tc.env {
            c.env(k, v);
        }
        c
    }

    /// The system programs for the root, as `(destination, host path)`:
    /// taken from `built` (the workspace build, [`Self::workspace_spec`]),
    /// or installed from the registry into `cache_dir` first when missing.
    pub fn programs(
        &self,
        built: &[Built],
        tc: &Toolchain,
        cache_dir: &Path,
    ) -> Result<Vec<(String, PathBuf)>, CargoError> {
        let mut out = Vec::new();
        match self {
            SystemPrograms::Workspace(_) => {
                for (_, bin, dest) in SYSTEM_BINS {
                    if let Some(b) = built
                        .iter()
                        .find(|b| b.spec == "krazy-system" && b.bin == bin)
                    {
                        out.push((dest.to_string(), b.path.clone()));
                    }
                }
            }
            SystemPrograms::Registry(version) => {
                let root = cache_dir.join(format!("system-{version}-{}", tc.triple));
                let bin_dir = root.join("bin");
                if SYSTEM_BINS
                    .iter()
                    .any(|(_, b, _)| !bin_dir.join(b).is_file())
                {
                    let mut c = Self::install_command(version, &root, tc);
                    let o = c.output().map_err(|e| CargoError::Install {
                        command: format!("{c:?}"),
                        stderr: e.to_string(),
                    })?;
                    if !o.status.success() {
                        let s = String::from_utf8_lossy(&o.stderr);
                        let lines: Vec<&str> = s.lines().collect();
                        return Err(CargoError::Install {
                            command: format!("{c:?}"),
                            stderr: lines[lines.len().saturating_sub(30)..].join("\n"),
                        });
                    }
                }
                for (_, bin, dest) in SYSTEM_BINS {
                    out.push((dest.to_string(), bin_dir.join(bin)));
                }
            }
        }
        Ok(out)
    }
}
