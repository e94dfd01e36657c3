//! The OS calls of PID 1 behind one trait, with a Linux implementation and a recording double.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::mount::MsFlags;

/// How the machine goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// reboot(2) RB_AUTOBOOT.
    Reboot,
    /// reboot(2) RB_POWER_OFF.
    Poweroff,
}

/// The OS calls PID 1 makes.
pub trait Os {
    /// mount(2).
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// umount(2).
    fn umount(&mut self, target: &str) -> io::Result<()>;
    /// mkdir -p.
    fn mkdir_p(&mut self, path: &str) -> io::Result<()>;
    /// Whether a path exists.
    fn exists(&mut self, path: &str) -> bool;
    /// Reads a small text file.
    fn read_to_string(&mut self, path: &str) -> io::Result<String>;
    /// Reads `len` bytes at `offset` of a file or device.
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// sethostname(2).
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    /// Brings the loopback interface up.
    fn loopback_up(&mut self) -> io::Result<()>;
    /// Writes a keep-alive to /dev/watchdog (opening it on first use).
    fn ping_watchdog(&mut self) -> io::Result<()>;
    /// finit_module(2) of a `.ko` file.
    fn load_module(&mut self, path: &str) -> io::Result<()>;
    /// sync(2).
    fn sync(&mut self);
    /// switch_root: chdir to `new_root`, move it onto `/`, chroot there.
    fn switch_root(&mut self, new_root: &str) -> io::Result<()>;
    /// execv(2); returns only on failure.
    fn exec(&mut self, path: &str, args: &[&str]) -> io::Error;
    /// reboot(2); returns only on failure.
    fn halt(&mut self, how: Halt) -> io::Error;
    /// Sleeps (the double only records it).
    fn sleep(&mut self, d: Duration);
}

/// The open `/dev/watchdog`. The device allows one open at a time, so the
/// handle early boot opens is the one the runtime keeps pinging.
pub struct Watchdog(std::fs::File);

impl Watchdog {
    /// Opens `/dev/watchdog`, which arms it: from now on the machine resets
    /// unless it is pinged within the driver's timeout (60 s for softdog).
    pub fn open() -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/watchdog")?;
        Ok(Watchdog(f))
    }

    /// Writes one keep-alive.
    pub fn ping(&mut self) -> io::Result<()> {
        use std::io::Write;
        self.0.write_all(b"\0")
    }
}

/// The real thing.
#[derive(Default)]
pub struct LinuxOs {
    watchdog: Option<Watchdog>,
}

impl LinuxOs {
    /// Hands over the watchdog (open after a first [`Os::ping_watchdog`])
    /// to whoever pings it from now on: a second open would fail with EBUSY.
    pub fn take_watchdog(&mut self) -> Option<Watchdog> {
        self.watchdog.take()
    }
}

