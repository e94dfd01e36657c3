//! Building user packages and the krazy system programs as static binaries
//! for the image's target, with cargo, in parallel, with progress.
//!
//! Toolchain choice ([`Toolchain::detect`]):
//! - the musl target (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`)
//!   when its standard library is installed (`rustup target add …`). Crates
//!   with C inside need a C compiler for it: `CC_x86_64_unknown_linux_musl=musl-gcc`
//!   is set when `musl-gcc` exists (Debian: `musl-tools`), and
//!   `CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc` when that exists
//!   (`gcc-aarch64-linux-gnu`; without it only pure-Rust crates build).
//!   aarch64 always links with `rust-lld` (the host's `cc` cannot).
//!   Variables already set are kept.
//! - otherwise the fallback: the gnu target with `-C target-feature=+crt-static`,
//!   always with an explicit `--target` (so proc-macros still build for the
//!   host), which yields static-pie binaries. It needs the gnu target's
//!   standard library (the host's, on x86-64).
//!
//! cargo runs in each package's directory, so the package's own
//! `.cargo/config.toml` applies (see [`build_command`]).
//!
//! Each build gets its own target directory (so builds run in parallel and
//! never wait on, or deadlock with, an outer cargo holding the workspace's
//! lock, as in a `build.rs`). Executables are found by parsing
//! `cargo build --message-format=json-render-diagnostics`.
//!
//! System programs ([`SystemPrograms::locate`]): when krazy-build is compiled
//! from this workspace (its `CARGO_MANIFEST_DIR`'s parent holds
//! `krazy-init/Cargo.toml`), `krazy-init`, `krazy-dhcp` and `krazy-ntp` are
//! built from the workspace; otherwise `cargo install --locked --root CACHE
//! --target TRIPLE krazy-init@VERSION krazy-net@VERSION` fetches the
//! published crates of the same version as krazy-build from the registry.

use crate::elf::Arch;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod system;
pub use system::{SystemPrograms, SYSTEM_BINS, SYSTEM_PROFILE};

/// Why a build failed. Each variant names the package.
#[derive(Debug, thiserror::Error)]
pub enum CargoError {
    /// cargo could not be started.
    #[error("cannot run cargo for {name}: {source}; is cargo on PATH (or $CARGO set)?")]
    Spawn {
        /// The build's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// cargo reported a failure.
    #[error("building {name} ({manifest}) for {triple} failed:\n{stderr}", manifest = manifest.display())]
    Failed {
        /// The build's name.
        name: String,
        /// Its manifest.
        manifest: PathBuf,
        /// The target triple.
        triple: String,
        /// The end of cargo's error output.
        stderr: String,
    },
    /// The package has no binary target of that name.
    #[error("{name}: package {} has no binary {bin:?} (it has: {found}); fix `bin` in krazy.toml", manifest.display())]
    NoSuchBin {
        /// The build's name.
        name: String,
        /// Its manifest.
        manifest: PathBuf,
        /// The binary asked for.
        bin: String,
        /// The binaries built.
        found: String,
    },
    /// The package has several binaries and none was chosen.
    #[error("{name}: package {} has several binaries ({found}); choose one with `bin = \"…\"` in krazy.toml", manifest.display())]
    SeveralBins {
        /// The build's name.
        name: String,
        /// Its manifest.
        manifest: PathBuf,
        /// The binaries built.
        found: String,
    },
    /// Neither the musl target nor a usable fallback is installed.
    #[error("no Rust standard library for {arch} static binaries: run `rustup target add {musl}`", arch = arch.name(), musl = arch.musl_target())]
    NoTarget {
        /// The architecture.
        arch: Arch,
    },
    /// A build thread panicked.
    #[error("the build thread for {name} panicked")]
    Panicked {
        /// The build's name.
        name: String,
    },
    /// Installing the published system programs failed.
    #[error("`{command}` failed:\n{stderr}")]
    Install {
        /// The command.
        command: String,
        /// Its error output's tail.
        stderr: String,
    },
}

fn gnu_triple(a: Arch) -> &'static str {
    match a {
        Arch::X86_64 => "x86_64-unknown-linux-gnu",
        Arch::Aarch64 => "aarch64-unknown-linux-gnu",
    }
}

/// How binaries for one architecture are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// The architecture.
    pub arch: Arch,
    /// The `--target` triple.
    pub triple: String,
    /// Environment for cargo (C compilers, linker, rustflags).
    pub env: Vec<(String, String)>,
    /// Whether this is the gnu `+crt-static` fallback.
    pub fallback: bool,
}

/// Whether the standard library for `triple` is installed in rustc's sysroot.
pub fn target_installed(triple: &str) -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
}

/// Whether `prog` is an executable on PATH.
fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(prog);
            p.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

