//! The Raspberry Pi 3 appliance of `examples/pi3_appliance`, made with the
//! builder API instead of a `krazy.toml`. `main.rs` is a thin command line
//! over these functions; `krazy-build/tests/image_pi3.rs` includes this file
//! (`#[path]`) and builds the very same image.

use krazy_build::config::{
    Appliance, Config, ConfigError, FirmwareSource, Health, KernelSource, Package, Platform,
    WaitFor,
};
use krazy_build::image::ImageReport;
use krazy_build::pipeline::{self, BuildError, BuildOptions};
use krazy_build::secrets::{Secrets, SecretsError};
use std::path::{Path, PathBuf};

/// The appliance's host name.
pub const HOSTNAME: &str = "hello-pi";

/// The instance id, fixed so that the disk and partition GUIDs (which
/// derive from it) stay the same from build to build. A real instance makes
/// its own once (`krazy new` does) and never changes it.
pub const INSTANCE_ID: &str = "ba336962bab70c994d53d2b68a52263e";

/// The kernel package used unless a `.deb` or a directory is given:
/// Debian's arm64 kernel, which ships the Pi 3 device tree.
pub const DEFAULT_KERNEL_APT: &str = "linux-image-arm64";

/// The text of `/etc/motd` in the image.
pub const MOTD: &str = "hello from a krazy Raspberry Pi 3\n";

/// The `hello` service's cargo package (`examples/hello`).
pub fn hello_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello")
}

/// The appliance: `hello` on port 8080 as a boot service with an HTTP
/// health check, the Raspberry Pi firmware from `firmware`, and `kernel`.
pub fn config(firmware: &Path, kernel: KernelSource) -> Result<Config, ConfigError> {
    let mut hello = Package::new("hello", hello_dir());
    hello.bin = Some("hello".into());
    hello.args = vec!["--port".into(), "8080".into()];
    hello.env.insert("RUST_LOG".into(), "info".into());
    hello.wait_for = vec![WaitFor::Network];
    hello.health = Some(Health::Http("http://127.0.0.1:8080/".into()));
    Appliance::builder()
        .hostname(HOSTNAME)
        .platform(Platform::Pi3)
        .instance_id(INSTANCE_ID)
        .kernel(kernel)
        .firmware(FirmwareSource::Dir(firmware.to_path_buf()))
        .package(hello)
        .file("/etc/motd", MOTD, 0o644)
        .build()
}

/// Makes the instance's secrets in `dir` (mode 0700, files 0600) unless it
/// already holds them; returns whether they were made. Existing secrets
/// are read back, so a damaged directory is reported, never overwritten.
pub fn ensure_secrets(dir: &Path) -> Result<bool, SecretsError> {
    if dir.join("password").exists() {
        Secrets::read(dir)?;
        return Ok(false);
    }
    Secrets::generate(HOSTNAME)?.write(dir)?;
    Ok(true)
}

/// Builds the image of `config` into `output` as `opts` says, after making
/// the secrets in `opts.secrets_dir` when they are missing.
pub fn build(
    config: &Config,
    opts: &BuildOptions,
    output: &Path,
) -> Result<ImageReport, BuildError> {
    ensure_secrets(&opts.secrets_dir)?;
    pipeline::build_config(config, opts, output)
}
