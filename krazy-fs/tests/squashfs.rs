//! Oracle tests: images written by krazy are read back by unsquashfs (and
//! by the kernel through a loop mount, or squashfuse, when root) and
//! compared with the tree they came from.

mod common;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use common::{awkward_tree, compare_dir, is_root, mode_string, utc_minute, Check};
use krazy_fs::squashfs::{self, Compression, Error, SquashfsOptions};
use krazy_fs::{Contents, Kind, MemDevice, Tree};

fn image(tree: &Tree, opts: &SquashfsOptions) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    let s = squashfs::write(&mut c, tree, opts).unwrap();
    let v = c.into_inner();
    assert_eq!(s.image_len as usize, v.len());
    assert_eq!(s.image_len % 4096, 0);
    assert_eq!(s.inodes as usize, tree.len() + 1);
    v
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `unsquashfs -lln` must list exactly the tree: kinds, modes, owners,
/// sizes (not of directories), times, names and symlink targets.
fn check_listing(img: &Path, tree: &Tree) {
    let out = run(Command::new("unsquashfs")
        .env("TZ", "UTC")
        .args(["-lln", "-d", "R"])
        .arg(img));
    let mut got: Vec<String> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The size field is "5,  1" for devices: everything up to the date.
            let is_date =
                |t: &&str| t.len() == 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-';
            let date = 2 + f[2..].iter().position(is_date).unwrap();
            let mut size = f[2..date].join("");
            // Directory sizes are listing sizes: not compared.
            if l.starts_with('d') {
                size = "*".into();
            }
            // unsquashfs -lln prints devices as (rdev >> 8, rdev & 0xff),
            // right only for minors below 256; extraction checks the rest.
            if l.starts_with('c') && l.ends_with("R/dev/big") {
                size = "?".into();
            }
            let rest = f[date..].join(" ");
            format!("{} {} {} {}", f[0], f[1], size, rest)
        })
        .collect();
    let mut want = vec![format!(
        "{} {}/{} * {} R",
        mode_string(tree.root()),
        tree.root().uid,
        tree.root().gid,
        utc_minute(tree.root().mtime)
    )];
    for (p, e) in tree.iter() {
        let size = match &e.kind {
            Kind::Dir => "*".to_string(),
            Kind::File(c) => c.len().unwrap().to_string(),
            Kind::Symlink(t) => t.len().to_string(),
            Kind::CharDevice { minor, .. } if *minor > 255 => "?".into(),
            Kind::CharDevice { major, minor } => format!("{major},{minor}"),
        };
        let target = match &e.kind {
            Kind::Symlink(t) => format!(" -> {t}"),
            _ => String::new(),
        };
        want.push(format!(
            "{} {}/{} {} {} R/{}{}",
            mode_string(e),
            e.uid,
            e.gid,
            size,
            utc_minute(e.mtime),
            p,
            target
        ));
    }
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

/// Extracts with unsquashfs and compares every entry with the tree.
fn check_extract(img: &Path, tree: &Tree) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-quiet", "-d"])
        .arg(&out)
        .arg(img));
    let root = is_root();
    compare_dir(
        &out,
        tree,
        Check {
            owners: root,
            modes: root,
            file_mtimes: true,
        },
    );
}

