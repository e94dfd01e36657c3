//! Partition layouts per platform (ARCHITECTURE.md §3), computed from a disk
//! size.

use std::fmt;

use crate::guid::Guid;

/// Bytes per logical sector; krazy images always use 512.
pub const SECTOR: u64 = 512;
/// [`SECTOR`] as a buffer length.
pub const SECTOR_BYTES: usize = 512;
/// Every partition starts on a multiple of this (4 MiB), the first one at it.
pub const ALIGN: u64 = 4 << 20;
/// Sectors the GPT needs at the start of the disk (MBR, header, 32 sectors of entries).
pub const GPT_HEAD_SECTORS: u64 = 34;
/// Sectors the backup GPT needs at the end of the disk (32 of entries, header).
pub const GPT_TAIL_SECTORS: u64 = 33;

const MIB: u64 = 1 << 20;

/// The GPT type of an EFI system partition.
pub const TYPE_ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// The discoverable-partitions root type for x86-64.
pub const TYPE_ROOT_X86_64: Guid = Guid::from_u128(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709);
/// The discoverable-partitions root type for aarch64.
pub const TYPE_ROOT_AARCH64: Guid = Guid::from_u128(0xB921B045_1DF0_41C3_AF44_4C6F280D3FAE);
/// Microsoft basic data, the type of the FAT partitions on a Pi.
pub const TYPE_BASIC_DATA: Guid = Guid::from_u128(0xEBD0A0A2_B9E5_4433_87C0_68B6B72699C7);
/// Linux filesystem data, the type of `/perm`.
pub const TYPE_LINUX_DATA: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

pub use crate::platform::{Arch, Platform};

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The EFI system partition (PC): systemd-boot and both slots' kernels.
    Esp,
    /// The Pi's first FAT partition: bootcode.bin and autoboot.txt.
    Autoboot,
    /// The Pi's boot slot A (FAT: firmware, kernel, dtbs).
    BootA,
    /// The Pi's boot slot B.
    BootB,
    /// Root file system slot A (squashfs).
    RootA,
    /// Root file system slot B.
    RootB,
    /// `/perm`, the persistent ext4 that fills the rest of the disk.
    Perm,
}

impl Role {
    /// The GPT partition name krazy gives this role, also the tag from which
    /// its GUID is derived.
    pub fn name(self) -> &'static str {
        match self {
            Role::Esp => "esp",
            Role::Autoboot => "autoboot",
            Role::BootA => "boot-a",
            Role::BootB => "boot-b",
            Role::RootA => "root-a",
            Role::RootB => "root-b",
            Role::Perm => "perm",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Partition sizes in bytes; `/perm` takes whatever is left. Each size must
/// be a non-zero multiple of 512; every start is then rounded up to 4 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutOptions {
    /// ESP size (pc). Default 512 MiB.
    pub esp_bytes: u64,
    /// Autoboot FAT size (pi3). Default 8 MiB (a 1 MiB one did not boot a Pi 3).
    pub autoboot_bytes: u64,
    /// Size of each boot slot FAT (pi3). Default 128 MiB: firmware, a
    /// kernel, an initramfs, dtbs and overlays take about 40 MiB today, so
    /// this leaves room for a kernel three times as large.
    pub boot_bytes: u64,
    /// Size of each root slot. Default 512 MiB.
    pub root_bytes: u64,
    /// The smallest `/perm` accepted. Default 16 MiB (the smallest ext4 krazy formats).
    pub min_perm_bytes: u64,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            esp_bytes: 512 * MIB,
            autoboot_bytes: 8 * MIB,
            boot_bytes: 128 * MIB,
            root_bytes: 512 * MIB,
            min_perm_bytes: 16 * MIB,
        }
    }
}

impl LayoutOptions {
    /// Sets the ESP size.
    pub fn with_esp_bytes(mut self, bytes: u64) -> Self {
        self.esp_bytes = bytes;
        self
    }
    /// Sets the autoboot partition size.
    pub fn with_autoboot_bytes(mut self, bytes: u64) -> Self {
        self.autoboot_bytes = bytes;
        self
    }
    /// Sets the size of each boot slot.
    pub fn with_boot_bytes(mut self, bytes: u64) -> Self {
        self.boot_bytes = bytes;
        self
    }
    /// Sets the size of each root slot.
    pub fn with_root_bytes(mut self, bytes: u64) -> Self {
        self.root_bytes = bytes;
        self
    }
    /// Sets the smallest accepted `/perm`.
    pub fn with_min_perm_bytes(mut self, bytes: u64) -> Self {
        self.min_perm_bytes = bytes;
        self
    }
}

