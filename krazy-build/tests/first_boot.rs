//! First boot, for real: the pc appliance (examples/pc_appliance) built,
//! booted in QEMU under TCG through OVMF and systemd-boot (no `-kernel`),
//! and checked through forwards on 127.0.0.1: services, hello, the leased
//! address, persistence across a reboot, 401 without the password, a
//! Chromium screenshot of the status page, a boot outliving the watchdog's
//! timeout, and poweroff ending QEMU.
//!
//! On failure the serial console's tail is printed. The boot figures are
//! printed too (`cargo test --test first_boot -- --nocapture`).

mod common;

use common::{options, workspace};
use krazy_build::config::Config;
use krazy_build::remote;
use krazy_build::vm::{self, Vm, VmOptions};
use krazy_update::client::ClientError;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Fails with the serial console's tail.
fn check<T, E: std::fmt::Display>(vm: &Vm, what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!(
            "{what}: {e}\n--- serial console (last 60 lines) ---\n{}",
            vm.serial_tail(60)
        ),
    }
}

fn hello(port: u16) -> Result<String, vm::VmError> {
    let r = vm::wait_http(
        &format!("127.0.0.1:{port}"),
        "/",
        None,
        Duration::from_secs(60),
    )?;
    Ok(r.text())
}

#[test]
fn pc_appliance_boots_in_qemu_serves_and_survives_a_reboot() {
    let t = tempfile::tempdir().unwrap();
    let inst = workspace().join("examples/pc_appliance");
    let img = t.path().join("pc.img");
    let opts = options(&inst, t.path());
    let config = Config::load(&inst.join("krazy.toml")).unwrap();
    let report = krazy_build::pipeline::build_config(&config, &opts, &img).unwrap();

    let https = vm::free_port().unwrap();
    let http = vm::free_port().unwrap();
    let hello_port = vm::free_port().unwrap();
    let serial = t.path().join("serial.log");
    let vm = Vm::start(
        VmOptions::new(&img)
            .with_forward(https, 443)
            .with_forward(http, 80)
            .with_forward(hello_port, 8080)
            .with_watchdog(true)
            .with_serial_log(&serial),
    )
    .unwrap();

    // Figures from the serial console (wall time since QEMU started).
    let limit = Duration::from_secs(240);
    let t_stage1 = check(&vm, "stage 1", vm.wait_for_serial("stage 1:", limit));
    let t_stage2 = check(&vm, "stage 2", vm.wait_for_serial("stage 2:", limit));
    let t_lease = check(
        &vm,
        "DHCP lease",
        vm.wait_for_serial("addresses: [\"10.0.2.15/24\"]", limit),
    );
    let client = remote::client(
        &config,
        &inst.join("secrets"),
        &format!("127.0.0.1:{https}"),
    )
    .unwrap();
    let services = check(
        &vm,
        "boot services",
        remote::wait_boot_services(&client, &config, limit),
    );
    let t_http = vm.elapsed();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for n in ["dhcp", "ntp", "hello"] {
        assert!(names.contains(&n), "{n} missing from {services:?}");
    }

    // hello answers on its own forward, counting in $HOME/count under /perm.
    let first = check(&vm, "hello", hello(hello_port));
    assert!(first.contains("hello from hello-krazy"), "{first}");
    let n1: u64 = first.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let second = check(&vm, "hello", hello(hello_port));
    assert!(
        second.ends_with(&format!("request {}\n", n1 + 1)),
        "{second}"
    );

    // The system endpoint: the address QEMU's DHCP server leased, the build.
    let sys: serde_json::Value = check(&vm, "system", client.get_json("/api/v1/system"));
    let addrs = sys["addresses"].to_string();
    assert!(addrs.contains("\"10.0.2.15\""), "{sys}");
    assert_eq!(sys["build_id"], report.build_id.as_str());
    assert_eq!(sys["running_slot"], "a");
    assert_eq!(sys["hostname"], "hello-krazy");
    // The device made its own id on this first boot (kept in /perm).
    let id = sys["device_id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{sys}"
    );
    assert!(sys["perm"]["path"] == "/perm", "{sys}");

    // Without the right password: 401, over HTTPS and over plain HTTP.
    let mut cc = krazy_update::client::ClientConfig::new(
        format!("127.0.0.1:{https}"),
        "wrong-password-123456789",
    );
    cc = cc.with_pinned_cert(
        remote::pem_cert_der(&std::fs::read_to_string(inst.join("secrets/tls-cert.pem")).unwrap())
            .unwrap(),
    );
    let bad = krazy_update::client::Client::new(cc).unwrap();
    let e = bad
        .get_json::<serde_json::Value>("/api/v1/services")
        .unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e}");
    let plain = vm::http_request(
        &format!("127.0.0.1:{http}"),
        &vm::HttpRequest::get("/api/v1/services"),
        Duration::from_secs(10),
    )
    .unwrap();
    // Plain HTTP redirects to HTTPS when TLS is on, and never serves data.
    let location = plain.header("location").unwrap_or("").to_string();
    assert!(
        plain.status == 302
            && location.starts_with("https://")
            && location.ends_with("/api/v1/services"),
        "{} {location} {}",
        plain.status,
        plain.text()
    );

    // A headless Chromium screenshot of the status page, served from the VM.
    let password = std::fs::read_to_string(inst.join("secrets/password")).unwrap();
    let art = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&art).unwrap();
    let shot = art.join("vm-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let url = format!("https://krazy:{}@127.0.0.1:{https}/", password.trim());
    // Headless Chromium on `url` with `extra` flags (its own profile).
    let chromium = |extra: &[&str]| {
        Command::new("timeout")
            .args([
                "90",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
            ])
            .args([
                "--ignore-certificate-errors",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--timeout=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let out = chromium(&[
        "--window-size=1000,800",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(
        shot.metadata().map(|m| m.len() > 5000).unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("hello-krazy") && dom.contains("/services/hello"),
        "{dom}"
    );

    // Memory after boot.
    let rss = sys["supervisor_rss_kib"].as_u64().unwrap_or(0);
    let avail = sys["memory"]["available_kib"].as_u64().unwrap_or(0);

    // A reboot through the API keeps hello's counter (it lives under /perm).
    let mark = vm.serial_mark();
    let _: serde_json::Value = check(
        &vm,
        "reboot",
        client.post_json("/api/v1/reboot", &serde_json::json!({})),
    );
    check(
        &vm,
        "reboot: stage 2 again",
        vm.wait_for_serial_after(mark, "stage 2:", limit),
    );
    check(
        &vm,
        "services after the reboot",
        remote::wait_boot_services(&client, &config, limit),
    );
    let third = check(&vm, "hello after the reboot", hello(hello_port));
    assert!(third.ends_with(&format!("request {}\n", n1 + 2)), "{third}");

    // PID 1 keeps pinging the watchdog (softdog, 60 s): the machine runs on
    // well past the timeout without a reset.
    let mut last = 0;
    loop {
        let s: serde_json::Value = check(&vm, "system", client.get_json("/api/v1/system"));
        let up = s["uptime_seconds"].as_u64().unwrap_or(0);
        assert!(
            up >= last,
            "the machine reset: up {up} s after {last} s\n{}",
            vm.serial_tail(40)
        );
        last = up;
        if up >= 75 {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        !vm.serial_lines()
            .iter()
            .any(|(_, l)| l.contains("softdog: Initiating")),
        "the watchdog fired\n{}",
        vm.serial_tail(40)
    );

    // Poweroff through the API ends QEMU cleanly.
    let _: serde_json::Value = check(
        &vm,
        "poweroff",
        client.post_json("/api/v1/poweroff", &serde_json::json!({})),
    );
    let st = check(&vm, "QEMU exit", vm.wait_exit(Duration::from_secs(90)));
    assert!(st.success(), "QEMU exited with {st}");

    eprintln!(
        "FIGURES stage1={:.2}s stage2={:.2}s lease={:.2}s http200={:.2}s pid1_rss={}KiB mem_available={}KiB image={}MiB root={:.1}MiB initramfs={:.1}MiB",
        t_stage1.as_secs_f64(),
        t_stage2.as_secs_f64(),
        t_lease.as_secs_f64(),
        t_http.as_secs_f64(),
        rss,
        avail,
        report.disk_bytes >> 20,
        report.root_bytes as f64 / 1048576.0,
        report.initramfs_bytes.unwrap_or(0) as f64 / 1048576.0,
    );
    let _ = Path::new(&serial);
}
