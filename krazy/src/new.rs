//! `krazy new DIR`: a fresh instance.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use krazy_build::config::{Config, CONFIG_FILE};
use krazy_build::secrets::Secrets;

/// Arguments of `krazy new`.
#[derive(Args)]
pub struct NewArgs {
    /// The instance directory to create (it may exist, but must not hold a krazy.toml).
    dir: PathBuf,
    /// The device's host name (default: the directory's name).
    #[arg(long)]
    hostname: Option<String>,
    /// `pc` (UEFI PC or VM) or `pi3` (Raspberry Pi 3).
    #[arg(long, default_value = "pc", value_parser = ["pc", "pi3"])]
    platform: String,
    /// Do not create the example `hello` service.
    #[arg(long)]
    no_hello: bool,
}

/// The hello service's source, copied into new instances.
const HELLO_MAIN: &str = include_str!("../../examples/hello/src/main.rs");

const HELLO_CARGO: &str = r#"[package]
name = "hello"
version = "0.1.0"
edition = "2021"
publish = false

# Its own workspace, so it builds wherever the instance lives.
[workspace]
"#;

/// A random instance id: 16 bytes as hex.
fn instance_id() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(hex::encode(b))
}

/// The krazy.toml of a new instance, in the canonical shape with comments.
pub fn config_text(hostname: &str, platform: &str, id: &str, hello: bool) -> String {
    let (console, kernel, firmware) = match platform {
        "pi3" => (
            "ttyAMA0,115200",
            "linux-image-arm64",
            "dir = \"firmware\"                   # bootcode.bin, start*.elf, fixup*.dat from the Raspberry Pi firmware",
        ),
        _ => (
            "ttyS0,115200",
            "linux-image-cloud-amd64",
            "apt = \"systemd-boot-efi\"",
        ),
    };
    let mut s = format!(
        r#"# A krazy appliance. Build it with `krazy build -c DIR -o disk.img`,
# boot it with `krazy vm run -c DIR` (pc), write it with `krazy overwrite`.
hostname = "{hostname}"
platform = "{platform}"                    # pc | pi3
instance_id = "{id}"   # made once by `krazy new`: disk GUIDs derive from it
serial_console = "{console}"
kernel_args = []                   # appended to the kernel command line

[kernel]
apt = "{kernel}"    # or: deb = "path/to/linux-image.deb", or: dir = "path/to/kernel-dir"

[firmware]
{firmware}

[web]
http_port = 80
https_port = 443
tls = true

[update]
settle_seconds = 30                # how long every boot service must stay up before a trial boot commits
"#
    );
    if hello {
        s.push_str(
            r#"
[[package]]
name = "hello"
path = "hello"                     # a cargo package, relative to this file
args = ["--port", "8080"]
env = { RUST_LOG = "info" }
start = "boot"                     # boot | manual
restart = "on-failure"             # always | on-failure | never
wait_for = ["network"]             # clock | network
health = { http = "http://127.0.0.1:8080/" }
"#,
        );
    }
    s
}

/// Runs `krazy new`.
pub fn run(a: &NewArgs) -> anyhow::Result<()> {
    let dir = &a.dir;
    let cfg = dir.join(CONFIG_FILE);
    if cfg.exists() {
        bail!(
            "{} already exists: `krazy new` never overwrites an instance (its secrets and instance id are precious)",
            cfg.display()
        );
    }
    let hostname = match &a.hostname {
        Some(h) => h.clone(),
        None => std::path::absolute(dir)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "krazy".into()),
    };
    if !krazy_build::config::is_hostname(&hostname) {
        bail!(
            "{hostname:?} is not a valid host name: pass --hostname with 1 to 63 letters, digits and '-' (not first or last)"
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secrets_dir = dir.join("secrets");
    Secrets::generate(&hostname)?.write(&secrets_dir)?;
    if !a.no_hello {
        let h = dir.join("hello");
        fs::create_dir_all(h.join("src"))?;
        write_new(&h.join("Cargo.toml"), HELLO_CARGO)?;
        write_new(&h.join("src/main.rs"), HELLO_MAIN)?;
    }
    if !dir.join(".gitignore").exists() {
        write_new(
            &dir.join(".gitignore"),
            "# Build outputs; secrets/ has its own .gitignore.\n/target/\n*.img\n*.vars.fd\n",
        )?;
    }
    let text = config_text(&hostname, &a.platform, &instance_id()?, !a.no_hello);
    write_new(&cfg, &text)?;
    if a.platform == "pc" {
        // What we wrote must load (a pi3 instance first needs its firmware directory).
        Config::load(&cfg)?;
    }
    println!("created {}", dir.display());
    println!(
        "  krazy.toml   hostname {hostname}, platform {}",
        a.platform
    );
    println!("  secrets/     web password, update key, TLS certificate (never commit these)");
    if !a.no_hello {
        println!("  hello/       an example service on port 8080");
    }
    println!("next: krazy vm run -c {}", dir.display());
    Ok(())
}

fn write_new(p: &Path, text: &str) -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .with_context(|| format!("cannot create {}", p.display()))
}
