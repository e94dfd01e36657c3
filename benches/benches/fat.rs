//! Writing an ESP-like tree (a 14 MiB kernel, a 4 MiB initrd, loader files
//! and a few hundred small files, all host files) into a 512 MiB sparse
//! FAT32 image. `benches/compare-fat.sh` times mkfs.fat + mcopy on the same tree.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::fs::{self, File};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_fs::fat::{self, FatOptions};
use krazy_fs::{FileDevice, FromDirOptions, Tree};

/// Writes the ESP-like source tree under `dir`.
fn esp_tree(dir: &Path) {
    let noise = |len: usize, seed: u64| -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for d in [
        "EFI/BOOT",
        "loader/entries",
        "krazy/a",
        "krazy/b",
        "overlays",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("EFI/BOOT/BOOTX64.EFI"), noise(100 << 10, 1)).unwrap();
    fs::write(
        dir.join("loader/loader.conf"),
        "default krazy-a.conf\ntimeout 0\n",
    )
    .unwrap();
    for s in ["a", "b"] {
        fs::write(
            dir.join(format!("loader/entries/krazy-{s}.conf")),
            format!("linux /krazy/{s}/vmlinuz\ninitrd /krazy/{s}/initrd\n"),
        )
        .unwrap();
    }
    fs::write(dir.join("krazy/a/vmlinuz"), noise(14 << 20, 2)).unwrap();
    fs::write(dir.join("krazy/a/initrd"), noise(4 << 20, 3)).unwrap();
    for i in 0..300 {
        fs::write(
            dir.join(format!("overlays/overlay-{i:03}.dtbo")),
            noise(1000 + i * 37, 10 + i as u64),
        )
        .unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    esp_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let img = out.path().join("esp.img");
    let mut g = c.benchmark_group("fat");
    g.sample_size(20);
    g.bench_function("esp_512mib_fat32", |b| {
        b.iter(|| {
            let tree = Tree::from_dir(src.path(), &FromDirOptions::from_env(true)).unwrap();
            let _ = fs::remove_file(&img);
            let f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&img)
                .unwrap();
            f.set_len(512 << 20).unwrap();
            let mut dev = FileDevice::whole(f).unwrap();
            fat::write(&mut dev, &tree, &FatOptions::default()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
