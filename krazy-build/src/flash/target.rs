//! Target inspection: finding a device's sysfs directory, its partitions
//! and holders, what `/` rests on (through partitions and device mapper),
//! its mounts (`/proc/self/mountinfo`) and swaps, and opening it
//! exclusively with its size and sector sizes read by ioctl.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc;

use super::{ioctl, FlashError, MountUse, Target, TargetKind, TargetOptions, IMAGE_SECTOR};

/// Opens `dev` and checks it can be overwritten; see the module docs for
/// what is refused. Regular files are refused; [`inspect_target_with`]
/// can allow them.
pub fn inspect_target(dev: &Path) -> Result<Target, FlashError> {
    inspect_target_with(dev, &TargetOptions::default())
}

/// [`inspect_target`] with options.
pub fn inspect_target_with(dev: &Path, opts: &TargetOptions) -> Result<Target, FlashError> {
    inspect_in(&Sys::default(), dev, opts)
}

/// Where the system's views live (so the sysfs logic can be unit-tested on
/// a fake tree).
struct Sys {
    sys: PathBuf,
    mountinfo: PathBuf,
    swaps: PathBuf,
}

impl Default for Sys {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
        }
    }
}

pub(super) fn open_err(path: &Path) -> impl FnOnce(io::Error) -> FlashError + '_ {
    move |error| FlashError::Open {
        path: path.to_path_buf(),
        error,
    }
}

fn sys_err(path: &Path) -> impl FnOnce(io::Error) -> FlashError + '_ {
    move |error| FlashError::System {
        path: path.to_path_buf(),
        error,
    }
}

