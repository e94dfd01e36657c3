//! Protocol version 2: the JSON bodies of the `/update/*` endpoints, the
//! signed manifest and its envelope, and the ed25519 keys. [`ManifestV1`]
//! is the manifest of protocol 1, which the client still signs for devices
//! in the field that speak only that.
//!
//! Every type here is plain serde data; parsing untrusted bytes goes through
//! [`SignedManifest::from_json`] and [`SignedManifest::verify`], which bound
//! their input and never panic.

// Casts are decisions: this parses outside bytes.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fmt;

use serde::{Deserialize, Serialize};

mod keys;
mod manifest;

pub use keys::{PublicKey, SecretKey};
pub use manifest::{Manifest, ManifestError, ManifestV1, PartSpec, SignedManifest};

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

pub use krazy_disk::{Arch, Platform};

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
    hex::encode(bytes)
}

pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

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
