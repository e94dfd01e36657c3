//! Shared setup of the image tests: build an instance with the workspace's
//! system programs, a kernel cache and cargo target directory under
//! `target/krazy-test-cache`, and a lock file outside the source tree.

#![allow(dead_code)]

use krazy_build::pipeline::BuildOptions;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build options for tests: caches under `target/`, progress hidden, the
/// lock in `scratch`.
pub fn options(instance: &Path, scratch: &Path) -> BuildOptions {
    let mut o = BuildOptions::for_dir(instance);
    // The same cache (and cargo target directory inside it) as the krazy
    // CLI's tests, which run with KRAZY_CACHE=target/krazy-test-cache.
    o.cache_dir = workspace().join("target/krazy-test-cache");
    o.target_dir = o.cache_dir.join("target");
    o.lock_path = scratch.join("krazy.lock");
    o.mtime = 1_700_000_000;
    o
}

/// Copies `len` bytes at `offset` of `img` into a new sparse file.
pub fn extract(img: &Path, offset: u64, len: u64, out: &Path) {
    let mut src = File::open(img).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut dst = File::create(out).unwrap();
    dst.set_len(len).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(done)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Says loudly that a test skips for want of `why`; under `KRAZY_CI=1`
/// (which `.ci/run` sets, after installing every tool) a skip is a failure.
pub fn skip(why: &str) {
    assert!(
        std::env::var("KRAZY_CI").as_deref() != Ok("1"),
        "KRAZY_CI=1, and this test would skip: {why}"
    );
    eprintln!("SKIPPED: {why}");
}