impl Toolchain {
    /// Picks the musl target when installed, else the documented gnu
    /// `+crt-static` fallback; see the module documentation.
    pub fn detect(arch: Arch) -> Result<Toolchain, CargoError> {
        let musl = arch.musl_target();
        let env_key = |t: &str| t.replace('-', "_");
        let set_if_unset = |env: &mut Vec<(String, String)>, k: String, v: &str| {
            if std::env::var_os(&k).is_none() {
                env.push((k, v.to_string()));
            }
        };
        if target_installed(musl) {
            let mut env = Vec::new();
            match arch {
                Arch::X86_64 => {
                    if on_path("musl-gcc") {
                        set_if_unset(&mut env, format!("CC_{}", env_key(musl)), "musl-gcc");
                    }
                }
                Arch::Aarch64 => {
                    // The host's `cc` cannot link aarch64 objects; rust-lld
                    // links the musl target's self-contained objects, and
                    // C objects from the cross compiler too.
                    set_if_unset(
                        &mut env,
                        format!("CARGO_TARGET_{}_LINKER", env_key(musl).to_uppercase()),
                        "rust-lld",
                    );
                    if on_path("aarch64-linux-gnu-gcc") {
                        set_if_unset(
                            &mut env,
                            format!("CC_{}", env_key(musl)),
                            "aarch64-linux-gnu-gcc",
                        );
                    }
                }
            }
            return Ok(Toolchain {
                arch,
                triple: musl.to_string(),
                env,
                fallback: false,
            });
        }
        let gnu = gnu_triple(arch);
        if target_installed(gnu) {
            let key = env_key(gnu).to_uppercase();
            let mut env = vec![(
                format!("CARGO_TARGET_{key}_RUSTFLAGS"),
                "-C target-feature=+crt-static".to_string(),
            )];
            if arch == Arch::Aarch64 && on_path("aarch64-linux-gnu-gcc") {
                set_if_unset(
                    &mut env,
                    format!("CARGO_TARGET_{key}_LINKER"),
                    "aarch64-linux-gnu-gcc",
                );
            }
            return Ok(Toolchain {
                arch,
                triple: gnu.to_string(),
                env,
                fallback: true,
            });
        }
        Err(CargoError::NoTarget { arch })
    }
}

/// One cargo invocation: a package (or workspace packages) and the binaries
/// wanted from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// A name for messages and the target directory (the service name).
    pub name: String,
    /// The `Cargo.toml` to build.
    pub manifest: PathBuf,
    /// `-p` packages (for workspaces); empty builds the manifest's package.
    pub packages: Vec<String>,
    /// The binaries wanted; empty means "the only binary".
    pub bins: Vec<String>,
    /// Settings passed as `cargo --config KEY=VALUE` (they override the
    /// manifest's profiles), e.g. [`SYSTEM_PROFILE`] for the system programs.
    pub config: Vec<String>,
}

impl BuildSpec {
    /// A user package from krazy.toml: its directory and optional `bin`.
    pub fn package(name: &str, dir: &Path, bin: Option<&str>) -> BuildSpec {
        BuildSpec {
            name: name.to_string(),
            manifest: dir.join("Cargo.toml"),
            packages: Vec::new(),
            bins: bin.map(|b| vec![b.to_string()]).unwrap_or_default(),
            config: Vec::new(),
        }
    }
}

/// Options for [`build_all`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Parent of the per-build target directories.
    pub target_dir: PathBuf,
    /// Build with `--release` (the default for images).
    pub release: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Pass `--locked` (use the packages' Cargo.lock exactly).
    pub locked: bool,
}

/// A built executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The build's name.
    pub spec: String,
    /// The binary target's name.
    pub bin: String,
    /// The executable.
    pub path: PathBuf,
}