/// Why a layout cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The disk size is not a whole number of sectors.
    #[error("the disk size of {bytes} bytes is not a multiple of {SECTOR}")]
    DiskSizeNotSectorMultiple {
        /// The disk size given.
        bytes: u64,
    },
    /// A configured size is zero or not a whole number of sectors.
    #[error("the {role} partition size of {bytes} bytes is not a non-zero multiple of {SECTOR}")]
    BadPartitionSize {
        /// The partition.
        role: Role,
        /// The size given.
        bytes: u64,
    },
    /// The disk cannot hold the layout.
    #[error(
        "the disk of {available} bytes ({} MiB) is too small for the {platform} layout, \
         which needs at least {needed} bytes ({} MiB)",
        available / MIB, needed.div_ceil(MIB)
    )]
    DiskTooSmall {
        /// The platform whose layout was asked for.
        platform: Platform,
        /// The smallest disk that holds it, in bytes.
        needed: u64,
        /// The disk size given, in bytes.
        available: u64,
    },
    /// The platform does not run on the architecture.
    #[error("the {platform} platform does not run {arch} code")]
    ArchMismatch {
        /// The platform.
        platform: Platform,
        /// The architecture asked for.
        arch: Arch,
    },
}

/// One partition of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based GPT partition number (the `N` in `/dev/sdaN`).
    pub number: u32,
    /// What it is for.
    pub role: Role,
    /// Its GPT name (see [`Role::name`]).
    pub name: &'static str,
    /// Its GPT partition type.
    pub type_guid: Guid,
    /// Its first sector.
    pub first_lba: u64,
    /// Its size in sectors.
    pub sectors: u64,
}

impl Partition {
    /// Its last sector (inclusive, as GPT stores it).
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.sectors - 1
    }
    /// Its byte offset on the disk.
    pub fn start_bytes(&self) -> u64 {
        self.first_lba * SECTOR
    }
    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// The partitions of one disk for one platform, in partition-number order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    platform: Platform,
    arch: Arch,
    disk_bytes: u64,
    partitions: Vec<Partition>,
}

impl Layout {
    /// Computes the layout of `platform` on a disk of `disk_bytes`: the first
    /// partition at 4 MiB, every start rounded up to 4 MiB, `/perm` from its
    /// aligned start to the last usable sector before the backup GPT.
    pub fn new(
        platform: Platform,
        arch: Arch,
        disk_bytes: u64,
        opts: &LayoutOptions,
    ) -> Result<Layout, LayoutError> {
        if disk_bytes % SECTOR != 0 {
            return Err(LayoutError::DiskSizeNotSectorMultiple { bytes: disk_bytes });
        }
        if platform == Platform::Pi3 && arch != Arch::Aarch64 {
            return Err(LayoutError::ArchMismatch { platform, arch });
        }
        let root = arch.root_type();
        let fixed: Vec<(Role, Guid, u64)> = match platform {
            Platform::Pc => vec![
                (Role::Esp, TYPE_ESP, opts.esp_bytes),
                (Role::RootA, root, opts.root_bytes),
                (Role::RootB, root, opts.root_bytes),
            ],
            Platform::Pi3 => vec![
                (Role::Autoboot, TYPE_BASIC_DATA, opts.autoboot_bytes),
                (Role::BootA, TYPE_BASIC_DATA, opts.boot_bytes),
                (Role::BootB, TYPE_BASIC_DATA, opts.boot_bytes),
                (Role::RootA, root, opts.root_bytes),
                (Role::RootB, root, opts.root_bytes),
            ],
        };
        let check = |role, bytes: u64| {
            if bytes == 0 || bytes % SECTOR != 0 {
                Err(LayoutError::BadPartitionSize { role, bytes })
            } else {
                Ok(())
            }
        };
        check(Role::Perm, opts.min_perm_bytes)?;
        // Sizes are in bytes, so u128 keeps absurd options from overflowing.
        let align = |x: u128| x.div_ceil(u128::from(ALIGN)) * u128::from(ALIGN);
        let mut partitions = Vec::with_capacity(fixed.len() + 1);
        let mut next: u128 = u128::from(ALIGN);
        for (number, (role, type_guid, bytes)) in (1u32..).zip(fixed) {
            check(role, bytes)?;
            partitions.push((number, role, type_guid, next, u128::from(bytes)));
            next = align(next + u128::from(bytes));
        }
        let tail = GPT_TAIL_SECTORS * SECTOR; // the backup GPT; the last usable LBA is N-34
        let needed = next + u128::from(opts.min_perm_bytes) + u128::from(tail);
        if u128::from(disk_bytes) < needed {
            return Err(LayoutError::DiskTooSmall {
                platform,
                needed: u64::try_from(needed).unwrap_or(u64::MAX),
                available: disk_bytes,
            });
        }
        // Everything fits in disk_bytes now, so u64 arithmetic cannot overflow
        // and every start and size below fits a u64.
        let fit = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        let disk_sectors = disk_bytes / SECTOR;
        let last_usable = disk_sectors - GPT_TAIL_SECTORS - 1;
        let perm_first = fit(next) / SECTOR;
        let mut out: Vec<Partition> = partitions
            .into_iter()
            .map(|(number, role, type_guid, start, bytes)| Partition {
                number,
                role,
                name: role.name(),
                type_guid,
                first_lba: fit(start) / SECTOR,
                sectors: fit(bytes) / SECTOR,
            })
            .collect();
        let perm_number = (1u32..).nth(out.len()).unwrap_or(u32::MAX);
        out.push(Partition {
            number: perm_number,
            role: Role::Perm,
            name: Role::Perm.name(),
            type_guid: TYPE_LINUX_DATA,
            first_lba: perm_first,
            sectors: last_usable + 1 - perm_first,
        });
        Ok(Layout {
            platform,
            arch,
            disk_bytes,
            partitions: out,
        })
    }

