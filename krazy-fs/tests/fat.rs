//! Oracle tests of the FAT writer and in-place editor: every image is
//! checked by `fsck.fat -n` and read back with mtools (and, as root, a
//! read-only loop mount), then compared with the tree it was written from.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use krazy_fs::fat::{self, Capacity, Error, FatOptions, FatSummary, FatType, FatVolume, Pad};
use krazy_fs::{BlockDevice, Contents, FileDevice, MemDevice, Tree, TreeError};

const MIB: u64 = 1 << 20;
/// 2024-05-17 12:34:56 UTC.
const TIME: u64 = 1_715_949_296;

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Path -> contents (`None` for a directory) of what a tree should hold.
type Expected = BTreeMap<String, Option<Vec<u8>>>;

fn expected(tree: &Tree, opts: &FatOptions) -> Expected {
    tree.iter()
        .map(|(p, e)| {
            let c = match &e.kind {
                krazy_fs::Kind::File(c) => {
                    let mut b = c.read_all().unwrap().to_vec();
                    if let Some(cap) = opts.capacities.get(p) {
                        b.resize(cap.bytes as usize, cap.pad.byte());
                    }
                    Some(b)
                }
                _ => None,
            };
            (p.to_string(), c)
        })
        .collect()
}

fn add(tree: &mut Tree, path: &str, data: Vec<u8>) {
    tree.add_file(path, Contents::bytes(data), 0o644, TIME)
        .unwrap();
}

/// A tree of awkward cases; `one_cluster` bytes make a file of exactly one cluster.
fn awkward_tree(one_cluster: usize) -> Tree {
    let mut t = Tree::new();
    // Long names: 255 UTF-16 units, ASCII and with surrogate pairs.
    add(
        &mut t,
        &format!("{}.txt", "L".repeat(251)),
        b"long".to_vec(),
    );
    // (Host file names hold 255 bytes of UTF-8, so this one stays shorter;
    // mtools 4.0.32 cannot show characters outside the BMP, see below.)
    add(&mut t, &format!("{}€", "ü".repeat(120)), b"euro".to_vec());
    add(&mut t, "Ünïcode ファイル.txt", "grüße".as_bytes().to_vec());
    add(
        &mut t,
        "README.TXT",
        b"an 8.3 name, stored without a long name\n".to_vec(),
    );
    add(&mut t, "vmlinuz", noise(3 * MIB as usize + 123, 1));
    add(&mut t, "empty", Vec::new());
    add(&mut t, "one-cluster.bin", noise(one_cluster, 2));
    add(&mut t, "cluster-plus-one.bin", noise(one_cluster + 1, 3));
    add(&mut t, ".hidden", b"dot".to_vec());
    add(&mut t, "my file.tar.gz", b"dots and spaces".to_vec());
    add(&mut t, "A+B", b"lossy".to_vec());
    add(
        &mut t,
        "A_B~1",
        b"a real name that looks generated".to_vec(),
    );
    for i in 0..12 {
        add(
            &mut t,
            &format!("longfilename{i}.conf"),
            format!("{i}").into_bytes(),
        );
    }
    t.add_dir("EFI", 0o755, TIME).unwrap();
    t.add_dir("EFI/BOOT", 0o755, TIME).unwrap();
    add(&mut t, "EFI/BOOT/BOOTX64.EFI", noise(70_000, 4));
    t.add_dir("empty dir", 0o755, TIME).unwrap();
    let mut deep = String::from("deep");
    t.add_dir(&deep, 0o755, TIME).unwrap();
    for i in 0..30 {
        deep.push_str(&format!("/level {i}"));
        t.add_dir(&deep, 0o755, TIME).unwrap();
    }
    add(&mut t, &format!("{deep}/bottom.txt"), b"bottom".to_vec());
    t
}

fn image(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fat.img");
    File::create(&p).unwrap().set_len(len).unwrap();
    (dir, p)
}

fn write_image(path: &Path, tree: &Tree, opts: &FatOptions) -> FatSummary {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut dev = FileDevice::whole(f).unwrap();
    fat::write(&mut dev, tree, opts).unwrap()
}

/// `fsck.fat -n` must exit 0 and print nothing but its banner and summary.
fn assert_fsck_clean(path: &Path) {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck.fat failed:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "fsck.fat reported something:\n{text}");
    assert!(lines[1].contains(" files, "), "{text}");
    assert!(!text.contains("Dirty"), "{text}");
}

