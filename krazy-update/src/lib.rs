//! Signed A/B network updates for krazy appliances: the protocol, the
//! device side (stream into the inactive slot, verify, arm a trial boot,
//! commit or roll back) and the client.
//!
//! ```
//! use krazy_update::protocol::*;
//!
//! // The client signs a manifest with the instance key...
//! let key = SecretKey::from_seed([1; 32]);
//! let signed_at = 1_790_000_000; // Unix seconds
//! let manifest = Manifest::new(
//!     "build-2",
//!     Arch::X86_64,
//!     Platform::Pc,
//!     Slot::B,   // the slot the parts were made for
//!     signed_at, // the version: by default the signing time
//!     signed_at, // expires 7 days later
//!     vec![
//!         PartSpec::for_bytes(PartKind::Root, b"squashfs bytes"),
//!         PartSpec::for_bytes(PartKind::Boot, b"boot archive bytes"),
//!     ],
//! );
//! let body = SignedManifest::sign(&manifest, &key).to_json();
//!
//! // ...and the device checks it against the public key in its root image.
//! let envelope = SignedManifest::from_json(&body).unwrap();
//! assert_eq!(envelope.verify(&key.public()).unwrap(), manifest);
//! let stranger = SecretKey::from_seed([2; 32]).public();
//! assert!(envelope.verify(&stranger).is_err());
//! ```
//!
//! # Protocol, version 2
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
//! | `GET /update/features` | none | 200, JSON [`protocol::Features`]: `protocol` (2), `arch` (`"x86_64"`/`"aarch64"`), `platform` (`"pc"`/`"pi3"`), `running_slot`, `committed_slot` (`"a"`/`"b"`), `build_id`, `trial` (`"none"`/`"armed"`/`"trial"`), `committed_version` |
//! | `PUT /update/manifest` | `Content-Type: application/json`, a [`protocol::SignedManifest`] of at most 64 KiB | 200, JSON [`protocol::Accepted`] `{"upload_id", "manifest"}`: the inactive slot is now unbootable and being written |
//! | `PUT /update/root` | `Content-Type: application/octet-stream`, `Krazy-Upload-Id: <upload_id>`, the root image (below) | 200, JSON [`protocol::PartWritten`] |
//! | `PUT /update/boot` | as for root, the boot part (below) | as for root |
//! | `POST /update/switch` | `Content-Type: application/json`, `Krazy-Upload-Id`, body `{}` | 200, JSON [`protocol::Switched`]: the slot's loader entry (pc) is written back and a trial boot of it is armed for the next reboot |
//! | `POST /update/cancel` | `Content-Type: application/json`, body `{}` | 200, JSON [`protocol::Cancelled`] `{"disarmed", "abandoned_upload", "message"}`: an armed trial is disarmed and an upload abandoned; the inactive slot is left unbootable |
//! | `GET /update/status` | none | 200, JSON [`protocol::Status`]: `build_id`, `running_slot`, `committed_slot`, `trial`, `slot_a`/`slot_b` (`build_id`, `state`: `valid`/`writing`/`invalid`/`unknown`, `reason`), `last_trial`: null or `{"outcome": "committed"\|"rolled_back"\|"pending", "reason", "slot", "build_id", "service", "log": [lines]}`, `committed_version` |
//!
//! What is refused, and why (status, `error` code):
//!
//! | when | answer |
//! |---|---|
//! | the signature does not verify against the update key in the running root (nothing is written) | 403 `bad_signature` |
//! | the manifest's `expires` has passed by the device's clock (there is no not-before check: a Pi's clock may lag) | 403 `expired` |
//! | the manifest is for another arch/platform | 422 `wrong_target` |
//! | the manifest is for protocol 1 (an old client), or malformed | 400 `protocol_version` / `bad_manifest` |
//! | the manifest's `slot` is not the inactive slot | 409 `wrong_slot` |
//! | `version` is not greater than the committed build's (older builds and replays), or a downgrade signed for another running build | 409 `downgrade` |
//! | a trial is armed (until it ran or was cancelled): manifests, parts and switch | 409 `trial_armed` |
//! | the running boot is an uncommitted trial: manifests, parts, switch, cancel | 409 `trial_running` |
//! | a part or switch whose `Krazy-Upload-Id` is not the accepted manifest's | 409 `upload_mismatch` |
//! | a part without an accepted manifest | 409 `no_manifest` |
//! | a part whose size or SHA-256 differs (the slot is marked invalid and stays unbootable) | 422 `hash_mismatch` / `size_mismatch` (413 `part_too_large`), 422 `boot_archive` / `boot_file_too_large` |
//! | a switch before every part of the manifest verified | 409 `slot_not_valid` |
//!
//! **Bootable**, per boot flow: on pc, the `default` of `loader/loader.conf`,
//! the `LoaderEntryOneShot` and `LoaderEntryDefault` EFI variables, and any
//! loader entry with a `linux`/`efi` line (systemd-boot's menu lists those);
//! on pi3, the `[all]` and `[tryboot]` partitions of `autoboot.txt` (both
//! flows). The invariant: a slot any byte of an unverified upload went into
//! is never bootable. Accepting a manifest makes the inactive slot
//! unbootable first (its loader entry blanked, one-shot removed; or
//! autoboot.txt pointing only at the committed slot); the pc boot part's
//! loader entry is held back until `switch`, after every part verified,
//! writes it and arms the trial.
//!
//! `POST /api/v1/reboot` belongs to krazy-init; after a switch it reboots
//! with [`device::Device::reboot_argument`].
//!
//! ## The signed manifest
//!
//! [`protocol::Manifest`] is JSON `{"protocol": 2, "build_id", "arch",
//! "platform", "slot", "version", "signed_at", "expires", "parts": [{"name":
//! "root"|"boot", "size", "sha256"}]}` with exactly one part of each name,
//! plus `"allow_downgrade": true, "from_build_id"` for a deliberate
//! downgrade (valid for at most an hour after `signed_at`, and only on the
//! running build it names). `version` is monotonic (by default the signing
//! time in Unix seconds); the device keeps the committed build's version
//! across updates and power cuts, and when its state is lost falls back to
//! the running root's `/etc/krazy/min-version` (its build epoch,
//! `SOURCE_DATE_EPOCH`), never to zero. It is sent in an envelope
//! `{"manifest": "<base64 of the manifest's JSON bytes>", "signature":
//! "<base64 of the 64-byte ed25519 signature of exactly those bytes>"}`
//! (standard base64 alphabet with padding). Because the signature covers
//! the bytes as sent, no canonical re-encoding is needed to verify; the
//! client signs [`protocol::Manifest::to_canonical_json`]. Keys are text
//! files holding base64 of 32 bytes: the public key in the root image
//! (`/etc/krazy/update.pub`), the secret seed in the instance directory.
//!
//! ## Protocol 1
//!
//! Devices built before protocol 2 report `"protocol": 1` in their
//! features. The client still updates them: it signs
//! [`protocol::ManifestV1`] (`protocol`, `build_id`, `arch`, `platform`,
//! `parts`) with [`protocol::SignedManifest::sign_v1`] and sends no upload
//! ids; the parts are the same bytes. Once such a device runs a protocol-2
//! build, every rule above applies. A protocol-1 client meeting a
//! protocol-2 device stops with "it speaks update protocol 2, this client
//! 1"; a protocol-1 manifest sent anyway gets 400 `protocol_version`.
//!
//! ## Part wire formats
//!
//! - **root** (every platform): the slot's whole root file system image,
//!   raw. Its size must not exceed the slot's partition; bytes past it in
//!   the partition are left as they are.
//! - **boot on `pi3`**: a cpio "newc" archive of the slot's boot
//!   partition files (regular files and directories, relative paths without
//!   `.` or `..`, at most 4096 members and the partition's size in all; see
//!   [`bootpart`]). The device holds it in memory, verifies the whole part,
//!   and only then writes a fresh FAT over partition 2 (slot A) or 3 (slot
//!   B), keeping that volume's label, volume id and hidden sectors.
//!   Protocol 1 sent the whole partition image raw.
//! - **boot on `pc`**: a cpio archive in the "newc" format (`cpio -o -H
//!   newc`; magic `070701`, no CRC) of regular files named `vmlinuz`
//!   (required), `initrd` (optional) and `entry.conf` (required, the
//!   systemd-boot loader entry), each at most once, ended by `TRAILER!!!`;
//!   zero bytes after the trailer (cpio's block padding) are allowed. The
//!   kernel and initramfs are written in place into the slot's
//!   fixed-capacity files on the ESP (`krazy/<slot>/vmlinuz`,
//!   `krazy/<slot>/initrd`) and padded to their capacity with zeros; the
//!   entry is held (at most its file's capacity) and written to
//!   `loader/entries/krazy-<slot>.conf`, padded with spaces, only by the
//!   switch. A file larger than its capacity is refused. The entry names
//!   its slot's root, which is why the manifest names the slot. See
//!   [`bootarchive`].
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
pub mod bootpart;
pub mod client;
pub mod device;
pub mod dirdevice;
pub mod efivars;
pub mod health;
pub mod protocol;
pub mod state;
pub mod writer;

pub use protocol::{Manifest, PartKind, PublicKey, SecretKey, SignedManifest, Slot};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
