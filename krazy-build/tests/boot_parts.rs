//! The boot files an update writes come from the same functions as a fresh
//! image's boot partition: an image of build 1 updated, slot by slot, with
//! build 2's boot parts (unpacked the way the device does it) holds boot
//! partitions byte-identical to a freshly written image of build 2. pc: the
//! whole ESP (both slots' kernels, initramfs files and loader entries, at
//! the same clusters); pi3: each boot slot's whole FAT, label, volume id and
//! hidden sectors included. No cargo, apt or QEMU: the inputs are files
//! made here.

use std::fs::File;
use std::path::Path;

use krazy_build::config::{Appliance, Config, FirmwareSource, KernelSource, Platform};
use krazy_build::firmware::Firmware;
use krazy_build::image::{self, ImageSecrets, Inputs, Trees};
use krazy_build::kernel::Kernel;
use krazy_build::update::{self, Signing};
use krazy_disk::Role;
use krazy_fs::{BlockDevice, FileDevice};
use krazy_update::bootfiles::FatBootFiles;
use krazy_update::protocol::{SecretKey, Slot, PROTOCOL_V1};
use krazy_update::{bootarchive, bootpart};

const MTIME: u64 = 1_700_000_000;

/// A kernel image of 3 MiB whose bytes depend on `build`.
fn kernel_bytes(build: u8) -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(31) as u8) ^ build)
        .collect()
}

fn config(dir: &Path, platform: Platform) -> Config {
    Appliance::builder()
        .hostname("boot-parts")
        .instance_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        .platform(platform)
        .kernel(KernelSource::Dir(dir.join("kernel")))
        .firmware(match platform {
            Platform::Pc => FirmwareSource::File(dir.join("BOOTX64.EFI")),
            Platform::Pi3 => FirmwareSource::Dir(dir.join("fw")),
        })
        .build()
        .unwrap()
}

/// Build `build` of a small appliance for `platform`, from files in `dir`.
fn inputs(dir: &Path, platform: Platform, build: u8) -> Inputs {
    let d = dir.join(format!("build-{build}"));
    std::fs::create_dir_all(d.join("dtbs/broadcom")).unwrap();
    let vmlinuz = d.join("vmlinuz");
    std::fs::write(&vmlinuz, kernel_bytes(build)).unwrap();
    std::fs::write(d.join("dtbs/broadcom/bcm2837-rpi-3-b.dtb"), [build; 30_000]).unwrap();
    let firmware = match platform {
        Platform::Pc => {
            let efi = d.join("BOOTX64.EFI");
            std::fs::write(&efi, b"MZ systemd-boot stand-in").unwrap();
            Firmware::SystemdBoot { efi, package: None }
        }
        Platform::Pi3 => Firmware::RaspberryPi {
            files: ["bootcode.bin", "fixup.dat", "start.elf"]
                .iter()
                .map(|name| {
                    let p = d.join(name);
                    std::fs::write(&p, format!("{name} of build {build}").repeat(500)).unwrap();
                    (name.to_string(), p)
                })
                .collect(),
        },
    };
    Inputs {
        config: config(dir, platform),
        kernel: Kernel {
            version: format!("6.1.0-{build}-test"),
            vmlinuz,
            modules_dir: None,
            dtbs_dir: Some(d.join("dtbs")),
            package: None,
        },
        firmware,
        programs: Vec::new(),
        secrets: ImageSecrets {
            password_hash: "pbkdf2-sha256$1$00$00".into(),
            update_public_key: [7; 32],
            tls: None,
        },
        crates: Vec::new(),
        ca_bundle: None,
        mtime: MTIME,
    }
}

fn assemble(inputs: &Inputs) -> Trees {
    let layout = image::layout(inputs.config.platform, 2 << 30, &Default::default()).unwrap();
    image::assemble(inputs, &layout).unwrap()
}

fn partition(img: &Path, trees: &Trees, role: Role) -> FileDevice {
    let p = trees.layout.partition(role).unwrap();
    let f = File::options().read(true).write(true).open(img).unwrap();
    FileDevice::new(f, p.start_bytes(), p.size_bytes())
}

fn read_all(dev: &mut FileDevice) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(dev.len()).unwrap()];
    dev.read_at(0, &mut v).unwrap();
    v
}

/// Builds 1 and 2 of `platform`, image 1 written at `old.img` and image 2
/// (fresh) at `new.img`, and build 2's signed parts for each slot.
struct Builds {
    t: tempfile::TempDir,
    trees1: Trees,
    trees2: Trees,
    in2: Inputs,
}