/// Builds every spec in parallel (one cargo each, own target directory) and
/// returns the executables in spec order, then binary order.
pub fn build_all(
    specs: &[BuildSpec],
    tc: &Toolchain,
    opts: &BuildOptions,
) -> Result<Vec<Built>, CargoError> {
    let mp = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let results: Vec<Result<Vec<Built>, CargoError>> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| {
                let pb = mp.add(ProgressBar::new_spinner());
                pb.set_style(style.clone());
                pb.set_prefix(spec.name.clone());
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                let h = s.spawn(move || {
                    let r = build_one(spec, tc, opts, &pb);
                    match &r {
                        Ok(b) => pb.finish_with_message(format!("built {}", b.len())),
                        Err(_) => pb.abandon_with_message("failed"),
                    }
                    r
                });
                (spec.name.clone(), h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| h.join().unwrap_or(Err(CargoError::Panicked { name })))
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The cargo command for one spec (exposed for `--verbose` output and tests).
///
/// It runs in the package's directory, because cargo reads configuration
/// (`.cargo/config.toml`: rustflags, linkers, registries) from the current
/// directory and its parents, not from the manifest's: a package's own
/// settings apply as they do to `cargo build` run inside it. Paths are made
/// absolute first so a relative manifest or target directory still works.
pub fn build_command(spec: &BuildSpec, tc: &Toolchain, opts: &BuildOptions) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let manifest = abs(&spec.manifest);
    let mut c = Command::new(cargo);
    if let Some(dir) = manifest.parent().filter(|d| d.is_dir()) {
        c.current_dir(dir);
    }
    c.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--target", &tc.triple])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--target-dir")
        .arg(abs(&opts.target_dir.join(&spec.name)));
    if opts.release {
        c.arg("--release");
        // Debug info is dead weight on a device (a 38 MB krazy-init is 4 MB
        // without it) and slows every boot that reads it; symbols stay for
        // backtraces. Set CARGO_PROFILE_RELEASE_STRIP to choose otherwise.
        if std::env::var_os("CARGO_PROFILE_RELEASE_STRIP").is_none() {
            c.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        }
    }
    if opts.locked {
        c.arg("--locked");
    }
    for kv in &spec.config {
        c.arg("--config").arg(kv);
    }
    for p in &spec.packages {
        c.args(["-p", p]);
    }
    for b in &spec.bins {
        c.args(["--bin", b]);
    }
    c.arg("--config")
        .arg(remap_config(&tc.triple, &manifest, &opts.target_dir));
    // An outer cargo (build.rs, cargo test, cargo clippy, whose wrapper and
    // lint flags would otherwise lint the system programs) must not leak
    // its settings into ours; our target-specific variables come after.
    for k in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
    ] {
        c.env_remove(k);
    }
    for (k, v) in &tc.env {
        c.env(k, v);
    }
    c
}

/// The `--config` that makes the machine's paths leave no trace in the
/// binaries (panic locations, `file!()`): the package's directory becomes
/// `/krazy/src`, cargo's home `/krazy/cargo` and the target directory
/// `/krazy/target`, so two checkouts in different places give the same
/// bytes. As `target.<triple>.rustflags`, which cargo joins with the
/// rustflags of the package's own config files instead of replacing them.
/// rustc applies the last matching prefix, so the more specific come later.
/// Paths are made absolute and lexically normalised (`a/../b` is `b`), as
/// cargo does with `--manifest-path`: a config's `path = "../hello"` and an
/// absolute path to the same package give the same flags, so two builds of
/// it neither leak the machine's path nor rebuild each other's binaries in
/// a shared target directory.
pub fn remap_config(triple: &str, manifest: &Path, target_dir: &Path) -> String {
    let abs = |p: &Path| normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut pairs = Vec::new();
    if let Some(dir) = manifest.parent() {
        pairs.push((abs(dir), "/krazy/src"));
    }
    if let Some(home) = cargo_home {
        pairs.push((abs(&home), "/krazy/cargo"));
    }
    pairs.push((abs(target_dir), "/krazy/target"));
    let flags: Vec<String> = pairs
        .iter()
        .map(|(from, to)| {
            let flag = format!("--remap-path-prefix={}={to}", from.display());
            toml::Value::String(flag).to_string()
        })
        .collect();
    format!("target.{triple}.rustflags=[{}]", flags.join(", "))
}

