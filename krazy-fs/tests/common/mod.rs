//! Shared by the oracle tests: an awkward tree and a comparison of an
//! extracted (or mounted) directory with the tree it came from.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use krazy_fs::{Contents, Entry, Kind, Tree};

/// Deterministic bytes that compress somewhat, like real files.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let words: [&[u8]; 8] = [
        b"squash ",
        b"krazy ",
        b"\x7fELF\x02\x01",
        b"block ",
        b"\0\0\0\0",
        b"inode ",
        b"fragment ",
        b"\xff\xfe",
    ];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 3 == 0 {
            v.push((x >> 24) as u8);
        } else {
            v.extend_from_slice(words[(x >> 40) as usize % words.len()]);
        }
    }
    v.truncate(len);
    v
}

fn entry(kind: Kind, mode: u32, uid: u32, gid: u32, mtime: u64) -> Entry {
    Entry {
        kind,
        mode,
        uid,
        gid,
        mtime,
    }
}

/// The entries of the awkward tree, in an order given by `reverse`.
pub fn awkward_entries(block: usize, many: usize) -> Vec<(String, Entry)> {
    let t = 1_700_000_000;
    let mut v: Vec<(String, Entry)> = Vec::new();
    let file = |b: Vec<u8>| Kind::File(Contents::bytes(b));
    v.push((
        "a".repeat(255),
        entry(file(b"long name\n".to_vec()), 0o644, 0, 0, t),
    ));
    v.push((
        "grüße-日本語.txt".into(),
        entry(file("ünïcödé\n".into()), 0o640, 0, 0, t + 1),
    ));
    v.push((
        "emoji-🦀".into(),
        entry(file(Vec::new()), 0o600, 0, 0, t + 2),
    ));
    v.push(("empty".into(), entry(file(Vec::new()), 0o644, 0, 0, t)));
    v.push((
        "one-block".into(),
        entry(file(noise(1, block)), 0o644, 0, 0, t),
    ));
    v.push((
        "block-and-a-bit".into(),
        entry(file(noise(2, 3 * block + 77)), 0o644, 0, 0, t),
    ));
    v.push((
        "zeros".into(),
        entry(file(vec![0; 8 << 20]), 0o644, 0, 0, t),
    ));
    v.push((
        "dup-a".into(),
        entry(file(noise(3, block + 5)), 0o644, 0, 0, t),
    ));
    v.push((
        "dup-b".into(),
        entry(file(noise(3, block + 5)), 0o444, 0, 0, t),
    ));
    v.push(("owned".into(), entry(Kind::Dir, 0o750, 1000, 1000, t + 3)));
    v.push((
        "owned/by-1234".into(),
        entry(file(b"x".to_vec()), 0o604, 1234, 5678, t),
    ));
    v.push((
        "owned/setuid".into(),
        entry(file(b"#!/bin/sh\n".to_vec()), 0o4755, 0, 0, t),
    ));
    v.push((
        "owned/setgid-sticky".into(),
        entry(file(b"y".to_vec()), 0o3711, 0, 42, t),
    ));
    v.push((
        "owned/odd".into(),
        entry(file(b"z".to_vec()), 0o1703, 7, 7, t),
    ));
    v.push(("links".into(), entry(Kind::Dir, 0o755, 0, 0, t)));
    v.push((
        "links/rel".into(),
        entry(Kind::Symlink("../one-block".into()), 0o777, 0, 0, t),
    ));
    v.push((
        "links/abs".into(),
        entry(Kind::Symlink("/etc/hostname".into()), 0o777, 0, 0, t),
    ));
    v.push((
        "links/dangling".into(),
        entry(Kind::Symlink("nowhere/ü".into()), 0o777, 5, 6, t),
    ));
    v.push(("dev".into(), entry(Kind::Dir, 0o755, 0, 0, t)));
    v.push((
        "dev/console".into(),
        entry(Kind::CharDevice { major: 5, minor: 1 }, 0o600, 0, 5, t),
    ));
    v.push((
        "dev/big".into(),
        entry(
            Kind::CharDevice {
                major: 300,
                minor: 70000,
            },
            0o666,
            0,
            0,
            t,
        ),
    ));
    v.push(("empty-dir".into(), entry(Kind::Dir, 0o700, 0, 0, t)));
    let mut deep = String::from("deep");
    v.push((deep.clone(), entry(Kind::Dir, 0o755, 0, 0, t)));
    for i in 1..50 {
        deep.push_str(&format!("/d{i}"));
        v.push((deep.clone(), entry(Kind::Dir, 0o755, 0, 0, t + i)));
    }
    v.push((
        format!("{deep}/leaf"),
        entry(file(b"deep\n".to_vec()), 0o644, 0, 0, t),
    ));
    v.push(("many".into(), entry(Kind::Dir, 0o755, 0, 0, t)));
    for i in 0..many {
        let body = if i % 10 == 0 {
            Vec::new()
        } else {
            format!("file {i}\n").into_bytes()
        };
        let name = format!("many/file-{i:05}-{}", "n".repeat(i % 40));
        v.push((
            name,
            entry(file(body), 0o644, (i % 3) as u32, 0, t + i as u64),
        ));
    }
    v
}

