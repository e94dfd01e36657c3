//! Protocol version 2: the JSON bodies of the `/update/*` endpoints, the
//! signed manifest and its envelope, and the ed25519 keys. [`ManifestV1`]
//! is the manifest of protocol 1, which the client still signs for devices
//! in the field that speak only that.
//!
//! Every type here is plain serde data; parsing untrusted bytes goes through
//! [`SignedManifest::from_json`] and [`SignedManifest::verify`], which bound
//! their input and never panic.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The older protocol the client still speaks to devices that offer only it.
pub const PROTOCOL_V1: u32 = 1;

/// How long a signed manifest is accepted by default (seconds after signing).
pub const DEFAULT_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;

/// The longest validity of a manifest that allows a downgrade (seconds).
pub const MAX_DOWNGRADE_EXPIRY_SECONDS: u64 = 3600;

/// The header that carries the upload id on parts and the switch.
pub const UPLOAD_ID_HEADER: &str = "krazy-upload-id";

/// The largest signed manifest envelope accepted (bytes).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// The longest build id accepted (bytes).
pub const MAX_BUILD_ID_BYTES: usize = 128;

/// One of the two A/B slots (a root partition plus its boot files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A (root p2 on pc, p4 on pi3).
    A,
    /// Slot B (root p3 on pc, p5 on pi3).
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`, as in file names and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CPU architecture an image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// 64-bit x86 (`"x86_64"`).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm (`"aarch64"`).
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// A board family: decides the partition layout and the boot flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A UEFI PC or VM booting systemd-boot from an ESP.
    Pc,
    /// A Raspberry Pi 3 booting through the firmware and autoboot.txt.
    Pi3,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Pc => "pc",
            Platform::Pi3 => "pi3",
        })
    }
}

/// Which part of a slot a `PUT` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// The root file system image (squashfs), `PUT /update/root`.
    Root,
    /// The slot's boot files, `PUT /update/boot` (see the crate docs for the
    /// wire format per platform).
    Boot,
}

impl PartKind {
    /// `"root"` or `"boot"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartKind::Root => "root",
            PartKind::Boot => "boot",
        }
    }
}

impl fmt::Display for PartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the device is in a trial boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Running the committed slot; nothing armed.
    None,
    /// `POST /update/switch` armed a trial of the inactive slot for the next reboot.
    Armed,
    /// This boot is a trial of an uncommitted slot: health decides.
    Trial,
}

/// `GET /update/features`: what the device is and runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// Always [`PROTOCOL_VERSION`] for this crate.
    pub protocol: u32,
    /// The device's CPU architecture.
    pub arch: Arch,
    /// The device's platform.
    pub platform: Platform,
    /// The slot the running system booted from.
    pub running_slot: Slot,
    /// The slot any reset boots.
    pub committed_slot: Slot,
    /// The running system's build id.
    pub build_id: String,
    /// The trial state.
    pub trial: TrialState,
    /// The version of the committed build (protocol 2): a manifest must
    /// carry a greater one unless it is a signed downgrade. 0 from a
    /// protocol-1 device.
    #[serde(default)]
    pub committed_version: u64,
}

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
        let sig = key.pair.sign(&bytes);
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
        let sig = key.pair.sign(&bytes);
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

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }
}

/// A slot's state as the device records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Holds a complete, verified build (or the running one).
    Valid,
    /// A manifest was accepted and parts are being written: not bootable yet.
    Writing,
    /// A part failed verification or a trial of it failed: not bootable.
    Invalid,
    /// Nothing is known about the slot (a fresh image's other slot).
    Unknown,
}

/// One slot in `GET /update/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The build in the slot, when known.
    pub build_id: Option<String>,
    /// Whether it can be booted.
    pub state: SlotState,
    /// Why it is invalid, if it is.
    pub reason: Option<String>,
}

/// How the last trial boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialOutcome {
    /// The trial slot passed the health gate and is committed.
    Committed,
    /// The trial failed and the committed slot runs again.
    RolledBack,
    /// Armed or running, not decided yet.
    Pending,
}

/// The last trial: `{"outcome": ..., "reason": ...}` plus detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTrial {
    /// How it ended.
    pub outcome: TrialOutcome,
    /// After a rollback, why.
    pub reason: Option<String>,
    /// The slot tried.
    pub slot: Slot,
    /// The build tried.
    pub build_id: String,
    /// After a rollback caused by a service, that service's name.
    #[serde(default)]
    pub service: Option<String>,
    /// After a rollback caused by a service, its last log lines.
    #[serde(default)]
    pub log: Vec<String>,
}