fn mtools(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("LC_ALL", "C.UTF-8")
        .env("MTOOLS_SKIP_CHECK", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_host_dir(root: &Path) -> Expected {
    let mut out = Expected::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Extracts the whole volume with `mcopy -s` and compares it with `want`.
fn assert_mtools_matches(img_spec: &str, want: &Expected) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("{}/", out.path().display());
    mtools(&["mcopy", "-s", "-n", "-i", img_spec, "::/*", &dest]);
    let got = read_host_dir(out.path());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "names differ"
    );
    for (p, c) in want {
        assert!(got[p] == *c, "contents of {p:?} differ");
    }
}

/// Every file's and directory's clusters are one consecutive run, and our
/// reader lists the same names and returns the same contents.
fn assert_reader_matches(dev: impl BlockDevice, want: &Expected) {
    let mut vol = FatVolume::open(dev).unwrap();
    let mut got = Expected::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for e in vol.list(&dir).unwrap() {
            let p = if dir.is_empty() {
                e.name.clone()
            } else {
                format!("{dir}/{}", e.name)
            };
            let clusters = vol.entry_clusters(&e, &p).unwrap();
            assert!(
                clusters.windows(2).all(|w| w[1] == w[0] + 1),
                "{p:?} is fragmented: {clusters:?}"
            );
            if e.is_dir() {
                stack.push(p.clone());
                got.insert(p, None);
            } else {
                got.insert(p.clone(), Some(vol.read_entry(&e, &p).unwrap()));
            }
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, c) in want {
        assert!(got[p] == *c, "{p:?} reads back wrong");
    }
    // Lookups are case-insensitive and find long and short names.
    if let Some(p) = want.keys().find(|p| !p.contains('/')) {
        assert_eq!(vol.lookup(&p.to_uppercase()).unwrap().name, *p);
    }
}

fn check_volume(fat_type: FatType, size: u64, fat_name: &str) {
    // Learn the cluster size first, then build a tree with a one-cluster file.
    let probe = FatOptions::default().with_fat_type(fat_type);
    let cs = fat::write(&mut MemDevice::zeroed(size as usize), &Tree::new(), &probe)
        .unwrap()
        .cluster_size;
    let tree = awkward_tree(cs as usize);
    let opts = FatOptions {
        label: Some("KRAZY BOOT".into()),
        ..probe
    };
    let (_d, img) = image(size);
    let s = write_image(&img, &tree, &opts);
    assert_eq!(s.cluster_size, cs);
    assert_eq!(format!("{:?}", s.fat_type), fat_name);
    assert_fsck_clean(&img);
    let want = expected(&tree, &opts);
    assert_mtools_matches(img.to_str().unwrap(), &want);
    // 8.3 names that are already uppercase get no long name; others do.
    let list =
        String::from_utf8(mtools(&["mdir", "-i", img.to_str().unwrap(), "::/"]).stdout).unwrap();
    assert!(list.contains("KRAZY BOOT"), "{list}");
    let readme = list
        .lines()
        .find(|l| l.starts_with("README   TXT"))
        .unwrap();
    assert!(!readme.trim_end().ends_with("README.TXT"), "{readme}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("VMLINUZ ") && l.ends_with(" vmlinuz")),
        "{list}"
    );
    assert_reader_matches(FileDevice::whole(File::open(&img).unwrap()).unwrap(), &want);
    loop_mount_matches(&img, &want);
}

#[test]
fn fat16_awkward_tree_reads_back_with_fsck_and_mtools() {
    check_volume(FatType::Fat16, 64 * MIB, "Fat16");
}

#[test]
fn fat32_awkward_tree_reads_back_with_fsck_and_mtools() {
    check_volume(FatType::Fat32, 64 * MIB, "Fat32");
}

#[test]
fn auto_picks_fat32_for_a_512_mib_esp_and_fat16_below() {
    let t = Tree::new();
    let o = FatOptions::default();
    let (_d, img) = image(512 * MIB);
    let s = write_image(&img, &t, &o);
    assert_eq!((s.fat_type, s.cluster_size), (FatType::Fat32, 4096));
    assert_fsck_clean(&img);
    let s = fat::write(&mut MemDevice::zeroed(8 << 20), &t, &o).unwrap();
    assert_eq!(s.fat_type, FatType::Fat16);
}

fn many_files(n: usize, dir: &str) -> Tree {
    let mut t = Tree::new();
    if !dir.is_empty() {
        t.add_dir(dir, 0o755, TIME).unwrap();
    }
    for i in 0..n {
        let p = format!(
            "{dir}{}file-{i:05}.txt",
            if dir.is_empty() { "" } else { "/" }
        );
        add(&mut t, &p, format!("file {i}\n").into_bytes());
    }
    t
}

#[test]
fn five_thousand_files_in_one_directory() {
    // FAT32: a subdirectory of 5,000 files (15,002 entries with long names).
    let tree = many_files(5000, "many");
    let opts = FatOptions::default().with_fat_type(FatType::Fat32);
    let (_d, img) = image(64 * MIB);
    write_image(&img, &tree, &opts);
    assert_fsck_clean(&img);
    assert_mtools_matches(img.to_str().unwrap(), &expected(&tree, &opts));

    // FAT16: 5,000 files fit in a root directory sized for them.
    let tree = many_files(5000, "");
    let opts = FatOptions::default().with_fat_type(FatType::Fat16);
    let (_d2, img) = image(32 * MIB);
    let s = write_image(&img, &tree, &opts);
    assert_eq!(s.root_entries, 15008);
    assert_fsck_clean(&img);
    let want = expected(&tree, &opts);
    // mcopy -s takes seconds per thousand files in a FAT16 root, so here
    // mtools lists all names and prints a sample of the files.
    let spec = img.to_str().unwrap();
    let listed = String::from_utf8(mtools(&["mdir", "-b", "-i", spec, "::/"]).stdout).unwrap();
    let names: Vec<&str> = listed
        .lines()
        .map(|l| l.trim_start_matches("::/"))
        .collect();
    assert_eq!(names, want.keys().map(|k| k.as_str()).collect::<Vec<_>>());
    for (p, c) in want.iter().step_by(499) {
        let out = mtools(&["mtype", "-i", spec, &format!("::/{p}")]).stdout;
        assert!(Some(out) == *c, "{p:?} differs");
    }
    assert_reader_matches(FileDevice::whole(File::open(&img).unwrap()).unwrap(), &want);
}

#[test]
fn names_outside_the_bmp_use_surrogate_pairs() {
    // mtools 4.0.32 shows such characters as `_`, so this test reads the
    // long name back with our reader (and, as root, the kernel's vfat).
    let mut t = Tree::new();
    let name = format!("{}🦀.txt", "ü".repeat(248));
    assert_eq!(name.encode_utf16().count(), 254);
    add(&mut t, &name, b"crab".to_vec());
    let (_d, img) = image(16 * MIB);
    write_image(&img, &t, &FatOptions::default());
    assert_fsck_clean(&img);
    let want = expected(&t, &FatOptions::default());
    assert_reader_matches(FileDevice::whole(File::open(&img).unwrap()).unwrap(), &want);
    let list =
        String::from_utf8(mtools(&["mdir", "-i", img.to_str().unwrap(), "::/"]).stdout).unwrap();
    assert!(list.contains("1 file"), "{list}");
}

#[test]
fn too_many_entries_are_clear_errors() {
    // Names of 170 characters need 14 long-name entries each.
    let mut t = Tree::new();
    for i in 0..5000 {
        add(&mut t, &format!("{i:05}{}", "x".repeat(165)), Vec::new());
    }
    let mut dev = MemDevice::zeroed(32 << 20);
    let e = fat::write(&mut dev, &t, &FatOptions::default()).unwrap_err();
    assert!(matches!(e, Error::RootDirFull { needed: 75000, .. }), "{e}");
    assert!(
        dev.as_slice().iter().all(|&b| b == 0),
        "nothing may be written"
    );
    let e = fat::write(
        &mut dev,
        &t,
        &FatOptions::default().with_fat_type(FatType::Fat32),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::DirectoryTooLarge { ref path, needed: 75000 } if path.is_empty()),
        "{e}"
    );
}

