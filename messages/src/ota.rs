//! Messages, status and errors of the OTA service (`OtaService`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OtaPhase {
    /// Nothing under way.
    #[default]
    Idle,
    /// Fetching and verifying the manifest.
    Checking,
    /// A newer release was found; waiting for the notifiers' consent to
    /// enter MODAL_UPDATING (retried every second for a while).
    AwaitingConsent,
    /// Streaming the image into the inactive slot.
    Downloading,
    /// Image written; checking size and hash.
    Verifying,
    /// Verified; switching the slot over.
    Finalizing,
    /// Installed and selected (100 %); a reboot boots it as a trial.
    Done,
    /// The last attempt failed; see the error.
    Failed,
}

impl fmt::Display for OtaPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Idle => "idle",
            Self::Checking => "checking",
            Self::AwaitingConsent => "awaiting_consent",
            Self::Downloading => "downloading",
            Self::Verifying => "verifying",
            Self::Finalizing => "finalizing",
            Self::Done => "done",
            Self::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// The health of one A/B slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Never written.
    #[default]
    Empty,
    /// Booted and confirmed.
    Good,
    /// Verified and selected, not yet confirmed by a boot.
    Trial,
    /// Being written, failed, or rolled back: never selected.
    Bad,
}

/// One slot as shown by `ota.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// `a` or `b`.
    pub name: String,
    /// Its health.
    pub status: SlotStatus,
    /// The release's unixtime written there (0 for the factory image).
    pub unixtime: u64,
}

/// Reply to [`GetOtaStatus`]: the `ota.status` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OtaStatus {
    /// Current phase.
    pub phase: OtaPhase,
    /// Progress of the current phase, 0..=100.
    pub percent: u8,
    /// Inflated image bytes written so far.
    pub bytes: u64,
    /// Compressed bytes of the current download taken from the copy an
    /// interrupted earlier run saved (not fetched again); 0 if none.
    #[serde(default)]
    pub resumed_from: u64,
    /// The slots and their health.
    pub slots: Vec<SlotInfo>,
    /// The selected (next boot) slot.
    pub selected: String,
    /// Unixtime of the last release written and selected as a trial.
    pub attempted_unixtime: u64,
    /// Unixtime of the last release confirmed good.
    pub confirmed_unixtime: u64,
    /// Why the last rollback happened, if any.
    pub last_rollback_reason: Option<String>,
    /// Why the last check or install failed, if it did.
    pub last_error: Option<String>,
    /// That failure's kind (`deadline`, `network`, `hash_mismatch`, ...).
    #[serde(default)]
    pub last_error_kind: Option<String>,
    /// Where the last install's bytes came from.
    #[serde(flatten)]
    pub counts: InstallCounts,
    /// The issuer keys the device trusts, by `kid`: the configured
    /// `[ota] public_jwk` unless retired, then the keys signed manifests
    /// announced (`next_jwk`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_kids: Vec<String>,
    /// The highest signed `min_unixtime` seen in an accepted manifest
    /// (durable): a release older than it is never installed. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_unixtime: u64,
    /// The last rollback as a record (cause, check, release, time); kept
    /// until the next confirmed update. `last_rollback_reason` is its
    /// `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackRecord>,
    /// What a found release waits for before it is installed, if it does
    /// (`[ota.policy]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// Why a trial boot (or a good slot) was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RollbackCause {
    /// A health check (`check` names it) failed.
    HealthCheck,
    /// The system left OPERATIONAL (for `state`) before the trial was
    /// confirmed.
    LeftOperational,
    /// `confirm_timeout_secs` passed before the trial was confirmed;
    /// `state` is the state it was in (OPERATIONAL never reached, or not
    /// stable there long enough with every check passing).
    ConfirmTimeout,
    /// The trial slot booted `max_boot_attempts` times unconfirmed.
    BootAttempts,
    /// `ota.report_current {bad: true}`.
    ReportedBad,
    /// Recorded by an older lwsysd as a plain string (the `message`).
    #[default]
    Unknown,
}

/// A rollback, as recorded durably in the slot state and shown by
/// `ota.status` (`last_rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RollbackRecord {
    /// Why.
    pub cause: RollbackCause,
    /// The check that failed: the notifier's name or the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The system state involved (left for, or stuck in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The release rolled back (its manifest unixtime; 0 if unknown).
    #[serde(default)]
    pub release_unixtime: u64,
    /// When, Unix seconds (0 if unknown).
    #[serde(default)]
    pub at_unix: u64,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// What a found release waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// The next maintenance window (`[ota.policy] windows`).
    Window,
    /// Notifiers defer MODAL_UPDATING; `until_unix` is when the deferral
    /// budget (or a security release's deadline) runs out, if it does.
    Consent,
}