impl Builds {
    fn new(platform: Platform) -> Builds {
        let t = tempfile::tempdir().unwrap();
        let in1 = inputs(t.path(), platform, 1);
        let in2 = inputs(t.path(), platform, 2);
        let (trees1, trees2) = (assemble(&in1), assemble(&in2));
        assert_ne!(trees1.build_id, trees2.build_id);
        image::write_image(&trees1, &t.path().join("old.img")).unwrap();
        image::write_image(&trees2, &t.path().join("new.img")).unwrap();
        Builds {
            t,
            trees1,
            trees2,
            in2,
        }
    }

    fn img(&self, name: &str) -> std::path::PathBuf {
        self.t.path().join(name)
    }

    fn boot_part(&self, slot: Slot, protocol: u32) -> Vec<u8> {
        let key = SecretKey::from_seed([9; 32]);
        let signing = Signing {
            protocol,
            ..Signing::now()
        };
        update::parts(&self.in2, &self.trees2, slot, &key, &signing)
            .unwrap()
            .boot
    }
}

#[test]
fn pc_esp_after_updating_both_slots_is_byte_identical_to_a_fresh_image() {
    let b = Builds::new(Platform::Pc);
    let old = b.img("old.img");
    let esp = |img: &Path, trees: &Trees| read_all(&mut partition(img, trees, Role::Esp));
    let fresh = esp(&b.img("new.img"), &b.trees2);
    assert_ne!(
        esp(&old, &b.trees1),
        fresh,
        "the two builds' ESPs must differ"
    );
    for slot in [Slot::B, Slot::A] {
        // The device's steps: blank the entry, unpack kernel and initramfs
        // into the fixed-capacity files, then write the entry.
        let part = b.boot_part(slot, krazy_update::protocol::PROTOCOL_VERSION);
        let mut files = FatBootFiles::open(partition(&old, &b.trees1, Role::Esp)).unwrap();
        bootarchive::blank_entry(&mut files, slot).unwrap();
        let u = bootarchive::unpack(&mut &part[..], slot, &mut files).unwrap();
        bootarchive::write_entry(&mut files, slot, &u.entry).unwrap();
    }
    let updated = esp(&old, &b.trees1);
    assert!(
        updated == fresh,
        "the updated ESP differs from a fresh one at byte {:?}",
        updated.iter().zip(&fresh).position(|(a, b)| a != b)
    );
}

#[test]
fn pi3_boot_slots_after_updating_are_byte_identical_to_a_fresh_image() {
    let b = Builds::new(Platform::Pi3);
    let old = b.img("old.img");
    for (slot, role) in [(Slot::B, Role::BootB), (Slot::A, Role::BootA)] {
        let fresh = read_all(&mut partition(&b.img("new.img"), &b.trees2, role));
        let mut dev = partition(&old, &b.trees1, role);
        assert_ne!(
            read_all(&mut dev),
            fresh,
            "the two builds' {role:?} must differ"
        );
        let id = bootpart::volume_identity(&mut dev).unwrap();
        assert_eq!(
            id.label.as_deref(),
            Some(if slot == Slot::A {
                "KRAZY-A"
            } else {
                "KRAZY-B"
            })
        );
        let start = b.trees1.layout.partition(role).unwrap().first_lba;
        assert_eq!(u64::from(id.hidden_sectors), start);

        // Protocol 2 on: the device reads the archive, then installs it
        // keeping the partition's identity.
        let part = b.boot_part(slot, krazy_update::protocol::PROTOCOL_VERSION);
        let tree = bootpart::read_tree(&mut &part[..], dev.len()).unwrap();
        let mtime = tree.iter().map(|(_, e)| e.mtime).max().unwrap_or(0);
        bootpart::install(&mut dev, slot, &tree, mtime).unwrap();
        let updated = read_all(&mut dev);
        assert!(
            updated == fresh,
            "the updated {role:?} differs from a fresh one at byte {:?}",
            updated.iter().zip(&fresh).position(|(a, b)| a != b)
        );
        assert_eq!(bootpart::volume_identity(&mut dev), Some(id));

        // Protocol 1: the part is the whole partition, as a fresh image has it.
        let v1 = b.boot_part(slot, PROTOCOL_V1);
        assert!(
            v1 == fresh,
            "the protocol-1 {role:?} part differs from a fresh image's"
        );
    }
}
