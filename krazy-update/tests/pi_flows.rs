//! Verify, then activate on the Raspberry Pi's two boot flows (firmware
//! tryboot and the software one-shot): the device over file-backed slots and
//! boot partitions, with autoboot.txt in a directory, and a simulated
//! firmware that boots what autoboot.txt says.

use std::fs;
use std::path::Path;

use std::process::Command;

use krazy_fs::fat::FatOptions;
use krazy_fs::tree::Contents;
use krazy_fs::{FileDevice, MemDevice, Tree};
use krazy_update::bootfiles::DirBootFiles;
use krazy_update::bootflow::{BootFlow, PiSoftwareOneShot, PiTryboot, AUTOBOOT_TXT};
use krazy_update::bootpart;
use krazy_update::device::{BootStorage, Device, DeviceConfig, Storage};
use krazy_update::protocol::*;

const T0: u64 = 1_790_000_000;
const SIZE: usize = 256 << 10;
const BOOT_SIZE: usize = 8 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Flow {
    Tryboot,
    Software,
}

fn lay_out(dir: &Path, flow: Flow) {
    fs::create_dir_all(dir.join("autoboot")).unwrap();
    let text = match flow {
        Flow::Tryboot => PiTryboot::autoboot_txt(Slot::A),
        Flow::Software => PiSoftwareOneShot::autoboot_txt(Slot::A, Slot::A),
    };
    let mut b = text.into_bytes();
    b.resize(512, b' ');
    fs::write(dir.join("autoboot").join(AUTOBOOT_TXT), b).unwrap();
    for n in ["root-a", "root-b"] {
        fs::write(dir.join(n), vec![0u8; SIZE]).unwrap();
    }
    // Boot partitions as the image builder makes them: labelled FATs.
    for (n, label, id, start) in [
        ("boot-a", "KRAZY-A", 0x1111_0002, 16384),
        ("boot-b", "KRAZY-B", 0x1111_0003, 81920),
    ] {
        let mut dev = MemDevice::zeroed(BOOT_SIZE);
        let opts = FatOptions {
            label: Some(label.into()),
            volume_id: id,
            hidden_sectors: start,
            ..Default::default()
        };
        krazy_fs::fat::write(&mut dev, &Tree::new(), &opts).unwrap();
        fs::write(dir.join(n), dev.into_vec()).unwrap();
    }
}

/// A boot tree like a slot's: firmware, kernel, an overlay, config files.
fn boot_archive(kernel: &[u8]) -> Vec<u8> {
    let mut t = Tree::new();
    t.add_file("start.elf", Contents::bytes(vec![0x5e; 30_000]), 0o644, 1)
        .unwrap();
    t.add_file("kernel8.img", Contents::bytes(kernel.to_vec()), 0o644, 1)
        .unwrap();
    t.add_dir_all("overlays", 1).unwrap();
    t.add_file(
        "overlays/disable-bt.dtbo",
        Contents::bytes(vec![0xd7; 1500]),
        0o644,
        1,
    )
    .unwrap();
    t.add_file(
        "cmdline.txt",
        Contents::bytes(&b"console=ttyS1 root=PARTUUID=x-05\n"[..]),
        0o644,
        1,
    )
    .unwrap();
    let mut out = Vec::new();
    bootpart::write_tree(&mut out, &t, 1_700_000_000).unwrap();
    out
}

/// `fsck.fat -n` and `mtype` on a slot's boot partition.
fn check_fat(dir: &Path, part: &str, kernel: &[u8]) {
    let img = dir.join(part);
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&img)
        .output()
        .expect("dosfstools is installed");
    assert!(
        out.status.success(),
        "fsck.fat -n {part}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("mtype")
        .args(["-i"])
        .arg(&img)
        .arg("::/kernel8.img")
        .output()
        .expect("mtools is installed");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, kernel);
    let out = Command::new("mlabel")
        .args(["-s", "-i"])
        .arg(&img)
        .arg("::")
        .output()
        .unwrap();
    let want = if part == "boot-b" {
        "KRAZY-B"
    } else {
        "KRAZY-A"
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(want),
        "{out:?}"
    );
}

fn open(dir: &Path, flow: Flow, running: Slot, build: &str, key: &SecretKey) -> Device {
    let dev = |n: &str| {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(n))
            .unwrap();
        Box::new(FileDevice::whole(f).unwrap())
    };
    let files = Box::new(DirBootFiles::new(dir.join("autoboot")));
    let flow: Box<dyn BootFlow + Send> = match flow {
        Flow::Tryboot => Box::new(PiTryboot::new(files)),
        Flow::Software => Box::new(PiSoftwareOneShot::new(files)),
    };
    Device::open(
        DeviceConfig {
            arch: Arch::Aarch64,
            platform: Platform::Pi3,
            build_id: build.into(),
            running,
            public_key: key.public(),
            state_dir: dir.join("perm/krazy"),
            min_version: 1,
        },
        Storage {
            root_a: dev("root-a"),
            root_b: dev("root-b"),
            boot: BootStorage::Partitions {
                a: dev("boot-a"),
                b: dev("boot-b"),
            },
        },
        flow,
    )
    .unwrap()
}

/// What the firmware boots: `[tryboot]` when the reboot passed the tryboot
/// flag, else `[all]` (the software flow's one-shot is `[all]` itself).
fn firmware(dir: &Path, tryboot_flag: bool) -> Slot {
    let text = fs::read_to_string(dir.join("autoboot").join(AUTOBOOT_TXT)).unwrap();
    let (mut section, mut all, mut tryboot) = ("all".to_string(), None, None);
    for l in text.lines().map(str::trim) {
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.into();
        } else if let Some(v) = l.strip_prefix("boot_partition=") {
            let slot = if v == "3" { Slot::B } else { Slot::A };
            if section == "all" {
                all = Some(slot);
            } else if section == "tryboot" {
                tryboot = Some(slot);
            }
        }
    }
    if tryboot_flag {
        tryboot.or(all).unwrap()
    } else {
        all.unwrap()
    }
}

