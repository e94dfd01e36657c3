//! The pc appliance (examples/pc_appliance) built for real: Debian's cloud
//! kernel through apt, systemd-boot, the system programs and `hello` built
//! with cargo for musl; then every part read back by the reference tools.

mod common;

use common::{extract, options, run, workspace};
use krazy_build::config::Config;
use krazy_build::pipeline;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn part<'a>(
    r: &'a krazy_build::image::ImageReport,
    name: &str,
) -> &'a krazy_build::image::PartitionReport {
    r.partitions.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn pc_appliance_image_passes_the_reference_tools() {
    let t = tempfile::tempdir().unwrap();
    let inst = workspace().join("examples/pc_appliance");
    let img = t.path().join("pc.img");
    let opts = options(&inst, t.path());
    let config = Config::load(&inst.join("krazy.toml")).unwrap();
    let inputs = pipeline::prepare(&config, &opts).unwrap();
    let layout =
        krazy_build::image::layout(config.platform, opts.disk_bytes, &opts.layout).unwrap();
    let trees = krazy_build::image::assemble(&inputs, &layout).unwrap();
    let r = krazy_build::image::write_image(&trees, &img).unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 << 30);
    assert!(!t.path().join(".pc.img.partial").exists());

    // The partition table: sgdisk verifies it and sees our names and GUIDs.
    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let p = run(Command::new("sgdisk").arg("-p").arg(&img));
    for name in ["esp", "root-a", "root-b", "perm"] {
        assert!(p.contains(name), "{name} missing from\n{p}");
    }
    for (i, want) in r.partitions.iter().enumerate() {
        let info = run(Command::new("sgdisk").arg(format!("-i{}", i + 1)).arg(&img));
        assert!(
            info.to_lowercase().contains(&want.partuuid.to_lowercase()),
            "partition {} GUID {} not in\n{info}",
            want.name,
            want.partuuid
        );
        assert!(
            info.contains(&format!("First sector: {} ", want.start / 512)),
            "{info}"
        );
    }
    let info = run(Command::new("sgdisk").arg("-i1").arg(&img));
    assert!(
        info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "ESP type: {info}"
    );

    // The ESP: fsck.fat, then every file through mtools at its capacity.
    let esp = part(&r, "esp");
    let esp_img = t.path().join("esp.img");
    extract(&img, esp.start, esp.bytes, &esp_img);
    run(Command::new("fsck.fat").arg("-n").arg(&esp_img));
    let at = format!("{}@@0", esp_img.display());
    let ls = |p: &str| run(Command::new("mdir").args(["-i", &at, "-a", p]));
    assert!(ls("::/EFI/BOOT").contains("BOOTX64  EFI"));
    let sizes = |dir: &str| -> String { ls(dir) };
    let a = sizes("::/krazy/a");
    let b = sizes("::/krazy/b");
    for listing in [&a, &b] {
        assert!(
            listing.contains(&format!("{}", 48 * MIB)),
            "vmlinuz capacity: {listing}"
        );
        assert!(
            listing.contains(&format!("{}", 32 * MIB)),
            "initrd capacity: {listing}"
        );
    }
    let get = |p: &str| {
        let out = t.path().join(p.replace('/', "_"));
        run(Command::new("mcopy")
            .args(["-n", "-o", "-i", &at])
            .arg(format!("::/{p}"))
            .arg(&out));
        std::fs::read(out).unwrap()
    };
    let vmlinuz = std::fs::read(&inputs.kernel.vmlinuz).unwrap();
    for slot in ["a", "b"] {
        let k = get(&format!("krazy/{slot}/vmlinuz"));
        assert_eq!(k.len() as u64, 48 * MIB);
        assert_eq!(&k[..vmlinuz.len()], &vmlinuz[..], "slot {slot} kernel");
        assert!(k[vmlinuz.len()..].iter().all(|&b| b == 0), "zero padding");
        let entry = String::from_utf8(get(&format!("loader/entries/krazy-{slot}.conf"))).unwrap();
        assert_eq!(entry.len(), 1024);
        let root = part(&r, &format!("root-{slot}"));
        let perm = part(&r, "perm");
        assert!(
            entry.contains(&format!("linux /krazy/{slot}/vmlinuz\n")),
            "{entry}"
        );
        assert!(
            entry.contains(&format!("initrd /krazy/{slot}/initrd\n")),
            "{entry}"
        );
        assert!(
            entry.contains(&format!("root=PARTUUID={}", root.partuuid)),
            "{entry}"
        );
        assert!(
            entry.contains(&format!("krazy.perm=PARTUUID={}", perm.partuuid)),
            "{entry}"
        );
        assert!(entry.contains(&format!("krazy.slot={slot}")), "{entry}");
        assert!(
            entry.contains("console=tty1 console=ttyS0,115200 panic=10"),
            "{entry}"
        );
    }
    let conf = String::from_utf8(get("loader/loader.conf")).unwrap();
    assert!(
        conf.starts_with("default krazy-a.conf\ntimeout 0\n"),
        "{conf:?}"
    );
    assert_eq!(conf.len(), 512);

    // The initramfs: krazy-init as /init, a console node, and exactly the
    // module closure (by name) with /modules.order listing it.
    let initrd = get("krazy/a/initrd");
    let len = r.initramfs_bytes.unwrap() as usize;
    assert!(initrd[len..].iter().all(|&b| b == 0));
    std::fs::write(t.path().join("initrd.gz"), &initrd[..len]).unwrap();
    let list = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} | cpio -itv --quiet",
        t.path().join("initrd.gz").display()
    )));
    assert!(
        list.lines()
            .any(|l| l.starts_with("crw") && l.ends_with(" dev/console")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
        "{list}"
    );
    let kos: BTreeSet<String> = list
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|n| n.ends_with(".ko"))
        .map(|n| n.trim_end_matches(".ko").replace('-', "_"))
        .collect();
    let want: BTreeSet<String> = trees.initramfs_modules.iter().cloned().collect();
    assert_eq!(kos, want);
    for m in [
        "virtio_blk",
        "virtio_net",
        "virtio_pci",
        "squashfs",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "efivarfs",
        "softdog",
    ] {
        assert!(kos.contains(m), "{m} missing from the initramfs: {kos:?}");
    }
    let order = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} | cpio -i --quiet --to-stdout modules.order",
        t.path().join("initrd.gz").display()
    )));
    assert_eq!(order.lines().count(), kos.len());
    assert!(order
        .lines()
        .all(|l| l.starts_with(&format!("/lib/modules/{}/", inputs.kernel.version))));

    // The roots: unsquashfs lists what init needs; both slots are equal.
    let root = part(&r, "root-a");
    let root_img = t.path().join("root.sqfs");
    extract(&img, root.start, r.root_bytes, &root_img);
    let l = run(Command::new("unsquashfs")
        .args(["-n", "-lls"])
        .arg(&root_img));
    for p in [
        "squashfs-root/krazy/init",
        "squashfs-root/krazy/dhcp",
        "squashfs-root/krazy/ntp",
        "squashfs-root/user/hello",
        "squashfs-root/etc/krazy/services.toml",
        "squashfs-root/etc/krazy/password",
        "squashfs-root/etc/krazy/update.pub",
        "squashfs-root/etc/krazy/tls/cert.pem",
        "squashfs-root/etc/krazy/sbom.json",
        "squashfs-root/etc/krazy/build-id",
        "squashfs-root/etc/hostname",
        "squashfs-root/etc/motd",
        "squashfs-root/etc/ssl/certs/ca-certificates.crt",
        "squashfs-root/perm",
        "squashfs-root/dev",
    ] {
        assert!(
            l.lines().any(|x| x.ends_with(&format!(" {p}"))),
            "{p} missing:\n{l}"
        );
    }
    assert!(l.contains("squashfs-root/etc/resolv.conf -> /run/resolv.conf"));
    assert!(l.contains(&format!(
        "squashfs-root/lib/modules/{}/kernel/",
        inputs.kernel.version
    )));
    let other = part(&r, "root-b");
    let b_img = t.path().join("root-b.sqfs");
    extract(&img, other.start, r.root_bytes, &b_img);
    assert_eq!(
        std::fs::read(&root_img).unwrap(),
        std::fs::read(&b_img).unwrap()
    );
    let x = t.path().join("x");
    run(Command::new("unsquashfs")
        .args(["-n", "-d"])
        .arg(&x)
        .arg(&root_img));
    // services.toml parses with krazy-init's own reader and names what it must.
    let services = krazy_init::config::load_services(&x.join("etc/krazy/services.toml")).unwrap();
    let names: Vec<_> = services.services.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["dhcp", "ntp", "hello"]);
    let svc = std::fs::read_to_string(x.join("etc/krazy/services.toml")).unwrap();
    assert!(svc.contains("args = [\"--port\", \"8080\"]"), "{svc}");
    assert!(svc.contains("wait_for = [\"network\"]"), "{svc}");
    // The password is stored hashed, never in clear.
    let pw = std::fs::read_to_string(inst.join("secrets/password")).unwrap();
    let stored = std::fs::read_to_string(x.join("etc/krazy/password")).unwrap();
    assert!(stored.starts_with("pbkdf2-sha256$100000$") && !stored.contains(pw.trim()));
    assert!(krazy_build::secrets::verify_password(
        pw.trim(),
        stored.trim()
    ));
    assert!(!x.join("etc/krazy/tls/key.pem").exists() || config.web.tls);
    assert_eq!(
        std::fs::read_to_string(x.join("etc/krazy/build-id"))
            .unwrap()
            .trim(),
        r.build_id
    );
    // Every ELF is static and x86-64, by readelf (no INTERP, no DYNAMIC needs).
    for p in ["krazy/init", "krazy/dhcp", "krazy/ntp", "user/hello"] {
        let h = run(Command::new("readelf")
            .args(["-h", "-l", "-d"])
            .arg(x.join(p)));
        assert!(h.contains("Advanced Micro Devices X86-64"), "{p}: {h}");
        assert!(!h.contains("INTERP"), "{p} has an interpreter: {h}");
        assert!(!h.contains("(NEEDED)"), "{p} needs shared libraries: {h}");
    }

    // The perm partition: a clean, empty ext4.
    let perm = part(&r, "perm");
    let perm_img = t.path().join("perm.img");
    extract(&img, perm.start, perm.bytes, &perm_img);
    run(Command::new("e2fsck").arg("-fn").arg(&perm_img));
    let l = run(Command::new("dumpe2fs").arg("-h").arg(&perm_img));
    assert!(l.contains("Filesystem volume name:   perm"), "{l}");
}

