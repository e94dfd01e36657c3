//! Oracle tests for the ext4 formatter: every image is judged by e2fsprogs
//! (`e2fsck -fn`, `dumpe2fs -h`, `debugfs`) and, as root, by the kernel.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use krazy_fs::ext4::{self, Error, Ext4Options, Ext4Summary, InodeTableInit};
use krazy_fs::{BlockDevice, FileDevice, MemDevice};

const MIB: u64 = 1 << 20;
const UUID: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
];
const UUID_STR: &str = "01234567-89ab-cdef-1032-547698badcfe";
/// 2023-11-14 22:13:20 UTC.
const TIME: u64 = 1_700_000_000;
const TIME_STR: &str = "Tue Nov 14 22:13:20 2023";
const FEATURES: &str = "has_journal ext_attr dir_index filetype extent sparse_super \
                        large_file huge_file dir_nlink extra_isize metadata_csum";

fn opts() -> Ext4Options {
    Ext4Options::new(UUID, TIME).label("perm-test")
}

/// Formats a new sparse file of `size` bytes.
fn image(dir: &Path, name: &str, size: u64, opts: &Ext4Options) -> (PathBuf, Ext4Summary) {
    let path = dir.join(name);
    let file = File::create_new(&path).unwrap();
    file.set_len(size).unwrap();
    let mut dev = FileDevice::new(file, 0, size);
    let summary = ext4::format(&mut dev, opts).unwrap();
    (path, summary)
}

fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (install e2fsprogs): {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `e2fsck -fn` exits 0 and prints nothing but its passes and the summary.
fn assert_fsck_clean(path: &Path) {
    let p = path.to_str().unwrap();
    let (ok, out, err) = run("e2fsck", &["-fn", p]);
    assert!(ok, "e2fsck -fn {p} failed:\n{out}\n{err}");
    for line in out.lines() {
        assert!(
            line.starts_with("Pass ") || line.contains(" files ("),
            "e2fsck -fn {p} reported: {line}\n{out}"
        );
    }
    assert!(
        err.lines().all(|l| l.starts_with("e2fsck ")),
        "e2fsck -fn {p} said on stderr:\n{err}"
    );
}

fn dumpe2fs(path: &Path) -> HashMap<String, String> {
    let (ok, out, err) = run("dumpe2fs", &["-h", path.to_str().unwrap()]);
    assert!(ok, "dumpe2fs failed: {err}");
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn debugfs(path: &Path, request: &str) -> String {
    let (ok, out, err) = run("debugfs", &["-R", request, path.to_str().unwrap()]);
    assert!(ok, "debugfs -R {request:?} failed: {err}");
    out
}

/// The full check every size goes through.
fn check_image(path: &Path, s: &Ext4Summary, max_disk_usage: u64) {
    assert_fsck_clean(path);

    let h = dumpe2fs(path);
    assert_eq!(h["Filesystem UUID"], UUID_STR);
    assert_eq!(h["Filesystem volume name"], "perm-test");
    assert_eq!(
        h["Filesystem features"],
        FEATURES.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(h["Block count"], s.blocks.to_string());
    assert_eq!(h["Block size"], s.block_size.to_string());
    assert_eq!(h["Inode count"], s.inodes.to_string());
    assert_eq!(h["Free blocks"], s.free_blocks.to_string());
    assert_eq!(h["Free inodes"], s.free_inodes.to_string());
    assert_eq!(h["Filesystem created"], TIME_STR);
    assert_eq!(h["Filesystem state"], "clean");
    assert_eq!(h["Journal inode"], "8");
    assert_eq!(h["Total journal blocks"], s.journal_blocks.to_string());
    assert_eq!(h["Journal start"], "0");
    assert_eq!(h["Reserved block count"], (s.blocks * 5 / 100).to_string());

    let ls = debugfs(path, "ls -l /");
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.last() == Some(&name))
            .unwrap_or_else(|| panic!("{name} missing from `ls -l /`:\n{ls}"))
    };
    // Columns: inode, mode, (uid, gid, size, date..., name).
    assert_eq!(&find(".")[..4], ["2", "40755", "(2)", "0"]);
    assert_eq!(&find("..")[..2], ["2", "40755"]);
    assert_eq!(&find("lost+found")[..4], ["11", "40700", "(2)", "0"]);
    assert_eq!(rows.iter().filter(|r| !r.is_empty()).count(), 3, "{ls}");

    let st = debugfs(path, "stat /lost+found");
    assert!(st.contains("Mode:  0700"), "{st}");
    assert!(st.contains("Size: 16384"), "{st}");
    assert!(st.contains("Links: 2"), "{st}");
    assert!(st.contains("User:     0   Group:     0"), "{st}");
    let st = debugfs(path, "stat /");
    assert!(
        st.contains("Mode:  0755") && st.contains("Links: 3"),
        "{st}"
    );

    let used = fs::metadata(path).unwrap().blocks() * 512;
    assert!(
        used <= max_disk_usage,
        "{} uses {used} bytes on disk, more than {max_disk_usage}",
        path.display()
    );
}

fn check_size(size: u64, block_size: u32, max_disk_usage: u64) -> Ext4Summary {
    let dir = tempfile::tempdir().unwrap();
    let o = opts().block_size(block_size);
    let (path, s) = image(dir.path(), "fs.img", size, &o);
    check_image(&path, &s, max_disk_usage);
    s
}

#[test]
fn size_16_mib() {
    let s = check_size(16 * MIB, 4096, 256 << 10);
    assert_eq!((s.blocks, s.groups, s.journal_blocks), (4096, 1, 1024));
}

#[test]
fn size_16_mib_1k_blocks() {
    let s = check_size(16 * MIB, 1024, 256 << 10);
    assert_eq!((s.blocks, s.groups), (16384, 2));
}

#[test]
fn odd_size_partial_last_group() {
    // 17 MiB + 12 KiB: with 1 KiB blocks, three groups, the last of 1035 blocks.
    let size = 17 * MIB + 12 * 1024;
    let s = check_size(size, 1024, 256 << 10);
    assert_eq!((s.blocks, s.groups), (17420, 3));
    let s = check_size(size, 4096, 256 << 10);
    assert_eq!((s.blocks, s.groups), (4355, 1));
}

#[test]
fn too_small_tail_is_left_out() {
    // 128 MiB + 40 KiB: a 10-block tail cannot hold a group's metadata.
    let s = check_size(128 * MIB + 40 * 1024, 4096, 256 << 10);
    assert_eq!((s.blocks, s.groups), (32768, 1));
}

#[test]
fn size_100_mib() {
    check_size(100 * MIB, 4096, 256 << 10);
}

#[test]
fn size_1_gib() {
    let s = check_size(1 << 30, 4096, 512 << 10);
    assert_eq!((s.groups, s.journal_blocks), (8, 8192)); // as mke2fs
}

#[test]
fn size_64_gib() {
    let s = check_size(64 << 30, 4096, 2 * MIB);
    assert_eq!((s.groups, s.journal_blocks), (512, 131072)); // as mke2fs
}

#[test]
fn size_2_tib() {
    // The journal spans groups, so it needs an extent tree of depth 1.
    let s = check_size(2 << 40, 4096, 16 * MIB);
    assert_eq!(
        (s.blocks, s.groups, s.journal_blocks),
        (1 << 29, 16384, 262144)
    );
}

#[test]
fn out_of_range_sizes_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (size, small) in [(16 * MIB - 4096, true), ((2 << 40) + 4096, false)] {
        let file = File::create_new(dir.path().join(format!("{size}.img"))).unwrap();
        file.set_len(size).unwrap();
        let mut dev = FileDevice::new(file, 0, size);
        match ext4::format(&mut dev, &opts()) {
            Err(Error::TooSmall { size: s, .. }) if small => assert_eq!(s, size),
            Err(Error::TooLarge { size: s, .. }) if !small => assert_eq!(s, size),
            other => panic!("{size} bytes gave {other:?}"),
        }
        assert!(
            !ext4::has_filesystem(&mut dev),
            "a refused format wrote anyway"
        );
    }
    let mut dev = MemDevice::zeroed(64 * MIB as usize);
    let big_blocks = opts().block_size(65536);
    assert!(matches!(
        ext4::format(&mut dev, &big_blocks),
        Err(Error::BlockSize(65536))
    ));
}

