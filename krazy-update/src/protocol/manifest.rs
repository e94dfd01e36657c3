//! The signed manifest: what an update installs, its protocol-1 form, the
//! envelope and why one is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::*;

/// One part of an update: its kind, exact size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// `root` or `boot`.
    pub name: PartKind,
    /// The exact number of bytes of the `PUT` body.
    pub size: u64,
    /// SHA-256 of those bytes, 64 lowercase hex digits.
    pub sha256: String,
}

impl PartSpec {
    /// A spec for `bytes`.
    pub fn for_bytes(name: PartKind, bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        PartSpec {
            name,
            size: bytes.len() as u64,
            sha256: hex(&sha2::Sha256::digest(bytes)),
        }
    }

    /// The digest as 32 bytes, if [`PartSpec::sha256`] is valid hex.
    pub fn digest(&self) -> Option<[u8; 32]> {
        parse_hex32(&self.sha256)
    }
}

/// What an update installs: signed by the instance key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The new build's id (printable ASCII, 1 to 128 bytes).
    pub build_id: String,
    /// The architecture the build is for.
    pub arch: Arch,
    /// The platform the build is for.
    pub platform: Platform,
    /// The slot the parts were made for (a pc loader entry names its slot's
    /// root): the device takes the manifest only into this slot.
    pub slot: Slot,
    /// Monotonic: greater than the committed build's, unless this is a
    /// signed downgrade. By default the signing time in Unix seconds.
    pub version: u64,
    /// When it was signed (Unix seconds).
    pub signed_at: u64,
    /// After this time (Unix seconds) the device refuses it.
    pub expires: u64,
    /// A deliberate downgrade of the build `from_build_id` (expiry at most
    /// one hour after signing).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_downgrade: bool,
    /// With `allow_downgrade`: the running build it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_build_id: Option<String>,
    /// Exactly one `root` and one `boot` part.
    pub parts: Vec<PartSpec>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The manifest of protocol 1 (no version, expiry, slot or downgrade
/// fields): what [`SignedManifest::sign_v1`] signs for a protocol-1 device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestV1 {
    /// Always [`PROTOCOL_V1`].
    pub protocol: u32,
    /// The new build's id.
    pub build_id: String,
    /// The architecture.
    pub arch: Arch,
    /// The platform.
    pub platform: Platform,
    /// One `root` and one `boot` part.
    pub parts: Vec<PartSpec>,
}

fn check_build_id(id: &str) -> Result<(), ManifestError> {
    if id.is_empty() || id.len() > MAX_BUILD_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ManifestError::BuildId(id.chars().take(64).collect()));
    }
    Ok(())
}

impl Manifest {
    /// A manifest of `parts` for `slot` with `version`, signed at
    /// `signed_at` and valid for [`DEFAULT_EXPIRY_SECONDS`].
    pub fn new(
        build_id: impl Into<String>,
        arch: Arch,
        platform: Platform,
        slot: Slot,
        version: u64,
        signed_at: u64,
        parts: Vec<PartSpec>,
    ) -> Self {
        Manifest {
            protocol: PROTOCOL_VERSION,
            build_id: build_id.into(),
            arch,
            platform,
            slot,
            version,
            signed_at,
            expires: signed_at.saturating_add(DEFAULT_EXPIRY_SECONDS),
            allow_downgrade: false,
            from_build_id: None,
            parts,
        }
    }

    /// The spec of part `kind`, if listed.
    pub fn part(&self, kind: PartKind) -> Option<&PartSpec> {
        self.parts.iter().find(|p| p.name == kind)
    }

    /// Checks the manifest's own consistency (not the target, the clock or
    /// the device's version floor).
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(ManifestError::Protocol(self.protocol));
        }
        check_build_id(&self.build_id)?;
        check_parts(&self.parts)?;
        if self.expires <= self.signed_at {
            return Err(ManifestError::Expiry);
        }
        if self.allow_downgrade {
            match &self.from_build_id {
                Some(id) => check_build_id(id)?,
                None => return Err(ManifestError::Downgrade),
            }
            if self.expires - self.signed_at > MAX_DOWNGRADE_EXPIRY_SECONDS {
                return Err(ManifestError::Downgrade);
            }
        } else if self.from_build_id.is_some() {
            return Err(ManifestError::Downgrade);
        }
        Ok(())
    }

    /// The canonical bytes that get signed: compact JSON, fields in the
    /// order of this struct.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The protocol-1 form of this manifest (what a protocol-1 device
    /// checks): the build, target and parts, nothing else.
    pub fn to_v1(&self) -> ManifestV1 {
        ManifestV1 {
            protocol: PROTOCOL_V1,
            build_id: self.build_id.clone(),
            arch: self.arch,
            platform: self.platform,
            parts: self.parts.clone(),
        }
    }
}

fn check_parts(parts: &[PartSpec]) -> Result<(), ManifestError> {
    for kind in [PartKind::Root, PartKind::Boot] {
        match parts.iter().filter(|p| p.name == kind).count() {
            1 => {}
            n => return Err(ManifestError::PartCount { kind, count: n }),
        }
    }
    if parts.len() != 2 {
        return Err(ManifestError::PartCount {
            kind: PartKind::Root,
            count: parts.len(),
        });
    }
    for p in parts {
        if p.digest().is_none() || p.sha256.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ManifestError::Digest(p.name));
        }
    }
    Ok(())
}

