//! The `krazy` command line, run as a user runs it: help on every verb,
//! `new`, `build --json`, clear errors, `status` and `logs` over pinned
//! HTTPS, `vm run --smoke` booting the pc appliance in QEMU, `vm run`
//! leaving no QEMU behind when it is sent SIGTERM or SIGHUP, and `update`
//! committing one build and reporting the rollback of another.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// QEMU tests run one at a time (two TCG guests on two cores would starve).
static QEMU: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `krazy` with the test cache (shared with krazy-build's image tests).
fn krazy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_krazy"));
    c.env("KRAZY_CACHE", workspace().join("target/krazy-test-cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An instance in `dir` that is examples/pc_appliance with absolute paths
/// (so neither the lock nor build outputs land in the source tree).
fn pc_instance(dir: &Path) -> PathBuf {
    let src = workspace().join("examples/pc_appliance");
    let inst = dir.join("inst");
    std::fs::create_dir_all(&inst).unwrap();
    let cfg = std::fs::read_to_string(src.join("krazy.toml"))
        .unwrap()
        .replace(
            "path = \"../hello\"",
            &format!("path = {:?}", workspace().join("examples/hello")),
        );
    std::fs::write(inst.join("krazy.toml"), cfg).unwrap();
    std::os::unix::fs::symlink(src.join("secrets"), inst.join("secrets")).unwrap();
    inst
}

#[test]
fn every_verb_has_help() {
    let top = ok(&krazy().arg("--help").output().unwrap());
    for verb in ["new", "build", "overwrite", "vm", "status", "logs", "lock"] {
        assert!(top.contains(verb), "{verb} missing from\n{top}");
        let h = ok(&krazy().args([verb, "--help"]).output().unwrap());
        assert!(h.contains("Usage: krazy"), "{h}");
    }
    let h = ok(&krazy().args(["vm", "run", "--help"]).output().unwrap());
    for flag in [
        "--forward",
        "--host-forward",
        "--smoke",
        "--serial-log",
        "--accel",
        "-c",
    ] {
        assert!(h.contains(flag), "{flag} missing from\n{h}");
    }
}

#[test]
fn new_makes_an_instance_and_never_overwrites_one() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("garden-gate");
    let out = ok(&krazy().arg("new").arg(&dir).output().unwrap());
    assert!(out.contains("krazy vm run"), "{out}");
    let cfg = krazy_build::config::Config::load(&dir.join("krazy.toml")).unwrap();
    assert_eq!(cfg.hostname, "garden-gate");
    assert_eq!(cfg.instance_id.len(), 32);
    assert_eq!(cfg.package[0].name, "hello");
    assert!(dir.join("hello/src/main.rs").is_file());
    let secrets = dir.join("secrets");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secrets), 0o700);
    for f in [
        "password",
        "update-key.pk8",
        "update-key.pub",
        "tls-cert.pem",
        "tls-key.pem",
    ] {
        assert_eq!(mode(&secrets.join(f)), 0o600, "{f}");
    }
    assert!(
        std::fs::read_to_string(secrets.join("password"))
            .unwrap()
            .trim()
            .len()
            >= 20
    );
    assert!(std::fs::read_to_string(secrets.join(".gitignore"))
        .unwrap()
        .contains('*'));
    // A second `new` refuses and keeps the first instance's id.
    let e = fails(&krazy().arg("new").arg(&dir).output().unwrap());
    assert!(e.contains("already exists"), "{e}");
    let again = krazy_build::config::Config::load(&dir.join("krazy.toml")).unwrap();
    assert_eq!(again.instance_id, cfg.instance_id);
    // Two instances never share an id.
    let other = t.path().join("other");
    ok(&krazy().arg("new").arg(&other).output().unwrap());
    let o = krazy_build::config::Config::load(&other.join("krazy.toml")).unwrap();
    assert_ne!(o.instance_id, cfg.instance_id);
}

