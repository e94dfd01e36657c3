//! The Raspberry Pi firmware's part of a boot, for QEMU's `raspi3b`.
//!
//! QEMU cannot run the Pi's GPU firmware (`bootcode.bin`, `start.elf`), so
//! the runner does its job before every boot: [`pi_boot`] reads the SD
//! image the way the firmware does and says what to pass to
//! `qemu-system-aarch64 -M raspi3b -kernel -dtb -initrd -append`:
//!
//! 1. Partition 1's `autoboot.txt` names the boot partition
//!    (`boot_partition=N`, from the `[tryboot]` section when the firmware's
//!    one-shot tryboot flag is set; without the file, partition 1 boots).
//! 2. That partition's `config.txt` names the kernel (`kernel=`, else
//!    `kernel8.img` with `arm_64bit=1`), the device tree (`device_tree=`) and
//!    the initramfs (`initramfs NAME followkernel`), and may name another
//!    command line file (`cmdline=`, else `cmdline.txt`).
//! 3. The command line is that file's first line.
//!
//! Conditional sections follow the firmware's rules for a Pi 3: `[all]`
//! always applies, `[pi3]` applies, `[tryboot]` applies only to a tryboot,
//! and any other filter (`[pi4]`, `[none]`, …) does not. See
//! <https://www.raspberrypi.com/documentation/computers/config_txt.html>
//! (sections "Boot Options", "Conditional Filters" and "autoboot.txt").
//!
//! The Pi 3's console UART is the mini UART (`ttyS1`, see
//! `board::pi3`), which QEMU's raspi3b connects to its *second* serial
//! port: the runner passes `-serial null -serial stdio` (checked here: the
//! kernel console and krazy-init's log arrive on stdio that way).
//!
//! A software one-shot (`PiSoftwareOneShot`, which rewrites `autoboot.txt`)
//! is fully visible here; the firmware's tryboot flag, which a kernel sets
//! with `reboot "0 tryboot"`, lives in the real firmware's mailbox and is
//! not: [`pi_boot`] takes it as an argument.

use std::fs::File;
use std::path::{Path, PathBuf};

use krazy_fs::fat::FatVolume;
use krazy_fs::FileDevice;

