//! The platform seam of trial boots: which slot is committed, arm a one-time
//! trial of the other, know whether this boot is a trial, commit.
//!
//! - [`SystemdBoot`] (pc): per-slot entries `krazy-a.conf`/`krazy-b.conf`;
//!   the trial is systemd-boot's `LoaderEntryOneShot` EFI variable, which
//!   systemd-boot deletes before starting the entry, so any reset during a
//!   trial boots `loader.conf`'s default again. Commit rewrites the default
//!   in `loader/loader.conf` in place and makes sure `LoaderEntryDefault`
//!   (which would override it) is absent.
//! - [`PiTryboot`] (pi3, kernels that can set the firmware's tryboot flag):
//!   `autoboot.txt` with `tryboot_a_b=1`, the committed slot's partition in
//!   `[all]` and the other in `[tryboot]`; the trial is `reboot(2)` with the
//!   argument `"0 tryboot"`. Commit swaps the two partitions.
//! - [`PiSoftwareOneShot`] (pi3, kernels that cannot): the switch points
//!   `autoboot.txt` at the new slot and records the committed one in a
//!   comment; the new slot's stage 1 ([`BootFlow::on_boot`]) points it back
//!   first, so only a commit makes it stick. **Limit:** a kernel that
//!   panics (or hangs) before stage 1 runs is booted again and again; only
//!   rewriting the SD card recovers it.

use std::io;

use crate::bootfiles::BootFiles;
use crate::efivars::{from_utf16, utf16_nul, EfiVarError, EfiVars, ATTR_NV_BS_RT, LOADER_GUID};
use crate::protocol::Slot;

/// The largest config file read (bytes).
const MAX_CONFIG: u64 = 64 * 1024;

/// Why a boot flow could not read or write its state.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Reading or rewriting a boot file failed.
    #[error("{action} {path:?} on the boot volume failed: {source}")]
    File {
        /// What was done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// A boot file does not say what it must.
    #[error("{path:?} on the boot volume is not understood: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An EFI variable could not be written.
    #[error(transparent)]
    Efi(#[from] EfiVarError),
}

/// One platform's way to try, commit and fall back (STYLE §8).
pub trait BootFlow {
    /// A short name (`systemd-boot`, `pi-tryboot`, `pi-software-one-shot`).
    fn name(&self) -> &'static str;

    /// The committed slot: the one any reset boots.
    fn committed(&mut self) -> Result<Slot, FlowError>;

    /// Arms a one-time trial boot of `slot` for the next reboot. Returns the
    /// `reboot(2)` argument that reboot must pass, if any.
    fn try_next(&mut self, slot: Slot) -> Result<Option<String>, FlowError>;

    /// Cancels an armed trial (mark bad before it ran).
    fn cancel_trial(&mut self) -> Result<(), FlowError>;

    /// Makes `slot` (not the committed one) unbootable by this flow's
    /// configuration before the first byte of an update is written into
    /// it: no one-shot, tryboot or default names it. (pc: the device also
    /// blanks the slot's loader entry, which lives with the boot files.)
    fn disarm(&mut self, slot: Slot) -> Result<(), FlowError>;

    /// Every slot a reset could start without a further write by us: what
    /// "bootable" means for this flow (see the module docs).
    fn bootable(&mut self) -> Result<Vec<Slot>, FlowError>;

    /// Whether the running boot (from `running`) is an uncommitted trial.
    fn is_trial(&mut self, running: Slot) -> Result<bool, FlowError> {
        Ok(running != self.committed()?)
    }

    /// Called first thing in every boot (stage 1): the software one-shot
    /// points the boot config back at the committed slot here.
    fn on_boot(&mut self, _running: Slot) -> Result<(), FlowError> {
        Ok(())
    }

    /// Makes `slot` the committed slot (mark good).
    fn commit(&mut self, slot: Slot) -> Result<(), FlowError>;
}

fn read_text(files: &mut dyn BootFiles, path: &str) -> Result<String, FlowError> {
    let b = files
        .read(path, MAX_CONFIG)
        .map_err(|source| FlowError::File {
            action: "reading",
            path: path.into(),
            source,
        })?;
    String::from_utf8(b).map_err(|_| FlowError::Parse {
        path: path.into(),
        reason: "not UTF-8".into(),
    })
}

fn rewrite(files: &mut dyn BootFiles, path: &str, text: &str) -> Result<(), FlowError> {
    files
        .overwrite(path, text.as_bytes(), b' ')
        .map_err(|source| FlowError::File {
            action: "rewriting",
            path: path.into(),
            source,
        })
}

/// systemd-boot on a UEFI PC, selecting slots by loader entry.
pub struct SystemdBoot {
    esp: Box<dyn BootFiles + Send>,
    vars: EfiVars,
}

impl std::fmt::Debug for SystemdBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemdBoot")
            .field("vars", &self.vars)
            .finish()
    }
}

