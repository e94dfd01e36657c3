//! Boot figures of an instance under QEMU (TCG): builds its image once, boots
//! it N times (default 5) with a fresh OVMF variable store, and prints the
//! median and range of the time from QEMU's start to stage 1's first line,
//! stage 2, the DHCP lease, and the first HTTP 200 with every boot service
//! running; then PID 1's resident memory, MemAvailable and the sizes.
//!
//! `cargo run --release -p krazy-build --example boot_times -- examples/pc_appliance [N]`

use std::path::Path;
use std::time::Duration;

use krazy_build::config::Config;
use krazy_build::{pipeline, remote, vm};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "examples/pc_appliance".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let cfg_path = Path::new(&dir).join("krazy.toml");
    let config = Config::load(&cfg_path)?;
    let out = tempfile::tempdir()?;
    let img = out.path().join("boot.img");
    let opts = pipeline::BuildOptions::for_config(&cfg_path);
    let report = pipeline::build_config(&config, &opts, &img)?;
    let mut cols: [Vec<f64>; 4] = Default::default();
    let (mut rss, mut avail) = (Vec::new(), Vec::new());
    for i in 0..n {
        // A fresh image each time: the first boot formats nothing (perm is
        // made at build time) but every boot starts from the same state.
        std::fs::copy(&img, out.path().join("run.img"))?;
        let https = vm::free_port()?;
        let v = vm::Vm::start(
            vm::VmOptions::new(out.path().join("run.img"))
                .with_forward(https, 443)
                .with_watchdog(true)
                .with_fresh_vars(true),
        )?;
        let limit = Duration::from_secs(300);
        let s1 = v.wait_for_serial("stage 1:", limit)?;
        let s2 = v.wait_for_serial("stage 2:", limit)?;
        let lease = v.wait_for_serial("addresses: [\"10.0.2.15/24\"]", limit)?;
        let client = remote::client(
            &config,
            &Path::new(&dir).join("secrets"),
            &format!("127.0.0.1:{https}"),
        )?;
        remote::wait_boot_services(&client, &config, limit)?;
        let http = v.elapsed();
        let sys: serde_json::Value = client.get_json("/api/v1/system")?;
        rss.push(sys["supervisor_rss_kib"].as_f64().unwrap_or(0.0));
        avail.push(sys["memory"]["available_kib"].as_f64().unwrap_or(0.0));
        let row = [s1, s2, lease, http].map(|d| d.as_secs_f64());
        eprintln!(
            "boot {}: stage1 {:.2} s, stage2 {:.2} s, lease {:.2} s, http 200 {:.2} s",
            i + 1,
            row[0],
            row[1],
            row[2],
            row[3]
        );
        for (c, x) in cols.iter_mut().zip(row) {
            c.push(x);
        }
        let _ = client.post_json::<serde_json::Value>("/api/v1/poweroff", &serde_json::json!({}));
        let _ = v.wait_exit(Duration::from_secs(60));
    }
    let names = ["stage 1", "stage 2", "DHCP lease", "HTTP 200"];
    for (name, c) in names.iter().zip(cols.iter_mut()) {
        let (lo, hi) = (
            c.iter().cloned().fold(f64::MAX, f64::min),
            c.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "{name:10} median {:.2} s (min {lo:.2}, max {hi:.2}, n={n})",
            median(c)
        );
    }
    println!("PID 1 RSS   median {:.0} KiB", median(&mut rss));
    println!(
        "MemAvailable median {:.0} KiB (of -m 256)",
        median(&mut avail)
    );
    println!(
        "image {} MiB (sparse), root {:.1} MiB, initramfs {:.1} MiB",
        report.disk_bytes >> 20,
        report.root_bytes as f64 / 1048576.0,
        report.initramfs_bytes.unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}
