//! Arbitrary bytes as an NTP answer, to the parser and to the poller.
#![no_main]
use krazy_net::ntp::{parse_response, NtpAction, Poller};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let t = Duration::from_secs(1_800_000_000);
    let nonce = data.get(24..32).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default())).unwrap_or(0);
    let _ = parse_response(data, nonce, t, t + Duration::from_millis(3));
    let server = "192.0.2.1:123".parse().unwrap();
    let mut p = Poller::new(vec![server], 3);
    let mut pkt = data.to_vec();
    for a in p.poll(Duration::ZERO, t) {
        if let NtpAction::Send { bytes, .. } = a {
            // Echo the nonce so the fuzzer gets past the originate check.
            if pkt.len() >= 32 {
                pkt[24..32].copy_from_slice(&bytes[40..48]);
            }
        }
    }
    if let Ok(s) = p.handle(server, &pkt, Duration::from_millis(5), t) {
        assert!(s.delay_ns >= 0);
    }
    let _ = p.poll(Duration::from_secs(5000), t);
});
