//! Fuzzes krazy-build's .deb reader (ar, tar, xz/zstd/gzip): any bytes must
//! give Ok or an error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = krazy_build::deb::extract_to_memory(data, Path::new("fuzz.deb"), |_| true, 1 << 20);
    let _ = krazy_build::deb::control_fields(data, Path::new("fuzz.deb"));
});