#[test]
fn writes_inside_a_bigger_image_at_an_offset() {
    let tree = awkward_tree(2048);
    let (_d, img) = image(80 * MIB);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let before = noise(4 * MIB as usize, 9);
    f.write_all_at(&before, 0).unwrap();
    f.write_all_at(&before, 68 * MIB).unwrap();
    let opts = FatOptions {
        hidden_sectors: 8192,
        ..FatOptions::default()
    };
    let mut dev = FileDevice::new(f, 4 * MIB, 64 * MIB);
    fat::write(&mut dev, &tree, &opts).unwrap();
    let f = dev.into_inner();
    let mut buf = vec![0u8; before.len()];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf == before, "bytes before the window changed");
    f.read_exact_at(&mut buf, 68 * MIB).unwrap();
    assert!(buf == before, "bytes after the window changed");
    let mut boot = [0u8; 4];
    f.read_exact_at(&mut boot, 4 * MIB + 28).unwrap();
    assert_eq!(u32::from_le_bytes(boot), 8192, "hidden sectors");
    let want = expected(&tree, &opts);
    assert_mtools_matches(&format!("{}@@{}", img.display(), 4 * MIB), &want);
    // fsck.fat takes no offset: check a copy of the window.
    let mut part = vec![0u8; 64 * MIB as usize];
    f.read_exact_at(&mut part, 4 * MIB).unwrap();
    let copy = img.with_file_name("part.img");
    fs::write(&copy, &part).unwrap();
    assert_fsck_clean(&copy);
    assert_reader_matches(MemDevice::from_vec(part), &want);
}

