//! Writing images onto real loop devices: a GPT + FAT + ext4 image over a
//! device full of random bytes, checked with sgdisk, fsck.fat, e2fsck, the
//! kernel's own mounts and a byte compare; every refusal (mounted device,
//! mounted partition, swap, the disk holding `/`, a partition, read-only,
//! busy, wrong size, a regular file); and a read-back that catches a byte
//! changed behind the writer's back. Needs root and losetup (CI has both).
//!
//! `cargo test -p krazy-build --test flash -- --ignored --nocapture
//! measure` prints the throughput figures quoted in the module docs.

mod common;

use krazy_build::flash::{
    inspect_target, inspect_target_with, write_image, write_image_with, FlashError, Holes, Phase,
    Progress, Reread, TargetOptions, Verify, WriteOptions, ZeroWith,
};
use krazy_fs::{BlockDevice, FileDevice, Tree};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MIB: u64 = 1 << 20;

fn can_run() -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let have = |c: &str| Command::new(c).arg("--version").output().is_ok();
    if !(root && have("losetup") && have("sgdisk")) {
        common::skip("needs root, losetup and sgdisk");
        return false;
    }
    true
}

/// Runs a command, asserts it succeeded, returns its stdout and stderr.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed: {text}");
    text
}

/// A loop device, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path, partscan: bool) -> Loop {
        let mut args = vec!["-f", "--show"];
        if partscan {
            args.push("-P");
        }
        let f = file.to_str().unwrap();
        args.push(f);
        let dev = run("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
        Loop(PathBuf::from(dev))
    }

    /// Makes sure the kernel shows the partitions: it may lack a GPT
    /// parser (this CI kernel has no CONFIG_EFI_PARTITION), so add them
    /// from user space with partx, as udev-less systems do.
    fn partitions(&self) {
        if !self.part(1).exists() {
            run("partx", &["-a", self.0.to_str().unwrap()]);
        }
        assert!(self.part(1).exists(), "no {}", self.part(1).display());
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.0.display()))
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &Path, dir: &Path, opts: &[&str]) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let mut args = opts.to_vec();
        args.push(dev.to_str().unwrap());
        args.push(dir.to_str().unwrap());
        run("mount", &args);
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
struct Rng(u64);

impl Rng {
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A file of `size` random bytes: a device that held something before.
fn garbage_file(path: &Path, size: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Partition byte ranges of the test image.
struct Image {
    path: PathBuf,
    esp: Range<u64>,
    root: Range<u64>,
    perm: Range<u64>,
    files: Vec<(String, Vec<u8>)>,
}

/// A sparse image like krazy's: GPT by sgdisk, a FAT ESP with files, a
/// "root" partition with 5 MiB of data at its start, and an ext4 perm
/// filling the rest.
fn make_image(path: &Path, size: u64) -> Image {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let p = path.to_str().unwrap();
    run(
        "sgdisk",
        &[
            "-n",
            &format!("1:1M:+{}M", size / 4 / MIB),
            "-t",
            "1:ef00",
            "-c",
            "1:esp",
            "-n",
            &format!("2:0:+{}M", size / 4 / MIB),
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "3:0:0",
            "-t",
            "3:8300",
            "-c",
            "3:perm",
            p,
        ],
    );
    let gpt = krazy_disk::read::read_gpt(&mut File::open(path).unwrap(), size).unwrap();
    let range = |n: u32| {
        let q = gpt.partition(n).unwrap();
        q.first_lba * 512..(q.last_lba + 1) * 512
    };
    let (esp, root, perm) = (range(1), range(2), range(3));

    let mut rng = Rng(42);
    let mut big = vec![0u8; 3 * MIB as usize + 123];
    rng.fill(&mut big);
    let files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), big),
        (
            "loader/loader.conf".to_string(),
            b"default krazy-a.conf\n".to_vec(),
        ),
        ("hello.txt".to_string(), b"hello, krazy\n".to_vec()),
    ];
    let mut tree = Tree::new();
    for (name, data) in &files {
        if let Some((dir, _)) = name.rsplit_once('/') {
            tree.add_dir_all(dir, 1_700_000_000).unwrap();
        }
        tree.add_file(
            name,
            krazy_fs::Contents::bytes(data.clone()),
            0o644,
            1_700_000_000,
        )
        .unwrap();
    }
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    };
    let mut dev = FileDevice::new(rw(), esp.start, esp.end - esp.start);
    krazy_fs::fat::write(&mut dev, &tree, &krazy_fs::fat::FatOptions::default()).unwrap();

    let mut data = vec![0u8; 5 * MIB as usize];
    rng.fill(&mut data);
    rw().write_all_at(&data, root.start).unwrap();

    let mut dev = FileDevice::new(rw(), perm.start, perm.end - perm.start);
    let opts = krazy_fs::ext4::Ext4Options::new([9; 16], 1_700_000_000).label("perm");
    krazy_fs::ext4::format(&mut dev, &opts).unwrap();
    dev.flush().unwrap();
    Image {
        path: path.to_path_buf(),
        esp,
        root,
        perm,
        files,
    }
}

