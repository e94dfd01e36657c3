//! squashfs writer on the ~20 MB sample tree: krazy's writer with gzip and
//! zstd, and backhand (the crate alternative, gzip) on the same files.
//! `benches/compare-squashfs.sh` runs mksquashfs beside it.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_benches::sample_tree::write_sample_tree;
use krazy_fs::squashfs::{self, Compression, SquashfsOptions};
use krazy_fs::{FromDirOptions, Kind, Tree};

fn backhand_gzip(tree: &Tree) -> usize {
    use backhand::{FilesystemWriter, NodeHeader};
    let mut fs = FilesystemWriter::default();
    fs.set_compressor(
        backhand::FilesystemCompressor::new(backhand::compression::Compressor::Gzip, None).unwrap(),
    );
    for (p, e) in tree.iter() {
        let h = NodeHeader::new(e.mode as u16, e.uid, e.gid, e.mtime as u32);
        match &e.kind {
            Kind::Dir => fs.push_dir(p, h).unwrap(),
            Kind::File(c) => fs
                .push_file_from_path(c.host_path().unwrap(), p, h)
                .unwrap(),
            Kind::Symlink(t) => fs.push_symlink(t, p, h).unwrap(),
            Kind::CharDevice { .. } => {}
        }
    }
    let mut out = Cursor::new(Vec::new());
    fs.write(&mut out).unwrap();
    out.into_inner().len()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_sample_tree(dir.path()).unwrap();
    let tree = Tree::from_dir(dir.path(), &FromDirOptions::from_env(true)).unwrap();
    let mut g = c.benchmark_group("squashfs");
    g.sample_size(10);
    for comp in [Compression::Gzip, Compression::Zstd] {
        let opts = SquashfsOptions {
            compression: comp,
            ..SquashfsOptions::default()
        };
        let mut out = Cursor::new(Vec::new());
        let s = squashfs::write(&mut out, &tree, &opts).unwrap();
        eprintln!(
            "krazy {comp}: {} bytes of data in {} bytes",
            s.data_bytes, s.bytes_used
        );
        g.bench_function(format!("krazy-{comp}"), |b| {
            b.iter(|| {
                let mut out = Cursor::new(Vec::with_capacity(16 << 20));
                squashfs::write(&mut out, &tree, &opts).unwrap()
            })
        });
    }
    eprintln!("backhand gzip: {} bytes", backhand_gzip(&tree));
    g.bench_function("backhand-gzip", |b| b.iter(|| backhand_gzip(&tree)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
