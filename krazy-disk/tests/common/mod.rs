//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use krazy_disk::{Arch, InstanceId, Layout, LayoutOptions, PartitionTable, Platform};

pub const MIB: u64 = 1 << 20;

/// The architecture each platform is built for in these tests.
pub fn arch(platform: Platform) -> Arch {
    match platform {
        Platform::Pc => Arch::X86_64,
        Platform::Pi3 => Arch::Aarch64,
    }
}

/// Writes a sparse image of `bytes` with the default layout of `platform`
/// and returns its path and table.
pub fn write_image(
    dir: &Path,
    file: &str,
    platform: Platform,
    bytes: u64,
    opts: &LayoutOptions,
    id: &str,
) -> (PathBuf, Layout, PartitionTable) {
    let layout = Layout::new(platform, arch(platform), bytes, opts).unwrap();
    let table = PartitionTable::from_layout(&layout, &InstanceId::new(id).unwrap()).unwrap();
    let path = dir.join(file);
    let mut f = File::create(&path).unwrap();
    f.set_len(bytes).unwrap();
    table.write(&mut f).unwrap();
    (path, layout, table)
}

/// Small partitions, so images fit in memory for the reader tests.
pub fn small_opts() -> LayoutOptions {
    LayoutOptions::default()
        .with_esp_bytes(8 * MIB)
        .with_autoboot_bytes(4 * MIB)
        .with_boot_bytes(8 * MIB)
        .with_root_bytes(8 * MIB)
}

/// Runs a tool and returns its stdout; panics with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (install gdisk and fdisk)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}
