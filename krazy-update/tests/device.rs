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

/// Signing time of the tests' manifests (2026-09-21).
const T0: u64 = 1_790_000_000;

/// A manifest for slot B whose version is the build's number (`v2` is 2).
fn manifest(build: &str, root: &[u8], boot: &[u8]) -> Manifest {
    let version = build
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(99);
    Manifest::new(
        build,
        Arch::X86_64,
        Platform::Pc,
        Slot::B,
        version,
        T0,
        vec![
            PartSpec::for_bytes(PartKind::Root, root),
            PartSpec::for_bytes(PartKind::Boot, boot),
        ],
    )
}

fn sign(rig: &Rig, m: &Manifest) -> Vec<u8> {
    SignedManifest::sign(m, &rig.key).to_json()
}

fn signed(rig: &Rig, build: &str, root: &[u8], boot: &[u8]) -> Vec<u8> {
    sign(rig, &manifest(build, root, boot))
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
    let id = d
        .put_manifest_at(&signed(&rig, "v2", &root, &boot), T0)
        .unwrap()
        .upload_id;
    let w = d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    assert_eq!((w.slot, w.slot_complete), (Slot::B, false));
    let w = d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
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

    let s = d.switch(Some(&id)).unwrap();
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
        .put_manifest_at(&signed(&rig, "v3", &root, &boot), T0)
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
    let id = d
        .put_manifest_at(&signed(&rig, "v2", &root, &boot), T0)
        .unwrap()
        .upload_id;
    let mut bad = root.clone();
    bad[12345] ^= 0xff;
    let e = d.put_part(PartKind::Root, Some(&id), &bad[..]).unwrap_err();
    assert_eq!((e.http_status(), e.code()), (422, "hash_mismatch"));
    assert_eq!(d.status().slot_b.state, SlotState::Invalid);
    assert!(d.status().slot_b.reason.unwrap().contains("SHA-256"));
    let e = d.switch(Some(&id)).unwrap_err();
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
        .put_manifest_at(&signed(&other, "evil", &root, &boot), T0)
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (403, "bad_signature"));
    let e = d.put_part(PartKind::Root, None, &root[..]).unwrap_err();
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
    let id = d
        .put_manifest_at(&signed(&rig, "v2", &root, &boot), T0)
        .unwrap()
        .upload_id;
    let e = d
        .put_part(PartKind::Root, Some(&id), (&root[..]).take(1 << 20))
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
    let id = d
        .put_manifest_at(&signed(&rig, "v3", &root, &big), T0)
        .unwrap()
        .upload_id;
    let e = d.put_part(PartKind::Boot, Some(&id), &big[..]).unwrap_err();
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
    let id = d
        .put_manifest_at(&signed(&rig, "v3", &root, &boot), T0)
        .unwrap()
        .upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    d.switch(Some(&id)).unwrap();
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
    let id = d
        .put_manifest_at(&signed(&rig, "v4", &root, &boot), T0)
        .unwrap()
        .upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    d.switch(Some(&id)).unwrap();
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

/// Slot B's root bytes, as far as `len`.
fn root_b(rig: &Rig, len: usize) -> Vec<u8> {
    fs::read(rig.p().join("root-b")).unwrap()[..len].to_vec()
}

/// The slots systemd-boot could start: loader.conf's default, the one-shot
/// and every entry its menu lists.
fn bootable(d: &mut Device) -> Vec<Slot> {
    d.bootable().unwrap()
}

