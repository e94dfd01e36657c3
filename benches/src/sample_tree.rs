//! A realistic root-like tree of about 20 MB for the squashfs and cpio
//! benchmarks: real executables, generated compressible binaries, many
//! small text files in nested directories, and symlinks.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Deterministic bytes shaped like object code: runs of a few repeated
/// words mixed with random bytes (compresses about 2:1 with gzip).
pub fn binary_like(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 4 == 0 {
            v.extend_from_slice(&x.to_le_bytes()[..3]);
        } else {
            v.extend_from_slice(&(x % 61).to_le_bytes()[..((x >> 20) % 4 + 1) as usize]);
        }
    }
    v.truncate(len);
    v
}

/// Deterministic English-like text of `len` bytes.
pub fn text_like(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "kernel",
        "mounts",
        "root",
        "file",
        "system",
        "service",
        "update",
        "boot",
        "slot",
        "partition",
        "krazy",
        "appliance",
        "network",
        "config",
        "value",
        "error",
        "return",
        "read",
        "write",
        "block",
        "device",
        "image",
        "signed",
        "manifest",
        "init",
        "process",
    ];
    let mut x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        v.push(if x % 11 == 0 { b'\n' } else { b' ' });
    }
    v.truncate(len);
    v
}

/// Writes the sample tree into `dir` (which must exist and be empty):
/// up to 8 MB of `/usr/bin` executables (what this machine has), 6 MB of
/// generated binaries, 2,000 small text files in 40 directories, symlinks.
/// Returns the bytes of file contents written.
pub fn write_sample_tree(dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let bin = dir.join("usr/bin");
    fs::create_dir_all(&bin)?;
    let mut names: Vec<_> = fs::read_dir("/usr/bin")
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut copied = 0u64;
    for p in names {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.is_file() || m.len() > 2 << 20 || copied + m.len() > 8 << 20 {
            continue;
        }
        if let Some(name) = p.file_name() {
            fs::copy(&p, bin.join(name))?;
            copied += m.len();
        }
    }
    total += copied;
    let lib = dir.join("usr/lib/krazy");
    fs::create_dir_all(&lib)?;
    for i in 0..12u64 {
        let b = binary_like(i, 100_000 + (i as usize * 37_000));
        total += b.len() as u64;
        fs::write(lib.join(format!("lib{i}.so")), b)?;
    }
    for d in 0..40u64 {
        let sub = dir.join(format!("usr/share/doc/pkg-{d:02}"));
        fs::create_dir_all(&sub)?;
        for f in 0..50u64 {
            let t = text_like(d * 1000 + f, 100 + ((d * 31 + f * 977) % 6000) as usize);
            total += t.len() as u64;
            fs::write(sub.join(format!("file-{f:02}.txt")), t)?;
        }
        symlink(
            format!("pkg-{d:02}/file-00.txt"),
            dir.join(format!("usr/share/doc/readme-{d:02}")),
        )?;
    }
    fs::create_dir_all(dir.join("etc"))?;
    symlink("/run/resolv.conf", dir.join("etc/resolv.conf"))?;
    Ok(total)
}
