//! The `krazy_fs::fat` backend of `BootFiles` on a real ESP image written
//! by `krazy_fs::fat`: a full pc update (20 MiB kernel streamed into its
//! fixed-capacity file, trial, commit rewriting loader.conf), then
//! `fsck.fat -n` and mtools read the new contents back, and every byte of
//! the image outside the rewritten files is unchanged.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use krazy_fs::fat::{self, Capacity, FatOptions, FatVolume, Pad};
use krazy_fs::{Contents, FileDevice, MemDevice, Tree};
use krazy_update::bootarchive::{write_archive, BootFile};
use krazy_update::bootfiles::{BootFiles, FatBootFiles};
use krazy_update::bootflow::SystemdBoot;
use krazy_update::device::{BootStorage, Device, DeviceConfig, Storage};
use krazy_update::efivars::{from_utf16, utf16_nul, EfiVars, LOADER_GUID};
use krazy_update::protocol::*;

const KERNEL_CAP: u64 = 24 << 20;
const INITRD_CAP: u64 = 1 << 20;
const ESP_SIZE: u64 = 64 << 20;
const ROOT_SIZE: u64 = 1 << 20;

fn esp_tree() -> (Tree, FatOptions) {
    let mut t = Tree::new();
    for d in [
        "EFI",
        "EFI/BOOT",
        "loader",
        "loader/entries",
        "krazy",
        "krazy/a",
        "krazy/b",
    ] {
        t.add_dir(d, 0o755, 0).unwrap();
    }
    let mut opts = FatOptions::default().with_timestamp(1_700_000_000);
    let mut add = |t: &mut Tree, path: &str, bytes: &[u8], cap: Option<Capacity>| {
        t.add_file(path, Contents::bytes(bytes.to_vec()), 0o644, 0)
            .unwrap();
        if let Some(c) = cap {
            opts = std::mem::take(&mut opts).with_capacity(path, c);
        }
    };
    let text = |n| Some(Capacity::new(n, Pad::Space));
    let zero = |n| Some(Capacity::new(n, Pad::Zero));
    add(&mut t, "EFI/BOOT/BOOTX64.EFI", &[0x4d; 70_000], None);
    add(
        &mut t,
        "loader/loader.conf",
        b"default krazy-a.conf\ntimeout 0\n",
        text(512),
    );
    add(
        &mut t,
        "loader/entries/krazy-a.conf",
        b"title a\n",
        text(512),
    );
    add(
        &mut t,
        "loader/entries/krazy-b.conf",
        b"title b\n",
        text(512),
    );
    add(&mut t, "krazy/a/vmlinuz", b"MZ-a", zero(KERNEL_CAP));
    add(&mut t, "krazy/a/initrd", b"initrd-a", zero(INITRD_CAP));
    add(&mut t, "krazy/b/vmlinuz", b"MZ-old-b", zero(KERNEL_CAP));
    add(&mut t, "krazy/b/initrd", b"initrd-old-b", zero(INITRD_CAP));
    (t, opts)
}

/// Writes the ESP into a sparse file and returns its path.
fn esp_image(dir: &Path) -> PathBuf {
    let p = dir.join("esp.img");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.set_len(ESP_SIZE).unwrap();
    let (tree, opts) = esp_tree();
    fat::write(&mut FileDevice::whole(f).unwrap(), &tree, &opts).unwrap();
    p
}

fn esp_files(img: &Path) -> FatBootFiles<FileDevice> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    FatBootFiles::open(FileDevice::whole(f).unwrap()).unwrap()
}

fn open_device(dir: &Path, img: &Path, key: &SecretKey, running: Slot, build: &str) -> Device {
    let dev = |n: &str| {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(n))
            .unwrap();
        Box::new(FileDevice::whole(f).unwrap())
    };
    Device::open(
        DeviceConfig {
            arch: Arch::X86_64,
            platform: Platform::Pc,
            build_id: build.into(),
            running,
            public_key: key.public(),
            state_dir: dir.join("perm/krazy"),
            min_version: 0,
        },
        Storage {
            root_a: dev("root-a"),
            root_b: dev("root-b"),
            boot: BootStorage::Esp(Box::new(esp_files(img))),
        },
        Box::new(SystemdBoot::new(
            Box::new(esp_files(img)),
            EfiVars::new(dir.join("efivars")),
        )),
    )
    .unwrap()
}

