//! GUIDs, instance ids and the deterministic derivation of disk and
//! partition GUIDs.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A 128-bit GUID, held in the byte order in which its text form reads
/// (RFC 4122 / "big-endian"); GPT's mixed-endian on-disk form is produced by
/// [`Guid::to_gpt_bytes`] and read by [`Guid::from_gpt_bytes`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

/// A GUID string that does not have the form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a GUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
pub struct GuidParseError {
    /// The rejected text (at most 64 characters of it).
    pub text: String,
}

impl Guid {
    /// The all-zero GUID, which GPT uses to mark an unused entry.
    pub const NIL: Guid = Guid([0; 16]);

    /// Builds a GUID from its text form written as one hex number, e.g.
    /// `Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B)`.
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// Builds a GUID from the 16 bytes of its text form, in reading order.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The 16 bytes of the text form, in reading order.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Whether this is the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The GPT on-disk form: the first three fields little-endian, the last
    /// eight bytes as they are.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// Reads a GUID stored in GPT's mixed-endian on-disk form.
    pub fn from_gpt_bytes(b: [u8; 16]) -> Guid {
        // The byte swap is its own inverse.
        Guid(b).to_gpt_bytes().into()
    }
}

impl From<[u8; 16]> for Guid {
    fn from(b: [u8; 16]) -> Guid {
        Guid(b)
    }
}

impl fmt::Display for Guid {
    /// Lowercase `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, the form Linux shows
    /// as a GPT PARTUUID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, either case.
    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let err = || GuidParseError {
            text: s.chars().take(64).collect(),
        };
        let raw = s.as_bytes();
        if raw.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < raw.len() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if raw[i] != b'-' {
                    return Err(err());
                }
                i += 1;
                continue;
            }
            let hi = hex_val(raw[i]).ok_or_else(err)?;
            let lo = raw.get(i + 1).copied().and_then(hex_val).ok_or_else(err)?;
            *out.get_mut(n).ok_or_else(err)? = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        if n != 16 {
            return Err(err());
        }
        Ok(Guid(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The identity of one krazy instance (created once by `krazy new`, e.g. a
/// random UUID string), from which every disk and partition GUID and the
/// MBR disk signature are derived, so that rebuilding an instance gives the
/// same ids and two instances never share them.
///
/// Any non-empty UTF-8 string of at most [`InstanceId::MAX_LEN`] bytes is
/// accepted; it is hashed as it is (no case folding or trimming).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

/// An instance id that is empty or too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceIdError {
    /// The id is the empty string.
    #[error("the instance id is empty")]
    Empty,
    /// The id is longer than [`InstanceId::MAX_LEN`] bytes.
    #[error("the instance id is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit, [`InstanceId::MAX_LEN`].
        max: usize,
    },
}

impl InstanceId {
    /// The longest accepted id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps an instance id.
    pub fn new(id: impl Into<String>) -> Result<InstanceId, InstanceIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(InstanceIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(InstanceIdError::TooLong {
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(InstanceId(id))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 over a domain separator, the id (length-prefixed) and `tag`.
    fn digest(&self, tag: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"krazy-disk/v1\0");
        // An instance id is short (checked by `new`); a longer one would not
        // change the digest's input framing of the ids that exist.
        h.update(
            u32::try_from(self.0.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        h.update(self.0.as_bytes());
        h.update(b"\0");
        h.update(tag.as_bytes());
        h.finalize().into()
    }

    /// The GUID for `tag` (e.g. `"disk"` or a role's name): the first 16
    /// bytes of the digest with the RFC 4122 version 4 and variant 1 bits set.
    pub fn derive_guid(&self, tag: &str) -> Guid {
        let d = self.digest(tag);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// The MBR disk signature (bytes 440..444 of LBA 0): the first four
    /// digest bytes for the tag `mbr-signature`, never zero.
    pub fn mbr_signature(&self) -> u32 {
        let d = self.digest("mbr-signature");
        let v = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        if v == 0 {
            1
        } else {
            v
        }
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({:?})", self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstanceId {
    type Err = InstanceIdError;
    fn from_str(s: &str) -> Result<InstanceId, InstanceIdError> {
        InstanceId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_gpt_byte_order() {
        let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(g, Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B));
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        // The ESP type GUID as it appears on disk (UEFI spec, table 5.3).
        assert_eq!(
            g.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_gpt_bytes(g.to_gpt_bytes()), g);
    }

    #[test]
    fn bad_guid_text_is_rejected() {
        for s in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93bb",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "c12a7328+f81f-11d2-ba4b-00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec9é",
        ] {
            assert!(s.parse::<Guid>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn derived_guids_are_version_4_and_depend_on_id_and_tag() {
        let a = InstanceId::new("alpha").unwrap();
        let b = InstanceId::new("beta").unwrap();
        let g = a.derive_guid("root-a");
        assert_eq!(g.as_bytes()[6] >> 4, 4);
        assert_eq!(g.as_bytes()[8] >> 6, 0b10);
        assert_eq!(g, a.derive_guid("root-a"));
        assert_ne!(g, a.derive_guid("root-b"));
        assert_ne!(g, b.derive_guid("root-a"));
        assert_ne!(a.mbr_signature(), b.mbr_signature());
        assert_eq!(InstanceId::new(""), Err(InstanceIdError::Empty));
        assert!(InstanceId::new("x".repeat(257)).is_err());
    }
}
