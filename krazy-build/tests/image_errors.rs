//! Builds that must fail: each with an error that names what is wrong and
//! says what to do, and none may leave an image or a `.NAME.partial` file
//! behind (an earlier image at the output path stays as it was).
//!
//! - a package whose own `.cargo/config.toml` turns off static linking for
//!   the musl target (a real dynamically linked ELF, caught by the ELF check);
//! - a `[kernel] deb` that does not exist;
//! - unknown fields in krazy.toml;
//! - a disk size too small for the layout, a root partition too small for
//!   the root, a read-only output directory and a full one (real tmpfs
//!   mounts; we are root).

mod common;

use common::{options, run, workspace};
use krazy_build::config::{Config, ConfigError};
use krazy_build::elf::ElfError;
use krazy_build::image::{self, ImageError, Inputs, Trees};
use krazy_build::pipeline::{self, BuildError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// An instance directory in `dir`: the pc appliance's krazy.toml (with
/// `hello` at its absolute path) passed through `edit`, and its secrets.
fn instance(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let inst = dir.join("inst");
    fs::create_dir_all(&inst).unwrap();
    let src = workspace().join("examples/pc_appliance");
    let cfg = fs::read_to_string(src.join("krazy.toml")).unwrap().replace(
        "path = \"../hello\"",
        &format!("path = {:?}", workspace().join("examples/hello")),
    );
    fs::write(inst.join("krazy.toml"), edit(cfg)).unwrap();
    std::os::unix::fs::symlink(src.join("secrets"), inst.join("secrets")).unwrap();
    inst
}

/// Asserts that `dir` holds neither `name` nor `.name.partial`.
fn assert_no_image(dir: &Path, name: &str) {
    assert!(!dir.join(name).exists(), "{name} was left behind");
    let partial = dir.join(format!(".{name}.partial"));
    assert!(!partial.exists(), "{} was left behind", partial.display());
}

#[test]
fn a_dynamically_linked_package_fails_the_elf_check_and_no_image_is_written() {
    let t = tempfile::tempdir().unwrap();
    // A package that links dynamically even for the musl target: its own
    // cargo configuration turns crt-static off, as a user might copy from
    // a desktop project. cargo must read it (it runs in the package's
    // directory), and the ELF check must then refuse the binary.
    let pkg = t.path().join("dynpkg");
    fs::create_dir_all(pkg.join("src")).unwrap();
    fs::create_dir_all(pkg.join(".cargo")).unwrap();
    fs::write(
        pkg.join("Cargo.toml"),
        "[package]\nname = \"dynpkg\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    fs::write(
        pkg.join("src/main.rs"),
        "fn main() { println!(\"dynamic\"); }\n",
    )
    .unwrap();
    fs::write(
        pkg.join(".cargo/config.toml"),
        "[target.x86_64-unknown-linux-musl]\nrustflags = [\"-C\", \"target-feature=-crt-static\"]\n",
    )
    .unwrap();
    let inst = instance(t.path(), |c| {
        format!("{c}\n[[package]]\nname = \"dyn\"\npath = {pkg:?}\n")
    });
    let img = t.path().join("pc.img");
    let opts = options(&inst, t.path());
    let e = pipeline::build_image(&inst.join("krazy.toml"), &opts, &img).unwrap_err();
    let msg = e.to_string();
    let BuildError::Elf(ElfError::Dynamic { path, .. }) = &e else {
        panic!("expected the ELF check's Dynamic error, got: {msg}");
    };
    // It is the dyn package's binary, built for musl, and really dynamic.
    assert!(
        path.ends_with("x86_64-unknown-linux-musl/release/dynpkg"),
        "{}",
        path.display()
    );
    let h = run(Command::new("readelf").args(["-l", "-d"]).arg(path));
    assert!(h.contains("INTERP") && h.contains("(NEEDED)"), "{h}");
    // The message names the file, what is wrong and how to fix it.
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("dynamically linked"), "{msg}");
    assert!(msg.contains("needs") || msg.contains("loader"), "{msg}");
    assert!(
        msg.contains("x86_64-unknown-linux-musl")
            && msg.contains("-crt-static")
            && msg.contains(".cargo/config.toml"),
        "{msg}"
    );
    assert_no_image(t.path(), "pc.img");
}

#[test]
fn a_missing_kernel_deb_is_named_and_no_image_is_written() {
    let t = tempfile::tempdir().unwrap();
    let inst = instance(t.path(), |c| {
        c.replace(
            "apt = \"linux-image-cloud-amd64\"",
            "deb = \"does-not-exist.deb\"",
        )
    });
    let img = t.path().join("pc.img");
    // An earlier image at the output path must survive the failed build.
    fs::write(&img, b"an earlier image").unwrap();
    let opts = options(&inst, t.path());
    let e = pipeline::build_image(&inst.join("krazy.toml"), &opts, &img).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BuildError::Kernel(_)), "{msg}");
    let want = inst.join("does-not-exist.deb");
    assert!(msg.contains(&want.display().to_string()), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
    assert_eq!(fs::read(&img).unwrap(), b"an earlier image");
    assert!(!t.path().join(".pc.img.partial").exists());
    assert!(!opts.lock_path.exists(), "a failed resolve wrote the lock");
}

