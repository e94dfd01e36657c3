//! Assembling and writing the pc appliance's image (examples/pc_appliance)
//! from prepared inputs: `image::assemble` (module closure, initramfs,
//! SBOM), `image::write_image` (GPT, squashfs roots, ESP, perm, fsync) and
//! both, as `krazy build` runs them after cargo.
//!
//! The inputs are prepared once with `pipeline::prepare` and the tests'
//! cache (`target/krazy-test-cache`, cargo's target directory inside it): the
//! first run downloads the kernel and systemd-boot with apt and builds the
//! system programs and `hello` (minutes); later runs reuse them.
//! `benches/compare-image.sh` times the C-tool pipeline on the same content.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use krazy_build::config::Config;
use krazy_build::image;
use krazy_build::pipeline::{self, BuildOptions};

fn bench(c: &mut Criterion) {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let inst = ws.join("examples/pc_appliance");
    let out = tempfile::tempdir().unwrap();
    let img = out.path().join("pc.img");
    let mut opts = BuildOptions::for_dir(&inst);
    opts.cache_dir = ws.join("target/krazy-test-cache");
    opts.target_dir = opts.cache_dir.join("target");
    opts.lock_path = out.path().join("krazy.lock");
    opts.mtime = 1_700_000_000;
    let config = Config::load(&inst.join("krazy.toml")).unwrap();
    let inputs = pipeline::prepare(&config, &opts).unwrap();
    let layout = image::layout(config.platform, opts.disk_bytes, &opts.layout).unwrap();
    let trees = image::assemble(&inputs, &layout).unwrap();

    let mut g = c.benchmark_group("image_pc");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(80));
    g.bench_function("assemble", |b| {
        b.iter(|| image::assemble(&inputs, &layout).unwrap())
    });
    g.bench_function("write_image", |b| {
        b.iter(|| image::write_image(&trees, &img).unwrap())
    });
    g.bench_function("assemble+write_image", |b| {
        b.iter(|| {
            let t = image::assemble(&inputs, &layout).unwrap();
            image::write_image(&t, &img).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
