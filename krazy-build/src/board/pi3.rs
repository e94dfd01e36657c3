//! The `pi3` board (Raspberry Pi 3): an MBR disk whose first partition
//! holds the firmware's `bootcode.bin` and an `autoboot.txt` naming the
//! boot slot (`tryboot` for a trial), then one FAT boot partition per slot
//! with the firmware, kernel, device tree, `config.txt` and `cmdline.txt`.

use krazy_disk::{PartitionTable, Role};
use krazy_fs::Tree;
use krazy_update::bootpart::{self, VolumeIdentity};
use krazy_update::protocol::{Slot, PROTOCOL_V1};

use super::{guid, slot_root, Board, QemuNeeds};
use crate::config::Platform;
use crate::firmware::Firmware;
use crate::image::{
    add_bytes, add_host, kernel_cmdline, BootTrees, ImageError, ImageFile, Inputs, Trees,
};
use crate::kernel::ModuleRequest;

/// The `pi3` board.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pi3;

/// `config.txt` of a Pi 3 boot slot. Each line is documented in
/// <https://www.raspberrypi.com/documentation/computers/config_txt.html>:
/// `arm_64bit=1` ("Boot Options": start the ARM cores in 64-bit mode),
/// `kernel=` (the kernel image's file name), `device_tree=` (the device
/// tree blob to load), `initramfs NAME followkernel` (the initramfs, loaded
/// after the kernel), and with a serial console `enable_uart=1` ("Onboard
/// Analogue Audio"/"UART" section `enable_uart`: on the Pi 3 the primary
/// UART is the mini UART, whose clock this fixes so the console works).
pub fn pi3_config_txt(initrd: bool, serial: bool) -> String {
    let mut s = String::from(
        "# Written by krazy-build.\narm_64bit=1\nkernel=kernel8.img\ndevice_tree=bcm2837-rpi-3-b.dtb\n",
    );
    if initrd {
        s.push_str("initramfs initrd followkernel\n");
    }
    if serial {
        s.push_str("enable_uart=1\n");
    }
    s
}

/// The autoboot partition and both boot slots of a fresh image.
pub fn boot_trees(
    inputs: &Inputs,
    table: &PartitionTable,
    initramfs: Option<&[u8]>,
) -> Result<BootTrees, ImageError> {
    let Firmware::RaspberryPi { files } = &inputs.firmware else {
        return Err(ImageError::FirmwareMismatch {
            platform: Platform::Pi3,
            needed: "a Raspberry Pi firmware directory (`[firmware] dir = ...`)",
        });
    };
    let m = inputs.mtime;
    let dtb = crate::firmware::pi3_dtb(&inputs.kernel)?;
    let perm = guid(table, Role::Perm);
    let mut autoboot = Tree::new();
    autoboot.root_mut().mtime = m;
    for (name, host) in files {
        if name == "bootcode.bin" {
            add_host(&mut autoboot, "autoboot", name, host, 0o644, m)?;
        }
    }
    add_bytes(
        &mut autoboot,
        "autoboot",
        "autoboot.txt",
        krazy_update::bootflow::PiTryboot::autoboot_txt(Slot::A),
        0o644,
        m,
    )?;
    add_bytes(
        &mut autoboot,
        "autoboot",
        "config.txt",
        Vec::new(),
        0o644,
        m,
    )?;
    let serial = !inputs.config.serial_console().is_empty();
    let slot_tree = |slot: Slot| -> Result<Tree, ImageError> {
        let (slot, root) = slot_root(slot);
        let mut t = Tree::new();
        t.root_mut().mtime = m;
        let name = format!("boot-{slot}");
        for (fname, host) in files {
            if fname != "bootcode.bin" {
                add_host(&mut t, &name, fname, host, 0o644, m)?;
            }
        }
        add_host(
            &mut t,
            &name,
            "kernel8.img",
            &inputs.kernel.vmlinuz,
            0o644,
            m,
        )?;
        add_host(&mut t, &name, "bcm2837-rpi-3-b.dtb", &dtb, 0o644, m)?;
        if let Some(i) = initramfs {
            add_bytes(&mut t, &name, "initrd", i.to_vec(), 0o644, m)?;
        }
        add_bytes(
            &mut t,
            &name,
            "config.txt",
            pi3_config_txt(initramfs.is_some(), serial),
            0o644,
            m,
        )?;
        let cmdline = kernel_cmdline(&inputs.config, guid(table, root), perm, slot);
        add_bytes(
            &mut t,
            &name,
            "cmdline.txt",
            format!("{cmdline}\n"),
            0o644,
            m,
        )?;
        Ok(t)
    };
    Ok(BootTrees::Pi3 {
        autoboot,
        boot_a: slot_tree(Slot::A)?,
        boot_b: slot_tree(Slot::B)?,
    })
}