/// Asserts the device equals the image except inside `skip`.
fn assert_same_except(image: &Path, dev: &Path, skip: &[Range<u64>]) {
    let a = File::open(image).unwrap();
    let b = File::open(dev).unwrap();
    let size = a.metadata().unwrap().len();
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(x.len() as u64) as usize;
        a.read_exact_at(&mut x[..n], off).unwrap();
        b.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            for i in 0..n {
                let at = off + i as u64;
                if x[i] != y[i] && !skip.iter().any(|r| r.contains(&at)) {
                    panic!("{} differs from the image at byte {at}", dev.display());
                }
            }
        }
        off += n as u64;
    }
}

/// Checks the partitions with the reference tools and the kernel.
fn check_with_tools(lo: &Loop, img: &Image, work: &Path) {
    lo.partitions();
    let out = run("sgdisk", &["-v", lo.0.to_str().unwrap()]);
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
    run("fsck.fat", &["-n", lo.part(1).to_str().unwrap()]);
    run("e2fsck", &["-fn", lo.part(3).to_str().unwrap()]);
    // The ESP's files, through mtools (this kernel has no vfat).
    for (i, (name, data)) in img.files.iter().enumerate() {
        let out = work.join(format!("esp-file-{i}"));
        run(
            "mcopy",
            &[
                "-n",
                "-i",
                lo.part(1).to_str().unwrap(),
                &format!("::/{name}"),
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(&fs::read(&out).unwrap(), data, "{name} on the ESP");
    }
    {
        // The kernel writes to the perm, and e2fsck still finds it clean.
        let m = Mount::new(&lo.part(3), &work.join("perm"), &[]);
        fs::write(m.0.join("count"), b"1\n").unwrap();
        assert!(m.0.join("lost+found").is_dir());
    }
    run("e2fsck", &["-fn", lo.part(3).to_str().unwrap()]);
}

#[test]
fn all_holes_make_the_device_byte_identical() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    garbage_file(&t.path().join("disk"), size, 7);
    let img = make_image(&t.path().join("img"), size);
    let lo = Loop::attach(&t.path().join("disk"), true);

    let target = inspect_target(&lo.0).unwrap();
    assert_eq!(target.size, size);
    assert_eq!(target.logical_sector_size, 512);
    assert_eq!(target.name.as_deref(), Some(lo.name().as_str()));
    let mut seen: Vec<Progress> = Vec::new();
    let opts = WriteOptions {
        holes: Holes::All,
        ..WriteOptions::default()
    };
    let report = write_image_with(&img.path, &target, &opts, |p| seen.push(p)).unwrap();
    assert_eq!(report.size, size);
    assert_eq!(report.data_bytes + report.zeroed_bytes, size);
    assert!(report.holes_left.is_empty());
    assert!(report.data_bytes < 20 * MIB, "{report:?}");
    assert_eq!(report.verified_bytes, size);
    assert!(
        matches!(report.partition_table, Reread::Done { .. }),
        "{report:?}"
    );
    assert_eq!(report.image_partitions, 3);
    // Progress: every phase starts at 0 and ends at its total, never decreasing.
    for phase in [Phase::Write, Phase::Sync, Phase::Verify] {
        let ps: Vec<_> = seen.iter().filter(|p| p.phase == phase).collect();
        assert_eq!(ps.first().unwrap().done, 0, "{phase}");
        let last = ps.last().unwrap();
        assert_eq!(last.done, last.total, "{phase}");
        assert!(ps.windows(2).all(|w| w[0].done <= w[1].done), "{phase}");
    }
    drop(target);

    let out = run("cmp", &[img.path.to_str().unwrap(), lo.0.to_str().unwrap()]);
    assert!(out.is_empty(), "{out}");
    check_with_tools(&lo, &img, t.path());
}

#[test]
fn auto_holes_skip_only_ext4_free_space() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    garbage_file(&t.path().join("disk"), size, 11);
    let img = make_image(&t.path().join("img"), size);
    let lo = Loop::attach(&t.path().join("disk"), true);

    let target = inspect_target(&lo.0).unwrap();
    let report = write_image(&img.path, &target, |_| {}).unwrap();
    drop(target);
    // Holes left alone lie inside the perm, past its first MiB and before its last.
    assert!(!report.holes_left.is_empty());
    let inner = img.perm.start + MIB..img.perm.end - MIB;
    for r in &report.holes_left {
        assert!(
            inner.start <= r.start && r.end <= inner.end,
            "{r:?} outside {inner:?}"
        );
    }
    let left: u64 = report.holes_left.iter().map(|r| r.end - r.start).sum();
    assert!(left > 100 * MIB, "only {left} bytes left alone");
    assert_eq!(report.data_bytes + report.zeroed_bytes + left, size);
    // The ESP's and root's holes were zeroed: the FAT tail and the slack after
    // the root data read as zeros, as in the image.
    assert!(report.zeroed_bytes > img.esp.end - img.esp.start - 4 * MIB);
    assert!(img.root.end - img.root.start > 5 * MIB);
    assert_same_except(&img.path, &lo.0, &report.holes_left);
    // And the garbage is really still there in what was left.
    let mut b = vec![0u8; 4096];
    let r = report
        .holes_left
        .iter()
        .find(|r| r.end - r.start >= 4096)
        .unwrap();
    File::open(&lo.0)
        .unwrap()
        .read_exact_at(&mut b, r.start)
        .unwrap();
    assert!(b.iter().any(|&x| x != 0));
    check_with_tools(&lo, &img, t.path());
}

