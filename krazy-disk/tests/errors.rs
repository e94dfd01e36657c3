//! Errors print each cause once: in the message or as `source()`, never both.

use std::error::Error;
use std::io::{self, Read, Seek, SeekFrom};

use krazy_disk::{find_by_partuuid, read_gpt, Guid};

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

/// A disk whose every read fails with the same error.
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("the disk is on fire"))
    }
}

impl Seek for Failing {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Ok(0)
    }
}

#[test]
fn a_sysfs_listing_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-sys-block");
    let e = find_by_partuuid(&missing, dir.path(), Guid::from_gpt_bytes([1; 16])).unwrap_err();
    let text = chain(&e);
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("no-sys-block").count(), 1, "{text}");
}

#[test]
fn both_copies_failing_name_each_io_error_once() {
    let e = read_gpt(&mut Failing, 64 << 20).unwrap_err();
    let text = chain(&e);
    // One read of each copy failed: the cause appears once for each.
    assert_eq!(text.matches("the disk is on fire").count(), 2, "{text}");
    assert_eq!(text.matches("reading sector 1 failed").count(), 1, "{text}");
    assert!(text.starts_with("no valid GPT"), "{text}");
}
