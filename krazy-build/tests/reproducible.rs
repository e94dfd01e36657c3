//! The build machine's paths leave no trace in the programs: one program
//! built from two checkouts in different places, with two different cargo
//! homes and target directories, is byte-identical (krazy-build's cargo
//! builds pass `--remap-path-prefix` for the package, cargo's home and the
//! target directory). The program depends on a registry crate, so its
//! binary would otherwise name the cargo home in panic locations.
//!
//! One test in this file: it sets `CARGO_HOME` for the process.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use krazy_build::cargo::{build_all, BuildOptions, BuildSpec, Toolchain};
use krazy_build::config::Arch;

const MANIFEST: &str = r#"[package]
name = "repro-app"
version = "0.1.0"
edition = "2021"

[dependencies]
serde_json = "1"

[workspace]
"#;

const MAIN: &str = r#"fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&arg).expect("a JSON argument");
    println!("{}", v["a"].as_u64().expect("a number at a"));
}
"#;

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"))
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the program in `root` (its checkout, cargo home and target
/// directory all inside) and returns the binary's bytes.
fn build_in(root: &Path, tc: &Toolchain, registry: &Path) -> Vec<u8> {
    let app = root.join("checkout/app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(app.join("Cargo.toml"), MANIFEST).unwrap();
    std::fs::write(app.join("src/main.rs"), MAIN).unwrap();
    let home = root.join("cargo-home");
    std::fs::create_dir_all(&home).unwrap();
    run(Command::new("cp").arg("-a").arg(registry).arg(&home));
    std::env::set_var("CARGO_HOME", &home);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["generate-lockfile", "--offline", "--manifest-path"])
        .arg(app.join("Cargo.toml")));
    let built = build_all(
        &[BuildSpec::package("app", &app, None)],
        tc,
        &BuildOptions {
            target_dir: root.join("target"),
            release: true,
            progress: false,
            locked: true,
        },
    )
    .unwrap();
    std::fs::read(&built[0].path).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_program_built_from_two_checkouts_and_cargo_homes_is_byte_identical() {
    let Ok(tc) = Toolchain::detect(Arch::X86_64) else {
        common::skip("no x86_64 musl (or gnu static) Rust target");
        return;
    };
    let registry = cargo_home().join("registry");
    if !registry.join("cache").is_dir() {
        common::skip("no cargo registry cache to build offline from");
        return;
    }
    // The crates are taken from the registry cache: no network.
    std::env::set_var("CARGO_NET_OFFLINE", "true");
    let t = tempfile::tempdir().unwrap();
    let (a_root, b_root) = (t.path().join("a"), t.path().join("second/place"));
    let a = build_in(&a_root, &tc, &registry);
    let b = build_in(&b_root, &tc, &registry);
    for (bin, root) in [(&a, &a_root), (&b, &b_root)] {
        let root = root.to_string_lossy();
        assert!(!contains(bin, root.as_bytes()), "the binary names {root}");
    }
    // The remapping is what made them equal: the registry crate's sources
    // are named under the remapped cargo home.
    assert!(contains(&a, b"/krazy/cargo/registry/src/"));
    assert!(
        a == b,
        "the two builds differ ({} and {} bytes), first at byte {:?}",
        a.len(),
        b.len(),
        a.iter().zip(&b).position(|(x, y)| x != y)
    );
}