/// The awkward tree: long and non-ASCII names, `many` files in one
/// directory, empty files, exact and partial blocks, 8 MiB of zeros,
/// 50 levels of directories, symlinks, devices, odd modes and owners.
pub fn awkward_tree(block: usize, many: usize, reverse: bool) -> Tree {
    let mut entries = awkward_entries(block, many);
    if reverse {
        entries.reverse();
    }
    let mut tree = Tree::new();
    tree.root_mut().mtime = 1_600_000_000;
    tree.root_mut().mode = 0o755;
    for (p, e) in entries {
        tree.insert(&p, e).unwrap();
    }
    tree
}

/// What [`compare_dir`] checks besides names, kinds and contents.
#[derive(Clone, Copy)]
pub struct Check {
    /// Owners and groups.
    pub owners: bool,
    /// Permission bits incl. setuid/setgid/sticky.
    pub modes: bool,
    /// Modification times of files.
    pub file_mtimes: bool,
}

/// Compares `dir` with `tree`: the same set of entries, kinds, contents,
/// symlink targets, device numbers, and what `check` asks for.
pub fn compare_dir(dir: &Path, tree: &Tree, check: Check) {
    let mut found = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            found += 1;
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    assert_eq!(found, tree.len(), "entry count in {}", dir.display());
    for (path, e) in tree.iter() {
        let p = dir.join(path);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{path}: {err}"));
        let ft = m.file_type();
        match &e.kind {
            Kind::Dir => assert!(ft.is_dir(), "{path} should be a directory"),
            Kind::File(c) => {
                assert!(ft.is_file(), "{path} should be a file");
                assert!(
                    fs::read(&p).unwrap()[..] == c.read_all().unwrap()[..],
                    "{path}: contents differ"
                );
                if check.file_mtimes {
                    assert_eq!(m.mtime() as u64, e.mtime, "{path}: mtime");
                }
            }
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{path} should be a symlink");
                assert_eq!(
                    fs::read_link(&p).unwrap().to_str().unwrap(),
                    t,
                    "{path}: target"
                );
            }
            Kind::CharDevice { major, minor } => {
                assert!(ft.is_char_device(), "{path} should be a char device");
                let rdev = m.rdev();
                let (ma, mi) = (
                    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
                    (rdev & 0xff) | ((rdev >> 12) & !0xff),
                );
                assert_eq!(
                    (ma as u32, mi as u32),
                    (*major, *minor),
                    "{path}: device number"
                );
            }
        }
        if check.modes && !ft.is_symlink() {
            assert_eq!(m.mode() & 0o7777, e.mode, "{path}: mode {:o}", m.mode());
        }
        if check.owners {
            assert_eq!((m.uid(), m.gid()), (e.uid, e.gid), "{path}: owner");
        }
    }
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `YYYY-MM-DD HH:MM` in UTC, as `ls`-like tools print with `TZ=UTC`.
pub fn utc_minute(t: u64) -> String {
    let days = (t / 86400) as i64;
    let (h, mi) = ((t % 86400) / 3600, (t % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}")
}

/// `ls -l`-style permission string of an entry.
pub fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::File(_) => '-',
        Kind::Symlink(_) => 'l',
        Kind::CharDevice { .. } => 'c',
    };
    let m = e.mode;
    let mut s = String::from(t);
    for (i, (r, w, x, special, sc, su)) in [
        ('r', 'w', 'x', 0o4000, 's', 'S'),
        ('r', 'w', 'x', 0o2000, 's', 'S'),
        ('r', 'w', 'x', 0o1000, 't', 'T'),
    ]
    .into_iter()
    .enumerate()
    {
        let bits = (m >> (6 - 3 * i)) & 7;
        s.push(if bits & 4 != 0 { r } else { '-' });
        s.push(if bits & 2 != 0 { w } else { '-' });
        let xb = bits & 1 != 0;
        s.push(match (m & special != 0, xb) {
            (true, true) => sc,
            (true, false) => su,
            (false, true) => x,
            (false, false) => '-',
        });
    }
    s
}
