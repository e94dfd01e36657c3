//! krazy-disk: writing the pc layout's partition table to a sparse 4 GiB
//! temp file, and reading it back.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::fs::File;

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_disk::{read_gpt, Arch, InstanceId, Layout, LayoutOptions, PartitionTable, Platform};

const DISK: u64 = 4 << 30;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let id = InstanceId::new("bench").unwrap();

    c.bench_function("gpt/write_pc_4GiB_sparse", |b| {
        b.iter(|| {
            let layout =
                Layout::new(Platform::Pc, Arch::X86_64, DISK, &LayoutOptions::default()).unwrap();
            let table = PartitionTable::from_layout(&layout, &id).unwrap();
            let mut f = File::create(&path).unwrap();
            f.set_len(DISK).unwrap();
            table.write(&mut f).unwrap();
        })
    });

    c.bench_function("gpt/table_bytes_pc_in_memory", |b| {
        b.iter(|| {
            let layout =
                Layout::new(Platform::Pc, Arch::X86_64, DISK, &LayoutOptions::default()).unwrap();
            let table = PartitionTable::from_layout(&layout, &id).unwrap();
            (table.head_bytes(), table.tail_bytes())
        })
    });

    c.bench_function("gpt/read_pc_4GiB", |b| {
        let mut f = File::open(&path).unwrap();
        b.iter(|| {
            let gpt = read_gpt(&mut f, DISK).unwrap();
            assert_eq!(gpt.partitions.len(), 4);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
