//! The device side as a framework-agnostic service: [`Device`] has one
//! method per endpoint, returning typed values or an [`Error`] that knows
//! its HTTP status, so a web server mounts it in a few lines.
//!
//! The running slot and the committed slot are never written: parts go to
//! the inactive slot only while the running slot is the committed one.
//!
//! Verify, then activate: accepting a manifest first makes the inactive
//! slot unbootable ([`BootFlow::disarm`], and on pc its loader entry is
//! blanked); parts stream into it while it cannot be booted; only
//! [`Device::switch`], after every part of that manifest verified, writes
//! the loader entry back and arms the trial. While a trial is armed or
//! running nothing is written. A manifest must carry a version greater than
//! the committed build's and must not have expired.

mod error;
mod route;
mod trial;

use std::io::{self, Read};
use std::path::PathBuf;

use krazy_fs::BlockDevice;

use crate::bootarchive::{self, ArchiveError};
use crate::bootfiles::BootFiles;
use crate::bootflow::{BootFlow, FlowError};
use crate::bootpart;
use crate::protocol::*;
use crate::state::{self, Armed, Pending, State};
use crate::writer::{self, VerifyError, Verifying};

pub use error::Error;
pub use route::Route;

/// What the device is and where it keeps its state.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The CPU architecture.
    pub arch: Arch,
    /// The platform.
    pub platform: Platform,
    /// The running build's id (from the root image).
    pub build_id: String,
    /// The slot the running system booted from (from `root=` on the
    /// kernel command line).
    pub running: Slot,
    /// The update public key (from the root image, `/etc/krazy/update.pub`).
    pub public_key: PublicKey,
    /// Where `update.json` lives (`/perm/krazy`).
    pub state_dir: PathBuf,
    /// The running root's version floor (`/etc/krazy/min-version`, its
    /// build epoch): what the device refuses to go below when its update
    /// state is lost.
    pub min_version: u64,
}

/// Where the boot part of a slot goes.
pub enum BootStorage {
    /// pc: the ESP, with each slot's fixed-capacity files.
    Esp(Box<dyn BootFiles + Send>),
    /// pi3: each slot's whole boot partition.
    Partitions {
        /// Partition 2.
        a: Box<dyn BlockDevice + Send>,
        /// Partition 3.
        b: Box<dyn BlockDevice + Send>,
    },
}

/// The slots' block devices.
pub struct Storage {
    /// Slot A's root partition.
    pub root_a: Box<dyn BlockDevice + Send>,
    /// Slot B's root partition.
    pub root_b: Box<dyn BlockDevice + Send>,
    /// The boot side.
    pub boot: BootStorage,
}

/// The update service of one device.
pub struct Device {
    cfg: DeviceConfig,
    storage: Storage,
    flow: Box<dyn BootFlow + Send>,
    state: State,
    committed: Slot,
    trial: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("cfg", &self.cfg)
            .field("flow", &self.flow.name())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn flow_err(flow: &dyn BootFlow) -> impl FnOnce(FlowError) -> Error + '_ {
    move |source| Error::Flow {
        flow: flow.name(),
        source,
    }
}

