//! What to boot and how ([`VmOptions`]) and the QEMU command line made from
//! it; the UEFI variable store kept beside the image ([`prepare_vars`]);
//! [`free_port`] for forwards; [`HostForward`], the way back from the guest
//! to one service on the host.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Accel, Tools, VmError};

/// One TCP port forward from `127.0.0.1:host_port` to the guest's
/// `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The port on the host's `127.0.0.1`.
    pub host_port: u16,
    /// The port in the guest.
    pub guest_port: u16,
}

/// QEMU's user network as the guest sees it (`-netdev user` without `net=`):
/// `10.0.2.0/24`, the host's alias at `.2`, DNS at `.3`, DHCP leases from
/// `.15`.
pub const USER_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 2, 0), 24);

/// One TCP service on the host that the guest may reach: connections from
/// the guest to `guest_addr:guest_port` go to the host's
/// `127.0.0.1:host_port` (QEMU's `guestfwd`), while `restrict=on` still
/// keeps the guest from everything else.
///
/// QEMU connects to `127.0.0.1:host_port` once, when it starts (the service
/// must already listen, or QEMU fails to start and says "Connection
/// refused"), and carries the guest's connections to `guest_addr:guest_port`
/// over that one stream: the host service sees a single connection for the
/// VM's life. It suits a log sink or a test fixture, not a server that
/// expects a connection per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostForward {
    /// The address the guest connects to, inside [`USER_NET`] and not one of
    /// QEMU's own (`.2`, `.3`), the DHCP range (`.15`-`.30`), the network or
    /// the broadcast address; `10.0.2.100` is the usual choice.
    pub guest_addr: Ipv4Addr,
    /// The port the guest connects to.
    pub guest_port: u16,
    /// The port on the host's `127.0.0.1`.
    pub host_port: u16,
}

impl HostForward {
    /// A host forward, checked ([`HostForward::check`]).
    pub fn new(guest_addr: Ipv4Addr, guest_port: u16, host_port: u16) -> Result<Self, VmError> {
        let f = HostForward {
            guest_addr,
            guest_port,
            host_port,
        };
        f.check()?;
        Ok(f)
    }

    /// Fails with [`VmError::HostForward`] when the guest address is outside
    /// [`USER_NET`] or taken by QEMU or the guest, or a port is 0.
    pub fn check(&self) -> Result<(), VmError> {
        let bad = |reason: &'static str| VmError::HostForward {
            rule: self.to_string(),
            reason,
        };
        let (net, prefix) = USER_NET;
        let mask = u32::MAX << (32 - u32::from(prefix));
        let addr = u32::from(self.guest_addr);
        if addr & mask != u32::from(net) {
            return Err(bad("the guest address must be inside QEMU's user network 10.0.2.0/24 (e.g. 10.0.2.100)"));
        }
        let host = addr & !mask;
        if host == 0 || host == !mask {
            return Err(bad("the guest address is the network's own or its broadcast address; use e.g. 10.0.2.100"));
        }
        if host == 2 || host == 3 {
            return Err(bad(
                "10.0.2.2 and 10.0.2.3 are QEMU's host alias and DNS server; use e.g. 10.0.2.100",
            ));
        }
        if (15..=30).contains(&host) {
            return Err(bad(
                "10.0.2.15-10.0.2.30 are the guest's DHCP leases; use e.g. 10.0.2.100",
            ));
        }
        if self.guest_port == 0 || self.host_port == 0 {
            return Err(bad("ports are 1-65535"));
        }
        Ok(())
    }
}

impl fmt::Display for HostForward {
    /// `GUEST_ADDR:GUEST_PORT=HOST_PORT`, as `krazy vm run --host-forward`
    /// takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}={}",
            self.guest_addr, self.guest_port, self.host_port
        )
    }
}

impl std::str::FromStr for HostForward {
    type Err = VmError;
    /// Parses and checks `GUEST_ADDR:GUEST_PORT=HOST_PORT`
    /// (`10.0.2.100:514=5514`).
    fn from_str(s: &str) -> Result<Self, VmError> {
        let bad = |reason| VmError::HostForward {
            rule: s.to_string(),
            reason,
        };
        let (guest, host) = s.split_once('=').ok_or_else(|| {
            bad("expected GUEST_ADDR:GUEST_PORT=HOST_PORT, e.g. 10.0.2.100:514=5514")
        })?;
        let (addr, guest_port) = guest.rsplit_once(':').ok_or_else(|| {
            bad("expected GUEST_ADDR:GUEST_PORT=HOST_PORT, e.g. 10.0.2.100:514=5514")
        })?;
        let addr = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| bad("the guest address is not an IPv4 address"))?;
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad("ports are 1-65535"));
        HostForward::new(addr, port(guest_port)?, port(host)?)
    }
}

