//! Stage 2, `/krazy/init` on the root file system: early mounts, `/perm`,
//! hostname, loopback, watchdog, then the supervisor and the web interface,
//! and an orderly reboot or poweroff.
//!
//! Image files read: `/etc/krazy/services.toml`, `/etc/hostname`,
//! `/etc/krazy/password` (the PBKDF2 form, see [`crate::web::auth`]),
//! `/etc/krazy/web.toml` (ports, TLS, limits: [`crate::config::WebSettings`]),
//! `/etc/krazy/build-id`, `/etc/krazy/tls/cert.pem` + `key.pem` (with `tls = true`).
//! Written: `/perm/krazy/device-id` on first boot ([`crate::device_id`]).
//!
//! PID 1 raises its own `RLIMIT_NOFILE` to [`PID1_NOFILE`] and keeps
//! [`crate::web::limits::FD_RESERVE`] descriptors the web server never
//! uses; services start with the ordinary soft limit of 1024.
//! The kernel command line names the perm partition as
//! `krazy.perm=PARTUUID=<uuid>` and the running slot as `krazy.slot=a|b`.

use std::path::PathBuf;
use std::time::Duration;

use nix::mount::MsFlags;

use super::os::{Halt, Os};
use super::{cmdline_partuuid, cmdline_value, Pid1Error, Platform};

/// What early boot found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// Whether `/perm` is mounted (writable).
    pub perm_mounted: bool,
    /// Whether `/perm` was formatted during this boot.
    pub perm_formatted: bool,
    /// The host name set.
    pub hostname: Option<String>,
    /// The running slot from the command line.
    pub slot: Option<String>,
    /// Whether /dev/watchdog exists (and was pinged).
    pub watchdog: bool,
}

/// The `RLIMIT_NOFILE` PID 1 gives itself (the kernel starts it at 1024/4096).
pub const PID1_NOFILE: u64 = 65536;

/// Where the image keeps the web settings.
pub const WEB_TOML: &str = "/etc/krazy/web.toml";

/// The web settings of the image; without the file (an image from before
/// it existed), the defaults, with TLS when a certificate is there; a file
/// that does not parse is logged as an error and gets the same defaults.
pub fn load_web_settings(
    path: &std::path::Path,
    cert: &std::path::Path,
) -> crate::config::WebSettings {
    use crate::config::WebFileError;
    match crate::config::load_web(path) {
        Ok(w) => w,
        Err(e) => {
            let tls = cert.exists();
            match &e {
                WebFileError::Read { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::warn!("{e}; using the default web settings (tls = {tls})");
                }
                // A file that is there but wrong is a build bug: said loudly,
                // and the device still serves its pages to be fixed.
                _ => tracing::error!(
                    "{} is broken: {e}; serving with the default web settings (tls = {tls})",
                    path.display()
                ),
            }
            crate::config::WebSettings {
                tls,
                ..Default::default()
            }
        }
    }
}

/// The ports to serve: `http_port`, and `https_port` when TLS is wanted
/// (both serve HTTPS and redirect plain HTTP when TLS works; with broken
/// TLS both answer 503).
pub fn web_ports(w: &crate::config::WebSettings) -> Vec<u16> {
    let mut ports = vec![w.http_port];
    if w.tls && w.https_port != w.http_port {
        ports.push(w.https_port);
    }
    ports
}

/// ext4 superblock magic 0xEF53 at byte 1080 of the partition.
const EXT4_MAGIC_OFFSET: u64 = 1024 + 0x38;

fn try_mount(
    os: &mut dyn Os,
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) {
    if let Err(e) = os.mkdir_p(target) {
        tracing::warn!("mkdir {target}: {e}");
    }
    match os.mount(src, target, fstype, flags, data) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
        Err(e) => tracing::warn!("cannot mount {fstype} on {target}: {e}"),
    }
}

