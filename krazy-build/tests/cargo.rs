//! Real cargo builds: examples/hello for the musl target, checked static by
//! the elf module and run; a package with two binaries; a package that does
//! not compile; a dynamic build caught by the ELF check.

mod common;

use krazy_build::cargo::{
    build_all, BuildOptions, BuildSpec, CargoError, SystemPrograms, Toolchain,
};
use krazy_build::elf::{check_static, Arch, ElfError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn opts(dir: &Path) -> BuildOptions {
    BuildOptions {
        target_dir: dir.to_path_buf(),
        release: false,
        progress: false,
        locked: false,
    }
}

fn temp_package(dir: &Path, name: &str, bins: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.join("src/bin")).unwrap();
    fs::write(
        p.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"),
    )
    .unwrap();
    for (b, src) in bins {
        fs::write(p.join(format!("src/bin/{b}.rs")), src).unwrap();
    }
    p
}

#[test]
fn hello_builds_static_for_musl_in_parallel_with_another_package() {
    let tc = Toolchain::detect(Arch::X86_64).unwrap();
    let t = tempfile::tempdir().unwrap();
    let two = temp_package(
        t.path(),
        "two",
        &[
            ("a", "fn main() {}\n"),
            ("b", "fn main() { std::process::exit(3) }\n"),
        ],
    );
    let specs = [
        BuildSpec::package("hello", &workspace().join("examples/hello"), None),
        BuildSpec::package("two", &two, Some("b")),
    ];
    let built = build_all(&specs, &tc, &opts(&t.path().join("target"))).unwrap();
    assert_eq!(built.len(), 2);
    assert_eq!(
        (built[0].spec.as_str(), built[0].bin.as_str()),
        ("hello", "hello")
    );
    assert!(
        built[0].path.starts_with(t.path().join("target/hello")),
        "{:?}",
        built[0].path
    );
    assert!(built[0].path.to_string_lossy().contains(&tc.triple));
    for b in &built {
        let info = check_static(&b.path, Arch::X86_64).unwrap();
        assert_eq!(info.arch, Arch::X86_64);
    }
    // They run: hello fails at once on request; two's b exits 3.
    let st = Command::new(&built[0].path)
        .env("HELLO_FAIL", "1")
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    assert_eq!(
        Command::new(&built[1].path).status().unwrap().code(),
        Some(3)
    );
}

#[test]
fn several_bins_missing_bin_and_compile_errors_are_clear() {
    let tc = Toolchain::detect(Arch::X86_64).unwrap();
    let t = tempfile::tempdir().unwrap();
    let two = temp_package(
        t.path(),
        "two",
        &[("a", "fn main() {}\n"), ("b", "fn main() {}\n")],
    );
    let e = build_all(
        &[BuildSpec::package("two", &two, None)],
        &tc,
        &opts(&t.path().join("t")),
    )
    .unwrap_err();
    assert!(matches!(e, CargoError::SeveralBins { .. }), "{e}");
    assert!(
        e.to_string().contains("a, b") && e.to_string().contains("bin ="),
        "{e}"
    );

    let e = build_all(
        &[BuildSpec::package("two", &two, Some("c"))],
        &tc,
        &opts(&t.path().join("t")),
    )
    .unwrap_err();
    // cargo itself refuses an unknown --bin; either way the message names it.
    let msg = e.to_string();
    assert!(
        msg.contains("no binary \"c\"") || msg.contains("no bin target named `c`"),
        "{msg}"
    );

    let bad = temp_package(
        t.path(),
        "bad",
        &[("bad", "fn main() { let x: u32 = \"no\"; }\n")],
    );
    let e = build_all(
        &[BuildSpec::package("bad", &bad, None)],
        &tc,
        &opts(&t.path().join("t")),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CargoError::Failed { .. }), "{msg}");
    assert!(
        msg.contains("mismatched types") && msg.contains(&tc.triple),
        "{msg}"
    );
}