/// As root: mounts the image with the kernel's driver (or squashfuse) and
/// compares. Prints a note and returns when neither is possible.
fn check_mount(img: &Path, tree: &Tree) {
    if !is_root() {
        eprintln!("note: not root, skipping the mount check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path();
    let kernel = Command::new("mount")
        .args(["-o", "loop,ro", "-t", "squashfs"])
        .arg(img)
        .arg(mnt)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let how = if kernel {
        "kernel"
    } else if Command::new("squashfuse")
        .arg(img)
        .arg(mnt)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        "squashfuse"
    } else {
        eprintln!("note: neither a loop mount nor squashfuse worked, skipping the mount check");
        return;
    };
    eprintln!("mounted with {how}");
    let check = std::panic::catch_unwind(|| {
        compare_dir(
            mnt,
            tree,
            Check {
                owners: true,
                modes: true,
                file_mtimes: true,
            },
        )
    });
    let _ = Command::new("umount").arg(mnt).status();
    if let Err(p) = check {
        std::panic::resume_unwind(p);
    }
}

/// Writes the awkward tree and checks it with unsquashfs; `mount` also
/// checks it through the kernel (slow under load, so once per suite).
fn oracle(compression: Compression, block_size: u32, tail_ends: bool, many: usize, mount: bool) {
    let tree = awkward_tree(block_size as usize, many, false);
    let opts = SquashfsOptions {
        compression,
        block_size,
        tail_ends,
        mkfs_time: 1_234_567_890,
        ..SquashfsOptions::default()
    };
    let img = image(&tree, &opts);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img.sqfs");
    std::fs::write(&path, &img).unwrap();
    let stat = run(Command::new("unsquashfs")
        .env("TZ", "UTC")
        .arg("-s")
        .arg(&path));
    assert!(stat.contains(&format!("Block size {block_size}")), "{stat}");
    assert!(stat.contains("Fri Feb 13 23:31:30 2009"), "{stat}");
    check_listing(&path, &tree);
    check_extract(&path, &tree);
    if mount {
        check_mount(&path, &tree);
    }
}

#[test]
fn gzip_awkward_tree_reads_back() {
    oracle(
        Compression::Gzip,
        squashfs::DEFAULT_BLOCK_SIZE,
        true,
        5000,
        true,
    );
}

#[cfg(feature = "squashfs-zstd")]
#[test]
fn zstd_awkward_tree_reads_back() {
    oracle(
        Compression::Zstd,
        squashfs::DEFAULT_BLOCK_SIZE,
        true,
        5000,
        false,
    );
}

#[test]
fn uncompressed_small_blocks_without_tail_ends_read_back() {
    oracle(Compression::None, 4096, false, 300, false);
}

#[test]
fn output_is_reproducible_and_independent_of_insertion_order() {
    let opts = SquashfsOptions::default();
    let a = image(&awkward_tree(131072, 2000, false), &opts);
    let b = image(&awkward_tree(131072, 2000, false), &opts);
    let c = image(&awkward_tree(131072, 2000, true), &opts);
    assert!(a == b, "two writes of one tree differ");
    assert!(a == c, "insertion order changed the image");
}

#[test]
fn duplicates_are_stored_once_and_tails_pack_into_fragments() {
    let mut tree = Tree::new();
    let body = common::noise(9, 300_000);
    tree.add_file("a", Contents::bytes(body.clone()), 0o644, 0)
        .unwrap();
    let one = image(&tree, &SquashfsOptions::default()).len();
    tree.add_file("b", Contents::bytes(body), 0o644, 0).unwrap();
    let two = image(&tree, &SquashfsOptions::default()).len();
    assert_eq!(one, two, "a duplicate file took space");
    let no_dedup = SquashfsOptions {
        dedup: false,
        ..SquashfsOptions::default()
    };
    assert!(image(&tree, &no_dedup).len() > two);
}

#[test]
fn device_output_matches_stream_output() {
    let tree = awkward_tree(131072, 100, false);
    let opts = SquashfsOptions::default();
    let img = image(&tree, &opts);
    let mut dev = MemDevice::zeroed(img.len() + 8192);
    let s = squashfs::write_to_device(&mut dev, &tree, &opts).unwrap();
    assert_eq!(s.image_len as usize, img.len());
    assert!(dev.as_slice()[..img.len()] == img[..]);
    let mut small = MemDevice::zeroed(img.len() / 2);
    assert!(matches!(
        squashfs::write_to_device(&mut small, &tree, &opts),
        Err(Error::Write(_))
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut tree = Tree::new();
    tree.add_file("late", Contents::bytes("x"), 0o644, 1 << 33)
        .unwrap();
    let e = squashfs::write(
        &mut Cursor::new(Vec::new()),
        &tree,
        &SquashfsOptions::default(),
    );
    assert!(matches!(e, Err(Error::TimeOutOfRange { ref path, .. }) if path == "late"));

    let tree = Tree::new();
    for bs in [0, 1000, 2048, 2 << 20] {
        let opts = SquashfsOptions {
            block_size: bs,
            ..SquashfsOptions::default()
        };
        let e = squashfs::write(&mut Cursor::new(Vec::new()), &tree, &opts);
        assert!(matches!(e, Err(Error::BlockSize(b)) if b == bs));
    }
    let opts = SquashfsOptions {
        level: Some(10),
        ..SquashfsOptions::default()
    };
    let e = squashfs::write(&mut Cursor::new(Vec::new()), &tree, &opts);
    assert!(matches!(e, Err(Error::Level { level: 10, .. })));

    let mut tree = Tree::new();
    tree.add_file("missing-parent/x", Contents::bytes(""), 0o644, 0)
        .unwrap();
    let e = squashfs::write(
        &mut Cursor::new(Vec::new()),
        &tree,
        &SquashfsOptions::default(),
    );
    assert!(matches!(e, Err(Error::Tree(_))));

    let mut tree = Tree::new();
    tree.add_file(
        "gone",
        Contents::Host("/nonexistent/krazy".into()),
        0o644,
        0,
    )
    .unwrap();
    let e = squashfs::write(
        &mut Cursor::new(Vec::new()),
        &tree,
        &SquashfsOptions::default(),
    );
    assert!(matches!(e, Err(Error::Read { ref path, .. }) if path == "gone"));
}

#[test]
fn empty_tree_reads_back() {
    let mut tree = Tree::new();
    tree.root_mut().mode = 0o700;
    let img = image(&tree, &SquashfsOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sqfs");
    std::fs::write(&path, &img).unwrap();
    check_listing(&path, &tree);
    check_extract(&path, &tree);
}