/// `loader/loader.conf` on the ESP.
pub const LOADER_CONF: &str = "loader/loader.conf";

/// The loader entry of `slot` on the ESP (`loader/entries/krazy-<slot>.conf`).
pub fn entry_path(slot: Slot) -> String {
    format!("loader/entries/{}", SystemdBoot::entry_id(slot))
}

/// Whether systemd-boot would list a loader entry of these bytes: it has a
/// `linux`, `efi` or `uki` line (a blanked entry has none).
pub fn entry_is_bootable(text: &[u8]) -> bool {
    String::from_utf8_lossy(text).lines().any(|l| {
        matches!(
            l.split_whitespace().next(),
            Some("linux" | "efi" | "uki" | "uki-url")
        )
    })
}

/// What a disarmed slot's loader entry says (padded with spaces).
pub fn blank_entry(slot: Slot) -> String {
    format!("# krazy: slot {slot} is being updated and is not bootable until the update is verified and armed\n")
}

impl SystemdBoot {
    /// The flow over the ESP's files and the EFI variables in `vars`
    /// (`/sys/firmware/efi/efivars` on a device).
    pub fn new(esp: Box<dyn BootFiles + Send>, vars: EfiVars) -> Self {
        SystemdBoot { esp, vars }
    }

    /// The loader entry id of `slot`.
    pub fn entry_id(slot: Slot) -> String {
        format!("krazy-{slot}.conf")
    }

    fn slot_of_entry(id: &str) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|&s| Self::entry_id(s) == id)
    }

    /// The slot systemd-boot started this boot (`LoaderEntrySelected`), if
    /// the variable is there and names one of ours.
    pub fn selected(&mut self) -> Result<Option<Slot>, FlowError> {
        Ok(self
            .vars
            .read("LoaderEntrySelected", LOADER_GUID)?
            .and_then(|(_, d)| from_utf16(&d))
            .and_then(|id| Self::slot_of_entry(&id)))
    }

    /// The one-shot entry armed for the next boot, if any.
    pub fn one_shot(&mut self) -> Result<Option<Slot>, FlowError> {
        Ok(self
            .vars
            .read("LoaderEntryOneShot", LOADER_GUID)?
            .and_then(|(_, d)| from_utf16(&d))
            .and_then(|id| Self::slot_of_entry(&id)))
    }
}

