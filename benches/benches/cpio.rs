//! cpio newc writer on the ~20 MB sample tree, plain and gzip.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_benches::sample_tree::write_sample_tree;
use krazy_fs::cpio::{self, CpioOptions};
use krazy_fs::{FromDirOptions, Tree};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_sample_tree(dir.path()).unwrap();
    let tree = Tree::from_dir(dir.path(), &FromDirOptions::from_env(true)).unwrap();
    let mut g = c.benchmark_group("cpio");
    g.sample_size(10);
    for (name, gzip, level) in [
        ("plain", false, 0),
        ("gzip-6", true, 6),
        ("gzip-9", true, 9),
    ] {
        let opts = CpioOptions { gzip, level };
        let mut out = Vec::new();
        let s = cpio::write(&mut out, &tree, &opts).unwrap();
        eprintln!(
            "cpio {name}: {} bytes of archive, {} bytes written",
            s.archive_len,
            out.len()
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(32 << 20);
                cpio::write(&mut out, &tree, &opts).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
