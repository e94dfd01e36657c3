//! Network-namespace lab for the integration tests (needs root, iproute2, dnsmasq).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the tests can run (root with `ip` and `dnsmasq`).
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let have = |c: &str| Command::new(c).arg("--version").output().is_ok();
    if !(root && have("ip") && have("dnsmasq")) {
        skip("needs root, iproute2 and dnsmasq");
        return false;
    }
    true
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.0.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Proc {
    /// Waits for the process to exit by itself (killing it after `timeout`).
    pub fn terminate_after_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("process already reaped");
        let t = Instant::now();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if t.elapsed() > timeout {
                let _ = c.kill();
                return c.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Namespaces joined by a bridge: `cli` (interface `eth0`), `srv` (bridge
/// `br0` with .1), optionally `srv2` (interface `eth0` with .2). Deleted on drop.
pub struct Lab {
    /// Namespace names.
    pub cli: String,
    /// The server's namespace.
    pub srv: String,
    /// The second server's namespace.
    pub srv2: String,
    /// First three octets of the /24, e.g. "10.123.4".
    pub net: String,
    /// Scratch directory.
    pub dir: tempfile::TempDir,
    names: Vec<String>,
}

impl Lab {
    /// Sets up a lab; `tag` must be unique among the tests (it picks the subnet too).
    pub fn new(tag: u8) -> Self {
        let pid = std::process::id();
        let base = format!("kn{}-{tag}", pid);
        let net = format!("10.{}.{}", 100 + tag, pid % 250);
        let lab = Self {
            cli: format!("{base}-c"),
            srv: format!("{base}-s"),
            srv2: format!("{base}-t"),
            net,
            dir: tempfile::tempdir().unwrap(),
            names: Vec::new(),
        };
        let mut lab = lab;
        for n in [lab.cli.clone(), lab.srv.clone(), lab.srv2.clone()] {
            run("ip", &["netns", "add", &n]);
            lab.names.push(n.clone());
            run("ip", &["-n", &n, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &["-n", &lab.srv, "link", "add", "br0", "type", "bridge"],
        );
        run(
            "ip",
            &[
                "-n",
                &lab.srv,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        );
        run("ip", &["-n", &lab.srv, "link", "set", "br0", "up"]);
        run(
            "ip",
            &[
                "-n",
                &lab.srv,
                "addr",
                "add",
                &format!("{}.1/24", lab.net),
                "dev",
                "br0",
            ],
        );
        for (peer, port) in [(lab.cli.clone(), "pc"), (lab.srv2.clone(), "pt")] {
            run(
                "ip",
                &[
                    "-n", &lab.srv, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", &peer,
                ],
            );
            run(
                "ip",
                &["-n", &lab.srv, "link", "set", port, "master", "br0"],
            );
            run("ip", &["-n", &lab.srv, "link", "set", port, "up"]);
        }
        run(
            "ip",
            &[
                "-n",
                &lab.srv2,
                "addr",
                "add",
                &format!("{}.2/24", lab.net),
                "dev",
                "eth0",
            ],
        );
        run("ip", &["-n", &lab.srv2, "link", "set", "eth0", "up"]);
        lab
    }

    /// Starts dnsmasq in namespace `ns` on interface `iface` with extra options.
    pub fn dnsmasq(&self, ns: &str, iface: &str, name: &str, extra: &[&str]) -> Proc {
        let leases = self.dir.path().join(format!("{name}.leases"));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            ns.into(),
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--bind-interfaces".into(),
            format!("--interface={iface}"),
            format!("--dhcp-leasefile={}", leases.display()),
            format!(
                "--pid-file={}",
                self.dir.path().join(format!("{name}.pid")).display()
            ),
            "--no-ping".into(),
            "--log-dhcp".into(),
            format!("--log-facility={}", log.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // dnsmasq is ready once it has written its log's first line.
        wait_for("dnsmasq to start", Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("DHCP"))
        });
        Proc(Some(child))
    }

    /// The lease file of the named dnsmasq.
    pub fn leases(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.leases"))).unwrap_or_default()
    }

    /// Starts krazy-dhcp in the client namespace; stderr goes to `log`.
    pub fn client(&self, args: &[&str], log: &Path) -> Proc {
        let mut full: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.cli.clone(),
            env!("CARGO_BIN_EXE_krazy-dhcp").into(),
            "--interface".into(),
            "eth0".into(),
            "--resolv-conf".into(),
            self.resolv().display().to_string(),
            "--lease-dir".into(),
            self.dir.path().join("leases").display().to_string(),
            "--hostname".into(),
            "krazy-test".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let log = std::fs::File::create(log).unwrap();
        Proc(Some(
            Command::new("ip")
                .args(&full)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        ))
    }

    /// The resolver file path.
    pub fn resolv(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }

    /// `ip -4 -o addr show eth0` in the client namespace.
    pub fn client_addrs(&self) -> String {
        run(
            "ip",
            &["-n", &self.cli, "-4", "-o", "addr", "show", "dev", "eth0"],
        )
    }

    /// `ip -4 route` in the client namespace.
    pub fn client_routes(&self) -> String {
        run("ip", &["-n", &self.cli, "-4", "route"])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Polls `cond` every 20 ms until it holds, panicking after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a log file (lossy).
pub fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Says loudly that a test skips for want of `why`; under `KRAZY_CI=1`
/// (which `.ci/run` sets, after installing every tool) a skip is a failure.
pub fn skip(why: &str) {
    assert!(
        std::env::var("KRAZY_CI").as_deref() != Ok("1"),
        "KRAZY_CI=1, and this test would skip: {why}"
    );
    eprintln!("SKIPPED: {why}");
}
