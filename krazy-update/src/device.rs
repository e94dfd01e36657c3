//! The device side as a framework-agnostic service: [`Device`] has one
//! method per endpoint, returning typed values or an [`Error`] that knows
//! its HTTP status, so a web server mounts it in a few lines.
//!
//! The running slot and the committed slot are never written: parts go to
//! the inactive slot only while the running slot is the committed one.

use std::io::{self, Read};
use std::path::PathBuf;

use krazy_fs::BlockDevice;

use crate::bootarchive::{self, ArchiveError};
use crate::bootfiles::BootFiles;
use crate::bootflow::{BootFlow, FlowError};
use crate::protocol::*;
use crate::state::{self, Armed, Pending, State, StateError};
use crate::writer::{self, VerifyError, Verifying};

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

/// Why a request failed; [`Error::http_status`] and [`Error::code`] map it
/// to an answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest was refused (signature, target, syntax).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A part did not match the manifest; the slot is now invalid.
    #[error("slot {slot} is now invalid: {source}")]
    Verify {
        /// The slot written.
        slot: Slot,
        /// What did not match.
        source: VerifyError,
    },
    /// The pc boot archive was refused; the slot is now invalid.
    #[error("slot {slot} is now invalid: {source}")]
    Archive {
        /// The slot written.
        slot: Slot,
        /// What was wrong.
        source: ArchiveError,
    },
    /// A part arrived without an accepted manifest listing it.
    #[error("no accepted manifest lists a {0} part: PUT /update/manifest first")]
    NoManifest(PartKind),
    /// The running boot is an uncommitted trial: its other slot is the
    /// committed one and must not be written.
    #[error(
        "the running slot {0} is an uncommitted trial; updates wait until it commits or rolls back"
    )]
    TrialRunning(Slot),
    /// Switch was asked before every part was verified.
    #[error("slot {slot} is not complete and verified ({state:?}); nothing to switch to")]
    SlotNotValid {
        /// The inactive slot.
        slot: Slot,
        /// Its state.
        state: SlotState,
    },
    /// The boot flow could not read or write its files.
    #[error("the {flow} boot flow failed: {source}")]
    Flow {
        /// Its name.
        flow: &'static str,
        /// The cause.
        source: FlowError,
    },
    /// The persisted state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The device's storage does not fit the platform.
    #[error(
        "the {0} boot part needs the platform's boot storage, which this device was not given"
    )]
    Storage(Platform),
}