#[test]
fn output_is_reproducible_and_honours_times() {
    let tree = awkward_tree(1024);
    let opts = FatOptions::default().with_timestamp(TIME);
    let mut a = MemDevice::zeroed(16 << 20);
    let mut b = MemDevice::zeroed(16 << 20);
    fat::write(&mut a, &tree, &opts).unwrap();
    fat::write(&mut b, &tree, &opts).unwrap();
    assert!(a == b, "two writes differ");
    // Unused clusters aside, old bytes on the device do not leak into the result.
    let mut c = MemDevice::from_vec(vec![0xa5; 16 << 20]);
    let s = fat::write(&mut c, &tree, &opts).unwrap();
    let used_end = s.data_offset as usize + s.used_clusters as usize * s.cluster_size as usize;
    assert!(a.as_slice()[..used_end] == c.as_slice()[..used_end]);

    let mut vol = FatVolume::open(&mut a).unwrap();
    let e = vol.lookup("README.TXT").unwrap();
    // 2024-05-17 12:34:56
    assert_eq!((e.date >> 9, (e.date >> 5) & 15, e.date & 31), (44, 5, 17));
    assert_eq!(
        (e.time >> 11, (e.time >> 5) & 63, (e.time & 31) * 2),
        (12, 34, 56)
    );
}

#[test]
fn capacity_files_are_overwritten_in_place_and_nothing_else_changes() {
    let mut t = Tree::new();
    for d in ["loader", "loader/entries", "krazy", "krazy/a", "krazy/b"] {
        t.add_dir(d, 0o755, TIME).unwrap();
    }
    add(
        &mut t,
        "loader/loader.conf",
        b"default krazy-a.conf\ntimeout 0\n".to_vec(),
    );
    add(
        &mut t,
        "loader/entries/krazy-a.conf",
        b"linux /krazy/a/vmlinuz\n".to_vec(),
    );
    add(&mut t, "krazy/a/vmlinuz", noise(300_000, 5));
    add(&mut t, "krazy/b/vmlinuz", noise(200_000, 6));
    add(&mut t, "krazy/b/initrd", Vec::new());
    add(
        &mut t,
        "autoboot.txt",
        b"[all]\nboot_partition=2\n".to_vec(),
    );
    let opts = FatOptions::default()
        .with_capacity("loader/loader.conf", Capacity::new(4096, Pad::Space))
        .with_capacity("autoboot.txt", Capacity::new(512, Pad::Space))
        .with_capacity("krazy/a/vmlinuz", Capacity::new(MIB, Pad::Zero))
        .with_capacity("/krazy/b/vmlinuz", Capacity::new(MIB, Pad::Zero))
        .with_capacity("krazy/b/initrd", Capacity::new(MIB / 2, Pad::Zero));
    let (_d, img) = image(32 * MIB);
    write_image(&img, &t, &opts);
    assert_fsck_clean(&img);
    let spec = img.to_str().unwrap();
    let want = expected(&t, &opts);
    assert_eq!(want["loader/loader.conf"].as_ref().unwrap().len(), 4096);
    assert!(want["krazy/b/initrd"]
        .as_ref()
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_mtools_matches(spec, &want);

    let before = fs::read(&img).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut vol = FatVolume::open(FileDevice::whole(f).unwrap()).unwrap();
    let new_kernel = noise(700_000, 7);
    vol.overwrite("krazy/b/vmlinuz", &new_kernel, 0).unwrap();
    vol.overwrite("LOADER/LOADER.CONF", b"default krazy-b.conf\n", b' ')
        .unwrap();
    let e = vol
        .overwrite("autoboot.txt", &[b'#'; 513], b' ')
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLong {
                len: 513,
                size: 512,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        vol.overwrite("krazy", b"", 0),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        vol.overwrite("nope/x", b"", 0),
        Err(Error::NotFound { .. })
    ));

    // Only bytes inside the two files' clusters changed.
    let mut allowed = Vec::new();
    for p in ["krazy/b/vmlinuz", "loader/loader.conf"] {
        for c in vol.clusters(p).unwrap() {
            let o = vol.cluster_offset(c) as usize;
            allowed.push(o..o + vol.cluster_size() as usize);
        }
    }
    drop(vol);
    let after = fs::read(&img).unwrap();
    let changed: Vec<usize> = (0..before.len())
        .step_by(4096)
        .filter(|&i| before[i..i + 4096] != after[i..i + 4096])
        .flat_map(|i| (i..i + 4096).filter(|&j| before[j] != after[j]))
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|i| allowed.iter().any(|r| r.contains(i))),
        "bytes outside the overwritten files changed"
    );
    assert_fsck_clean(&img);
    let mut want = want;
    let mut k = new_kernel.clone();
    k.resize(MIB as usize, 0);
    want.insert("krazy/b/vmlinuz".into(), Some(k));
    let mut conf = b"default krazy-b.conf\n".to_vec();
    conf.resize(4096, b' ');
    want.insert("loader/loader.conf".into(), Some(conf));
    assert_mtools_matches(spec, &want);
}