#[test]
fn same_options_give_identical_bytes() {
    let size = 100 * MIB as usize;
    let once = |o: &Ext4Options| {
        let mut d = MemDevice::zeroed(size);
        ext4::format(&mut d, o).unwrap();
        d.into_vec()
    };
    let a = once(&opts());
    assert!(
        a == once(&opts()),
        "two formats with the same options differ"
    );
    assert!(a != once(&Ext4Options::new([2; 16], TIME).label("perm-test")));
    assert!(a != once(&opts().label("other")));
    assert!(a != once(&Ext4Options::new(UUID, TIME + 1).label("perm-test")));

    // Through files as well, compared by cmp.
    let dir = tempfile::tempdir().unwrap();
    let (p1, _) = image(dir.path(), "a.img", 256 * MIB, &opts());
    let (p2, _) = image(dir.path(), "b.img", 256 * MIB, &opts());
    let (ok, out, _) = run("cmp", &[p1.to_str().unwrap(), p2.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// A device full of stale bytes, as a reused disk might hold: lazy inode
/// tables must still check clean (e2fsck trusts only the used inodes).
fn dirty_device(size: usize) -> MemDevice {
    let mut x: u32 = 0x1234_5678;
    let bytes = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    MemDevice::from_vec(bytes)
}

fn save(dir: &Path, name: &str, dev: &MemDevice) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, dev.as_slice()).unwrap();
    path
}

#[test]
fn inode_table_modes_on_a_dirty_device() {
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB as usize;
    for (mode, name) in [
        (InodeTableInit::Lazy, "lazy.img"),
        (InodeTableInit::Zero, "zero.img"),
    ] {
        for bs in [1024, 4096] {
            let mut dev = dirty_device(size);
            let o = opts().block_size(bs).inode_tables(mode);
            let s = ext4::format(&mut dev, &o).unwrap();
            let path = save(dir.path(), name, &dev);
            assert_fsck_clean(&path);
            let groups = run("dumpe2fs", &[path.to_str().unwrap()]).1;
            let zeroed = groups.matches("ITABLE_ZEROED").count() as u32;
            let expect = if mode == InodeTableInit::Zero {
                s.groups
            } else {
                0
            };
            assert_eq!(zeroed, expect, "{mode:?} {bs}:\n{groups}");
        }
    }
    // AssumeZeroed on a zeroed device: flagged, yet nothing written there.
    let mut dev = MemDevice::zeroed(size);
    let s = ext4::format(&mut dev, &opts().inode_tables(InodeTableInit::AssumeZeroed)).unwrap();
    assert!(s.bytes_written < 64 * 1024, "{s:?}");
    let path = save(dir.path(), "assume.img", &dev);
    assert_fsck_clean(&path);
}

#[test]
fn zero_journal_writes_the_whole_journal() {
    let mut dev = dirty_device(32 * MIB as usize);
    let s = ext4::format(&mut dev, &opts().zero_journal(true)).unwrap();
    assert!(s.bytes_written >= u64::from(s.journal_blocks) * 4096);
    let dir = tempfile::tempdir().unwrap();
    assert_fsck_clean(&save(dir.path(), "j.img", &dev));
}

#[test]
fn probe_agrees_with_mke2fs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.img");
    File::create_new(&path).unwrap().set_len(32 * MIB).unwrap();
    let p = path.to_str().unwrap();
    let (ok, _, err) = run(
        "mkfs.ext4",
        &["-q", "-F", "-U", UUID_STR, "-L", "made-by-mke2fs", p],
    );
    assert!(ok, "{err}");
    let mut dev =
        FileDevice::whole(File::options().read(true).write(true).open(&path).unwrap()).unwrap();
    let info = ext4::probe(&mut dev).expect("mke2fs's superblock not recognised");
    assert_eq!(info.uuid, UUID);
    assert_eq!(info.label, "made-by-mke2fs");
    assert!(info.has_journal());
    let h = dumpe2fs(&path);
    assert_eq!(info.blocks.to_string(), h["Block count"]);
    assert_eq!(info.block_size.to_string(), h["Block size"]);

    let mut blank = MemDevice::zeroed(MIB as usize);
    assert!(!ext4::has_filesystem(&mut blank));
    blank.write_at(0, &[0xFF; 4096]).unwrap();
    assert!(ext4::probe(&mut blank).is_none());
}