/// Why a manifest or its envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The envelope is larger than [`MAX_ENVELOPE_BYTES`].
    #[error("the signed manifest is {0} bytes, more than the limit of 65536")]
    TooLarge(usize),
    /// The envelope is not the expected JSON.
    #[error(
        "the signed manifest is not valid JSON of the form {{\"manifest\", \"signature\"}}: {0}"
    )]
    Envelope(String),
    /// A base64 field does not decode.
    #[error("the signed manifest's {0} field is not valid base64")]
    Base64(&'static str),
    /// The signature does not verify against the device's public key.
    #[error("the manifest's signature does not verify against the device's update public key")]
    BadSignature,
    /// The signed bytes are not a manifest.
    #[error("the signed manifest body is not valid manifest JSON: {0}")]
    Json(String),
    /// Another protocol version.
    #[error("the manifest is for update protocol version {0}, this device speaks version 2; update the krazy client that sent it")]
    Protocol(u32),
    /// `expires` is not after `signed_at`.
    #[error("the manifest expires before it was signed")]
    Expiry,
    /// `allow_downgrade` without `from_build_id`, with an expiry of more
    /// than an hour, or `from_build_id` without `allow_downgrade`.
    #[error("a downgrade manifest needs allow_downgrade, from_build_id and an expiry of at most one hour after signing")]
    Downgrade,
    /// A build id that is empty, too long or not printable ASCII.
    #[error(
        "the manifest's build id {0:?} is empty, longer than 128 bytes or not printable ASCII"
    )]
    BuildId(String),
    /// Not exactly one part of a kind.
    #[error(
        "the manifest must list exactly one root and one boot part, it lists {count} of {kind}"
    )]
    PartCount {
        /// The kind in question.
        kind: PartKind,
        /// How many were listed.
        count: usize,
    },
    /// A digest that is not 64 lowercase hex digits.
    #[error("the manifest's sha256 of the {0} part is not 64 lowercase hex digits")]
    Digest(PartKind),
    /// The manifest targets another architecture or platform.
    #[error("the manifest is for {want_arch}/{want_platform}, this device is {arch}/{platform}")]
    WrongTarget {
        /// The manifest's architecture.
        want_arch: Arch,
        /// The manifest's platform.
        want_platform: Platform,
        /// The device's architecture.
        arch: Arch,
        /// The device's platform.
        platform: Platform,
    },
    /// A key file that is not base64 of 32 bytes.
    #[error("the {0} key is not base64 of 32 bytes")]
    Key(&'static str),
}

/// The wire form of `PUT /update/manifest`:
/// `{"manifest": "<base64 of the manifest JSON bytes>", "signature": "<base64 of the 64-byte ed25519 signature of those bytes>"}`.
///
/// The signature covers the decoded manifest bytes exactly as sent, so the
/// device never re-serializes before checking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Base64 (standard alphabet, padded) of the manifest's JSON bytes.
    pub manifest: String,
    /// Base64 of the ed25519 signature over those bytes.
    pub signature: String,
}

impl SignedManifest {
    /// Signs `manifest` (its canonical JSON) with `key`.
    pub fn sign(manifest: &Manifest, key: &SecretKey) -> Self {
        let bytes = manifest.to_canonical_json();
        let sig = key.sign(&bytes);
        SignedManifest {
            manifest: B64.encode(&bytes),
            signature: B64.encode(sig.as_ref()),
        }
    }

    /// The envelope's JSON bytes (the `PUT /update/manifest` body).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an envelope, refusing more than [`MAX_ENVELOPE_BYTES`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Envelope(e.to_string()))
    }

    /// Signs the protocol-1 form of `manifest` (for a device that speaks
    /// only protocol 1).
    pub fn sign_v1(manifest: &Manifest, key: &SecretKey) -> Self {
        let bytes = serde_json::to_vec(&manifest.to_v1()).unwrap_or_default();
        let sig = key.sign(&bytes);
        SignedManifest {
            manifest: B64.encode(&bytes),
            signature: B64.encode(sig.as_ref()),
        }
    }

    /// Checks the signature with `key`, then parses and checks the manifest.
    /// Nothing of the manifest is looked at before the signature verifies.
    pub fn verify(&self, key: &PublicKey) -> Result<Manifest, ManifestError> {
        let body = self.verified_bytes(key)?;
        let m: Manifest = match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => {
                // A protocol-1 manifest signed by the right key: say which
                // versions meet instead of naming a missing field.
                #[derive(Deserialize)]
                struct Version {
                    protocol: u32,
                }
                return Err(match serde_json::from_slice::<Version>(&body) {
                    Ok(v) if v.protocol != PROTOCOL_VERSION => ManifestError::Protocol(v.protocol),
                    _ => ManifestError::Json(e.to_string()),
                });
            }
        };
        m.check()?;
        Ok(m)
    }

    /// Checks the signature of a protocol-1 envelope and parses it (what a
    /// protocol-1 device does; for tests and tools).
    pub fn verify_v1(&self, key: &PublicKey) -> Result<ManifestV1, ManifestError> {
        let body = self.verified_bytes(key)?;
        let m: ManifestV1 =
            serde_json::from_slice(&body).map_err(|e| ManifestError::Json(e.to_string()))?;
        if m.protocol != PROTOCOL_V1 {
            return Err(ManifestError::Protocol(m.protocol));
        }
        check_build_id(&m.build_id)?;
        check_parts(&m.parts)?;
        Ok(m)
    }

    fn verified_bytes(&self, key: &PublicKey) -> Result<Vec<u8>, ManifestError> {
        let body = B64
            .decode(self.manifest.as_bytes())
            .map_err(|_| ManifestError::Base64("manifest"))?;
        let sig = B64
            .decode(self.signature.as_bytes())
            .map_err(|_| ManifestError::Base64("signature"))?;
        UnparsedPublicKey::new(&signature::ED25519, &key.0)
            .verify(&body, &sig)
            .map_err(|_| ManifestError::BadSignature)?;
        Ok(body)
    }
}