impl BootFlow for SystemdBoot {
    fn name(&self) -> &'static str {
        "systemd-boot"
    }

    fn committed(&mut self) -> Result<Slot, FlowError> {
        let text = read_text(&mut *self.esp, LOADER_CONF)?;
        let default = text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("default")).then(|| w.next().unwrap_or(""))
        });
        match default.and_then(Self::slot_of_entry) {
            Some(s) => Ok(s),
            None => Err(FlowError::Parse {
                path: LOADER_CONF.into(),
                reason: format!("its default is {default:?}, not krazy-a.conf or krazy-b.conf"),
            }),
        }
    }

    fn try_next(&mut self, slot: Slot) -> Result<Option<String>, FlowError> {
        self.vars.write(
            "LoaderEntryOneShot",
            LOADER_GUID,
            ATTR_NV_BS_RT,
            &utf16_nul(&Self::entry_id(slot)),
        )?;
        Ok(None)
    }

    fn cancel_trial(&mut self) -> Result<(), FlowError> {
        Ok(self.vars.delete("LoaderEntryOneShot", LOADER_GUID)?)
    }

    fn disarm(&mut self, slot: Slot) -> Result<(), FlowError> {
        let id = Self::entry_id(slot);
        for var in ["LoaderEntryOneShot", "LoaderEntryDefault"] {
            let names = self
                .vars
                .read(var, LOADER_GUID)?
                .and_then(|(_, d)| from_utf16(&d));
            // Any value other than the committed entry could start something
            // we did not verify: remove it.
            if names.is_some_and(|n| n == id || Self::slot_of_entry(&n).is_none()) {
                self.vars.delete(var, LOADER_GUID)?;
            }
        }
        Ok(())
    }

    fn bootable(&mut self) -> Result<Vec<Slot>, FlowError> {
        let mut out = Vec::new();
        let mut add = |s: Slot| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        if let Ok(s) = self.committed() {
            add(s);
        }
        for var in ["LoaderEntryOneShot", "LoaderEntryDefault"] {
            if let Some(s) = self
                .vars
                .read(var, LOADER_GUID)?
                .and_then(|(_, d)| from_utf16(&d))
                .and_then(|id| Self::slot_of_entry(&id))
            {
                add(s);
            }
        }
        // systemd-boot's menu lists every entry with a kernel or EFI image.
        for s in [Slot::A, Slot::B] {
            let path = entry_path(s);
            let text = self.esp.read(&path, MAX_CONFIG).unwrap_or_default();
            if entry_is_bootable(&text) {
                add(s);
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_trial(&mut self, running: Slot) -> Result<bool, FlowError> {
        let committed = self.committed()?;
        // LoaderEntrySelected is what systemd-boot started; fall back to the
        // running root when it is absent (another boot loader, tests).
        let selected = self.selected()?.unwrap_or(running);
        Ok(selected != committed)
    }

    fn commit(&mut self, slot: Slot) -> Result<(), FlowError> {
        let text = read_text(&mut *self.esp, LOADER_CONF)?;
        let mut out = format!("default {}\n", Self::entry_id(slot));
        for l in text.lines() {
            let t = l.trim();
            if t.is_empty() || t.split_whitespace().next() == Some("default") {
                continue;
            }
            out.push_str(t);
            out.push('\n');
        }
        rewrite(&mut *self.esp, LOADER_CONF, &out)?;
        self.vars.delete("LoaderEntryDefault", LOADER_GUID)?;
        self.vars.delete("LoaderEntryOneShot", LOADER_GUID)?;
        Ok(())
    }
}

/// `autoboot.txt` on the Pi's first partition.
pub const AUTOBOOT_TXT: &str = "autoboot.txt";

/// The MBR partition number of `slot`'s boot partition on pi3.
pub fn pi_boot_partition(slot: Slot) -> u8 {
    match slot {
        Slot::A => 2,
        Slot::B => 3,
    }
}

fn pi_slot(part: &str) -> Option<Slot> {
    match part.trim() {
        "2" => Some(Slot::A),
        "3" => Some(Slot::B),
        _ => None,
    }
}

/// The `boot_partition` values of autoboot.txt per section, and the
/// `# krazy committed=` comment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Autoboot {
    all: Option<Slot>,
    tryboot: Option<Slot>,
    tryboot_a_b: bool,
    committed_comment: Option<Slot>,
}

fn parse_autoboot(text: &str) -> Autoboot {
    let mut a = Autoboot::default();
    let mut section = String::from("all");
    for l in text.lines() {
        let l = l.trim();
        if let Some(c) = l.strip_prefix("# krazy committed=") {
            a.committed_comment = pi_slot(c);
        } else if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some(v) = l.strip_prefix("boot_partition=") {
            match section.as_str() {
                "all" => a.all = pi_slot(v),
                "tryboot" => a.tryboot = pi_slot(v),
                _ => {}
            }
        } else if l == "tryboot_a_b=1" && section == "all" {
            a.tryboot_a_b = true;
        }
    }
    a
}

/// The Raspberry Pi firmware's tryboot with `tryboot_a_b=1`.
pub struct PiTryboot {
    files: Box<dyn BootFiles + Send>,
}

impl std::fmt::Debug for PiTryboot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiTryboot")
    }
}