/// The early boot sequence; failures are logged and boot goes on (a device
/// without /perm still serves its status page).
pub fn early_boot(os: &mut dyn Os, platform: &dyn Platform) -> BootReport {
    tracing::info!("stage 2: mounting, /perm, hostname, loopback, watchdog");
    let mut report = BootReport::default();
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ns = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    try_mount(os, "proc", "/proc", "proc", nse, None);
    try_mount(os, "sysfs", "/sys", "sysfs", nse, None);
    try_mount(os, "devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None);
    try_mount(
        os,
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );
    try_mount(os, "tmpfs", "/dev/shm", "tmpfs", ns, Some("mode=1777"));
    try_mount(os, "tmpfs", "/run", "tmpfs", ns, Some("mode=755"));
    try_mount(os, "tmpfs", "/tmp", "tmpfs", ns, Some("mode=1777"));
    try_mount(os, "cgroup2", "/sys/fs/cgroup", "cgroup2", nse, None);
    if os.exists("/sys/firmware/efi") {
        try_mount(
            os,
            "efivarfs",
            "/sys/firmware/efi/efivars",
            "efivarfs",
            nse,
            None,
        );
    }
    let cmdline = os.read_to_string("/proc/cmdline").unwrap_or_default();
    report.slot = cmdline_value(&cmdline, "krazy.slot").map(str::to_owned);
    if let Some(uuid) = cmdline_partuuid(&cmdline, "krazy.perm") {
        match platform.find_partuuid(&uuid) {
            Some(dev) => {
                let dev_s = dev.to_string_lossy().into_owned();
                let blank = !matches!(
                    os.read_at(&dev_s, EXT4_MAGIC_OFFSET, 2).as_deref(),
                    Ok([0x53, 0xef])
                );
                let formatted = if blank {
                    tracing::info!("{dev_s} holds no ext4 file system: formatting /perm");
                    match platform.format_ext4(&dev) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("{e}");
                            false
                        }
                    }
                } else {
                    false
                };
                if !blank || formatted {
                    let _ = os.mkdir_p("/perm");
                    match os.mount(&dev_s, "/perm", "ext4", ns | MsFlags::MS_RELATIME, None) {
                        Ok(()) => {
                            report.perm_mounted = true;
                            report.perm_formatted = formatted;
                        }
                        Err(e) => tracing::warn!("cannot mount {dev_s} on /perm: {e}"),
                    }
                }
            }
            None => tracing::warn!("perm partition PARTUUID={uuid} not found"),
        }
    }
    if let Ok(h) = os.read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            match os.sethostname(h) {
                Ok(()) => report.hostname = Some(h.to_owned()),
                Err(e) => tracing::warn!("sethostname {h}: {e}"),
            }
        }
    }
    if let Err(e) = os.loopback_up() {
        tracing::warn!("cannot bring lo up: {e}");
    }
    if os.exists("/dev/watchdog") {
        report.watchdog = os.ping_watchdog().is_ok();
    }
    report
}

/// The end: sync, unmount /perm, sync, reboot(2). Services must be stopped before.
pub fn halt(os: &mut dyn Os, how: Halt, perm_mounted: bool) -> Pid1Error {
    os.sync();
    if perm_mounted {
        if let Err(e) = os.umount("/perm") {
            tracing::warn!("cannot unmount /perm: {e}");
        }
    }
    os.sync();
    let err = os.halt(how);
    Pid1Error::Os {
        what: format!("reboot(2) {how:?}"),
        err,
    }
}

/// krazy-update's device side for this boot, when the root came from a
/// krazy disk (root= PARTUUID, krazy.slot=) and /perm holds its state.
fn open_update_device(
    report: &BootReport,
    build_id: Option<&str>,
) -> Option<std::sync::Arc<std::sync::Mutex<krazy_update::device::Device>>> {
    use krazy_update::protocol::Slot;
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    let root = cmdline_partuuid(&cmdline, "root")?;
    let running = match report.slot.as_deref() {
        Some("a") => Slot::A,
        Some("b") => Slot::B,
        _ => return None,
    };
    if !report.perm_mounted {
        tracing::warn!("updates are off: /perm is not mounted (it keeps the update state)");
        return None;
    }
    match super::update::open_device(
        "/sys/block".as_ref(),
        "/dev".as_ref(),
        &root,
        running,
        build_id.unwrap_or("unknown"),
        PathBuf::from("/perm/krazy"),
    ) {
        Ok(d) => Some(std::sync::Arc::new(std::sync::Mutex::new(d))),
        Err(e) => {
            tracing::warn!("updates are off: {e}");
            None
        }
    }
}

