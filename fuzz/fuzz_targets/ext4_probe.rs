//! ext4::probe must never panic on arbitrary bytes.
#![no_main]

use krazy_fs::{ext4, MemDevice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dev = MemDevice::from_vec(data.to_vec());
    if let Some(info) = ext4::probe(&mut dev) {
        assert!(info.block_size >= 1024);
        assert!(ext4::has_filesystem(&mut dev));
    }
});
