//! The `pc` board: a GPT disk with an ESP holding systemd-boot and both
//! slots' kernels, initramfs and loader entries in fixed-capacity files, so
//! an update rewrites one slot's files in place (krazy-update's
//! `bootarchive` and `bootfiles`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use krazy_disk::{PartitionTable, Role};
use krazy_fs::fat::{Capacity, Pad};
use krazy_fs::Tree;
use krazy_update::bootarchive::{self, BootFile};
use krazy_update::protocol::Slot;

use super::{guid, slot_root, Board, QemuNeeds};
use crate::config::Platform;
use crate::firmware::Firmware;
use crate::image::{
    add_bytes, add_host, check_capacity, file_len, kernel_cmdline, BootTrees, ImageError,
    ImageFile, Inputs, Trees,
};
use crate::kernel::ModuleRequest;

/// The `pc` board.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pc;

/// Fixed capacities of the `pc` ESP's per-slot files. The defaults leave
/// room for kernels and initramfs several times the size of Debian's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcCapacities {
    /// `krazy/<slot>/vmlinuz`.
    pub vmlinuz: u64,
    /// `krazy/<slot>/initrd`.
    pub initrd: u64,
    /// `loader/entries/krazy-<slot>.conf`.
    pub entry: u64,
    /// `loader/loader.conf`.
    pub loader_conf: u64,
}

impl Default for PcCapacities {
    fn default() -> Self {
        PcCapacities {
            vmlinuz: 48 << 20,
            initrd: 32 << 20,
            entry: 1024,
            loader_conf: 512,
        }
    }
}

/// The `loader.conf` text committing `slot`.
pub fn loader_conf(slot: char) -> String {
    format!("default krazy-{slot}.conf\ntimeout 0\nconsole-mode keep\neditor no\n")
}

/// A loader entry for `slot` with `cmdline`.
pub fn loader_entry(
    hostname: &str,
    build: &str,
    slot: char,
    cmdline: &str,
    initrd: bool,
) -> String {
    let mut s = format!(
        "title krazy {hostname} (slot {slot})\nversion {build}\nlinux /krazy/{slot}/vmlinuz\n"
    );
    if initrd {
        s.push_str(&format!("initrd /krazy/{slot}/initrd\n"));
    }
    s.push_str(&format!("options {cmdline}\n"));
    s
}

/// One slot's ESP files, as a fresh image's ESP and an update's boot part
/// both hold them.
#[derive(Debug, Clone)]
pub struct SlotFiles {
    /// The kernel on the host (`krazy/<slot>/vmlinuz`).
    pub vmlinuz: PathBuf,
    /// The initramfs (`krazy/<slot>/initrd`), when there is one.
    pub initrd: Option<Vec<u8>>,
    /// The loader entry (`loader/entries/krazy-<slot>.conf`).
    pub entry: String,
}

/// The ESP files of `slot` for `inputs` laid out as `table`.
pub fn slot_files(
    inputs: &Inputs,
    table: &PartitionTable,
    slot: Slot,
    initramfs: Option<&[u8]>,
) -> SlotFiles {
    let (s, root) = slot_root(slot);
    let cmdline = kernel_cmdline(
        &inputs.config,
        guid(table, root),
        guid(table, Role::Perm),
        s,
    );
    SlotFiles {
        vmlinuz: inputs.kernel.vmlinuz.clone(),
        initrd: initramfs.map(<[u8]>::to_vec),
        entry: loader_entry(
            &inputs.config.hostname,
            &inputs.kernel.version,
            s,
            &cmdline,
            initramfs.is_some(),
        ),
    }
}

