//! The real PID 1 platform: a blank /perm is formatted with krazy-fs's ext4
//! (checked by e2fsck), and a PARTUUID that is not a GUID or not present is
//! simply not found.
#![cfg(feature = "pid1")]

use krazy_init::pid1::{LinuxPlatform, Platform};
use std::process::Command;

#[test]
fn blank_perm_is_formatted_as_clean_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("perm.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let p = LinuxPlatform::default();
    p.format_ext4(&img).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Filesystem volume name:   perm"), "{text}");
    // A missing device is an error that names it.
    let err = p.format_ext4(&dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn partuuid_lookup_over_an_empty_or_bogus_sysfs_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys/block")).unwrap();
    std::fs::create_dir_all(dir.path().join("dev")).unwrap();
    let p = LinuxPlatform {
        sys_block: dir.path().join("sys/block"),
        dev: dir.path().join("dev"),
    };
    assert_eq!(p.find_partuuid("not-a-guid"), None);
    assert_eq!(
        p.find_partuuid("0fc63daf-8483-4772-8e79-3d69d8477de4"),
        None
    );
}
