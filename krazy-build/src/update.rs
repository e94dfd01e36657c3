//! The client side of an update: the parts of a new build (the root
//! squashfs and the boot part for the target slot), a manifest signed with
//! the instance's key, and pushing them with krazy-update's client.

use std::path::Path;
use std::time::Duration;

use krazy_disk::{InstanceId, PartitionTable, Role};
use krazy_update::bootarchive::{self, BootFile};
use krazy_update::client::{Client, ClientError, Committed, Progress};
use krazy_update::protocol::{
    Arch, Manifest, PartKind, PartSpec, Platform as UPlatform, SecretKey, SignedManifest, Slot,
    PROTOCOL_VERSION,
};

use crate::config::Platform;
use crate::image::{self, BootTrees, ImageError, Inputs, Trees};

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

/// A new build ready to push.
#[derive(Debug, Clone)]
pub struct UpdateParts {
    /// The manifest.
    pub manifest: Manifest,
    /// Its signed envelope (the `PUT /update/manifest` body).
    pub signed: Vec<u8>,
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

/// The parts of `trees` for `slot`, signed with `key`.
pub fn parts(
    inputs: &Inputs,
    trees: &Trees,
    layout: &krazy_disk::Layout,
    slot: Slot,
    key: &SecretKey,
) -> Result<UpdateParts, UpdateError> {
    let config = &inputs.config;
    let root = image::root_image(trees, inputs.mtime)?;
    let part_err = |reason: String| UpdateError::Part {
        part: "boot",
        reason,
    };
    let boot = match &trees.boot {
        BootTrees::Pc { .. } => {
            let id = InstanceId::new(config.instance_id.clone()).map_err(ImageError::from)?;
            let table = PartitionTable::from_layout(layout, &id).map_err(ImageError::from)?;
            let guid = |r| table.entry(r).map(|e| e.guid).unwrap_or_default();
            let (s, role) = match slot {
                Slot::A => ('a', Role::RootA),
                Slot::B => ('b', Role::RootB),
            };
            let cmdline = image::kernel_cmdline(config, guid(role), guid(Role::Perm), s);
            let entry = image::loader_entry(
                &config.hostname,
                &inputs.kernel.version,
                s,
                &cmdline,
                trees.initramfs.is_some(),
            );
            let kernel =
                std::fs::read(&inputs.kernel.vmlinuz).map_err(|e| part_err(e.to_string()))?;
            let mut files: Vec<(BootFile, &[u8])> = vec![(BootFile::Vmlinuz, &kernel)];
            if let Some(i) = &trees.initramfs {
                files.push((BootFile::Initrd, i));
            }
            files.push((BootFile::Entry, entry.as_bytes()));
            let mut out = Vec::new();
            bootarchive::write_archive(&mut out, &files).map_err(|e| part_err(e.to_string()))?;
            out
        }
        BootTrees::Pi3 { boot_a, boot_b, .. } => {
            let (tree, role) = match slot {
                Slot::A => (boot_a, Role::BootA),
                Slot::B => (boot_b, Role::BootB),
            };
            let p = layout
                .partition(role)
                .ok_or_else(|| part_err("no boot partition".into()))?;
            let mut dev = krazy_fs::MemDevice::zeroed(p.size_bytes() as usize);
            let opts = krazy_fs::fat::FatOptions {
                timestamp: Some(inputs.mtime),
                device_zeroed: true,
                ..Default::default()
            };
            krazy_fs::fat::write(&mut dev, tree, &opts).map_err(|e| part_err(e.to_string()))?;
            dev.into_vec()
        }
    };
    let (arch, platform) = match config.platform {
        Platform::Pc => (Arch::X86_64, UPlatform::Pc),
        Platform::Pi3 => (Arch::Aarch64, UPlatform::Pi3),
    };
    let manifest = Manifest {
        protocol: PROTOCOL_VERSION,
        build_id: trees.build_id.clone(),
        arch,
        platform,
        parts: vec![
            PartSpec::for_bytes(PartKind::Root, &root),
            PartSpec::for_bytes(PartKind::Boot, &boot),
        ],
    };
    let signed = SignedManifest::sign(&manifest, key).to_json();
    Ok(UpdateParts {
        manifest,
        signed,
        root,
        boot,
    })
}

/// Pushes `parts` to the device behind `client`: manifest, root, boot,
/// switch, reboot, and waits up to `timeout` for the commit.
pub fn push(
    client: &Client,
    parts: &UpdateParts,
    progress: &mut dyn FnMut(Progress),
    timeout: Duration,
) -> Result<Committed, UpdateError> {
    let mut root = &parts.root[..];
    let mut boot = &parts.boot[..];
    let mut list: [(PartKind, &mut dyn std::io::Read); 2] =
        [(PartKind::Root, &mut root), (PartKind::Boot, &mut boot)];
    Ok(client.update(&parts.manifest, &parts.signed, &mut list, progress, timeout)?)
}
