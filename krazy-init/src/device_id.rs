//! The per-device id: 128 random bits as 32 lowercase hex digits (the form
//! of `/etc/machine-id`), made on a device's first boot and kept in
//! `/perm/krazy/device-id`. One image flashed onto many devices gives each
//! its own id, since the id is made on the device, not in the image.
//!
//! Without a writable `/perm` (absent, or read-only with no id on it yet)
//! the id lives in `/run/krazy/device-id` for this boot only, with a warning.
//! A file that does not hold a well-formed id is replaced, with a warning.
//! Files are written atomically (a temporary file, fsync, rename) with mode
//! 0644.
//!
//! Making the id needs 16 bytes from the kernel's random generator, which
//! may block early in boot; [`DeviceId`] therefore makes it on first use,
//! and PID 1 asks for it only after the services were started, from a
//! blocking thread.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The id's file name inside its directory (`/perm/krazy`, `/run/krazy`).
pub const FILE_NAME: &str = "device-id";

/// Where the id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It was there already.
    Read,
    /// There was none: a new one was made.
    Created,
    /// The file held something else: a new one replaced it.
    Replaced,
}

/// Whether `s` is a device id: exactly 32 lowercase hex digits.
pub fn is_valid(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex form of 16 bytes.
pub fn to_hex(bytes: &[u8; 16]) -> String {
    hex::encode(bytes)
}

/// 16 bytes from the kernel's random generator (getrandom(2); waits until
/// the generator is initialised, so call it off the boot path).
pub fn random_bytes() -> std::io::Result<[u8; 16]> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        // SAFETY: the pointer and length describe `rest`, a live, writable
        // part of `buf`; getrandom(2) writes at most that many bytes.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf)
}

/// Reads the id in `dir`, or makes one with `random` and writes it
/// atomically (creating `dir`). A file that is not a well-formed id is
/// replaced with a warning.
pub fn load_or_create(
    dir: &Path,
    random: impl FnOnce() -> std::io::Result<[u8; 16]>,
) -> std::io::Result<(String, Origin)> {
    let path = dir.join(FILE_NAME);
    let origin = match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let id = text.trim_end_matches('\n');
            if is_valid(id) {
                return Ok((id.to_owned(), Origin::Read));
            }
            tracing::warn!(
                "{} does not hold a device id (32 lowercase hex digits): replacing it",
                path.display()
            );
            Origin::Replaced
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Origin::Created,
        Err(e) => return Err(e),
    };
    let id = to_hex(&random()?);
    write_atomically(dir, &path, format!("{id}\n").as_bytes())?;
    Ok((id, origin))
}

fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename itself reaches the disk with the directory.
    std::fs::File::open(dir)?.sync_all()
}

/// The device's id, made on first use: kept in `<perm>/krazy/device-id`,
/// else for this boot in `<run>/krazy/device-id` (see the module docs).
pub struct DeviceId {
    perm: Option<PathBuf>,
    run: PathBuf,
    id: OnceLock<Option<String>>,
}

impl DeviceId {
    /// The id of a device with `/perm` at `perm` (None: not mounted) and
    /// `/run` at `run`; nothing is read or made yet.
    pub fn new(perm: Option<PathBuf>, run: PathBuf) -> Self {
        DeviceId {
            perm,
            run,
            id: OnceLock::new(),
        }
    }

    /// The id if it was made already (never waits).
    pub fn get(&self) -> Option<&str> {
        self.id.get().and_then(|i| i.as_deref())
    }

    /// The id, read or made now (may wait for the kernel's random
    /// generator): None only when neither directory could hold it and no
    /// random bytes could be had.
    pub fn get_or_make(&self) -> Option<&str> {
        self.id.get_or_init(|| self.make(random_bytes)).as_deref()
    }