    /// The platform this layout is for.
    pub fn platform(&self) -> Platform {
        self.platform
    }
    /// The architecture this layout is for.
    pub fn arch(&self) -> Arch {
        self.arch
    }
    /// The disk size in bytes.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }
    /// The disk size in sectors.
    pub fn disk_sectors(&self) -> u64 {
        self.disk_bytes / SECTOR
    }
    /// All partitions, in partition-number order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }
    /// The partition with `role`, if this platform has one.
    pub fn partition(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_defaults() {
        let l = Layout::new(
            Platform::Pc,
            Arch::X86_64,
            4 << 30,
            &LayoutOptions::default(),
        )
        .unwrap();
        let got: Vec<(u32, Role, u64, u64)> = l
            .partitions()
            .iter()
            .map(|p| (p.number, p.role, p.first_lba, p.sectors))
            .collect();
        let n = (4u64 << 30) / 512;
        let first_perm = (4 + 3 * 512) * 2048;
        assert_eq!(
            got,
            vec![
                (1, Role::Esp, 8192, 512 * 2048),
                (2, Role::RootA, (4 + 512) * 2048, 512 * 2048),
                (3, Role::RootB, (4 + 1024) * 2048, 512 * 2048),
                (4, Role::Perm, first_perm, n - 34 + 1 - first_perm),
            ]
        );
        assert_eq!(
            l.partition(Role::RootA).unwrap().type_guid,
            TYPE_ROOT_X86_64
        );
        assert_eq!(l.partition(Role::Perm).unwrap().last_lba(), n - 34);
    }

    #[test]
    fn pi3_defaults_and_unaligned_sizes() {
        let opts = LayoutOptions::default().with_boot_bytes(100 * MIB + 512);
        let l = Layout::new(Platform::Pi3, Arch::Aarch64, 2 << 30, &opts).unwrap();
        let roles: Vec<Role> = l.partitions().iter().map(|p| p.role).collect();
        assert_eq!(
            roles,
            [
                Role::Autoboot,
                Role::BootA,
                Role::BootB,
                Role::RootA,
                Role::RootB,
                Role::Perm
            ]
        );
        for w in l.partitions().windows(2) {
            assert!(w[0].last_lba() < w[1].first_lba);
        }
        for p in l.partitions() {
            assert_eq!(p.start_bytes() % ALIGN, 0, "{p:?}");
        }
        assert_eq!(
            l.partition(Role::BootA).unwrap().size_bytes(),
            100 * MIB + 512
        );
        assert_eq!(l.partition(Role::BootB).unwrap().start_bytes(), 116 * MIB);
    }

    #[test]
    fn too_small_names_sizes() {
        let needed = (4 + 3 * 512 + 16) * MIB + 33 * 512;
        let err = Layout::new(
            Platform::Pc,
            Arch::X86_64,
            needed - 512,
            &LayoutOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            LayoutError::DiskTooSmall {
                platform: Platform::Pc,
                needed,
                available: needed - 512
            }
        );
        assert!(err.to_string().contains("needs at least"), "{err}");
        Layout::new(
            Platform::Pc,
            Arch::X86_64,
            needed,
            &LayoutOptions::default(),
        )
        .unwrap();
    }

    #[test]
    fn bad_inputs() {
        let o = LayoutOptions::default();
        assert!(matches!(
            Layout::new(Platform::Pc, Arch::X86_64, 1000, &o),
            Err(LayoutError::DiskSizeNotSectorMultiple { .. })
        ));
        assert!(matches!(
            Layout::new(Platform::Pi3, Arch::X86_64, 4 << 30, &o),
            Err(LayoutError::ArchMismatch { .. })
        ));
        assert!(matches!(
            Layout::new(
                Platform::Pc,
                Arch::X86_64,
                4 << 30,
                &o.clone().with_root_bytes(0)
            ),
            Err(LayoutError::BadPartitionSize {
                role: Role::RootA,
                ..
            })
        ));
        let huge = o.with_root_bytes(u64::MAX - 511);
        assert!(matches!(
            Layout::new(Platform::Pc, Arch::X86_64, 4 << 30, &huge),
            Err(LayoutError::DiskTooSmall { .. })
        ));
    }
}
