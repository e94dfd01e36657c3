//! The module index: each module's `.modinfo` ([`ModInfo`],
//! [`parse_modinfo`], [`read_module`] for `.ko`, `.ko.xz` and `.ko.zst`),
//! every module of a kernel ([`ModuleIndex`]) and the dependency closure a
//! [`ModuleRequest`] needs, in load order.

use super::{io_err, KernelError};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest decompressed module accepted (real ones are a few MiB).
const MAX_MODULE: u64 = 256 << 20;

/// What a module's `.modinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, normalized (`-` as `_`); empty when absent.
    pub name: String,
    /// `depends=`, normalized, in order.
    pub depends: Vec<String>,
    /// `alias=` entries.
    pub aliases: Vec<String>,
}

/// Normalizes a module name: `-` and `_` are equivalent; `_` is canonical.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses the bytes of a `.modinfo` section (NUL-separated `key=value`).
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut mi = ModInfo::default();
    for item in section.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(item) else {
            continue;
        };
        let Some((k, v)) = s.split_once('=') else {
            continue;
        };
        match k {
            "name" => mi.name = normalize_module_name(v),
            "depends" => mi.depends.extend(
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(normalize_module_name),
            ),
            "alias" => mi.aliases.push(v.to_string()),
            _ => {}
        }
    }
    mi
}

/// Reads the `.modinfo` of a module file (`.ko`, `.ko.xz` or `.ko.zst`).
pub fn read_module(path: &Path) -> Result<ModInfo, KernelError> {
    let bad = |reason: String| KernelError::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let raw = fs::read(path).map_err(io_err(path))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let data = if name.ends_with(".ko.xz") {
        let stream = liblzma::stream::Stream::new_stream_decoder(MAX_MODULE, 0)
            .map_err(|e| bad(format!("xz: {e}")))?;
        let mut dec = liblzma::read::XzDecoder::new_stream(&raw[..], stream);
        let mut out = Vec::new();
        (&mut dec)
            .take(MAX_MODULE)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("xz: {e}")))?;
        out
    } else if name.ends_with(".ko.zst") {
        let mut dec = ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| bad(format!("zstd: {e}")))?;
        let mut out = Vec::new();
        (&mut dec)
            .take(MAX_MODULE)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("zstd: {e}")))?;
        out
    } else {
        raw
    };
    use object::{Object, ObjectSection};
    let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let sec = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("has no .modinfo section".into()))?;
    let bytes = sec
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo: {e}")))?;
    let mut mi = parse_modinfo(bytes);
    if mi.name.is_empty() {
        mi.name = normalize_module_name(module_stem(name));
    }
    Ok(mi)
}

fn module_stem(file_name: &str) -> &str {
    for ext in [".ko.xz", ".ko.zst", ".ko.gz", ".ko"] {
        if let Some(s) = file_name.strip_suffix(ext) {
            return s;
        }
    }
    file_name
}

/// One module in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The normalized name (`virtio_pci`).
    pub name: String,
    /// The path relative to the modules directory (`kernel/drivers/…/virtio_pci.ko`).
    pub rel_path: String,
    /// Its dependencies, normalized.
    pub depends: Vec<String>,
}

/// Every module of one kernel, by normalized name, plus the built-ins.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    /// The kernel release.
    pub version: String,
    /// The modules directory scanned.
    pub dir: PathBuf,
    /// Modules by normalized name.
    pub modules: BTreeMap<String, Module>,
    /// Names built into the kernel (from `modules.builtin`), normalized.
    pub builtin: BTreeSet<String>,
}

/// What stage 1 should load: names that must be there and names taken only
/// when the kernel has them as modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleRequest {
    /// Modules the image cannot boot without (unless built in).
    pub required: Vec<String>,
    /// Modules loaded when present (efivarfs, a watchdog, ext4 if modular).
    pub optional: Vec<String>,
}

impl ModuleRequest {
    /// What a `pc` image needs from Debian's kernels to reach its root and
    /// file systems: virtio (PCI, block, net), squashfs, vfat with both nls
    /// modules; optionally ext4 (modular on the generic kernel), efivarfs
    /// (trial boots) and a watchdog (`i6300esb`, else `softdog`).
    pub fn pc() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ModuleRequest {
            required: s(&[
                "virtio_pci",
                "virtio_blk",
                "virtio_net",
                "squashfs",
                "vfat",
                "nls_cp437",
                "nls_ascii",
            ]),
            optional: s(&["ext4", "efivarfs", "i6300esb|softdog"]),
        }
    }

    /// What a Raspberry Pi 3 image needs from Debian's arm64 kernel: squashfs
    /// and vfat with both nls modules are required. Taken when present as
    /// modules: the MMC block layer (Debian builds it in), both SD host
    /// drivers (`bcm2835`, the SDHOST controller that drives the card slot
    /// with the mainline device tree, and `sdhci_iproc`, the Arasan
    /// controller, to which QEMU's `raspi3b` wires the card until the pins
    /// are switched), ext4, the USB host (`dwc2` and its PHY `phy_generic`,
    /// which the device tree names but no `depends=` does), the Ethernet
    /// chips of the 3 B (`smsc95xx`) and 3 B+ (`lan78xx`), QEMU's `usb-net`
    /// (`cdc_ether`), the watchdog (`bcm2835_wdt`) and the hardware random
    /// number generator (`bcm2835_rng`). ext4 names `crc32c` only as a soft
    /// dependency, which `depends=` does not list: without `crc32c_generic`
    /// mounting /perm fails with "Cannot load crc32c driver".
    pub fn pi3() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ModuleRequest {
            required: s(&["squashfs", "vfat", "nls_cp437", "nls_ascii"]),
            optional: s(&[
                "mmc_block",
                "bcm2835",
                "sdhci_iproc",
                "crc32c_generic",
                "ext4",
                "phy_generic",
                "dwc2",
                "smsc95xx",
                "lan78xx",
                "cdc_ether",
                "bcm2835_wdt",
                "bcm2835_rng",
            ]),
        }
    }
}