fn manifest(build: &str, version: u64, root: &[u8], boot: &[u8]) -> Manifest {
    Manifest::new(
        build,
        Arch::Aarch64,
        Platform::Pi3,
        Slot::B,
        version,
        T0,
        vec![
            PartSpec::for_bytes(PartKind::Root, root),
            PartSpec::for_bytes(PartKind::Boot, boot),
        ],
    )
}

fn verify_then_activate(flow: Flow) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    lay_out(dir, flow);
    let key = SecretKey::from_seed([21; 32]);
    let mut d = open(dir, flow, Slot::A, "v1", &key);
    if flow == Flow::Tryboot {
        // A fresh image's autoboot.txt tries slot B on a tryboot reboot.
        assert_eq!(d.bootable().unwrap(), vec![Slot::A, Slot::B]);
    }
    let root = vec![0x52; 100_000];
    let kernel: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let boot = boot_archive(&kernel);
    let boot_b_before = fs::read(dir.join("boot-b")).unwrap();
    let env = SignedManifest::sign(&manifest("v2", 2, &root, &boot), &key).to_json();
    let id = d.put_manifest_at(&env, T0).unwrap().upload_id;
    // Only the committed slot, whatever flag the next reboot passes.
    assert_eq!(d.bootable().unwrap(), vec![Slot::A]);
    assert_eq!(
        (firmware(dir, false), firmware(dir, true)),
        (Slot::A, Slot::A)
    );
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    // One byte of the kernel differs: a well-formed archive whose hash
    // fails. It is verified whole before the partition is written: not one
    // byte of it reached boot-b.
    let mut bad = boot.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let e = d.put_part(PartKind::Boot, Some(&id), &bad[..]).unwrap_err();
    assert_eq!(e.code(), "hash_mismatch");
    assert_eq!(d.bootable().unwrap(), vec![Slot::A]);
    assert!(fs::read(dir.join("boot-b")).unwrap() == boot_b_before);
    // A failed part, then a reboot with the tryboot flag: slot A.
    drop(d);
    assert_eq!(firmware(dir, true), Slot::A);
    let mut d = open(dir, flow, Slot::A, "v1", &key);

    let id = d.put_manifest_at(&env, T0).unwrap().upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    assert_eq!(d.bootable().unwrap(), vec![Slot::A]);
    // The files landed in a fresh FAT that keeps the partition's label,
    // volume id and hidden sectors; the reference tools read it.
    check_fat(dir, "boot-b", &kernel);
    let mut b = FileDevice::whole(fs::File::open(dir.join("boot-b")).unwrap()).unwrap();
    let id_b = bootpart::volume_identity(&mut b).unwrap();
    assert_eq!((id_b.volume_id, id_b.hidden_sectors), (0x1111_0003, 81920));
    let sw = d.switch(Some(&id)).unwrap();
    // Tryboot: B on the tryboot reboot only; software: the next boot is B
    // (its stage 1 points autoboot.txt back at A first).
    let want = match flow {
        Flow::Tryboot => vec![Slot::A, Slot::B],
        Flow::Software => vec![Slot::B],
    };
    assert_eq!(d.bootable().unwrap(), want);
    assert_eq!(
        sw.reboot_argument.as_deref(),
        (flow == Flow::Tryboot).then_some("0 tryboot")
    );
    // Armed: nothing more is written into slot B.
    for e in [
        d.put_part(PartKind::Root, Some(&id), &bad[..]).unwrap_err(),
        d.put_part(PartKind::Boot, Some(&id), &bad[..]).unwrap_err(),
        d.put_manifest_at(&env, T0).unwrap_err(),
    ] {
        assert_eq!(e.code(), "trial_armed");
    }
    check_fat(dir, "boot-b", &kernel);
    // Cancel: slot B unbootable again, on either kind of reboot.
    let c = d.cancel().unwrap();
    assert!(c.disarmed.is_some(), "{c:?}");
    assert_eq!(d.bootable().unwrap(), vec![Slot::A]);
    assert_eq!(
        (firmware(dir, false), firmware(dir, true)),
        (Slot::A, Slot::A)
    );
    drop(d);

    // Armed again and rebooted: the trial runs from B, commits, sticks.
    let mut d = open(dir, flow, Slot::A, "v1", &key);
    let env3 = SignedManifest::sign(&manifest("v3", 3, &root, &boot), &key).to_json();
    let id = d.put_manifest_at(&env3, T0).unwrap().upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    d.put_part(PartKind::Boot, Some(&id), &boot[..]).unwrap();
    d.switch(Some(&id)).unwrap();
    drop(d);
    assert_eq!(firmware(dir, true), Slot::B);
    let mut d = open(dir, flow, Slot::B, "v3", &key);
    assert!(d.is_trial());
    // During the trial a reset boots the committed slot A.
    assert_eq!(firmware(dir, false), Slot::A);
    d.commit().unwrap();
    assert_eq!(firmware(dir, false), Slot::B);
    assert_eq!(d.features().committed_version, 3);
}

#[test]
fn pi_tryboot_verifies_then_activates() {
    verify_then_activate(Flow::Tryboot);
}

#[test]
fn pi_software_one_shot_verifies_then_activates() {
    verify_then_activate(Flow::Software);
}
