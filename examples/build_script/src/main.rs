//! Prints the appliance image that `build.rs` made with krazy-build: its
//! path, size and build id. A real program would embed or ship it.

/// The image, as `build.rs` wrote it into `OUT_DIR`.
const IMAGE: &str = env!("APPLIANCE_IMAGE");
/// Its build id (the SHA-256 of its SBOM).
const BUILD_ID: &str = env!("APPLIANCE_BUILD_ID");

fn main() -> std::process::ExitCode {
    match std::fs::metadata(IMAGE) {
        Ok(m) => {
            println!("image    {IMAGE}");
            println!("size     {} bytes", m.len());
            println!("build id {BUILD_ID}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{IMAGE}: {e} (build again: cargo build --manifest-path examples/build_script/Cargo.toml --target-dir target/build-script)");
            std::process::ExitCode::FAILURE
        }
    }
}
