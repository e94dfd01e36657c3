//! Arbitrary bytes into the DHCP decoder, lease validation, option helpers and the frame parser.
#![no_main]
use krazy_net::dhcp::{lease, packet, Lease};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = krazy_net::linux::packet_socket::parse_frame(data);
    let _ = packet::domain_search(data);
    let _ = lease::classless_routes(data);
    if let Ok(m) = packet::Message::decode(data) {
        let _ = m.message_type();
        let _ = Lease::from_message(&m, None);
        // Re-encoding a decoded message decodes to the same message.
        let again = packet::Message::decode(&m.encode()).expect("re-decode");
        assert_eq!(again.xid, m.xid);
        assert_eq!(again.options, m.options);
    }
});
