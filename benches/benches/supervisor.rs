//! krazy-init's supervisor: 100 services started and stopped, and log ingest
//! with a live follower attached.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use krazy_init::logbuf::{Follower, LogBuffer, LogItem, Stream};
use krazy_init::{ServiceConfig, State, Supervisor, SupervisorOptions};

fn hundred_services(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sup = rt.block_on(async {
        let sup = Supervisor::new(SupervisorOptions::default()).unwrap();
        for i in 0..100 {
            sup.add(
                ServiceConfig::new("/bin/sleep")
                    .name(format!("s{i}"))
                    .arg("1000"),
            )
            .unwrap();
        }
        sup
    });
    let names = sup.names();
    let mut g = c.benchmark_group("supervisor");
    g.sample_size(10);
    g.bench_function("start_and_stop_100_services", |b| {
        b.iter(|| {
            rt.block_on(async {
                sup.boot();
                for n in &names {
                    let s = sup
                        .wait_for_state(n, Duration::from_secs(30), |s| s == State::Running)
                        .await
                        .unwrap();
                    assert_eq!(s, State::Running);
                }
                for n in &names {
                    sup.stop(n).unwrap();
                }
                for n in &names {
                    let s = sup
                        .wait_for_state(n, Duration::from_secs(30), |s| s == State::Stopped)
                        .await
                        .unwrap();
                    assert_eq!(s, State::Stopped);
                }
            })
        })
    });
    g.finish();
}

fn log_ingest(c: &mut Criterion) {
    let line = "2024-05-01T12:00:00Z INFO web: GET /api/v1/status 200 0.3ms user-agent=curl/8.0";
    const LINES: usize = 100_000;
    let mut g = c.benchmark_group("logbuf");
    g.throughput(Throughput::Bytes((line.len() * LINES) as u64));
    g.bench_function("ingest_with_follower", |b| {
        b.iter(|| {
            let buf = LogBuffer::new(Stream::Stdout, 1000, 1 << 20, Arc::new(AtomicU64::new(0)));
            let mut f = Follower::new(&[&buf]);
            let mut seen = 0u64;
            for i in 0..LINES {
                buf.push(line);
                if i % 64 == 0 {
                    // The follower reads now and then; lagging costs it lines, never the writer.
                    while let Some(item) = f.try_next() {
                        seen += match item {
                            LogItem::Line(_) => 1,
                            LogItem::Dropped(_, n) => n,
                        };
                    }
                }
            }
            (buf.usage(), seen)
        })
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::hundred_services, super::log_ingest);
}
criterion_main!(group::benches);