impl PiTryboot {
    /// The flow over the autoboot partition's files.
    pub fn new(files: Box<dyn BootFiles + Send>) -> Self {
        PiTryboot { files }
    }

    /// autoboot.txt committing `slot` and trying the other.
    pub fn autoboot_txt(committed: Slot) -> String {
        format!(
            "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
            pi_boot_partition(committed),
            pi_boot_partition(committed.other())
        )
    }

    /// autoboot.txt that boots `committed` whether or not the tryboot flag
    /// is set: what the device writes before updating the other slot.
    pub fn autoboot_txt_disarmed(committed: Slot) -> String {
        format!(
            "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
            pi_boot_partition(committed),
            pi_boot_partition(committed)
        )
    }
}

impl BootFlow for PiTryboot {
    fn name(&self) -> &'static str {
        "pi-tryboot"
    }

    fn committed(&mut self) -> Result<Slot, FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        a.all.ok_or_else(|| FlowError::Parse {
            path: AUTOBOOT_TXT.into(),
            reason: "no boot_partition=2 or 3 in its [all] section".into(),
        })
    }

    fn try_next(&mut self, slot: Slot) -> Result<Option<String>, FlowError> {
        let committed = self.committed()?;
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        if slot == committed {
            return Err(FlowError::Parse {
                path: AUTOBOOT_TXT.into(),
                reason: format!("slot {slot} is already committed; nothing to try"),
            });
        }
        if !a.tryboot_a_b || a.tryboot != Some(slot) {
            rewrite(
                &mut *self.files,
                AUTOBOOT_TXT,
                &Self::autoboot_txt(committed),
            )?;
        }
        // The firmware's one-shot flag is set by the reboot itself.
        Ok(Some("0 tryboot".into()))
    }

    fn cancel_trial(&mut self) -> Result<(), FlowError> {
        let committed = self.committed()?;
        self.disarm(committed.other())
    }

    fn disarm(&mut self, _slot: Slot) -> Result<(), FlowError> {
        let committed = self.committed()?;
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        if a.tryboot != Some(committed) {
            rewrite(
                &mut *self.files,
                AUTOBOOT_TXT,
                &Self::autoboot_txt_disarmed(committed),
            )?;
        }
        Ok(())
    }

    fn bootable(&mut self) -> Result<Vec<Slot>, FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        Ok(slots_of(&[a.all, a.tryboot]))
    }

    fn commit(&mut self, slot: Slot) -> Result<(), FlowError> {
        rewrite(&mut *self.files, AUTOBOOT_TXT, &Self::autoboot_txt(slot))
    }
}

fn slots_of(list: &[Option<Slot>]) -> Vec<Slot> {
    let mut v: Vec<Slot> = list.iter().flatten().copied().collect();
    v.sort();
    v.dedup();
    v
}

/// A software one-shot on the Pi for kernels that cannot set the tryboot
/// flag (see the module docs for its limit).
pub struct PiSoftwareOneShot {
    files: Box<dyn BootFiles + Send>,
}

impl std::fmt::Debug for PiSoftwareOneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiSoftwareOneShot")
    }
}

impl PiSoftwareOneShot {
    /// The flow over the autoboot partition's files.
    pub fn new(files: Box<dyn BootFiles + Send>) -> Self {
        PiSoftwareOneShot { files }
    }