#[test]
fn bad_trees_and_options_are_typed_errors() {
    let mut dev = MemDevice::zeroed(8 << 20);
    let o = FatOptions::default();
    let tree_err = |t: &Tree, dev: &mut MemDevice| match fat::write(dev, t, &o) {
        Err(Error::Tree(e)) => e,
        other => panic!("expected a tree error, got {other:?}"),
    };
    for (name, _) in [
        ("trailing.", 0),
        ("trailing ", 0),
        ("what?", 0),
        ("a|b", 0),
        ("tab\t", 0),
    ] {
        let mut t = Tree::new();
        add(&mut t, name, Vec::new());
        assert!(
            matches!(tree_err(&t, &mut dev), TreeError::BadName { .. }),
            "{name:?}"
        );
    }
    let mut t = Tree::new();
    add(&mut t, &"n".repeat(256), Vec::new());
    assert!(matches!(
        tree_err(&t, &mut dev),
        TreeError::NameTooLong { max: 255, .. }
    ));
    let mut t = Tree::new();
    add(&mut t, "Boot.conf", Vec::new());
    add(&mut t, "BOOT.CONF", Vec::new());
    assert!(matches!(
        tree_err(&t, &mut dev),
        TreeError::CaseCollision { .. }
    ));
    let mut t = Tree::new();
    t.add_symlink("link", "/x", 0).unwrap();
    assert!(matches!(
        tree_err(&t, &mut dev),
        TreeError::UnsupportedKind { .. }
    ));

    let mut t = Tree::new();
    add(&mut t, "big", vec![1; 9 << 20]);
    assert!(matches!(
        fat::write(&mut dev, &t, &o),
        Err(Error::DoesNotFit { .. })
    ));
    let o16 = FatOptions::default().with_fat_type(FatType::Fat16);
    let o32 = FatOptions::default().with_fat_type(FatType::Fat32);
    let tiny = &mut MemDevice::zeroed(1 << 20);
    assert!(matches!(
        fat::write(tiny, &Tree::new(), &o16),
        Err(Error::BadSize { .. })
    ));
    assert!(matches!(
        fat::write(&mut dev, &Tree::new(), &o32),
        Err(Error::BadSize { .. })
    ));
    let e = fat::write(
        &mut dev,
        &Tree::new(),
        &FatOptions::default().with_capacity("missing", Capacity::new(1, Pad::Zero)),
    );
    assert!(matches!(e, Err(Error::CapacityNotAFile { .. })));
    let mut t = Tree::new();
    add(&mut t, "f", vec![1; 100]);
    let e = fat::write(
        &mut dev,
        &t,
        &o.clone().with_capacity("f", Capacity::new(99, Pad::Zero)),
    );
    assert!(matches!(
        e,
        Err(Error::CapacityTooSmall {
            len: 100,
            capacity: 99,
            ..
        })
    ));
    let bad_label = FatOptions {
        label: Some("way too long label".into()),
        ..FatOptions::default()
    };
    assert!(matches!(
        fat::write(&mut dev, &t, &bad_label),
        Err(Error::BadOption { .. })
    ));
}

