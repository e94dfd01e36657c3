//! Formatting sparse ext4 images of 1 GiB and 64 GiB with krazy-fs.
//!
//! `cargo bench -p krazy-benches --bench ext4`; `benches/compare-ext4.sh`
//! times mkfs.ext4 on the same sizes.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_fs::ext4::{self, Ext4Options, InodeTableInit};
use krazy_fs::FileDevice;

fn format_sparse(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("ext4_format");
    group.sample_size(20);
    for (name, size) in [("1GiB", 1u64 << 30), ("64GiB", 64 << 30)] {
        let path = dir.path().join(format!("{name}.img"));
        let opts =
            Ext4Options::new([0x42; 16], 1_700_000_000).inode_tables(InodeTableInit::AssumeZeroed);
        group.bench_function(name, |b| {
            b.iter(|| {
                // A fresh sparse file each time, as the image builder makes.
                let file = std::fs::File::create(&path).unwrap();
                file.set_len(size).unwrap();
                let mut dev = FileDevice::new(file, 0, size);
                ext4::format(&mut dev, &opts).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, format_sparse);
criterion_main!(benches);
