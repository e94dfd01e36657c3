//! .deb files built by the reference tool (`dpkg-deb --build`) with each
//! compression are unpacked by krazy-build's pure-Rust reader and compared
//! with what went in; a corrupt package gives a clear error.

use krazy_build::deb::{self, DebError, MemKind};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds a small kernel-like package with `dpkg-deb -Z<comp>`.
fn build_deb(dir: &Path, comp: &str) -> PathBuf {
    let root = dir.join(format!("pkg-{comp}"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: linux-image-9.9.9-test\nVersion: 9.9.9-1\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test kernel\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("boot")).unwrap();
    // Incompressible-ish bytes so the compressors really work.
    let kernel: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(root.join("boot/vmlinuz-9.9.9-test"), &kernel).unwrap();
    let m = root.join("lib/modules/9.9.9-test/kernel/fs");
    fs::create_dir_all(&m).unwrap();
    fs::write(m.join("a.ko"), b"module a").unwrap();
    fs::write(m.join("b.ko"), vec![b'b'; 70_000]).unwrap();
    fs::set_permissions(m.join("b.ko"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("a.ko", m.join("link.ko")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    fs::write(root.join("usr/share/doc/readme"), b"skip me").unwrap();
    let out = dir.join(format!("test-{comp}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", &format!("-Z{comp}"), "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .expect("dpkg-deb runs (package dpkg)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

fn wanted(p: &str) -> bool {
    p.starts_with("boot/vmlinuz-") || p.starts_with("lib/modules/")
}

fn check_compression(comp: &str, member: &str) {
    let t = tempfile::tempdir().unwrap();
    let debp = build_deb(t.path(), comp);
    let ar_list = Command::new("ar").arg("t").arg(&debp).output().unwrap();
    assert!(String::from_utf8_lossy(&ar_list.stdout).contains(member));

    let dest = t.path().join("out");
    let got = deb::extract_to_dir(&debp, &dest, wanted).unwrap();
    let src = t.path().join(format!("pkg-{comp}"));
    for f in [
        "boot/vmlinuz-9.9.9-test",
        "lib/modules/9.9.9-test/kernel/fs/a.ko",
        "lib/modules/9.9.9-test/kernel/fs/b.ko",
    ] {
        assert_eq!(
            fs::read(dest.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap(),
            "{f}"
        );
        assert!(got.files.iter().any(|g| g == f), "{f} in {:?}", got.files);
    }
    let mode = fs::metadata(dest.join("lib/modules/9.9.9-test/kernel/fs/b.ko"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::read_link(dest.join("lib/modules/9.9.9-test/kernel/fs/link.ko")).unwrap(),
        Path::new("a.ko")
    );
    assert!(!dest.join("usr").exists(), "unwanted files were extracted");

    // Same bytes into memory.
    let mem = deb::extract_to_memory(
        fs::File::open(&debp).unwrap(),
        &debp,
        |p| p.starts_with("boot/"),
        1 << 20,
    )
    .unwrap();
    let k: Vec<_> = mem
        .iter()
        .filter(|e| matches!(e.kind, MemKind::File(_)))
        .collect();
    assert_eq!(k.len(), 1);
    assert_eq!(
        k[0].kind,
        MemKind::File(fs::read(src.join("boot/vmlinuz-9.9.9-test")).unwrap())
    );

    let (name, version) = deb::package_id(&debp).unwrap();
    assert_eq!(
        (name.as_str(), version.as_str()),
        ("linux-image-9.9.9-test", "9.9.9-1")
    );
}

#[test]
fn dpkg_deb_xz() {
    check_compression("xz", "data.tar.xz");
}

#[test]
fn dpkg_deb_zstd() {
    check_compression("zstd", "data.tar.zst");
}

#[test]
fn dpkg_deb_gzip() {
    check_compression("gzip", "data.tar.gz");
}

#[test]
fn dpkg_deb_uncompressed() {
    check_compression("none", "data.tar");
}

#[test]
fn corrupt_packages_give_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let debp = build_deb(t.path(), "xz");
    let mut bytes = fs::read(&debp).unwrap();
    // Flip bytes in the middle of the xz stream.
    let n = bytes.len();
    for b in &mut bytes[n / 2..n / 2 + 64] {
        *b ^= 0x5a;
    }
    let bad = t.path().join("bad.deb");
    fs::write(&bad, &bytes).unwrap();
    let e = deb::extract_to_dir(&bad, &t.path().join("o"), |_| true).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("bad.deb"), "{msg}");
    assert!(
        matches!(e, DebError::Tar { .. } | DebError::Corrupt { .. }),
        "{msg}"
    );

    // Truncated.
    fs::write(&bad, &fs::read(&debp).unwrap()[..n / 3]).unwrap();
    let e = deb::extract_to_dir(&bad, &t.path().join("o2"), |_| true).unwrap_err();
    assert!(e.to_string().contains("bad.deb"), "{e}");

    // Not a package at all.
    fs::write(&bad, b"#!/bin/sh\necho hi\n").unwrap();
    let e = deb::extract_to_dir(&bad, &t.path().join("o3"), |_| true).unwrap_err();
    assert!(matches!(e, DebError::NotAr { .. }), "{e}");

    // Missing file.
    let e = deb::extract_to_dir(&t.path().join("nope.deb"), &t.path().join("o4"), |_| true)
        .unwrap_err();
    assert!(
        matches!(e, DebError::Read { .. }) && e.to_string().contains("nope.deb"),
        "{e}"
    );
}
