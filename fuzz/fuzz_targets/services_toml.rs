//! krazy-init's services.toml parser never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(file) = krazy_init::config::parse_services(text) {
            for s in &file.services {
                assert!(s.validate().is_ok());
            }
        }
    }
});
