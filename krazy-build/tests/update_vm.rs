//! Signed A/B updates end to end, in QEMU (OVMF with a writable variable
//! store, systemd-boot, TCG), through the forward on 127.0.0.1 over pinned
//! HTTPS: refused manifests and parts leave the device untouched; v1 → v2
//! flips the slot and commits with /perm intact; a v3 whose service fails
//! its health gate rolls back to v2 and reports why; a v4 whose kernel
//! cannot start init comes back on v2 after the panic; a 200 MB root streams
//! in (krazy's client and `curl -T`, PID 1's memory sampled); and power cuts
//! during an upload and during a trial boot leave v2 running, /perm intact.
//!
//! One VM, one test: QEMU tests run one at a time.

mod common;

use common::{options, workspace};
use krazy_build::config::Config;
use krazy_build::pipeline;
use krazy_build::remote;
use krazy_build::update;
use krazy_build::vm::{self, Vm, VmOptions};
use krazy_update::client::ClientError;
use krazy_update::protocol::{PartKind, SecretKey, SignedManifest, Slot, TrialOutcome};
use std::path::Path;
use std::time::Duration;

fn check<T, E: std::fmt::Display>(vm: &Vm, what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!(
            "{what}: {e}\n--- serial console (last 80 lines) ---\n{}",
            vm.serial_tail(80)
        ),
    }
}

/// An instance like examples/pc_appliance with a short settle time and
/// deadline, `extra` appended to its hello package (env, say) and `motd`.
fn instance(dir: &Path, motd: &str, hello_env: &str) -> Config {
    instance_with(dir, motd, hello_env, "kernel_args = []", "")
}

/// [`instance`] with a `kernel_args` line and extra TOML appended.
fn instance_with(
    dir: &Path,
    motd: &str,
    hello_env: &str,
    kernel_args: &str,
    extra: &str,
) -> Config {
    let src = workspace().join("examples/pc_appliance");
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(src.join("krazy.toml"))
        .unwrap()
        .replace(
            "path = \"../hello\"",
            &format!("path = {:?}", workspace().join("examples/hello")),
        )
        .replace(
            "settle_seconds = 30",
            "settle_seconds = 5\ndeadline_seconds = 45",
        )
        .replace("hello from a krazy appliance", motd)
        .replace("env = { RUST_LOG = \"info\" }", hello_env)
        .replacen("kernel_args = []", kernel_args, 1)
        + extra;
    std::fs::write(dir.join("krazy.toml"), text).unwrap();
    if !dir.join("secrets").exists() {
        std::os::unix::fs::symlink(src.join("secrets"), dir.join("secrets")).unwrap();
    }
    Config::load(&dir.join("krazy.toml")).unwrap()
}

fn hello(port: u16) -> String {
    vm::wait_http(
        &format!("127.0.0.1:{port}"),
        "/",
        None,
        Duration::from_secs(60),
    )
    .unwrap()
    .text()
}

