//! The device side of the update protocol driven by any sequence of
//! requests: routes, raw and correctly signed manifests, parts of any bytes,
//! switch, commit, roll back and reboots (the device reopened over its
//! persisted state), on pc (systemd-boot, ESP files, EFI variables) and pi3
//! (autoboot.txt, boot partitions). The state file, loader.conf, autoboot.txt
//! and the EFI variable may start as fuzz bytes too.
//!
//! Besides "never panics", every step checks the promise of the protocol:
//! the running and the committed slot's root and boot files are never
//! written, a switch is accepted only once both parts of a signed manifest
//! were verified, a manifest signed by another key is always refused, and
//! no unverified byte is ever bootable: a slot any part byte went into is
//! not among the boot flow's bootable slots until a switch after both parts
//! verified. Reboots go only to a slot the boot flow can boot. pi3 runs
//! both flows (`PiTryboot`, `PiSoftwareOneShot`).
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};

use krazy_fs::FileDevice;
use krazy_update::bootfiles::DirBootFiles;
use krazy_update::bootflow::{BootFlow, PiSoftwareOneShot, PiTryboot};
use krazy_update::device::{BootStorage, Device, DeviceConfig, Route, Storage};
use krazy_update::dirdevice::{DirDevice, DirSizes};
use krazy_update::efivars::LOADER_GUID;
use krazy_update::protocol::{
    Arch, Manifest, PartKind, PartSpec, Platform, SecretKey, SignedManifest, Slot,
};
use krazy_update::state::STATE_FILE;
use libfuzzer_sys::fuzz_target;

const ROOT: u64 = 16 << 10;
const BOOT: usize = 4 << 10;

/// Takes `[op][len u16 LE][len bytes]` steps off the input.
struct Steps<'a>(&'a [u8]);

impl<'a> Iterator for Steps<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.0.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
            _ => (0, &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((op, body))
    }
}

fn workdir() -> PathBuf {
    std::env::temp_dir().join(format!("krazy-fuzz-update-device-{}", std::process::id()))
}

/// The disk of a new device running slot A: root slots whose bytes identify
/// them, and the boot side of `platform`.
fn lay_out(dir: &Path, platform: Platform) {
    let _ = fs::remove_dir_all(dir);
    match platform {
        Platform::Pc => {
            let sizes = DirSizes {
                root: ROOT,
                vmlinuz: BOOT as u64,
                initrd: BOOT as u64,
            };
            DirDevice::create(dir, &sizes).unwrap();
        }
        Platform::Pi3 => {
            fs::create_dir_all(dir.join("efivars")).unwrap();
            fs::create_dir_all(dir.join("autoboot")).unwrap();
            let mut b = PiTryboot::autoboot_txt_disarmed(Slot::A).into_bytes();
            b.resize(512, b' ');
            fs::write(dir.join("autoboot/autoboot.txt"), b).unwrap();
            for (name, fill) in [("boot-a", 0xa2), ("boot-b", 0xb2)] {
                fs::write(dir.join(name), vec![fill; BOOT]).unwrap();
            }
        }
    }
    fs::create_dir_all(dir.join("perm")).unwrap();
    for (name, fill) in [("root-a", 0xa1), ("root-b", 0xb1)] {
        fs::write(dir.join(name), vec![fill; ROOT as usize]).unwrap();
    }
}

/// Signing time of the manifests; the device's clock is a little later.
const T0: u64 = 1_790_000_000;
const NOW: u64 = T0 + 100;

fn open(
    dir: &Path,
    platform: Platform,
    software: bool,
    running: Slot,
    build: &str,
    key: &SecretKey,
) -> Option<Device> {
    // A state or boot files the fuzzer garbled may refuse to open: that is
    // an error, never a panic.
    if platform == Platform::Pc {
        return DirDevice::at(dir).open(running, build, key.public()).ok();
    }
    let dev = |n: &str| -> Box<FileDevice> {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(n))
            .unwrap();
        Box::new(FileDevice::whole(f).unwrap())
    };
    let storage = Storage {
        root_a: dev("root-a"),
        root_b: dev("root-b"),
        boot: BootStorage::Partitions {
            a: dev("boot-a"),
            b: dev("boot-b"),
        },
    };
    let files = Box::new(DirBootFiles::new(dir.join("autoboot")));
    let flow: Box<dyn BootFlow + Send> = if software {
        Box::new(PiSoftwareOneShot::new(files))
    } else {
        Box::new(PiTryboot::new(files))
    };
    let cfg = DeviceConfig {
        arch: Arch::X86_64,
        platform,
        build_id: build.into(),
        running,
        public_key: key.public(),
        state_dir: dir.join("perm/krazy"),
        min_version: 1,
    };
    Device::open(cfg, storage, flow).ok()
}

