//! DHCP codec and state machine throughput: encode, decode, and a whole
//! DISCOVER/OFFER/REQUEST/ACK exchange in memory.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use krazy_net::dhcp::packet::{opt, Message, MessageType};
use krazy_net::dhcp::{Action, Client, Config};
use std::time::Duration;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn reply(req: &Message, t: MessageType) -> Vec<u8> {
    let mut m = Message::request(req.xid, MAC);
    m.op = 2;
    m.yiaddr = [10, 0, 0, 50].into();
    m.push(opt::MESSAGE_TYPE, [t as u8]);
    m.push(opt::SERVER_ID, [10, 0, 0, 1]);
    m.push(opt::LEASE_TIME, 3600u32.to_be_bytes());
    m.push(opt::SUBNET_MASK, [255, 255, 255, 0]);
    m.push(opt::ROUTER, [10, 0, 0, 1]);
    m.push(opt::DNS, [10, 0, 0, 53]);
    m.push(opt::DOMAIN_NAME, b"example.org".to_vec());
    m.encode()
}

fn sent(a: &[Action]) -> Message {
    a.iter()
        .find_map(|a| match a {
            Action::Send { bytes, .. } => Message::decode(bytes).ok(),
            _ => None,
        })
        .expect("a Send")
}

fn bench(c: &mut Criterion) {
    let mut client = Client::new(Config::new(MAC));
    let discover = sent(&client.poll(Duration::ZERO));
    let ack = reply(&discover, MessageType::Ack);
    c.bench_function("dhcp encode discover", |b| {
        b.iter(|| black_box(&discover).encode())
    });
    c.bench_function("dhcp decode ack", |b| {
        b.iter(|| Message::decode(black_box(&ack)).map(|m| m.xid))
    });
    c.bench_function("dhcp full exchange in memory", |b| {
        b.iter(|| {
            let mut c = Client::new(Config::new(MAC));
            let d = sent(&c.poll(Duration::ZERO));
            let r = sent(&c.handle_packet(&reply(&d, MessageType::Offer), Duration::ZERO));
            let a = c.handle_packet(&reply(&r, MessageType::Ack), Duration::ZERO);
            assert!(a.iter().any(|x| matches!(x, Action::Configure(_))));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
