//! The QEMU runner: discovery errors that name the package to install, the
//! command line it builds, the UEFI variable store kept beside the image,
//! the retrying HTTP client against a real local server, and real boots of
//! OVMF + systemd-boot under TCG (serial capture, a guest reboot inside one
//! QEMU process, `-no-reboot`, QMP powerdown/quit, Drop killing QEMU, QEMU
//! dying with the process that started it, and a host forward carrying the
//! firmware's HTTP boot request to a listener on the host).

use krazy_build::vm::{
    discover, free_port, http_request, prepare_vars, vars_path, wait_http, Accel, Discovery,
    HostForward, HttpRequest, Ovmf, Tools, Vm, VmError, VmOptions,
};
use krazy_disk::{Arch, InstanceId, Layout, LayoutOptions, PartitionTable, Platform, Role};
use krazy_fs::fat::{self, FatOptions};
use krazy_fs::{Contents, FileDevice, Tree};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Generous: a boot under TCG on a busy 2-core machine.
const BOOT_WAIT: Duration = Duration::from_secs(90);

fn nowhere() -> Discovery {
    Discovery {
        qemu_override: None,
        path: Some("/nonexistent/bin:/nonexistent/usr/bin".into()),
        ovmf_code_override: None,
        ovmf_vars_override: None,
        ovmf_candidates: vec![Ovmf {
            code: "/nonexistent/OVMF_CODE_4M.fd".into(),
            vars_template: "/nonexistent/OVMF_VARS_4M.fd".into(),
        }],
    }
}

#[test]
fn missing_qemu_names_the_package_and_the_downgrade() {
    let e = nowhere().find_qemu().unwrap_err();
    assert!(matches!(e, VmError::QemuNotFound { .. }), "{e:?}");
    let msg = e.to_string();
    for want in [
        "qemu-system-x86_64",
        "/nonexistent/bin",
        "apt-get install qemu-system-x86",
        "apt-get install --allow-downgrades qemu-utils=<bookworm version> qemu-system-x86",
        "KRAZY_QEMU",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }

    let mut d = nowhere();
    d.qemu_override = Some("/nonexistent/qemu-system-x86_64".into());
    let msg = d.find_qemu().unwrap_err().to_string();
    assert!(
        msg.contains("KRAZY_QEMU=/nonexistent/qemu-system-x86_64"),
        "{msg}"
    );
    assert!(msg.contains("apt-get install qemu-system-x86"), "{msg}");

    // A bare name in KRAZY_QEMU is looked up in PATH.
    let mut d = nowhere();
    d.path = Some("/nonexistent:/usr/bin".into());
    d.qemu_override = Some("qemu-system-x86_64".into());
    assert_eq!(
        d.find_qemu().unwrap(),
        PathBuf::from("/usr/bin/qemu-system-x86_64")
    );
    // And the real PATH search finds the installed one.
    d.qemu_override = None;
    assert_eq!(
        d.find_qemu().unwrap(),
        PathBuf::from("/usr/bin/qemu-system-x86_64")
    );
}