fn inspect_in(sys: &Sys, path: &Path, opts: &TargetOptions) -> Result<Target, FlashError> {
    let meta = std::fs::metadata(path).map_err(open_err(path))?;
    let ft = meta.file_type();
    if ft.is_file() && opts.allow_regular_file {
        return inspect_file(path);
    }
    if !ft.is_block_device() {
        let kind = if ft.is_file() {
            "regular file"
        } else if ft.is_dir() {
            "directory"
        } else if ft.is_char_device() {
            "character device"
        } else {
            "special file"
        };
        return Err(FlashError::NotABlockDevice {
            path: path.to_path_buf(),
            kind,
        });
    }
    let rdev = meta.rdev();
    let (major, minor) = (dev_major(rdev), dev_minor(rdev));
    let dir = sys
        .block_dir(major, minor)
        .map_err(sys_err(&sys.sys.join(format!("dev/block/{major}:{minor}"))))?;
    let name = file_name(&dir);
    if dir.join("partition").exists() {
        let disk = dir.parent().map(file_name).unwrap_or_default();
        return Err(FlashError::IsPartition {
            path: path.to_path_buf(),
            disk: Path::new("/dev").join(disk),
        });
    }

    let mounts =
        parse_mountinfo(&std::fs::read_to_string(&sys.mountinfo).map_err(sys_err(&sys.mountinfo))?);
    if let Some((root_device, disks)) = sys.root_disks(&mounts) {
        if disks.contains(&name) {
            return Err(FlashError::RootDisk {
                path: path.to_path_buf(),
                root_device,
            });
        }
    }
    if read_trim(&dir.join("ro")).as_deref() == Some("1") {
        return Err(FlashError::ReadOnly {
            path: path.to_path_buf(),
        });
    }

    // The disk and its partitions, as (name, dev).
    let partitions = partitions_of(&dir);
    let mut devices = vec![(name.clone(), (major, minor), dir.clone())];
    devices.extend(partitions.iter().cloned());

    let mut uses = Vec::new();
    for m in &mounts {
        let src_dev = m.source_rdev();
        for (n, d, _) in &devices {
            if m.dev == *d || src_dev == Some(*d) {
                uses.push(MountUse {
                    device: Path::new("/dev").join(n),
                    mount_point: m.mount_point.clone(),
                });
            }
        }
    }
    if !uses.is_empty() {
        return Err(FlashError::Mounted {
            path: path.to_path_buf(),
            mounts: uses,
        });
    }
    if let Ok(text) = std::fs::read_to_string(&sys.swaps) {
        for swap in parse_swaps(&text) {
            let Ok(m) = std::fs::metadata(&swap) else {
                continue;
            };
            if !m.file_type().is_block_device() {
                continue;
            }
            let d = (dev_major(m.rdev()), dev_minor(m.rdev()));
            if devices.iter().any(|(_, dd, _)| *dd == d) {
                return Err(FlashError::Swap {
                    path: path.to_path_buf(),
                    device: swap,
                });
            }
        }
    }
    for (n, _, d) in &devices {
        if let Some(holder) = list_dir(&d.join("holders")).into_iter().next() {
            return Err(FlashError::Held {
                path: path.to_path_buf(),
                device: Path::new("/dev").join(n),
                holder,
            });
        }
    }

    // O_EXCL on a block device claims it in the kernel: it fails with EBUSY
    // while the device or any partition is mounted (in any namespace) or
    // claimed, and keeps others from mounting it while we hold it.
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        let mut flags = libc::O_EXCL | libc::O_CLOEXEC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        o.custom_flags(flags).open(path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(false).map_err(open_err(path))?, false)
        }
        Err(e) => return Err(open_error(path, e)),
    };
    let fd = file.as_raw_fd();
    let mut size = 0u64;
    // SAFETY: fd is an open block device and `size` is a valid u64 the
    // kernel writes the size into.
    unsafe { ioctl::blkgetsize64(fd, &mut size) }.map_err(ioctl_err(path, "BLKGETSIZE64"))?;
    if size == 0 {
        return Err(FlashError::NoMedium {
            path: path.to_path_buf(),
        });
    }
    let mut lbs: libc::c_int = 0;
    // SAFETY: fd is an open block device and `lbs` is a valid int.
    unsafe { ioctl::blksszget(fd, &mut lbs) }.map_err(ioctl_err(path, "BLKSSZGET"))?;
    let mut pbs: libc::c_uint = 0;
    // SAFETY: fd is an open block device and `pbs` is a valid unsigned int.
    unsafe { ioctl::blkpbszget(fd, &mut pbs) }.map_err(ioctl_err(path, "BLKPBSZGET"))?;
    let logical = u32::try_from(lbs).unwrap_or(512).max(512);
    let model = [
        read_trim(&dir.join("device/vendor")),
        read_trim(&dir.join("device/model")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let target = Target {
        path: path.to_path_buf(),
        name: Some(name),
        kind: TargetKind::BlockDevice { major, minor },
        size,
        logical_sector_size: logical,
        physical_sector_size: pbs.max(logical),
        model: (!model.is_empty()).then_some(model),
        removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
        partitions: partitions.into_iter().map(|(n, _, _)| n).collect(),
        file,
        direct,
        sys_dir: Some(dir),
    };
    tracing::debug!(?target, "flash target inspected");
    Ok(target)
}

fn open_error(path: &Path, e: io::Error) -> FlashError {
    match e.raw_os_error() {
        Some(libc::EBUSY) => FlashError::Busy {
            path: path.to_path_buf(),
        },
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => FlashError::ReadOnly {
            path: path.to_path_buf(),
        },
        _ => FlashError::Open {
            path: path.to_path_buf(),
            error: e,
        },
    }
}

fn ioctl_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(Errno) -> FlashError + 'a {
    move |e| FlashError::Ioctl {
        path: path.to_path_buf(),
        what,
        error: io::Error::from(e),
    }
}

fn inspect_file(path: &Path) -> Result<Target, FlashError> {
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        o.custom_flags(if direct {
            libc::O_DIRECT | libc::O_CLOEXEC
        } else {
            libc::O_CLOEXEC
        })
        .open(path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(false).map_err(open_err(path))?, false)
        }
        Err(e) => return Err(open_error(path, e)),
    };
    let size = file.metadata().map_err(open_err(path))?.len();
    if size == 0 {
        return Err(FlashError::NoMedium {
            path: path.to_path_buf(),
        });
    }
    Ok(Target {
        path: path.to_path_buf(),
        name: None,
        kind: TargetKind::RegularFile,
        size,
        logical_sector_size: IMAGE_SECTOR,
        physical_sector_size: IMAGE_SECTOR,
        model: None,
        removable: false,
        partitions: Vec::new(),
        file,
        direct,
        sys_dir: None,
    })
}