#[test]
fn a_dynamic_gnu_build_is_caught_by_the_elf_check() {
    let t = tempfile::tempdir().unwrap();
    let p = temp_package(t.path(), "dyn", &[("dyn", "fn main() {}\n")]);
    // The gnu target without +crt-static: what a user gets by mistake.
    let tc = Toolchain {
        arch: Arch::X86_64,
        triple: "x86_64-unknown-linux-gnu".into(),
        env: vec![],
        fallback: true,
    };
    let b = build_all(
        &[BuildSpec::package("dyn", &p, None)],
        &tc,
        &opts(&t.path().join("t")),
    )
    .unwrap();
    let e = check_static(&b[0].path, Arch::X86_64).unwrap_err();
    assert!(matches!(e, ElfError::Dynamic { .. }), "{e}");
    assert!(e.to_string().contains("libc.so.6"), "{e}");

    // The documented fallback (+crt-static, explicit --target) is static.
    let tc = Toolchain {
        env: vec![(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS".into(),
            "-C target-feature=+crt-static".into(),
        )],
        ..tc
    };
    let b = build_all(
        &[BuildSpec::package("dyn", &p, None)],
        &tc,
        &opts(&t.path().join("t2")),
    )
    .unwrap();
    check_static(&b[0].path, Arch::X86_64).unwrap();
}

#[test]
fn system_programs_come_from_the_workspace_or_the_registry() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    fs::create_dir_all(ws.join("krazy-build")).unwrap();
    assert_eq!(
        SystemPrograms::locate_from(&ws.join("krazy-build")),
        SystemPrograms::Registry(env!("CARGO_PKG_VERSION").into())
    );
    fs::create_dir_all(ws.join("krazy-init")).unwrap();
    fs::write(ws.join("krazy-init/Cargo.toml"), "").unwrap();
    fs::write(ws.join("Cargo.toml"), "").unwrap();
    assert_eq!(
        SystemPrograms::locate_from(&ws.join("krazy-build")),
        SystemPrograms::Workspace(ws.join("Cargo.toml"))
    );
    let spec = SystemPrograms::workspace_spec(&ws.join("Cargo.toml"));
    assert_eq!(spec.bins, ["krazy-init", "krazy-dhcp", "krazy-ntp"]);
    let tc = Toolchain {
        arch: Arch::X86_64,
        triple: "x86_64-unknown-linux-musl".into(),
        env: vec![],
        fallback: false,
    };
    let c = SystemPrograms::install_command("0.1.0", Path::new("/cache/sys"), &tc);
    let args: Vec<_> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut want: Vec<String> = ["install", "--locked", "--root", "/cache/sys"]
        .map(String::from)
        .into();
    for kv in krazy_build::cargo::SYSTEM_PROFILE {
        want.extend(["--config".to_string(), kv.to_string()]);
    }
    assert_eq!(
        args[..want.len()],
        want,
        "the system programs are installed with their size profile"
    );
    // Then the path remapping (reproducible across machines), into a target
    // directory under the root so the remapped prefix is known.
    let rest = &args[want.len()..];
    assert_eq!(rest[0], "--config");
    assert!(
        rest[1].starts_with("target.x86_64-unknown-linux-musl.rustflags=[")
            && rest[1].contains("--remap-path-prefix=/cache/sys/target=/krazy/target"),
        "{rest:?}"
    );
    assert_eq!(
        rest[2..],
        [
            "--target-dir",
            "/cache/sys/target",
            "--target",
            "x86_64-unknown-linux-musl",
            "krazy-init@0.1.0",
            "krazy-net@0.1.0"
        ]
    );
}

#[test]
fn aarch64_hello_when_the_target_is_installed() {
    let Ok(tc) = Toolchain::detect(Arch::Aarch64) else {
        common::skip("`rustup target add aarch64-unknown-linux-musl` to run it");
        return;
    };
    if tc.fallback {
        eprintln!("skipped: only the aarch64 gnu fallback is installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = build_all(
        &[BuildSpec::package(
            "hello",
            &workspace().join("examples/hello"),
            None,
        )],
        &tc,
        &opts(t.path()),
    )
    .unwrap();
    check_static(&b[0].path, Arch::Aarch64).unwrap();
    assert!(matches!(
        check_static(&b[0].path, Arch::X86_64),
        Err(ElfError::WrongArch { .. })
    ));
}
