//! EFI variables through efivarfs (`/sys/firmware/efi/efivars`), the way
//! systemd-boot's one-shot entry is set from Linux.
//!
//! A variable is the file `<Name>-<vendor guid>`: 4 bytes of attributes
//! (little-endian) then the data. efivarfs marks every file immutable, so
//! overwriting or deleting first clears `FS_IMMUTABLE_FL` with the
//! `FS_IOC_SETFLAGS` ioctl (what `chattr -i` does); on ordinary file systems
//! used in tests that ioctl may be unsupported, which is tolerated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// systemd-boot's vendor GUID for its `Loader*` variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Non-volatile, boot-service and runtime access: the attributes a
/// `LoaderEntryOneShot` write needs (other combinations fail with EINVAL).
pub const ATTR_NV_BS_RT: u32 = 0x07;

const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// The largest variable read back (bytes).
const MAX_VAR_BYTES: u64 = 64 * 1024;

/// Errors of variable access, naming the variable's file.
#[derive(Debug, thiserror::Error)]
#[error("{action} the EFI variable {path} failed: {source}")]
pub struct EfiVarError {
    /// What was done.
    pub action: &'static str,
    /// The efivarfs file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// A directory of EFI variables (efivarfs, or a temp dir in tests).
#[derive(Debug, Clone)]
pub struct EfiVars {
    dir: PathBuf,
}

fn ioctl_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// Sets or clears the immutable flag of the open file `f`. Returns
/// `Ok(false)` when the file system does not support the flag ioctls
/// (ENOTTY/EOPNOTSUPP), so ordinary directories work in tests.
pub fn set_immutable(f: &File, immutable: bool) -> io::Result<bool> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points to a live local; the fd is open for the call's duration.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return if ioctl_unsupported(&e) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    let new = if immutable {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new == flags {
        return Ok(true);
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points to a live local; the fd is open for the call's duration.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &new) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return if ioctl_unsupported(&e) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(true)
}

/// The id as UTF-16LE with a NUL terminator (systemd-boot's string format).
pub fn utf16_nul(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// Decodes a UTF-16LE string, stopping at the first NUL; `None` for odd
/// lengths or invalid UTF-16.
pub fn from_utf16(b: &[u8]) -> Option<String> {
    if b.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

impl EfiVars {
    /// Variables in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EfiVars { dir: dir.into() }
    }

    /// The file of `name` under `guid`.
    pub fn path(&self, name: &str, guid: &str) -> PathBuf {
        self.dir.join(format!("{name}-{guid}"))
    }

    /// Reads a variable: its attributes and data, or `None` if absent.
    pub fn read(&self, name: &str, guid: &str) -> Result<Option<(u32, Vec<u8>)>, EfiVarError> {
        let path = self.path(name, guid);
        let err = |source| EfiVarError {
            action: "reading",
            path: path.clone(),
            source,
        };
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if len > MAX_VAR_BYTES {
            return Err(err(io::Error::new(io::ErrorKind::InvalidData, "too large")));
        }
        let b = fs::read(&path).map_err(err)?;
        match b.get(..4) {
            Some(a) if b.len() >= 4 => {
                let attrs = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
                Ok(Some((attrs, b[4..].to_vec())))
            }
            // An empty file is what a failed write leaves behind.
            _ => Ok(None),
        }
    }

    /// Deletes a variable if it exists, clearing the immutable flag first.
    pub fn delete(&self, name: &str, guid: &str) -> Result<(), EfiVarError> {
        remove(&self.path(name, guid))
    }

    /// Writes a variable in one `write` of attributes and data (efivarfs
    /// needs a single write), replacing any old value. A failed write's
    /// empty leftover file is removed.
    pub fn write(
        &self,
        name: &str,
        guid: &str,
        attrs: u32,
        data: &[u8],
    ) -> Result<(), EfiVarError> {
        let path = self.path(name, guid);
        remove(&path)?;
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&attrs.to_le_bytes());
        buf.extend_from_slice(data);
        let res = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&buf));
        if let Err(source) = res {
            let _ = remove(&path);
            return Err(EfiVarError {
                action: "writing",
                path,
                source,
            });
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<(), EfiVarError> {
    let err = |action, source| EfiVarError {
        action,
        path: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Ok(f) => {
            set_immutable(&f, false).map_err(|e| err("clearing the immutable flag of", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err("opening", e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("deleting", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_round_trip() {
        let b = utf16_nul("krazy-b.conf");
        assert_eq!(b.len(), 26);
        assert_eq!(&b[..4], &[b'k', 0, b'r', 0]);
        assert_eq!(&b[24..], &[0, 0]);
        assert_eq!(from_utf16(&b).as_deref(), Some("krazy-b.conf"));
        assert_eq!(from_utf16(&b[..3]), None);
    }

    #[test]
    fn write_replaces_and_delete_clears_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let v = EfiVars::new(dir.path());
        v.write("X", LOADER_GUID, 7, b"one").unwrap();
        let p = v.path("X", LOADER_GUID);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // Make it immutable as efivarfs does (needs root); if this file
        // system supports the flag, writing must then fail until cleared.
        if root {
            let f = File::open(&p).unwrap();
            if set_immutable(&f, true).unwrap() {
                assert!(OpenOptions::new().append(true).open(&p).is_err());
            }
        }
        v.write("X", LOADER_GUID, 7, b"two").unwrap();
        assert_eq!(
            v.read("X", LOADER_GUID).unwrap(),
            Some((7, b"two".to_vec()))
        );
        if root {
            set_immutable(&File::open(&p).unwrap(), true).unwrap();
        }
        v.delete("X", LOADER_GUID).unwrap();
        assert!(!p.exists());
        v.delete("X", LOADER_GUID).unwrap();
        assert_eq!(v.read("X", LOADER_GUID).unwrap(), None);
    }
}