fn count(s: &str) -> u64 {
    s.trim().rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn signed_updates_commit_and_a_failing_one_rolls_back() {
    let t = tempfile::tempdir().unwrap();
    let inst = t.path().join("inst");
    let v1 = instance(&inst, "v1", "env = { RUST_LOG = \"info\" }");
    let img = t.path().join("pc.img");
    let opts = options(&inst, t.path());
    let r1 = pipeline::build_config(&v1, &opts, &img).unwrap();

    let https = vm::free_port().unwrap();
    let hello_port = vm::free_port().unwrap();
    // The serial consoles stay in target/test-artifacts for a look after a failure.
    let artifacts = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let vm = Vm::start(
        VmOptions::new(&img)
            .with_forward(https, 443)
            .with_forward(hello_port, 8080)
            .with_fresh_vars(true)
            .with_watchdog(true)
            .with_serial_log(artifacts.join("update_vm-serial.log")),
    )
    .unwrap();
    let limit = Duration::from_secs(240);
    let client = remote::client(&v1, &inst.join("secrets"), &format!("127.0.0.1:{https}")).unwrap();
    check(
        &vm,
        "v1 boot",
        remote::wait_boot_services(&client, &v1, limit),
    );
    let n1 = count(&hello(hello_port));
    let f = check(&vm, "features", client.features());
    assert_eq!((f.running_slot, f.committed_slot), (Slot::A, Slot::A));
    assert_eq!(f.build_id, r1.build_id);

    // v2: one byte of /etc/motd differs.
    let v2 = instance(&inst, "v2", "env = { RUST_LOG = \"info\" }");
    let key = update::signing_key(&inst.join("secrets")).unwrap();
    let p2 = pipeline::build_update(&v2, &opts, Slot::B, &key, &update::Signing::now()).unwrap();
    assert_ne!(p2.manifest.build_id, r1.build_id);

    // A manifest signed with another key: 403, nothing written.
    let other = SecretKey::generate().unwrap();
    let forged = SignedManifest::sign(&p2.manifest, &other).to_json();
    match client.put_manifest(&forged) {
        Err(ClientError::Device { status, .. }) => assert_eq!(status, 403),
        r => panic!("a forged manifest: {r:?}"),
    }
    // The right manifest, then a root part with one byte changed: 422, the
    // slot is invalid, the running system untouched.
    let id = check(&vm, "manifest", client.put_manifest(&p2.signed)).upload_id;
    let mut bad = p2.root.clone();
    bad[1000] ^= 0x55;
    match client.put_part(
        PartKind::Root,
        Some(&id),
        bad.len() as u64,
        &mut &bad[..],
        &mut |_| {},
    ) {
        Err(ClientError::Device { status, .. }) => assert_eq!(status, 422),
        r => panic!("a corrupted part: {r:?}"),
    }
    let st = check(&vm, "status", client.status());
    assert_eq!(st.running_slot, Slot::A);
    assert_eq!(count(&hello(hello_port)), n1 + 1);

    // The real v2: the slot flips to B, the trial commits, /perm is intact.
    let mut sent = 0u64;
    let done = check(
        &vm,
        "update to v2",
        update::push(
            &client,
            &p2,
            &mut |p| sent = sent.max(p.sent),
            &mut |_| {},
            Duration::from_secs(400),
        ),
    );
    assert_eq!(sent, p2.boot.len().max(p2.root.len()) as u64);
    assert_eq!(done.features.build_id, p2.manifest.build_id);
    assert_eq!(
        (done.features.running_slot, done.features.committed_slot),
        (Slot::B, Slot::B)
    );
    let st = check(&vm, "status", client.status());
    let lt = st.last_trial.expect("a trial outcome");
    assert_eq!((lt.outcome, lt.slot), (TrialOutcome::Committed, Slot::B));
    // The count lives under /perm and survived (the health check's own GETs
    // count too, so it is larger, never restarted at 1).
    let n2 = count(&hello(hello_port));
    assert!(n2 >= n1 + 2, "hello's count restarted: {n2} after {n1}");
    // The committed version came through the reboot: v2's own signed
    // manifest again (a replay) is refused, as an older build would be.
    assert_eq!(done.features.committed_version, p2.manifest.version);
    match client.put_manifest(&p2.signed) {
        Err(ClientError::Device { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (409, "downgrade"))
        }
        r => panic!("a replayed manifest: {r:?}"),
    }

    // v3 makes hello fail at once: the gate rolls back to B after the deadline.
    let v3 = instance(
        &inst,
        "v3",
        "env = { RUST_LOG = \"info\", HELLO_FAIL = \"1\" }",
    );
    let p3 = pipeline::build_update(&v3, &opts, Slot::A, &key, &update::Signing::now()).unwrap();
    match update::push(
        &client,
        &p3,
        &mut |_| {},
        &mut |_| {},
        Duration::from_secs(400),
    ) {
        Err(update::UpdateError::Client(ClientError::RolledBack {
            build_id,
            reason,
            service,
            log,
        })) => {
            assert_eq!(build_id, p3.manifest.build_id);
            let reason = reason.unwrap_or_default();
            assert!(reason.contains("hello"), "{reason}");
            assert_eq!(service.as_deref(), Some("hello"));
            assert!(log.iter().any(|l| l.contains("HELLO_FAIL")), "{log:?}");
        }
        r => panic!("v3 should roll back: {r:?}\n{}", vm.serial_tail(80)),
    }
    let f = check(&vm, "features after the rollback", client.features());
    assert_eq!(f.build_id, p2.manifest.build_id);
    assert_eq!((f.running_slot, f.committed_slot), (Slot::B, Slot::B));
    let st = check(&vm, "status", client.status());
    let lt = st.last_trial.unwrap();
    assert_eq!(lt.outcome, TrialOutcome::RolledBack);
    check(
        &vm,
        "services on v2 again",
        remote::wait_boot_services(&client, &v2, limit),
    );
    assert!(count(&hello(hello_port)) > n2);

    // v4's kernel cannot boot (no init): it panics, `panic=10` resets, and
    // the one-shot entry is spent, so the committed v2 comes back and
    // reports the trial as rolled back.
    let v4 = instance_with(
        &inst,
        "v4",
        "env = { RUST_LOG = \"info\" }",
        "kernel_args = [\"rdinit=/nonexistent\", \"init=/nonexistent\"]",
        "",
    );
    let p4 = pipeline::build_update(&v4, &opts, Slot::A, &key, &update::Signing::now()).unwrap();
    match update::push(
        &client,
        &p4,
        &mut |_| {},
        &mut |_| {},
        Duration::from_secs(400),
    ) {
        Err(update::UpdateError::Client(ClientError::RolledBack { build_id, .. })) => {
            assert_eq!(build_id, p4.manifest.build_id)
        }
        r => panic!("v4 should come back on v2: {r:?}\n{}", vm.serial_tail(80)),
    }
    let f = check(&vm, "features after the panic", client.features());
    assert_eq!(
        (f.build_id.as_str(), f.running_slot),
        (p2.manifest.build_id.as_str(), Slot::B)
    );
    check(
        &vm,
        "services after the panic",
        remote::wait_boot_services(&client, &v2, limit),
    );

    // Figures: a 200 MB root (random bytes, so squashfs cannot shrink it)
    // streamed into slot A by krazy's client and by `curl -T`, with the
    // device's PID 1 memory sampled throughout both.
    let big = t.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..200 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }
    let v5 = instance_with(
        &inst,
        "v5",
        "env = { RUST_LOG = \"info\" }",
        "kernel_args = []",
        &format!("\n[[file]]\npath = \"/big.bin\"\nsource = {:?}\n", big),
    );
    let p5 = pipeline::build_update(&v5, &opts, Slot::A, &key, &update::Signing::now()).unwrap();
    assert!(p5.root.len() > 200 << 20);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (s, c) = (
            sampling.clone(),
            remote::client(&v1, &inst.join("secrets"), &format!("127.0.0.1:{https}")).unwrap(),
        );
        std::thread::spawn(move || {
            // (samples taken, peak KiB)
            let (mut n, mut peak) = (0u32, 0u64);
            while s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = c.get_json::<serde_json::Value>("/api/v1/system") {
                    if let Some(kib) = v["supervisor_rss_kib"].as_u64() {
                        n += 1;
                        peak = peak.max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            (n, peak)
        })
    };
    let before: serde_json::Value = check(&vm, "system", client.get_json("/api/v1/system"));
    let id = check(&vm, "manifest v5", client.put_manifest(&p5.signed)).upload_id;
    let t0 = std::time::Instant::now();
    check(
        &vm,
        "200 MB root",
        client.put_part(
            PartKind::Root,
            Some(&id),
            p5.root.len() as u64,
            &mut &p5.root[..],
            &mut |_| {},
        ),
    );
    let krazy_secs = t0.elapsed().as_secs_f64();
    let root_file = t.path().join("root.bin");
    std::fs::write(&root_file, &p5.root).unwrap();
    let id = check(&vm, "manifest v5 again", client.put_manifest(&p5.signed)).upload_id;
    let password = std::fs::read_to_string(inst.join("secrets/password")).unwrap();
    let curl_put = || {
        let t0 = std::time::Instant::now();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
            .arg(format!("krazy:{}", password.trim()))
            .args(["-H", &format!("Krazy-Upload-Id: {id}")])
            .args(["-H", "Content-Type: application/octet-stream", "-T"])
            .arg(&root_file)
            .arg(format!("https://127.0.0.1:{https}/update/root"))
            .output()
            .unwrap();
        (out, t0.elapsed().as_secs_f64())
    };
    // (Before the watchdog fix this is where a loaded host showed the bug:
    // PID 1 never pinged softdog, so the machine reset 60 s after stage 2,
    // mid-upload, and curl saw its connection reset.)
    let (curl, curl_secs) = curl_put();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "{curl:?}\n{}",
        vm.serial_tail(80)
    );
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (samples, peak) = sampler.join().unwrap();
    // At least one sample per 10 s of both uploads (a busy device answers
    // the system endpoint every 3 s or so, against the sampler's 300 ms).
    assert!(
        f64::from(samples) > (krazy_secs + curl_secs) / 10.0 && peak > 0,
        "{samples} memory samples over {:.0} s of uploads",
        krazy_secs + curl_secs
    );
    let mb = p5.root.len() as f64 / 1e6;
    eprintln!(
        "FIGURES root {mb:.0} MB: krazy client {krazy_secs:.1} s ({:.1} MB/s), curl -T {curl_secs:.1} s ({:.1} MB/s); PID 1 RSS {} KiB before, peak {peak} KiB during ({samples} samples)",
        mb / krazy_secs,
        mb / curl_secs,
        before["supervisor_rss_kib"]
    );
    assert!(
        peak < 16 << 10,
        "PID 1 grew to {peak} KiB during the upload"
    );

    // Power back on after a cut: the same disk and variable store, waiting
    // for v2's boot services.
    let power_on = |what: &str| {
        let vm = Vm::start(
            VmOptions::new(&img)
                .with_forward(https, 443)
                .with_forward(hello_port, 8080)
                .with_watchdog(true)
                .with_serial_log(
                    artifacts.join(format!("update_vm-serial-{}.log", what.replace(' ', "-"))),
                ),
        )
        .unwrap();
        check(&vm, what, remote::wait_boot_services(&client, &v2, limit));
        vm
    };

    // A power cut during the root upload: v2 boots again, /perm intact.
    let n3 = count(&hello(hello_port));
    let id = check(&vm, "manifest v5", client.put_manifest(&p5.signed)).upload_id;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let uploader = {
        let (c, root, sent) = (
            remote::client(&v1, &inst.join("secrets"), &format!("127.0.0.1:{https}")).unwrap(),
            p5.root.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || {
            c.put_part(
                PartKind::Root,
                Some(&id),
                root.len() as u64,
                &mut &root[..],
                &mut |p| sent.store(p.sent, std::sync::atomic::Ordering::Relaxed),
            )
        })
    };
    let t0 = std::time::Instant::now();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 20 << 20 {
        assert!(
            !uploader.is_finished() && t0.elapsed() < limit,
            "the upload to cut short ended or stalled after {} bytes\n{}",
            sent.load(std::sync::atomic::Ordering::Relaxed),
            vm.serial_tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    vm.kill().unwrap();
    assert!(
        uploader.join().unwrap().is_err(),
        "the upload cannot have finished"
    );
    drop(vm);
    let vm = power_on("boot after the power cut");
    let f = check(&vm, "features", client.features());
    assert_eq!(
        (f.build_id.as_str(), f.running_slot),
        (p2.manifest.build_id.as_str(), Slot::B)
    );
    assert!(count(&hello(hello_port)) > n3, "/perm intact");

    // A power cut during the trial boot of v5: the committed v2 comes back.
    let n4 = count(&hello(hello_port));
    let mark = vm.serial_mark();
    let id = check(&vm, "manifest", client.put_manifest(&p5.signed)).upload_id;
    check(
        &vm,
        "root",
        client.put_part(
            PartKind::Root,
            Some(&id),
            p5.root.len() as u64,
            &mut &p5.root[..],
            &mut |_| {},
        ),
    );
    check(
        &vm,
        "boot",
        client.put_part(
            PartKind::Boot,
            Some(&id),
            p5.boot.len() as u64,
            &mut &p5.boot[..],
            &mut |_| {},
        ),
    );
    check(&vm, "switch", client.switch(Some(&id)));
    // Armed: the device takes no more bytes (the bypass of issue 12 was a
    // re-PUT here that streamed unverified bytes onto the armed slot).
    let small = &p2.root[..4096];
    match client.put_part(
        PartKind::Root,
        Some(&id),
        small.len() as u64,
        &mut &small[..],
        &mut |_| {},
    ) {
        Err(ClientError::Device { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (409, "trial_armed"))
        }
        r => panic!("a part after the switch: {r:?}"),
    }
    check(&vm, "reboot", client.reboot());
    check(
        &vm,
        "trial boot",
        vm.wait_for_serial_after(mark, "stage 2:", limit),
    );
    vm.kill().unwrap();
    drop(vm);
    let vm = power_on("boot after the second power cut");
    let st = check(&vm, "status", client.status());
    assert_eq!(
        (st.build_id.as_str(), st.running_slot),
        (p2.manifest.build_id.as_str(), Slot::B)
    );
    let lt = st.last_trial.unwrap();
    assert_eq!(
        (lt.outcome, lt.build_id.as_str()),
        (TrialOutcome::RolledBack, p5.manifest.build_id.as_str())
    );
    assert!(count(&hello(hello_port)) > n4, "/perm intact");

    let _: serde_json::Value = check(
        &vm,
        "poweroff",
        client.post_json("/api/v1/poweroff", &serde_json::json!({})),
    );
    assert!(check(&vm, "exit", vm.wait_exit(Duration::from_secs(90))).success());
}
