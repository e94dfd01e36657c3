//! Signed A/B network updates for krazy appliances: the protocol, the
//! device side (stream into the inactive slot, verify, arm a trial boot,
//! commit or roll back) and the client.
//!
//! ```
//! use krazy_update::protocol::*;
//!
//! // The client signs a manifest with the instance key...
//! let key = SecretKey::from_seed([1; 32]);
//! let manifest = Manifest {
//!     protocol: PROTOCOL_VERSION,
//!     build_id: "build-2".into(),
//!     arch: Arch::X86_64,
//!     platform: Platform::Pc,
//!     parts: vec![
//!         PartSpec::for_bytes(PartKind::Root, b"squashfs bytes"),
//!         PartSpec::for_bytes(PartKind::Boot, b"boot archive bytes"),
//!     ],
//! };
//! let body = SignedManifest::sign(&manifest, &key).to_json();
//!
//! // ...and the device checks it against the public key in its root image.
//! let envelope = SignedManifest::from_json(&body).unwrap();
//! assert_eq!(envelope.verify(&key.public()).unwrap(), manifest);
//! let stranger = SecretKey::from_seed([2; 32]).public();
//! assert!(envelope.verify(&stranger).is_err());
//! ```
//!
//! # Protocol, version 1
//!
//! All endpoints live in the device's web server (krazy-init), behind its
//! HTTP Basic authentication and over TLS when the image has a certificate.
//! State-changing requests (`PUT`, `POST`) must carry the `Content-Type`
//! given below: a cross-site page cannot send `application/json` or
//! `application/octet-stream` without a CORS preflight, so cached
//! credentials cannot be replayed by another site. Every error answer is
//! `application/json` [`protocol::ErrorBody`] `{"error": "<code>", "message":
//! "<sentence>"}`; the status codes per error are in [`device::Error::http_status`].
//!
//! | method, path | request | success answer |
//! |---|---|---|
//! | `GET /update/features` | none | 200, JSON [`protocol::Features`]: `protocol`, `arch` (`"x86_64"`/`"aarch64"`), `platform` (`"pc"`/`"pi3"`), `running_slot`, `committed_slot` (`"a"`/`"b"`), `build_id`, `trial` (`"none"`/`"armed"`/`"trial"`) |
//! | `PUT /update/manifest` | `Content-Type: application/json`, a [`protocol::SignedManifest`] of at most 64 KiB | 200, JSON [`protocol::Manifest`] as accepted. 403 `bad_signature` when the signature does not verify against the public key in the running root image (nothing is written), 422 `wrong_target` for another arch/platform, 409 `trial_running` while the running slot is an uncommitted trial |
//! | `PUT /update/root` | `Content-Type: application/octet-stream`, the root image (below) | 200, JSON [`protocol::PartWritten`]; 422 `hash_mismatch`/`size_mismatch` (the slot is then marked invalid), 409 `no_manifest` |
//! | `PUT /update/boot` | `Content-Type: application/octet-stream`, the boot part (below) | as for root; also 422 `boot_archive` / `boot_file_too_large` |
//! | `POST /update/switch` | `Content-Type: application/json`, body `{}` | 200, JSON [`protocol::Switched`]: a trial boot of the inactive slot is armed for the next reboot; 409 `slot_not_valid` unless every part of the manifest was verified |
//! | `GET /update/status` | none | 200, JSON [`protocol::Status`]: `build_id`, `running_slot`, `committed_slot`, `trial`, `slot_a`/`slot_b` (`build_id`, `state`: `valid`/`writing`/`invalid`/`unknown`, `reason`), `last_trial`: null or `{"outcome": "committed"\|"rolled_back"\|"pending", "reason", "slot", "build_id", "service", "log": [lines]}` |
//!
//! `POST /api/v1/reboot` belongs to krazy-init; after a switch it reboots
//! with [`device::Device::reboot_argument`].
//!
//! ## The signed manifest
//!
//! [`protocol::Manifest`] is JSON `{"protocol": 1, "build_id", "arch",
//! "platform", "parts": [{"name": "root"|"boot", "size", "sha256"}]}` with
//! exactly one part of each name. It is sent in an envelope
//! `{"manifest": "<base64 of the manifest's JSON bytes>", "signature":
//! "<base64 of the 64-byte ed25519 signature of exactly those bytes>"}`
//! (standard base64 alphabet with padding). Because the signature covers
//! the bytes as sent, no canonical re-encoding is needed to verify; the
//! client signs [`protocol::Manifest::to_canonical_json`]. Keys are text
//! files holding base64 of 32 bytes: the public key in the root image
//! (`/etc/krazy/update.pub`), the secret seed in the instance directory.
//!
//! ## Part wire formats
//!
//! - **root** (every platform): the slot's whole root file system image,
//!   raw. Its size must not exceed the slot's partition; bytes past it in
//!   the partition are left as they are.
//! - **boot on `pi3`**: the slot's whole boot partition image (FAT), raw,
//!   written over partition 2 (slot A) or 3 (slot B).
//! - **boot on `pc`**: a cpio archive in the "newc" format (`cpio -o -H
//!   newc`; magic `070701`, no CRC) of regular files named `vmlinuz`
//!   (required), `initrd` (optional) and `entry.conf` (required, the
//!   systemd-boot loader entry), each at most once, ended by `TRAILER!!!`;
//!   zero bytes after the trailer (cpio's block padding) are allowed. Each
//!   file is written in place into the slot's fixed-capacity file on the ESP
//!   (`krazy/<slot>/vmlinuz`, `krazy/<slot>/initrd`,
//!   `loader/entries/krazy-<slot>.conf`) and padded to its capacity (zeros
//!   for the kernel and initramfs, spaces for the entry); a file larger than
//!   its capacity is refused. See [`bootarchive`].
//!
//! The body of `PUT /update/root` and `/update/boot` is hashed and counted
//! while it is written in 1 MiB chunks (constant memory); the manifest's
//! size and SHA-256 for that part must match exactly.
//!
//! # The client
//!
//! [`client::Client`] pushes an update from the build host: blocking
//! HTTP/1.1 over TCP, TLS with the instance's certificate pinned, HTTP Basic
//! auth as user `krazy`; [`client::Client::update`] checks the features,
//! puts the manifest and streams the parts, switches, reboots and waits for
//! the new build to commit (or reports the rollback's reason and log).
//!
//! # Trial, health, commit, rollback
//!
//! [`bootflow::BootFlow`] is the platform seam (systemd-boot one-shot on
//! pc, firmware tryboot or a software one-shot on pi3), and
//! [`health::HealthGate`] the sans-IO decision of the new init: commit once
//! every boot service has run for `settle_seconds` and every health check
//! passes, roll back with a reason and the failing service's log tail past
//! the deadline.

pub mod bootarchive;
pub mod bootfiles;
pub mod bootflow;
pub mod client;
pub mod device;
pub mod dirdevice;
pub mod efivars;
pub mod health;
pub mod protocol;
pub mod state;
pub mod writer;

pub use protocol::{Manifest, PartKind, PublicKey, SecretKey, SignedManifest, Slot};
