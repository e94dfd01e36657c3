//! The two words every krazy crate shares: the [`Platform`] (board family)
//! an image is for and its CPU [`Arch`]. Defined here, the lowest crate that
//! needs them (they decide the partitions), and used unchanged by
//! krazy-update's protocol, krazy-build's `krazy.toml` and the device.
//!
//! ```
//! use krazy_disk::{Arch, Platform};
//! assert_eq!(Platform::Pi3.arch(), Arch::Aarch64);
//! assert_eq!("pc".parse::<Platform>(), Ok(Platform::Pc));
//! assert_eq!(Arch::X86_64.to_string(), "x86_64");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::guid::Guid;
use crate::layout::{TYPE_ROOT_AARCH64, TYPE_ROOT_X86_64};

/// The board family an image is for; it decides the partitions, the MBR
/// and the boot flow. Serialized as `"pc"` and `"pi3"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A UEFI PC or VM (x86-64): ESP with systemd-boot, root A/B, perm;
    /// protective MBR.
    #[default]
    Pc,
    /// A Raspberry Pi 3 (aarch64): autoboot, boot A/B (FAT), root A/B,
    /// perm; hybrid MBR.
    Pi3,
}

impl Platform {
    /// Every platform, in declaration order.
    pub const ALL: [Platform; 2] = [Platform::Pc, Platform::Pi3];

    /// The name used on command lines, in `krazy.toml` and in messages
    /// (`pc`, `pi3`).
    pub fn name(self) -> &'static str {
        match self {
            Platform::Pc => "pc",
            Platform::Pi3 => "pi3",
        }
    }

    /// The same as [`Platform::name`].
    pub fn as_str(self) -> &'static str {
        self.name()
    }

    /// The CPU architecture of this board.
    pub fn arch(self) -> Arch {
        match self {
            Platform::Pc => Arch::X86_64,
            Platform::Pi3 => Arch::Aarch64,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}: krazy knows `pc` and `pi3`")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPlatform(s.to_string()))
    }
}

/// The CPU architecture of an image; it decides the root partitions' type
/// and the Rust target of its programs. Serialized as `"x86_64"` and
/// `"aarch64"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// x86-64 (amd64, `pc`).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM (arm64, `pi3`).
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The name used in target triples and messages (`x86_64`, `aarch64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The discoverable-partitions root type GUID for this architecture.
    pub fn root_type(self) -> Guid {
        match self {
            Arch::X86_64 => TYPE_ROOT_X86_64,
            Arch::Aarch64 => TYPE_ROOT_AARCH64,
        }
    }

    /// The Rust target whose static binaries run on this architecture.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name for it (`amd64`, `arm64`), as in package names.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_contract() {
        for (p, s) in [(Platform::Pc, "\"pc\""), (Platform::Pi3, "\"pi3\"")] {
            assert_eq!(serde_json::to_string(&p).unwrap(), s);
            assert_eq!(serde_json::from_str::<Platform>(s).unwrap(), p);
        }
        for (a, s) in [(Arch::X86_64, "\"x86_64\""), (Arch::Aarch64, "\"aarch64\"")] {
            assert_eq!(serde_json::to_string(&a).unwrap(), s);
            assert_eq!(serde_json::from_str::<Arch>(s).unwrap(), a);
        }
        assert!("PC".parse::<Platform>().is_err());
    }
}
