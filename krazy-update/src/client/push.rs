//! Pushing an update: the signed manifest, the parts streamed from any
//! [`Read`], the switch to the new slot, and waiting for the commit (or the
//! rollback) after the reboot.

use std::io::Read;
use std::time::{Duration, Instant};

use super::conn::Body;
use super::error::chain;
use super::{parse_json, Client, ClientError, Committed, Progress};
use crate::protocol::*;

impl Client {
    /// `PUT /update/manifest` with a signed envelope (JSON bytes) to a
    /// protocol-2 device: the answer carries the upload id.
    pub fn put_manifest(&self, signed: &[u8]) -> Result<Accepted, ClientError> {
        self.json("PUT", "/update/manifest", Body::Json(signed))
    }

    /// `PUT /update/manifest` with a protocol-1 envelope to a protocol-1
    /// device (its answer, the manifest, is not needed).
    pub fn put_manifest_v1(&self, signed: &[u8]) -> Result<(), ClientError> {
        self.request("PUT", "/update/manifest", Body::Json(signed))
            .map(|_| ())
    }

    /// `PUT /update/root` or `/update/boot` of upload `upload_id` (none for
    /// a protocol-1 device): streams exactly `size` bytes of `src`, calling
    /// `progress` after every chunk.
    pub fn put_part(
        &self,
        part: PartKind,
        upload_id: Option<&str>,
        size: u64,
        src: &mut dyn Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PartWritten, ClientError> {
        let path = format!("/update/{part}");
        let a = self.request_with(
            "PUT",
            &path,
            upload_id,
            Body::Stream {
                part,
                size,
                src,
                progress,
            },
        )?;
        parse_json("PUT", &path, a)
    }

    /// `POST /update/switch` of upload `upload_id`: arms a trial boot of the
    /// written slot.
    pub fn switch(&self, upload_id: Option<&str>) -> Result<Switched, ClientError> {
        let a = self.request_with("POST", "/update/switch", upload_id, Body::Json(b"{}"))?;
        parse_json("POST", "/update/switch", a)
    }

    /// Polls `GET /update/features` every `interval` until the device runs
    /// `build_id` with no trial pending (committed), or `GET /update/status`
    /// reports that a trial of `build_id` was rolled back, or `timeout`
    /// passes. Connection errors while the device reboots are expected and
    /// retried.
    pub fn wait_for_build(
        &self,
        build_id: &str,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Committed, ClientError> {
        let start = Instant::now();
        let mut last;
        loop {
            match self.features() {
                Ok(f) if f.build_id == build_id && f.trial != TrialState::Trial => {
                    return Ok(Committed {
                        features: f,
                        waited: start.elapsed(),
                    });
                }
                Ok(f) => {
                    last = format!("build {} (trial {:?})", f.build_id, f.trial);
                    if f.build_id != build_id && f.trial != TrialState::Armed {
                        if let Some(lt) = self.status()?.last_trial {
                            if lt.build_id == build_id && lt.outcome == TrialOutcome::RolledBack {
                                return Err(ClientError::RolledBack {
                                    build_id: lt.build_id,
                                    reason: lt.reason,
                                    service: lt.service,
                                    log: lt.log,
                                });
                            }
                        }
                    }
                }
                Err(e @ (ClientError::Unauthorized { .. } | ClientError::NotPinned { .. })) => {
                    return Err(e)
                }
                Err(e) => last = chain(&e),
            }
            if start.elapsed() >= timeout {
                return Err(ClientError::Timeout {
                    build_id: build_id.to_string(),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(interval.min(timeout.saturating_sub(start.elapsed())));
        }
    }

    /// The whole update: checks the device's features against the
    /// manifest, puts the signed manifest (the protocol-1 envelope to a
    /// protocol-1 device), streams each part from `parts` (every part of
    /// the manifest must be given), arms the trial, reboots and waits up to
    /// `timeout` for the commit. A trial armed earlier is cancelled first,
    /// and `notice` is told so.
    pub fn update(
        &self,
        signed: Signed<'_>,
        parts: &mut [(PartKind, &mut dyn Read)],
        progress: &mut dyn FnMut(Progress),
        notice: &mut dyn FnMut(&str),
        timeout: Duration,
    ) -> Result<Committed, ClientError> {
        let manifest = signed.manifest;
        let f = self.features()?;
        let v1 = match (f.protocol, signed.v1) {
            (PROTOCOL_VERSION, _) => None,
            (PROTOCOL_V1, Some(v1)) => Some(v1),
            (p, _) => {
                return Err(ClientError::Incompatible(format!(
                    "it speaks update protocol {p}, this client speaks {PROTOCOL_VERSION} and {PROTOCOL_V1}"
                )))
            }
        };
        if (f.arch, f.platform) != (manifest.arch, manifest.platform) {
            return Err(ClientError::Incompatible(format!(
                "it is {}/{}, the build is for {}/{}",
                f.arch, f.platform, manifest.arch, manifest.platform
            )));
        }
        if f.trial == TrialState::Trial {
            return Err(ClientError::Incompatible(format!(
                "build {} is still on trial in slot {}; wait for it to commit or roll back",
                f.build_id, f.running_slot
            )));
        }
        if manifest.slot != f.running_slot.other() {
            return Err(ClientError::Incompatible(format!(
                "the update was built for slot {}, but the device runs slot {} and takes updates into slot {}",
                manifest.slot,
                f.running_slot,
                f.running_slot.other()
            )));
        }
        if v1.is_none() && !manifest.allow_downgrade && manifest.version <= f.committed_version {
            return Err(ClientError::Incompatible(format!(
                "its committed build has version {}, not older than this update's {}; \
                 sign a newer version, or a deliberate downgrade",
                f.committed_version, manifest.version
            )));
        }
        for spec in &manifest.parts {
            if !parts.iter().any(|(k, _)| *k == spec.name) {
                return Err(ClientError::Incompatible(format!(
                    "the manifest lists a {} part, but none was given",
                    spec.name
                )));
            }
        }
        let upload_id = match v1 {
            Some(env) => {
                self.put_manifest_v1(env)?;
                None
            }
            None => {
                if f.trial == TrialState::Armed {
                    let c = self.cancel()?;
                    notice(&format!("the device had a trial armed: {}", c.message));
                }
                Some(self.put_manifest(signed.v2)?.upload_id)
            }
        };
        for (kind, src) in parts.iter_mut() {
            let Some(spec) = manifest.part(*kind) else {
                continue;
            };
            self.put_part(*kind, upload_id.as_deref(), spec.size, *src, progress)?;
        }
        self.switch(upload_id.as_deref())?;
        self.reboot()?;
        self.wait_for_build(
            &manifest.build_id,
            timeout,
            Duration::from_millis(500).min(timeout / 4),
        )
    }
}

/// A manifest and its signed envelopes, as [`Client::update`] sends them.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// The protocol-2 envelope ([`SignedManifest::sign`]).
    pub v2: &'a [u8],
    /// The protocol-1 envelope ([`SignedManifest::sign_v1`]) for devices in
    /// the field that speak only protocol 1; without it they are refused.
    pub v1: Option<&'a [u8]>,
}
