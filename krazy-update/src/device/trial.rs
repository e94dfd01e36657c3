//! The trial's side of the device: what a boot finds of the last one
//! ([`settle`]), `POST /update/cancel`, and the health gate's commit or
//! rollback.

use super::{flow_err, Device, DeviceConfig, Error};
use crate::protocol::*;
use crate::state::{self, State};

/// Settles what the last boot left in the state, at open: the running
/// slot's record, an interrupted upload (its slot invalid), an armed trial
/// that came up (pending or committed) or did not (rolled back), and the
/// committed version.
pub(super) fn settle(st: &mut State, cfg: &DeviceConfig, trial: bool) {
    let running = cfg.running;
    {
        let r = st.slot_mut(running);
        if r.build_id.as_deref() != Some(cfg.build_id.as_str()) {
            r.version = None;
        }
        r.build_id = Some(cfg.build_id.clone());
        r.state = SlotState::Valid;
        r.reason = None;
    }
    if let Some(p) = st.pending.take() {
        let r = st.slot_mut(p.slot);
        if p.slot != running && r.state != SlotState::Invalid {
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
        st.reboot_argument = None;
        st.last_trial = Some(if a.slot == running {
            if a.version.is_some() {
                st.slot_mut(running).version = a.version;
            }
            LastTrial {
                outcome: if trial {
                    TrialOutcome::Pending
                } else {
                    st.committed_version = a.version.or(st.committed_version);
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
                if let Some(v) = st.slot(running).version {
                    st.committed_version = Some(v);
                }
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
}

impl Device {
    /// `POST /update/cancel`: disarms an armed trial and abandons an upload
    /// in progress, leaving the inactive slot unbootable; says what it undid.
    pub fn cancel(&mut self) -> Result<Cancelled, Error> {
        if self.trial || self.committed != self.cfg.running {
            return Err(Error::TrialRunning(self.cfg.running));
        }
        let armed = self.state.armed.take();
        let pending = self.state.pending.take();
        let slot = self.cfg.running.other();
        let mut said = Vec::new();
        let disarmed = armed.map(|a| {
            said.push(format!(
                "disarmed the trial boot of slot {} (build {})",
                a.slot, a.build_id
            ));
            SlotBuild {
                slot: a.slot,
                build_id: a.build_id,
            }
        });
        let abandoned = pending.map(|p| {
            said.push(format!(
                "abandoned the upload of build {} into slot {}",
                p.manifest.build_id, p.slot
            ));
            SlotBuild {
                slot: p.slot,
                build_id: p.manifest.build_id,
            }
        });
        if disarmed.is_some() || abandoned.is_some() {
            self.flow.cancel_trial().map_err(flow_err(&*self.flow))?;
            self.disarm(slot)?;
            let r = self.state.slot_mut(slot);
            r.state = SlotState::Invalid;
            r.reason = Some("cancelled by POST /update/cancel".into());
            self.state.reboot_argument = None;
        }
        state::store(&self.cfg.state_dir, &self.state)?;
        let message = if said.is_empty() {
            "nothing was armed or being uploaded; nothing to undo".to_string()
        } else {
            format!("{}; slot {slot} is not bootable", said.join(" and "))
        };
        Ok(Cancelled {
            disarmed,
            abandoned_upload: abandoned,
            message,
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

    /// Commits the running trial (the health gate passed): its version
    /// becomes the floor.
    pub fn commit(&mut self) -> Result<(), Error> {
        if !self.trial {
            return Ok(());
        }
        let running = self.cfg.running;
        self.flow.commit(running).map_err(flow_err(&*self.flow))?;
        self.committed = running;
        self.trial = false;
        if let Some(v) = self.state.slot(running).version {
            self.state.committed_version = Some(v);
        }
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