/// The ESP of a fresh image: systemd-boot, `loader.conf` committing slot A,
/// and both slots' [`SlotFiles`] in files of fixed capacity.
pub fn esp(
    inputs: &Inputs,
    table: &PartitionTable,
    initramfs: Option<&[u8]>,
    caps: &PcCapacities,
) -> Result<BootTrees, ImageError> {
    let Firmware::SystemdBoot { efi, .. } = &inputs.firmware else {
        return Err(ImageError::FirmwareMismatch {
            platform: Platform::Pc,
            needed: "systemd-boot (`[firmware] apt = \"systemd-boot-efi\"` or `file = ...`)",
        });
    };
    let m = inputs.mtime;
    let mut t = Tree::new();
    t.root_mut().mtime = m;
    let mut capacities = BTreeMap::new();
    add_host(&mut t, "ESP", "EFI/BOOT/BOOTX64.EFI", efi, 0o644, m)?;
    let conf = loader_conf('a');
    check_capacity("loader/loader.conf", conf.len() as u64, caps.loader_conf)?;
    add_bytes(&mut t, "ESP", "loader/loader.conf", conf, 0o644, m)?;
    capacities.insert(
        "loader/loader.conf".to_string(),
        Capacity::new(caps.loader_conf, Pad::Space),
    );
    let kernel_len = file_len(&inputs.kernel.vmlinuz)?;
    for slot in [Slot::A, Slot::B] {
        let files = slot_files(inputs, table, slot, initramfs);
        let ep = BootFile::Entry.esp_path(slot);
        check_capacity(&ep, files.entry.len() as u64, caps.entry)?;
        add_bytes(&mut t, "ESP", &ep, files.entry, 0o644, m)?;
        capacities.insert(ep, Capacity::new(caps.entry, Pad::Space));
        let kp = BootFile::Vmlinuz.esp_path(slot);
        check_capacity(&kp, kernel_len, caps.vmlinuz)?;
        add_host(&mut t, "ESP", &kp, &files.vmlinuz, 0o644, m)?;
        capacities.insert(kp, Capacity::new(caps.vmlinuz, Pad::Zero));
        // The initrd file exists even without an initramfs, so an update can add one.
        let ip = BootFile::Initrd.esp_path(slot);
        let bytes = files.initrd.unwrap_or_default();
        check_capacity(&ip, bytes.len() as u64, caps.initrd)?;
        add_bytes(&mut t, "ESP", &ip, bytes, 0o644, m)?;
        capacities.insert(ip, Capacity::new(caps.initrd, Pad::Zero));
    }
    Ok(BootTrees::Pc { esp: t, capacities })
}

impl Board for Pc {
    fn platform(&self) -> Platform {
        Platform::Pc
    }

    fn modules(&self) -> ModuleRequest {
        ModuleRequest::pc()
    }

    fn serial_console(&self) -> &'static str {
        "ttyS0,115200"
    }

    fn boot_trees(
        &self,
        inputs: &Inputs,
        table: &PartitionTable,
        initramfs: Option<&[u8]>,
    ) -> Result<BootTrees, ImageError> {
        esp(inputs, table, initramfs, &PcCapacities::default())
    }

    fn write_boot(&self, boot: &BootTrees, image: &ImageFile<'_>) -> Result<(), ImageError> {
        let BootTrees::Pc { esp, capacities } = boot else {
            return Err(ImageError::BoardMismatch(Platform::Pc));
        };
        let mut o = image.fat_options("KRAZY-ESP", Role::Esp);
        o.capacities = capacities.clone();
        let mut dev = image.partition(Role::Esp)?;
        krazy_fs::fat::write(&mut dev, esp, &o).map_err(|e| ImageError::FileSystem {
            part: "ESP",
            reason: e.to_string(),
        })?;
        Ok(())
    }

    fn update_boot_part(
        &self,
        inputs: &Inputs,
        trees: &Trees,
        slot: Slot,
        _protocol: u32,
    ) -> Result<Vec<u8>, ImageError> {
        let files = slot_files(inputs, &trees.table, slot, trees.initramfs.as_deref());
        let kernel = std::fs::read(&files.vmlinuz).map_err(|source| ImageError::Io {
            path: files.vmlinuz.clone(),
            source,
        })?;
        let mut list: Vec<(BootFile, &[u8])> = vec![(BootFile::Vmlinuz, &kernel)];
        if let Some(i) = &files.initrd {
            list.push((BootFile::Initrd, i));
        }
        list.push((BootFile::Entry, files.entry.as_bytes()));
        let mut out = Vec::new();
        bootarchive::write_archive(&mut out, &list).map_err(|e| ImageError::FileSystem {
            part: "boot part",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    fn qemu(&self) -> Result<QemuNeeds, &'static str> {
        Ok(QemuNeeds {
            system: "qemu-system-x86_64",
            machine: "pc",
            uefi: true,
        })
    }
}
