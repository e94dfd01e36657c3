//! Host tests of the device side: a pc with file-backed root slots, an ESP
//! directory of fixed-capacity files, and a temp dir as efivarfs.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use krazy_update::bootarchive::{write_archive, BootFile};
use krazy_update::device::Device;
use krazy_update::dirdevice::{DirDevice, DirSizes};
use krazy_update::protocol::*;

struct Rig {
    _dir: tempfile::TempDir,
    dev: DirDevice,
    key: SecretKey,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dev = DirDevice::create(
            dir.path(),
            &DirSizes {
                vmlinuz: 64 << 10,
                ..DirSizes::small()
            },
        )
        .unwrap();
        // The running slot's root holds bytes no update may touch.
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("root-a"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xaa; 1000], 0).unwrap();
        Rig {
            _dir: dir,
            dev,
            key: SecretKey::from_seed([3; 32]),
        }
    }

    fn p(&self) -> &Path {
        self.dev.path()
    }

    fn open(&self, running: Slot, build_id: &str) -> Device {
        self.dev.open(running, build_id, self.key.public()).unwrap()
    }

    /// Simulates systemd-boot: consumes the one-shot and sets LoaderEntrySelected.
    fn firmware_boot(&self) -> Slot {
        self.dev.firmware_boot().unwrap()
    }
}

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

/// A boot archive made by the reference `cpio` tool.
fn cpio_archive(dir: &Path, kernel: &[u8], entry: &str) -> Vec<u8> {
    let d = dir.join("cpio-src");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("vmlinuz"), kernel).unwrap();
    fs::write(d.join("entry.conf"), entry).unwrap();
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cpio is installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"vmlinuz\nentry.conf\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn signed(rig: &Rig, build: &str, root: &[u8], boot: &[u8]) -> Vec<u8> {
    let m = Manifest {
        protocol: 1,
        build_id: build.into(),
        arch: Arch::X86_64,
        platform: Platform::Pc,
        parts: vec![
            PartSpec::for_bytes(PartKind::Root, root),
            PartSpec::for_bytes(PartKind::Boot, boot),
        ],
    };
    SignedManifest::sign(&m, &rig.key).to_json()
}

#[test]
fn full_update_trial_commit() {
    let rig = Rig::new();
    assert_eq!(rig.firmware_boot(), Slot::A);
    let mut d = rig.open(Slot::A, "v1");
    let f = d.features();
    assert_eq!(
        (f.running_slot, f.committed_slot, f.trial),
        (Slot::A, Slot::A, TrialState::None)
    );

    let root = image(7, 3 << 20);
    let boot = cpio_archive(
        rig.p(),
        b"MZ-kernel-b",
        "title krazy v2\nlinux /krazy/b/vmlinuz\n",
    );
    d.put_manifest(&signed(&rig, "v2", &root, &boot)).unwrap();
    let w = d.put_part(PartKind::Root, &root[..]).unwrap();
    assert_eq!((w.slot, w.slot_complete), (Slot::B, false));
    let w = d.put_part(PartKind::Boot, &boot[..]).unwrap();
    assert!(w.slot_complete);
    assert_eq!(
        &fs::read(rig.p().join("root-b")).unwrap()[..root.len()],
        &root[..]
    );
    assert!(fs::read(rig.p().join("esp/krazy/b/vmlinuz"))
        .unwrap()
        .starts_with(b"MZ-kernel-b\0"));
    // Slot A untouched.
    assert!(fs::read(rig.p().join("root-a")).unwrap()[..1000]
        .iter()
        .all(|&b| b == 0xaa));
    assert!(fs::read(rig.p().join("esp/krazy/a/vmlinuz"))
        .unwrap()
        .starts_with(b"MZ-a"));

    let s = d.switch().unwrap();
    assert_eq!((s.slot, s.build_id.as_str()), (Slot::B, "v2"));
    assert_eq!(d.features().trial, TrialState::Armed);
    drop(d);

    // Reboot: systemd-boot takes the one-shot.
    assert_eq!(rig.firmware_boot(), Slot::B);
    let mut d = rig.open(Slot::B, "v2");
    assert!(d.is_trial());
    assert_eq!(
        d.status().last_trial.unwrap().outcome,
        TrialOutcome::Pending
    );
    // No update may write the committed slot A during the trial.
    let e = d
        .put_manifest(&signed(&rig, "v3", &root, &boot))
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (409, "trial_running"));
    d.commit().unwrap();
    let st = d.status();
    assert_eq!((st.running_slot, st.committed_slot), (Slot::B, Slot::B));
    assert_eq!(st.last_trial.unwrap().outcome, TrialOutcome::Committed);
    drop(d);
    // Any later reset boots B.
    assert_eq!(rig.firmware_boot(), Slot::B);
    let d = rig.open(Slot::B, "v2");
    assert!(!d.is_trial());
    assert_eq!(d.status().slot_a.build_id.as_deref(), Some("v1"));
}