/// `p` without `.` and with each `..` taking away the component before it.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn build_one(
    spec: &BuildSpec,
    tc: &Toolchain,
    opts: &BuildOptions,
    pb: &ProgressBar,
) -> Result<Vec<Built>, CargoError> {
    let mut cmd = build_command(spec, tc, opts);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CargoError::Spawn {
        name: spec.name.clone(),
        source,
    })?;
    // Drain stderr on a thread, keeping its tail for the error message.
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut bins: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut n = 0usize;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            n += 1;
            let target = &msg["target"];
            let tname = target["name"].as_str().unwrap_or("");
            pb.set_message(format!("compiled {tname} ({n} crates)"));
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == "bin"));
            if let (true, Some(exe)) = (is_bin, msg["executable"].as_str()) {
                bins.insert(tname.to_string(), PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().map_err(|source| CargoError::Spawn {
        name: spec.name.clone(),
        source,
    })?;
    let stderr = err_thread.join().unwrap_or_default();
    if !status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Err(CargoError::Failed {
            name: spec.name.clone(),
            manifest: spec.manifest.clone(),
            triple: tc.triple.clone(),
            stderr: tail,
        });
    }
    let found = || bins.keys().cloned().collect::<Vec<_>>().join(", ");
    if spec.bins.is_empty() {
        return match bins.len() {
            1 => Ok(bins
                .iter()
                .map(|(b, p)| Built {
                    spec: spec.name.clone(),
                    bin: b.clone(),
                    path: p.clone(),
                })
                .collect()),
            0 => Err(CargoError::NoSuchBin {
                name: spec.name.clone(),
                manifest: spec.manifest.clone(),
                bin: spec.name.clone(),
                found: "none".into(),
            }),
            _ => Err(CargoError::SeveralBins {
                name: spec.name.clone(),
                manifest: spec.manifest.clone(),
                found: found(),
            }),
        };
    }
    spec.bins
        .iter()
        .map(|b| {
            bins.get(b)
                .map(|p| Built {
                    spec: spec.name.clone(),
                    bin: b.clone(),
                    path: p.clone(),
                })
                .ok_or_else(|| CargoError::NoSuchBin {
                    name: spec.name.clone(),
                    manifest: spec.manifest.clone(),
                    bin: b.clone(),
                    found: found(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_cargo_settings_do_not_leak_into_the_build() {
        let tc = Toolchain {
            arch: Arch::Aarch64,
            triple: "aarch64-unknown-linux-musl".into(),
            env: vec![("CC_aarch64_unknown_linux_musl".into(), "cc-x".into())],
            fallback: false,
        };
        let spec = BuildSpec::package("hello", Path::new("/src/hello"), Some("hello"));
        let c = build_command(
            &spec,
            &tc,
            &BuildOptions {
                target_dir: "/t".into(),
                release: true,
                progress: false,
                locked: false,
            },
        );
        let envs: BTreeMap<String, Option<String>> = c
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        for k in [
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_MAKEFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CLIPPY_ARGS",
        ] {
            assert_eq!(envs.get(k), Some(&None), "{k} is not removed");
        }
        assert_eq!(
            envs.get("CC_aarch64_unknown_linux_musl"),
            Some(&Some("cc-x".to_string()))
        );
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--target-dir", "/t/hello"]),
            "{args:?}"
        );
        // The one --config of a user build is the path remapping.
        let configs: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "--config")
            .map(|w| &w[1])
            .collect();
        assert_eq!(configs.len(), 1, "{args:?}");
        assert!(configs[0].contains("remap-path-prefix"), "{args:?}");
    }

    #[test]
    fn paths_of_the_machine_are_remapped_most_specific_last() {
        let c = remap_config(
            "x86_64-unknown-linux-musl",
            Path::new("/home/u/app/Cargo.toml"),
            Path::new("/home/u/app/target"),
        );
        let v: toml::Table = toml::from_str(&c).unwrap();
        let flags = v["target"]["x86_64-unknown-linux-musl"]["rustflags"]
            .as_array()
            .unwrap();
        let flags: Vec<&str> = flags.iter().map(|f| f.as_str().unwrap()).collect();
        assert_eq!(
            flags.first(),
            Some(&"--remap-path-prefix=/home/u/app=/krazy/src")
        );
        assert_eq!(
            flags.last(),
            Some(&"--remap-path-prefix=/home/u/app/target=/krazy/target")
        );
        assert!(
            flags.iter().any(|f| f.ends_with("=/krazy/cargo")),
            "{flags:?}"
        );
    }

    #[test]
    fn a_relative_package_path_gives_the_flags_of_its_absolute_path() {
        let via = remap_config(
            "x86_64-unknown-linux-musl",
            Path::new("/home/u/inst/./../hello/Cargo.toml"),
            Path::new("/home/u/inst/../target"),
        );
        let direct = remap_config(
            "x86_64-unknown-linux-musl",
            Path::new("/home/u/hello/Cargo.toml"),
            Path::new("/home/u/target"),
        );
        assert_eq!(via, direct);
        assert!(via.contains("=/home/u/hello=/krazy/src"), "{via}");
    }

    #[test]
    fn system_programs_are_built_for_size_and_user_programs_as_their_profile_says() {
        let tc = Toolchain {
            arch: Arch::X86_64,
            triple: "x86_64-unknown-linux-musl".into(),
            env: Vec::new(),
            fallback: false,
        };
        let opts = BuildOptions {
            target_dir: "/t".into(),
            release: true,
            progress: false,
            locked: true,
        };
        let configs = |c: &Command| -> Vec<String> {
            let args: Vec<String> = c
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            args.windows(2)
                .filter(|w| w[0] == "--config")
                .map(|w| w[1].clone())
                .collect()
        };
        let remap = |c: &Command| -> Vec<String> {
            configs(c)
                .into_iter()
                .filter(|kv| !kv.contains("remap-path-prefix"))
                .collect()
        };
        let system = SystemPrograms::workspace_spec(Path::new("/ws/Cargo.toml"));
        assert_eq!(remap(&build_command(&system, &tc, &opts)), SYSTEM_PROFILE);
        let user = BuildSpec::package("hello", Path::new("/src/hello"), None);
        assert!(remap(&build_command(&user, &tc, &opts)).is_empty());
    }
}