impl ModuleIndex {
    /// Reads the `.modinfo` of every module under `dir`
    /// (`lib/modules/<version>`) in parallel, and `modules.builtin`.
    pub fn scan(dir: &Path, version: &str) -> Result<ModuleIndex, KernelError> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        files.sort();
        let infos: Vec<(String, ModInfo)> = files
            .par_iter()
            .map(|rel| Ok((rel.clone(), read_module(&dir.join(rel))?)))
            .collect::<Result<_, KernelError>>()?;
        let mut modules = BTreeMap::new();
        for (rel, mi) in infos {
            modules.entry(mi.name.clone()).or_insert(Module {
                name: mi.name,
                rel_path: rel,
                depends: mi.depends,
            });
        }
        let mut builtin = BTreeSet::new();
        let bfile = dir.join("modules.builtin");
        if let Ok(text) = fs::read_to_string(&bfile) {
            for l in text.lines() {
                let base = l.rsplit('/').next().unwrap_or(l);
                builtin.insert(normalize_module_name(module_stem(base)));
            }
        }
        Ok(ModuleIndex {
            version: version.to_string(),
            dir: dir.to_path_buf(),
            modules,
            builtin,
        })
    }

    /// The modules `req` needs, every dependency before its users: the order
    /// stage 1 loads them in. A required name must be a module or built in;
    /// an optional name (or `a|b` alternatives, first present wins) is
    /// skipped when absent. Built-in names contribute nothing.
    pub fn closure(&self, req: &ModuleRequest) -> Result<Vec<Module>, KernelError> {
        let mut order = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false = visiting, true = done
        for r in &req.required {
            let n = normalize_module_name(r);
            if self.modules.contains_key(&n) {
                self.visit(&n, "the request", &mut state, &mut order)?;
            } else if !self.builtin.contains(&n) {
                return Err(KernelError::MissingModule {
                    version: self.version.clone(),
                    name: n,
                    needed_by: "the image (stage 1)".into(),
                });
            }
        }
        for r in &req.optional {
            let pick = r
                .split('|')
                .map(normalize_module_name)
                .find(|n| self.modules.contains_key(n) || self.builtin.contains(n));
            if let Some(n) = pick {
                if self.modules.contains_key(&n) {
                    self.visit(&n, "the request", &mut state, &mut order)?;
                }
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        state: &mut HashMap<String, bool>,
        order: &mut Vec<Module>,
    ) -> Result<(), KernelError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(KernelError::DependencyCycle {
                    name: name.to_string(),
                })
            }
            None => {}
        }
        let Some(m) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(KernelError::MissingModule {
                version: self.version.clone(),
                name: name.to_string(),
                needed_by: needed_by.to_string(),
            });
        };
        state.insert(name.to_string(), false);
        for d in &m.depends {
            self.visit(d, name, state, order)?;
        }
        state.insert(name.to_string(), true);
        order.push(m.clone());
        Ok(())
    }

    /// The closure as a tree for an initramfs or root: the module files
    /// under `lib/modules/<version>/`, plus `etc/krazy/modules` listing their
    /// paths (relative to `lib/modules/<version>`) in load order, one a line.
    pub fn closure_tree(
        &self,
        closure: &[Module],
        mtime: u64,
    ) -> Result<krazy_fs::tree::Tree, krazy_fs::tree::TreeError> {
        use krazy_fs::tree::{Contents, Tree};
        let mut t = Tree::new();
        let base = format!("lib/modules/{}", self.version);
        let mut list = String::new();
        for m in closure {
            let p = format!("{base}/{}", m.rel_path);
            if let Some((parent, _)) = p.rsplit_once('/') {
                t.add_dir_all(parent, mtime)?;
            }
            t.add_file(&p, Contents::Host(self.dir.join(&m.rel_path)), 0o644, mtime)?;
            list.push_str(&m.rel_path);
            list.push('\n');
        }
        t.add_dir_all("etc/krazy", mtime)?;
        t.add_file("etc/krazy/modules", Contents::bytes(list), 0o644, mtime)?;
        Ok(t)
    }
}

/// Collects module files under `dir`, relative to `base`, without following
/// symlinks.
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), KernelError> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let ft = e.file_type().map_err(io_err(dir))?;
        let p = e.path();
        if ft.is_dir() {
            walk(base, &p, out)?;
        } else if ft.is_file() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.ends_with(".ko") || n.ends_with(".ko.xz") || n.ends_with(".ko.zst") {
                if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_parses_and_normalizes() {
        let mi = parse_modinfo(b"license=GPL\0depends=virtio_ring,virtio-pci-modern-dev,\0name=virtio-pci\0alias=pci:v00001AF4d*\0\0\xff\0");
        assert_eq!(mi.name, "virtio_pci");
        assert_eq!(mi.depends, ["virtio_ring", "virtio_pci_modern_dev"]);
        assert_eq!(mi.aliases, ["pci:v00001AF4d*"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }
}