    fn make(&self, random: fn() -> std::io::Result<[u8; 16]>) -> Option<String> {
        if let Some(perm) = &self.perm {
            let dir = perm.join("krazy");
            match load_or_create(&dir, random) {
                Ok((id, origin)) => {
                    if origin != Origin::Read {
                        tracing::info!("made the device id {id} in {}", dir.display());
                    }
                    return Some(id);
                }
                Err(e) => tracing::warn!(
                    "cannot keep the device id in {}: {e}; using one for this boot only",
                    dir.display()
                ),
            }
        } else {
            tracing::warn!("no /perm: the device id lasts for this boot only");
        }
        let dir = self.run.join("krazy");
        match load_or_create(&dir, random) {
            Ok((id, _)) => Some(id),
            Err(e) => {
                tracing::warn!("cannot write the device id to {}: {e}", dir.display());
                match random() {
                    Ok(b) => Some(to_hex(&b)),
                    Err(e) => {
                        tracing::error!("no random bytes for the device id: {e}");
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn fixed() -> std::io::Result<[u8; 16]> {
        Ok([0xab; 16])
    }

    #[test]
    fn first_call_creates_second_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("krazy");
        let (id, origin) = load_or_create(&d, random_bytes).unwrap();
        assert_eq!(origin, Origin::Created);
        assert!(is_valid(&id), "{id}");
        let file = d.join(FILE_NAME);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{id}\n"));
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o644);
        assert!(!d.join(format!(".{FILE_NAME}.tmp")).exists());
        let (again, origin) =
            load_or_create(&d, || panic!("no random bytes needed to read")).unwrap();
        assert_eq!((again.as_str(), origin), (id.as_str(), Origin::Read));
        // Two devices (two /perm) get different ids.
        let other = tempfile::tempdir().unwrap();
        let (id2, _) = load_or_create(other.path(), random_bytes).unwrap();
        assert_ne!(id, id2);
    }

    #[test]
    fn a_corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            &b"not an id\n"[..],
            b"",
            b"ABABABABABABABABABABABABABABABAB\n",
            b"abababababababababababababababab0\n",
            b"\xff\xfe",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            let (id, origin) = load_or_create(dir.path(), fixed).unwrap();
            assert_eq!(origin, Origin::Replaced);
            assert_eq!(id, "ab".repeat(16));
            assert_eq!(
                std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
                format!("{id}\n")
            );
        }
        // Without the newline it is still read.
        std::fs::write(
            dir.path().join(FILE_NAME),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let (id, origin) = load_or_create(dir.path(), fixed).unwrap();
        assert_eq!(
            (id.as_str(), origin),
            ("0123456789abcdef0123456789abcdef", Origin::Read)
        );
    }

    #[test]
    fn without_perm_the_id_is_per_boot_in_run() {
        let run = tempfile::tempdir().unwrap();
        // /perm absent.
        let d = DeviceId::new(None, run.path().to_owned());
        assert_eq!(d.get(), None);
        let id = d.get_or_make().unwrap().to_owned();
        assert_eq!(d.get(), Some(id.as_str()));
        assert_eq!(
            std::fs::read_to_string(run.path().join("krazy").join(FILE_NAME)).unwrap(),
            format!("{id}\n")
        );
        // /perm present but unusable (a file where the directory should be).
        let perm = tempfile::tempdir().unwrap();
        std::fs::write(perm.path().join("krazy"), "").unwrap();
        let run2 = tempfile::tempdir().unwrap();
        let d = DeviceId::new(Some(perm.path().to_owned()), run2.path().to_owned());
        let id2 = d.get_or_make().unwrap();
        assert!(run2.path().join("krazy").join(FILE_NAME).exists());
        assert!(is_valid(id2));
        // A usable /perm keeps it.
        let perm = tempfile::tempdir().unwrap();
        let d = DeviceId::new(Some(perm.path().to_owned()), run2.path().to_owned());
        let id3 = d.get_or_make().unwrap().to_owned();
        let again = DeviceId::new(Some(perm.path().to_owned()), run2.path().to_owned());
        assert_eq!(again.get_or_make(), Some(id3.as_str()));
    }
}
