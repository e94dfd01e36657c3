//! Everything that differs by board on the build host, behind one trait.
//!
//! A [`Board`] owns the disk layout and architecture, the kernel modules the
//! image needs, the boot trees, the boot file system writer, an update's
//! boot part and what the QEMU runner needs. [`crate::image`] and
//! [`crate::update`] ask the board and never match on the platform
//! themselves, so a fresh image's boot partition and the boot files an
//! update writes come from the same functions.
//!
//! ```
//! use krazy_build::board;
//! use krazy_build::config::Platform;
//!
//! let pi3 = board::for_platform(Platform::Pi3);
//! assert_eq!(pi3.serial_console(), "ttyS1,115200");
//! let layout = pi3.layout(2 << 30, &Default::default())?;
//! assert_eq!(layout.arch(), krazy_build::config::Arch::Aarch64);
//! # Ok::<(), krazy_build::image::ImageError>(())
//! ```
//!
//! Adding a board means one file per layer: its layout in `krazy-disk`
//! (`layout.rs`, with a [`Platform`] variant), its `BootFlow` in
//! `krazy-update` (how the device tries, commits and rolls back), a file
//! here implementing [`Board`], and a match arm in [`for_platform`] and in
//! the config's firmware defaults.

pub mod pc;
pub mod pi3;

use krazy_disk::{Layout, LayoutOptions, PartitionTable};
use krazy_update::protocol::Slot;

use crate::config::Platform;
use crate::image::{BootTrees, ImageError, ImageFile, Inputs, Trees};
use crate::kernel::ModuleRequest;

/// What the QEMU runner needs to boot a board's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuNeeds {
    /// The QEMU system emulator (`qemu-system-x86_64`).
    pub system: &'static str,
    /// The machine type (`pc`).
    pub machine: &'static str,
    /// Boots through UEFI firmware (OVMF) from the disk's ESP.
    pub uefi: bool,
}

/// The host side of one board.
pub trait Board: Send + Sync + std::fmt::Debug {
    /// The platform this board builds for.
    fn platform(&self) -> Platform;

    /// The disk layout for a disk of `disk_bytes` (and with it the
    /// architecture, [`Layout::arch`]).
    fn layout(&self, disk_bytes: u64, opts: &LayoutOptions) -> Result<Layout, ImageError> {
        let p = self.platform();
        Ok(Layout::new(p, p.arch(), disk_bytes, opts)?)
    }

    /// The kernel modules stage 1 must load to reach the root.
    fn modules(&self) -> ModuleRequest;

    /// The default serial console (`console=` argument).
    fn serial_console(&self) -> &'static str;

    /// The boot trees of an image laid out as `table`, with the initramfs
    /// when there is one.
    fn boot_trees(
        &self,
        inputs: &Inputs,
        table: &PartitionTable,
        initramfs: Option<&[u8]>,
    ) -> Result<BootTrees, ImageError>;

    /// Writes the boot trees' file systems into a new (zeroed) image.
    fn write_boot(&self, boot: &BootTrees, image: &ImageFile<'_>) -> Result<(), ImageError>;

    /// The boot part of an update of `trees` into `slot`, in the format of
    /// update protocol `protocol`.
    fn update_boot_part(
        &self,
        inputs: &Inputs,
        trees: &Trees,
        slot: Slot,
        protocol: u32,
    ) -> Result<Vec<u8>, ImageError>;

    /// What QEMU needs to boot the image, or why this board cannot be
    /// booted under QEMU yet.
    fn qemu(&self) -> Result<QemuNeeds, &'static str>;
}

/// The board of `platform`.
pub fn for_platform(platform: Platform) -> &'static dyn Board {
    match platform {
        Platform::Pc => &pc::Pc,
        Platform::Pi3 => &pi3::Pi3,
    }
}

/// The GUID of `role`'s partition in `table` (nil when the layout lacks it).
pub(crate) fn guid(table: &PartitionTable, role: krazy_disk::Role) -> krazy_disk::Guid {
    table.entry(role).map(|e| e.guid).unwrap_or_default()
}

/// The `(a|b, root role)` of `slot`.
pub(crate) fn slot_root(slot: Slot) -> (char, krazy_disk::Role) {
    match slot {
        Slot::A => ('a', krazy_disk::Role::RootA),
        Slot::B => ('b', krazy_disk::Role::RootB),
    }
}
