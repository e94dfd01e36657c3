//! PID 1: stage 1 (initramfs) and stage 2 (the root file system).
//!
//! Every OS call goes through the [`Os`] trait, so the boot sequences are unit
//! tested with the recording [`Recorder`] and run for real with [`LinuxOs`].
//! Two steps need other krazy crates and are seams the lead wires:
//! [`Platform::find_partuuid`] (krazy-disk's `/sys/block` reader) and
//! [`Platform::format_ext4`] (krazy-fs's ext4 writer).

pub mod os;
pub mod stage1;
pub mod stage2;
pub mod update;

pub use os::{LinuxOs, Os, Recorder};

use std::path::{Path, PathBuf};

/// Errors of the boot stages.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    /// A mount failed.
    #[error("cannot mount {fstype} {source_dev} on {target}: {err}")]
    Mount {
        /// Source.
        source_dev: String,
        /// Mount point.
        target: String,
        /// File system type.
        fstype: String,
        /// Cause.
        err: std::io::Error,
    },
    /// Another OS call failed.
    #[error("{what}: {err}")]
    Os {
        /// What was attempted, naming the path.
        what: String,
        /// Cause.
        err: std::io::Error,
    },
    /// The kernel command line names no root partition.
    #[error("the kernel command line has no root=PARTUUID=...: {0:?}")]
    NoRoot(String),
    /// The root partition did not appear in time.
    #[error("partition PARTUUID={0} did not appear")]
    RootMissing(String),
    /// A hook that the image build must wire is missing.
    #[error("{0} is not wired in this build")]
    Unwired(&'static str),
    /// Formatting /perm failed.
    #[error("cannot format {device} as ext4: {msg}")]
    Format {
        /// The device.
        device: PathBuf,
        /// The cause.
        msg: String,
    },
}

/// Platform seams: the calls PID 1 needs from krazy-disk and krazy-fs.
pub trait Platform {
    /// The block device (e.g. `/dev/vda2`) of the partition with this PARTUUID, if present now.
    fn find_partuuid(&self, partuuid: &str) -> Option<PathBuf>;
    /// Writes an empty ext4 file system to `device`.
    fn format_ext4(&self, device: &Path) -> Result<(), Pid1Error>;
}

/// A platform that finds nothing and formats nothing (boot goes on without
/// /perm): for tests and for embedders without disks.
pub struct Unwired;

/// The real platform: partitions are found with krazy-disk's GPT reader over
/// `/sys/block` and `/dev`, and a blank /perm gets krazy-fs's ext4.
#[derive(Debug, Clone)]
pub struct LinuxPlatform {
    /// Where the kernel lists block devices (`/sys/block`).
    pub sys_block: PathBuf,
    /// Where their device nodes are (`/dev`).
    pub dev: PathBuf,
}

impl Default for LinuxPlatform {
    fn default() -> Self {
        Self {
            sys_block: PathBuf::from("/sys/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

impl Platform for LinuxPlatform {
    fn find_partuuid(&self, partuuid: &str) -> Option<PathBuf> {
        let guid: krazy_disk::Guid = match partuuid.parse() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("PARTUUID {partuuid:?} is not a GUID: {e}");
                return None;
            }
        };
        match krazy_disk::find_by_partuuid(&self.sys_block, &self.dev, guid) {
            Ok(found) => found.map(|f| f.device),
            Err(e) => {
                tracing::warn!("looking for PARTUUID {partuuid}: {e}");
                None
            }
        }
    }

    fn format_ext4(&self, device: &Path) -> Result<(), Pid1Error> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |err: std::io::Error| Pid1Error::Format {
            device: device.to_path_buf(),
            msg: err.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(io)?;
        // Seeking to the end gives the size of block devices and files alike.
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        let mut uuid = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut uuid))
            .map_err(io)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let opts = krazy_fs::ext4::Ext4Options::new(uuid, now).label("perm");
        let mut dev = krazy_fs::FileDevice::new(file, 0, len);
        krazy_fs::ext4::format(&mut dev, &opts).map_err(|e| Pid1Error::Format {
            device: device.to_path_buf(),
            msg: e.to_string(),
        })?;
        krazy_fs::BlockDevice::flush(&mut dev).map_err(io)
    }
}

impl Platform for Unwired {
    fn find_partuuid(&self, _partuuid: &str) -> Option<PathBuf> {
        None
    }
    fn format_ext4(&self, _device: &Path) -> Result<(), Pid1Error> {
        Err(Pid1Error::Unwired("formatting /perm (krazy-fs ext4)"))
    }
}

/// The value of `key=` on a kernel command line (the last one wins, as in the kernel).
///
/// ```
/// let c = "console=ttyS0 root=PARTUUID=1234-abcd ro krazy.perm=PARTUUID=5678";
/// assert_eq!(krazy_init::pid1::cmdline_value(c, "root"), Some("PARTUUID=1234-abcd"));
/// assert_eq!(krazy_init::pid1::cmdline_value(c, "quiet"), None);
/// ```
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The PARTUUID named by `key=PARTUUID=<uuid>`, lower-cased.
pub fn cmdline_partuuid(cmdline: &str, key: &str) -> Option<String> {
    let v = cmdline_value(cmdline, key)?;
    let u = v.strip_prefix("PARTUUID=")?;
    (!u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| u.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parsing() {
        let c =
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 root=PARTUUID=AbCd-01 panic=10 init=/krazy/init";
        assert_eq!(cmdline_partuuid(c, "root").as_deref(), Some("abcd-01"));
        assert_eq!(cmdline_partuuid("root=/dev/sda2", "root"), None);
        assert_eq!(cmdline_partuuid("root=PARTUUID=", "root"), None);
        assert_eq!(cmdline_partuuid("root=PARTUUID=zz;rm", "root"), None);
        assert_eq!(cmdline_partuuid("", "root"), None);
        assert_eq!(cmdline_value("a=1 a=2", "a"), Some("2"));
    }
}
