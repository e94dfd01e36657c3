//! Kernels and their module closure: synthetic modules made with `cc -c` and
//! `objcopy --add-section .modinfo=…`, kernel packages built with
//! `dpkg-deb`, and the lock that pins them.

use krazy_build::config::KernelSource;
use krazy_build::kernel::{
    self, Kernel, KernelError, Lock, ModuleIndex, ModuleRequest, PackageSource, ResolveOptions,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a relocatable ELF object with the given `.modinfo` at `out`.
fn make_module(work: &Path, out: &Path, modinfo: &str) {
    let obj = work.join("empty.o");
    if !obj.exists() {
        fs::write(work.join("empty.c"), "int krazy_dummy;\n").unwrap();
        let st = Command::new("cc")
            .arg("-c")
            .arg(work.join("empty.c"))
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let info = work.join("modinfo.bin");
    fs::write(&info, modinfo.replace(';', "\0")).unwrap();
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let st = Command::new("objcopy")
        .arg(format!("--add-section=.modinfo={}", info.display()))
        .arg(&obj)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A fake kernel tree: boot/vmlinuz-9.9.9 plus modules with a diamond
/// dependency, a `-`/`_` name mismatch and a built-in.
fn fake_kernel(root: &Path) -> PathBuf {
    let work = root.join("work");
    fs::create_dir_all(&work).unwrap();
    let tree = root.join("kernel");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/vmlinuz-9.9.9"), b"MZ fake kernel").unwrap();
    let m = tree.join("lib/modules/9.9.9");
    make_module(
        &work,
        &m.join("kernel/drivers/virtio/virtio.ko"),
        "license=GPL;depends=virtio_ring;name=virtio;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/virtio/virtio_ring.ko"),
        "depends=;name=virtio_ring;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/virtio/virtio_pci.ko"),
        "depends=virtio-ring,virtio,virtio_pci_modern_dev;name=virtio_pci;alias=pci:v00001AF4d*",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/virtio/virtio_pci_modern_dev.ko"),
        "depends=;name=virtio_pci_modern_dev;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/block/virtio_blk.ko"),
        "depends=virtio,virtio_ring;name=virtio_blk;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/net/virtio_net.ko"),
        "depends=net_failover,virtio_ring,virtio;name=virtio_net;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/net/net_failover.ko"),
        "depends=failover;name=net_failover;",
    );
    make_module(
        &work,
        &m.join("kernel/net/core/failover.ko"),
        "depends=;name=failover;",
    );
    // No name= here: the name comes from the file name.
    make_module(
        &work,
        &m.join("kernel/fs/squashfs/squashfs.ko"),
        "depends=;",
    );
    make_module(&work, &m.join("kernel/fs/fat/fat.ko"), "depends=;name=fat;");
    make_module(
        &work,
        &m.join("kernel/fs/fat/vfat.ko"),
        "depends=fat;name=vfat;",
    );
    make_module(
        &work,
        &m.join("kernel/fs/nls/nls_cp437.ko"),
        "depends=;name=nls_cp437;",
    );
    make_module(
        &work,
        &m.join("kernel/fs/nls/nls_ascii.ko"),
        "depends=;name=nls_ascii;",
    );
    make_module(
        &work,
        &m.join("kernel/fs/efivarfs/efivarfs.ko"),
        "depends=;name=efivarfs;",
    );
    make_module(
        &work,
        &m.join("kernel/drivers/watchdog/softdog.ko"),
        "depends=;name=softdog;",
    );
    fs::write(
        m.join("modules.builtin"),
        "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n",
    )
    .unwrap();
    tree
}

fn names(c: &[kernel::Module]) -> Vec<&str> {
    c.iter().map(|m| m.name.as_str()).collect()
}

fn pos(v: &[&str], n: &str) -> usize {
    v.iter()
        .position(|x| *x == n)
        .unwrap_or_else(|| panic!("{n} missing from {v:?}"))
}