#[test]
fn auto_holes_zero_the_inode_tables_mke2fs_left_as_holes() {
    if !can_run() {
        return;
    }
    // mke2fs on a file punches the file and marks every inode table
    // ITABLE_ZEROED without writing it: those holes must become zeros. (The
    // check against dumpe2fs's inode tables is what catches a writer that
    // leaves them: e2fsck and a first mount do not read unused inodes.)
    let t = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    garbage_file(&t.path().join("disk"), size, 23);
    let img = make_image(&t.path().join("img"), size);
    let perm_len = img.perm.end - img.perm.start;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            &format!("offset={}", img.perm.start),
            img.path.to_str().unwrap(),
            &format!("{}k", perm_len / 1024),
        ],
    );
    // The inode tables, as dumpe2fs sees them in the image.
    let part = Loop(PathBuf::from(
        run(
            "losetup",
            &[
                "-f",
                "--show",
                "-r",
                "-o",
                &img.perm.start.to_string(),
                "--sizelimit",
                &perm_len.to_string(),
                img.path.to_str().unwrap(),
            ],
        )
        .trim(),
    ));
    let dump = run("dumpe2fs", &[part.0.to_str().unwrap()]);
    drop(part);
    assert!(dump.contains("ITABLE_ZEROED"), "{dump}");
    let bs: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let tables: Vec<Range<u64>> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Inode table at "))
        .map(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            img.perm.start + a * bs..img.perm.start + (b + 1) * bs
        })
        .collect();
    assert!(!tables.is_empty());

    let lo = Loop::attach(&t.path().join("disk"), true);
    let target = inspect_target(&lo.0).unwrap();
    let report = write_image(&img.path, &target, |_| {}).unwrap();
    drop(target);
    for r in &report.holes_left {
        for it in &tables {
            assert!(
                r.end <= it.start || it.end <= r.start,
                "{r:?} left inside inode table {it:?}"
            );
        }
    }
    let left: u64 = report.holes_left.iter().map(|r| r.end - r.start).sum();
    assert!(left > 50 * MIB, "only {left} bytes left alone");
    assert_same_except(&img.path, &lo.0, &report.holes_left);
    check_with_tools(&lo, &img, t.path());
}

