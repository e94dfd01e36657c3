//! Builds the appliance of `examples/pc_appliance` into
//! `$OUT_DIR/appliance.img` with krazy-build, and tells the crate where it
//! is (`APPLIANCE_IMAGE`) and which build it is (`APPLIANCE_BUILD_ID`).
//!
//! Build scripts should write only into `OUT_DIR`, so the kernel lock goes
//! there too (`$OUT_DIR/krazy.lock`), not beside the krazy.toml.
//! `KRAZY_CACHE` (downloaded kernels, cargo target directories) and
//! `KRAZY_TARGET_DIR` (the target directories alone) move the caches.

use krazy_build::config::Config;
use krazy_build::pipeline::{build_config, BuildOptions};
use std::env;
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        // cargo shows a build script's stderr when it fails.
        eprintln!("error: building the appliance image failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let instance = manifest_dir.join("../pc_appliance");
    let toml = instance.join("krazy.toml");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let image = out_dir.join("appliance.img");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", toml.display());
    println!(
        "cargo:rerun-if-changed={}",
        instance.join("secrets").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../hello").display()
    );
    for var in ["SOURCE_DATE_EPOCH", "KRAZY_CACHE", "KRAZY_TARGET_DIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let config = Config::load(&toml)?;
    let mut opts = BuildOptions::for_config(&toml);
    opts.lock_path = out_dir.join("krazy.lock");
    if let Some(dir) = env::var_os("KRAZY_TARGET_DIR") {
        opts.target_dir = PathBuf::from(dir);
    }
    let report = build_config(&config, &opts, &image)?;
    println!("cargo:rustc-env=APPLIANCE_IMAGE={}", report.path.display());
    println!("cargo:rustc-env=APPLIANCE_BUILD_ID={}", report.build_id);
    Ok(())
}
