//! Signed A/B updates end to end, in QEMU (OVMF with a writable variable
//! store, systemd-boot, TCG), through the forward on 127.0.0.1 over pinned
//! HTTPS: refused manifests and parts leave the device untouched; v1 → v2
//! flips the slot and commits with /perm intact; a v3 whose service fails
//! its health gate rolls back to v2 and reports why.
//!
//! One VM, one test: QEMU tests run one at a time.

mod common;

use common::{options, workspace};
use krazy_build::config::Config;
use krazy_build::image;
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
        .replace("env = { RUST_LOG = \"info\" }", hello_env);
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
    let opts = options(&inst, &img, t.path());
    let r1 = pipeline::build_config(&v1, &opts).unwrap();

    let https = vm::free_port().unwrap();
    let hello_port = vm::free_port().unwrap();
    let vm = Vm::start(
        VmOptions::new(&img)
            .with_forward(https, 443)
            .with_forward(hello_port, 8080)
            .with_fresh_vars(true)
            .with_watchdog(true)
            .with_serial_log(t.path().join("serial.log")),
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
    let layout = image::layout(v2.platform, opts.disk_bytes, &opts.layout).unwrap();
    let in2 = pipeline::prepare(&v2, &opts).unwrap();
    let trees2 = image::assemble(&in2, &layout).unwrap();
    assert_ne!(trees2.build_id, r1.build_id);
    let key = update::signing_key(&inst.join("secrets")).unwrap();
    let p2 = update::parts(&in2, &trees2, &layout, Slot::B, &key).unwrap();

    // A manifest signed with another key: 403, nothing written.
    let other = SecretKey::generate().unwrap();
    let forged = SignedManifest::sign(&p2.manifest, &other).to_json();
    match client.put_manifest(&forged) {
        Err(ClientError::Device { status, .. }) => assert_eq!(status, 403),
        r => panic!("a forged manifest: {r:?}"),
    }
    // The right manifest, then a root part with one byte changed: 422, the
    // slot is invalid, the running system untouched.
    check(&vm, "manifest", client.put_manifest(&p2.signed));
    let mut bad = p2.root.clone();
    bad[1000] ^= 0x55;
    match client.put_part(PartKind::Root, bad.len() as u64, &mut &bad[..], &mut |_| {}) {
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
            Duration::from_secs(400),
        ),
    );
    assert_eq!(sent, p2.boot.len().max(p2.root.len()) as u64);
    assert_eq!(done.features.build_id, trees2.build_id);
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

    // v3 makes hello fail at once: the gate rolls back to B after the deadline.
    let v3 = instance(
        &inst,
        "v3",
        "env = { RUST_LOG = \"info\", HELLO_FAIL = \"1\" }",
    );
    let in3 = pipeline::prepare(&v3, &opts).unwrap();
    let trees3 = image::assemble(&in3, &layout).unwrap();
    let p3 = update::parts(&in3, &trees3, &layout, Slot::A, &key).unwrap();
    match update::push(&client, &p3, &mut |_| {}, Duration::from_secs(400)) {
        Err(update::UpdateError::Client(ClientError::RolledBack {
            build_id,
            reason,
            service,
            log,
        })) => {
            assert_eq!(build_id, trees3.build_id);
            let reason = reason.unwrap_or_default();
            assert!(reason.contains("hello"), "{reason}");
            assert_eq!(service.as_deref(), Some("hello"));
            assert!(log.iter().any(|l| l.contains("HELLO_FAIL")), "{log:?}");
        }
        r => panic!("v3 should roll back: {r:?}\n{}", vm.serial_tail(80)),
    }
    let f = check(&vm, "features after the rollback", client.features());
    assert_eq!(f.build_id, trees2.build_id);
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

    let _: serde_json::Value = check(
        &vm,
        "poweroff",
        client.post_json("/api/v1/poweroff", &serde_json::json!({})),
    );
    assert!(check(&vm, "exit", vm.wait_exit(Duration::from_secs(90))).success());
}