/// Why the image cannot be booted the way the Pi firmware would.
#[derive(Debug, thiserror::Error)]
pub enum PiBootError {
    /// The image's size is not a power of two, which QEMU's SD card needs.
    #[error("{} is {bytes} bytes: QEMU's raspi3b needs an SD image whose size is a power of two; build it with `krazy build --size 2G` (or 4G, 8G, …)", image.display())]
    ImageSize {
        /// The image.
        image: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The image, its MBR or a partition's FAT could not be read.
    #[error("reading {what} of {}: {reason}", image.display())]
    Read {
        /// The image.
        image: PathBuf,
        /// What was read (`the MBR`, `partition 2`).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A boot file does not say what the firmware needs.
    #[error("{file} on partition {partition} of {}: {reason}", image.display())]
    Config {
        /// The image.
        image: PathBuf,
        /// The partition.
        partition: u8,
        /// The file (`config.txt`, `autoboot.txt`).
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the firmware would boot, with the files copied out of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiBoot {
    /// The MBR partition number booted (2 for slot a, 3 for slot b).
    pub partition: u8,
    /// The kernel, copied into the runner's directory.
    pub kernel: PathBuf,
    /// The device tree.
    pub dtb: PathBuf,
    /// The initramfs, when `config.txt` names one.
    pub initrd: Option<PathBuf>,
    /// The command line, as the partition's command line file says.
    pub cmdline: String,
}

/// The settings of `config.txt` the runner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiConfig {
    /// `arm_64bit=1`.
    pub arm_64bit: bool,
    /// `kernel=`.
    pub kernel: Option<String>,
    /// `device_tree=`.
    pub device_tree: Option<String>,
    /// `initramfs NAME [followkernel|ADDRESS]`.
    pub initramfs: Option<String>,
    /// `cmdline=`.
    pub cmdline: Option<String>,
    /// `boot_partition=` (autoboot.txt).
    pub boot_partition: Option<u8>,
}

impl PiConfig {
    /// Parses `config.txt` (or `autoboot.txt`) as the firmware of a Pi 3
    /// would, with its tryboot flag `tryboot`. Unknown lines are ignored,
    /// as the firmware ignores them; the last value of a setting wins.
    pub fn parse(text: &str, tryboot: bool) -> PiConfig {
        let mut c = PiConfig::default();
        let mut applies = true;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(filter) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                applies = match filter.trim() {
                    "all" | "pi3" => true,
                    "tryboot" => tryboot,
                    _ => false,
                };
                continue;
            }
            if !applies {
                continue;
            }
            if let Some(rest) = line.strip_prefix("initramfs ") {
                c.initramfs = rest.split_whitespace().next().map(str::to_string);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "arm_64bit" => c.arm_64bit = v == "1",
                "kernel" => c.kernel = Some(v),
                "device_tree" => c.device_tree = Some(v),
                "cmdline" => c.cmdline = Some(v),
                "boot_partition" => c.boot_partition = v.parse().ok(),
                _ => {}
            }
        }
        c
    }
}

/// Reads `image` as the Pi firmware would (with the tryboot flag
/// `tryboot`), copies the kernel, device tree and initramfs into `dir` and
/// says how to boot them.
pub fn pi_boot(image: &Path, tryboot: bool, dir: &Path) -> Result<PiBoot, PiBootError> {
    let read_err = |what: &str, reason: String| PiBootError::Read {
        image: image.to_path_buf(),
        what: what.to_string(),
        reason,
    };
    let mut file = File::open(image).map_err(|e| read_err("the image", e.to_string()))?;
    let bytes = file
        .metadata()
        .map_err(|e| read_err("the image", e.to_string()))?
        .len();
    if !bytes.is_power_of_two() {
        return Err(PiBootError::ImageSize {
            image: image.to_path_buf(),
            bytes,
        });
    }
    let mbr =
        krazy_disk::read_mbr(&mut file, bytes).map_err(|e| read_err("the MBR", e.to_string()))?;
    let volume = |n: u8| -> Result<FatVolume<FileDevice>, PiBootError> {
        let what = format!("partition {n}");
        let e = mbr
            .entries
            .iter()
            .find(|e| e.index == n)
            .ok_or_else(|| read_err(&what, "the MBR has no such entry".into()))?;
        let f = file
            .try_clone()
            .map_err(|e| read_err(&what, e.to_string()))?;
        let dev = FileDevice::new(f, u64::from(e.first_lba) * 512, u64::from(e.sectors) * 512);
        FatVolume::open(dev).map_err(|e| read_err(&what, e.to_string()))
    };
    let text =
        |v: &mut FatVolume<FileDevice>, n: u8, name: &str| -> Result<Option<String>, PiBootError> {
            match v.lookup(name) {
                Err(_) => Ok(None),
                Ok(_) => v
                    .read_file(name)
                    .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
                    .map_err(|e| read_err(&format!("{name} on partition {n}"), e.to_string())),
            }
        };
    let mut first = volume(1)?;
    let partition = match text(&mut first, 1, "autoboot.txt")? {
        Some(t) => PiConfig::parse(&t, tryboot).boot_partition.unwrap_or(1),
        None => 1,
    };
    let mut boot = volume(partition)?;
    let config_err = |file: &str, reason: String| PiBootError::Config {
        image: image.to_path_buf(),
        partition,
        file: file.to_string(),
        reason,
    };
    let config = PiConfig::parse(
        &text(&mut boot, partition, "config.txt")?.unwrap_or_default(),
        tryboot,
    );
    if !config.arm_64bit {
        return Err(config_err(
            "config.txt",
            "it does not set arm_64bit=1, and the raspi3b runner boots 64-bit kernels only".into(),
        ));
    }
    let kernel = config
        .kernel
        .clone()
        .unwrap_or_else(|| "kernel8.img".into());
    let dtb = config.device_tree.clone().ok_or_else(|| {
        config_err(
            "config.txt",
            "it names no device_tree=, and the runner cannot guess one".into(),
        )
    })?;
    let mut copy = |name: &str| -> Result<PathBuf, PiBootError> {
        let bytes = boot
            .read_file(name)
            .map_err(|e| config_err(name, format!("named by config.txt but not readable: {e}")))?;
        let dest = dir.join(format!("p{partition}-{}", name.replace('/', "_")));
        std::fs::write(&dest, bytes)
            .map_err(|e| read_err(name, format!("copying to {}: {e}", dest.display())))?;
        Ok(dest)
    };
    let kernel = copy(&kernel)?;
    let dtb = copy(&dtb)?;
    let initrd = match &config.initramfs {
        Some(n) => Some(copy(n)?),
        None => None,
    };
    let cmdfile = config
        .cmdline
        .clone()
        .unwrap_or_else(|| "cmdline.txt".into());
    let cmdline = text(&mut boot, partition, &cmdfile)?
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default();
    Ok(PiBoot {
        partition,
        kernel,
        dtb,
        initrd,
        cmdline,
    })
}

impl PiBoot {
    /// `qemu-system-aarch64` arguments that boot this on the `raspi3b`
    /// machine (which has 1 GiB of memory and four cores, fixed): the SD
    /// card `image`, the files as `-kernel -dtb -initrd`, the command line
    /// plus `extra_cmdline` (the runner adds `krazy.watchdog=0`: raspi3b
    /// resets at once when the watchdog is opened), and the serial console
    /// on stdio through the second UART.
    pub fn raspi3b_args(&self, image: &Path, extra_cmdline: &str) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        for s in ["-M", "raspi3b", "-m", "1G", "-display", "none"] {
            a.push(s.into());
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        a.push("-dtb".into());
        a.push(self.dtb.clone().into());
        if let Some(i) = &self.initrd {
            a.push("-initrd".into());
            a.push(i.clone().into());
        }
        let mut cmdline = self.cmdline.clone();
        if !extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(extra_cmdline);
        }
        a.push("-append".into());
        a.push(cmdline.into());
        a.push("-drive".into());
        a.push(super::options::opt_with_path(
            "file=",
            image,
            ",if=sd,format=raw",
        ));
        for s in ["-serial", "null", "-serial", "stdio"] {
            a.push(s.into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raspi3b_arguments_boot_the_files_with_the_console_on_the_mini_uart() {
        let b = PiBoot {
            partition: 3,
            kernel: "/r/p3-kernel8.img".into(),
            dtb: "/r/p3-x.dtb".into(),
            initrd: Some("/r/p3-initrd".into()),
            cmdline: "root=PARTUUID=x krazy.slot=b".into(),
        };
        let a: Vec<String> = b
            .raspi3b_args(Path::new("/d/sd,1.img"), "krazy.watchdog=0")
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let after = |k: &str| a[a.iter().position(|x| x == k).unwrap() + 1].clone();
        assert_eq!(after("-M"), "raspi3b");
        assert_eq!(after("-kernel"), "/r/p3-kernel8.img");
        assert_eq!(after("-initrd"), "/r/p3-initrd");
        assert_eq!(
            after("-append"),
            "root=PARTUUID=x krazy.slot=b krazy.watchdog=0"
        );
        assert_eq!(after("-drive"), "file=/d/sd,,1.img,if=sd,format=raw");
        assert!(a.join(" ").ends_with("-serial null -serial stdio"), "{a:?}");
    }

    #[test]
    fn autoboot_picks_the_tryboot_section_only_with_the_flag() {
        let t = krazy_update::bootflow::PiTryboot::autoboot_txt(krazy_update::protocol::Slot::A);
        assert_eq!(PiConfig::parse(&t, false).boot_partition, Some(2));
        assert_eq!(PiConfig::parse(&t, true).boot_partition, Some(3));
        let t = krazy_update::bootflow::PiSoftwareOneShot::autoboot_txt(
            krazy_update::protocol::Slot::B,
            krazy_update::protocol::Slot::A,
        );
        assert_eq!(PiConfig::parse(&t, false).boot_partition, Some(3));
    }

    #[test]
    fn config_txt_follows_the_pi3_filters_and_the_last_value() {
        let c = PiConfig::parse(
            "arm_64bit=1\nkernel=a.img # comment\n[pi4]\nkernel=pi4.img\n[pi3]\ndevice_tree=x.dtb\n[none]\ninitramfs no\n[all]\ninitramfs initrd followkernel\nkernel=b.img\n",
            false,
        );
        assert!(c.arm_64bit);
        assert_eq!(c.kernel.as_deref(), Some("b.img"));
        assert_eq!(c.device_tree.as_deref(), Some("x.dtb"));
        assert_eq!(c.initramfs.as_deref(), Some("initrd"));
        let written = crate::board::pi3::pi3_config_txt(true, true);
        let c = PiConfig::parse(&written, false);
        assert_eq!(
            (c.arm_64bit, c.kernel.as_deref(), c.initramfs.as_deref()),
            (true, Some("kernel8.img"), Some("initrd"))
        );
    }

    #[test]
    fn a_size_that_is_not_a_power_of_two_names_the_size_flag() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("x.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        let e = pi_boot(&img, false, d.path()).unwrap_err();
        assert!(e.to_string().contains("--size"), "{e}");
    }
}