#[test]
fn errors_say_what_is_wrong_and_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let inst = pc_instance(t.path());
    let toml = inst.join("krazy.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("[web]\n", "[web]\nhttp_prot = 8080\n")).unwrap();
    let img = t.path().join("x.img");
    let e = fails(
        &krazy()
            .args(["build", "-c"])
            .arg(&inst)
            .arg("-o")
            .arg(&img)
            .output()
            .unwrap(),
    );
    assert!(e.contains("http_prot") && e.contains("krazy.toml"), "{e}");
    assert!(!img.exists());
    // No config at all.
    let e = fails(
        &krazy()
            .args(["build", "-c"])
            .arg(t.path())
            .arg("-o")
            .arg(&img)
            .output()
            .unwrap(),
    );
    assert!(e.contains("krazy new"), "{e}");
    // overwrite refuses what is not a block device, before building anything.
    std::fs::write(&toml, &text).unwrap();
    let f = t.path().join("not-a-disk");
    std::fs::write(&f, b"x").unwrap();
    let e = fails(
        &krazy()
            .args(["overwrite", "-c"])
            .arg(&inst)
            .arg("--device")
            .arg(&f)
            .output()
            .unwrap(),
    );
    assert!(e.contains("not a block device"), "{e}");
    // A bad size.
    let e = fails(
        &krazy()
            .args(["build", "-c"])
            .arg(&inst)
            .args(["-o", "y.img", "--size", "3X"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("unit"), "{e}");
}

#[test]
fn build_json_then_vm_run_smoke_boots_the_pc_appliance() {
    let t = tempfile::tempdir().unwrap();
    let inst = pc_instance(t.path());
    let img = t.path().join("pc.img");
    let out = ok(&krazy()
        .args(["build", "--json", "-c"])
        .arg(inst.join("krazy.toml"))
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["disk_bytes"], 2u64 << 30);
    assert_eq!(r["partitions"].as_array().unwrap().len(), 4);
    let build_id = r["build_id"].as_str().unwrap().to_string();
    assert!(inst.join("krazy.lock").is_file(), "the kernel is pinned");

    let serial = t.path().join("serial.log");
    let _qemu = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let o = krazy()
        .args(["vm", "run", "--smoke", "--timeout", "240", "-c"])
        .arg(&inst)
        .arg("--image")
        .arg(t.path().join("vm.img"))
        .arg("--serial-log")
        .arg(&serial)
        .output()
        .unwrap();
    let out = ok(&o);
    let line: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(line["boot_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        line["build_id"],
        build_id.as_str(),
        "the same build, reproduced"
    );
    let services = line["services"].as_array().unwrap();
    for n in ["dhcp", "ntp", "hello"] {
        assert!(
            services
                .iter()
                .any(|s| s["name"] == n && s["state"] == "running"),
            "{n}: {line}"
        );
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("https://127.0.0.1:") && err.contains("password"),
        "{err}"
    );
    // Powered off through the API: the serial console shows the orderly path.
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(log.contains("Poweroff: stopping services"), "{log}");
    assert!(log.contains("reboot: Power down"), "{log}");
}

/// QEMU processes (pid, command line) whose command line names `needle`.
fn qemus_naming(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("qemu-system") && cmd.contains(needle) {
            found.push((pid, cmd));
        }
    }
    found
}

#[test]
fn vm_run_leaves_no_qemu_behind_on_sigterm_or_sighup() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::BufRead;
    use std::process::Stdio;

    let t = tempfile::tempdir().unwrap();
    let inst = pc_instance(t.path());
    let img = t.path().join("vm.img");
    let img_s = img.to_str().unwrap().to_string();
    let _qemu = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    for sig in [Signal::SIGTERM, Signal::SIGHUP] {
        let mut child = krazy()
            .args(["vm", "run", "-c"])
            .arg(&inst)
            .arg("--image")
            .arg(&img)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until QEMU runs and krazy says it is ready for Ctrl-C (the
        // build comes first; QEMU need not finish booting).
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut l = String::new();
            if err.read_line(&mut l).unwrap() == 0 {
                panic!("krazy vm run ended early: {:?}\n{said}", child.wait());
            }
            said.push_str(&l);
            if l.contains("Ctrl-C powers the VM off") {
                break;
            }
        }
        let qemus = qemus_naming(&img_s);
        assert_eq!(qemus.len(), 1, "{qemus:?}\n{said}");
        let (qemu_pid, cmd) = &qemus[0];
        let runtime_dir = cmd
            .split_whitespace()
            .find_map(|a| a.strip_prefix("unix:"))
            .and_then(|s| s.split(',').next())
            .and_then(|sock| Path::new(sock).parent())
            .unwrap()
            .to_path_buf();
        assert!(runtime_dir.to_string_lossy().contains("krazy-vm-"), "{cmd}");
        assert!(runtime_dir.is_dir(), "{}", runtime_dir.display());

        let krazy_pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(krazy_pid, sig).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "krazy did not exit on {sig}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        assert_eq!(
            status.code(),
            Some(128 + sig as i32),
            "{status}\n{said}{rest}"
        );
        assert!(rest.contains("stopping QEMU"), "{rest}");
        // Killed and reaped by krazy: no process, not even a zombie.
        assert!(
            !Path::new(&format!("/proc/{qemu_pid}")).exists(),
            "QEMU {qemu_pid} outlived krazy ({sig})"
        );
        assert!(qemus_naming(&img_s).is_empty(), "{sig}");
        assert!(
            !runtime_dir.exists(),
            "{} left behind",
            runtime_dir.display()
        );
    }
}

