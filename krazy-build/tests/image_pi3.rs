//! The Pi 3 appliance of `examples/pi3_appliance`, built through the very
//! functions its `main` calls (the builder API, secrets made on the spot,
//! `pipeline::build_config`): Debian's arm64 kernel through apt, the system
//! programs and `hello` for aarch64-musl, and stand-in firmware files made
//! here (the real ones are in Debian's non-free-firmware). Every part is then
//! read back by the reference tools: sfdisk, fdisk and sgdisk for the hybrid
//! MBR and the GPT, fsck.fat and mtools for the three FAT partitions,
//! gzip/cpio and kmod's modinfo for the initramfs, unsquashfs and readelf
//! for the root, e2fsck for perm.
//!
//! Needs: `dpkg --add-architecture arm64 && apt-get update` (so apt sees
//! `linux-image-arm64`), `rustup target add aarch64-unknown-linux-musl`, and
//! `gcc-aarch64-linux-gnu` (ring has C inside).

mod common;

#[path = "../../examples/pi3_appliance/appliance.rs"]
mod appliance;

use common::{extract, options, run};
use krazy_build::config::KernelSource;
use krazy_build::image::{ImageReport, PartitionReport};
use krazy_build::kernel::{self, AptGet, Lock, ResolveOptions};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn part<'a>(r: &'a ImageReport, name: &str) -> &'a PartitionReport {
    r.partitions
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no partition {name} in {:?}", r.partitions))
}

/// The stand-in firmware: distinct bytes per file, so a mix-up shows.
const FIRMWARE: [(&str, &[u8]); 3] = [
    ("bootcode.bin", b"stand-in bootcode.bin\x00\x01\x02"),
    ("start.elf", b"stand-in start.elf\x7fELF"),
    ("fixup.dat", b"stand-in fixup.dat\xff"),
];

