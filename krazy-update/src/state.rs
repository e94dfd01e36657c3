//! The device's persisted update state (`update.json` under the state dir,
//! for example `/perm/krazy/update.json`), written atomically: a temp file,
//! fsync, rename, fsync of the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::{LastTrial, Manifest, PartKind, Slot, SlotState, SlotStatus};

/// The file name of the state inside the state dir.
pub const STATE_FILE: &str = "update.json";

/// The largest state file read back (bytes).
const MAX_STATE_BYTES: u64 = 1 << 20;

/// What the device remembers across reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    /// Slot A's record.
    pub slot_a: SlotRecord,
    /// Slot B's record.
    pub slot_b: SlotRecord,
    /// The manifest being installed into the inactive slot, if any (an
    /// upload a protocol-1 build left behind reads as none).
    #[serde(default, deserialize_with = "lenient")]
    pub pending: Option<Pending>,
    /// A trial armed by `switch` for the next boot.
    pub armed: Option<Armed>,
    /// The last trial's outcome.
    pub last_trial: Option<LastTrial>,
    /// The `reboot(2)` argument the armed trial needs, if any.
    #[serde(default)]
    pub reboot_argument: Option<String>,
    /// The committed build's version: a manifest must carry a greater one.
    /// Absent (state from protocol 1, or lost) means the root's floor.
    #[serde(default)]
    pub committed_version: Option<u64>,
}

/// `pending` as written by this protocol, or none for anything else (a
/// protocol-1 manifest in it must not make the state unreadable).
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Pending>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

impl State {
    /// The record of `slot`.
    pub fn slot(&self, slot: Slot) -> &SlotRecord {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    /// The record of `slot`, mutably.
    pub fn slot_mut(&mut self, slot: Slot) -> &mut SlotRecord {
        match slot {
            Slot::A => &mut self.slot_a,
            Slot::B => &mut self.slot_b,
        }
    }
}

/// One slot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// The build in it, when known.
    pub build_id: Option<String>,
    /// Its state.
    pub state: SlotState,
    /// Why it is invalid.
    pub reason: Option<String>,
    /// The signed version of the build in it, when it came by an update.
    #[serde(default)]
    pub version: Option<u64>,
}

impl Default for SlotRecord {
    fn default() -> Self {
        SlotRecord {
            build_id: None,
            state: SlotState::Unknown,
            reason: None,
            version: None,
        }
    }
}

impl SlotRecord {
    /// The status form.
    pub fn status(&self) -> SlotStatus {
        SlotStatus {
            build_id: self.build_id.clone(),
            state: self.state,
            reason: self.reason.clone(),
        }
    }
}

/// An accepted manifest and the parts verified so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The slot being written.
    pub slot: Slot,
    /// The manifest.
    pub manifest: Manifest,
    /// The id the parts and the switch of this upload carry.
    pub upload_id: String,
    /// Parts written and verified.
    pub done: Vec<PartKind>,
    /// pc: the verified boot part's loader entry, written to the ESP only
    /// by the switch (until then the slot's entry stays blank).
    #[serde(default)]
    pub entry: Option<Vec<u8>>,
}

/// A trial armed for the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    /// The slot to try.
    pub slot: Slot,
    /// Its build.
    pub build_id: String,
    /// Its signed version.
    #[serde(default)]
    pub version: Option<u64>,
}

/// Why the state could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{action} the update state {path} failed: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not valid state JSON.
    #[error("the update state {path} is not valid: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

/// Loads the state from `dir`; a missing file is the default state.
pub fn load(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    let io = |action, source| StateError::Io {
        action,
        path: path.clone(),
        source,
    };
    let len = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(io("reading", e)),
    };
    if len > MAX_STATE_BYTES {
        return Err(StateError::Corrupt {
            path,
            reason: format!("{len} bytes is more than 1 MiB"),
        });
    }
    let bytes = fs::read(&path).map_err(|e| io("reading", e))?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// Stores `state` in `dir` atomically (creating `dir` if needed).
pub fn store(dir: &Path, state: &State) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(".update.json.tmp");
    let io = |action, source| StateError::Io {
        action,
        path: path.clone(),
        source,
    };
    // The state is the device's own: 0700 directory, 0600 file.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("creating the directory of", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io("restricting the directory of", e))?;
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating a temp file for", e))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restricting a temp file for", e))?;
    f.write_all(&bytes).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    fs::rename(&tmp, &path).map_err(|e| io("renaming into", e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing the directory of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("krazy");
        assert_eq!(load(&sub).unwrap(), State::default());
        let mut s = State::default();
        s.slot_mut(Slot::B).state = SlotState::Invalid;
        s.slot_mut(Slot::B).reason = Some("hash".into());
        store(&sub, &s).unwrap();
        assert_eq!(load(&sub).unwrap(), s);
        assert!(!sub.join(".update.json.tmp").exists());
        fs::write(sub.join(STATE_FILE), b"{").unwrap();
        assert!(matches!(load(&sub), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn secret_modes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("krazy");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        store(&sub, &State::default()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join(STATE_FILE)), 0o600);
    }

    #[test]
    fn a_protocol_1_upload_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"slot_a":{"build_id":"v1","state":"valid","reason":null},
            "slot_b":{"build_id":"v2","state":"valid","reason":null},
            "pending":{"slot":"b","manifest":{"protocol":1,"build_id":"v2","arch":"x86_64",
              "platform":"pc","parts":[]},"done":["root","boot"]},
            "armed":{"slot":"b","build_id":"v2"},"last_trial":null,"reboot_argument":null}"#;
        fs::write(dir.path().join(STATE_FILE), v1).unwrap();
        let s = load(dir.path()).unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.armed.unwrap().build_id, "v2");
        assert_eq!(s.committed_version, None);
    }
}