/// systemd-boot: takes the one-shot, else loader.conf's default (read from
/// the image by the FAT reader), and sets LoaderEntrySelected.
fn firmware_boot(dir: &Path, img: &Path) -> Slot {
    let vars = EfiVars::new(dir.join("efivars"));
    let one = vars.read("LoaderEntryOneShot", LOADER_GUID).unwrap();
    vars.delete("LoaderEntryOneShot", LOADER_GUID).unwrap();
    let f = fs::File::open(img).unwrap();
    let conf = FatVolume::open(FileDevice::whole(f).unwrap())
        .unwrap()
        .read_file("loader/loader.conf")
        .unwrap();
    let conf = String::from_utf8(conf).unwrap();
    let default = conf.lines().next().unwrap().trim_start_matches("default ");
    let id = match one {
        Some((_, d)) => from_utf16(&d).unwrap(),
        None => default.to_string(),
    };
    vars.write("LoaderEntrySelected", LOADER_GUID, 6, &utf16_nul(&id))
        .unwrap();
    if id == "krazy-a.conf" {
        Slot::A
    } else {
        Slot::B
    }
}

fn kernel(len: usize) -> Vec<u8> {
    let mut k = b"MZ-new-kernel-b".to_vec();
    k.extend(
        (0..len - k.len()).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] | 1),
    );
    k
}

fn mtools(args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("mtools is installed");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn full_update_on_a_fat_esp_touches_only_the_slot_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for s in ["root-a", "root-b"] {
        fs::File::create(dir.join(s))
            .unwrap()
            .set_len(ROOT_SIZE)
            .unwrap();
    }
    fs::create_dir_all(dir.join("efivars")).unwrap();
    let img = esp_image(dir);
    let before = fs::read(&img).unwrap();
    let key = SecretKey::from_seed([5; 32]);

    assert_eq!(firmware_boot(dir, &img), Slot::A);
    let mut d = open_device(dir, &img, &key, Slot::A, "v1");
    let k = kernel(20 << 20);
    let entry = "title krazy v2\nlinux /krazy/b/vmlinuz\noptions root=PARTUUID=b\n";
    let mut boot = Vec::new();
    write_archive(
        &mut boot,
        &[(BootFile::Vmlinuz, &k), (BootFile::Entry, entry.as_bytes())],
    )
    .unwrap();
    let root = vec![0x5a; 300_000];
    let m = Manifest::new(
        "v2",
        Arch::X86_64,
        Platform::Pc,
        Slot::B,
        2,
        1_790_000_000,
        vec![
            PartSpec::for_bytes(PartKind::Root, &root),
            PartSpec::for_bytes(PartKind::Boot, &boot),
        ],
    );
    let id = d
        .put_manifest_at(&SignedManifest::sign(&m, &key).to_json(), 1_790_000_000)
        .unwrap()
        .upload_id;
    d.put_part(PartKind::Root, Some(&id), &root[..]).unwrap();
    // Read in odd-sized pieces, as from a socket.
    let w = d
        .put_part(PartKind::Boot, Some(&id), ChunkyReader(&boot[..], 77_777))
        .unwrap();
    assert!(w.slot_complete);
    d.switch(Some(&id)).unwrap();
    drop(d);

    assert_eq!(firmware_boot(dir, &img), Slot::B);
    let mut d = open_device(dir, &img, &key, Slot::B, "v2");
    assert!(d.is_trial());
    d.commit().unwrap();
    drop(d);
    assert_eq!(firmware_boot(dir, &img), Slot::B);

    // fsck.fat finds nothing to fix.
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&img)
        .output()
        .expect("dosfstools is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck.fat -n: {text}");
    assert!(
        !text.contains("differ") && !text.contains("Perform changes"),
        "{text}"
    );

    // mtools sees the new contents, padded to the capacities.
    let i = img.to_str().unwrap();
    let conf = mtools(&["mtype", "-i", i, "::/loader/loader.conf"]);
    assert!(conf.starts_with(b"default krazy-b.conf\n"), "{conf:?}");
    assert_eq!(conf.len(), 512);
    let e = mtools(&["mtype", "-i", i, "::/loader/entries/krazy-b.conf"]);
    assert_eq!(e.len(), 512);
    assert!(e.starts_with(entry.as_bytes()));
    assert!(e[entry.len()..].iter().all(|&b| b == b' '));
    let out = dir.join("vmlinuz-b");
    mtools(&[
        "mcopy",
        "-n",
        "-i",
        i,
        "::/krazy/b/vmlinuz",
        out.to_str().unwrap(),
    ]);
    let got = fs::read(&out).unwrap();
    assert_eq!(got.len() as u64, KERNEL_CAP);
    assert_eq!(&got[..k.len()], &k[..]);
    assert!(got[k.len()..].iter().all(|&b| b == 0));
    // No initrd came with the new kernel: the old one is blanked.
    let out = dir.join("initrd-b");
    mtools(&[
        "mcopy",
        "-n",
        "-i",
        i,
        "::/krazy/b/initrd",
        out.to_str().unwrap(),
    ]);
    assert!(fs::read(&out).unwrap().iter().all(|&b| b == 0));
    let out = dir.join("vmlinuz-a");
    mtools(&[
        "mcopy",
        "-n",
        "-i",
        i,
        "::/krazy/a/vmlinuz",
        out.to_str().unwrap(),
    ]);
    assert!(fs::read(&out).unwrap().starts_with(b"MZ-a\0"));

    // Every changed byte lies inside a file the update may rewrite.
    let after = fs::read(&img).unwrap();
    assert_eq!(before.len(), after.len());
    let mut files = esp_files(&img);
    let mut allowed = Vec::new();
    for p in [
        "loader/loader.conf",
        "loader/entries/krazy-b.conf",
        "krazy/b/vmlinuz",
        "krazy/b/initrd",
    ] {
        allowed.extend(files.ranges(p).unwrap());
    }
    let mut changed = 0u64;
    for (block, (x, y)) in before.chunks(4096).zip(after.chunks(4096)).enumerate() {
        if x == y {
            continue;
        }
        for (i, _) in x.iter().zip(y).enumerate().filter(|(_, (a, b))| a != b) {
            changed += 1;
            let at = (block * 4096 + i) as u64;
            assert!(
                allowed.iter().any(|&(s, n)| at >= s && at < s + n),
                "byte {at} outside the slot's files changed"
            );
        }
    }
    assert!(
        changed as usize > k.len() / 2,
        "only {changed} bytes changed"
    );
}

