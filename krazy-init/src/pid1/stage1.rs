//! Stage 1, `/init` in an initramfs: load modules, find the root partition,
//! mount the squashfs root, switch to it and exec `/krazy/init`.
//!
//! The initramfs is not emptied before the switch (it holds only the modules
//! and this binary, a few MiB that stay in memory).

use std::time::Duration;

use nix::mount::MsFlags;

use super::os::Os;
use super::{cmdline_partuuid, Pid1Error, Platform};

/// The file in the initramfs listing the modules to load, one `.ko` path a line, in order.
pub const MODULES_LIST: &str = "/modules.order";
/// How often and how long to look for the root partition.
pub const ROOT_POLL: Duration = Duration::from_millis(100);
/// Tries before giving up (30 s).
pub const ROOT_TRIES: u32 = 300;

fn os_err(what: String) -> impl FnOnce(std::io::Error) -> Pid1Error {
    move |err| Pid1Error::Os { what, err }
}

fn mount(
    os: &mut dyn Os,
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
) -> Result<(), Pid1Error> {
    os.mount(src, target, fstype, flags, None)
        .map_err(|err| Pid1Error::Mount {
            source_dev: src.into(),
            target: target.into(),
            fstype: fstype.into(),
            err,
        })
}

/// Runs stage 1; returns only on failure (on success it has exec'd `/krazy/init`).
pub fn run(os: &mut dyn Os, platform: &dyn Platform) -> Pid1Error {
    tracing::info!("stage 1: loading modules, finding the root");
    match prepare(os, platform) {
        Ok(()) => {
            let err = os.exec("/krazy/init", &["/krazy/init"]);
            Pid1Error::Os {
                what: "cannot exec /krazy/init".into(),
                err,
            }
        }
        Err(e) => e,
    }
}

fn prepare(os: &mut dyn Os, platform: &dyn Platform) -> Result<(), Pid1Error> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    os.mkdir_p("/proc").map_err(os_err("mkdir /proc".into()))?;
    mount(os, "proc", "/proc", "proc", nosuid)?;
    os.mkdir_p("/sys").map_err(os_err("mkdir /sys".into()))?;
    mount(os, "sysfs", "/sys", "sysfs", nosuid)?;
    os.mkdir_p("/dev").map_err(os_err("mkdir /dev".into()))?;
    if let Err(e) = mount(os, "devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID) {
        tracing::warn!("{e} (the kernel may have mounted it)");
    }
    if let Ok(list) = os.read_to_string(MODULES_LIST) {
        for ko in list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match os.load_module(ko) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
                Err(e) => tracing::warn!("cannot load module {ko}: {e}"),
            }
        }
    }
    let cmdline = os
        .read_to_string("/proc/cmdline")
        .map_err(os_err("cannot read /proc/cmdline".into()))?;
    let partuuid = cmdline_partuuid(&cmdline, "root")
        .ok_or_else(|| Pid1Error::NoRoot(cmdline.trim().into()))?;
    let mut dev = None;
    for _ in 0..ROOT_TRIES {
        if let Some(d) = platform.find_partuuid(&partuuid) {
            dev = Some(d);
            break;
        }
        os.sleep(ROOT_POLL);
    }
    let dev = dev.ok_or_else(|| Pid1Error::RootMissing(partuuid.clone()))?;
    let dev = dev.to_string_lossy().into_owned();
    os.mkdir_p("/root").map_err(os_err("mkdir /root".into()))?;
    mount(os, &dev, "/root", "squashfs", MsFlags::MS_RDONLY)?;
    for m in ["/dev", "/proc", "/sys"] {
        let target = format!("/root{m}");
        if let Err(e) = mount(os, m, &target, "", MsFlags::MS_MOVE) {
            tracing::warn!("{e}");
        }
    }
    os.switch_root("/root").map_err(os_err(
        "cannot switch to the root file system at /root".into(),
    ))
}

/// Stage 1 on the real system with the given platform seams.
pub fn run_linux(platform: &dyn Platform) -> Pid1Error {
    run(&mut super::LinuxOs::default(), platform)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::Recorder;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Slow(AtomicU32);
    impl Platform for Slow {
        fn find_partuuid(&self, p: &str) -> Option<PathBuf> {
            assert_eq!(p, "aa-01");
            (self.0.fetch_add(1, Ordering::Relaxed) >= 2).then(|| "/dev/vda2".into())
        }
        fn format_ext4(&self, _: &Path) -> Result<(), Pid1Error> {
            unreachable!()
        }
    }

    #[test]
    fn sequence_loads_modules_waits_for_root_and_switches() {
        let mut os = Recorder::default();
        os.files.insert(
            "/proc/cmdline".into(),
            b"console=ttyS0 root=PARTUUID=AA-01 panic=10\n".to_vec(),
        );
        os.files.insert(
            MODULES_LIST.into(),
            b"/lib/modules/virtio_blk.ko\n\n/lib/modules/squashfs.ko\n".to_vec(),
        );
        os.failing.push("mount devtmpfs".into());
        let err = run(&mut os, &Slow(AtomicU32::new(0)));
        assert!(matches!(err, Pid1Error::Os { .. }), "{err}"); // the recorder's exec "fails"
        let calls: Vec<&str> = os.calls.iter().map(String::as_str).collect();
        assert_eq!(
            calls,
            [
                "mkdir /proc",
                "mount proc /proc proc 0xe -",
                "mkdir /sys",
                "mount sysfs /sys sysfs 0xe -",
                "mkdir /dev",
                "mount devtmpfs /dev devtmpfs 0x2 -",
                "finit_module /lib/modules/virtio_blk.ko",
                "finit_module /lib/modules/squashfs.ko",
                "sleep 100ms",
                "sleep 100ms",
                "mkdir /root",
                "mount /dev/vda2 /root squashfs 0x1 -",
                "mount /dev /root/dev  0x2000 -",
                "mount /proc /root/proc  0x2000 -",
                "mount /sys /root/sys  0x2000 -",
                "switch_root /root",
                "exec /krazy/init /krazy/init",
            ]
        );
    }

    #[test]
    fn missing_root_is_an_error_naming_the_partuuid() {
        let mut os = Recorder::default();
        os.files
            .insert("/proc/cmdline".into(), b"root=PARTUUID=aa-01".to_vec());
        let err = run(&mut os, &crate::pid1::Unwired);
        assert!(err.to_string().contains("PARTUUID=aa-01"), "{err}");
        assert!(!os.calls.iter().any(|c| c.starts_with("exec")));
        let mut os = Recorder::default();
        os.files
            .insert("/proc/cmdline".into(), b"root=/dev/sda1".to_vec());
        assert!(matches!(
            run(&mut os, &crate::pid1::Unwired),
            Pid1Error::NoRoot(_)
        ));
    }
}
