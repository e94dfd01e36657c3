//! Unit tests of the `ar` reader, extraction and control parsing on
//! packages built by hand.

use super::ar::AR_MAGIC;
use super::*;
use std::fs;
use std::path::Path;

fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut v = AR_MAGIC.to_vec();
    for (name, data) in members {
        v.extend_from_slice(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        v.extend_from_slice(data);
        if data.len() % 2 == 1 {
            v.push(b'\n');
        }
    }
    v
}

fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write the name bytes directly so '..' can be tested.
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_cksum();
        b.append(&h, *d).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn reads_an_uncompressed_deb_built_by_hand() {
    let data = tar_with(&[("./boot/vmlinuz-1", b"kernel"), ("./etc/x", b"odd")]);
    let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
    let got = extract_to_memory(
        &deb[..],
        Path::new("t.deb"),
        |p| p.starts_with("boot/"),
        1 << 20,
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "boot/vmlinuz-1");
    assert_eq!(got[0].kind, MemKind::File(b"kernel".to_vec()));
}

#[test]
fn rejects_parent_dir_components() {
    let data = tar_with(&[("../evil", b"x")]);
    let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
    let d = tempfile::tempdir().unwrap();
    let e = extract_reader_to_dir(&deb[..], Path::new("t.deb"), &d.path().join("out"), |_| {
        true
    })
    .unwrap_err();
    assert!(matches!(e, DebError::UnsafePath { .. }), "{e}");
    assert!(!d.path().join("evil").exists());
}

#[test]
fn never_writes_through_a_symlink() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "lib", "/tmp").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "lib/pwned", &b"x"[..]).unwrap();
    let data = b.into_inner().unwrap();
    let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
    let d = tempfile::tempdir().unwrap();
    let e = extract_reader_to_dir(&deb[..], Path::new("t.deb"), d.path(), |_| true).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(!Path::new("/tmp/pwned").exists());
    assert_eq!(
        fs::read_link(d.path().join("lib")).unwrap(),
        Path::new("/tmp")
    );
}

#[test]
fn memory_limit_is_enforced() {
    let data = tar_with(&[("big", &[7u8; 5000])]);
    let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
    let e = extract_to_memory(&deb[..], Path::new("t.deb"), |_| true, 4096).unwrap_err();
    assert!(matches!(e, DebError::TooLarge { limit: 4096, .. }), "{e}");
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    let e = extract_to_memory(&b"hello world"[..], Path::new("x.deb"), |_| true, 1).unwrap_err();
    assert!(e.to_string().contains("not a Debian package"), "{e}");
    let data = tar_with(&[("a", b"abc")]);
    let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
    let e = extract_to_memory(
        &deb[..deb.len() - 700],
        Path::new("x.deb"),
        |_| true,
        1 << 20,
    )
    .unwrap_err();
    assert!(e.to_string().contains("x.deb"), "{e}");
    let e = extract_to_memory(
        &ar(&[("debian-binary", b"2.0\n")])[..],
        Path::new("x.deb"),
        |_| true,
        1,
    )
    .unwrap_err();
    assert!(
        matches!(e, DebError::MissingMember { member: "data", .. }),
        "{e}"
    );
    let e = extract_to_memory(
        &ar(&[("data.tar.bz2", b"zz")])[..],
        Path::new("x.deb"),
        |_| true,
        1,
    )
    .unwrap_err();
    assert!(matches!(e, DebError::UnsupportedCompression { .. }), "{e}");
}

#[test]
fn control_text_parses() {
    let f = parse_control(
        "Package: linux-image-cloud-amd64\nVersion: 6.1.158-1\nDescription: x\n more\n",
    );
    assert_eq!(f["Package"], "linux-image-cloud-amd64");
    assert_eq!(f["Version"], "6.1.158-1");
    assert_eq!(f["Description"], "x\nmore");
}

use crate::test_util::chain;

#[test]
fn read_errors_print_their_cause_once() {
    let d = tempfile::tempdir().unwrap();
    let e =
        extract_to_dir(&d.path().join("nope.deb"), &d.path().join("out"), |_| true).unwrap_err();
    assert!(matches!(e, DebError::Read { .. }), "{e}");
    let c = chain(&e);
    assert_eq!(c.matches("No such file").count(), 1, "{c}");
}
