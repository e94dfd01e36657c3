//! The real thing: Debian's cloud kernel, fetched with `apt-get download`
//! through the metapackage `linux-image-cloud-amd64` into a cache under
//! `target/` (reused by later runs), unpacked in pure Rust, pinned in a
//! lock, and its module closure for a `pc` image checked against kmod's
//! `modinfo` (the reference reader of `.modinfo`).

use krazy_build::config::KernelSource;
use krazy_build::kernel::{self, AptGet, Lock, ModuleIndex, ModuleRequest, ResolveOptions};
use std::path::PathBuf;
use std::process::Command;

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/krazy-test-cache")
}

#[test]
fn debian_cloud_kernel_closure_matches_modinfo() {
    let t = tempfile::tempdir().unwrap();
    let opts = ResolveOptions {
        cache_dir: cache(),
        upgrade: false,
    };
    let mut lock = Lock::default();
    let src = KernelSource::Apt("linux-image-cloud-amd64".into());
    let (k, changed) = kernel::resolve_kernel(&src, &mut lock, &opts, &AptGet).unwrap();
    assert!(changed);
    let locked = lock.kernel.clone().unwrap();
    assert!(locked.package.starts_with("linux-image-6."), "{locked:?}");
    assert!(locked.package.ends_with("-cloud-amd64"), "{locked:?}");
    assert_eq!(locked.release.as_deref(), Some(k.version.as_str()));
    assert!(k.version.ends_with("-cloud-amd64"));
    // What apt says about the resolved package is what we pinned.
    let show = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &locked.package])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!("Version: {}", locked.version)),
        "{show}"
    );
    assert!(
        show.contains(&format!("SHA256: {}", locked.deb_sha256)),
        "apt's SHA256 differs from the .deb's"
    );
    let vmlinuz = std::fs::read(&k.vmlinuz).unwrap();
    assert!(
        vmlinuz.len() > 4 << 20 && &vmlinuz[..2] == b"MZ",
        "a bzImage with an EFI stub"
    );
    lock.write(&t.path().join("krazy.lock")).unwrap();

    // A second resolution uses the lock and the cache and changes nothing.
    let mut lock2 = Lock::read(&t.path().join("krazy.lock")).unwrap();
    let (k2, changed) = kernel::resolve_kernel(&src, &mut lock2, &opts, &AptGet).unwrap();
    assert!(!changed);
    assert_eq!(k2.vmlinuz, k.vmlinuz);

    let idx = ModuleIndex::scan(k.modules_dir.as_ref().unwrap(), &k.version).unwrap();
    assert!(idx.modules.len() > 1000, "{} modules", idx.modules.len());
    assert!(
        idx.builtin.contains("ext4"),
        "the cloud kernel builds ext4 in"
    );
    assert_eq!(k.config_builtin("EXT4_FS"), Some(true));
    let closure = idx.closure(&ModuleRequest::pc()).unwrap();
    let names: Vec<&str> = closure.iter().map(|m| m.name.as_str()).collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} not in {names:?}"))
    };
    for (a, b) in [
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_pci"),
        ("virtio_pci_modern_dev", "virtio_pci"),
        ("virtio", "virtio_blk"),
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("fat", "vfat"),
    ] {
        assert!(at(a) < at(b), "{a} must load before {b}: {names:?}");
    }
    for n in ["squashfs", "nls_cp437", "nls_ascii", "efivarfs", "softdog"] {
        at(n);
    }
    // The cloud kernel has no i6300esb, so softdog is the watchdog.
    assert!(!idx.modules.contains_key("i6300esb"));
    assert!(!names.contains(&"ext4"));

    // Cross-check every module's dependencies with kmod's modinfo, and that
    // the closure is closed: each dependency is in it, earlier.
    for (i, m) in closure.iter().enumerate() {
        let out = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(idx.dir.join(&m.rel_path))
            .output()
            .expect("modinfo (package kmod)");
        assert!(out.status.success());
        let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(kernel::normalize_module_name)
            .collect();
        assert_eq!(m.depends, theirs, "{}", m.name);
        for d in &m.depends {
            assert!(at(d) < i, "{d} before {}", m.name);
        }
    }
}

/// systemd-boot from Debian's `systemd-boot-efi`, fetched with apt into the
/// same cache and pinned in the lock.
#[test]
fn systemd_boot_from_apt_is_pinned() {
    use krazy_build::config::FirmwareSource;
    use krazy_build::firmware::{resolve_firmware, Firmware};
    let opts = ResolveOptions {
        cache_dir: cache(),
        upgrade: false,
    };
    let mut lock = Lock::default();
    let src = FirmwareSource::Apt("systemd-boot-efi".into());
    let (fw, changed) = resolve_firmware(&src, &mut lock, &opts, &AptGet).unwrap();
    assert!(changed);
    let Firmware::SystemdBoot { efi, package } = fw else {
        panic!("pc firmware")
    };
    let bytes = std::fs::read(&efi).unwrap();
    assert_eq!(&bytes[..2], b"MZ");
    assert!(
        bytes.windows(12).any(|w| w == b"systemd-boot"),
        "the binary names itself"
    );
    let p = package.unwrap();
    assert_eq!(p.package, "systemd-boot-efi");
    assert_eq!(lock.firmware.as_ref(), Some(&p));
    let (_, changed) = resolve_firmware(&src, &mut lock, &opts, &AptGet).unwrap();
    assert!(!changed);
}

/// A kernel for an architecture dpkg does not know (riscv64 on this amd64
/// host) fails with the commands that make apt see it.
#[test]
fn a_foreign_kernel_says_how_to_enable_its_architecture() {
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap();
    let foreign = String::from_utf8_lossy(&foreign.stdout);
    assert!(
        !foreign.split_whitespace().any(|a| a == "riscv64"),
        "this test needs a host without the riscv64 architecture"
    );
    let t = tempfile::tempdir().unwrap();
    let opts = ResolveOptions {
        cache_dir: t.path().into(),
        upgrade: false,
    };
    let src = KernelSource::Apt("linux-image-riscv64".into());
    let e = kernel::resolve_kernel(&src, &mut Lock::default(), &opts, &AptGet).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("dpkg --add-architecture riscv64 && apt-get update"),
        "{msg}"
    );
}