/// The identity a fresh image gives `slot`'s boot FAT: label
/// `KRAZY-A`/`KRAZY-B`, a volume id derived from the disk's MBR signature,
/// and the partition's start as hidden sectors. An update keeps what the
/// partition has ([`bootpart::install`]).
pub fn boot_identity(table: &PartitionTable, slot: Slot) -> VolumeIdentity {
    let role = boot_role(slot);
    let start = table
        .entry(role)
        .map(|e| e.partition.first_lba)
        .unwrap_or(0);
    VolumeIdentity::new(
        slot,
        table.mbr_signature() ^ (role as u32),
        u32::try_from(start).unwrap_or(0),
    )
}

/// The boot partition of `slot`.
pub fn boot_role(slot: Slot) -> Role {
    match slot {
        Slot::A => Role::BootA,
        Slot::B => Role::BootB,
    }
}

fn fat_err(part: &'static str) -> impl FnOnce(krazy_fs::fat::Error) -> ImageError {
    move |e| ImageError::FileSystem {
        part,
        reason: e.to_string(),
    }
}

impl Board for Pi3 {
    fn platform(&self) -> Platform {
        Platform::Pi3
    }

    fn modules(&self) -> ModuleRequest {
        ModuleRequest::pi3()
    }

    /// The mini UART on GPIO 14/15 (pins 8 and 10), which `enable_uart=1`
    /// turns on: Debian's mainline device tree names it `serial0`, and the
    /// 8250 driver calls it `ttyS1`. `ttyAMA0`, the PL011, drives the
    /// Bluetooth chip on a Pi 3. QEMU's raspi3b wires it to its second
    /// `-serial`.
    fn serial_console(&self) -> &'static str {
        "ttyS1,115200"
    }

    fn boot_trees(
        &self,
        inputs: &Inputs,
        table: &PartitionTable,
        initramfs: Option<&[u8]>,
    ) -> Result<BootTrees, ImageError> {
        boot_trees(inputs, table, initramfs)
    }

    fn write_boot(&self, boot: &BootTrees, image: &ImageFile<'_>) -> Result<(), ImageError> {
        let BootTrees::Pi3 {
            autoboot,
            boot_a,
            boot_b,
        } = boot
        else {
            return Err(ImageError::BoardMismatch(Platform::Pi3));
        };
        let mut dev = image.partition(Role::Autoboot)?;
        krazy_fs::fat::write(
            &mut dev,
            autoboot,
            &image.fat_options("KRAZY-AUTO", Role::Autoboot),
        )
        .map_err(fat_err("autoboot"))?;
        for (tree, slot, part) in [(boot_a, Slot::A, "boot-a"), (boot_b, Slot::B, "boot-b")] {
            let mut dev = image.partition(boot_role(slot))?;
            let id = boot_identity(image.table(), slot);
            bootpart::format(&mut dev, tree, &id, image.mtime(), true).map_err(fat_err(part))?;
        }
        Ok(())
    }

    fn update_boot_part(
        &self,
        inputs: &Inputs,
        trees: &Trees,
        slot: Slot,
        protocol: u32,
    ) -> Result<Vec<u8>, ImageError> {
        let BootTrees::Pi3 { boot_a, boot_b, .. } = &trees.boot else {
            return Err(ImageError::BoardMismatch(Platform::Pi3));
        };
        let tree = if slot == Slot::A { boot_a } else { boot_b };
        let part_err = |reason: String| ImageError::FileSystem {
            part: "boot part",
            reason,
        };
        if protocol != PROTOCOL_V1 {
            // Protocol 2 on: the files, which the device installs with
            // `bootpart::install` (the same `bootpart::format` as above).
            let mut out = Vec::new();
            bootpart::write_tree(&mut out, tree, inputs.mtime)
                .map_err(|e| part_err(e.to_string()))?;
            return Ok(out);
        }
        // Protocol 1: the whole partition image, as a fresh image has it.
        let p = trees
            .layout
            .partition(boot_role(slot))
            .ok_or_else(|| part_err("the layout has no boot partition".into()))?;
        let len = usize::try_from(p.size_bytes()).map_err(|e| part_err(e.to_string()))?;
        let mut dev = krazy_fs::MemDevice::zeroed(len);
        let id = boot_identity(&trees.table, slot);
        bootpart::format(&mut dev, tree, &id, inputs.mtime, true)
            .map_err(|e| part_err(e.to_string()))?;
        Ok(dev.into_vec())
    }

    fn qemu(&self) -> Result<QemuNeeds, &'static str> {
        Err("QEMU's raspi3b machine cannot run the Raspberry Pi firmware's boot of this image yet")
    }
}
