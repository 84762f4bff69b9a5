//! What `OtaService` is built from: its settings ([`OtaConfig`]) and the
//! ways it reaches the rest of the system ([`OtaLinks`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::supervisor::Cycle;

use super::policy::UpdatePolicy;
use super::policy_store::PolicyStore;
use super::{DownloadCache, FetchConfig, ManifestPolicy};

/// Settings of the OTA service.
#[derive(Clone)]
pub struct OtaConfig {
    /// Where and how to fetch.
    pub fetch: FetchConfig,
    /// Manifest checks (variant, limits); the unixtimes come from the ops.
    pub policy: ManifestPolicy,
    /// Confirm a trial boot once it is healthy (`[ota] confirm = "auto"`,
    /// the default); otherwise only `ota.report_current` does.
    pub auto_confirm: bool,
    /// How long the system stays OPERATIONAL on a trial boot before the
    /// health checks run and, passing, confirm it (10 s).
    pub confirm_after: Duration,
    /// From the service's start: a trial not confirmed by then is rolled
    /// back (600 s).
    pub confirm_timeout: Duration,
    /// Health check commands (argv, no shell): each must exit 0 within
    /// `health_timeout` for a trial to be confirmed (none by default).
    pub health_commands: Vec<Vec<String>>,
    /// How long one health command may run before it counts as failed
    /// (30 s).
    pub health_timeout: Duration,
    /// Maintenance windows, deferral budget, security deadline.
    pub update_policy: UpdatePolicy,
    /// Where the policy keeps a release's first sighting and deferrals.
    pub policy_store: PolicyStore,
    /// Delay of the first check after OPERATIONAL (30 s).
    pub first_check: Duration,
    /// Up to this much random delay is added to the first check (15 s).
    pub first_check_jitter: Duration,
    /// Between periodic checks; `None` asks the ops (86400 s by default).
    pub periodic: Option<Duration>,
    /// Timers are armed this much earlier, for a device slow to wake.
    pub wake_latency: Duration,
    /// Between consent attempts when MODAL_UPDATING is refused (1 s).
    pub consent_retry: Duration,
    /// How long consent is retried before the update waits for the next
    /// check (30 s).
    pub consent_window: Duration,
    /// Where a download is saved so that it resumes after a restart
    /// (`None`, the default: every install starts from zero).
    pub download_cache: Option<DownloadCache>,
    /// The durable issuer keyring (announced and retired keys, signed
    /// floor); `None`, the default: kept in memory only, so it starts
    /// from the configured key alone.
    pub keyring: Option<PathBuf>,
}

impl OtaConfig {
    /// Upstream's timing: first check 30 s + up to 15 s after OPERATIONAL,
    /// consent retried every second for 30 s, auto-confirm (after 10 s
    /// stable at OPERATIONAL, within 600 s); no update policy.
    pub fn new(fetch: FetchConfig, policy: ManifestPolicy) -> Self {
        Self {
            fetch,
            policy,
            auto_confirm: true,
            confirm_after: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(600),
            health_commands: Vec::new(),
            health_timeout: Duration::from_secs(30),
            update_policy: UpdatePolicy::default(),
            policy_store: PolicyStore::memory(),
            first_check: Duration::from_secs(30),
            first_check_jitter: Duration::from_secs(15),
            periodic: None,
            wake_latency: Duration::ZERO,
            consent_retry: Duration::from_secs(1),
            consent_window: Duration::from_secs(30),
            download_cache: None,
            keyring: None,
        }
    }
}

/// How the OTA service reaches the system.
#[derive(Clone)]
pub struct OtaLinks {
    /// Where `Cycle::EnterModal` / `Cycle::LeaveModal` go (the Supervisor).
    pub modal: Recipient<Cycle>,
    /// Where `ota` events go, as `SystemEvent::Ota` (the
    /// Supervisor, which forwards them to subscribed clients).
    pub events: Option<Recipient<SystemEvent>>,
    /// Called after an installed release whose manifest says `reset`: the
    /// platform's reboot op.
    pub reboot: Arc<dyn Fn() + Send + Sync>,
}
