//! The pc boot part: any bytes as a `PUT /update/boot` body, unpacked into
//! fixed-capacity files in memory. Never panics, never grows a file, and
//! on success every required file was written.
#![no_main]

use std::collections::BTreeMap;
use std::io;

use krazy_update::bootarchive::{unpack, BootFile};
use krazy_update::bootfiles::BootFiles;
use krazy_update::protocol::Slot;
use libfuzzer_sys::fuzz_target;

struct Mem(BTreeMap<String, Vec<u8>>);

impl BootFiles for Mem {
    fn capacity(&mut self, path: &str) -> io::Result<u64> {
        self.0
            .get(path)
            .map(|f| f.len() as u64)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn write_at(&mut self, path: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let f = self.0.get_mut(path).ok_or(io::ErrorKind::NotFound)?;
        let end = offset as usize + bytes.len();
        if end > f.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        f[offset as usize..end].copy_from_slice(bytes);
        Ok(())
    }
    fn read(&mut self, path: &str, _max: u64) -> io::Result<Vec<u8>> {
        self.0.get(path).cloned().ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut files = Mem(BTreeMap::new());
    for f in [BootFile::Vmlinuz, BootFile::Initrd, BootFile::Entry] {
        files.0.insert(f.esp_path(Slot::B), vec![0xee; 4096]);
    }
    let mut src = data;
    if let Ok(u) = unpack(&mut src, Slot::B, &mut files) {
        assert!(u.headers.iter().any(|h| h.file == BootFile::Vmlinuz));
        assert!(u.headers.iter().any(|h| h.file == BootFile::Entry));
        assert!(!files.0[&BootFile::Vmlinuz.esp_path(Slot::B)].contains(&0xee));
        assert!(u.entry.len() <= 4096);
    }
    // The pi3 form: any archive is read within its limit, or refused.
    if let Ok(t) = krazy_update::bootpart::read_tree(&mut &data[..], 64 << 10) {
        let total: u64 = t
            .iter()
            .filter_map(|(_, e)| match &e.kind {
                krazy_fs::tree::Kind::File(c) => c.len().ok(),
                _ => None,
            })
            .sum();
        assert!(total <= 64 << 10);
        assert!(t.iter().all(|(p, _)| !p.split('/').any(|c| c == ".." || c.is_empty())));
    }
    // The loader entry is never written by the unpacking: only a switch does.
    assert!(files.0[&BootFile::Entry.esp_path(Slot::B)].iter().all(|&b| b == 0xee));
    assert!(files.0.values().all(|f| f.len() == 4096));
});