/// A reader that hands out at most `n` bytes per call.
struct ChunkyReader<'a>(&'a [u8], usize);

impl Read for ChunkyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn fat_backend_bounds_paths_and_case() {
    let (tree, opts) = esp_tree();
    let mut dev = MemDevice::zeroed(ESP_SIZE as usize);
    fat::write(&mut dev, &tree, &opts).unwrap();
    let before = dev.as_slice().to_vec();
    let mut f = FatBootFiles::open(&mut dev).unwrap();

    assert_eq!(f.capacity("krazy/a/vmlinuz").unwrap(), KERNEL_CAP);
    assert_eq!(f.capacity("KRAZY/A/VMLINUZ").unwrap(), KERNEL_CAP);
    assert_eq!(f.ranges("krazy/a/vmlinuz").unwrap().len(), 1);
    assert_eq!(f.capacity("EFI/BOOT/BOOTX64.EFI").unwrap(), 70_000);
    assert_eq!(
        f.capacity("krazy/c/vmlinuz").unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(f.capacity("krazy/a").is_err());
    assert!(f.capacity("krazy/../loader/loader.conf").is_err());
    assert!(f.capacity("/loader/loader.conf").is_err());

    // Nothing is written past a capacity, not even the part that fits.
    let err = f
        .write_at("loader/loader.conf", 500, &[b'x'; 13])
        .unwrap_err();
    assert!(err.to_string().contains("512-byte capacity"), "{err}");
    assert!(f.write_at("loader/loader.conf", u64::MAX, b"x").is_err());
    assert!(f.read("krazy/a/vmlinuz", 1 << 20).is_err());
    drop(f);
    assert_eq!(dev.as_slice(), &before[..]);

    let mut f = FatBootFiles::open(&mut dev).unwrap();
    f.overwrite("Loader/Loader.CONF", b"default krazy-b.conf\n", b' ')
        .unwrap();
    f.write_at("krazy/a/initrd", (INITRD_CAP) - 3, b"end")
        .unwrap();
    let conf = f.read("loader/loader.conf", 512).unwrap();
    assert!(conf.starts_with(b"default krazy-b.conf\n "));
    drop(f);
    let mut vol = FatVolume::open(&mut dev).unwrap();
    assert_eq!(vol.read_file("loader/loader.conf").unwrap(), conf);
    assert!(vol.read_file("krazy/a/initrd").unwrap().ends_with(b"\0end"));

    // Not a FAT volume.
    assert!(FatBootFiles::open(MemDevice::zeroed(1 << 20)).is_err());
}
