//! `examples/build_script`: a crate whose build.rs makes an appliance image
//! with krazy-build. Built exactly as its README says, with its own target
//! directory (a cargo inside cargo), then checked: the program it compiles
//! names an image that exists, is 2 GiB and has a valid GPT (sgdisk -v).
//!
//! The kernel cache and the cargo target directories of the nested builds
//! are the image tests' (`KRAZY_CACHE`, `KRAZY_TARGET_DIR`), so this test
//! compiles krazy-build once more (for the build script) and little else.

mod common;

use common::{run, workspace};
use std::process::Command;

#[test]
fn build_script_example_makes_an_image() {
    let ws = workspace();
    let target = ws.join("target");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&ws)
        .args([
            "build",
            "--manifest-path",
            "examples/build_script/Cargo.toml",
            "--target-dir",
            "target/build-script",
        ])
        .env_remove("CARGO_TARGET_DIR")
        .env("KRAZY_CACHE", target.join("krazy-test-cache"))
        .env("KRAZY_TARGET_DIR", target.join("krazy-test-cache/target"))
        // Nothing debugs this nested build: no debug info keeps it small.
        .env("CARGO_PROFILE_DEV_DEBUG", "false");
    let source_lock = ws.join("examples/pc_appliance/krazy.lock");
    let had_lock = source_lock.exists();
    run(&mut cargo);

    let exe = target.join("build-script/debug/build-script-appliance");
    let out = run(&mut Command::new(&exe));
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let image = std::path::PathBuf::from(field("image"));
    assert!(
        image.starts_with(target.join("build-script/debug/build")),
        "the image is in the build script's OUT_DIR: {}",
        image.display()
    );
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 2 << 30);
    assert_eq!(field("size"), format!("{} bytes", 2u64 << 30));
    let id = field("build id");
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let v = run(Command::new("sgdisk").arg("-v").arg(&image));
    assert!(v.contains("No problems found"), "{v}");
    let p = run(Command::new("sgdisk").arg("-p").arg(&image));
    for name in ["esp", "root-a", "root-b", "perm"] {
        assert!(p.contains(name), "{name} missing from\n{p}");
    }
    // The lock went into OUT_DIR, not into the example's source directory.
    assert!(image.with_file_name("krazy.lock").is_file());
    assert_eq!(source_lock.exists(), had_lock);
}
