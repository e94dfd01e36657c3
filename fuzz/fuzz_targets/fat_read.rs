//! Arbitrary bytes as a FAT volume: open it, walk every directory (bounded),
//! read every file and try an in-place overwrite; nothing may panic.
#![no_main]

use krazy_fs::fat::FatVolume;
use krazy_fs::MemDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut vol) = FatVolume::open(MemDevice::from_vec(data.to_vec())) else {
        return;
    };
    let mut stack = vec![(String::new(), 0u32)];
    let mut visited = 0;
    let mut first_file = None;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > 64 || depth > 8 {
            break;
        }
        let Ok(list) = vol.list(&dir) else { continue };
        for e in list.iter().take(256) {
            let path = format!("{dir}/{}", e.name);
            let _ = vol.entry_clusters(e, &path);
            if e.is_dir() {
                stack.push((path, depth + 1));
            } else {
                let _ = vol.read_entry(e, &path);
                let _ = vol.read_file(&path);
                first_file.get_or_insert(path);
            }
        }
    }
    if let Some(path) = first_file {
        let _ = vol.overwrite(&path, b"krazy", b' ');
        let _ = vol.lookup(&path.to_uppercase());
    }
});
