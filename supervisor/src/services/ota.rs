//! The OTA service's settings and what every (re)start of it is built
//! from: the issuer's key, the fetch and manifest policy, the links to the
//! supervisor, and the platform ops, either the A/B slot directory under
//! the state dir or ones the library user plugged in
//! ([`Builder::ota_ops`](crate::Builder::ota_ops)). The ops are shared
//! with the system's [`Ops`](lwsys_actors::platform::Ops), so `system.info`
//! lists `ota` whenever the service runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lwsys_actors::ota::policy::UpdatePolicy;
use lwsys_actors::ota::policy_store::PolicyStore;
use lwsys_actors::ota::{IssuerKey, Manifest, OtaConfig, OtaLinks, OtaOps, SlotDir};
use lwsys_actors::platform::SharedOtaOps;
use lwsys_messages::ota::{OtaError, OtaPhase, OtaStatus, RollbackRecord};
use slog::Logger;

use super::{ServiceError, SupervisorLinks};

/// The OTA service's settings (the `[ota]` section, mapped by
/// `Config::services`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaSettings {
    /// Base URL of the update repository.
    pub repository: String,
    /// This device's firmware variant.
    pub variant: String,
    /// The issuer's public JWK file (EC P-521).
    pub public_jwk: PathBuf,
    /// Time between periodic checks.
    pub periodic_check: Duration,
    /// Confirm a trial boot once stable at OPERATIONAL and healthy (else
    /// only by `ota.report_current`).
    pub auto_confirm: bool,
    /// How long a trial stays OPERATIONAL before its health checks run.
    pub confirm_after: Duration,
    /// A trial not confirmed this long after the service starts is
    /// rolled back.
    pub confirm_timeout: Duration,
    /// Health check commands (argv, no shell).
    pub health_commands: Vec<Vec<String>>,
    /// How long one health command may run.
    pub health_timeout: Duration,
    /// `[ota.policy]`: windows, deferral budget, security deadline.
    pub policy: UpdatePolicy,
    /// Unconfirmed boots of a trial slot before it is rolled back.
    pub max_boot_attempts: u32,
    /// Command run with the selected slot appended; empty: only record it.
    pub bootloader: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read.
    pub read_timeout: Duration,
    /// Deadline of a whole download.
    pub download_timeout: Duration,
    /// Largest inflated image accepted, bytes.
    pub max_image_bytes: u64,
    /// PEM CA certificates trusted for https; `None`: the trust store when
    /// it has sources, else the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// `[system] wake_latency_us`: checks are armed this much earlier.
    pub wake_latency: Duration,
}

impl OtaSettings {
    /// Updates from `repository` for `variant`, signed by the key in
    /// `public_jwk`; everything else at the documented defaults.
    pub fn new(repository: &str, variant: &str, public_jwk: &Path) -> Self {
        Self {
            repository: repository.to_owned(),
            variant: variant.to_owned(),
            public_jwk: public_jwk.to_owned(),
            periodic_check: Duration::from_secs(86_400),
            auto_confirm: true,
            confirm_after: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(600),
            health_commands: Vec::new(),
            health_timeout: Duration::from_secs(30),
            policy: UpdatePolicy::default(),
            max_boot_attempts: 3,
            bootloader: String::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            download_timeout: Duration::from_secs(1800),
            max_image_bytes: 4 << 30,
            ca_file: None,
            wake_latency: Duration::ZERO,
        }
    }
}

/// OTA ops shared between the OTA service's worker and the system's
/// `Ops`: each call locks them. A panic in an earlier call does not lock
/// them for ever: the restarted service carries on with them.
pub(crate) struct SharedOps(pub(crate) SharedOtaOps);