#[test]
fn pi3_appliance_image_passes_the_reference_tools() {
    let t = tempfile::tempdir().unwrap();
    let fw = t.path().join("firmware");
    std::fs::create_dir(&fw).unwrap();
    for (name, bytes) in FIRMWARE {
        std::fs::write(fw.join(name), bytes).unwrap();
    }
    // Something the firmware directory may hold that must not be copied.
    std::fs::write(fw.join("LICENCE.broadcom"), b"not firmware").unwrap();
    let inst = t.path().join("instance");
    std::fs::create_dir(&inst).unwrap();
    let img = t.path().join("pi3.img");
    let opts = options(&inst, t.path());
    assert_eq!(opts.secrets_dir, inst.join("secrets"));
    let config =
        appliance::config(&fw, KernelSource::Apt(appliance::DEFAULT_KERNEL_APT.into())).unwrap();
    let r = appliance::build(&config, &opts, &img).unwrap();

    // The secrets were made, private, and are reused by the next build.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&opts.secrets_dir), 0o700);
    assert_eq!(mode(&opts.secrets_dir.join("password")), 0o600);
    assert!(!appliance::ensure_secrets(&opts.secrets_dir).unwrap());

    // The image: 2 GiB (a power of two, as QEMU's raspi3b wants), no partial file.
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 << 30);
    assert_eq!(r.disk_bytes, 2 << 30);
    assert!(!t.path().join(".pi3.img.partial").exists());

    // The kernel, as the lock written by the build pins it: resolving again
    // through the lock reuses the cache and changes nothing.
    let mut lock = Lock::read(&t.path().join("krazy.lock")).unwrap();
    let locked = lock.kernel.clone().expect("the build pins the kernel");
    assert_eq!(locked.requested, "linux-image-arm64");
    assert!(locked.package.starts_with("linux-image-6."), "{locked:?}");
    assert!(locked.package.ends_with("-arm64"), "{locked:?}");
    let (k, changed) = kernel::resolve_kernel(
        &config.kernel,
        &mut lock,
        &ResolveOptions {
            cache_dir: opts.cache_dir.clone(),
            upgrade: false,
        },
        &AptGet,
    )
    .unwrap();
    assert!(!changed);
    let vmlinuz = std::fs::read(&k.vmlinuz).unwrap();
    assert_eq!(&vmlinuz[0x38..0x3c], b"ARM\x64", "an arm64 Image header");
    let dtb = std::fs::read(krazy_build::firmware::pi3_dtb(&k).unwrap()).unwrap();
    assert_eq!(
        &dtb[..4],
        &[0xd0, 0x0d, 0xfe, 0xed],
        "a flattened device tree"
    );

    // The raspi3b runner's firmware stand-in reads the image as the firmware
    // would: autoboot.txt picks boot-a (boot-b with the tryboot flag), and
    // that partition's config.txt and cmdline.txt name what QEMU boots.
    let standin = t.path().join("standin");
    std::fs::create_dir(&standin).unwrap();
    for (tryboot, partition, root, slot) in [
        (false, 2, "root-a", "krazy.slot=a"),
        (true, 3, "root-b", "krazy.slot=b"),
    ] {
        let b = krazy_build::vm::pi_boot(&img, tryboot, &standin).unwrap();
        assert_eq!(b.partition, partition);
        assert_eq!(std::fs::read(&b.kernel).unwrap(), vmlinuz);
        assert_eq!(std::fs::read(&b.dtb).unwrap(), dtb);
        let initrd = std::fs::read(b.initrd.as_ref().unwrap()).unwrap();
        assert_eq!(Some(initrd.len() as u64), r.initramfs_bytes);
        let partuuid = part(&r, root).partuuid.to_lowercase();
        assert!(
            b.cmdline
                .to_lowercase()
                .contains(&format!("root=partuuid={partuuid}")),
            "{}",
            b.cmdline
        );
        assert!(b.cmdline.contains(slot), "{}", b.cmdline);
    }

    // The partition table: a valid GPT with a hybrid MBR.
    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let g = run(Command::new("gdisk").arg("-l").arg(&img));
    assert!(g.contains("MBR: hybrid"), "gdisk sees no hybrid MBR:\n{g}");
    assert!(g.contains("GPT: present"), "{g}");
    let names = ["autoboot", "boot-a", "boot-b", "root-a", "root-b", "perm"];
    for (i, name) in names.iter().enumerate() {
        let want = part(&r, name);
        assert_eq!(want.number as usize, i + 1, "{name}");
        let info = run(Command::new("sgdisk").arg(format!("-i{}", i + 1)).arg(&img));
        assert!(
            info.contains(&format!("Partition name: '{name}'")),
            "{info}"
        );
        assert!(
            info.to_lowercase().contains(&want.partuuid.to_lowercase()),
            "{name} GUID {} not in\n{info}",
            want.partuuid
        );
        assert!(
            info.contains(&format!("First sector: {} ", want.start / 512)),
            "{info}"
        );
        let ty = match *name {
            // The discoverable-partitions root type for aarch64.
            "root-a" | "root-b" => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
            "perm" => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            // Microsoft basic data, as FAT partitions are.
            _ => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        };
        assert!(info.contains(ty), "{name} type:\n{info}");
    }
    // sfdisk reads the GPT: every partition with its start, size and name.
    let dump = run(Command::new("sfdisk").arg("--dump").arg(&img));
    assert!(dump.contains("label: gpt"), "{dump}");
    for name in names {
        let p = part(&r, name);
        assert!(
            dump.lines().any(|l| l.contains(&format!(
                "start={:>12}, size={:>12},",
                p.start / 512,
                p.bytes / 512
            )) && l.contains(&format!("name=\"{name}\""))),
            "{name} not in\n{dump}"
        );
    }
    // The MBR the Pi firmware reads, as fdisk sees it when told to read the
    // dos label: entries 1-3 are the FAT partitions (type 0x0c, the first
    // bootable), entry 4 is 0xee over the sectors before the first
    // partition (the GPT's own).
    let fdisk = run(Command::new("fdisk")
        .args(["-l", "-t", "dos", "-o", "Device,Boot,Start,Sectors,Id"])
        .arg(&img));
    assert!(fdisk.contains("Disklabel type: dos"), "{fdisk}");
    let dev = img.display().to_string();
    let mbr: Vec<Vec<&str>> = fdisk
        .lines()
        .filter(|l| l.starts_with(&dev))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(mbr.len(), 4, "{fdisk}");
    for (i, name) in ["autoboot", "boot-a", "boot-b"].iter().enumerate() {
        let p = part(&r, name);
        let (start, sectors) = ((p.start / 512).to_string(), (p.bytes / 512).to_string());
        let want: Vec<&str> = if i == 0 {
            vec!["*", &start, &sectors, "c"]
        } else {
            vec![&start, &sectors, "c"]
        };
        assert_eq!(
            mbr[i][1..],
            want[..],
            "MBR entry {} ({name})\n{fdisk}",
            i + 1
        );
    }
    let first = part(&r, "autoboot").start / 512;
    let want_ee = ["1".to_string(), (first - 1).to_string(), "ee".to_string()];
    assert_eq!(mbr[3][1..], want_ee[..], "MBR entry 4\n{fdisk}");

    // The FAT partitions: fsck.fat -n clean, then every file through mtools.
    let fat = |name: &str| {
        let p = part(&r, name);
        let f = t.path().join(format!("{name}.fat"));
        extract(&img, p.start, p.bytes, &f);
        run(Command::new("fsck.fat").arg("-n").arg(&f));
        f
    };
    let files = |f: &Path| -> BTreeSet<String> {
        let at = format!("{}@@0", f.display());
        run(Command::new("mdir").args(["-i", &at, "-b", "::/"]))
            .lines()
            .map(|l| l.trim_start_matches("::/").to_string())
            .collect()
    };
    let get = |f: &Path, name: &str| -> Vec<u8> {
        let at = format!("{}@@0", f.display());
        let out = t.path().join(format!(
            "{}-{name}",
            f.file_name().unwrap().to_string_lossy()
        ));
        run(Command::new("mcopy")
            .args(["-n", "-o", "-i", &at])
            .arg(format!("::/{name}"))
            .arg(&out));
        std::fs::read(out).unwrap()
    };
    let text = |f: &Path, name: &str| String::from_utf8(get(f, name)).unwrap();

    let auto = fat("autoboot");
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        files(&auto),
        set(&["autoboot.txt", "bootcode.bin", "config.txt"])
    );
    assert_eq!(get(&auto, "bootcode.bin"), FIRMWARE[0].1);
    assert_eq!(get(&auto, "config.txt"), b"", "an empty config.txt");
    let autoboot = text(&auto, "autoboot.txt");
    assert!(autoboot.contains("tryboot_a_b=1\n"), "{autoboot}");
    let all = autoboot.split("[tryboot]").next().unwrap();
    assert!(all.contains("boot_partition=2\n"), "{autoboot}");
    assert!(
        autoboot
            .split("[tryboot]")
            .nth(1)
            .unwrap()
            .contains("boot_partition=3\n"),
        "{autoboot}"
    );

    let perm = part(&r, "perm");
    let mut initrds = Vec::new();
    for slot in ["a", "b"] {
        let f = fat(&format!("boot-{slot}"));
        assert_eq!(
            files(&f),
            set(&[
                "bcm2837-rpi-3-b.dtb",
                "cmdline.txt",
                "config.txt",
                "fixup.dat",
                "initrd",
                "kernel8.img",
                "start.elf",
            ]),
            "boot-{slot}"
        );
        assert_eq!(get(&f, "start.elf"), FIRMWARE[1].1);
        assert_eq!(get(&f, "fixup.dat"), FIRMWARE[2].1);
        assert!(get(&f, "kernel8.img") == vmlinuz, "slot {slot} kernel8.img");
        assert_eq!(get(&f, "bcm2837-rpi-3-b.dtb"), dtb);
        let cfg = text(&f, "config.txt");
        for line in [
            "arm_64bit=1",
            "kernel=kernel8.img",
            "device_tree=bcm2837-rpi-3-b.dtb",
            "initramfs initrd followkernel",
            "enable_uart=1",
        ] {
            assert!(cfg.lines().any(|l| l == line), "{line} not in\n{cfg}");
        }
        let cmdline = text(&f, "cmdline.txt");
        assert_eq!(cmdline.lines().count(), 1, "{cmdline:?}");
        let args: Vec<&str> = cmdline.split_whitespace().collect();
        let root = part(&r, &format!("root-{slot}"));
        for want in [
            format!("root=PARTUUID={}", root.partuuid),
            format!("krazy.perm=PARTUUID={}", perm.partuuid),
            format!("krazy.slot={slot}"),
            "console=ttyS1,115200".into(),
            "panic=10".into(),
        ] {
            assert!(args.contains(&want.as_str()), "{want} not in {cmdline:?}");
        }
        assert!(
            !args.contains(&"rootwait"),
            "a kernel without stage 1 must panic, not wait"
        );
        initrds.push(get(&f, "initrd"));
    }
    assert_eq!(initrds[0], initrds[1], "both slots boot the same initramfs");
    assert_eq!(initrds[0].len() as u64, r.initramfs_bytes.unwrap());

    // The initramfs: krazy-init (aarch64, static) as /init and the module
    // closure; every dependency kmod's modinfo names is in it or built in.
    let x = t.path().join("initrd");
    std::fs::create_dir(&x).unwrap();
    std::fs::write(t.path().join("initrd.gz"), &initrds[0]).unwrap();
    run(Command::new("sh").current_dir(&x).arg("-c").arg(format!(
        "gzip -dc {} | cpio -id --quiet",
        t.path().join("initrd.gz").display()
    )));
    let modules = x.join("lib/modules").join(&k.version);
    let order = std::fs::read_to_string(x.join("modules.order")).unwrap();
    let mut present = BTreeSet::new();
    for l in order.lines() {
        let rel = l
            .strip_prefix(&format!("/lib/modules/{}/", k.version))
            .unwrap_or_else(|| panic!("{l}"));
        let name = run(Command::new("modinfo")
            .args(["-F", "name"])
            .arg(modules.join(rel)));
        let name = kernel::normalize_module_name(name.trim());
        let deps = run(Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(modules.join(rel)));
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            assert!(
                present.contains(&kernel::normalize_module_name(d)),
                "{name} needs {d}, which is not loaded before it"
            );
        }
        present.insert(name);
    }
    for m in [
        "squashfs",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "ext4",
        "bcm2835",
        "sdhci_iproc",
        "phy_generic",
        "dwc2",
        "smsc95xx",
        "lan78xx",
        "cdc_ether",
        "crc32c_generic",
        "bcm2835_wdt",
        "bcm2835_rng",
    ] {
        assert!(
            present.contains(m),
            "{m} missing from the initramfs: {present:?}"
        );
    }
    let builtin =
        std::fs::read_to_string(k.modules_dir.as_ref().unwrap().join("modules.builtin")).unwrap();
    assert!(
        builtin.lines().any(|l| l.ends_with("/mmc_block.ko")),
        "mmc_block is built into Debian's arm64 kernel"
    );

    // The root: unsquashfs lists what init needs; both slots are equal.
    let root = part(&r, "root-a");
    let root_img = t.path().join("root-a.sqfs");
    extract(&img, root.start, r.root_bytes, &root_img);
    let b = part(&r, "root-b");
    let b_img = t.path().join("root-b.sqfs");
    extract(&img, b.start, r.root_bytes, &b_img);
    assert!(std::fs::read(&root_img).unwrap() == std::fs::read(&b_img).unwrap());
    let rx = t.path().join("root");
    run(Command::new("unsquashfs")
        .args(["-n", "-d"])
        .arg(&rx)
        .arg(&root_img));
    for p in [
        "krazy/init",
        "krazy/dhcp",
        "krazy/ntp",
        "user/hello",
        "etc/krazy/services.toml",
        "etc/krazy/update.toml",
        "etc/krazy/password",
        "etc/krazy/update.pub",
        "etc/krazy/tls/cert.pem",
        "etc/krazy/sbom.json",
        "etc/krazy/build-id",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(rx.join(p).is_file(), "/{p} missing from the root");
    }
    for d in ["dev", "proc", "sys", "tmp", "run", "perm"] {
        assert!(rx.join(d).is_dir(), "/{d}");
    }
    assert_eq!(
        std::fs::read_link(rx.join("etc/resolv.conf")).unwrap(),
        Path::new("/run/resolv.conf")
    );
    assert_eq!(
        std::fs::read_to_string(rx.join("etc/hostname"))
            .unwrap()
            .trim(),
        appliance::HOSTNAME
    );
    assert_eq!(
        std::fs::read_to_string(rx.join("etc/motd")).unwrap(),
        appliance::MOTD
    );
    // The same module files as the initramfs, for the running system.
    for l in order.lines() {
        let p = l.trim_start_matches('/');
        assert!(
            std::fs::read(rx.join(p)).unwrap() == std::fs::read(x.join(p)).unwrap(),
            "{p}"
        );
    }
    let services = krazy_init::config::load_services(&rx.join("etc/krazy/services.toml")).unwrap();
    let names: Vec<_> = services.services.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["dhcp", "ntp", "hello"]);
    let svc = std::fs::read_to_string(rx.join("etc/krazy/services.toml")).unwrap();
    assert!(svc.contains("args = [\"--port\", \"8080\"]"), "{svc}");
    let update = std::fs::read_to_string(rx.join("etc/krazy/update.toml")).unwrap();
    assert!(update.contains("http://127.0.0.1:8080/"), "{update}");
    let pw = std::fs::read_to_string(opts.secrets_dir.join("password")).unwrap();
    let stored = std::fs::read_to_string(rx.join("etc/krazy/password")).unwrap();
    assert!(!stored.contains(pw.trim()));
    assert!(krazy_build::secrets::verify_password(
        pw.trim(),
        stored.trim()
    ));
    // The build id names the SBOM, which hashes the boot files of both slots.
    let build_id = std::fs::read_to_string(rx.join("etc/krazy/build-id")).unwrap();
    assert_eq!(build_id.trim(), r.build_id);
    let sha = run(Command::new("sha256sum").arg(rx.join("etc/krazy/sbom.json")));
    assert_eq!(sha.split_whitespace().next(), Some(r.build_id.as_str()));
    let sbom: krazy_build::sbom::Sbom =
        serde_json::from_slice(&std::fs::read(rx.join("etc/krazy/sbom.json")).unwrap()).unwrap();
    let ksha = run(Command::new("sha256sum").arg(&k.vmlinuz));
    let ksha = format!("sha256:{}", ksha.split_whitespace().next().unwrap());
    for key in ["boot-a:/kernel8.img", "boot-b:/kernel8.img"] {
        assert_eq!(sbom.files.get(key), Some(&ksha), "{key}");
    }
    assert!(sbom.files.contains_key("autoboot:/bootcode.bin"));
    assert_eq!(sbom.kernel.package, locked.package);

    // Every ELF, in the root and the initramfs, is static aarch64 (readelf:
    // no INTERP program header, no NEEDED entry).
    for p in [
        rx.join("krazy/init"),
        rx.join("krazy/dhcp"),
        rx.join("krazy/ntp"),
        rx.join("user/hello"),
        x.join("init"),
    ] {
        let h = run(Command::new("readelf").args(["-h", "-l", "-d"]).arg(&p));
        assert!(
            h.contains("Machine:                           AArch64"),
            "{}: {h}",
            p.display()
        );
        assert!(
            !h.contains("INTERP"),
            "{} has an interpreter: {h}",
            p.display()
        );
        assert!(
            !h.contains("(NEEDED)"),
            "{} needs shared libraries: {h}",
            p.display()
        );
    }
    assert!(
        std::fs::read(x.join("init")).unwrap() == std::fs::read(rx.join("krazy/init")).unwrap(),
        "stage 1 is krazy-init itself"
    );

    // perm: a clean, empty ext4.
    let perm_img = t.path().join("perm.img");
    extract(&img, perm.start, perm.bytes, &perm_img);
    run(Command::new("e2fsck").arg("-fn").arg(&perm_img));
}