/// What to boot and how. Build with [`VmOptions::new`] and the `with_*`
/// methods; every field is public for the cases they do not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOptions {
    /// The raw disk image, attached as a virtio disk.
    pub image: PathBuf,
    /// Guest memory in MiB. Default 256.
    pub memory_mib: u32,
    /// Accelerator. Default TCG.
    pub accel: Accel,
    /// TCP forwards, bound to `127.0.0.1` only. Default none.
    pub forwards: Vec<Forward>,
    /// Services on the host the guest may reach ([`HostForward`]). Default
    /// none.
    pub host_forwards: Vec<HostForward>,
    /// `restrict=on` for user networking: the guest gets a DHCP lease but no
    /// router, DNS or way out. Default true.
    pub restrict_network: bool,
    /// A file that receives the raw serial console output (truncated at
    /// start). Default none (lines are still kept in memory).
    pub serial_log: Option<PathBuf>,
    /// Also copy the serial console to this process's stdout, and QEMU's
    /// stderr to this process's stderr. Default false.
    pub foreground: bool,
    /// Add an emulated `i6300esb` watchdog (`-device i6300esb`; QEMU resets
    /// the guest when it fires). Default false.
    pub watchdog: bool,
    /// Pass `-no-reboot`: a guest reboot (or panic reboot) ends QEMU instead
    /// of restarting the machine. Default false, so reboots stay in one
    /// QEMU process with its forwards and serial capture.
    pub no_reboot: bool,
    /// Start from a fresh copy of the OVMF variable template instead of the
    /// kept `<image>.vars.fd`. Default false.
    pub fresh_vars: bool,
    /// Run QEMU in its own process group, so a terminal's Ctrl-C reaches only
    /// this process (which should then call [`Vm::powerdown`]). Default
    /// false: with no handler, Ctrl-C then ends QEMU too and nothing leaks.
    pub own_process_group: bool,
    /// QEMU and OVMF to use; `None` runs [`discover`] at start.
    pub tools: Option<Tools>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<OsString>,
}