fn nix_io(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

impl Os for LinuxOs {
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(nix_io)
    }
    fn umount(&mut self, target: &str) -> io::Result<()> {
        nix::mount::umount(target).map_err(nix_io)
    }
    fn mkdir_p(&mut self, path: &str) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn exists(&mut self, path: &str) -> bool {
        Path::new(path).exists()
    }
    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(nix_io)
    }
    fn loopback_up(&mut self) -> io::Result<()> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        nix::ioctl_read_bad!(siocgifflags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
        nix::ioctl_write_ptr_bad!(siocsifflags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(nix_io)?;
        // SAFETY: ifreq is a plain C struct for which all-zero bytes are valid.
        let mut req: nix::libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as nix::libc::c_char;
        }
        // SAFETY: req is a valid, initialised ifreq naming "lo"; the kernel fills ifru_flags.
        unsafe { siocgifflags(sock.as_raw_fd(), &mut req) }.map_err(nix_io)?;
        // SAFETY: SIOCGIFFLAGS just set the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |=
                (nix::libc::IFF_UP | nix::libc::IFF_RUNNING) as nix::libc::c_short;
        }
        // SAFETY: req is valid and names "lo"; the kernel only reads it.
        unsafe { siocsifflags(sock.as_raw_fd(), &req) }.map_err(nix_io)?;
        Ok(())
    }
    fn ping_watchdog(&mut self) -> io::Result<()> {
        let wd = match &mut self.watchdog {
            Some(wd) => wd,
            None => self.watchdog.insert(Watchdog::open()?),
        };
        wd.ping()
    }
    fn load_module(&mut self, path: &str) -> io::Result<()> {
        let f = std::fs::File::open(path)?;
        nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty())
            .map_err(nix_io)
    }
    fn sync(&mut self) {
        nix::unistd::sync();
    }
    fn switch_root(&mut self, new_root: &str) -> io::Result<()> {
        nix::unistd::chdir(new_root).map_err(nix_io)?;
        nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(nix_io)?;
        nix::unistd::chroot(".").map_err(nix_io)?;
        nix::unistd::chdir("/").map_err(nix_io)
    }
    fn exec(&mut self, path: &str, args: &[&str]) -> io::Error {
        let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let prog = match c(path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let argv: Result<Vec<CString>, _> = args.iter().map(|a| c(a)).collect();
        match argv {
            Ok(argv) => match nix::unistd::execv(&prog, &argv) {
                Err(e) => nix_io(e),
                Ok(never) => match never {},
            },
            Err(e) => e,
        }
    }
    fn halt(&mut self, how: Halt) -> io::Error {
        let mode = match how {
            Halt::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
            Halt::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        };
        match nix::sys::reboot::reboot(mode) {
            Err(e) => nix_io(e),
            Ok(never) => match never {},
        }
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A test double: records every call as a line and answers from a fake file table.
#[derive(Default)]
pub struct Recorder {
    /// One line per call, e.g. `mount proc /proc proc`.
    pub calls: Vec<String>,
    /// Files that exist, with their contents.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
    /// Calls (by prefix) that fail with EINVAL.
    pub failing: Vec<String>,
}

impl Recorder {
    fn call(&mut self, line: String) -> io::Result<()> {
        let fail = self.failing.iter().any(|f| line.starts_with(f.as_str()));
        self.calls.push(line);
        if fail {
            Err(io::Error::from_raw_os_error(nix::libc::EINVAL))
        } else {
            Ok(())
        }
    }
}

impl Os for Recorder {
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.call(format!(
            "mount {source} {target} {fstype} {:#x} {}",
            flags.bits(),
            data.unwrap_or("-")
        ))
    }
    fn umount(&mut self, target: &str) -> io::Result<()> {
        self.call(format!("umount {target}"))
    }
    fn mkdir_p(&mut self, path: &str) -> io::Result<()> {
        self.call(format!("mkdir {path}"))
    }
    fn exists(&mut self, path: &str) -> bool {
        self.files.contains_key(path)
    }
    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        match self.files.get(path) {
            Some(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let b = self.files.get(path).ok_or(io::ErrorKind::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        b.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }
    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        self.call(format!("sethostname {name}"))
    }
    fn loopback_up(&mut self) -> io::Result<()> {
        self.call("loopback up".into())
    }
    fn ping_watchdog(&mut self) -> io::Result<()> {
        self.call("watchdog ping".into())
    }
    fn load_module(&mut self, path: &str) -> io::Result<()> {
        self.call(format!("finit_module {path}"))
    }
    fn sync(&mut self) {
        self.calls.push("sync".into());
    }
    fn switch_root(&mut self, new_root: &str) -> io::Result<()> {
        self.call(format!("switch_root {new_root}"))
    }
    fn exec(&mut self, path: &str, args: &[&str]) -> io::Error {
        self.calls.push(format!("exec {path} {}", args.join(" ")));
        io::ErrorKind::Other.into()
    }
    fn halt(&mut self, how: Halt) -> io::Error {
        self.calls.push(format!("halt {how:?}"));
        io::ErrorKind::Other.into()
    }
    fn sleep(&mut self, d: Duration) {
        self.calls.push(format!("sleep {}ms", d.as_millis()));
    }
}
