//! Errors print each cause once: in the message or as `source()`, never both.

use std::error::Error;

use krazy_fs::cpio::{self, CpioOptions};
use krazy_fs::{Contents, FromDirOptions, Tree};

/// `e`'s message and those of its sources, one a line.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push('\n');
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

const ENOENT: &str = "No such file or directory";

#[test]
fn a_missing_host_file_is_named_once_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    let host = dir.path().join("gone");
    tree.add_file("init", Contents::Host(host), 0o755, 0)
        .unwrap();
    let e = cpio::write(Vec::new(), &tree, &CpioOptions::default()).unwrap_err();
    let text = chain(&e);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(text.matches("\"init\"").count(), 1, "{text}");
    assert_eq!(text.matches(ENOENT).count(), 1, "{text}");
}

#[test]
fn a_nested_tree_error_prints_each_level_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let tree_err = Tree::from_dir(&missing, &FromDirOptions::default()).unwrap_err();
    // The cpio writer wraps a tree error as its source.
    let e = cpio::Error::from(tree_err);
    let text = chain(&e);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(
        text.matches("cannot be written as cpio").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("no-such-dir").count(), 1, "{text}");
    assert_eq!(text.matches(ENOENT).count(), 1, "{text}");
}