#[test]
fn corrupted_part_marks_the_slot_invalid_and_switch_refuses() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(9, 1 << 20);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\n");
    d.put_manifest(&signed(&rig, "v2", &root, &boot)).unwrap();
    let mut bad = root.clone();
    bad[12345] ^= 0xff;
    let e = d.put_part(PartKind::Root, &bad[..]).unwrap_err();
    assert_eq!((e.http_status(), e.code()), (422, "hash_mismatch"));
    assert_eq!(d.status().slot_b.state, SlotState::Invalid);
    assert!(d.status().slot_b.reason.unwrap().contains("SHA-256"));
    let e = d.switch().unwrap_err();
    assert_eq!(e.code(), "slot_not_valid");
    assert!(fs::read(rig.p().join("root-a")).unwrap()[..1000]
        .iter()
        .all(|&b| b == 0xaa));
    // The state survives a restart.
    drop(d);
    let d = rig.open(Slot::A, "v1");
    assert_eq!(d.status().slot_b.state, SlotState::Invalid);
}

#[test]
fn wrong_signature_writes_nothing() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(5, 1000);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\n");
    let other = Rig {
        key: SecretKey::from_seed([4; 32]),
        ..Rig::new()
    };
    let e = d
        .put_manifest(&signed(&other, "evil", &root, &boot))
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (403, "bad_signature"));
    let e = d.put_part(PartKind::Root, &root[..]).unwrap_err();
    assert_eq!(e.code(), "no_manifest");
    assert!(fs::read(rig.p().join("root-b"))
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(d.status().slot_b.state, SlotState::Unknown);
}

#[test]
fn interrupted_stream_and_oversized_boot_file() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(3, 2 << 20);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\n");
    d.put_manifest(&signed(&rig, "v2", &root, &boot)).unwrap();
    let e = d
        .put_part(PartKind::Root, (&root[..]).take(1 << 20))
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (422, "size_mismatch"));
    assert_eq!(d.status().slot_b.state, SlotState::Invalid);

    let mut big = Vec::new();
    write_archive(
        &mut big,
        &[
            (BootFile::Vmlinuz, &vec![1; (64 << 10) + 1]),
            (BootFile::Entry, b"t"),
        ],
    )
    .unwrap();
    d.put_manifest(&signed(&rig, "v3", &root, &big)).unwrap();
    let e = d.put_part(PartKind::Boot, &big[..]).unwrap_err();
    assert_eq!(e.code(), "boot_file_too_large");
    assert!(fs::read(rig.p().join("esp/krazy/a/vmlinuz"))
        .unwrap()
        .starts_with(b"MZ-a"));
}

#[test]
fn trial_that_never_commits_is_reported_rolled_back() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(11, 4096);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\n");
    d.put_manifest(&signed(&rig, "v3", &root, &boot)).unwrap();
    d.put_part(PartKind::Root, &root[..]).unwrap();
    d.put_part(PartKind::Boot, &boot[..]).unwrap();
    d.switch().unwrap();
    drop(d);
    // The trial boot's health gate fails: it records why and reboots.
    assert_eq!(rig.firmware_boot(), Slot::B);
    let mut d = rig.open(Slot::B, "v3");
    assert!(d.is_trial());
    d.roll_back(
        "service hello is not running",
        Some("hello"),
        &["HELLO_FAIL=1".into()],
    )
    .unwrap();
    drop(d);
    assert_eq!(rig.firmware_boot(), Slot::A);
    let d = rig.open(Slot::A, "v1");
    let lt = d.status().last_trial.unwrap();
    assert_eq!(lt.outcome, TrialOutcome::RolledBack);
    assert_eq!(lt.reason.as_deref(), Some("service hello is not running"));
    assert_eq!(lt.log, vec!["HELLO_FAIL=1".to_string()]);
    assert_eq!(d.status().slot_b.state, SlotState::Invalid);
    assert_eq!(d.features().committed_slot, Slot::A);

    // A trial whose kernel panics never reaches init: reported all the same.
    let mut d = d;
    d.put_manifest(&signed(&rig, "v4", &root, &boot)).unwrap();
    d.put_part(PartKind::Root, &root[..]).unwrap();
    d.put_part(PartKind::Boot, &boot[..]).unwrap();
    d.switch().unwrap();
    drop(d);
    rig.firmware_boot(); // B panics; the firmware's next boot is the default.
    assert_eq!(rig.firmware_boot(), Slot::A);
    let d = rig.open(Slot::A, "v1");
    let lt = d.status().last_trial.unwrap();
    assert_eq!(
        (lt.outcome, lt.build_id.as_str()),
        (TrialOutcome::RolledBack, "v4")
    );
    assert!(lt.reason.unwrap().contains("did not commit"));
}