impl Error {
    /// The HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Manifest(ManifestError::BadSignature) => 403,
            Error::Manifest(ManifestError::WrongTarget { .. }) => 422,
            Error::Manifest(ManifestError::TooLarge(_)) => 413,
            Error::Manifest(_) => 400,
            Error::Verify {
                source: VerifyError::Write { .. },
                ..
            } => 500,
            Error::Verify {
                source: VerifyError::TooLarge { .. },
                ..
            } => 413,
            Error::Verify { .. } => 422,
            Error::Archive {
                source: ArchiveError::Write { .. },
                ..
            } => 500,
            Error::Archive { .. } => 422,
            Error::NoManifest(_) | Error::TrialRunning(_) | Error::SlotNotValid { .. } => 409,
            Error::Flow { .. } | Error::State(_) | Error::Storage(_) => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Manifest(ManifestError::BadSignature) => "bad_signature",
            Error::Manifest(ManifestError::WrongTarget { .. }) => "wrong_target",
            Error::Manifest(_) => "bad_manifest",
            Error::Verify { source, .. } => match source {
                VerifyError::HashMismatch { .. } => "hash_mismatch",
                VerifyError::TooLong { .. } | VerifyError::TooShort { .. } => "size_mismatch",
                VerifyError::TooLarge { .. } => "part_too_large",
                VerifyError::Read { .. } => "upload_interrupted",
                VerifyError::Write { .. } => "write_failed",
            },
            Error::Archive { source, .. } => match source {
                ArchiveError::TooLarge { .. } => "boot_file_too_large",
                ArchiveError::Write { .. } => "write_failed",
                _ => "boot_archive",
            },
            Error::NoManifest(_) => "no_manifest",
            Error::TrialRunning(_) => "trial_running",
            Error::SlotNotValid { .. } => "slot_not_valid",
            Error::Flow { .. } => "boot_flow",
            Error::State(_) => "state",
            Error::Storage(_) => "storage",
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().into(),
            message: self.to_string(),
        }
    }
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

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /update/features`.
    Features,
    /// `PUT /update/manifest`.
    Manifest,
    /// `PUT /update/root` or `/update/boot`.
    Part(PartKind),
    /// `POST /update/switch`.
    Switch,
    /// `GET /update/status`.
    Status,
}

impl Route {
    /// The route of `method` and `path`, if it is one of ours.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        Some(match (method, path) {
            ("GET", "/update/features") => Route::Features,
            ("PUT", "/update/manifest") => Route::Manifest,
            ("PUT", "/update/root") => Route::Part(PartKind::Root),
            ("PUT", "/update/boot") => Route::Part(PartKind::Boot),
            ("POST", "/update/switch") => Route::Switch,
            ("GET", "/update/status") => Route::Status,
            _ => return None,
        })
    }

    /// The `Content-Type` a state-changing request must carry (None for GETs).
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Route::Features | Route::Status => None,
            Route::Manifest | Route::Switch => Some("application/json"),
            Route::Part(_) => Some("application/octet-stream"),
        }
    }
}

fn flow_err(flow: &dyn BootFlow) -> impl FnOnce(FlowError) -> Error + '_ {
    move |source| Error::Flow {
        flow: flow.name(),
        source,
    }
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

        {
            let r = st.slot_mut(running);
            r.build_id = Some(cfg.build_id.clone());
            r.state = SlotState::Valid;
            r.reason = None;
        }
        if let Some(p) = st.pending.take() {
            let r = st.slot_mut(p.slot);
            if p.slot != running && r.state == SlotState::Writing {
                r.state = SlotState::Invalid;
                r.reason = Some("the upload was interrupted by a reboot".into());
            }
        }
        let failed = |slot: Slot, build_id: String| LastTrial {
            outcome: TrialOutcome::RolledBack,
            reason: Some(format!(
                "the trial boot of slot {slot} (build {build_id}) did not commit: a kernel panic, \
                 reset or power cut ended it before its init decided"
            )),
            slot,
            build_id,
            service: None,
            log: Vec::new(),
        };
        if let Some(a) = st.armed.take() {
            st.last_trial = Some(if a.slot == running {
                LastTrial {
                    outcome: if trial {
                        TrialOutcome::Pending
                    } else {
                        TrialOutcome::Committed
                    },
                    reason: None,
                    slot: a.slot,
                    build_id: a.build_id,
                    service: None,
                    log: Vec::new(),
                }
            } else {
                failed(a.slot, a.build_id)
            });
        } else if let Some(lt) = st.last_trial.clone() {
            if lt.outcome == TrialOutcome::Pending && (lt.slot != running || !trial) {
                st.last_trial = Some(if lt.slot == running {
                    LastTrial {
                        outcome: TrialOutcome::Committed,
                        ..lt
                    }
                } else {
                    failed(lt.slot, lt.build_id)
                });
            }
        }
        if let Some(lt) = st.last_trial.clone() {
            if lt.outcome == TrialOutcome::RolledBack && lt.slot != running {
                let r = st.slot_mut(lt.slot);
                r.state = SlotState::Invalid;
                r.reason = lt.reason.clone();
            }
        }
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
        }
    }

    /// `PUT /update/manifest`: checks the signature before anything else,
    /// then the target; cancels an armed trial and marks the inactive slot
    /// as being written.
    pub fn put_manifest(&mut self, body: &[u8]) -> Result<Manifest, Error> {
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
        if self.trial || self.committed != self.cfg.running {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        if self.state.armed.take().is_some() {
            self.flow.cancel_trial().map_err(flow_err(&*self.flow))?;
        }
        let slot = self.cfg.running.other();
        let r = self.state.slot_mut(slot);
        r.build_id = Some(m.build_id.clone());
        r.state = SlotState::Writing;
        r.reason = None;
        self.state.pending = Some(Pending {
            slot,
            manifest: m.clone(),
            done: Vec::new(),
        });
        state::store(&self.cfg.state_dir, &self.state)?;
        Ok(m)
    }

    /// `PUT /update/root` and `/update/boot`: streams `body` into the
    /// inactive slot in 1 MiB chunks, checking the manifest's size and hash.
    /// A mismatch marks the slot invalid (persisted) and is returned.
    pub fn put_part(&mut self, kind: PartKind, body: impl Read) -> Result<PartWritten, Error> {
        let pending = self.state.pending.as_ref().ok_or(Error::NoManifest(kind))?;
        let slot = pending.slot;
        let spec = pending
            .manifest
            .part(kind)
            .cloned()
            .ok_or(Error::NoManifest(kind))?;
        if slot == self.cfg.running || slot == self.committed {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        let res = self.write_part(kind, slot, &spec, body);
        match res {
            Ok(sha256) => {
                let mut complete = false;
                if let Some(p) = self.state.pending.as_mut() {
                    if !p.done.contains(&kind) {
                        p.done.push(kind);
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

    fn write_part(
        &mut self,
        kind: PartKind,
        slot: Slot,
        spec: &PartSpec,
        body: impl Read,
    ) -> Result<String, Error> {
        let verr = |source| Error::Verify { slot, source };
        let dev: &mut dyn BlockDevice = match (kind, &mut self.storage.boot, slot) {
            (PartKind::Root, _, Slot::A) => &mut *self.storage.root_a,
            (PartKind::Root, _, Slot::B) => &mut *self.storage.root_b,
            (PartKind::Boot, BootStorage::Partitions { a, .. }, Slot::A) => &mut **a,
            (PartKind::Boot, BootStorage::Partitions { b, .. }, Slot::B) => &mut **b,
            (PartKind::Boot, BootStorage::Esp(esp), _) => {
                if self.cfg.platform != Platform::Pc {
                    return Err(Error::Storage(self.cfg.platform));
                }
                let mut v = Verifying::new(body, spec.size);
                return match bootarchive::unpack(&mut v, slot, &mut **esp) {
                    Ok(_) => v.finish(spec).map_err(verr),
                    Err(_) if v.overrun() => Err(verr(VerifyError::TooLong {
                        part: kind.to_string(),
                        size: spec.size,
                    })),
                    Err(ArchiveError::Read(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Err(verr(VerifyError::TooShort {
                            part: kind.to_string(),
                            got: v.count(),
                            size: spec.size,
                        }))
                    }
                    Err(source) => Err(Error::Archive { slot, source }),
                };
            }
        };
        writer::write_image(body, spec, dev).map_err(verr)
    }

    /// `POST /update/switch`: arms a trial boot of the inactive slot once
    /// every part of its manifest was verified.
    pub fn switch(&mut self) -> Result<Switched, Error> {
        if self.trial {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        let slot = self.cfg.running.other();
        let complete = self.state.pending.as_ref().is_some_and(|p| {
            p.slot == slot && p.manifest.parts.iter().all(|s| p.done.contains(&s.name))
        });
        let r = self.state.slot(slot);
        if !complete || r.state != SlotState::Valid {
            return Err(Error::SlotNotValid {
                slot,
                state: r.state,
            });
        }
        let build_id = r.build_id.clone().unwrap_or_default();
        let arg = self.flow.try_next(slot).map_err(flow_err(&*self.flow))?;
        self.state.armed = Some(Armed {
            slot,
            build_id: build_id.clone(),
        });
        self.state.reboot_argument = arg.clone();
        state::store(&self.cfg.state_dir, &self.state)?;
        Ok(Switched {
            slot,
            build_id,
            reboot_argument: arg,
        })
    }

    /// The `reboot(2)` argument the next reboot must pass (after a switch on
    /// a Pi with tryboot), if any.
    pub fn reboot_argument(&self) -> Option<&str> {
        self.state
            .armed
            .as_ref()
            .and(self.state.reboot_argument.as_deref())
    }

    /// Commits the running trial (the health gate passed).
    pub fn commit(&mut self) -> Result<(), Error> {
        if !self.trial {
            return Ok(());
        }
        let running = self.cfg.running;
        self.flow.commit(running).map_err(flow_err(&*self.flow))?;
        self.committed = running;
        self.trial = false;
        self.state.last_trial = Some(LastTrial {
            outcome: TrialOutcome::Committed,
            reason: None,
            slot: running,
            build_id: self.cfg.build_id.clone(),
            service: None,
            log: Vec::new(),
        });
        state::store(&self.cfg.state_dir, &self.state)?;
        Ok(())
    }

    /// Records that the running trial failed (reason, failing service and
    /// its last log lines), so the committed slot reports it after the
    /// reboot the caller does next.
    pub fn roll_back(
        &mut self,
        reason: &str,
        service: Option<&str>,
        log: &[String],
    ) -> Result<(), Error> {
        let running = self.cfg.running;
        self.state.last_trial = Some(LastTrial {
            outcome: TrialOutcome::RolledBack,
            reason: Some(reason.to_string()),
            slot: running,
            build_id: self.cfg.build_id.clone(),
            service: service.map(str::to_string),
            log: log.to_vec(),
        });
        state::store(&self.cfg.state_dir, &self.state)?;
        Ok(())
    }
}
