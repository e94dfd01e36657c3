//! The ed25519 keys: the public one in the root image, the secret one in
//! the instance directory.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::ManifestError;

/// An ed25519 public key (32 bytes); its text form is base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the text form: base64 of 32 bytes, surrounding whitespace ignored
    /// (the format of `/etc/krazy/update.pub` in the root image).
    pub fn from_text(text: &str) -> Result<Self, ManifestError> {
        let raw = B64
            .decode(text.trim().as_bytes())
            .map_err(|_| ManifestError::Key("public"))?;
        raw.try_into()
            .map(PublicKey)
            .map_err(|_| ManifestError::Key("public"))
    }

    /// The text form (base64 and a newline).
    pub fn to_text(&self) -> String {
        format!("{}\n", B64.encode(self.0))
    }
}

/// An ed25519 signing key, made from a 32-byte seed (its text form is the
/// seed in base64; `krazy new` keeps it in the instance directory).
pub struct SecretKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// The key for `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        // from_seed_unchecked only fails for seeds of the wrong length.
        let pair = match Ed25519KeyPair::from_seed_unchecked(&seed) {
            Ok(p) => p,
            Err(_) => unreachable!("a 32-byte seed is always accepted"),
        };
        SecretKey { seed, pair }
    }

    /// The key in a PKCS#8 v2 document as ring writes it (`krazy new`'s
    /// `secrets/update-key.pk8`): the seed is checked against the document's
    /// own public key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ManifestError> {
        // RFC 8410 with the public key: SEQUENCE { version 1, AlgorithmId
        // ed25519, OCTET STRING { OCTET STRING seed }, [1] public key }.
        // ring writes [1] as an implicit BIT STRING (`81 21 00 <public>`,
        // 83 bytes); the explicit form is `a1 23 03 21 00 <public>` (85 bytes).
        const HEAD: [u8; 14] = [
            0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        let bad = || ManifestError::Key("secret");
        let public = match der.len() {
            83 if der[..2] == [0x30, 0x51] && der[48..51] == [0x81, 0x21, 0x00] => &der[51..],
            85 if der[..2] == [0x30, 0x53] && der[48..53] == [0xa1, 0x23, 0x03, 0x21, 0x00] => {
                &der[53..]
            }
            _ => return Err(bad()),
        };
        if der[2..16] != HEAD {
            return Err(bad());
        }
        let seed: [u8; 32] = der[16..48].try_into().map_err(|_| bad())?;
        let key = Self::from_seed(seed);
        if key.public().0[..] != public[..] {
            return Err(bad());
        }
        Ok(key)
    }

    /// A new random key.
    pub fn generate() -> Result<Self, ManifestError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| ManifestError::Key("secret"))?;
        Ok(Self::from_seed(seed))
    }

    /// Parses the text form (base64 of the 32-byte seed).
    pub fn from_text(text: &str) -> Result<Self, ManifestError> {
        let raw = B64
            .decode(text.trim().as_bytes())
            .map_err(|_| ManifestError::Key("secret"))?;
        let seed: [u8; 32] = raw.try_into().map_err(|_| ManifestError::Key("secret"))?;
        Ok(Self::from_seed(seed))
    }

    /// The text form (base64 of the seed and a newline).
    pub fn to_text(&self) -> String {
        format!("{}\n", B64.encode(self.seed))
    }

    /// The ed25519 signature of `bytes`.
    pub(crate) fn sign(&self, bytes: &[u8]) -> ring::signature::Signature {
        self.pair.sign(bytes)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }
}
