//! `krazy.toml`: the configuration of one appliance instance.
//!
//! Read with [`Config::load`] (or [`Config::from_toml_str`]), or built in Rust
//! with [`Appliance::builder`]; both give the same [`Config`]. Every table
//! rejects unknown fields, and every error names the file and the field.
//! Relative paths (package paths, `deb`/`dir`/`file` sources, `[[file]]`
//! sources) resolve against the directory that holds the `krazy.toml`.
//!
//! Defaults for omitted fields: `platform = "pc"`, `serial_console` the
//! platform's (`ttyS0,115200` on pc, `ttyS1,115200` on pi3, the mini UART on GPIO 14/15),
//! `kernel_args = []`, `[firmware]` `apt = "systemd-boot-efi"` on pc (pi3 has
//! no default: the firmware directory must be given), `[web]` ports 80/443
//! with `tls = true`, `[update] settle_seconds = 30` (`deadline_seconds = 180`, `fail_after_restarts = 3`); per package `bin` = the
//! package's only binary, `args = []`, `env = {}`, `start = "boot"`,
//! `restart = "on-failure"`, `wait_for = []`, no health check; per file
//! `mode = "0644"`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod builder;
mod schema;

pub use builder::{Appliance, ApplianceBuilder};
pub use schema::*;

/// The file name of an instance's configuration inside its directory.
pub const CONFIG_FILE: &str = "krazy.toml";

/// Why a configuration cannot be used. Each variant names the file (or
/// `<builder>` for configurations made in Rust) and, where known, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `-c` named neither a krazy.toml nor a directory that holds one.
    #[error("no {CONFIG_FILE} at {}: pass an instance directory (made by `krazy new DIR`) or the path of a krazy.toml", path.display())]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The TOML is malformed, has an unknown field, or a value of the wrong
    /// type; toml's message gives the line, column and field.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error, with its span.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A field has a value that parses but cannot be used.
    #[error("{}: field `{field}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, as a TOML path (`package[0].name`).
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The configuration could not be written as TOML.
    #[error("cannot write the configuration as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

pub use krazy_disk::{Arch, Platform};

/// The serial console of `platform` used when `serial_console` is omitted.
pub fn default_serial_console(platform: Platform) -> &'static str {
    crate::board::for_platform(platform).serial_console()
}

/// One appliance instance: everything an image is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The device's host name (an RFC 1123 label: letters, digits, `-`).
    pub hostname: String,
    /// The hardware (default `pc`).
    #[serde(default)]
    pub platform: Platform,
    /// The instance's id, written once by `krazy new`; disk and partition
    /// GUIDs derive from it, so two instances never collide.
    pub instance_id: String,
    /// The serial console (`ttyS0,115200`); default depends on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_console: Option<String>,
    /// Appended to the kernel command line (default none).
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Where the kernel comes from.
    pub kernel: KernelSource,
    /// Where the boot firmware comes from (default on pc: `apt =
    /// "systemd-boot-efi"`; required on pi3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareSource>,
    /// The web interface.
    #[serde(default)]
    pub web: Web,
    /// Update behaviour.
    #[serde(default)]
    pub update: Update,
    /// User packages, each run as a service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package: Vec<Package>,
    /// Extra files in the root file system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file: Vec<FileSpec>,
}

/// Resolves `-c DIR|FILE`: a directory means `DIR/krazy.toml`; `None` means
/// the current directory.
pub fn resolve_config_path(arg: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let p = arg.unwrap_or(Path::new("."));
    let file = if p.is_dir() {
        p.join(CONFIG_FILE)
    } else {
        p.to_path_buf()
    };
    if file.is_file() {
        Ok(file)
    } else {
        Err(ConfigError::NotFound { path: file })
    }
}

