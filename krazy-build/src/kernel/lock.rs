//! `krazy.lock`: the pinned kernel and firmware packages ([`Lock`],
//! [`LockedPackage`]), read and written atomically, and the SHA-256 of a
//! file that pins them.

use super::{io_err, KernelError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The lock file's name beside `krazy.toml`.
pub const LOCK_FILE: &str = "krazy.lock";

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// One pinned package in `krazy.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// What krazy.toml asked for (an apt name, or a `.deb`/dir path).
    pub requested: String,
    /// The resolved package (`linux-image-6.1.0-56-cloud-amd64`); empty for a
    /// directory source.
    #[serde(default)]
    pub package: String,
    /// The package version (`6.1.192-2`); empty for a directory source.
    #[serde(default)]
    pub version: String,
    /// SHA-256 of the `.deb` (hex); empty for a directory source.
    #[serde(default)]
    pub deb_sha256: String,
    /// SHA-256 of the kernel image (hex), for kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmlinuz_sha256: Option<String>,
    /// The kernel release (`6.1.0-56-cloud-amd64`), for kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// `krazy.lock`: the exact kernel (and firmware package) later builds use
/// until `krazy lock --upgrade`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The pinned kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<LockedPackage>,
    /// The pinned firmware package (pc: systemd-boot-efi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<LockedPackage>,
}

impl Lock {
    /// The lock beside a `krazy.toml`.
    pub fn path_for(config_file: &Path) -> PathBuf {
        config_file.with_file_name(LOCK_FILE)
    }

    /// Reads a lock file; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Lock, KernelError> {
        match fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).map_err(|e| KernelError::BadLock {
                path: path.to_path_buf(),
                error: Box::new(e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Writes the lock atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), KernelError> {
        let werr = |error| KernelError::WriteLock {
            path: path.to_path_buf(),
            error,
        };
        let body = toml::to_string(self).map_err(|e| werr(io::Error::other(e)))?;
        let text = format!("# krazy.lock: the exact kernel and firmware this instance builds with.\n# Written by krazy; change it with `krazy lock --upgrade`.\n\n{body}");
        let tmp = path.with_extension("lock.tmp");
        fs::write(&tmp, text).map_err(werr)?;
        fs::rename(&tmp, path).map_err(werr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_roundtrip_and_missing_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LOCK_FILE);
        assert_eq!(Lock::read(&p).unwrap(), Lock::default());
        let l = Lock {
            kernel: Some(LockedPackage {
                requested: "linux-image-cloud-amd64".into(),
                package: "linux-image-6.1.0-56-cloud-amd64".into(),
                version: "6.1.192-2".into(),
                deb_sha256: "ab".repeat(32),
                vmlinuz_sha256: Some("cd".repeat(32)),
                release: Some("6.1.0-56-cloud-amd64".into()),
            }),
            firmware: None,
        };
        l.write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), l);
        fs::write(&p, "[kernel]\nbogus = 1\n").unwrap();
        assert!(matches!(Lock::read(&p), Err(KernelError::BadLock { .. })));
    }

    use crate::test_util::chain;

    #[test]
    fn io_and_lock_errors_print_their_cause_once() {
        let d = tempfile::tempdir().unwrap();
        let e = sha256_file(&d.path().join("nope.deb")).unwrap_err();
        assert!(matches!(e, KernelError::Io { .. }), "{e}");
        let c = chain(&e);
        assert_eq!(c.matches("No such file").count(), 1, "{c}");
        let p = d.path().join(LOCK_FILE);
        fs::write(&p, "[kernel]\nbogus = 1\n").unwrap();
        let e = Lock::read(&p).unwrap_err();
        let c = chain(&e);
        assert_eq!(c.matches("TOML parse error").count(), 1, "{c}");
        let apt = KernelError::from(crate::kernel::AptError::Command {
            command: "apt-cache show x".into(),
            detail: "E: No packages found".into(),
        });
        let c = chain(&apt);
        assert_eq!(c.matches("No packages found").count(), 1, "{c}");
    }
}