#[test]
fn read_back_catches_a_byte_changed_behind_the_writer() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let disk = t.path().join("disk");
    garbage_file(&disk, size, 3);
    let img = t.path().join("img");
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    let mut data = vec![0u8; 2 * MIB as usize];
    Rng(5).fill(&mut data);
    f.write_all_at(&data, 8 * MIB).unwrap();
    drop(f);
    let lo = Loop::attach(&disk, false);
    let target = inspect_target(&lo.0).unwrap();
    let bad = 8 * MIB + 777_777;
    let backing = OpenOptions::new().write(true).open(&disk).unwrap();
    let mut once = false;
    let err = write_image(&img, &target, |p| {
        if p.phase == Phase::Verify && !once {
            once = true;
            // Another writer changes one byte of the device (through the
            // loop device's backing file) after the flush.
            backing.write_all_at(&[!data[777_777]], bad).unwrap();
            backing.sync_all().unwrap();
        }
    })
    .unwrap_err();
    match &err {
        FlashError::Verify {
            chunks, mismatches, ..
        } => {
            assert_eq!(*chunks, 1);
            assert_eq!(mismatches[0].offset, bad);
            assert_eq!(mismatches[0].differing_bytes, 1);
        }
        e => panic!("expected a verify error, got {e}"),
    }
    assert!(
        err.to_string().contains(&format!("first at byte {bad}")),
        "{err}"
    );
}

#[test]
fn loop_without_partscan_is_written_and_the_reread_is_reported() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let size = 128 * MIB;
    garbage_file(&t.path().join("disk"), size, 13);
    let img = make_image(&t.path().join("img"), size);
    let lo = Loop::attach(&t.path().join("disk"), false);
    let target = inspect_target(&lo.0).unwrap();
    let opts = WriteOptions {
        holes: Holes::All,
        verify: Verify::Data,
        zero_with: ZeroWith::Writes,
        chunk_bytes: 1 << 20,
    };
    let report = write_image_with(&img.path, &target, &opts, |_| {}).unwrap();
    assert!(
        matches!(report.partition_table, Reread::Failed(_)),
        "{report:?}"
    );
    assert_eq!(report.verified_bytes, report.data_bytes);
    assert!(!report.zero_fallback);
    drop(target);
    let out = run("cmp", &[img.path.to_str().unwrap(), lo.0.to_str().unwrap()]);
    assert!(out.is_empty(), "{out}");
}

#[test]
fn refuses_a_mounted_device_naming_the_mount_point() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("disk");
    File::create(&disk).unwrap().set_len(32 * MIB).unwrap();
    run("mkfs.ext4", &["-q", disk.to_str().unwrap()]);
    let lo = Loop::attach(&disk, false);
    let mnt = t.path().join("mnt dir");
    let m = Mount::new(&lo.0, &mnt, &[]);
    let err = inspect_target(&lo.0).unwrap_err();
    match &err {
        FlashError::Mounted { mounts, .. } => {
            assert_eq!(mounts.len(), 1);
            assert_eq!(mounts[0].device, lo.0);
            assert_eq!(mounts[0].mount_point, mnt);
        }
        e => panic!("expected Mounted, got {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("umount '{}'", mnt.display())),
        "{msg}"
    );
    drop(m);
    // Unmounted, it is accepted.
    inspect_target(&lo.0).unwrap();
}

#[test]
fn refuses_a_disk_with_a_mounted_partition_and_a_partition_itself() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("disk");
    File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    run(
        "sgdisk",
        &["-n", "1:1M:+20M", "-n", "2:0:0", disk.to_str().unwrap()],
    );
    let lo = Loop::attach(&disk, true);
    lo.partitions();
    run("mkfs.ext4", &["-q", lo.part(2).to_str().unwrap()]);

    let err = inspect_target(&lo.part(1)).unwrap_err();
    match &err {
        FlashError::IsPartition { disk, .. } => assert_eq!(disk, &lo.0),
        e => panic!("expected IsPartition, got {e}"),
    }

    let mnt = t.path().join("mnt");
    let m = Mount::new(&lo.part(2), &mnt, &[]);
    match inspect_target(&lo.0).unwrap_err() {
        FlashError::Mounted { mounts, .. } => {
            assert_eq!(mounts.len(), 1);
            assert_eq!(mounts[0].device, lo.part(2));
            assert_eq!(mounts[0].mount_point, mnt);
        }
        e => panic!("expected Mounted, got {e}"),
    }
    drop(m);

    // As swap.
    run("mkswap", &[lo.part(1).to_str().unwrap()]);
    let on = Command::new("swapon").arg(lo.part(1)).output().unwrap();
    if on.status.success() {
        let err = inspect_target(&lo.0).unwrap_err();
        let _ = Command::new("swapoff").arg(lo.part(1)).status();
        match &err {
            FlashError::Swap { device, .. } => assert_eq!(device, &lo.part(1)),
            e => panic!("expected Swap, got {e}"),
        }
        assert!(err.to_string().contains("swapoff"), "{err}");
    } else {
        eprintln!(
            "swapon not permitted here ({}); swap refusal not exercised",
            String::from_utf8_lossy(&on.stderr).trim()
        );
    }
    inspect_target(&lo.0).unwrap();
}