    /// autoboot.txt booting `boot` while `committed` stays committed.
    pub fn autoboot_txt(boot: Slot, committed: Slot) -> String {
        format!(
            "[all]\nboot_partition={}\n# krazy committed={}\n",
            pi_boot_partition(boot),
            pi_boot_partition(committed)
        )
    }
}

impl BootFlow for PiSoftwareOneShot {
    fn name(&self) -> &'static str {
        "pi-software-one-shot"
    }

    fn committed(&mut self) -> Result<Slot, FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        a.committed_comment
            .or(a.all)
            .ok_or_else(|| FlowError::Parse {
                path: AUTOBOOT_TXT.into(),
                reason: "neither a committed comment nor boot_partition=2 or 3".into(),
            })
    }

    fn try_next(&mut self, slot: Slot) -> Result<Option<String>, FlowError> {
        let committed = self.committed()?;
        rewrite(
            &mut *self.files,
            AUTOBOOT_TXT,
            &Self::autoboot_txt(slot, committed),
        )?;
        Ok(None)
    }

    fn cancel_trial(&mut self) -> Result<(), FlowError> {
        let committed = self.committed()?;
        rewrite(
            &mut *self.files,
            AUTOBOOT_TXT,
            &Self::autoboot_txt(committed, committed),
        )
    }

    fn disarm(&mut self, _slot: Slot) -> Result<(), FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        let committed = self.committed()?;
        if a.all != Some(committed) || a.tryboot.is_some() {
            self.cancel_trial()?;
        }
        Ok(())
    }

    fn bootable(&mut self) -> Result<Vec<Slot>, FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        Ok(slots_of(&[a.all, a.tryboot]))
    }

    fn on_boot(&mut self, _running: Slot) -> Result<(), FlowError> {
        let a = parse_autoboot(&read_text(&mut *self.files, AUTOBOOT_TXT)?);
        let committed = self.committed()?;
        if a.all != Some(committed) {
            self.cancel_trial()?;
        }
        Ok(())
    }

    fn commit(&mut self, slot: Slot) -> Result<(), FlowError> {
        rewrite(
            &mut *self.files,
            AUTOBOOT_TXT,
            &Self::autoboot_txt(slot, slot),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfiles::DirBootFiles;
    use std::path::Path;

    fn file(dir: &Path, path: &str, text: &str, cap: usize) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut b = text.as_bytes().to_vec();
        b.resize(cap, b' ');
        std::fs::write(p, b).unwrap();
    }

    fn read(dir: &Path, path: &str) -> String {
        String::from_utf8(std::fs::read(dir.join(path)).unwrap()).unwrap()
    }

    #[test]
    fn systemd_boot_one_shot_commit_and_trial_detection() {
        let esp = tempfile::tempdir().unwrap();
        let vars = tempfile::tempdir().unwrap();
        file(
            esp.path(),
            LOADER_CONF,
            "timeout 0\ndefault krazy-a.conf\n",
            512,
        );
        let ev = EfiVars::new(vars.path());
        let mut f = SystemdBoot::new(Box::new(DirBootFiles::new(esp.path())), ev.clone());
        assert_eq!(f.committed().unwrap(), Slot::A);
        assert!(!f.is_trial(Slot::A).unwrap());

        assert_eq!(f.try_next(Slot::B).unwrap(), None);
        let raw = std::fs::read(
            vars.path()
                .join(format!("LoaderEntryOneShot-{LOADER_GUID}")),
        )
        .unwrap();
        let mut want = vec![7, 0, 0, 0];
        want.extend(utf16_nul("krazy-b.conf"));
        assert_eq!(raw, want);
        assert_eq!(f.one_shot().unwrap(), Some(Slot::B));

        // systemd-boot consumed the one-shot and started b.
        ev.delete("LoaderEntryOneShot", LOADER_GUID).unwrap();
        ev.write(
            "LoaderEntrySelected",
            LOADER_GUID,
            6,
            &utf16_nul("krazy-b.conf"),
        )
        .unwrap();
        assert!(f.is_trial(Slot::B).unwrap());
        // A stale LoaderEntryDefault would override loader.conf: commit removes it.
        ev.write(
            "LoaderEntryDefault",
            LOADER_GUID,
            7,
            &utf16_nul("krazy-a.conf"),
        )
        .unwrap();
        f.commit(Slot::B).unwrap();
        let text = read(esp.path(), LOADER_CONF);
        assert_eq!(text.len(), 512);
        assert!(
            text.starts_with("default krazy-b.conf\ntimeout 0\n   "),
            "{text:?}"
        );
        assert_eq!(ev.read("LoaderEntryDefault", LOADER_GUID).unwrap(), None);
        assert_eq!(f.committed().unwrap(), Slot::B);
        assert!(!f.is_trial(Slot::B).unwrap());
    }

    #[test]
    fn systemd_boot_refuses_a_foreign_default() {
        let esp = tempfile::tempdir().unwrap();
        let vars = tempfile::tempdir().unwrap();
        file(esp.path(), LOADER_CONF, "default debian.conf\n", 64);
        let mut f = SystemdBoot::new(
            Box::new(DirBootFiles::new(esp.path())),
            EfiVars::new(vars.path()),
        );
        assert!(matches!(f.committed(), Err(FlowError::Parse { .. })));
    }

    #[test]
    fn pi_tryboot_files_and_decisions() {
        let p1 = tempfile::tempdir().unwrap();
        file(
            p1.path(),
            AUTOBOOT_TXT,
            &PiTryboot::autoboot_txt(Slot::A),
            256,
        );
        let mut f = PiTryboot::new(Box::new(DirBootFiles::new(p1.path())));
        assert_eq!(f.committed().unwrap(), Slot::A);
        assert_eq!(f.try_next(Slot::B).unwrap().as_deref(), Some("0 tryboot"));
        assert!(f.try_next(Slot::A).is_err());
        // The trial boot runs from partition 3 while [all] still says 2.
        assert!(f.is_trial(Slot::B).unwrap());
        f.commit(Slot::B).unwrap();
        let t = read(p1.path(), AUTOBOOT_TXT);
        assert!(
            t.starts_with("[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n")
        );
        assert_eq!(t.len(), 256);
        assert_eq!(f.committed().unwrap(), Slot::B);
        assert!(!f.is_trial(Slot::B).unwrap());
    }

    #[test]
    fn pi_software_one_shot_points_back_until_commit() {
        let p1 = tempfile::tempdir().unwrap();
        file(
            p1.path(),
            AUTOBOOT_TXT,
            &PiSoftwareOneShot::autoboot_txt(Slot::A, Slot::A),
            128,
        );
        let mut f = PiSoftwareOneShot::new(Box::new(DirBootFiles::new(p1.path())));
        assert_eq!(f.try_next(Slot::B).unwrap(), None);
        let t = read(p1.path(), AUTOBOOT_TXT);
        assert!(t.starts_with("[all]\nboot_partition=3\n# krazy committed=2\n"));
        assert_eq!(f.committed().unwrap(), Slot::A);
        // Stage 1 of the new slot points autoboot.txt back before anything else.
        f.on_boot(Slot::B).unwrap();
        assert!(read(p1.path(), AUTOBOOT_TXT).starts_with("[all]\nboot_partition=2\n"));
        assert!(f.is_trial(Slot::B).unwrap());
        f.commit(Slot::B).unwrap();
        assert!(read(p1.path(), AUTOBOOT_TXT)
            .starts_with("[all]\nboot_partition=3\n# krazy committed=3\n"));
        f.on_boot(Slot::B).unwrap();
        assert_eq!(f.committed().unwrap(), Slot::B);
        assert!(!f.is_trial(Slot::B).unwrap());
    }
}