/// `ota.status` `waiting`: a release held by the update policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// What it waits for.
    #[serde(rename = "for")]
    pub waits_for: WaitFor,
    /// Until when, Unix seconds (`None`: no bound is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_unix: Option<u64>,
    /// The release (manifest unixtime).
    pub release: u64,
}

/// How the health gate ended a trial boot (the `ota` event's `trial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialOutcome {
    /// Stable and healthy: confirmed good.
    Confirmed,
    /// Rolled back (the reboot into the previous slot follows).
    RolledBack,
}

/// A decision of the update policy about a found release, told in the
/// `ota` event (`policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Outside every maintenance window: the install waits.
    WaitWindow,
    /// Ask for MODAL_UPDATING as usual (any notifier may defer or deny).
    Install,
    /// The deferral budget is spent: enter MODAL_UPDATING past `Defer`
    /// verdicts (a `Deny` still stops it).
    InstallPastDefer,
    /// A security release at its deadline: enter MODAL_UPDATING past
    /// every verdict (notifiers are asked and told, each may hold it for
    /// up to its consent timeout).
    InstallForced,
}

/// Where an install's image bytes came from, in `ota.status` and the
/// `ota` event (flattened: each member is absent while 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstallCounts {
    /// Compressed image bytes fetched from the network by this install
    /// (the chunk file's ranges, or the `.img.gz`); 0 (absent) before one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_fetched: u64,
    /// Inflated image bytes copied locally from the running slot instead
    /// of being fetched (chunked installs only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_reused: u64,
    /// Inflated image bytes kept from the partly written image of an
    /// interrupted earlier attempt, re-verified chunk by chunk (chunked
    /// installs only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_resumed: u64,
    /// Chunks fetched from the network (each counted once however often
    /// it was fetched).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_fetched: u64,
    /// Chunks copied from the running slot or from earlier in this image.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_reused: u64,
    /// Chunk fetches that were repeated: a chunk that arrived bad (failed
    /// to inflate or to match its SHA-256; never written) or was cut off
    /// by a lost connection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_refetched: u64,
}

/// An `ota` topic event: progress of an update. Sent by the OTA worker
/// thread to `OtaService` (and by it to `ota` subscribers); no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct OtaEvent {
    /// Current phase.
    pub phase: OtaPhase,
    /// Percent of the image, 0..=100; 100 only once finalized.
    pub percent: u8,
    /// Inflated bytes written so far.
    pub bytes: u64,
    /// Compressed bytes reused from an interrupted earlier download.
    #[serde(default)]
    pub resumed_from: u64,
    /// Where the install's bytes came from.
    #[serde(flatten)]
    pub counts: InstallCounts,
}

// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `ota.check`, sent by the protocol session: force a check now (or join
/// the one under way). The reply comes when the check settles: no newer
/// release, installed, or an error (including consent refused for too
/// long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<CheckOutcome, OtaError>")
)]
pub struct CheckOta;

/// How a settled check ended (the `ota.check` reply). A member a client
/// does not find reads as its default (false, none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CheckOutcome {
    /// Whether a new release was installed and selected for a trial boot.
    pub updated: bool,
    /// The release found (installed, or not newer), if a manifest verified.
    pub unixtime: Option<u64>,
    /// Whether the system reboots into it now (the manifest's `reset`).
    pub reboot: bool,
    /// Why nothing was installed, when `updated` is false.
    pub reason: Option<String>,
}

/// `ota.report_current {bad}`, sent by the protocol session or the
/// Supervisor (auto-confirm): `bad: false` confirms a trial boot,
/// `bad: true` marks the current slot bad and selects the other good one.
/// The reply is the new status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<OtaStatus, OtaError>")
)]
pub struct ReportCurrent {
    /// Whether the current boot is bad.
    pub bad: bool,
}

/// `ota.status`, sent by the protocol session; answered with [`OtaStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "OtaStatus"))]
pub struct GetOtaStatus;

