//! The Rust builder of a [`Config`]: [`Appliance::builder`].

use std::path::PathBuf;

use super::*;

/// Entry point of the Rust builder: `Appliance::builder()`.
#[derive(Debug)]
pub struct Appliance;

impl Appliance {
    /// A builder for a [`Config`] made in Rust (a program or a `build.rs`),
    /// with the same defaults as an omitted field in `krazy.toml`.
    ///
    /// ```
    /// use krazy_build::config::{Appliance, KernelSource, Package, Platform};
    /// let config = Appliance::builder()
    ///     .hostname("pi")
    ///     .instance_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    ///     .platform(Platform::Pi3)
    ///     .kernel(KernelSource::Deb("/tmp/linux-image-arm64.deb".into()))
    ///     .firmware(krazy_build::config::FirmwareSource::Dir("/tmp/fw".into()))
    ///     .package(Package::new("hello", "/src/hello"))
    ///     .build()?;
    /// assert_eq!(config.update.settle_seconds, 30);
    /// # Ok::<(), krazy_build::config::ConfigError>(())
    /// ```
    pub fn builder() -> ApplianceBuilder {
        ApplianceBuilder::default()
    }
}

/// Builds a [`Config`] in Rust; see [`Appliance::builder`].
#[derive(Debug, Default, Clone)]
pub struct ApplianceBuilder {
    hostname: Option<String>,
    platform: Platform,
    instance_id: Option<String>,
    serial_console: Option<String>,
    kernel_args: Vec<String>,
    kernel: Option<KernelSource>,
    firmware: Option<FirmwareSource>,
    web: Web,
    update: Update,
    packages: Vec<Package>,
    files: Vec<FileSpec>,
    base_dir: Option<PathBuf>,
}

impl ApplianceBuilder {
    /// The host name (required).
    pub fn hostname(mut self, h: impl Into<String>) -> Self {
        self.hostname = Some(h.into());
        self
    }
    /// The platform (default pc).
    pub fn platform(mut self, p: Platform) -> Self {
        self.platform = p;
        self
    }
    /// The instance id (required; keep it stable across builds).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }
    /// The serial console (default by platform).
    pub fn serial_console(mut self, c: impl Into<String>) -> Self {
        self.serial_console = Some(c.into());
        self
    }
    /// Appends one kernel command-line argument.
    pub fn kernel_arg(mut self, a: impl Into<String>) -> Self {
        self.kernel_args.push(a.into());
        self
    }
    /// The kernel source (required).
    pub fn kernel(mut self, k: KernelSource) -> Self {
        self.kernel = Some(k);
        self
    }
    /// The firmware source (default by platform).
    pub fn firmware(mut self, f: FirmwareSource) -> Self {
        self.firmware = Some(f);
        self
    }
    /// The web settings.
    pub fn web(mut self, w: Web) -> Self {
        self.web = w;
        self
    }
    /// The settle time of a trial boot, in seconds (default 30).
    pub fn settle_seconds(mut self, s: u32) -> Self {
        self.update.settle_seconds = s;
        self
    }
    /// Adds a user package.
    pub fn package(mut self, p: Package) -> Self {
        self.packages.push(p);
        self
    }
    /// Adds an extra file with text contents.
    pub fn file(mut self, path: impl Into<String>, contents: impl Into<String>, mode: u32) -> Self {
        self.files.push(FileSpec {
            path: path.into(),
            contents: Some(contents.into()),
            source: None,
            mode: Mode(mode),
        });
        self
    }
    /// Adds an extra file copied from a host path.
    pub fn file_from(
        mut self,
        path: impl Into<String>,
        source: impl Into<PathBuf>,
        mode: u32,
    ) -> Self {
        self.files.push(FileSpec {
            path: path.into(),
            contents: None,
            source: Some(source.into()),
            mode: Mode(mode),
        });
        self
    }
    /// The directory relative paths resolve against (default: the current
    /// directory).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Checks and returns the configuration; errors name the field and
    /// `<builder>` as the file.
    pub fn build(self) -> Result<Config, ConfigError> {
        let path = Path::new("<builder>");
        let missing = |field: &str, what: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            reason: format!("is required: call .{field}({what})"),
        };
        let mut c = Config {
            hostname: self
                .hostname
                .ok_or_else(|| missing("hostname", "\"name\""))?,
            platform: self.platform,
            instance_id: self
                .instance_id
                .ok_or_else(|| missing("instance_id", "\"stable id\""))?,
            serial_console: self.serial_console,
            kernel_args: self.kernel_args,
            kernel: self
                .kernel
                .ok_or_else(|| missing("kernel", "KernelSource::..."))?,
            firmware: self.firmware,
            web: self.web,
            update: self.update,
            package: self.packages,
            file: self.files,
        };
        let base = self.base_dir.unwrap_or_else(|| PathBuf::from("."));
        c.resolve_paths(&base);
        c.validate(path)?;
        Ok(c)
    }
}