/// `GET /update/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The running build's id.
    pub build_id: String,
    /// The slot the running system booted from.
    pub running_slot: Slot,
    /// The slot any reset boots.
    pub committed_slot: Slot,
    /// The trial state.
    pub trial: TrialState,
    /// Slot A.
    pub slot_a: SlotStatus,
    /// Slot B.
    pub slot_b: SlotStatus,
    /// The last trial, or null before the first.
    pub last_trial: Option<LastTrial>,
    /// The committed build's version (0 from a protocol-1 device).
    #[serde(default)]
    pub committed_version: u64,
}

/// Body of a successful `PUT /update/manifest` (protocol 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The id every part and the switch of this upload must carry in the
    /// `Krazy-Upload-Id` header.
    pub upload_id: String,
    /// The manifest as accepted.
    pub manifest: Manifest,
}

/// Body of a successful `POST /update/cancel`: what was undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    /// The armed trial that was disarmed, if there was one.
    pub disarmed: Option<SlotBuild>,
    /// The upload that was abandoned (manifest accepted, not switched), if any.
    pub abandoned_upload: Option<SlotBuild>,
    /// A sentence saying what was undone (or that there was nothing to undo).
    pub message: String,
}

/// A slot and the build in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotBuild {
    /// The slot.
    pub slot: Slot,
    /// The build.
    pub build_id: String,
}

/// Body of every non-2xx answer: `{"error": "<code>", "message": "<sentence>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code (`bad_signature`, `hash_mismatch`, ...).
    pub error: String,
    /// A human-readable sentence.
    pub message: String,
}

/// Body of a successful `PUT /update/root` or `/update/boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartWritten {
    /// The part.
    pub part: PartKind,
    /// The slot written.
    pub slot: Slot,
    /// Bytes received and written.
    pub size: u64,
    /// SHA-256 of them (equal to the manifest's).
    pub sha256: String,
    /// Whether the slot now holds every part of the manifest.
    pub slot_complete: bool,
}