impl Config {
    /// Reads and validates `path`, resolving relative paths against its
    /// directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::from_toml_str(&text, path, base)
    }

    /// Parses TOML text; `path` names the file in errors and `base` is the
    /// directory relative paths resolve against.
    pub fn from_toml_str(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        c.resolve_paths(base);
        c.validate(path)?;
        Ok(c)
    }

    /// The configuration as TOML text (what `krazy new` writes).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// The serial console, defaulted by platform.
    pub fn serial_console(&self) -> &str {
        self.serial_console
            .as_deref()
            .unwrap_or(default_serial_console(self.platform))
    }

    /// The firmware source, defaulted by platform (`None` on pi3 without one,
    /// which [`Config::validate`] rejects).
    pub fn firmware(&self) -> Option<FirmwareSource> {
        match (&self.firmware, self.platform) {
            (Some(f), _) => Some(f.clone()),
            (None, Platform::Pc) => Some(FirmwareSource::Apt("systemd-boot-efi".into())),
            (None, Platform::Pi3) => None,
        }
    }

    /// Makes every relative host path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.kernel {
            KernelSource::Deb(p) | KernelSource::Dir(p) => fix(p),
            KernelSource::Apt(_) => {}
        }
        match &mut self.firmware {
            Some(FirmwareSource::File(p)) | Some(FirmwareSource::Dir(p)) => fix(p),
            _ => {}
        }
        for p in &mut self.package {
            fix(&mut p.path);
        }
        for f in &mut self.file {
            if let Some(s) = &mut f.source {
                fix(s);
            }
        }
    }

    /// Checks values that parse but cannot be used; `path` names the file in
    /// errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if !is_hostname(&self.hostname) {
            return Err(invalid(
                "hostname".into(),
                format!("{:?} is not a host name: use 1 to 63 letters, digits and '-', not starting or ending with '-'", self.hostname),
            ));
        }
        if self.instance_id.trim().is_empty() {
            return Err(invalid(
                "instance_id".into(),
                "is empty; `krazy new` writes a fresh one, or set any unique string".into(),
            ));
        }
        if let KernelSource::Apt(name) = &self.kernel {
            if !is_package_name(name) {
                return Err(invalid(
                    "kernel.apt".into(),
                    format!("{name:?} is not a Debian package name"),
                ));
            }
        }
        match (self.platform, self.firmware()) {
            (Platform::Pi3, None) => {
                return Err(invalid(
                    "firmware".into(),
                    "platform \"pi3\" needs `[firmware] dir = \"path\"` with bootcode.bin, start*.elf and fixup*.dat".into(),
                ))
            }
            (Platform::Pi3, Some(FirmwareSource::File(_))) => {
                return Err(invalid(
                    "firmware.file".into(),
                    "platform \"pi3\" needs a directory of firmware files: use `dir = \"path\"`".into(),
                ))
            }
            (Platform::Pc, Some(FirmwareSource::Dir(_))) => {
                return Err(invalid(
                    "firmware.dir".into(),
                    "platform \"pc\" needs the systemd-boot EFI binary: use `file = \"path/systemd-bootx64.efi\"` or `apt = \"systemd-boot-efi\"`".into(),
                ))
            }
            (_, Some(FirmwareSource::Apt(name))) if !is_package_name(&name) => {
                return Err(invalid(
                    "firmware.apt".into(),
                    format!("{name:?} is not a Debian package name"),
                ))
            }
            _ => {}
        }
        for (field, v) in [
            ("web.max_connections", self.web.max_connections),
            (
                "web.max_connections_per_peer",
                self.web.max_connections_per_peer,
            ),
            ("web.max_log_followers", self.web.max_log_followers),
        ] {
            if v == 0 {
                return Err(invalid(field.into(), "must be at least 1".into()));
            }
        }
        if self.update.settle_seconds == 0 {
            return Err(invalid(
                "update.settle_seconds".into(),
                "must be at least 1 second".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.package.iter().enumerate() {
            if !is_service_name(&p.name) {
                return Err(invalid(
                    format!("package[{i}].name"),
                    format!("{:?} is not usable as a file name under /user: use letters, digits, '-', '_' and '.'", p.name),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("package[{i}].name"),
                    format!("{:?} is used by two packages; names must be unique", p.name),
                ));
            }
            for k in p.env.keys() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(invalid(
                        format!("package[{i}].env"),
                        format!("{k:?} is not an environment variable name"),
                    ));
                }
            }
        }
        let mut dests = std::collections::BTreeSet::new();
        for (i, f) in self.file.iter().enumerate() {
            let field = |n: &str| format!("file[{i}].{n}");
            if !f.path.starts_with('/') || krazy_fs::tree::normalize(&f.path).is_err() {
                return Err(invalid(
                    field("path"),
                    format!("{:?} must be an absolute path without '.', '..' or empty components, like \"/etc/motd\"", f.path),
                ));
            }
            if !dests.insert(f.path.as_str()) {
                return Err(invalid(
                    field("path"),
                    format!("{:?} is given twice", f.path),
                ));
            }
            match (&f.contents, &f.source) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        format!("file[{i}]"),
                        "needs exactly one of `contents = \"text\"` or `source = \"host path\"`"
                            .into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Whether `s` is a valid host name label for a device: 1 to 63 letters,
/// digits and '-', not starting or ending with '-'.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical shape from issue 5, verbatim (with a real instance id).
    pub(crate) const CANONICAL: &str = r#"hostname = "hello-krazy"
platform = "pc"                    # pc | pi3
instance_id = "..."                # written once by `krazy new`
serial_console = "ttyS0,115200"
kernel_args = []                   # appended to the kernel command line

[kernel]
apt = "linux-image-cloud-amd64"    # or: deb = "path/to/linux-image.deb", or: dir = "path/to/kernel-dir"

[firmware]
apt = "systemd-boot-efi"           # pc; or: file = "path/to/systemd-bootx64.efi"; pi3: dir = "path/to/firmware"

[web]
http_port = 80
https_port = 443
tls = true

[update]
settle_seconds = 30                # how long every boot service must stay up before a trial boot commits

[[package]]
name = "hello"
path = "../hello"                  # a cargo package, relative to this file
bin = "hello"                      # optional when the package has one binary
args = ["--port", "8080"]
env = { RUST_LOG = "info" }
start = "boot"                     # boot | manual
restart = "on-failure"             # always | on-failure | never
wait_for = ["network"]             # clock | network
health = { http = "http://127.0.0.1:8080/" }   # or: { command = ["/user/hello", "--check"] }

[[file]]
path = "/etc/motd"                 # destination in the root file system
contents = "hello\n"               # or: source = "relative/or/absolute/host/path"
mode = "0644"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/inst/krazy.toml"), Path::new("/inst"))
    }

    #[test]
    fn canonical_shape_is_accepted_verbatim() {
        let c = parse(CANONICAL).unwrap();
        assert_eq!(c.hostname, "hello-krazy");
        assert_eq!(c.platform, Platform::Pc);
        assert_eq!(c.instance_id, "...");
        assert_eq!(c.serial_console(), "ttyS0,115200");
        assert!(c.kernel_args.is_empty());
        assert_eq!(
            c.kernel,
            KernelSource::Apt("linux-image-cloud-amd64".into())
        );
        assert_eq!(
            c.firmware(),
            Some(FirmwareSource::Apt("systemd-boot-efi".into()))
        );
        assert_eq!(
            c.web,
            Web {
                http_port: 80,
                https_port: 443,
                tls: true,
                ..Web::default()
            }
        );
        assert_eq!(c.update.settle_seconds, 30);
        let p = &c.package[0];
        assert_eq!(p.name, "hello");
        // Relative to the file's directory, kept lexical.
        assert_eq!(p.path, Path::new("/inst/../hello"));
        assert_eq!(p.bin.as_deref(), Some("hello"));
        assert_eq!(p.args, ["--port", "8080"]);
        assert_eq!(p.env.get("RUST_LOG").map(String::as_str), Some("info"));
        assert_eq!(p.start, Start::Boot);
        assert_eq!(p.restart, Restart::OnFailure);
        assert_eq!(p.wait_for, [WaitFor::Network]);
        assert_eq!(
            p.health,
            Some(Health::Http("http://127.0.0.1:8080/".into()))
        );
        let f = &c.file[0];
        assert_eq!(f.path, "/etc/motd");
        assert_eq!(f.contents.as_deref(), Some("hello\n"));
        assert_eq!(f.mode, Mode(0o644));
    }

    /// `/etc/krazy/web.toml` is `[web]` field for field; krazy-init's
    /// `config::WebSettings` test parses exactly this text.
    #[test]
    fn web_settings_file_form() {
        assert_eq!(
            toml::to_string(&Web::default()).unwrap(),
            "http_port = 80\nhttps_port = 443\ntls = true\nmax_connections = 256\n\
             max_connections_per_peer = 32\nmax_log_followers = 16\n"
        );
        let c = parse(&CANONICAL.replace(
            "tls = true",
            "tls = true\nmax_connections = 64\nmax_connections_per_peer = 8\nmax_log_followers = 4",
        ))
        .unwrap();
        assert_eq!(
            (
                c.web.max_connections,
                c.web.max_connections_per_peer,
                c.web.max_log_followers
            ),
            (64, 8, 4)
        );
    }

    /// Each device table is written by krazy-build (`image`) and read by
    /// krazy-init (`config`) through one struct: what is read is what was written.
    #[test]
    fn device_tables_round_trip_through_krazy_init() {
        use crate::image;
        use krazy_init::config as device;
        let mut c = parse(&CANONICAL.replace(
            "settle_seconds = 30 ",
            "settle_seconds = 20\nfail_after_restarts = 5\n#",
        ))
        .unwrap();
        c.package[0].wait_for.push(WaitFor::Clock);
        c.package[0].start = Start::Manual;
        c.package[0].restart = Restart::Never;

        let text = image::services_toml(&c);
        assert_eq!(
            device::parse_services_toml(&text).unwrap(),
            image::services_table(&c)
        );
        let f = device::parse_services(&text).unwrap();
        let names: Vec<_> = f.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dhcp", "ntp", "hello"]);
        let hello = &f.services[2];
        assert_eq!(hello.path, Path::new("/user/hello"));
        assert_eq!(hello.args, ["--port", "8080"]);
        assert_eq!(
            (hello.start, hello.restart),
            (Start::Manual, Restart::Never)
        );
        assert_eq!(hello.wait_for, [WaitFor::Network, WaitFor::Clock]);
        assert_eq!(f.services[0].restart, Restart::Always);

        let text = image::update_toml(&c);
        let u = device::parse_update(&text).unwrap();
        assert_eq!(u, image::update_table(&c));
        assert_eq!(
            (u.settle_seconds, u.deadline_seconds, u.fail_after_restarts),
            (20, Some(180), 5)
        );
        assert_eq!(u.health[0].http.as_deref(), Some("http://127.0.0.1:8080/"));
        // Without `fail_after_restarts` in krazy.toml: 3.
        let d = parse(CANONICAL).unwrap();
        assert_eq!(image::update_table(&d).fail_after_restarts, 3);

        let text = image::web_toml(&c);
        assert_eq!(device::parse_web(&text).unwrap(), c.web);
        // Zero limits, which the device refuses, are refused at build time.
        let e = err(&CANONICAL.replace("tls = true", "tls = true\nmax_log_followers = 0"));
        assert!(e.contains("web.max_log_followers"), "{e}");
    }

    #[test]
    fn roundtrips_through_toml() {
        let c = parse(CANONICAL).unwrap();
        let text = c.to_toml_string().unwrap();
        let again = parse(&text).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c =
            parse("hostname = \"a\"\ninstance_id = \"x\"\n[kernel]\ndeb = \"k.deb\"\n").unwrap();
        assert_eq!(c.platform, Platform::Pc);
        assert_eq!(c.kernel, KernelSource::Deb("/inst/k.deb".into()));
        assert_eq!(c.web, Web::default());
        assert_eq!(c.update.settle_seconds, 30);
        assert_eq!(c.serial_console(), "ttyS0,115200");
        assert_eq!(
            c.firmware(),
            Some(FirmwareSource::Apt("systemd-boot-efi".into()))
        );
        let c = parse("hostname = \"a\"\ninstance_id = \"x\"\n[kernel]\ndir = \"k\"\n[[package]]\nname = \"p\"\npath = \"/abs/p\"\n[[file]]\npath = \"/x\"\nsource = \"s\"\n").unwrap();
        let p = &c.package[0];
        assert_eq!(p.path, Path::new("/abs/p"));
        assert_eq!(
            (p.start, p.restart, p.health.clone()),
            (Start::Boot, Restart::OnFailure, None)
        );
        assert_eq!(c.file[0].mode, Mode(0o644));
        assert_eq!(c.file[0].source.as_deref(), Some(Path::new("/inst/s")));
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_are_named_with_file_and_line() {
        let e = err(&CANONICAL.replace("tls = true", "tls = true\ncolour = 1"));
        assert!(e.contains("/inst/krazy.toml"), "{e}");
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 17"), "{e}");
        let e = err(&CANONICAL.replace("start = \"boot\"", "start = \"boot\"\nstrat = 1"));
        assert!(e.contains("strat"), "{e}");
        let e = err(&format!("bogus = 1\n{CANONICAL}"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&CANONICAL.replace("apt = \"linux", "foo = \"linux"));
        assert!(e.contains("foo"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err(&CANONICAL.replace("platform = \"pc\"", "platform = \"pc2\""));
        assert!(e.contains("pc2") && e.contains("pi3"), "{e}");
        let e = err(&CANONICAL.replace("mode = \"0644\"", "mode = \"0x644\""));
        assert!(e.contains("0x644") && e.contains("octal"), "{e}");
        let e = err(&CANONICAL.replace("restart = \"on-failure\"", "restart = \"sometimes\""));
        assert!(e.contains("sometimes"), "{e}");
        let e = err(&CANONICAL.replace(
            "apt = \"linux-image-cloud-amd64\"",
            "apt = \"linux-image-cloud-amd64\"\ndeb = \"x.deb\"",
        ));
        assert!(e.contains("exactly one of"), "{e}");
        let e = err(&CANONICAL.replace("hostname = \"hello-krazy\"", "hostname = \"-bad\""));
        assert!(e.contains("field `hostname`"), "{e}");
        let e = err(&CANONICAL.replace("path = \"/etc/motd\"", "path = \"etc/motd\""));
        assert!(e.contains("file[0].path"), "{e}");
        let e = err(&CANONICAL.replace(
            "contents = \"hello\\n\"",
            "contents = \"x\"\nsource = \"y\"",
        ));
        assert!(e.contains("file[0]") && e.contains("exactly one"), "{e}");
        let pi3 = CANONICAL
            .replace("platform = \"pc\"", "platform = \"pi3\"")
            .replace("[firmware]\napt = \"systemd-boot-efi\"", "");
        let e = err(&pi3);
        assert!(e.contains("field `firmware`") && e.contains("dir ="), "{e}");
        let e = err(&CANONICAL.replace("http_port = 80", "http_port = 70000"));
        assert!(e.contains("http_port") || e.contains("70000"), "{e}");
        let twice = format!("{CANONICAL}\n[[package]]\nname = \"hello\"\npath = \"x\"\n");
        assert!(err(&twice).contains("package[1].name"));
    }

    #[test]
    fn builder_matches_toml() {
        let from_toml = parse(CANONICAL).unwrap();
        let mut pkg = Package::new("hello", "../hello");
        pkg.bin = Some("hello".into());
        pkg.args = vec!["--port".into(), "8080".into()];
        pkg.env.insert("RUST_LOG".into(), "info".into());
        pkg.wait_for = vec![WaitFor::Network];
        pkg.health = Some(Health::Http("http://127.0.0.1:8080/".into()));
        let built = Appliance::builder()
            .hostname("hello-krazy")
            .platform(Platform::Pc)
            .instance_id("...")
            .serial_console("ttyS0,115200")
            .kernel(KernelSource::Apt("linux-image-cloud-amd64".into()))
            .firmware(FirmwareSource::Apt("systemd-boot-efi".into()))
            .package(pkg)
            .file("/etc/motd", "hello\n", 0o644)
            .base_dir("/inst")
            .build()
            .unwrap();
        assert_eq!(built, from_toml);
        let e = Appliance::builder()
            .hostname("x")
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("<builder>") && e.contains("instance_id"), "{e}");
    }

    #[test]
    fn config_path_resolution() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve_config_path(Some(d.path())),
            Err(ConfigError::NotFound { .. })
        ));
        std::fs::write(d.path().join(CONFIG_FILE), CANONICAL).unwrap();
        let p = resolve_config_path(Some(d.path())).unwrap();
        assert_eq!(p, d.path().join(CONFIG_FILE));
        assert_eq!(resolve_config_path(Some(&p)).unwrap(), p);
        let c = Config::load(&p).unwrap();
        assert_eq!(c.package[0].path, d.path().join("../hello"));
    }
}