#[test]
fn reader_survives_corruption() {
    let tree = awkward_tree(1024);
    let mut dev = MemDevice::zeroed(8 << 20);
    fat::write(&mut dev, &tree, &FatOptions::default()).unwrap();
    let good = dev.clone().into_vec();

    // A FAT entry that points at itself: a loop, not a hang.
    let mut vol = FatVolume::open(MemDevice::from_vec(good.clone())).unwrap();
    let c = vol.clusters("vmlinuz").unwrap()[0];
    let fat_off = u16::from_le_bytes([good[14], good[15]]) as usize * 512;
    let mut bad = good.clone();
    bad[fat_off + c as usize * 2..][..2].copy_from_slice(&(c as u16).to_le_bytes());
    let mut vol = FatVolume::open(MemDevice::from_vec(bad)).unwrap();
    assert!(matches!(
        vol.read_file("vmlinuz"),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        vol.overwrite("vmlinuz", b"x", 0),
        Err(Error::Corrupt { .. })
    ));

    // Broken boot sectors.
    for (at, val) in [(510usize, 0u8), (11, 1), (12, 3), (13, 3), (16, 0), (14, 0)] {
        let mut bad = good.clone();
        bad[at] = val;
        if at == 14 {
            bad[15] = 0;
        }
        assert!(matches!(
            FatVolume::open(MemDevice::from_vec(bad)),
            Err(Error::BadBootSector(_))
        ));
    }
    // Truncated: opens, but reads past the end fail cleanly.
    let mut vol = FatVolume::open(MemDevice::from_vec(good[..40_000].to_vec())).unwrap();
    assert!(vol.read_file("vmlinuz").is_err());
    // Every single-byte corruption of the metadata is survived.
    for i in (0..40_000).step_by(97) {
        let mut bad = good[..60_000].to_vec();
        bad[i] ^= 0xff;
        if let Ok(mut vol) = FatVolume::open(MemDevice::from_vec(bad)) {
            let _ = vol.list("");
            let _ = vol.read_file("README.TXT");
            let _ = vol.overwrite("README.TXT", b"x", 0);
        }
    }
}

/// As root, mounts the image read-only through a loop device and compares;
/// skips with a note when mounting is not possible here.
fn loop_mount_matches(img: &Path, want: &Expected) {
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    if uid.trim_ascii() != b"0" {
        eprintln!("note: not root, skipping the loop-mount check");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop,ro,utf8", "-t", "vfat"])
        .arg(img)
        .arg(mnt.path())
        .output()
        .unwrap();
    if !st.status.success() {
        eprintln!(
            "note: loop mount failed, skipping it: {}",
            String::from_utf8_lossy(&st.stderr).trim()
        );
        return;
    }
    let got = read_host_dir(mnt.path());
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, c) in want {
        assert!(got[p] == *c, "mounted contents of {p:?} differ");
    }
}

#[test]
fn a_zeroed_device_keeps_zero_padding_as_holes() {
    use std::os::unix::fs::MetadataExt;
    let mut t = Tree::new();
    for d in ["krazy", "krazy/a"] {
        t.add_dir(d, 0o755, TIME).unwrap();
    }
    add(&mut t, "krazy/a/vmlinuz", noise(300_000, 5));
    add(&mut t, "krazy/a/initrd", Vec::new());
    let caps = FatOptions::default()
        .with_timestamp(TIME)
        .with_capacity("krazy/a/vmlinuz", Capacity::new(16 * MIB, Pad::Zero))
        .with_capacity("krazy/a/initrd", Capacity::new(8 * MIB, Pad::Zero));
    let (_d, written) = image(64 * MIB);
    write_image(&written, &t, &caps);
    let skipping = FatOptions {
        device_zeroed: true,
        ..caps.clone()
    };
    let (_d2, sparse) = image(64 * MIB);
    write_image(&sparse, &t, &skipping);
    assert!(
        fs::read(&written).unwrap() == fs::read(&sparse).unwrap(),
        "the same bytes either way"
    );
    assert_fsck_clean(&sparse);
    assert_mtools_matches(sparse.to_str().unwrap(), &expected(&t, &caps));
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&sparse) + 20 * MIB <= allocated(&written),
        "the padding stays a hole: {} vs {} bytes allocated",
        allocated(&sparse),
        allocated(&written)
    );
}