impl SharedOps {
    fn lock(&self) -> MutexGuard<'_, Box<dyn OtaOps>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OtaOps for SharedOps {
    fn on_boot(&mut self) -> Result<(), OtaError> {
        self.lock().on_boot()
    }
    fn start(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.lock().start(m)
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), OtaError> {
        self.lock().write(chunk)
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        self.lock().abort()
    }
    fn finalize(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.lock().finalize(m)
    }
    fn report_current(&mut self, bad: bool) -> Result<(), OtaError> {
        self.lock().report_current(bad)
    }
    fn roll_back(&mut self, reason: RollbackRecord) -> Result<(), OtaError> {
        self.lock().roll_back(reason)
    }
    fn progress(&mut self, phase: OtaPhase, percent: u8) {
        self.lock().progress(phase, percent);
    }
    fn last_fw_unixtime(&self) -> u64 {
        self.lock().last_fw_unixtime()
    }
    fn rolled_back_unixtime(&self) -> u64 {
        self.lock().rolled_back_unixtime()
    }
    fn status(&self) -> OtaStatus {
        self.lock().status()
    }
    fn periodic_check_secs(&self) -> u64 {
        self.lock().periodic_check_secs()
    }
    fn read_active(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, OtaError> {
        self.lock().read_active(offset, buf)
    }
    fn load_index(&mut self) -> Option<Vec<u8>> {
        self.lock().load_index()
    }
    fn store_index(&mut self, index: &[u8]) -> Result<(), OtaError> {
        self.lock().store_index(index)
    }
    fn read_partial(
        &mut self,
        m: &Manifest,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        self.lock().read_partial(m, offset, buf)
    }
    fn start_at(&mut self, m: &Manifest, keep: u64) -> Result<u64, OtaError> {
        self.lock().start_at(m, keep)
    }
    fn checkpoint(&mut self) -> Result<(), OtaError> {
        self.lock().checkpoint()
    }
    fn suspend(&mut self) -> Result<(), OtaError> {
        self.lock().suspend()
    }
}

/// Opens (or reopens, after a crash) the ops the service works on.
pub(super) type OpenOps = Arc<dyn Fn() -> Result<Box<dyn OtaOps>, OtaError> + Send + Sync>;

/// What every (re)start of the OTA service is built from.
pub(super) struct OtaParts {
    /// The configured issuer key; the keyring may add others.
    pub(super) key: IssuerKey,
    pub(super) cfg: OtaConfig,
    pub(super) links: OtaLinks,
    /// The ops for a (re)started service (no boot bookkeeping:
    /// `OtaService::new` does that).
    pub(super) open: OpenOps,
    /// The same ops, as the system's `Ops` sees them.
    pub(super) shared: SharedOtaOps,
}

/// The OTA service's parts: the issuer's key read from the configured
/// file (its `kid`, else its thumbprint, names it), the keyring at
/// `<state_dir>/ota/keyring.json`; https trusting `ca_file`, else the trust store's `verifier`, else
/// the web roots; the download saved under `<state_dir>/ota/` for a
/// resume; modal requests, events and reboots through `links`. The ops are
/// `user_ops` when given, else the slots under `state_dir` (then required).
pub(super) fn ota_parts(
    log: &Logger,
    o: &OtaSettings,
    user_ops: Option<SharedOtaOps>,
    verifier: Option<Arc<lwsys_actors::trust::JitVerifier>>,
    state_dir: Option<&Path>,
    links: &SupervisorLinks,
) -> Result<OtaParts, ServiceError> {
    use lwsys_actors::ota::{
        issuers::KEYRING_FILE, tls_from_ca_file, tls_with_verifier, Bootloader, DownloadCache,
        FetchConfig, ManifestPolicy,
    };
    let jwk = std::fs::read_to_string(&o.public_jwk)
        .map_err(|e| OtaError::BadKey(format!("{}: {e}", o.public_jwk.display())))?;
    let key = IssuerKey::from_config_jwk(&jwk)?;
    let mut fetch = FetchConfig::new(&o.repository, &o.variant);
    fetch.connect_timeout = o.connect_timeout;
    fetch.read_timeout = o.read_timeout;
    fetch.download_timeout = o.download_timeout;
    if let Some(ca) = &o.ca_file {
        fetch.tls = Some(tls_from_ca_file(ca)?);
    } else if let Some(v) = verifier {
        fetch.tls = Some(tls_with_verifier(v)?);
    }
    let mut policy = ManifestPolicy::new(&o.variant);
    policy.max_image_bytes = o.max_image_bytes;
    let (shared, open): (SharedOtaOps, OpenOps) = match user_ops {
        Some(ops) => {
            let again = ops.clone();
            (ops, Arc::new(move || Ok(Box::new(SharedOps(again.clone())) as Box<dyn OtaOps>)))
        }
        None => {
            let dir =
                state_dir.ok_or_else(|| OtaError::NotConfigured("needs a state dir".into()))?;
            let bootloader = match o.bootloader.trim() {
                "" => Bootloader::record_only(),
                line => Bootloader::command(line),
            };
            let (dir, slot_log) = (dir.to_owned(), log.clone());
            let (attempts, periodic) = (o.max_boot_attempts, o.periodic_check.as_secs());
            let open_slots = move || {
                Ok(SlotDir::open(&dir, &slot_log)?
                    .with_max_boot_attempts(attempts)
                    .with_periodic_check_secs(periodic)
                    .with_bootloader(bootloader.clone()))
            };
            let shared: SharedOtaOps = Arc::new(Mutex::new(Box::new(open_slots()?)));
            let again = shared.clone();
            // A reopen (the dead service's ops were lost with it) puts
            // fresh slots in place of the old, so `Ops` sees them too.
            let reopen = move || {
                let fresh = open_slots()?;
                *again.lock().unwrap_or_else(PoisonError::into_inner) = Box::new(fresh);
                Ok(Box::new(SharedOps(again.clone())) as Box<dyn OtaOps>)
            };
            let first = shared.clone();
            let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
            // The first open hands out the slots opened above; later ones
            // reopen.
            let open: OpenOps = Arc::new(move || {
                if used.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    reopen()
                } else {
                    Ok(Box::new(SharedOps(first.clone())) as Box<dyn OtaOps>)
                }
            });
            (shared, open)
        }
    };
    let mut cfg = OtaConfig::new(fetch, policy);
    cfg.auto_confirm = o.auto_confirm;
    cfg.confirm_after = o.confirm_after;
    cfg.confirm_timeout = o.confirm_timeout;
    cfg.health_commands = o.health_commands.clone();
    cfg.health_timeout = o.health_timeout;
    cfg.update_policy = o.policy.clone();
    if let Some(d) = state_dir {
        let dir = d.join("ota");
        lwsys_actors::store::create_private_dir(&dir)
            .map_err(|e| OtaError::Io(format!("create {}: {e}", dir.display())))?;
        cfg.policy_store = PolicyStore::new(&dir);
    }
    cfg.wake_latency = o.wake_latency;
    cfg.periodic = Some(o.periodic_check.max(Duration::from_secs(1)));
    cfg.download_cache = state_dir.map(|d| DownloadCache::new(&d.join("ota")));
    cfg.keyring = state_dir.map(|d| d.join(KEYRING_FILE));
    let links = OtaLinks {
        modal: links.modal.clone(),
        events: Some(links.events.clone()),
        // Called on the event loop after a finalize whose manifest says
        // `reset`: the system's reboot (an orderly pass through
        // CONTEXT_DESTROYING first).
        reboot: links.reboot.clone(),
    };
    Ok(OtaParts { key, cfg, links, open, shared })
}
