//! Why a request failed, and the HTTP answer each failure maps to.

use crate::bootarchive::ArchiveError;
use crate::bootflow::FlowError;
use crate::protocol::*;
use crate::state::StateError;
use crate::writer::VerifyError;

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
    /// A trial is armed for the next reboot: nothing may be written until
    /// it ran or `POST /update/cancel` disarmed it.
    #[error("a trial boot of slot {slot} (build {build_id}) is armed for the next reboot; reboot into it, or POST /update/cancel to disarm it first")]
    TrialArmed {
        /// The armed slot.
        slot: Slot,
        /// Its build.
        build_id: String,
    },
    /// A part or switch for another upload than the accepted manifest's.
    #[error("this request is for upload {got:?}, but the accepted manifest's upload is {want:?}; PUT the manifest again and use the upload_id of its answer")]
    UploadMismatch {
        /// The upload id given (empty when none was).
        got: String,
        /// The pending upload's id (empty when there is none).
        want: String,
    },
    /// The manifest's parts were made for the running slot.
    #[error("the manifest's parts are for slot {want}, but updates go to slot {inactive} (the device runs slot {running}); build the update for slot {inactive}")]
    WrongSlot {
        /// The manifest's slot.
        want: Slot,
        /// The inactive slot.
        inactive: Slot,
        /// The running slot.
        running: Slot,
    },
    /// The manifest's version is not greater than the committed build's.
    #[error("the manifest's version {version} is not greater than the committed build's {floor}: an older or replayed update is refused (sign a newer one, or a deliberate downgrade with --allow-downgrade)")]
    Downgrade {
        /// The manifest's version.
        version: u64,
        /// The device's floor.
        floor: u64,
    },
    /// A downgrade signed for another running build.
    #[error("the downgrade manifest applies to build {from}, but the device runs build {running}")]
    DowngradeBuild {
        /// The manifest's `from_build_id`.
        from: String,
        /// The running build.
        running: String,
    },
    /// The manifest's expiry has passed by the device's clock.
    #[error("the manifest expired at {expires} (Unix seconds) and the device's clock says {now}; sign a new one")]
    Expired {
        /// The manifest's expiry.
        expires: u64,
        /// The device's time.
        now: u64,
    },
    /// No random upload id could be made.
    #[error("the kernel's random number generator failed")]
    Random,
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
            Error::Manifest(ManifestError::BadSignature) | Error::Expired { .. } => 403,
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
            Error::NoManifest(_)
            | Error::TrialRunning(_)
            | Error::TrialArmed { .. }
            | Error::UploadMismatch { .. }
            | Error::WrongSlot { .. }
            | Error::Downgrade { .. }
            | Error::DowngradeBuild { .. }
            | Error::SlotNotValid { .. } => 409,
            Error::Flow { .. } | Error::State(_) | Error::Storage(_) | Error::Random => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Manifest(ManifestError::BadSignature) => "bad_signature",
            Error::Manifest(ManifestError::WrongTarget { .. }) => "wrong_target",
            Error::Manifest(ManifestError::Protocol(_)) => "protocol_version",
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
            Error::TrialArmed { .. } => "trial_armed",
            Error::UploadMismatch { .. } => "upload_mismatch",
            Error::WrongSlot { .. } => "wrong_slot",
            Error::Downgrade { .. } | Error::DowngradeBuild { .. } => "downgrade",
            Error::Expired { .. } => "expired",
            Error::Random => "random",
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