#[test]
fn verify_then_activate_on_pc() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    assert!(bootable(&mut d).contains(&Slot::A));
    let root = image(7, 1 << 20);
    let entry = "title krazy v2\nlinux /krazy/b/vmlinuz\noptions root=PARTUUID=b\n";
    let boot = cpio_archive(rig.p(), b"MZ-kernel-b", entry);
    let id = d
        .put_manifest_at(&signed(&rig, "v2", &root, &boot), T0)
        .unwrap()
        .upload_id;
    // Accepting the manifest blanked slot B's entry: nothing can start it.
    assert_eq!(bootable(&mut d), vec![Slot::A]);
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    // Verified, but not armed: still not bootable, and its entry is blank.
    assert_eq!(bootable(&mut d), vec![Slot::A]);
    let e = fs::read(rig.p().join("esp/loader/entries/krazy-b.conf")).unwrap();
    assert!(!String::from_utf8_lossy(&e).contains("linux"));
    d.switch(Some(&id)).unwrap();
    assert_eq!(bootable(&mut d), vec![Slot::A, Slot::B]);
    let e = fs::read(rig.p().join("esp/loader/entries/krazy-b.conf")).unwrap();
    assert!(e.starts_with(entry.as_bytes()));

    // Armed: no manifest, root or boot part is taken, and nothing is written.
    let mut other = root.clone();
    other[100] ^= 1;
    let other_boot = cpio_archive(
        rig.p(),
        b"MZ-evil",
        "title evil\nlinux /krazy/b/vmlinuz\noptions init=/evil\n",
    );
    for e in [
        d.put_part(PartKind::Root, Some(&id), &other[..])
            .unwrap_err(),
        d.put_part(PartKind::Boot, Some(&id), &other_boot[..])
            .unwrap_err(),
        d.put_manifest_at(&signed(&rig, "v3", &other, &other_boot), T0)
            .unwrap_err(),
        d.switch(Some(&id)).unwrap_err(),
    ] {
        assert_eq!((e.http_status(), e.code()), (409, "trial_armed"), "{e}");
    }
    assert_eq!(root_b(&rig, root.len()), root);
    assert!(fs::read(rig.p().join("esp/loader/entries/krazy-b.conf"))
        .unwrap()
        .starts_with(entry.as_bytes()));

    // The only way to write again is to cancel, which says what it undid
    // and leaves slot B unbootable.
    let c = d.cancel().unwrap();
    assert_eq!(c.disarmed.as_ref().map(|s| s.slot), Some(Slot::B));
    assert!(
        c.message.contains("disarmed the trial boot of slot b"),
        "{}",
        c.message
    );
    assert_eq!(bootable(&mut d), vec![Slot::A]);
    assert_eq!(d.features().trial, TrialState::None);
    // A new upload whose root does not verify, then a reboot: slot A.
    let id = d
        .put_manifest_at(&signed(&rig, "v3", &root, &boot), T0)
        .unwrap()
        .upload_id;
    let e = d
        .put_part(PartKind::Root, Some(&id), &other[..])
        .unwrap_err();
    assert_eq!(e.code(), "hash_mismatch");
    assert_eq!(bootable(&mut d), vec![Slot::A]);
    let e = d.switch(Some(&id)).unwrap_err();
    assert_eq!(e.code(), "slot_not_valid");
    drop(d);
    assert_eq!(rig.firmware_boot(), Slot::A);
    let mut d = rig.open(Slot::A, "v1");
    assert!(!d.is_trial());
    assert_eq!(bootable(&mut d), vec![Slot::A]);

    // The same with the boot part: a bad boot part after a good root.
    let id = d
        .put_manifest_at(&signed(&rig, "v4", &root, &boot), T0)
        .unwrap()
        .upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    let e = d
        .put_part(PartKind::Boot, Some(&id), &other_boot[..])
        .unwrap_err();
    assert_eq!(e.http_status(), 422, "{e}");
    assert_eq!(bootable(&mut d), vec![Slot::A]);
    let e = fs::read(rig.p().join("esp/loader/entries/krazy-b.conf")).unwrap();
    assert!(!String::from_utf8_lossy(&e).contains("evil"));
    drop(d);
    assert_eq!(rig.firmware_boot(), Slot::A);
}

#[test]
fn uploads_do_not_mix() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(3, 4096);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\nlinux /krazy/b/vmlinuz\n");
    let first = d
        .put_manifest_at(&signed(&rig, "v2", &root, &boot), T0)
        .unwrap()
        .upload_id;
    let second = d
        .put_manifest_at(&signed(&rig, "v3", &root, &boot), T0)
        .unwrap()
        .upload_id;
    assert_ne!(first, second);
    assert_eq!(second.len(), 32);
    for e in [
        d.put_part(PartKind::Root, Some(&first), &root[..])
            .unwrap_err(),
        d.put_part(PartKind::Root, None, &root[..]).unwrap_err(),
    ] {
        assert_eq!((e.http_status(), e.code()), (409, "upload_mismatch"));
    }
    d.put_part(PartKind::Root, Some(&second), &root[..])
        .unwrap();
    d.put_part(PartKind::Boot, Some(&second), &boot[..])
        .unwrap();
    assert_eq!(
        d.switch(Some(&first)).unwrap_err().code(),
        "upload_mismatch"
    );
    assert_eq!(d.switch(Some(&second)).unwrap().build_id, "v3");
    // Nothing armed any more to cancel twice; cancel says so.
    d.cancel().unwrap();
    let c = d.cancel().unwrap();
    assert!(c.disarmed.is_none() && c.abandoned_upload.is_none());
    assert!(c.message.contains("nothing"));
}

#[test]
fn wrong_slot_is_refused() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(3, 4096);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\n");
    let mut m = manifest("v2", &root, &boot);
    m.slot = Slot::A;
    let e = d.put_manifest_at(&sign(&rig, &m), T0).unwrap_err();
    assert_eq!((e.http_status(), e.code()), (409, "wrong_slot"));
    assert_eq!(d.status().slot_b.state, SlotState::Unknown);
}