#[test]
fn synthetic_modules_closure_in_dependency_order() {
    let t = tempfile::tempdir().unwrap();
    let tree = fake_kernel(t.path());
    let k = Kernel::from_dir(&tree).unwrap();
    assert_eq!(k.version, "9.9.9");
    let idx = ModuleIndex::scan(k.modules_dir.as_ref().unwrap(), &k.version).unwrap();
    assert_eq!(idx.modules.len(), 15);
    assert!(idx.builtin.contains("ext4"));
    let c = idx.closure(&ModuleRequest::pc()).unwrap();
    let n = names(&c);
    // Exactly the closure, each once.
    let mut sorted = n.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n.len());
    assert_eq!(n.len(), 15, "{n:?}");
    // Every dependency before its user.
    for m in &c {
        for d in &m.depends {
            assert!(
                pos(&n, d) < pos(&n, &m.name),
                "{d} after {} in {n:?}",
                m.name
            );
        }
    }
    assert_eq!(
        &n[..4],
        [
            "virtio_ring",
            "virtio",
            "virtio_pci_modern_dev",
            "virtio_pci"
        ]
    );
    assert_eq!(
        c.iter().find(|m| m.name == "squashfs").unwrap().rel_path,
        "kernel/fs/squashfs/squashfs.ko"
    );
    // ext4 is built in: nothing to load. softdog stands in for i6300esb.
    assert!(!n.contains(&"ext4"));
    assert_eq!(*n.last().unwrap(), "softdog");

    // The tree for stage 1 holds exactly those files and the load order.
    let tr = idx.closure_tree(&c, 0).unwrap();
    let list = match &tr.get("etc/krazy/modules").unwrap().kind {
        krazy_fs::tree::Kind::File(c) => String::from_utf8(c.read_all().unwrap().to_vec()).unwrap(),
        _ => panic!(),
    };
    assert_eq!(list.lines().count(), 15);
    assert!(list.starts_with("kernel/drivers/virtio/virtio_ring.ko\n"));
    let files = tr
        .iter()
        .filter(|(p, e)| p.ends_with(".ko") && !e.is_dir())
        .count();
    assert_eq!(files, 15);
}

#[test]
fn missing_required_module_and_cycles_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let tree = fake_kernel(t.path());
    let m = tree.join("lib/modules/9.9.9");
    fs::remove_file(m.join("kernel/fs/squashfs/squashfs.ko")).unwrap();
    let idx = ModuleIndex::scan(&m, "9.9.9").unwrap();
    let e = idx.closure(&ModuleRequest::pc()).unwrap_err();
    assert!(
        matches!(&e, KernelError::MissingModule { name, .. } if name == "squashfs"),
        "{e}"
    );
    assert!(e.to_string().contains("9.9.9"));

    make_module(
        &t.path().join("work"),
        &m.join("kernel/a.ko"),
        "depends=b;name=a;",
    );
    make_module(
        &t.path().join("work"),
        &m.join("kernel/b.ko"),
        "depends=a;name=b;",
    );
    let idx = ModuleIndex::scan(&m, "9.9.9").unwrap();
    let req = ModuleRequest {
        required: vec!["a".into()],
        optional: vec![],
    };
    assert!(matches!(
        idx.closure(&req),
        Err(KernelError::DependencyCycle { .. })
    ));

    // A dependency that is nowhere names its user.
    make_module(
        &t.path().join("work"),
        &m.join("kernel/c.ko"),
        "depends=ghost;name=c;",
    );
    let idx = ModuleIndex::scan(&m, "9.9.9").unwrap();
    let req = ModuleRequest {
        required: vec!["c".into()],
        optional: vec![],
    };
    let e = idx.closure(&req).unwrap_err();
    assert!(
        e.to_string().contains("ghost") && e.to_string().contains("needed by c"),
        "{e}"
    );

    fs::write(m.join("kernel/junk.ko"), b"not elf").unwrap();
    let e = ModuleIndex::scan(&m, "9.9.9").unwrap_err();
    assert!(e.to_string().contains("junk.ko"), "{e}");
}

