//! Checks that every binary going into an image is a static ELF executable
//! for the image's architecture, before the image is built rather than when
//! init fails to start it on the device.
//!
//! Static means no `PT_INTERP` (no dynamic loader) and no `DT_NEEDED`
//! (no shared libraries). A static-pie binary has a `PT_DYNAMIC` segment for
//! its own relocations but neither of those, and is accepted.

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Architecture, Endianness};
use std::path::{Path, PathBuf};

pub use krazy_disk::Arch;

/// Why a binary cannot go into the image. Each message names the file, what
/// is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ELF file at all.
    #[error("{} is not an ELF executable ({reason}): only compiled Linux programs can be services; build it with cargo for {}", path.display(), arch.musl_target())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
        /// The target architecture.
        arch: Arch,
    },
    /// The ELF file is for another CPU.
    #[error("{} is built for {found}, but the image is for {}: build it with --target {}", path.display(), expected.name(), expected.musl_target())]
    WrongArch {
        /// The file.
        path: PathBuf,
        /// What the file is for.
        found: String,
        /// What the image needs.
        expected: Arch,
    },
    /// The ELF file is a library or object, not an executable.
    #[error("{} is not an executable (ELF type {kind}): point the package at a binary target", path.display())]
    NotExecutable {
        /// The file.
        path: PathBuf,
        /// The ELF type found.
        kind: &'static str,
    },
    /// The executable needs a dynamic loader or shared libraries.
    #[error("{} is dynamically linked ({detail}), but an image runs only static executables: build for {} and drop any `-C target-feature=-crt-static` (from the package's .cargo/config.toml or RUSTFLAGS), or build for the gnu target with -C target-feature=+crt-static and an explicit --target", path.display(), arch.musl_target())]
    Dynamic {
        /// The file.
        path: PathBuf,
        /// `needs libc.so.6, libm.so.6` or `uses the loader /lib64/ld-…`.
        detail: String,
        /// The target architecture.
        arch: Arch,
    },
    /// The ELF structures are damaged.
    #[error("{} is a damaged ELF file: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// The architecture (the one asked for).
    pub arch: Arch,
    /// Whether it is position independent (static-pie, `ET_DYN`).
    pub pie: bool,
}

/// Reads `path` and checks it with [`check_bytes`].
pub fn check_static(path: &Path, arch: Arch) -> Result<ElfInfo, ElfError> {
    let data = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_bytes(&data, path, arch)
}

/// Checks that `data` is a static executable for `arch`; `path` names it in
/// errors.
pub fn check_bytes(data: &[u8], path: &Path, arch: Arch) -> Result<ElfInfo, ElfError> {
    let file = object::File::parse(data).map_err(|e| ElfError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
        arch,
    })?;
    use object::Object;
    if file.format() != object::BinaryFormat::Elf {
        return Err(ElfError::NotElf {
            path: path.to_path_buf(),
            reason: format!("it is a {:?} file", file.format()),
            arch,
        });
    }
    let found = file.architecture();
    let want = match arch {
        Arch::X86_64 => Architecture::X86_64,
        Arch::Aarch64 => Architecture::Aarch64,
    };
    if found != want || !file.is_64() {
        let name = match found {
            Architecture::X86_64 if !file.is_64() => "x86-64 (x32)".to_string(),
            Architecture::X86_64 => "x86_64".to_string(),
            Architecture::Aarch64 => "aarch64".to_string(),
            Architecture::I386 => "i386".to_string(),
            Architecture::Arm => "32-bit arm".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        return Err(ElfError::WrongArch {
            path: path.to_path_buf(),
            found: name,
            expected: arch,
        });
    }
    let malformed = |e: object::Error| ElfError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let hdr = elf::FileHeader64::<Endianness>::parse(data).map_err(malformed)?;
    let endian = hdr.endian().map_err(malformed)?;
    let pie = match hdr.e_type(endian) {
        elf::ET_EXEC => false,
        elf::ET_DYN => true,
        elf::ET_REL => {
            return Err(ElfError::NotExecutable {
                path: path.to_path_buf(),
                kind: "relocatable object",
            })
        }
        elf::ET_CORE => {
            return Err(ElfError::NotExecutable {
                path: path.to_path_buf(),
                kind: "core dump",
            })
        }
        _ => {
            return Err(ElfError::NotExecutable {
                path: path.to_path_buf(),
                kind: "unknown",
            })
        }
    };
    let mut interp = None;
    let mut needed_offsets = Vec::new();
    let mut strtab_addr = None;
    let mut strsz = None;
    let segments = hdr.program_headers(endian, data).map_err(malformed)?;
    for ph in segments {
        if let Some(i) = ph.interpreter(endian, data).map_err(malformed)? {
            interp = Some(String::from_utf8_lossy(i).into_owned());
        }
        if let Some(dyns) = ph.dynamic(endian, data).map_err(malformed)? {
            for d in dyns {
                let tag = d.d_tag(endian);
                if tag == elf::DT_NEEDED {
                    needed_offsets.push(d.d_val(endian));
                } else if tag == elf::DT_STRTAB {
                    strtab_addr = Some(d.d_val(endian));
                } else if tag == elf::DT_STRSZ {
                    strsz = Some(d.d_val(endian));
                }
            }
        }
    }
    if !needed_offsets.is_empty() {
        // Map DT_STRTAB's address to a file offset through the LOAD segments.
        let names: Vec<String> = needed_offsets
            .iter()
            .map(|off| {
                strtab_addr
                    .and_then(|a| vaddr_to_offset(segments, endian, a))
                    .and_then(|base| {
                        if strsz.is_some_and(|sz| *off >= sz) {
                            return None;
                        }
                        let start = usize::try_from(base.checked_add(*off)?).ok()?;
                        let rest = data.get(start..)?;
                        let end = rest.iter().position(|&b| b == 0)?;
                        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
                    })
                    .unwrap_or_else(|| "an unnamed library".to_string())
            })
            .collect();
        return Err(ElfError::Dynamic {
            path: path.to_path_buf(),
            detail: format!("needs {}", names.join(", ")),
            arch,
        });
    }
    if let Some(i) = interp {
        return Err(ElfError::Dynamic {
            path: path.to_path_buf(),
            detail: format!("uses the loader {i}"),
            arch,
        });
    }
    Ok(ElfInfo { arch, pie })
}

fn vaddr_to_offset(
    segments: &[elf::ProgramHeader64<Endianness>],
    endian: Endianness,
    addr: u64,
) -> Option<u64> {
    segments.iter().find_map(|ph| {
        let (va, sz) = (ph.p_vaddr(endian), ph.p_filesz(endian));
        (ph.p_type(endian) == elf::PT_LOAD && addr >= va && addr < va.checked_add(sz)?)
            .then(|| ph.p_offset(endian) + (addr - va))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_elf() {
        let e = check_bytes(b"#!/bin/sh\n", Path::new("/x/run.sh"), Arch::X86_64).unwrap_err();
        assert!(matches!(e, ElfError::NotElf { .. }));
        assert!(e.to_string().contains("/x/run.sh"), "{e}");
        let mut hdr = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
        hdr.resize(40, 0);
        assert!(check_bytes(&hdr, Path::new("t"), Arch::X86_64).is_err());
    }
}
