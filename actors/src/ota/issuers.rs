//! The OTA worker's side of issuer trust (issue 18): a check verifies the
//! manifest against the durable [`Keyring`] (keys by `kid`, the signed
//! floor) and the device's clock, and a manifest that passed every check
//! then has its `next_jwk`, `retire_kids` and `min_unixtime` taken in,
//! durably, before the service sees it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Context, Handler, Message};
use lwsys_manifest::{IssuerKey, Keyring, Learned};
use lwsys_messages::ota::OtaError;
use lwsys_messages::state::SystemState;

use super::{Fetcher, Manifest, ManifestPolicy, OtaOps};

/// Where the keyring lives under the state dir.
pub const KEYRING_FILE: &str = "ota/keyring.json";

/// The worker's issuer trust: the keyring, and whether the clock is
/// valid (set by `OtaService` once the system reached TIME_VALID).
pub(crate) struct Issuers {
    /// A keyring file that cannot be read leaves OTA refusing every
    /// manifest with that error: trusting the configured key alone could
    /// bring back a key the issuer retired.
    keys: Result<Keyring, OtaError>,
    clock_valid: Arc<AtomicBool>,
}

impl Issuers {
    /// Opens the keyring over `configured` from `path` (only in memory
    /// without one).
    pub(crate) fn open(
        configured: IssuerKey,
        path: Option<&Path>,
        clock_valid: Arc<AtomicBool>,
    ) -> Self {
        Self { keys: Keyring::open(configured, path), clock_valid }
    }

    /// The trust part of the status.
    pub(crate) fn trust(&self) -> Trust {
        Trust::of(&self.keys)
    }

    /// Fetches the manifest and verifies it with the trusted keys, the
    /// installed, rolled-back and floor unixtimes, and the device's time
    /// (none while the clock is not valid); then takes in what it
    /// announces. The trust report is `Some` when the keyring changed.
    pub(crate) fn check(
        &mut self,
        ops: &dyn OtaOps,
        fetcher: &Fetcher,
        policy: &ManifestPolicy,
        cancel: &AtomicBool,
    ) -> (Result<Manifest, OtaError>, Option<Trust>) {
        let ring = match &mut self.keys {
            Ok(ring) => ring,
            Err(e) => return (Err(e.clone()), None),
        };
        let mut policy = policy.clone();
        policy.installed_unixtime = ops.last_fw_unixtime();
        policy.rolled_back_unixtime = ops.rolled_back_unixtime();
        policy.now =
            self.clock_valid.load(Ordering::Relaxed).then(|| crate::time::unix_us() / 1_000_000);
        let verified = match fetcher
            .manifest_unless(policy.max_manifest_bytes, cancel)
            .and_then(|jws| ring.verify(&jws, &policy))
        {
            Ok(v) => v,
            Err(e) => return (Err(e), None),
        };
        match ring.learn(&verified.manifest, &verified.kid) {
            Ok(learned) if learned.changed() || !learned.kept.is_empty() => {
                let mut t = Trust::of(&self.keys);
                t.learned = Some((learned, verified.kid));
                (Ok(verified.manifest), Some(t))
            }
            Ok(_) => (Ok(verified.manifest), None),
            Err(e) => (Err(e), None),
        }
    }
}

/// The trust part of `ota.status`, and what a check changed in it. Sent
/// by the worker to `OtaService` when the keyring is opened and whenever
/// a manifest changes it.
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "()")]
pub(crate) struct Trust {
    /// The trusted `kid`s, as [`Keyring::trusted_kids`].
    pub(crate) trusted_kids: Vec<String>,
    /// The durable signed floor.
    pub(crate) min_unixtime: u64,
    /// What the last manifest changed, and the `kid` that signed it.
    pub(crate) learned: Option<(Learned, String)>,
    /// Why the keyring is unusable, if it is.
    pub(crate) error: Option<OtaError>,
}

impl Trust {
    fn of(keys: &Result<Keyring, OtaError>) -> Self {
        match keys {
            Ok(ring) => Self {
                trusted_kids: ring.trusted_kids(),
                min_unixtime: ring.min_unixtime(),
                ..Self::default()
            },
            Err(e) => Self { error: Some(e.clone()), ..Self::default() },
        }
    }
}

impl super::OtaService {
    /// Latches "the clock is valid" once the system is at or past
    /// TIME_VALID (it stays valid after, even through POLICY_INVALID).
    pub(super) fn note_clock(&self, state: SystemState) {
        if state >= SystemState::TimeValid && state != SystemState::ContextDestroying {
            self.clock_valid.store(true, Ordering::Relaxed);
        }
    }
}

impl Handler<Trust> for super::OtaService {
    type Result = ();

    fn handle(&mut self, msg: Trust, _: &mut Context<Self>) {
        if let Some(e) = &msg.error {
            slog::error!(self.log, "issuer keyring unusable; every manifest is refused until it is fixed";
                         "error" => crate::LogSafe(&e.to_string()));
        }
        if let Some((learned, signer)) = &msg.learned {
            let log = self.log.new(slog::o!("signer" => crate::LogSafe(signer).to_string()));
            if let Some(kid) = &learned.added {
                slog::info!(log, "issuer key added"; "kid" => crate::LogSafe(kid).to_string());
            }
            for kid in &learned.retired {
                slog::info!(log, "issuer key retired"; "kid" => crate::LogSafe(kid).to_string());
            }
            for kid in &learned.kept {
                slog::warn!(log, "a manifest asked to retire its own signing key; kept";
                            "kid" => crate::LogSafe(kid).to_string());
            }
            if let Some(min) = learned.min_unixtime {
                slog::info!(log, "anti-rollback floor raised"; "min_unixtime" => min);
            }
        }
        self.progress.trusted_kids = msg.trusted_kids;
        self.progress.min_unixtime = msg.min_unixtime;
    }
}