#[test]
fn refuses_the_disk_that_holds_root() {
    if !can_run() {
        return;
    }
    // Which block device is / on? (The test trusts findmnt, not the code under test.)
    let src = run("findmnt", &["-n", "-o", "SOURCE", "/"])
        .trim()
        .to_string();
    let Ok(meta) = fs::metadata(&src) else {
        eprintln!("skipping: / is on {src:?}, not a block device");
        return;
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        eprintln!("skipping: / is on {src:?}, not a block device");
        return;
    }
    // Its whole disk, through lsblk.
    let disk = run("lsblk", &["-n", "-s", "-o", "PATH,TYPE", &src]);
    let disk = disk
        .lines()
        .filter(|l| l.trim_end().ends_with("disk"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .next()
        .unwrap_or(src.clone());
    match inspect_target(Path::new(&disk)).unwrap_err() {
        FlashError::RootDisk { root_device, .. } => assert_eq!(root_device, PathBuf::from(&src)),
        e => panic!("expected RootDisk for {disk}, got {e}"),
    }
}

#[test]
fn refuses_wrong_sizes_files_read_only_and_busy_devices() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("disk");
    garbage_file(&disk, 32 * MIB, 17);
    let before = fs::read(&disk).unwrap();

    // A regular file, unless allowed.
    match inspect_target(&disk).unwrap_err() {
        FlashError::NotABlockDevice { kind, .. } => assert_eq!(kind, "regular file"),
        e => panic!("expected NotABlockDevice, got {e}"),
    }
    let lo = Loop::attach(&disk, false);

    // Wrong size: refused before anything is written.
    let img = t.path().join("img");
    let f = File::create(&img).unwrap();
    f.set_len(31 * MIB).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    drop(f);
    let target = inspect_target(&lo.0).unwrap();
    let err = write_image(&img, &target, |_| {}).unwrap_err();
    match &err {
        FlashError::SizeMismatch {
            image_size,
            device_size,
            ..
        } => assert_eq!((*image_size, *device_size), (31 * MIB, 32 * MIB)),
        e => panic!("expected SizeMismatch, got {e}"),
    }
    assert!(
        err.to_string().contains(&format!("--size {}", 32 * MIB)),
        "{err}"
    );

    // Held exclusively by the first target: a second is refused.
    match inspect_target(&lo.0).unwrap_err() {
        FlashError::Busy { .. } => {}
        e => panic!("expected Busy, got {e}"),
    }
    drop(target);
    assert!(
        fs::read(&disk).unwrap() == before,
        "a refused write changed the device"
    );

    // Read-only.
    run("blockdev", &["--setro", lo.0.to_str().unwrap()]);
    let err = inspect_target(&lo.0).unwrap_err();
    run("blockdev", &["--setrw", lo.0.to_str().unwrap()]);
    assert!(matches!(err, FlashError::ReadOnly { .. }), "{err}");
    drop(lo);

    // A regular file, allowed: written like a device, holes punched.
    let img = t.path().join("img");
    File::create(&img).unwrap().set_len(32 * MIB).unwrap();
    let mut data = vec![0u8; MIB as usize];
    Rng(1).fill(&mut data);
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&data, 4 * MIB)
        .unwrap();
    let opts = TargetOptions {
        allow_regular_file: true,
    };
    let target = inspect_target_with(&disk, &opts).unwrap();
    match write_image(&disk, &target, |_| {}).unwrap_err() {
        FlashError::SameFile { .. } => {}
        e => panic!("expected SameFile, got {e}"),
    }
    let report = write_image(&img, &target, |_| {}).unwrap();
    assert_eq!(report.partition_table, Reread::NotABlockDevice);
    assert_eq!(fs::read(&disk).unwrap(), fs::read(&img).unwrap());
    let blocks = fs::metadata(&disk).unwrap().blocks() * 512;
    assert!(
        blocks < 4 * MIB,
        "holes were not punched: {blocks} bytes allocated"
    );
}

