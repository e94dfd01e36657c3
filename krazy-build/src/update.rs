//! The client side of an update: the parts of a new build (the root
//! squashfs and the boot part for the target slot), a manifest signed with
//! the instance's key, and pushing them with krazy-update's client.

use std::path::Path;
use std::time::Duration;

use krazy_update::client::{Client, ClientError, Committed, Progress, Signed};
use krazy_update::protocol::{
    Manifest, PartKind, PartSpec, SecretKey, SignedManifest, Slot, DEFAULT_EXPIRY_SECONDS,
    MAX_DOWNGRADE_EXPIRY_SECONDS, PROTOCOL_VERSION,
};

use crate::image::{self, ImageError, Inputs, Trees};

/// Why an update could not be made or pushed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The image could not be assembled.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The signing key is missing or malformed.
    #[error("the update key {}: {reason}; `krazy new` writes it to secrets/update-key.pk8", path.display())]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The device refused or failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing a part in memory failed.
    #[error("making the {part} part: {reason}")]
    Part {
        /// The part.
        part: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// What the signature says besides the parts: the monotonic version, the
/// validity and, for a deliberate downgrade, the build it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// The version (default: the signing time in Unix seconds).
    pub version: u64,
    /// The signing time (Unix seconds).
    pub signed_at: u64,
    /// Seconds the manifest stays valid after signing (default 7 days).
    pub valid_for: u64,
    /// A deliberate downgrade of the running build with this id (valid for
    /// at most an hour).
    pub downgrade_from: Option<String>,
    /// The update protocol the device speaks (its features say): the pi3
    /// boot part is a file archive from protocol 2 on, the whole partition
    /// image before.
    pub protocol: u32,
}

impl Signing {
    /// Signed now, versioned by the time, valid for 7 days.
    pub fn now() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Signing {
            version: t,
            signed_at: t,
            valid_for: DEFAULT_EXPIRY_SECONDS,
            downgrade_from: None,
            protocol: PROTOCOL_VERSION,
        }
    }

    /// A downgrade of `running_build`: valid for at most an hour.
    pub fn downgrade(mut self, running_build: &str) -> Self {
        self.downgrade_from = Some(running_build.to_string());
        self.valid_for = self.valid_for.min(MAX_DOWNGRADE_EXPIRY_SECONDS);
        self
    }
}

/// A new build ready to push.
#[derive(Debug, Clone)]
pub struct UpdateParts {
    /// The manifest.
    pub manifest: Manifest,
    /// Its signed envelope (the `PUT /update/manifest` body).
    pub signed: Vec<u8>,
    /// The protocol-1 envelope of the same parts, for devices that speak
    /// only protocol 1.
    pub signed_v1: Vec<u8>,
    /// The root squashfs.
    pub root: Vec<u8>,
    /// The boot part for the target slot.
    pub boot: Vec<u8>,
}

/// Reads `secrets/update-key.pk8`.
pub fn signing_key(secrets_dir: &Path) -> Result<SecretKey, UpdateError> {
    let path = secrets_dir.join("update-key.pk8");
    let der = std::fs::read(&path).map_err(|e| UpdateError::Key {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    SecretKey::from_pkcs8(&der).map_err(|e| UpdateError::Key {
        path,
        reason: e.to_string(),
    })
}

/// The parts of `trees` for `slot`, signed with `key` as `signing` says.
/// The boot part comes from the board ([`crate::board::Board::update_boot_part`]),
/// from the same functions as a fresh image's boot partition.
pub fn parts(
    inputs: &Inputs,
    trees: &Trees,
    slot: Slot,
    key: &SecretKey,
    signing: &Signing,
) -> Result<UpdateParts, UpdateError> {
    let config = &inputs.config;
    let root = image::root_image(trees)?;
    let boot = crate::board::for_platform(trees.layout.platform()).update_boot_part(
        inputs,
        trees,
        slot,
        signing.protocol,
    )?;
    let (arch, platform) = (config.platform.arch(), config.platform);
    let mut manifest = Manifest::new(
        trees.build_id.clone(),
        arch,
        platform,
        slot,
        signing.version,
        signing.signed_at,
        vec![
            PartSpec::for_bytes(PartKind::Root, &root),
            PartSpec::for_bytes(PartKind::Boot, &boot),
        ],
    );
    manifest.expires = signing.signed_at.saturating_add(signing.valid_for.max(1));
    if let Some(from) = &signing.downgrade_from {
        manifest.allow_downgrade = true;
        manifest.from_build_id = Some(from.clone());
    }
    let signed = SignedManifest::sign(&manifest, key).to_json();
    let signed_v1 = SignedManifest::sign_v1(&manifest, key).to_json();
    Ok(UpdateParts {
        manifest,
        signed,
        signed_v1,
        root,
        boot,
    })
}

/// Pushes `parts` to the device behind `client`: manifest, root, boot,
/// switch, reboot, and waits up to `timeout` for the commit. A trial armed
/// earlier is cancelled first and `notice` is told so.
pub fn push(
    client: &Client,
    parts: &UpdateParts,
    progress: &mut dyn FnMut(Progress),
    notice: &mut dyn FnMut(&str),
    timeout: Duration,
) -> Result<Committed, UpdateError> {
    let mut root = &parts.root[..];
    let mut boot = &parts.boot[..];
    let mut list: [(PartKind, &mut dyn std::io::Read); 2] =
        [(PartKind::Root, &mut root), (PartKind::Boot, &mut boot)];
    let signed = Signed {
        manifest: &parts.manifest,
        v2: &parts.signed,
        v1: Some(&parts.signed_v1),
    };
    Ok(client.update(signed, &mut list, progress, notice, timeout)?)
}