/// Mounts an image, writes a file and a directory, unmounts, and checks it.
/// Needs root and loop devices; prints a note and returns when unavailable.
fn kernel_round_trip(path: &Path) {
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let (ok, _, err) = run("mount", &["-o", "loop", path.to_str().unwrap(), m]);
    if !ok {
        eprintln!("note: skipping the kernel mount check ({})", err.trim());
        return;
    }
    let work = || -> std::io::Result<()> {
        fs::write(mnt.path().join("hello.txt"), b"hello from the kernel\n")?;
        fs::create_dir(mnt.path().join("dir"))?;
        fs::write(mnt.path().join("dir/inner"), vec![7u8; 300_000])?;
        assert!(mnt.path().join("lost+found").is_dir());
        Ok(())
    };
    let result = work();
    let (ok, _, err) = run("umount", &[m]);
    assert!(ok, "umount failed: {err}");
    result.unwrap();
    assert_fsck_clean(path);
    let ls = debugfs(path, "ls -l /dir");
    assert!(ls.contains("inner"), "{ls}");
    let cat = debugfs(path, "cat /hello.txt");
    assert_eq!(cat, "hello from the kernel\n");
}

#[test]
fn kernel_mounts_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = image(dir.path(), "k.img", 100 * MIB, &opts());
    kernel_round_trip(&path);
    // Lazy inode tables over stale bytes: the kernel must not trip on them.
    let mut dev = dirty_device(64 * MIB as usize);
    ext4::format(&mut dev, &opts()).unwrap();
    kernel_round_trip(&save(dir.path(), "dirty.img", &dev));
}

#[test]
fn e2fsck_catches_a_corrupted_image() {
    // The oracle is not blind: a wrong free-inode count in the superblock fails.
    let mut dev = MemDevice::zeroed(16 * MIB as usize);
    ext4::format(&mut dev, &opts()).unwrap();
    dev.as_mut_slice()[1024 + 0x10] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), "bad.img", &dev);
    let (ok, _, _) = run("e2fsck", &["-fn", path.to_str().unwrap()]);
    assert!(!ok, "e2fsck accepted a corrupted superblock");
}