/// Maps an archive reader's failure: past the manifest's size or short of
/// it is a size mismatch, anything else the archive's own error.
fn archive_result<T, R: Read>(
    kind: PartKind,
    slot: Slot,
    v: &Verifying<R>,
    r: Result<T, ArchiveError>,
) -> Result<T, Error> {
    let verr = |source| Error::Verify { slot, source };
    match r {
        Ok(t) => Ok(t),
        Err(_) if v.overrun() => Err(verr(VerifyError::TooLong {
            part: kind.to_string(),
            size: v.size(),
        })),
        Err(ArchiveError::Read(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(verr(VerifyError::TooShort {
                part: kind.to_string(),
                got: v.count(),
                size: v.size(),
            }))
        }
        Err(source) => Err(Error::Archive { slot, source }),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_upload_id() -> Result<String, Error> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Error::Random)?;
    Ok(hex(&b))
}

impl Device {
    /// Opens the service at boot: runs the flow's early step, learns the
    /// committed slot and whether this boot is a trial, and settles what the
    /// last boot left in the state (an armed trial that did not come up is
    /// reported as rolled back; an interrupted upload leaves its slot invalid).
    pub fn open(
        cfg: DeviceConfig,
        storage: Storage,
        mut flow: Box<dyn BootFlow + Send>,
    ) -> Result<Self, Error> {
        let running = cfg.running;
        flow.on_boot(running).map_err(flow_err(&*flow))?;
        let committed = flow.committed().map_err(flow_err(&*flow))?;
        let trial = flow.is_trial(running).map_err(flow_err(&*flow))?;
        let mut st = state::load(&cfg.state_dir)?;

        trial::settle(&mut st, &cfg, trial);
        state::store(&cfg.state_dir, &st)?;
        Ok(Device {
            cfg,
            storage,
            flow,
            state: st,
            committed,
            trial,
        })
    }

    fn trial_state(&self) -> TrialState {
        if self.trial {
            TrialState::Trial
        } else if self.state.armed.is_some() {
            TrialState::Armed
        } else {
            TrialState::None
        }
    }

    /// Whether this boot is an uncommitted trial (the health gate runs).
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The version a manifest must exceed: the committed build's, and never
    /// less than the running root's floor.
    pub fn version_floor(&self) -> u64 {
        self.state
            .committed_version
            .unwrap_or(0)
            .max(self.cfg.min_version)
    }

    /// Every slot a reset could boot now (the boot flow's definition).
    pub fn bootable(&mut self) -> Result<Vec<Slot>, Error> {
        self.flow.bootable().map_err(flow_err(&*self.flow))
    }

    /// `GET /update/features`.
    pub fn features(&self) -> Features {
        Features {
            protocol: PROTOCOL_VERSION,
            arch: self.cfg.arch,
            platform: self.cfg.platform,
            running_slot: self.cfg.running,
            committed_slot: self.committed,
            build_id: self.cfg.build_id.clone(),
            trial: self.trial_state(),
            committed_version: self.version_floor(),
        }
    }

    /// `GET /update/status`.
    pub fn status(&self) -> Status {
        Status {
            build_id: self.cfg.build_id.clone(),
            running_slot: self.cfg.running,
            committed_slot: self.committed,
            trial: self.trial_state(),
            slot_a: self.state.slot_a.status(),
            slot_b: self.state.slot_b.status(),
            last_trial: self.state.last_trial.clone(),
            committed_version: self.version_floor(),
        }
    }

    /// Refuses any write while a trial is armed or running.
    fn writable(&self) -> Result<(), Error> {
        if self.trial || self.committed != self.cfg.running {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        if let Some(a) = &self.state.armed {
            return Err(Error::TrialArmed {
                slot: a.slot,
                build_id: a.build_id.clone(),
            });
        }
        Ok(())
    }

    /// Makes `slot` unbootable: the flow's configuration no longer names
    /// it, and on pc its loader entry is blanked.
    fn disarm(&mut self, slot: Slot) -> Result<(), Error> {
        self.flow.disarm(slot).map_err(flow_err(&*self.flow))?;
        if let BootStorage::Esp(esp) = &mut self.storage.boot {
            bootarchive::blank_entry(&mut **esp, slot).map_err(|e| Error::Flow {
                flow: "loader entry",
                source: FlowError::File {
                    action: "blanking",
                    path: crate::bootflow::entry_path(slot),
                    source: e,
                },
            })?;
        }
        Ok(())
    }

    /// `PUT /update/manifest` at the device's clock; see [`Device::put_manifest_at`].
    pub fn put_manifest(&mut self, body: &[u8]) -> Result<Accepted, Error> {
        self.put_manifest_at(body, now_unix())
    }

    /// `PUT /update/manifest` when the time is `now` (Unix seconds): checks
    /// the signature before anything else, then the target, the trial
    /// state, the expiry, the version (an old manifest replayed is a
    /// downgrade, whatever slot it was made for) and the slot; then makes
    /// the inactive slot unbootable and starts an upload into it.
    pub fn put_manifest_at(&mut self, body: &[u8], now: u64) -> Result<Accepted, Error> {
        let m = SignedManifest::from_json(body)?.verify(&self.cfg.public_key)?;
        if m.arch != self.cfg.arch || m.platform != self.cfg.platform {
            return Err(ManifestError::WrongTarget {
                want_arch: m.arch,
                want_platform: m.platform,
                arch: self.cfg.arch,
                platform: self.cfg.platform,
            }
            .into());
        }
        self.writable()?;
        if now > m.expires {
            return Err(Error::Expired {
                expires: m.expires,
                now,
            });
        }
        if m.allow_downgrade {
            let from = m.from_build_id.clone().unwrap_or_default();
            if from != self.cfg.build_id {
                return Err(Error::DowngradeBuild {
                    from,
                    running: self.cfg.build_id.clone(),
                });
            }
        } else if m.version <= self.version_floor() {
            return Err(Error::Downgrade {
                version: m.version,
                floor: self.version_floor(),
            });
        }
        let slot = self.cfg.running.other();
        if m.slot != slot {
            return Err(Error::WrongSlot {
                want: m.slot,
                inactive: slot,
                running: self.cfg.running,
            });
        }
        let upload_id = new_upload_id()?;
        // Persist "writing" first: a reboot from here on finds the upload
        // interrupted. Then make the slot unbootable before any byte lands.
        let r = self.state.slot_mut(slot);
        r.build_id = Some(m.build_id.clone());
        r.state = SlotState::Writing;
        r.reason = None;
        r.version = None;
        self.state.pending = Some(Pending {
            slot,
            manifest: m.clone(),
            upload_id: upload_id.clone(),
            done: Vec::new(),
            entry: None,
        });
        state::store(&self.cfg.state_dir, &self.state)?;
        self.disarm(slot)?;
        Ok(Accepted {
            upload_id,
            manifest: m,
        })
    }

    /// The pending upload, if `upload_id` names it.
    fn pending_for(
        &self,
        kind: Option<PartKind>,
        upload_id: Option<&str>,
    ) -> Result<&Pending, Error> {
        let Some(p) = self.state.pending.as_ref() else {
            return Err(match kind {
                Some(k) => Error::NoManifest(k),
                None => {
                    let slot = self.cfg.running.other();
                    Error::SlotNotValid {
                        slot,
                        state: self.state.slot(slot).state,
                    }
                }
            });
        };
        let got = upload_id.unwrap_or("");
        // Constant-time is not needed: the id is not a secret from a client
        // that already holds the password, only a tag that keeps uploads apart.
        if got != p.upload_id {
            return Err(Error::UploadMismatch {
                got: got.chars().take(64).collect(),
                want: p.upload_id.clone(),
            });
        }
        Ok(p)
    }

    /// `PUT /update/root` and `/update/boot` of upload `upload_id`: streams
    /// `body` into the inactive slot in 1 MiB chunks, checking the
    /// manifest's size and hash. A mismatch marks the slot invalid
    /// (persisted) and is returned; the slot stays unbootable either way.
    pub fn put_part(
        &mut self,
        kind: PartKind,
        upload_id: Option<&str>,
        body: impl Read,
    ) -> Result<PartWritten, Error> {
        self.writable()?;
        let pending = self.pending_for(Some(kind), upload_id)?;
        let slot = pending.slot;
        let spec = pending
            .manifest
            .part(kind)
            .cloned()
            .ok_or(Error::NoManifest(kind))?;
        if slot == self.cfg.running || slot == self.committed {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        if let Some(p) = self.state.pending.as_mut() {
            // Rewriting a part undoes its earlier verification.
            p.done.retain(|&k| k != kind);
        }
        self.state.slot_mut(slot).state = SlotState::Writing;
        let res = self.write_part(kind, slot, &spec, body);
        match res {
            Ok((sha256, entry)) => {
                let mut complete = false;
                if let Some(p) = self.state.pending.as_mut() {
                    p.done.push(kind);
                    if entry.is_some() {
                        p.entry = entry;
                    }
                    complete = p.manifest.parts.iter().all(|s| p.done.contains(&s.name));
                }
                if complete {
                    self.state.slot_mut(slot).state = SlotState::Valid;
                }
                state::store(&self.cfg.state_dir, &self.state)?;
                Ok(PartWritten {
                    part: kind,
                    slot,
                    size: spec.size,
                    sha256,
                    slot_complete: complete,
                })
            }
            Err(e) => {
                let r = self.state.slot_mut(slot);
                r.state = SlotState::Invalid;
                r.reason = Some(e.to_string());
                self.state.pending = None;
                state::store(&self.cfg.state_dir, &self.state)?;
                Err(e)
            }
        }
    }

    /// Writes one part; returns its digest and, for the pc boot part, the
    /// loader entry held back until the switch.
    fn write_part(
        &mut self,
        kind: PartKind,
        slot: Slot,
        spec: &PartSpec,
        body: impl Read,
    ) -> Result<(String, Option<Vec<u8>>), Error> {
        let verr = |source| Error::Verify { slot, source };
        let dev: &mut dyn BlockDevice = match (kind, &mut self.storage.boot, slot) {
            (PartKind::Root, _, Slot::A) => &mut *self.storage.root_a,
            (PartKind::Root, _, Slot::B) => &mut *self.storage.root_b,
            (PartKind::Boot, BootStorage::Partitions { a, b }, _) => {
                // pi3: the archive is read into memory (at most the
                // partition's size), verified whole, then written as a
                // fresh FAT: no unverified byte reaches the partition.
                let dev: &mut dyn BlockDevice = if slot == Slot::A { &mut **a } else { &mut **b };
                let mut v = Verifying::new(body, spec.size);
                let r = bootpart::read_tree(&mut v, dev.len());
                let tree = archive_result(kind, slot, &v, r)?;
                let digest = v.finish(spec).map_err(verr)?;
                let mtime = tree.iter().map(|(_, e)| e.mtime).max().unwrap_or(0);
                bootpart::install(dev, slot, &tree, mtime)
                    .map_err(|source| Error::Archive { slot, source })?;
                return Ok((digest, None));
            }
            (PartKind::Boot, BootStorage::Esp(esp), _) => {
                if self.cfg.platform != Platform::Pc {
                    return Err(Error::Storage(self.cfg.platform));
                }
                let mut v = Verifying::new(body, spec.size);
                let r = bootarchive::unpack(&mut v, slot, &mut **esp);
                let u = archive_result(kind, slot, &v, r)?;
                return v.finish(spec).map(|d| (d, Some(u.entry))).map_err(verr);
            }
        };
        writer::write_image(body, spec, dev)
            .map(|d| (d, None))
            .map_err(verr)
    }

    /// `POST /update/switch` of upload `upload_id`: once every part of its
    /// manifest was verified, makes the slot bootable again (pc: writes its
    /// verified loader entry) and arms a trial boot of it.
    pub fn switch(&mut self, upload_id: Option<&str>) -> Result<Switched, Error> {
        self.writable()?;
        let p = self.pending_for(None, upload_id)?;
        let slot = p.slot;
        let complete = slot == self.cfg.running.other()
            && p.manifest.parts.iter().all(|s| p.done.contains(&s.name));
        let entry = p.entry.clone();
        let version = p.manifest.version;
        let build_id = p.manifest.build_id.clone();
        let r = self.state.slot(slot);
        if !complete || r.state != SlotState::Valid {
            return Err(Error::SlotNotValid {
                slot,
                state: r.state,
            });
        }
        if let BootStorage::Esp(esp) = &mut self.storage.boot {
            let Some(entry) = entry else {
                return Err(Error::SlotNotValid {
                    slot,
                    state: SlotState::Writing,
                });
            };
            bootarchive::write_entry(&mut **esp, slot, &entry).map_err(|e| Error::Flow {
                flow: "loader entry",
                source: FlowError::File {
                    action: "writing",
                    path: crate::bootflow::entry_path(slot),
                    source: e,
                },
            })?;
        }
        let arg = self.flow.try_next(slot).map_err(flow_err(&*self.flow))?;
        self.state.armed = Some(Armed {
            slot,
            build_id: build_id.clone(),
            version: Some(version),
        });
        self.state.slot_mut(slot).version = Some(version);
        self.state.pending = None;
        self.state.reboot_argument = arg.clone();
        state::store(&self.cfg.state_dir, &self.state)?;
        Ok(Switched {
            slot,
            build_id,
            reboot_argument: arg,
        })
    }
}