/// Runs a whole update of `m` into slot B and its trial boot, committed.
fn update_and_commit(rig: &Rig, d: Device, m: &Manifest, root: &[u8], boot: &[u8]) -> Device {
    let mut d = d;
    let running = d.features().running_slot;
    let id = d.put_manifest_at(&sign(rig, m), T0).unwrap().upload_id;
    d.put_part(PartKind::Root, Some(&id), root).unwrap();
    d.put_part(PartKind::Boot, Some(&id), boot).unwrap();
    d.switch(Some(&id)).unwrap();
    drop(d);
    assert_eq!(rig.firmware_boot(), running.other());
    let mut d = rig.open(running.other(), &m.build_id);
    assert!(d.is_trial());
    d.commit().unwrap();
    d
}

#[test]
fn no_downgrade_no_replay() {
    let rig = Rig::new();
    rig.firmware_boot();
    let d = rig.open(Slot::A, "v1");
    let root = image(3, 4096);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\nlinux /krazy/b/vmlinuz\n");
    let v5 = manifest("v5", &root, &boot);
    let mut d = update_and_commit(&rig, d, &v5, &root, &boot);
    assert_eq!(d.features().committed_version, 5);
    let boot_a = cpio_archive(rig.p(), b"MZ", "title x\nlinux /krazy/a/vmlinuz\n");
    let for_a = |build: &str| {
        let mut m = manifest(build, &root, &boot_a);
        m.slot = Slot::A;
        m
    };
    // Older, equal (the same envelope again: a replay) and expired: refused.
    for (m, code, status) in [
        (for_a("v4"), "downgrade", 409),
        (for_a("v5"), "downgrade", 409),
    ] {
        let e = d.put_manifest_at(&sign(&rig, &m), T0).unwrap_err();
        assert_eq!((e.http_status(), e.code()), (status, code), "{e}");
        assert!(e
            .to_string()
            .contains("not greater than the committed build's 5"));
    }
    let v6 = for_a("v6");
    let e = d
        .put_manifest_at(&sign(&rig, &v6), v6.expires + 1)
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (403, "expired"));
    assert_eq!(d.status().slot_a.state, SlotState::Valid);
    // Not before: a device whose clock lags (a Pi before NTP) takes it.
    d.put_manifest_at(&sign(&rig, &v6), 0).unwrap();
    d.cancel().unwrap();

    // A signed downgrade from v5's build to "v2": accepted once...
    let mut down = for_a("v2");
    down.allow_downgrade = true;
    down.from_build_id = Some("v5".into());
    down.expires = down.signed_at + 3600;
    let mut d = update_and_commit(&rig, d, &down, &root, &boot_a);
    assert_eq!(d.features().build_id, "v2");
    assert_eq!(d.features().committed_version, 2);
    // ...and refused on another build (it now runs v2), into either slot.
    let mut again = down.clone();
    again.slot = Slot::B;
    let e = d.put_manifest_at(&sign(&rig, &again), T0).unwrap_err();
    assert_eq!((e.http_status(), e.code()), (409, "downgrade"));
    assert!(e.to_string().contains("applies to build v5"), "{e}");
    // The committed version survives a power cut (reopen from disk).
    drop(d);
    rig.firmware_boot();
    let d = rig.open(Slot::A, "v2");
    assert_eq!(d.features().committed_version, 2);
}

#[test]
fn interrupted_upload_resumes_and_lost_state_keeps_the_floor() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let root = image(13, 2 << 20);
    let boot = cpio_archive(rig.p(), b"MZ", "title x\nlinux /krazy/b/vmlinuz\n");
    let env = signed(&rig, "v7", &root, &boot);
    let id = d.put_manifest_at(&env, T0).unwrap().upload_id;
    let e = d
        .put_part(PartKind::Root, Some(&id), (&root[..]).take(1 << 20))
        .unwrap_err();
    assert_eq!(e.code(), "size_mismatch");
    // A power cut, then the same signed manifest again: it still works.
    drop(d);
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let id = d.put_manifest_at(&env, T0).unwrap().upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    d.switch(Some(&id)).unwrap();
    d.cancel().unwrap();
    drop(d);

    // The update state is lost: the floor is the running root's build epoch.
    fs::remove_file(rig.p().join("perm/krazy/update.json")).unwrap();
    let epoch = 1_700_000_000;
    let mut d = rig
        .dev
        .open_with_floor(Slot::A, "v1", rig.key.public(), epoch)
        .unwrap();
    assert_eq!(d.features().committed_version, epoch);
    let e = d.put_manifest_at(&env, T0).unwrap_err();
    assert_eq!(e.code(), "downgrade");
    let m = Manifest {
        version: epoch + 1,
        ..manifest("v8", &root, &boot)
    };
    d.put_manifest_at(&sign(&rig, &m), T0).unwrap();
}

#[test]
fn a_protocol_1_manifest_is_refused_naming_both_versions() {
    let rig = Rig::new();
    rig.firmware_boot();
    let mut d = rig.open(Slot::A, "v1");
    let m = manifest("v2", b"r", b"b");
    let e = d
        .put_manifest_at(&SignedManifest::sign_v1(&m, &rig.key).to_json(), T0)
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (400, "protocol_version"));
    assert!(e.to_string().contains("version 1") && e.to_string().contains("speaks version 2"));
}