impl VmOptions {
    /// Options that boot `image` with the defaults above.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        VmOptions {
            image: image.into(),
            memory_mib: 256,
            accel: Accel::Tcg,
            forwards: Vec::new(),
            host_forwards: Vec::new(),
            restrict_network: true,
            serial_log: None,
            foreground: false,
            watchdog: false,
            no_reboot: false,
            fresh_vars: false,
            own_process_group: false,
            tools: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets the guest memory in MiB.
    pub fn with_memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the accelerator.
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Adds a forward from `127.0.0.1:host_port` to the guest's `guest_port`.
    pub fn with_forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.forwards.push(Forward {
            host_port,
            guest_port,
        });
        self
    }

    /// Lets the guest reach the host's `127.0.0.1:host_port` by connecting
    /// to `guest_addr:guest_port` ([`HostForward`]; checked by
    /// [`Vm::start`](super::Vm::start)).
    pub fn with_host_forward(
        mut self,
        guest_addr: Ipv4Addr,
        guest_port: u16,
        host_port: u16,
    ) -> Self {
        self.host_forwards.push(HostForward {
            guest_addr,
            guest_port,
            host_port,
        });
        self
    }

    /// Sets the serial log file.
    pub fn with_serial_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial_log = Some(path.into());
        self
    }

    /// Sets foreground mode (serial console on stdout).
    pub fn with_foreground(mut self, on: bool) -> Self {
        self.foreground = on;
        self
    }

    /// Adds or removes the `i6300esb` watchdog device.
    pub fn with_watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }

    /// Sets `-no-reboot`.
    pub fn with_no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    /// Starts from a fresh UEFI variable store.
    pub fn with_fresh_vars(mut self, on: bool) -> Self {
        self.fresh_vars = on;
        self
    }

    /// Runs QEMU in its own process group.
    pub fn with_own_process_group(mut self, on: bool) -> Self {
        self.own_process_group = on;
        self
    }

    /// Uses these tools instead of discovering them.
    pub fn with_tools(mut self, tools: Tools) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Appends an extra QEMU argument.
    pub fn with_extra_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// QEMU's arguments (without the binary) for these options, with the
    /// firmware code at `ovmf_code`, the writable variable store at `vars`
    /// and the QMP socket at `qmp_socket`:
    ///
    /// `-name krazy -nodefaults -display none -accel tcg -m 256`
    /// `-drive if=pflash,format=raw,unit=0,readonly=on,file=CODE`
    /// `-drive if=pflash,format=raw,unit=1,file=VARS`
    /// `-drive file=IMAGE,format=raw,if=virtio`
    /// `-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:H-:G...`
    /// `,guestfwd=tcp:A:P-tcp:127.0.0.1:H...`
    /// `-device virtio-net-pci,netdev=net0 -serial stdio`
    /// `-qmp unix:SOCKET,server=on,wait=off`, then `-device i6300esb`,
    /// `-no-reboot` and the extra arguments when asked for. Commas in paths
    /// are doubled, as QEMU's option syntax requires.
    pub fn qemu_args(&self, ovmf_code: &Path, vars: &Path, qmp_socket: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-name");
        push("krazy");
        push("-nodefaults");
        push("-display");
        push("none");
        push("-accel");
        match self.accel {
            Accel::Tcg => push("tcg"),
            Accel::Kvm => {
                push("kvm");
                push("-cpu");
                push("host");
            }
        }
        push("-m");
        a.push(self.memory_mib.to_string().into());
        a.push("-drive".into());
        a.push(opt_with_path(
            "if=pflash,format=raw,unit=0,readonly=on,file=",
            ovmf_code,
            "",
        ));
        a.push("-drive".into());
        a.push(opt_with_path("if=pflash,format=raw,unit=1,file=", vars, ""));
        a.push("-drive".into());
        a.push(opt_with_path("file=", &self.image, ",format=raw,if=virtio"));
        let mut netdev = String::from("user,id=net0");
        if self.restrict_network {
            netdev.push_str(",restrict=on");
        }
        for f in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-:{}",
                f.host_port, f.guest_port
            ));
        }
        for h in &self.host_forwards {
            netdev.push_str(&format!(
                ",guestfwd=tcp:{}:{}-tcp:127.0.0.1:{}",
                h.guest_addr, h.guest_port, h.host_port
            ));
        }
        a.push("-netdev".into());
        a.push(netdev.into());
        for s in ["-device", "virtio-net-pci,netdev=net0", "-serial", "stdio"] {
            a.push(s.into());
        }
        a.push("-qmp".into());
        a.push(opt_with_path("unix:", qmp_socket, ",server=on,wait=off"));
        if self.watchdog {
            a.push("-device".into());
            a.push("i6300esb".into());
        }
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// `prefix` + `path` with commas doubled + `suffix`.
pub(super) fn opt_with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut v = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        v.push(b);
        if b == b',' {
            v.push(b',');
        }
    }
    v.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(v)
}

/// Where the writable UEFI variable store of `image` lives: the image's
/// path with `.vars.fd` appended (`pc.img` → `pc.img.vars.fd`).
pub fn vars_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".vars.fd");
    PathBuf::from(s)
}

/// Makes sure `image`'s variable store ([`vars_path`]) exists and returns
/// its path. It is copied from `template` when missing, when `fresh` is
/// true, or when its size differs from the template's (another OVMF build);
/// otherwise it is kept as it is, so UEFI variables (boot entries,
/// systemd-boot's one-shot) survive from one run to the next. The copy is
/// written to a temporary file and renamed into place.
pub fn prepare_vars(image: &Path, template: &Path, fresh: bool) -> Result<PathBuf, VmError> {
    let to = vars_path(image);
    let err = |source| VmError::Vars {
        from: template.to_path_buf(),
        to: to.clone(),
        error: source,
    };
    let want = fs::metadata(template).map_err(err)?.len();
    let keep = !fresh && fs::metadata(&to).is_ok_and(|m| m.is_file() && m.len() == want);
    if keep {
        return Ok(to);
    }
    let mut tmp = to.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let copied = fs::copy(template, &tmp).and_then(|_| {
        // The template may be read-only; QEMU writes the copy.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &to)
    });
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(to)
}

/// A TCP port on `127.0.0.1` that was free a moment ago: binds port 0, reads
/// the port the kernel chose and closes the socket. Another process can take
/// it before QEMU binds it; QEMU then fails to start and says so.
pub fn free_port() -> Result<u16, VmError> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(VmError::FreePort)?;
    Ok(l.local_addr().map_err(VmError::FreePort)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_paths_are_doubled() {
        assert_eq!(
            opt_with_path("file=", Path::new("/a,b/c.img"), ",format=raw"),
            OsString::from("file=/a,,b/c.img,format=raw")
        );
    }
}