fn build(inst: &Path, out: &Path, scratch: &Path) -> String {
    let opts = options(inst, scratch);
    pipeline::build_image(&inst.join("krazy.toml"), &opts, out)
        .unwrap()
        .build_id
}

fn sha(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn builds_are_reproducible_and_the_build_id_follows_every_byte() {
    let t = tempfile::tempdir().unwrap();
    let inst = t.path().join("inst");
    std::fs::create_dir(&inst).unwrap();
    let src = workspace().join("examples/pc_appliance");
    let cfg = std::fs::read_to_string(src.join("krazy.toml"))
        .unwrap()
        .replace(
            "path = \"../hello\"",
            &format!("path = {:?}", workspace().join("examples/hello")),
        );
    std::fs::write(inst.join("krazy.toml"), &cfg).unwrap();
    std::os::unix::fs::symlink(src.join("secrets"), inst.join("secrets")).unwrap();
    let one = build(&inst, &t.path().join("one.img"), t.path());
    let two = build(&inst, &t.path().join("two.img"), t.path());
    assert_eq!(one, two);
    assert_eq!(
        sha(&t.path().join("one.img")),
        sha(&t.path().join("two.img"))
    );
    // One byte of one extra file changes the build id (and the image).
    std::fs::write(
        inst.join("krazy.toml"),
        cfg.replace(
            "hello from a krazy appliance",
            "hello from a krazy appliancE",
        ),
    )
    .unwrap();
    let three = build(&inst, &t.path().join("three.img"), t.path());
    assert_ne!(one, three);
    assert_ne!(
        sha(&t.path().join("one.img")),
        sha(&t.path().join("three.img"))
    );
}