/// Runs stage 2 on the real system; returns only if reboot(2) failed.
pub fn run_linux(platform: &dyn Platform) -> Pid1Error {
    use crate::web::{self, auth::Password, PowerRequest, WebConfig};
    use crate::{Supervisor, SupervisorOptions};
    let mut os = super::LinuxOs::default();
    let report = early_boot(&mut os, platform);
    let nofile = crate::supervisor::raise_nofile_limit(Some(PID1_NOFILE));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            return Pid1Error::Os {
                what: "cannot start the tokio runtime".into(),
                err,
            }
        }
    };
    let how = rt.block_on(async {
        let sup = match Supervisor::new(SupervisorOptions {
            home_base: report.perm_mounted.then(|| PathBuf::from("/perm/home")),
            reap_orphans: true,
            subreaper: false,
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return Halt::Reboot;
            }
        };
        let mut boot_services = Vec::new();
        match crate::config::load_services(std::path::Path::new("/etc/krazy/services.toml")) {
            Ok(file) => {
                for s in file.services {
                    if s.start == crate::config::StartMode::Boot {
                        boot_services.push(s.name.clone());
                    }
                    if let Err(e) = sup.add(s) {
                        tracing::error!("{e}");
                    }
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        let password = std::fs::read_to_string("/etc/krazy/password")
            .ok()
            .and_then(|t| Password::parse_stored(&t).ok());
        let (cert, key) = (
            std::path::Path::new("/etc/krazy/tls/cert.pem"),
            std::path::Path::new("/etc/krazy/tls/key.pem"),
        );
        let settings = load_web_settings(WEB_TOML.as_ref(), cert);
        let (tls, tls_error) = if settings.tls {
            match web::load_tls(cert, key) {
                Ok(t) => (Some(t), None),
                Err(e) => {
                    let why = web::tls_fix_hint(&e, cert, key);
                    tracing::error!("{why}");
                    (None, Some(why))
                }
            }
        } else {
            (None, None)
        };
        let (power_tx, mut power_rx) = tokio::sync::mpsc::unbounded_channel();
        let build_id = std::fs::read_to_string("/etc/krazy/build-id")
            .ok()
            .map(|s| s.trim().to_owned());
        let device = open_update_device(&report, build_id.as_deref());
        let device_id = std::sync::Arc::new(crate::device_id::DeviceId::new(
            report.perm_mounted.then(|| PathBuf::from("/perm")),
            PathBuf::from("/run"),
        ));
        let cfg = WebConfig {
            device_id: Some(device_id.clone()),
            update: device.clone(),
            password,
            build_id,
            running_slot: report.slot.clone(),
            perm: report.perm_mounted.then(|| PathBuf::from("/perm")),
            tls,
            tls_error,
            https_port: Some(settings.https_port),
            limits: web::limits::Limits::from(&settings).within_fd_limit(nofile),
        };
        match web::Web::new(sup.clone(), cfg, power_tx.clone()) {
            Ok(w) => {
                match web::bind_unix("/run/krazy/http.sock".as_ref()) {
                    Ok(l) => {
                        tokio::spawn(w.clone().serve_unix(l));
                    }
                    Err(e) => tracing::error!("{e}"),
                }
                for port in web_ports(&settings) {
                    tokio::spawn(web::serve_private_addresses(w.clone(), port));
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        // The runtime pings the watchdog every second through the handle
        // early boot opened: a hung PID 1 resets the machine.
        if let Some(mut wd) = os.take_watchdog().filter(|_| report.watchdog) {
            tokio::spawn(async move {
                let mut failing = false;
                loop {
                    match wd.ping() {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!("cannot ping /dev/watchdog: {e}");
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        sup.boot();
        // After the services were started: reading the kernel's random
        // generator may wait for it to be initialised.
        tokio::task::spawn_blocking(move || {
            if let Some(id) = device_id.get_or_make() {
                tracing::info!("device id {id}");
            }
        });
        if let Some(dev) = device.filter(|d| d.lock().map(|d| d.is_trial()).unwrap_or(false)) {
            let file = super::update::load_update_file(super::update::UPDATE_TOML.as_ref());
            let (sup2, tx) = (sup.clone(), power_tx.clone());
            tokio::spawn(async move {
                if let super::update::Verdict::RolledBack(why) =
                    super::update::drive_health(sup2, dev, file, boot_services).await
                {
                    tracing::error!("rebooting into the committed slot: {why}");
                    let _ = tx.send(PowerRequest::Reboot);
                }
            });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install signal handlers");
            std::future::pending::<()>().await;
            return Halt::Reboot;
        };
        let how = tokio::select! {
            r = power_rx.recv() => match r {
                Some(PowerRequest::Poweroff) => Halt::Poweroff,
                _ => Halt::Reboot,
            },
            _ = term.recv() => Halt::Reboot,
            _ = usr2.recv() => Halt::Poweroff,
        };
        tracing::info!("{how:?}: stopping services");
        sup.shutdown().await;
        how
    });
    halt(&mut os, how, report.perm_mounted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::Recorder;
    use std::path::Path;
    use std::sync::Mutex;

    struct Fake {
        formatted: Mutex<Vec<PathBuf>>,
    }
    impl Platform for Fake {
        fn find_partuuid(&self, p: &str) -> Option<PathBuf> {
            (p == "0000-04").then(|| "/dev/vda4".into())
        }
        fn format_ext4(&self, d: &Path) -> Result<(), Pid1Error> {
            self.formatted.lock().unwrap().push(d.to_owned());
            Ok(())
        }
    }

    fn os(perm_bytes: Vec<u8>, efi: bool) -> Recorder {
        let mut os = Recorder::default();
        os.files.insert(
            "/proc/cmdline".into(),
            b"root=PARTUUID=0000-02 krazy.perm=PARTUUID=0000-04 krazy.slot=a".to_vec(),
        );
        os.files.insert("/etc/hostname".into(), b"kiosk\n".to_vec());
        os.files.insert("/dev/vda4".into(), perm_bytes);
        os.files.insert("/dev/watchdog".into(), Vec::new());
        if efi {
            os.files.insert("/sys/firmware/efi".into(), Vec::new());
        }
        os
    }

    #[test]
    fn boot_sequence_with_an_existing_perm() {
        let mut disk = vec![0u8; 2048];
        disk[1080] = 0x53;
        disk[1081] = 0xef;
        let mut os = os(disk, true);
        let fake = Fake {
            formatted: Mutex::new(Vec::new()),
        };
        let r = early_boot(&mut os, &fake);
        assert_eq!(
            r,
            BootReport {
                perm_mounted: true,
                perm_formatted: false,
                hostname: Some("kiosk".into()),
                slot: Some("a".into()),
                watchdog: true
            }
        );
        let mounts: Vec<&str> = os
            .calls
            .iter()
            .filter(|c| c.starts_with("mount"))
            .map(|c| c.split(' ').nth(2).unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/tmp",
                "/sys/fs/cgroup",
                "/sys/firmware/efi/efivars",
                "/perm"
            ]
        );
        assert!(os
            .calls
            .contains(&"mount /dev/vda4 /perm ext4 0x200006 -".to_string()));
        let tail: Vec<&str> = os.calls.iter().rev().take(3).map(String::as_str).collect();
        assert_eq!(tail, ["watchdog ping", "loopback up", "sethostname kiosk"]);
        assert!(fake.formatted.lock().unwrap().is_empty());
        let err = halt(&mut os, Halt::Poweroff, r.perm_mounted);
        assert!(err.to_string().contains("Poweroff"));
        let end: Vec<&str> = os
            .calls
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(end, ["sync", "umount /perm", "sync", "halt Poweroff"]);
    }

    #[test]
    fn web_ports_follow_the_settings() {
        use crate::config::WebSettings;
        let w = |http_port, https_port, tls| WebSettings {
            http_port,
            https_port,
            tls,
            ..WebSettings::default()
        };
        assert_eq!(web_ports(&WebSettings::default()), [80, 443]);
        assert_eq!(web_ports(&w(8080, 8443, true)), [8080, 8443]);
        assert_eq!(web_ports(&w(8080, 8443, false)), [8080]);
        assert_eq!(web_ports(&w(8080, 8080, true)), [8080]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.toml");
        std::fs::write(
            &file,
            "http_port = 8080\nhttps_port = 8443\nmax_connections = 9\n",
        )
        .unwrap();
        let cert = dir.path().join("cert.pem");
        let s = load_web_settings(&file, &cert);
        assert_eq!(
            (s.http_port, s.https_port, s.tls, s.max_connections),
            (8080, 8443, true, 9)
        );
        // No file: defaults, TLS only when the certificate is there.
        let s = load_web_settings(&dir.path().join("none.toml"), &cert);
        assert_eq!((s.http_port, s.tls), (80, false));
    }

    #[test]
    fn blank_perm_is_formatted_then_mounted_and_no_efi_no_efivarfs() {
        let mut os = os(vec![0u8; 2048], false);
        let fake = Fake {
            formatted: Mutex::new(Vec::new()),
        };
        let r = early_boot(&mut os, &fake);
        assert!(r.perm_mounted && r.perm_formatted);
        assert_eq!(
            *fake.formatted.lock().unwrap(),
            [PathBuf::from("/dev/vda4")]
        );
        assert!(!os.calls.iter().any(|c| c.contains("efivarfs")));
        // Unwired platform: no /perm, boot goes on.
        let mut os = self::os(vec![0u8; 2048], false);
        let r = early_boot(&mut os, &crate::pid1::Unwired);
        assert!(!r.perm_mounted);
        assert!(os.calls.contains(&"loopback up".to_string()));
    }
}
