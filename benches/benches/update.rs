//! Streaming a 256 MiB root part through krazy-update's verifying writer
//! (SHA-256 and size check, 1 MiB writes, a final fdatasync) into a sparse
//! temp file: the device side of `PUT /update/root` without the network.
//!
//! `cargo bench -p krazy-benches --bench update`; `benches/compare-update.sh`
//! times `sha256sum` + `dd conv=fdatasync` of the same bytes.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use krazy_fs::FileDevice;
use krazy_update::protocol::{PartKind, PartSpec};
use krazy_update::writer::write_image;
use sha2::{Digest, Sha256};

const SIZE: u64 = 256 << 20;

/// 1 MiB of xorshift bytes, repeated to `SIZE` (the same bytes as
/// compare-update.sh's input, which this bench writes out).
fn block() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Yields `block` over and over, `SIZE` bytes in all, without holding them.
struct Repeat<'a> {
    block: &'a [u8],
    left: u64,
    at: usize,
}

impl Read for Repeat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(self.block.len() - self.at)
            .min(self.left as usize);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at = (self.at + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

fn stream_root(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let block = block();
    let src = || Repeat {
        block: &block,
        left: SIZE,
        at: 0,
    };
    let mut h = Sha256::new();
    std::io::copy(&mut src(), &mut HashWriter(&mut h)).unwrap();
    let spec = PartSpec {
        name: PartKind::Root,
        size: SIZE,
        sha256: hex(&h.finalize()),
    };
    if let Ok(out) = std::env::var("KRAZY_UPDATE_BENCH_INPUT") {
        // compare-update.sh asks for the same bytes as a file.
        std::io::copy(&mut src(), &mut std::fs::File::create(out).unwrap()).unwrap();
    }
    let path = dir.path().join("slot.img");
    let mut group = c.benchmark_group("update");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE));
    group.bench_function("verify_write_256MiB", |b| {
        b.iter(|| {
            // A fresh sparse slot each time.
            let file = std::fs::File::create(&path).unwrap();
            file.set_len(SIZE).unwrap();
            let mut dev = FileDevice::new(file, 0, SIZE);
            write_image(src(), &spec, &mut dev).unwrap()
        })
    });
    group.finish();
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

criterion_group!(benches, stream_root);
criterion_main!(benches);