/// Builds a .deb of the fake kernel tree with dpkg-deb.
fn fake_deb(root: &Path, version: &str, kernel_bytes: &[u8]) -> PathBuf {
    let tree = fake_kernel(root);
    fs::write(tree.join("boot/vmlinuz-9.9.9"), kernel_bytes).unwrap();
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!("Package: linux-image-9.9.9-test\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test kernel\n"),
    )
    .unwrap();
    let out = root.join(format!("k-{version}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// A stand-in for apt serving fake kernel packages from a map.
struct FakeRepo {
    /// name -> (version, depends, .deb)
    pkgs: BTreeMap<String, (String, String, Option<PathBuf>)>,
}

impl PackageSource for FakeRepo {
    fn show(&self, p: &str) -> Result<BTreeMap<String, String>, KernelError> {
        let (v, d, _) = self.pkgs.get(p).ok_or(KernelError::AptField {
            package: p.into(),
            field: "Version",
        })?;
        Ok([
            ("Version".to_string(), v.clone()),
            ("Depends".to_string(), d.clone()),
        ]
        .into())
    }
    fn download(&self, p: &str, v: &str, dir: &Path) -> Result<PathBuf, KernelError> {
        let (have, _, deb) = &self.pkgs[p];
        assert_eq!(have, v, "asked for a version the repo does not have");
        let dest = dir.join(format!("{p}_{v}_all.deb"));
        fs::copy(deb.as_ref().unwrap(), &dest).unwrap();
        Ok(dest)
    }
}

#[test]
fn apt_source_is_locked_until_upgrade() {
    let t = tempfile::tempdir().unwrap();
    let deb1 = fake_deb(&t.path().join("v1"), "1.0-1", b"kernel one");
    let deb2 = fake_deb(&t.path().join("v2"), "2.0-1", b"kernel two");
    let repo = |deb: &Path, v: &str| FakeRepo {
        pkgs: [
            (
                "linux-image-test".to_string(),
                (
                    v.to_string(),
                    "linux-image-9.9.9-test (= x)".to_string(),
                    None,
                ),
            ),
            (
                "linux-image-9.9.9-test".to_string(),
                (v.to_string(), "kmod".to_string(), Some(deb.to_path_buf())),
            ),
        ]
        .into(),
    };
    let src = KernelSource::Apt("linux-image-test".into());
    let opts = ResolveOptions {
        cache_dir: t.path().join("cache"),
        upgrade: false,
    };
    let lock_path = t.path().join("krazy.lock");

    let mut lock = Lock::read(&lock_path).unwrap();
    let (k, changed) =
        kernel::resolve_kernel(&src, &mut lock, &opts, &repo(&deb1, "1.0-1")).unwrap();
    assert!(changed);
    assert_eq!(fs::read(&k.vmlinuz).unwrap(), b"kernel one");
    lock.write(&lock_path).unwrap();
    let l = Lock::read(&lock_path).unwrap().kernel.unwrap();
    assert_eq!(l.package, "linux-image-9.9.9-test");
    assert_eq!(l.version, "1.0-1");
    assert_eq!(l.deb_sha256, kernel::sha256_file(&deb1).unwrap());
    assert_eq!(
        l.vmlinuz_sha256.as_deref(),
        Some(kernel::sha256_file(&k.vmlinuz).unwrap().as_str())
    );
    assert_eq!(l.release.as_deref(), Some("9.9.9"));

    // The mirror moves on to 2.0-1, but the lock holds 1.0-1 (from the cache).
    let mut lock = Lock::read(&lock_path).unwrap();
    let (k, changed) =
        kernel::resolve_kernel(&src, &mut lock, &opts, &repo(&deb2, "2.0-1")).unwrap();
    assert!(!changed);
    assert_eq!(fs::read(&k.vmlinuz).unwrap(), b"kernel one");

    // A cached .deb that changed behind our back is refused.
    let cached = t
        .path()
        .join("cache/debs/linux-image-9.9.9-test_1.0-1_all.deb");
    fs::copy(&deb2, &cached).unwrap();
    let e = kernel::resolve_kernel(&src, &mut lock, &opts, &repo(&deb2, "2.0-1")).unwrap_err();
    assert!(matches!(e, KernelError::LockMismatch { .. }), "{e}");
    assert!(e.to_string().contains("krazy lock --upgrade"), "{e}");

    // --upgrade moves the lock.
    let up = ResolveOptions {
        upgrade: true,
        ..opts.clone()
    };
    let (k, changed) = kernel::resolve_kernel(&src, &mut lock, &up, &repo(&deb2, "2.0-1")).unwrap();
    assert!(changed);
    assert_eq!(fs::read(&k.vmlinuz).unwrap(), b"kernel two");
    assert_eq!(lock.kernel.as_ref().unwrap().version, "2.0-1");
}

#[test]
fn deb_source_is_pinned_too() {
    let t = tempfile::tempdir().unwrap();
    let deb1 = fake_deb(&t.path().join("v1"), "1.0-1", b"kernel one");
    let opts = ResolveOptions {
        cache_dir: t.path().join("cache"),
        upgrade: false,
    };
    let src = KernelSource::Deb(deb1.clone());
    let mut lock = Lock::default();
    let (k, _) = kernel::resolve_kernel(&src, &mut lock, &opts, &kernel::AptGet).unwrap();
    assert_eq!(k.version, "9.9.9");
    assert!(k
        .modules_dir
        .as_ref()
        .unwrap()
        .join("kernel/fs/fat/vfat.ko")
        .is_file());
    // The user rebuilds the .deb with another kernel at the same path.
    let deb2 = fake_deb(&t.path().join("v2"), "1.0-1", b"kernel two");
    fs::copy(&deb2, &deb1).unwrap();
    let e = kernel::resolve_kernel(&src, &mut lock, &opts, &kernel::AptGet).unwrap_err();
    assert!(matches!(e, KernelError::LockMismatch { .. }), "{e}");

    let e = Kernel::from_dir(&t.path().join("cache")).unwrap_err();
    assert!(matches!(e, KernelError::NoKernel { .. }), "{e}");
}

#[test]
fn xz_compressed_modules_are_read() {
    let t = tempfile::tempdir().unwrap();
    let tree = fake_kernel(t.path());
    let m = tree.join("lib/modules/9.9.9");
    let ko = m.join("kernel/fs/nls/nls_ascii.ko");
    assert!(Command::new("xz")
        .arg("--check=crc32")
        .arg(&ko)
        .status()
        .unwrap()
        .success());
    assert!(!ko.exists());
    let idx = ModuleIndex::scan(&m, "9.9.9").unwrap();
    assert_eq!(
        idx.modules["nls_ascii"].rel_path,
        "kernel/fs/nls/nls_ascii.ko.xz"
    );
    let c = idx.closure(&ModuleRequest::pc()).unwrap();
    assert!(c.iter().any(|m| m.name == "nls_ascii"));
}