/// Body of a successful `POST /update/switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// The slot armed for a trial.
    pub slot: Slot,
    /// Its build.
    pub build_id: String,
    /// The reboot(2) argument the reboot should pass (`"0 tryboot"` on a
    /// Pi with kernel tryboot support), if any.
    pub reboot_argument: Option<String>,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_from_ring_gives_the_same_key() {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let key = SecretKey::from_pkcs8(doc.as_ref()).unwrap();
        use ring::signature::KeyPair;
        assert_eq!(&key.public().0[..], pair.public_key().as_ref());
        let mut bad = doc.as_ref().to_vec();
        bad[20] ^= 1;
        assert!(SecretKey::from_pkcs8(&bad).is_err());
        assert!(SecretKey::from_pkcs8(&bad[..40]).is_err());
    }

    fn manifest() -> Manifest {
        Manifest::new(
            "2026-11-02T10:00:00Z-abc",
            Arch::X86_64,
            Platform::Pc,
            Slot::B,
            1_790_000_000,
            1_790_000_000,
            vec![
                PartSpec::for_bytes(PartKind::Root, b"root"),
                PartSpec::for_bytes(PartKind::Boot, b"boot"),
            ],
        )
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SecretKey::from_seed([7; 32]);
        let env = SignedManifest::sign(&manifest(), &key);
        let parsed = SignedManifest::from_json(&env.to_json()).unwrap();
        assert_eq!(parsed.verify(&key.public()).unwrap(), manifest());
        // Another key is refused.
        let other = SecretKey::from_seed([8; 32]).public();
        assert_eq!(parsed.verify(&other), Err(ManifestError::BadSignature));
    }

    #[test]
    fn tampered_manifest_is_refused() {
        let key = SecretKey::from_seed([7; 32]);
        let env = SignedManifest::sign(&manifest(), &key);
        let mut body = B64.decode(&env.manifest).unwrap();
        let at = body.iter().position(|&b| b == b'a').unwrap();
        body[at] = b'b';
        let forged = SignedManifest {
            manifest: B64.encode(&body),
            signature: env.signature.clone(),
        };
        assert_eq!(
            forged.verify(&key.public()),
            Err(ManifestError::BadSignature)
        );
    }

    #[test]
    fn wire_names_are_the_documented_ones() {
        let f = Features {
            protocol: 1,
            arch: Arch::Aarch64,
            platform: Platform::Pi3,
            running_slot: Slot::A,
            committed_slot: Slot::B,
            build_id: "x".into(),
            trial: TrialState::Trial,
            committed_version: 7,
        };
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(
            j,
            r#"{"protocol":1,"arch":"aarch64","platform":"pi3","running_slot":"a","committed_slot":"b","build_id":"x","trial":"trial","committed_version":7}"#
        );
        // A protocol-1 device's features (no committed_version) still parse.
        let v1: Features = serde_json::from_str(
            r#"{"protocol":1,"arch":"aarch64","platform":"pi3","running_slot":"a","committed_slot":"b","build_id":"x","trial":"trial"}"#,
        )
        .unwrap();
        assert_eq!(v1.committed_version, 0);
        let lt = LastTrial {
            outcome: TrialOutcome::RolledBack,
            reason: Some("r".into()),
            slot: Slot::B,
            build_id: "y".into(),
            service: None,
            log: vec![],
        };
        let j = serde_json::to_value(&lt).unwrap();
        assert_eq!(j["outcome"], "rolled_back");
        assert_eq!(j["reason"], "r");
    }

    #[test]
    fn manifest_checks() {
        let mut m = manifest();
        m.parts[0].sha256 = m.parts[0].sha256.to_uppercase();
        assert_eq!(m.check(), Err(ManifestError::Digest(PartKind::Root)));
        let mut m = manifest();
        m.parts.pop();
        assert!(matches!(m.check(), Err(ManifestError::PartCount { .. })));
        let mut m = manifest();
        m.build_id = "has space".into();
        assert!(matches!(m.check(), Err(ManifestError::BuildId(_))));
        let mut m = manifest();
        m.protocol = 1;
        assert_eq!(m.check(), Err(ManifestError::Protocol(1)));
        let mut m = manifest();
        m.expires = m.signed_at;
        assert_eq!(m.check(), Err(ManifestError::Expiry));
        // A downgrade names the build it applies to and lives an hour at most.
        let mut m = manifest();
        m.allow_downgrade = true;
        assert_eq!(m.check(), Err(ManifestError::Downgrade));
        m.from_build_id = Some("v3".into());
        assert_eq!(m.check(), Err(ManifestError::Downgrade));
        m.expires = m.signed_at + MAX_DOWNGRADE_EXPIRY_SECONDS;
        assert_eq!(m.check(), Ok(()));
        m.allow_downgrade = false;
        assert_eq!(m.check(), Err(ManifestError::Downgrade));
    }

    #[test]
    fn protocol_1_forms() {
        let key = SecretKey::from_seed([7; 32]);
        let m = manifest();
        // What a protocol-1 device reads: exactly its five fields.
        let v1 = SignedManifest::sign_v1(&m, &key);
        let body = B64.decode(&v1.manifest).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
        assert_eq!(j["protocol"], 1);
        assert_eq!(v1.verify_v1(&key.public()).unwrap(), m.to_v1());
        // This device refuses it, naming both versions.
        let e = v1.verify(&key.public()).unwrap_err();
        assert_eq!(e, ManifestError::Protocol(1));
        assert!(e.to_string().contains("version 1") && e.to_string().contains("version 2"));
        // Downgrade fields are absent from an ordinary manifest's JSON.
        let text = String::from_utf8(m.to_canonical_json()).unwrap();
        assert!(
            !text.contains("downgrade") && !text.contains("from_build_id"),
            "{text}"
        );
    }

    #[test]
    fn keys_round_trip_through_text() {
        let k = SecretKey::generate().unwrap();
        let k2 = SecretKey::from_text(&k.to_text()).unwrap();
        assert_eq!(k.public(), k2.public());
        assert_eq!(
            PublicKey::from_text(&k.public().to_text()).unwrap(),
            k.public()
        );
        assert!(PublicKey::from_text("AAAA").is_err());
    }

    #[test]
    fn oversized_envelope_is_refused() {
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            SignedManifest::from_json(&big),
            Err(ManifestError::TooLarge(MAX_ENVELOPE_BYTES + 1))
        );
    }
}