/// Why an update was rejected or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OtaError {
    /// The manifest is not a well-formed compact JWS or its JSON is bad.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// The manifest is larger than the configured maximum.
    #[error("manifest of {size} bytes is over the {max} byte limit")]
    ManifestTooLarge {
        /// Bytes received so far.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The JWS `alg` is not ES512.
    #[error("manifest alg {0:?} is not ES512")]
    BadAlg(String),
    /// The signature does not verify with the issuer's key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest is for another variant.
    #[error("manifest variant {got:?} is not ours ({want:?})")]
    WrongVariant {
        /// Ours.
        want: String,
        /// The manifest's.
        got: String,
    },
    /// Not newer than the last confirmed install.
    #[error("release {manifest} is not newer than the installed {installed}")]
    NotNewer {
        /// The manifest's unixtime.
        manifest: u64,
        /// The last confirmed install.
        installed: u64,
    },
    /// This release was rolled back before and is not retried.
    #[error("release {0} was rolled back; waiting for a newer one")]
    RolledBack(u64),
    /// The image `size` is over the configured maximum.
    #[error("image of {size} bytes is over the {max} byte limit")]
    ImageTooLarge {
        /// The manifest's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// `sha512` is not 128 hex digits.
    #[error("manifest sha512 is not 128 hex digits")]
    BadHash,
    /// `path` is empty or has `/`, `\`, `..` or a scheme.
    #[error("manifest path {0:?} is not a plain file name")]
    BadPath(String),
    /// The issuer key (JWK) is unusable.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The image inflates to more than `size` bytes.
    #[error("image is longer than the manifest's {0} bytes")]
    ImageTooLong(u64),
    /// The image ended before `size` bytes.
    #[error("image ended after {got} of {want} bytes")]
    ImageTooShort {
        /// Bytes inflated.
        got: u64,
        /// The manifest's size.
        want: u64,
    },
    /// The inflated image's SHA-512 differs from the manifest's.
    #[error("image hash does not match the manifest")]
    HashMismatch,
    /// The gzip stream is corrupt (bad header, data, CRC or length).
    #[error("corrupt gzip stream: {0}")]
    Gzip(String),
    /// The server answered with an HTTP error status.
    #[error("server answered HTTP {status} for {url}")]
    Http {
        /// The status code.
        status: u16,
        /// The URL asked for.
        url: String,
    },
    /// Network failure (connect, timeout, connection lost past retries).
    #[error("network: {0}")]
    Network(String),
    /// The download did not finish within `[ota] download_timeout_secs`
    /// (a slow or trickling server); the install was aborted.
    #[error("download deadline of {secs} s passed")]
    Deadline {
        /// The deadline, seconds.
        secs: u64,
    },
    /// A file operation on the slots or state failed.
    #[error("io: {0}")]
    Io(String),
    /// The slots are not in a state that allows this (such as writing
    /// while a trial is unconfirmed).
    #[error("slots busy: {0}")]
    Busy(String),
    /// The update was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// OTA is not configured.
    #[error("ota not configured: {0}")]
    NotConfigured(String),
    /// The notifiers kept refusing MODAL_UPDATING; the update waits for
    /// the next check.
    #[error("consent to update refused: {0}")]
    ConsentRefused(String),
    /// The chunk index (or a chunk it describes) is malformed or does not
    /// match: bad magic, sizes that disagree, a chunk whose hash differs.
    #[error("bad chunk index: {0}")]
    #[serde(rename = "bad_chunk_index")]
    ChunkIndex(String),
    /// A chunk arrived bad (did not inflate to its length or match its
    /// SHA-256) on every one of `attempts` fetches; none of it was written.
    #[error("chunk {chunk} was bad on all {attempts} fetches")]
    ChunkMismatch {
        /// The chunk's number (0-based).
        chunk: u64,
        /// Fetches tried.
        attempts: u32,
    },
    /// The manifest's signed `expires` has passed (judged only once the
    /// clock is valid): a replayed or frozen old manifest.
    #[error("manifest expired at {expires}; the time is now {now}")]
    Expired {
        /// The manifest's `expires`, unixtime.
        expires: u64,
        /// The device's time at the check, unixtime.
        now: u64,
    },
    /// The manifest has an `expires` but the clock is not valid yet (the
    /// system has not reached TIME_VALID), so it cannot be judged; the
    /// check is refused and the next one tries again.
    #[error("manifest has an expiry but the clock is not valid yet")]
    ClockNotValid,
    /// The release is older than the anti-rollback floor a signed
    /// `min_unixtime` raised.
    #[error("release {manifest} is older than the signed minimum {min_unixtime}")]
    BelowFloor {
        /// The manifest's unixtime.
        manifest: u64,
        /// The device's durable `min_unixtime` floor.
        min_unixtime: u64,
    },
    /// The signature verifies with no trusted key and the JWS header
    /// names (`kid`) a key this device retired.
    #[error("manifest signed by the retired key {0:?}")]
    RetiredKey(String),
}

impl OtaError {
    /// The variant's name in snake case (`bad_signature`, `hash_mismatch`,
    /// ...), sent as `kind` beside the protocol error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::ManifestTooLarge { .. } => "manifest_too_large",
            Self::BadAlg(_) => "bad_alg",
            Self::BadSignature => "bad_signature",
            Self::WrongVariant { .. } => "wrong_variant",
            Self::NotNewer { .. } => "not_newer",
            Self::RolledBack(_) => "rolled_back",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::BadHash => "bad_hash",
            Self::BadPath(_) => "bad_path",
            Self::BadKey(_) => "bad_key",
            Self::ImageTooLong(_) => "image_too_long",
            Self::ImageTooShort { .. } => "image_too_short",
            Self::HashMismatch => "hash_mismatch",
            Self::Gzip(_) => "gzip",
            Self::Http { .. } => "http",
            Self::Network(_) => "network",
            Self::Deadline { .. } => "deadline",
            Self::Io(_) => "io",
            Self::Busy(_) => "busy",
            Self::Cancelled => "cancelled",
            Self::NotConfigured(_) => "not_configured",
            Self::ConsentRefused(_) => "consent_refused",
            Self::ChunkIndex(_) => "bad_chunk_index",
            Self::ChunkMismatch { .. } => "chunk_mismatch",
            Self::Expired { .. } => "expired",
            Self::ClockNotValid => "clock_not_valid",
            Self::BelowFloor { .. } => "below_floor",
            Self::RetiredKey(_) => "retired_key",
        }
    }

    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) | Self::BadHash | Self::BadPath(_) | Self::BadKey(_) => {
                ErrorCode::BadRequest
            }
            Self::ManifestTooLarge { .. } | Self::ImageTooLarge { .. } | Self::ImageTooLong(_) => {
                ErrorCode::TooLarge
            }
            Self::BadAlg(_) | Self::BadSignature | Self::WrongVariant { .. } => {
                ErrorCode::Forbidden
            }
            Self::NotNewer { .. } | Self::RolledBack(_) => ErrorCode::OutOfRange,
            Self::ImageTooShort { .. } | Self::HashMismatch | Self::Gzip(_) => {
                ErrorCode::BadRequest
            }
            Self::Http { status: 404, .. } => ErrorCode::NotFound,
            Self::Http { .. } | Self::Network(_) | Self::Io(_) => ErrorCode::Io,
            Self::Deadline { .. } => ErrorCode::Timeout,
            Self::Busy(_) => ErrorCode::Busy,
            Self::Cancelled | Self::ConsentRefused(_) => ErrorCode::Denied,
            Self::NotConfigured(_) => ErrorCode::NotFound,
            Self::ChunkIndex(_) | Self::ChunkMismatch { .. } => ErrorCode::BadRequest,
            Self::Expired { .. } | Self::RetiredKey(_) => ErrorCode::Forbidden,
            Self::ClockNotValid => ErrorCode::Deferred,
            Self::BelowFloor { .. } => ErrorCode::OutOfRange,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_json() {
        let s = OtaStatus {
            phase: OtaPhase::Downloading,
            percent: 42,
            slots: vec![SlotInfo { name: "a".into(), status: SlotStatus::Trial, unixtime: 7 }],
            ..OtaStatus::default()
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"downloading\"") && j.contains("\"trial\""));
        assert_eq!(serde_json::from_str::<OtaStatus>(&j).unwrap(), s);
    }

    #[test]
    fn errors_map_to_protocol_codes() {
        assert_eq!(OtaError::BadSignature.code(), ErrorCode::Forbidden);
        let e = OtaError::Http { status: 404, url: "u".into() };
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(OtaError::ImageTooLong(1).code(), ErrorCode::TooLarge);
        assert_eq!(OtaError::ConsentRefused("x".into()).code(), ErrorCode::Denied);
        assert_eq!(OtaError::HashMismatch.kind(), "hash_mismatch");
        let e = OtaError::ChunkIndex("x".into());
        assert_eq!((e.kind(), e.code()), ("bad_chunk_index", ErrorCode::BadRequest));
        let e = OtaError::Expired { expires: 1, now: 2 };
        assert_eq!((e.kind(), e.code()), ("expired", ErrorCode::Forbidden));
        assert_eq!(OtaError::ClockNotValid.code(), ErrorCode::Deferred);
        let e = OtaError::BelowFloor { manifest: 1, min_unixtime: 2 };
        assert_eq!((e.kind(), e.code()), ("below_floor", ErrorCode::OutOfRange));
        assert_eq!(OtaError::RetiredKey("k".into()).kind(), "retired_key");
    }

    #[test]
    fn status_without_keys_or_floor_reads_and_writes_as_before() {
        let j = serde_json::to_string(&OtaStatus::default()).unwrap();
        assert!(!j.contains("trusted_kids") && !j.contains("min_unixtime"), "{j}");
        let s =
            OtaStatus { trusted_kids: vec!["k1".into()], min_unixtime: 5, ..OtaStatus::default() };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<OtaStatus>(&j).unwrap(), s);
    }
}
