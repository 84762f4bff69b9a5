//! The one place that maps a [`Config`] to the settings each component
//! owns: the services' ([`ServiceConfig`], [`OtaSettings`]), the
//! supervisor's timing ([`SupervisorConfig`]) and restart limits
//! ([`RestartLimits`]), the fleet link's ([`FleetSettings`]); the control server's settings are its section
//! as is ([`ControlSettings`](crate::control::settings::ControlSettings)),
//! and logging's are `[log]`'s format and level.

use std::path::Path;
use std::time::Duration;

use super::{Config, ConfirmMode, FleetCommands, TimeSourceName};
use crate::fleet::{Broker, CommandRole, FleetSettings};
use crate::services::{OtaSettings, ServiceConfig};
use crate::supervision::RestartLimits;
use crate::supervisor::SupervisorConfig;

impl Config {
    /// The services' settings, with durable state under `state_dir`.
    pub fn services(&self, state_dir: &Path) -> ServiceConfig {
        use lwsys_actors::clock::{ClockConfig, TimeSource};
        use lwsys_actors::trust::{TrustConfig, TrustSource};
        let t = &self.time;
        let clock = ClockConfig {
            source: match t.source {
                TimeSourceName::System => TimeSource::System,
                TimeSourceName::Sntp => TimeSource::Sntp,
            },
            trust_unsynced: t.trust_unsynced,
            default_server: t.server.clone(),
            resync: Duration::from_secs(t.resync_secs),
            backoff_min: Duration::from_millis(t.backoff_min_ms),
            backoff_max: Duration::from_millis(t.backoff_max_ms),
            query_timeout: Duration::from_millis(t.query_timeout_ms),
            wake_latency: Duration::from_micros(self.system.wake_latency_us),
            ..ClockConfig::default()
        };
        let sources = self
            .trust
            .blob_files
            .iter()
            .cloned()
            .map(TrustSource::Blob)
            .chain(self.trust.cert_dirs.iter().cloned().map(TrustSource::CertDir))
            .collect();
        ServiceConfig {
            state_dir: Some(state_dir.to_owned()),
            blob_max_bytes: self.blobs.max_bytes,
            durable: self.blobs.durable.clone(),
            clock,
            clock_ops: None,
            set_system_clock: t.set_system_clock,
            trust: TrustConfig {
                sources,
                cache_ttl_secs: self.trust.cache_ttl_secs,
                cache_max_bytes: self.trust.cache_max_bytes,
            },
            trust_query: None,
            ota: self.ota_settings(),
            ota_ops: None,
        }
    }
}

impl Config {
    /// The consent deadline.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_millis(self.supervisor.consent_timeout_ms)
    }

    /// The service restart limits.
    pub fn restart_limits(&self) -> RestartLimits {
        RestartLimits {
            max: self.supervisor.max_restarts,
            window: Duration::from_secs(self.supervisor.restart_window_secs),
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.supervisor.shutdown_grace_ms)
    }
}

impl Config {
    /// The consent engine's timing.
    pub fn supervisor_config(&self) -> SupervisorConfig {
        SupervisorConfig {
            consent_timeout: self.consent_timeout(),
            shutdown_grace: self.shutdown_grace(),
        }
    }

    /// `[ota.policy]` as the OTA service uses it (validated already: a
    /// window or offset that does not parse is left out).
    fn update_policy(&self) -> lwsys_actors::ota::policy::UpdatePolicy {
        let p = &self.ota.policy;
        lwsys_actors::ota::policy::UpdatePolicy {
            windows: p.windows.iter().filter_map(|w| w.parse().ok()).collect(),
            utc_offset_secs: lwsys_actors::ota::policy::parse_utc_offset(&p.utc_offset)
                .unwrap_or(0),
            max_deferrals: (p.max_deferrals > 0).then_some(p.max_deferrals),
            max_defer_secs: (p.max_defer_secs > 0).then_some(p.max_defer_secs),
            security_deadline_secs: p.security_deadline_secs,
        }
    }

    fn ota_settings(&self) -> Option<OtaSettings> {
        let o = &self.ota;
        (!o.repository.is_empty()).then(|| OtaSettings {
            repository: o.repository.clone(),
            variant: o.variant.clone(),
            public_jwk: o.public_jwk.clone(),
            periodic_check: Duration::from_secs(o.periodic_check_secs),
            auto_confirm: o.confirm == ConfirmMode::Auto,
            confirm_after: Duration::from_secs(o.confirm_after_secs),
            confirm_timeout: Duration::from_secs(o.confirm_timeout_secs),
            health_commands: o
                .health_commands
                .iter()
                .map(|c| c.split_whitespace().map(str::to_owned).collect())
                .collect(),
            health_timeout: Duration::from_secs(o.health_timeout_secs),
            policy: self.update_policy(),
            max_boot_attempts: o.max_boot_attempts,
            bootloader: o.bootloader.clone(),
            connect_timeout: Duration::from_millis(o.connect_timeout_ms),
            read_timeout: Duration::from_millis(o.read_timeout_ms),
            download_timeout: Duration::from_secs(o.download_timeout_secs),
            max_image_bytes: o.max_image_bytes,
            ca_file: (!o.ca_file.as_os_str().is_empty()).then(|| o.ca_file.clone()),
            wake_latency: Duration::from_micros(self.system.wake_latency_us),
        })
    }
}

impl Config {
    /// The fleet link's settings; `None` when `[fleet] broker` is empty (or,
    /// which validation prevents, unusable).
    pub fn fleet_settings(&self) -> Option<FleetSettings> {
        let f = &self.fleet;
        let broker = Broker::parse(&f.broker).ok()?;
        Some(FleetSettings {
            broker,
            prefix: f.prefix.clone(),
            device_id: (!f.device_id.is_empty()).then(|| f.device_id.clone()),
            commands: match f.commands {
                FleetCommands::None => CommandRole::None,
                FleetCommands::Readonly => CommandRole::ReadOnly,
                FleetCommands::Admin => CommandRole::Admin,
            },
            gate_state: f.gate_state.parse().ok(),
            keepalive: Duration::from_secs(f.keepalive_secs),
            backoff_max: Duration::from_secs(f.backoff_max_secs),
            command_timeout: Duration::from_secs(f.command_timeout_secs),
            ca_file: (!f.ca_file.as_os_str().is_empty()).then(|| f.ca_file.clone()),
            variant: self.ota.variant.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    #[test]
    fn ota_section_defaults_and_needs_variant_and_key_with_a_repository() {
        let cfg = Config::from_toml("", Path::new("c")).unwrap();
        assert_eq!(cfg.ota.periodic_check_secs, 86_400);
        assert_eq!(cfg.ota.max_boot_attempts, 3);
        assert_eq!(cfg.ota.download_timeout_secs, 1800);
        assert_eq!(cfg.ota.confirm, ConfirmMode::Auto);
        assert!(cfg.services(Path::new("/s")).ota.is_none());
        let err =
            Config::from_toml("[ota]\nrepository = \"http://x\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("[ota] repository: needs ota.variant"), "{err}");
        let text = "[ota]\nrepository = \"http://x\"\nvariant = \"v\"\npublic_jwk = \"k\"\nconfirm = \"manual\"\n";
        let cfg = Config::from_toml(text, Path::new("c")).unwrap();
        assert_eq!(cfg.ota.confirm, ConfirmMode::Manual);
        assert!(cfg.services(Path::new("/s")).ota.is_some());
    }
}
