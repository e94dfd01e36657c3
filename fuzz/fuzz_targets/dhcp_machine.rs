//! A sequence of packets and times fed to the DHCP state machine.
//! Each record: [flags][time step u16][len u16][bytes]; flag bit 0 patches the
//! record's xid and chaddr to the client's, so the fuzzer reaches deep states.
#![no_main]
use krazy_net::dhcp::{Action, Client, Config, State};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::new(MAC);
    cfg.seed = 7;
    let mut c = match data.first() {
        Some(b) if b & 1 == 1 => Client::with_saved_address(cfg, [10, 0, 0, 5].into()),
        _ => Client::new(cfg),
    };
    let mut now = Duration::ZERO;
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut actions = c.poll(now);
    while rest.len() >= 5 {
        let flags = rest[0];
        now += Duration::from_millis(u64::from(u16::from_le_bytes([rest[1], rest[2]])) * 50);
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let mut pkt = rest[5..5 + len].to_vec();
        rest = &rest[5 + len..];
        if flags & 1 == 1 && pkt.len() >= 34 {
            pkt[4..8].copy_from_slice(&c.xid().to_be_bytes());
            pkt[28..34].copy_from_slice(&MAC);
            pkt[2] = 6;
        }
        actions = if flags & 2 == 2 { c.poll(now) } else { c.handle_packet(&pkt, now) };
        if flags == 0xff {
            actions = c.release(now);
        }
        for a in &actions {
            if let Action::Send { bytes, .. } = a {
                assert!(bytes.len() >= 300);
            }
        }
        // Invariants: a released machine sleeps no more; any other always asks to be polled.
        match c.state() {
            State::Released => assert!(actions.iter().all(|a| !matches!(a, Action::SleepUntil(_)))),
            _ => assert!(matches!(actions.last(), Some(Action::SleepUntil(_)))),
        }
        if matches!(c.state(), State::Bound | State::Renewing | State::Rebinding) {
            assert!(c.lease().is_some());
        }
    }
});