#[test]
fn missing_ovmf_names_the_package() {
    let e = nowhere().find_ovmf().unwrap_err();
    assert!(matches!(e, VmError::OvmfNotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("apt-get install ovmf"), "{msg}");
    assert!(msg.contains("/nonexistent/OVMF_CODE_4M.fd"), "{msg}");

    let mut d = nowhere();
    d.ovmf_code_override = Some("/nonexistent/code.fd".into());
    d.ovmf_vars_override = Some("/usr/share/OVMF/OVMF_VARS_4M.fd".into());
    let msg = d.find_ovmf().unwrap_err().to_string();
    assert!(
        msg.contains("KRAZY_OVMF_CODE=/nonexistent/code.fd"),
        "{msg}"
    );
    assert!(msg.contains("apt-get install ovmf"), "{msg}");

    d.ovmf_vars_override = None;
    let e = d.find_ovmf().unwrap_err();
    assert!(
        matches!(
            e,
            VmError::OvmfOverrideIncomplete {
                set: "KRAZY_OVMF_CODE",
                unset: "KRAZY_OVMF_VARS"
            }
        ),
        "{e:?}"
    );

    // The default candidates find Debian's 4 MiB pair first.
    let mut d = nowhere();
    d.ovmf_candidates = krazy_build::vm::default_ovmf_candidates();
    assert_eq!(
        d.find_ovmf().unwrap(),
        Ovmf {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars_template: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
        }
    );
}

fn tools() -> Tools {
    discover().expect("QEMU and OVMF are installed on the test machines")
}

fn has(args: &[OsString], pair: (&str, &str)) -> bool {
    args.windows(2).any(|w| w[0] == pair.0 && w[1] == pair.1)
}

#[test]
fn command_line_is_uefi_virtio_and_loopback_forwards() {
    let opts = VmOptions::new("/images/pc,1.img")
        .with_forward(18080, 80)
        .with_forward(18443, 443)
        .with_watchdog(true);
    let a = opts.qemu_args(
        Path::new("/fw/CODE.fd"),
        Path::new("/images/pc,1.img.vars.fd"),
        Path::new("/run/q/qmp.sock"),
    );
    assert!(has(&a, ("-accel", "tcg")));
    assert!(has(&a, ("-m", "256")));
    assert!(has(
        &a,
        (
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"
        )
    ));
    assert!(has(
        &a,
        (
            "-drive",
            "if=pflash,format=raw,unit=1,file=/images/pc,,1.img.vars.fd"
        )
    ));
    assert!(has(
        &a,
        ("-drive", "file=/images/pc,,1.img,format=raw,if=virtio")
    ));
    assert!(has(
        &a,
        (
            "-netdev",
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18080-:80,hostfwd=tcp:127.0.0.1:18443-:443"
        )
    ));
    assert!(has(&a, ("-device", "virtio-net-pci,netdev=net0")));
    assert!(has(&a, ("-device", "i6300esb")));
    assert!(has(&a, ("-serial", "stdio")));
    assert!(has(&a, ("-qmp", "unix:/run/q/qmp.sock,server=on,wait=off")));
    for absent in ["-kernel", "-no-reboot", "-enable-kvm"] {
        assert!(!a.contains(&OsString::from(absent)), "{absent} in {a:?}");
    }

    let a = VmOptions::new("/i.img")
        .with_accel(Accel::Kvm)
        .with_no_reboot(true)
        .with_memory_mib(512)
        .with_extra_arg("-smp")
        .with_extra_arg("2")
        .qemu_args(Path::new("/c"), Path::new("/v"), Path::new("/s"));
    assert!(has(&a, ("-accel", "kvm")));
    assert!(has(&a, ("-cpu", "host")));
    assert!(has(&a, ("-m", "512")));
    assert!(a.contains(&OsString::from("-no-reboot")));
    assert!(!a.contains(&OsString::from("i6300esb")));
    assert_eq!(a[a.len() - 2..], [OsString::from("-smp"), "2".into()]);
}

#[test]
fn host_forwards_are_guestfwd_rules_inside_the_user_network() {
    let a = VmOptions::new("/i.img")
        .with_forward(18080, 80)
        .with_host_forward(Ipv4Addr::new(10, 0, 2, 100), 514, 5514)
        .with_host_forward(Ipv4Addr::new(10, 0, 2, 101), 80, 8080)
        .qemu_args(Path::new("/c"), Path::new("/v"), Path::new("/s"));
    assert!(has(
        &a,
        (
            "-netdev",
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18080-:80,\
             guestfwd=tcp:10.0.2.100:514-tcp:127.0.0.1:5514,\
             guestfwd=tcp:10.0.2.101:80-tcp:127.0.0.1:8080"
        )
    ));

    let f: HostForward = "10.0.2.100:514=5514".parse().unwrap();
    assert_eq!(
        f,
        HostForward::new(Ipv4Addr::new(10, 0, 2, 100), 514, 5514).unwrap()
    );
    assert_eq!(f.to_string(), "10.0.2.100:514=5514");
    for (bad, why) in [
        (
            "192.168.1.5:80=8080",
            "inside QEMU's user network 10.0.2.0/24",
        ),
        (
            "10.0.3.100:80=8080",
            "inside QEMU's user network 10.0.2.0/24",
        ),
        ("10.0.2.2:80=8080", "host alias"),
        ("10.0.2.3:53=53", "DNS"),
        ("10.0.2.15:80=8080", "DHCP"),
        ("10.0.2.0:80=8080", "broadcast"),
        ("10.0.2.255:80=8080", "broadcast"),
        ("10.0.2.100:0=8080", "1-65535"),
        ("10.0.2.100:80=0", "1-65535"),
        ("10.0.2.100:80", "GUEST_ADDR:GUEST_PORT=HOST_PORT"),
        ("host:80=8080", "IPv4"),
    ] {
        let e = bad.parse::<HostForward>().unwrap_err();
        assert!(matches!(e, VmError::HostForward { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(why), "{bad}: {msg}");
    }
    // Vm::start checks what with_host_forward took unchecked, before
    // anything is looked for or created.
    let t = tempfile::tempdir().unwrap();
    let e = Vm::start(VmOptions::new(t.path().join("none.img")).with_host_forward(
        Ipv4Addr::new(192, 168, 0, 1),
        80,
        8080,
    ))
    .unwrap_err();
    assert!(matches!(e, VmError::HostForward { .. }), "{e:?}");
}

#[test]
fn accel_is_tcg_unless_kvm_is_asked_for() {
    assert_eq!(krazy_build::vm::pick_accel(None).unwrap(), Accel::Tcg);
    assert_eq!(
        krazy_build::vm::pick_accel(Some(Accel::Tcg)).unwrap(),
        Accel::Tcg
    );
    assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
    assert!("hvf".parse::<Accel>().is_err());
    assert_eq!(VmOptions::new("x").accel, Accel::Tcg);
}

#[test]
fn vars_copy_is_made_once_and_kept() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("pc.img");
    let template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    let want = fs::read(template).unwrap();

    let vars = prepare_vars(&image, template, false).unwrap();
    assert_eq!(vars, t.path().join("pc.img.vars.fd"));
    assert_eq!(vars, vars_path(&image));
    assert_eq!(fs::read(&vars).unwrap(), want);
    assert!(!fs::metadata(&vars).unwrap().permissions().readonly());

    // What the firmware writes survives the next run.
    let mut changed = want.clone();
    changed[want.len() - 1] ^= 0xff;
    fs::write(&vars, &changed).unwrap();
    prepare_vars(&image, template, false).unwrap();
    assert_eq!(fs::read(&vars).unwrap(), changed);

    // Fresh on request.
    prepare_vars(&image, template, true).unwrap();
    assert_eq!(fs::read(&vars).unwrap(), want);

    // A store of another size (another OVMF build) is replaced.
    fs::write(&vars, b"short").unwrap();
    prepare_vars(&image, template, false).unwrap();
    assert_eq!(fs::read(&vars).unwrap(), want);

    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [OsString::from("pc.img.vars.fd")]);

    let e = prepare_vars(&image, Path::new("/nonexistent/VARS.fd"), false).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/VARS.fd"), "{e}");
}

#[test]
fn free_port_can_be_bound() {
    let p = free_port().unwrap();
    assert_ne!(p, 0);
    TcpListener::bind(("127.0.0.1", p)).unwrap();
}

/// Reads a request head (and a Content-Length body) from `s`.
fn read_request(s: &TcpStream) -> (Vec<String>, Vec<u8>) {
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end().to_string();
        if l.is_empty() {
            break;
        }
        head.push(l);
    }
    let len = head
        .iter()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn wait_http_retries_resets_and_truncated_answers_then_reads_chunked() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        // 1: accept and close without reading (the client sees a reset or EOF).
        drop(l.accept().unwrap().0);
        // 2: an answer cut off inside its head.
        let (mut s, _) = l.accept().unwrap();
        read_request(&s);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap();
        drop(s);
        // 3: a real answer, chunked, checking the credentials.
        let (mut s, _) = l.accept().unwrap();
        let (head, _) = read_request(&s);
        assert_eq!(head[0], "GET /api/v1/services HTTP/1.1");
        assert!(head.contains(&"Authorization: Basic a3Jhenk6c2VjcmV0".to_string()));
        assert!(head.contains(&format!("Host: 127.0.0.1:{port}")));
        s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
              5\r\n[\"dhc\r\n6;ext=1\r\np\",\"nt\r\n3\r\np\"]\r\n0\r\n\r\n",
        )
        .unwrap();
        drop(s);
        // 4: a POST with a JSON body, answered with a Content-Length body.
        let (mut s, _) = l.accept().unwrap();
        let (head, body) = read_request(&s);
        assert_eq!(head[0], "POST /api/v1/reboot HTTP/1.1");
        assert!(head.contains(&"Content-Type: application/json".to_string()));
        assert_eq!(body, b"{}");
        s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
            .unwrap();
    });
    let target = format!("http://127.0.0.1:{port}");
    let r = wait_http(
        &target,
        "/api/v1/services",
        Some(("krazy", "secret")),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"["dhcp","ntp"]"#);

    let r = http_request(
        &format!("127.0.0.1:{port}"),
        &HttpRequest::post_json("/api/v1/reboot", "{}"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (401, "nope"));
    server.join().unwrap();
}

#[test]
fn wait_http_gives_up_with_the_last_error() {
    let port = free_port().unwrap();
    let e = wait_http(
        &format!("127.0.0.1:{port}"),
        "/",
        None,
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(matches!(e, VmError::HttpTimeout { .. }), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    let e = wait_http("https://127.0.0.1:443", "/", None, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, VmError::HttpTarget { .. }), "{e:?}");
}

#[test]
fn start_fails_cleanly_without_an_image() {
    let t = tempfile::tempdir().unwrap();
    let e = Vm::start(VmOptions::new(t.path().join("none.img")).with_tools(tools())).unwrap_err();
    assert!(matches!(e, VmError::ImageMissing { .. }), "{e:?}");
    assert!(!t.path().join("none.img.vars.fd").exists());
}

/// A 64 MiB GPT disk (krazy-disk's pc layout) whose ESP (FAT, krazy-fs)
/// holds systemd-boot as `EFI/BOOT/BOOTX64.EFI` and a `loader.conf` with
/// no entries: systemd-boot shows only its "Reboot Into Firmware
/// Interface" entry and, after the 1 s timeout, resets the machine into the
/// firmware's setup application (UiApp).
fn systemd_boot_disk(path: &Path) {
    let opts = LayoutOptions::default()
        .with_esp_bytes(8 * MIB)
        .with_root_bytes(16 * MIB);
    let layout = Layout::new(Platform::Pc, Arch::X86_64, 64 * MIB, &opts).unwrap();
    let table = PartitionTable::from_layout(&layout, &InstanceId::new("vm-test").unwrap()).unwrap();
    let mut f = File::create(path).unwrap();
    f.set_len(64 * MIB).unwrap();
    table.write(&mut f).unwrap();
    let esp = layout.partition(Role::Esp).unwrap();
    let mut tree = Tree::new();
    tree.add_dir_all("EFI/BOOT", 0).unwrap();
    tree.add_dir_all("loader", 0).unwrap();
    tree.add_file(
        "EFI/BOOT/BOOTX64.EFI",
        Contents::Host(SYSTEMD_BOOT.into()),
        0o644,
        0,
    )
    .unwrap();
    tree.add_file(
        "loader/loader.conf",
        Contents::bytes("timeout 1\n"),
        0o644,
        0,
    )
    .unwrap();
    let mut dev = FileDevice::new(f, esp.start_bytes(), esp.size_bytes());
    let fat_opts = FatOptions {
        hidden_sectors: u32::try_from(esp.first_lba).unwrap(),
        ..FatOptions::default()
    };
    fat::write(&mut dev, &tree, &fat_opts).unwrap();
}

#[test]
fn real_boot_captures_serial_survives_a_guest_reboot_and_quits() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    systemd_boot_disk(&image);
    let log = t.path().join("serial.log");
    let web = free_port().unwrap();
    let vm = Vm::start(
        VmOptions::new(&image)
            .with_tools(tools())
            .with_forward(web, 80)
            .with_serial_log(&log)
            .with_watchdog(true)
            .with_fresh_vars(true),
    )
    .unwrap();
    println!("{}", vm.command_line());
    assert_eq!(vm.host_port(80), Some(web));
    assert!(vm.vars_path().is_file());

    // OVMF finds the virtio disk and starts systemd-boot from its ESP.
    let fw = vm
        .wait_for_serial(r#"BdsDxe: starting Boot0001 "UEFI Misc Device""#, BOOT_WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mark = vm.serial_mark();
    // systemd-boot draws its menu on the serial console.
    vm.wait_for_serial("Reboot Into Firmware Interface", BOOT_WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Its timeout resets the machine; the firmware comes up again in the
    // same QEMU process and starts its setup application.
    let again = vm
        .wait_for_serial_after(mark, r#"BdsDxe: starting Boot0000 "UiApp""#, BOOT_WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again > fw, "{again:?} after {fw:?}");
    assert!(vm.exit_status().unwrap().is_none(), "QEMU exited on reboot");

    // The forward listens on 127.0.0.1 (QEMU accepts; nothing in the guest
    // answers).
    TcpStream::connect(("127.0.0.1", web)).unwrap();

    // The tail and the log hold the console.
    let tail = vm.serial_tail(50);
    assert!(tail.contains("BdsDxe: starting Boot0001"), "{tail}");
    assert!(!tail.contains('\u{1b}'), "escapes left in {tail:?}");
    let logged = fs::read(&log).unwrap();
    let logged = String::from_utf8_lossy(&logged);
    assert!(logged.contains("UEFI Misc Device"), "{logged}");
    assert!(logged.contains("\u{1b}["), "the log keeps the raw bytes");

    // The firmware has no OS to act on the power button, but QEMU takes the
    // command; reset and quit work through QMP too.
    vm.powerdown().unwrap();
    let mark = vm.serial_mark();
    vm.reset().unwrap();
    vm.wait_for_serial_after(mark, "BdsDxe:", BOOT_WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = vm.quit().unwrap();
    assert!(status.success(), "{status}");
    let e = vm
        .wait_for_serial("never printed", Duration::from_secs(30))
        .unwrap_err();
    assert!(matches!(e, VmError::SerialEnded { .. }), "{e:?}");
    // The variable store stays beside the image for the next run.
    assert!(t.path().join("disk.img.vars.fd").is_file());
}

#[test]
fn no_reboot_ends_qemu_when_the_guest_reboots() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    systemd_boot_disk(&image);
    let vm = Vm::start(
        VmOptions::new(&image)
            .with_tools(tools())
            .with_no_reboot(true),
    )
    .unwrap();
    let e = vm
        .wait_for_serial(r#"BdsDxe: starting Boot0000 "UiApp""#, BOOT_WAIT)
        .unwrap_err();
    match e {
        VmError::SerialEnded { tail, .. } => {
            assert!(tail.contains("Reboot Into Firmware Interface"), "{tail}")
        }
        e => panic!("{e}"),
    }
    let status = vm.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn drop_kills_qemu() {
    let t = tempfile::tempdir().unwrap();
    // Not bootable: the firmware tries the disk and the network and waits.
    let image = t.path().join("blank.img");
    File::create(&image).unwrap().set_len(MIB).unwrap();
    let vm = Vm::start(VmOptions::new(&image).with_tools(tools())).unwrap();
    let pid = vm.pid();
    let qmp = vm.qmp_socket().to_path_buf();
    vm.wait_for_serial("BdsDxe:", BOOT_WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(vm);
    // Dropped means killed and reaped: the process is gone, not a zombie.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!qmp.exists());
}

#[test]
fn start_reports_qemu_errors() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("blank.img");
    File::create(&image).unwrap().set_len(MIB).unwrap();
    // Two VMs on one port: the second QEMU cannot bind it and says so.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let e = Vm::start(
        VmOptions::new(&image)
            .with_tools(tools())
            .with_forward(port, 80),
    )
    .unwrap_err();
    // QEMU sets up the network before it opens QMP, so start() sees the exit.
    match &e {
        VmError::StartFailed { stderr, .. } => {
            assert!(
                stderr.contains("Could not set up host forwarding rule"),
                "{e}"
            )
        }
        e => panic!("{e}"),
    }
}

#[test]
fn foreground_copies_the_serial_console_to_stdout() {
    // The VM runs in a child copy of this test binary, whose stdout is read here.
    if std::env::var_os("KRAZY_VM_FOREGROUND_CHILD").is_some() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("blank.img");
        File::create(&image).unwrap().set_len(MIB).unwrap();
        let vm = Vm::start(
            VmOptions::new(&image)
                .with_tools(tools())
                .with_foreground(true),
        )
        .unwrap();
        vm.wait_for_serial("BdsDxe:", BOOT_WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
        vm.quit().unwrap();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "foreground_copies_the_serial_console_to_stdout",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KRAZY_VM_FOREGROUND_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("BdsDxe:"), "{stdout}");
    assert!(
        stdout.contains("\u{1b}["),
        "raw console bytes expected: {stdout}"
    );
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
        !matches!(state, Some(Some('Z' | 'X')))
    })
}

#[test]
fn qemu_dies_with_the_process_that_started_it_not_with_the_thread() {
    // A child copy of this test binary starts QEMU from a thread that
    // exits, prints QEMU's pid, and then waits to be killed.
    if std::env::var_os("KRAZY_VM_PDEATHSIG_CHILD").is_some() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("blank.img");
        File::create(&image).unwrap().set_len(MIB).unwrap();
        let vm = thread::spawn(move || Vm::start(VmOptions::new(&image).with_tools(tools())))
            .join()
            .unwrap()
            .unwrap();
        thread::sleep(Duration::from_millis(500));
        assert!(alive(vm.pid()), "QEMU died with the thread that started it");
        println!("QEMU_PID {}", vm.pid());
        thread::sleep(Duration::from_secs(120));
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "qemu_dies_with_the_process_that_started_it_not_with_the_thread",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KRAZY_VM_PDEATHSIG_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = lines
        .by_ref()
        .map_while(Result::ok)
        // libtest may print "test NAME ... " on the same line first.
        .find_map(|l| {
            l.split_once("QEMU_PID ")
                .map(|(_, p)| p.trim().parse().unwrap())
        })
        .expect("the child printed QEMU's pid");
    assert!(alive(pid));
    // SIGKILL: no destructor, no handler; only the kernel can clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(pid),
        "QEMU {pid} outlived the process that started it"
    );
}

#[test]
fn host_forward_carries_the_guests_connection_to_the_host() {
    // The firmware's iPXE boots over HTTP from the URL the DHCP server
    // offers: here one behind a host forward, so its GET arrives at this
    // listener through QEMU, with `restrict=on` in force.
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("blank.img");
    File::create(&image).unwrap().set_len(MIB).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let vm = Vm::start(
        VmOptions::new(&image)
            .with_tools(tools())
            .with_fresh_vars(true)
            .with_host_forward(Ipv4Addr::new(10, 0, 2, 100), 8080, port)
            .with_extra_arg("-set")
            .with_extra_arg("netdev.net0.bootfile=http://10.0.2.100:8080/krazy-boot.efi"),
    )
    .unwrap();
    assert!(vm
        .args()
        .iter()
        .any(|a| a.to_string_lossy().contains(&format!(
            "restrict=on,guestfwd=tcp:10.0.2.100:8080-tcp:127.0.0.1:{port}"
        ))));
    // QEMU connected when it started; the guest's request comes over it.
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(BOOT_WAIT)).unwrap();
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.serial_tail(40)));
    assert_eq!(
        first.trim_end(),
        "GET /krazy-boot.efi HTTP/1.1",
        "{first:?}"
    );
    let mut host = String::new();
    while !host.starts_with("Host:") {
        host.clear();
        assert_ne!(r.read_line(&mut host).unwrap(), 0);
    }
    assert_eq!(host.trim_end(), "Host: 10.0.2.100:8080");
    vm.kill().unwrap();
}