/// Throughput on loop devices: write_image against dd, and kernel zeroing
/// against zero writes. Prints figures; asserts nothing about time.
#[test]
#[ignore]
fn measure() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let size = 1024 * MIB;
    let img = t.path().join("img");
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    // ~200 MiB of data in 25 extents of 8 MiB, spread over the image.
    let mut rng = Rng(99);
    let mut buf = vec![0u8; 8 * MIB as usize];
    for i in 0..25u64 {
        rng.fill(&mut buf);
        f.write_all_at(&buf, i * 40 * MIB).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let data_mib = 200;

    let secs = |t: Instant| t.elapsed().as_secs_f64();
    let mbps = |bytes: u64, s: f64| bytes as f64 / MIB as f64 / s;
    for (label, backing_dir, dio) in [
        ("ext4-backed loop", t.path().to_path_buf(), false),
        ("ext4-backed loop, direct-io", t.path().to_path_buf(), true),
        ("tmpfs-backed loop", PathBuf::from("/dev/shm"), false),
    ] {
        let disk = backing_dir.join(format!("krazy-flash-measure-{}", std::process::id()));
        garbage_file(&disk, size, 1);
        let lo = {
            let mut args = vec!["-f", "--show"];
            if dio {
                args.push("--direct-io=on");
            }
            args.push(disk.to_str().unwrap());
            Loop(PathBuf::from(run("losetup", &args).trim()))
        };
        let dev = lo.0.to_str().unwrap().to_string();
        println!("== {label} ({dev}), 1 GiB image with {data_mib} MiB of data");
        for (name, holes, verify, zero_with) in [
            (
                "write_image, all holes, verify all",
                Holes::All,
                Verify::Written,
                ZeroWith::Kernel,
            ),
            (
                "write_image, all holes, no verify",
                Holes::All,
                Verify::Off,
                ZeroWith::Kernel,
            ),
            (
                "write_image, zeros by writes, no verify",
                Holes::All,
                Verify::Off,
                ZeroWith::Writes,
            ),
            (
                "write_image, data only, no verify",
                Holes::Keep,
                Verify::Off,
                ZeroWith::Kernel,
            ),
            (
                "write_image, data only, verify data",
                Holes::Keep,
                Verify::Data,
                ZeroWith::Kernel,
            ),
        ] {
            let target = inspect_target(&lo.0).unwrap();
            let opts = WriteOptions {
                holes,
                verify,
                zero_with,
                ..WriteOptions::default()
            };
            let s = Instant::now();
            let r = write_image_with(&img, &target, &opts, |_| {}).unwrap();
            let total = secs(s);
            println!(
                "{name:45} {total:6.2} s (write {:.2} s, sync {:.2} s, verify {:.2} s; zeroed {} MiB{})",
                r.write_time.as_secs_f64(),
                r.sync_time.as_secs_f64(),
                r.verify_time.as_secs_f64(),
                r.zeroed_bytes / MIB,
                if r.zero_fallback { ", fallback" } else { "" }
            );
        }
        for (name, extra) in [
            ("dd bs=4M conv=fsync", vec!["conv=fsync"]),
            (
                "dd bs=4M oflag=direct conv=fsync",
                vec!["oflag=direct", "conv=fsync"],
            ),
            (
                "dd bs=4M conv=sparse,fsync (leaves old bytes)",
                vec!["conv=sparse,fsync"],
            ),
        ] {
            let mut args = vec![
                format!("if={}", img.display()),
                format!("of={dev}"),
                "bs=4M".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let s = Instant::now();
            let out = Command::new("dd").args(&args).output().unwrap();
            assert!(out.status.success());
            let total = secs(s);
            println!(
                "{name:45} {total:6.2} s ({:.0} MiB/s of device)",
                mbps(size, total)
            );
        }
        let s = Instant::now();
        run("cmp", &[img.to_str().unwrap(), &dev]);
        println!(
            "{:45} {:6.2} s",
            "cmp image device (buffered read-back)",
            secs(s)
        );
        drop(lo);
        let _ = fs::remove_file(&disk);
    }
}