/// A slot's root and boot files.
fn slot_files(dir: &Path, platform: Platform, slot: Slot) -> Vec<Vec<u8>> {
    let s = slot.to_string();
    let mut v = vec![fs::read(dir.join(format!("root-{s}"))).unwrap()];
    match platform {
        Platform::Pc => {
            for f in ["vmlinuz", "initrd"] {
                v.push(fs::read(dir.join(format!("esp/krazy/{s}/{f}"))).unwrap());
            }
            v.push(fs::read(dir.join(format!("esp/loader/entries/krazy-{s}.conf"))).unwrap());
        }
        Platform::Pi3 => v.push(fs::read(dir.join(format!("boot-{s}"))).unwrap()),
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let platform = if flags & 1 == 0 {
        Platform::Pc
    } else {
        Platform::Pi3
    };
    let software = flags & 32 != 0;
    let key = SecretKey::from_seed([5; 32]);
    let other = SecretKey::from_seed([6; 32]);
    let dir = workdir();
    lay_out(&dir, platform);

    let mut running = Slot::A;
    let mut build = String::from("v1");
    let mut steps = Steps(data);
    // Optionally, the files a device reads at boot start as fuzz bytes.
    if flags & 2 != 0 {
        if let Some((_, b)) = steps.next() {
            fs::create_dir_all(dir.join("perm/krazy")).unwrap();
            fs::write(dir.join("perm/krazy").join(STATE_FILE), b).unwrap();
        }
    }
    if flags & 4 != 0 {
        if let Some((_, b)) = steps.next() {
            let path = match platform {
                Platform::Pc => dir.join("esp/loader/loader.conf"),
                Platform::Pi3 => dir.join("autoboot/autoboot.txt"),
            };
            fs::write(path, b).unwrap();
        }
    }
    if flags & 8 != 0 {
        if let Some((_, b)) = steps.next() {
            let name = if flags & 16 == 0 {
                "LoaderEntrySelected"
            } else {
                "LoaderEntryOneShot"
            };
            fs::write(dir.join("efivars").join(format!("{name}-{LOADER_GUID}")), b).unwrap();
        }
    }
    let Some(mut dev) = open(&dir, platform, software, running, &build, &key) else {
        return;
    };
    let mut root: Vec<u8> = Vec::new();
    let mut boot: Vec<u8> = Vec::new();
    // Whether the last signed manifest's parts were both written as signed.
    let mut verified = [false; 2];
    // Slots an unverified byte may be in (a part was streamed into it since
    // the last switch that followed two verified parts).
    let mut tainted = [false; 2];
    let idx = |s: Slot| (s == Slot::B) as usize;
    let mut upload = String::new();
    let mut version = 1u64;

    for (op, body) in steps {
        // The running and the committed slot: no request may write them.
        let committed = dev.features().committed_slot;
        let protected = if committed == running {
            vec![running]
        } else {
            vec![running, committed]
        };
        let snapshot = |slots: &[Slot]| -> Vec<Vec<Vec<u8>>> {
            slots
                .iter()
                .map(|&s| slot_files(&dir, platform, s))
                .collect()
        };
        let before = snapshot(&protected);
        let pending_slot = running.other();
        match op % 14 {
            0 => {
                let text = String::from_utf8_lossy(body);
                let (method, path) = text.split_once(' ').unwrap_or((&text, ""));
                if let Some(r) = Route::parse(method, path) {
                    assert_eq!(r.content_type().is_none(), method == "GET");
                    assert!(path.starts_with("/update/"));
                }
            }
            1 => {
                if let Ok(a) = dev.put_manifest_at(body, NOW) {
                    verified = [false; 2];
                    upload = a.upload_id;
                }
            }
            2 | 3 => {
                // A manifest over the current root and boot bytes, signed by
                // the instance's key (2) or another one (3), which must fail.
                // Its first byte picks an old version, an expired one, a
                // downgrade or the wrong slot.
                let b0 = body.first().copied().unwrap_or(0);
                version += 1;
                let mut m = Manifest::new(
                    String::from_utf8_lossy(body.get(1..).unwrap_or_default()).into_owned(),
                    Arch::X86_64,
                    platform,
                    if b0 & 0x10 != 0 { running } else { running.other() },
                    if b0 & 0x80 != 0 { 1 } else { version },
                    T0,
                    vec![
                        PartSpec::for_bytes(PartKind::Root, &root),
                        PartSpec::for_bytes(PartKind::Boot, &boot),
                    ],
                );
                if b0 & 0x40 != 0 {
                    m.expires = T0 + 1;
                }
                if b0 & 0x20 != 0 {
                    m.allow_downgrade = true;
                    m.from_build_id = Some(build.clone());
                    m.expires = T0 + 3600;
                }
                let signer = if op % 14 == 2 { &key } else { &other };
                let r = dev.put_manifest_at(&SignedManifest::sign(&m, signer).to_json(), NOW);
                if op % 14 == 3 {
                    assert!(r.is_err(), "a manifest signed by another key was accepted");
                }
                if b0 & 0x40 != 0 && b0 & 0x20 == 0 {
                    assert!(r.is_err(), "an expired manifest was accepted");
                }
                if b0 & 0x80 != 0 && b0 & 0x20 == 0 {
                    assert!(r.is_err(), "an old version was accepted");
                }
                if let Ok(a) = r {
                    verified = [false; 2];
                    upload = a.upload_id;
                }
            }
            4 => root = body.to_vec(),
            5 => {
                // Raw bytes, or a well-formed boot part holding them.
                boot = match body.split_first() {
                    Some((b, rest)) if b & 1 == 1 && platform == Platform::Pi3 => {
                        let mut t = krazy_fs::Tree::new();
                        let _ = t.add_file(
                            "kernel8.img",
                            krazy_fs::tree::Contents::bytes(rest.to_vec()),
                            0o644,
                            0,
                        );
                        let mut out = Vec::new();
                        let _ = krazy_update::bootpart::write_tree(&mut out, &t, 0);
                        out
                    }
                    Some((b, rest)) if b & 1 == 1 => {
                        let mut out = Vec::new();
                        let _ = krazy_update::bootarchive::write_archive(
                            &mut out,
                            &[
                                (krazy_update::bootarchive::BootFile::Vmlinuz, rest),
                                (
                                    krazy_update::bootarchive::BootFile::Entry,
                                    b"title t\nlinux /krazy/b/vmlinuz\n",
                                ),
                            ],
                        );
                        out
                    }
                    _ => body.to_vec(),
                };
            }
            6 => {
                tainted[idx(pending_slot)] = true;
                if dev.put_part(PartKind::Root, Some(&upload), &root[..]).is_ok() {
                    verified[0] = true;
                }
            }
            7 => {
                tainted[idx(pending_slot)] = true;
                if dev.put_part(PartKind::Boot, Some(&upload), &boot[..]).is_ok() {
                    verified[1] = true;
                }
            }
            8 => {
                let kind = if body.first().is_some_and(|b| b & 1 == 1) {
                    PartKind::Boot
                } else {
                    PartKind::Root
                };
                let id = body.first().is_some_and(|b| b & 2 == 2).then_some(upload.as_str());
                tainted[idx(pending_slot)] = true;
                if dev.put_part(kind, id, body).is_ok() {
                    verified[(kind == PartKind::Boot) as usize] = true;
                }
            }
            9 => {
                let id = (body.first() != Some(&0)).then_some(upload.as_str());
                if let Ok(sw) = dev.switch(id) {
                    assert!(
                        verified == [true, true],
                        "switch accepted an unverified slot"
                    );
                    tainted[idx(sw.slot)] = false;
                }
            }
            10 => {
                let _ = dev.commit();
            }
            11 => {
                let _ = dev.roll_back(&String::from_utf8_lossy(body), Some("hello"), &[]);
            }
            12 => {
                let _ = dev.cancel();
            }
            _ => {
                // A reboot: the device comes back on the running slot, or on
                // the other one when the body asks for it and the boot flow
                // can boot it (a trial boot, or a pick from the menu).
                let can = dev.bootable().unwrap_or_default();
                drop(dev);
                if body.first().is_some_and(|b| b & 1 == 1) && can.contains(&running.other()) {
                    running = running.other();
                    build = String::from_utf8_lossy(&body[1..]).into_owned();
                }
                assert!(!tainted[idx(running)], "booted slot {running}, which holds unverified bytes");
                verified = [false; 2];
                match open(&dir, platform, software, running, &build, &key) {
                    Some(d) => dev = d,
                    None => return,
                }
                let _ = serde_json::to_string(&dev.status()).unwrap();
                continue;
            }
        }
        if let Ok(can) = dev.bootable() {
            for s in can {
                assert!(
                    !tainted[idx(s)],
                    "op {op}: slot {s} holds unverified bytes and is bootable"
                );
            }
        }
        assert!(
            before == snapshot(&protected),
            "op {op} wrote to slot {protected:?} (running {running}, committed {committed})"
        );
        let _ = serde_json::to_string(&dev.status()).unwrap();
    }
    drop(dev);
    let _ = fs::remove_dir_all(&dir);
});
