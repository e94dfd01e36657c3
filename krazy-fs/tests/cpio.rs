//! Oracle tests: archives written by krazy are listed and extracted by GNU
//! cpio and compared with the tree they came from.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{awkward_tree, compare_dir, is_root, Check};
use krazy_fs::cpio::{self, CpioOptions, Error};
use krazy_fs::{Contents, Tree};

fn archive(tree: &Tree, gzip: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let opts = CpioOptions {
        gzip,
        ..CpioOptions::default()
    };
    let s = cpio::write(&mut v, tree, &opts).unwrap();
    assert_eq!(s.entries as usize, tree.len());
    if !gzip {
        assert_eq!(s.archive_len as usize, v.len());
        assert_eq!(v.len() % 4, 0);
    }
    v
}

/// Runs `cmd` with `input` on stdin in `dir`; returns stdout.
fn pipe(cmd: &mut Command, input: &[u8], dir: &Path) -> Vec<u8> {
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn names(tree: &Tree) -> Vec<String> {
    let mut v: Vec<String> = tree.iter().map(|(p, _)| p.to_string()).collect();
    v.sort();
    v
}

fn listing(out: Vec<u8>) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn cpio_lists_and_extracts_awkward_tree() {
    let tree = awkward_tree(131072, 5000, false);
    let a = archive(&tree, false);
    let dir = tempfile::tempdir().unwrap();
    let list = pipe(Command::new("cpio").args(["-t", "--quiet"]), &a, dir.path());
    assert_eq!(listing(list), names(&tree));

    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    pipe(
        Command::new("cpio").args([
            "-i",
            "-d",
            "-m",
            "--quiet",
            "--no-absolute-filenames",
            "--preserve-modification-time",
        ]),
        &a,
        &x,
    );
    let root = is_root();
    compare_dir(
        &x,
        &tree,
        Check {
            owners: root,
            modes: root,
            file_mtimes: true,
        },
    );
}

#[test]
fn gzip_archive_lists_through_gzip() {
    let tree = awkward_tree(131072, 200, false);
    let gz = archive(&tree, true);
    assert_eq!(&gz[..2], b"\x1f\x8b");
    // mtime 0, no name, OS unknown: nothing of the build machine or time.
    assert_eq!(&gz[3..8], &[0, 0, 0, 0, 0]);
    let dir = tempfile::tempdir().unwrap();
    let raw = pipe(Command::new("gzip").arg("-dc"), &gz, dir.path());
    assert!(
        raw == archive(&tree, false),
        "gzip -dc differs from the plain archive"
    );
    let list = pipe(
        Command::new("cpio").args(["-t", "--quiet"]),
        &raw,
        dir.path(),
    );
    assert_eq!(listing(list), names(&tree));
}

#[test]
fn parents_come_before_children_and_trailer_ends() {
    let mut tree = Tree::new();
    tree.add_file("z", Contents::bytes("z"), 0o644, 0).unwrap();
    tree.add_dir_all("a/b", 0).unwrap();
    tree.add_file("a-b", Contents::bytes(""), 0o644, 0).unwrap();
    tree.add_file("a/b/c", Contents::bytes("c"), 0o644, 0)
        .unwrap();
    let a = archive(&tree, false);
    let dir = tempfile::tempdir().unwrap();
    let list = String::from_utf8(pipe(
        Command::new("cpio").args(["-t", "--quiet"]),
        &a,
        dir.path(),
    ))
    .unwrap();
    let order: Vec<&str> = list.lines().collect();
    for (i, p) in order.iter().enumerate() {
        if let Some((parent, _)) = p.rsplit_once('/') {
            let at = order.iter().position(|q| *q == parent).unwrap();
            assert!(at < i, "{parent} comes after {p}");
        }
    }
    assert!(a.windows(11).any(|w| w == b"TRAILER!!!\0"));
}

#[test]
fn output_is_reproducible_and_independent_of_insertion_order() {
    for gzip in [false, true] {
        let a = archive(&awkward_tree(4096, 500, false), gzip);
        let b = archive(&awkward_tree(4096, 500, false), gzip);
        let c = archive(&awkward_tree(4096, 500, true), gzip);
        assert!(a == b, "two writes differ (gzip {gzip})");
        assert!(a == c, "insertion order changed the archive (gzip {gzip})");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut tree = Tree::new();
    tree.add_file("late", Contents::bytes("x"), 0o644, 1 << 32)
        .unwrap();
    let e = cpio::write(Vec::new(), &tree, &CpioOptions::default());
    assert!(
        matches!(e, Err(Error::FieldTooLarge { ref path, field: "mtime", .. }) if path == "late")
    );

    let mut tree = Tree::new();
    tree.add_file(
        "gone",
        Contents::Host("/nonexistent/krazy".into()),
        0o644,
        0,
    )
    .unwrap();
    let e = cpio::write(Vec::new(), &tree, &CpioOptions::default());
    assert!(matches!(e, Err(Error::Read { ref path, .. }) if path == "gone"));

    let mut tree = Tree::new();
    tree.add_file("no/parent", Contents::bytes(""), 0o644, 0)
        .unwrap();
    let e = cpio::write(Vec::new(), &tree, &CpioOptions::default());
    assert!(matches!(e, Err(Error::Tree(_))));
}