/// `krazy-init supervise` on this host with the instance's certificate: the
/// same web interface as on a device, for `krazy status` and `krazy logs`.
struct Supervised(std::process::Child);

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn krazy_init() -> PathBuf {
    let p = workspace().join("target/debug/krazy-init");
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "krazy-init", "--bin", "krazy-init"])
            .current_dir(workspace())
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

#[test]
fn status_and_logs_over_pinned_https() {
    let t = tempfile::tempdir().unwrap();
    let inst = pc_instance(t.path());
    let secrets = workspace().join("examples/pc_appliance/secrets");
    let services = t.path().join("services.toml");
    std::fs::write(
        &services,
        "version = 1\n[[service]]\nname = \"talker\"\npath = \"/bin/sh\"\nargs = [\"-c\", \"echo first-line; while sleep 0.2; do echo tick; done\"]\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _sup = Supervised(
        Command::new(krazy_init())
            .arg("supervise")
            .arg("--config")
            .arg(&services)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--password-file")
            .arg(secrets.join("password"))
            .arg("--tls-cert")
            .arg(secrets.join("tls-cert.pem"))
            .arg("--tls-key")
            .arg(secrets.join("tls-key.pem"))
            .spawn()
            .unwrap(),
    );
    let host = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let status = loop {
        let o = krazy()
            .args(["status", "--json", "--host", &host, "-c"])
            .arg(&inst)
            .output()
            .unwrap();
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{o:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert!(
        v["hostname"].is_string() && v["addresses"].is_array(),
        "{v}"
    );
    let human = ok(&krazy()
        .args(["status", "--host", &host, "-c"])
        .arg(&inst)
        .output()
        .unwrap());
    assert!(human.contains("service   talker"), "{human}");
    let logs = ok(&krazy()
        .args(["logs", "--host", &host, "-c"])
        .arg(&inst)
        .arg("talker")
        .output()
        .unwrap());
    assert!(logs.starts_with("first-line\n"), "{logs}");
    // -f follows: new lines arrive while it runs.
    let mut f = Command::new(env!("CARGO_BIN_EXE_krazy"))
        .args(["logs", "-f", "--host", &host, "-c"])
        .arg(&inst)
        .arg("talker")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = f.kill();
    let out = f.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("tick").count() >= 5, "{text}");
    // The wrong certificate is refused (pinning), with a message saying so.
    let other = tempfile::tempdir().unwrap();
    let o2 = other.path().join("o");
    ok(&krazy().arg("new").arg(&o2).output().unwrap());
    let e = fails(
        &krazy()
            .args(["status", "--host", &host, "-c"])
            .arg(&o2)
            .output()
            .unwrap(),
    );
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

/// The pc instance with a short settle time and deadline, a motd of `motd`
/// and `hello_env` as hello's environment.
fn write_update_instance(inst: &Path, motd: &str, hello_env: &str) {
    let text = std::fs::read_to_string(workspace().join("examples/pc_appliance/krazy.toml"))
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
    std::fs::write(inst.join("krazy.toml"), text).unwrap();
}

fn status_json(inst: &Path, host: &str) -> serde_json::Value {
    let out = ok(&krazy()
        .args(["status", "--json", "--host", host, "-c"])
        .arg(inst)
        .output()
        .unwrap());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn update_commits_then_reports_a_rollback() {
    use krazy_build::vm::{self, Vm, VmOptions};
    let t = tempfile::tempdir().unwrap();
    let inst = pc_instance(t.path());
    write_update_instance(&inst, "cli v1", "env = { RUST_LOG = \"info\" }");
    let img = t.path().join("pc.img");
    let out = ok(&krazy()
        .args(["build", "--json", "-c"])
        .arg(&inst)
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    let v1: serde_json::Value = serde_json::from_str(out.trim()).unwrap();

    let _qemu = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let https = vm::free_port().unwrap();
    let vm = Vm::start(
        VmOptions::new(&img)
            .with_forward(https, 443)
            .with_fresh_vars(true)
            .with_watchdog(true),
    )
    .unwrap();
    let host = format!("127.0.0.1:{https}");
    let config = krazy_build::config::Config::load(&inst.join("krazy.toml")).unwrap();
    let client = krazy_build::remote::client(&config, &inst.join("secrets"), &host).unwrap();
    if let Err(e) =
        krazy_build::remote::wait_boot_services(&client, &config, Duration::from_secs(240))
    {
        panic!("v1 boot: {e}\n{}", vm.serial_tail(60));
    }
    let s = status_json(&inst, &host);
    assert_eq!(s["build_id"], v1["build_id"], "{s}");
    assert_eq!(
        (s["running_slot"].as_str(), s["committed_slot"].as_str()),
        (Some("a"), Some("a"))
    );
    assert!(s["last_trial"].is_null(), "{s}");

    // v2: `krazy update` builds, pushes, reboots and waits for the commit.
    write_update_instance(&inst, "cli v2", "env = { RUST_LOG = \"info\" }");
    let started = Instant::now();
    let o = krazy()
        .args(["update", "--timeout", "400", "--host", &host, "-c"])
        .arg(&inst)
        .output()
        .unwrap();
    if !o.status.success() {
        panic!("{}\n{}", fails(&o), vm.serial_tail(60));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!(
        "FIGURES krazy update to committed: {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        out.trim()
    );
    assert!(
        out.contains("committed build") && out.contains("in slot b"),
        "{out}"
    );
    let s = status_json(&inst, &host);
    assert_ne!(s["build_id"], v1["build_id"]);
    assert_eq!(
        (s["running_slot"].as_str(), s["committed_slot"].as_str()),
        (Some("b"), Some("b"))
    );
    assert_eq!(s["last_trial"]["outcome"], "committed", "{s}");
    assert!(s["last_trial"]["reason"].is_null(), "{s}");
    let v2_id = s["build_id"].clone();

    // Running it again changes nothing: the device already runs this build.
    let again = ok(&krazy()
        .args(["update", "--host", &host, "-c"])
        .arg(&inst)
        .output()
        .unwrap());
    assert!(again.contains("already runs build"), "{again}");
    // A version not above the committed one is refused before anything is
    // built or sent.
    assert_eq!(
        s["committed_version"].as_u64().map(|v| v > 1_700_000_000),
        Some(true),
        "{s}"
    );
    let old = fails(
        &krazy()
            .args(["update", "--version", "5", "--host", &host, "-c"])
            .arg(&inst)
            .output()
            .unwrap(),
    );
    assert!(old.contains("is not greater"), "{old}");

    // v3's hello fails at once: the device rolls back by itself, and
    // `krazy update` exits non-zero with the reason and hello's last lines.
    write_update_instance(
        &inst,
        "cli v3",
        "env = { RUST_LOG = \"info\", HELLO_FAIL = \"1\" }",
    );
    // Someone left a verified trial of v3 armed: `krazy update` cancels it,
    // says so, and goes on.
    {
        use krazy_build::{pipeline, update};
        let cfg = krazy_build::config::Config::load(&inst.join("krazy.toml")).unwrap();
        let opts = pipeline::BuildOptions::for_config(&inst.join("krazy.toml"));
        let key = update::signing_key(&inst.join("secrets")).unwrap();
        let p = pipeline::build_update(
            &cfg,
            &opts,
            krazy_update::protocol::Slot::A,
            &key,
            &update::Signing::now(),
        )
        .unwrap();
        let id = client.put_manifest(&p.signed).unwrap().upload_id;
        for (k, b) in [
            (krazy_update::protocol::PartKind::Root, &p.root),
            (krazy_update::protocol::PartKind::Boot, &p.boot),
        ] {
            client
                .put_part(k, Some(&id), b.len() as u64, &mut &b[..], &mut |_| {})
                .unwrap();
        }
        client.switch(Some(&id)).unwrap();
        assert_eq!(status_json(&inst, &host)["trial"], "armed");
    }
    let o = krazy()
        .args(["update", "--timeout", "400", "--host", &host, "-c"])
        .arg(&inst)
        .output()
        .unwrap();
    let err = fails(&o);
    assert!(
        err.contains("the device rolled back:"),
        "{err}\n{}",
        vm.serial_tail(60)
    );
    assert!(err.contains("hello"), "{err}");
    assert!(err.contains("last lines of hello:"), "{err}");
    assert!(err.contains("HELLO_FAIL"), "{err}");
    assert!(err.contains("runs the previous build"), "{err}");
    assert!(
        err.contains("had a trial armed: disarmed the trial boot of slot a"),
        "{err}"
    );
    let s = status_json(&inst, &host);
    assert_eq!(s["build_id"], v2_id, "back on v2: {s}");
    assert_eq!(
        (s["running_slot"].as_str(), s["committed_slot"].as_str()),
        (Some("b"), Some("b"))
    );
    assert_eq!(s["last_trial"]["outcome"], "rolled_back", "{s}");
    assert!(
        s["last_trial"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hello")),
        "{s}"
    );
    let human = ok(&krazy()
        .args(["status", "--host", &host, "-c"])
        .arg(&inst)
        .output()
        .unwrap());
    assert!(human.contains("trial     rolled_back"), "{human}");

    let _ = client.post_json::<serde_json::Value>("/api/v1/poweroff", &serde_json::json!({}));
    let _ = vm.wait_exit(Duration::from_secs(60));
}
