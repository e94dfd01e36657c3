//! A pc device made of files in one directory, for tests, fuzzing and
//! trying the update protocol on a workstation: `root-a` and `root-b` are
//! the slots, `esp/` holds the ESP's fixed-capacity boot files, `efivars/`
//! stands in for efivarfs and `perm/krazy` keeps the update state.
//! [`DirDevice::firmware_boot`] does what systemd-boot does at a reset.
//!
//! ```
//! use krazy_update::dirdevice::{DirDevice, DirSizes};
//! use krazy_update::{SecretKey, Slot};
//!
//! let tmp = tempfile::tempdir()?;
//! let d = DirDevice::create(tmp.path(), &DirSizes::small())?;
//! let running = d.firmware_boot()?;
//! let key = SecretKey::from_seed([1; 32]);
//! let device = d.open(running, "v1", key.public())?;
//! assert_eq!(device.features().running_slot, Slot::A);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use krazy_fs::FileDevice;

use crate::bootfiles::DirBootFiles;
use crate::bootflow::SystemdBoot;
use crate::device::{BootStorage, Device, DeviceConfig, Error, Storage};
use crate::efivars::{from_utf16, utf16_nul, EfiVarError, EfiVars, LOADER_GUID};
use crate::protocol::{Arch, Platform, PublicKey, Slot};

/// How large a [`DirDevice`]'s slots and boot files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirSizes {
    /// Each root slot.
    pub root: u64,
    /// Each slot's `vmlinuz` capacity.
    pub vmlinuz: u64,
    /// Each slot's `initrd` capacity.
    pub initrd: u64,
}

impl DirSizes {
    /// 4 MiB slots, a 256 KiB kernel and a 64 KiB initramfs.
    pub fn small() -> Self {
        DirSizes {
            root: 4 << 20,
            vmlinuz: 256 << 10,
            initrd: 64 << 10,
        }
    }
}

/// The size of `loader/loader.conf` on the ESP.
const LOADER_CONF_BYTES: usize = 512;
/// The size of each loader entry on the ESP.
const ENTRY_BYTES: usize = 1024;

/// Why a [`DirDevice`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DirDeviceError {
    /// A root slot file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The slot file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The update service refused to open.
    #[error(transparent)]
    Device(#[from] Error),
}

/// A pc device in a directory (see the module's documentation).
#[derive(Debug, Clone)]
pub struct DirDevice {
    dir: PathBuf,
}

impl DirDevice {
    /// Lays out a new device in `dir`: zeroed root slots (sparse), slot
    /// A's boot files holding a stand-in kernel, `loader.conf` defaulting
    /// to slot A, and an `efivars/` directory (an existing one is kept).
    pub fn create(dir: impl Into<PathBuf>, sizes: &DirSizes) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("efivars"))?;
        for s in ["root-a", "root-b"] {
            fs::File::create(dir.join(s))?.set_len(sizes.root)?;
        }
        let files: [(&str, u64, &[u8]); 7] = [
            (
                "loader/loader.conf",
                LOADER_CONF_BYTES as u64,
                b"default krazy-a.conf\ntimeout 0\n",
            ),
            (
                "loader/entries/krazy-a.conf",
                ENTRY_BYTES as u64,
                b"title a\n",
            ),
            (
                "loader/entries/krazy-b.conf",
                ENTRY_BYTES as u64,
                b"title b\n",
            ),
            ("krazy/a/vmlinuz", sizes.vmlinuz, b"MZ-a"),
            ("krazy/a/initrd", sizes.initrd, b""),
            ("krazy/b/vmlinuz", sizes.vmlinuz, b""),
            ("krazy/b/initrd", sizes.initrd, b""),
        ];
        for (f, cap, fill) in files {
            let path = dir.join("esp").join(f);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut b = fill.to_vec();
            let pad = if f.ends_with(".conf") { b' ' } else { 0 };
            b.resize(usize::try_from(cap).unwrap_or(usize::MAX), pad);
            fs::write(path, b)?;
        }
        Ok(DirDevice { dir })
    }

    /// A device laid out earlier in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        DirDevice { dir: dir.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What systemd-boot does at a reset: consumes `LoaderEntryOneShot` if
    /// set, else takes `loader.conf`'s default, records the choice in
    /// `LoaderEntrySelected` and returns the slot it boots (slot B only for
    /// `krazy-b.conf`; any other entry counts as slot A).
    pub fn firmware_boot(&self) -> Result<Slot, EfiVarError> {
        let vars = EfiVars::new(self.dir.join("efivars"));
        let one = vars.read("LoaderEntryOneShot", LOADER_GUID)?;
        vars.delete("LoaderEntryOneShot", LOADER_GUID)?;
        let conf = fs::read_to_string(self.dir.join("esp/loader/loader.conf")).unwrap_or_default();
        let default = conf
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("default")).then(|| w.next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        let id = one.and_then(|(_, d)| from_utf16(&d)).unwrap_or(default);
        vars.write("LoaderEntrySelected", LOADER_GUID, 6, &utf16_nul(&id))?;
        Ok(if id == SystemdBoot::entry_id(Slot::B) {
            Slot::B
        } else {
            Slot::A
        })
    }

    /// Opens the update service of this device running build `build_id`
    /// from `running`, trusting `public_key`, with a root version floor of 0.
    pub fn open(
        &self,
        running: Slot,
        build_id: &str,
        public_key: PublicKey,
    ) -> Result<Device, DirDeviceError> {
        self.open_with_floor(running, build_id, public_key, 0)
    }

    /// [`DirDevice::open`] with the running root's `min_version`.
    pub fn open_with_floor(
        &self,
        running: Slot,
        build_id: &str,
        public_key: PublicKey,
        min_version: u64,
    ) -> Result<Device, DirDeviceError> {
        let root = |n: &str| -> Result<Box<FileDevice>, DirDeviceError> {
            let path = self.dir.join(n);
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .and_then(FileDevice::whole)
                .map_err(|source| DirDeviceError::Open { path, source })?;
            Ok(Box::new(f))
        };
        Ok(Device::open(
            DeviceConfig {
                arch: Arch::X86_64,
                platform: Platform::Pc,
                build_id: build_id.into(),
                running,
                public_key,
                state_dir: self.dir.join("perm/krazy"),
                min_version,
            },
            Storage {
                root_a: root("root-a")?,
                root_b: root("root-b")?,
                boot: BootStorage::Esp(Box::new(DirBootFiles::new(self.dir.join("esp")))),
            },
            Box::new(SystemdBoot::new(
                Box::new(DirBootFiles::new(self.dir.join("esp"))),
                EfiVars::new(self.dir.join("efivars")),
            )),
        )?)
    }
}