fn dev_major(rdev: u64) -> u32 {
    // glibc's gnu_dev_major.
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The partitions of the disk whose sysfs directory is `disk`: subdirectories
/// with a `partition` file, as (name, major:minor, directory).
pub(super) fn partitions_of(disk: &Path) -> Vec<(String, (u32, u32), PathBuf)> {
    let mut out = Vec::new();
    for n in list_dir(disk) {
        let d = disk.join(&n);
        if !d.join("partition").is_file() {
            continue;
        }
        if let Some(dev) = read_trim(&d.join("dev")).as_deref().and_then(parse_dev) {
            out.push((n, dev, d));
        }
    }
    out
}

impl Sys {
    /// The canonical sysfs directory of block device `major:minor`.
    fn block_dir(&self, major: u32, minor: u32) -> io::Result<PathBuf> {
        std::fs::canonicalize(self.sys.join(format!("dev/block/{major}:{minor}")))
    }

    /// The device `/` is mounted from and every block device it rests on:
    /// the device itself, the disk of a partition, and (through `slaves`)
    /// what a device-mapper or RAID device is built on. `None` when `/` is
    /// not on a block device (overlay, NFS, tmpfs).
    fn root_disks(&self, mounts: &[MountInfo]) -> Option<(PathBuf, BTreeSet<String>)> {
        let root = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == Path::new("/"))?;
        let mut dev = root.dev;
        if dev.0 == 0 {
            dev = root.source_rdev()?;
        }
        let dir = self.block_dir(dev.0, dev.1).ok()?;
        let mut names = BTreeSet::new();
        self.collect_bases(&dir, &mut names, 0);
        tracing::debug!(root = %root.source, ?names, "disks under /");
        let root_device = if root.source.starts_with("/dev/") {
            PathBuf::from(&root.source)
        } else {
            Path::new("/dev").join(file_name(&dir))
        };
        Some((root_device, names))
    }

    fn collect_bases(&self, dir: &Path, names: &mut BTreeSet<String>, depth: u32) {
        if depth > 16 || !names.insert(file_name(dir)) {
            return;
        }
        if dir.join("partition").exists() {
            if let Some(parent) = dir.parent() {
                self.collect_bases(parent, names, depth + 1);
            }
        }
        for s in list_dir(&dir.join("slaves")) {
            if let Ok(d) = std::fs::canonicalize(self.sys.join("class/block").join(&s)) {
                self.collect_bases(&d, names, depth + 1);
            }
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    dev: (u32, u32),
    mount_point: PathBuf,
    source: String,
}

impl MountInfo {
    /// The device number of the mount's source when it names a block device.
    fn source_rdev(&self) -> Option<(u32, u32)> {
        if !self.source.starts_with("/dev/") {
            return None;
        }
        let m = std::fs::metadata(&self.source).ok()?;
        m.file_type()
            .is_block_device()
            .then(|| (dev_major(m.rdev()), dev_minor(m.rdev())))
    }
}

/// Undoes the octal escapes (`\040` for a space) the kernel puts in paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let dev = parse_dev(f.get(2)?)?;
            let mount_point = PathBuf::from(unescape(f.get(4)?));
            let source = unescape(right.split(' ').nth(1)?);
            Some(MountInfo {
                dev,
                mount_point,
                source,
            })
        })
        .collect()
}

fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::shell_quote;
    use std::os::unix::fs::symlink;

    #[test]
    fn mountinfo_and_swaps_parse_with_escapes() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 27 7:3 / /mnt/my\\040disk rw master:2 - vfat /dev/loop3p1 rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].dev, (254, 0));
        assert_eq!(m[1].mount_point, Path::new("/"));
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[2].dev, (7, 3));
        assert_eq!(m[2].mount_point, Path::new("/mnt/my disk"));
        assert_eq!(m[2].source, "/dev/loop3p1");
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/sdb2                               partition\t1048572\t\t0\t\t-2\n\
                     /swap\\040file file 100 0 -3\n";
        assert_eq!(
            parse_swaps(swaps),
            vec![PathBuf::from("/dev/sdb2"), PathBuf::from("/swap file")]
        );
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
        assert_eq!(shell_quote(Path::new("/mnt/usb")), "/mnt/usb");
        assert_eq!(
            shell_quote(Path::new("/mnt/it's mine")),
            "'/mnt/it'\\''s mine'"
        );
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }
    use std::fs;

    /// A fake sysfs: sda with partitions sda1, sda2; dm-0 built on sdb1.
    fn fake_sys(root: &Path) -> Sys {
        let sys = root.join("sys");
        let sda = sys.join("devices/pci0/host0/block/sda");
        write(&sda.join("dev"), "8:0\n");
        for (n, dev) in [(1, "8:1"), (2, "8:2")] {
            write(&sda.join(format!("sda{n}/partition")), &format!("{n}\n"));
            write(&sda.join(format!("sda{n}/dev")), dev);
        }
        let sdb = sys.join("devices/pci0/host1/block/sdb");
        write(&sdb.join("dev"), "8:16\n");
        write(&sdb.join("sdb1/partition"), "1\n");
        write(&sdb.join("sdb1/dev"), "8:17\n");
        let dm = sys.join("devices/virtual/block/dm-0");
        write(&dm.join("dev"), "254:0\n");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink("../../../pci0/host1/block/sdb/sdb1", dm.join("slaves/sdb1")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        for (dev, path, name) in [
            ("8:0", "pci0/host0/block/sda", "sda"),
            ("8:1", "pci0/host0/block/sda/sda1", "sda1"),
            ("8:2", "pci0/host0/block/sda/sda2", "sda2"),
            ("8:16", "pci0/host1/block/sdb", "sdb"),
            ("8:17", "pci0/host1/block/sdb/sdb1", "sdb1"),
            ("254:0", "virtual/block/dm-0", "dm-0"),
        ] {
            symlink(
                format!("../../devices/{path}"),
                sys.join("dev/block").join(dev),
            )
            .unwrap();
            symlink(
                format!("../../devices/{path}"),
                sys.join("class/block").join(name),
            )
            .unwrap();
        }
        Sys {
            sys,
            mountinfo: root.join("mountinfo"),
            swaps: root.join("swaps"),
        }
    }

    #[test]
    fn root_disk_through_partitions_and_device_mapper() {
        let t = tempfile::tempdir().unwrap();
        let sys = fake_sys(t.path());
        let on_part = parse_mountinfo("1 0 8:2 / / rw - ext4 /dev/sda2 rw\n");
        let (dev, disks) = sys.root_disks(&on_part).unwrap();
        assert_eq!(dev, Path::new("/dev/sda2"));
        assert_eq!(disks, ["sda", "sda2"].map(String::from).into());
        let on_dm = parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 0 254:0 / / rw - ext4 /dev/mapper/root rw\n",
        );
        let (dev, disks) = sys.root_disks(&on_dm).unwrap();
        assert_eq!(dev, Path::new("/dev/mapper/root"));
        assert_eq!(disks, ["dm-0", "sdb", "sdb1"].map(String::from).into());
        // Not on a block device (overlay, NFS): nothing to protect by disk.
        assert!(sys
            .root_disks(&parse_mountinfo("1 0 0:30 / / rw - overlay overlay rw\n"))
            .is_none());
        let sda = sys.block_dir(8, 0).unwrap();
        let parts: Vec<_> = partitions_of(&sda)
            .into_iter()
            .map(|(n, d, _)| (n, d))
            .collect();
        assert_eq!(
            parts,
            vec![("sda1".to_string(), (8, 1)), ("sda2".to_string(), (8, 2))]
        );
    }

    use crate::test_util::chain;

    #[test]
    fn open_errors_print_their_cause_once() {
        let t = tempfile::tempdir().unwrap();
        let e = inspect_target(&t.path().join("sdz")).unwrap_err();
        assert!(matches!(e, FlashError::Open { .. }), "{e}");
        let c = chain(&e);
        assert_eq!(c.matches("No such file").count(), 1, "{c}");
        assert!(c.contains("lsblk"), "{c}");
    }
}