#[test]
fn unknown_config_fields_are_named_with_the_file() {
    let t = tempfile::tempdir().unwrap();
    for (edit, field) in [
        (
            Box::new(|c: String| c.replace("hostname = ", "colour = \"red\"\nhostname = "))
                as Box<dyn Fn(String) -> String>,
            "colour",
        ),
        (
            Box::new(|c: String| c.replace("https_port = 443", "htps_port = 443")),
            "htps_port",
        ),
        (
            Box::new(|c: String| c.replace("restart = \"on-failure\"", "restrat = \"always\"")),
            "restrat",
        ),
    ] {
        let dir = t.path().join(field);
        let inst = instance(&dir, edit);
        let cfg = inst.join("krazy.toml");
        let e = Config::load(&cfg).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Parse { .. }), "{msg}");
        assert!(msg.contains(&format!("unknown field `{field}`")), "{msg}");
        assert!(msg.contains(&cfg.display().to_string()), "{msg}");

        let img = dir.join("pc.img");
        let e = pipeline::build_image(&cfg, &options(&inst, &dir), &img).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, BuildError::Config(ConfigError::Parse { .. })),
            "{msg}"
        );
        assert!(msg.contains(&format!("unknown field `{field}`")), "{msg}");
        assert!(msg.contains(&cfg.display().to_string()), "{msg}");
        assert_no_image(&dir, "pc.img");
    }
}

#[test]
fn a_disk_too_small_for_the_layout_fails_before_building() {
    let t = tempfile::tempdir().unwrap();
    let inst = instance(t.path(), |c| c);
    let img = t.path().join("pc.img");
    let mut opts = options(&inst, t.path());
    opts.disk_bytes = GIB;
    // A target directory that does not exist yet: the layout is checked
    // before cargo runs, so it must stay absent.
    opts.target_dir = t.path().join("never-built");
    let e = pipeline::build_image(&inst.join("krazy.toml"), &opts, &img).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, BuildError::Image(ImageError::Layout(_))),
        "{msg}"
    );
    assert!(msg.contains("--size"), "{msg}");
    assert!(
        !opts.target_dir.exists(),
        "cargo ran before the layout check"
    );
    assert_no_image(t.path(), "pc.img");
}

/// The pc appliance prepared (cargo, kernel, firmware) and assembled once
/// for the write_image tests.
fn prepared() -> &'static (Config, Inputs, Trees) {
    static P: OnceLock<(Config, Inputs, Trees)> = OnceLock::new();
    P.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let inst = workspace().join("examples/pc_appliance");
        let opts = options(&inst, t.path());
        let config = Config::load(&inst.join("krazy.toml")).unwrap();
        let inputs = pipeline::prepare(&config, &opts).unwrap();
        let layout = image::layout(config.platform, 2 * GIB, &Default::default()).unwrap();
        let trees = image::assemble(&inputs, &layout).unwrap();
        (config, inputs, trees)
    })
}

#[test]
fn a_root_partition_too_small_for_the_root_fails_and_leaves_nothing() {
    let (config, inputs, _) = prepared();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("pc.img");
    // The compressed root is ~3.7 MiB (krazy-init alone is 4.3 MB).
    let opts = krazy_disk::LayoutOptions::default().with_root_bytes(MIB);
    let layout = image::layout(config.platform, 2 * GIB, &opts).unwrap();
    let trees = image::assemble(inputs, &layout).unwrap();
    let e = image::write_image(&trees, &img).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ImageError::FileSystem { part: "root", .. }),
        "{msg}"
    );
    assert!(msg.contains("raise root_bytes"), "{msg}");
    assert_no_image(t.path(), "pc.img");
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "krazy-test"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_output_directory_fails_cleanly() {
    let (_, _, trees) = prepared();
    let t = tempfile::tempdir().unwrap();
    let ro = Tmpfs::mount(&t.path().join("ro"), "ro,size=1m");
    let img = ro.0.join("pc.img");
    let e = image::write_image(trees, &img).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Io { .. }), "{msg}");
    assert!(msg.contains(&ro.0.display().to_string()), "{msg}");
    assert!(msg.contains("Read-only file system"), "{msg}");
    assert_no_image(&ro.0, "pc.img");
}

#[test]
fn a_full_output_file_system_fails_midway_and_the_partial_image_is_removed() {
    let (_, _, trees) = prepared();
    let t = tempfile::tempdir().unwrap();
    // Room for the partition table and the start of the root, not for the
    // root twice: the write fails after the partial file has data in it.
    let full = Tmpfs::mount(&t.path().join("full"), "size=4m");
    let img = full.0.join("pc.img");
    let e = image::write_image(trees, &img).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(msg.contains(".pc.img.partial"), "{msg}");
    assert_no_image(&full.0, "pc.img");
    assert_eq!(fs::read_dir(&full.0).unwrap().count(), 0);
    // The space is free again: the partial file is gone, not just unlinked
    // while open.
    let df = run(Command::new("df").arg("--output=used").arg(&full.0));
    let used: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(used < 1024, "{used} KiB still used:\n{df}");
}
