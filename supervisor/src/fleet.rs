//! The fleet link: `lwsysd`'s connection to the fleet's MQTT broker
//! (`[fleet]`, DESIGN §7-§8, docs/protocol.md "Fleet topics").
//!
//! - [`FleetService`] (`service`) follows the supervisor's events and keeps
//!   the newest payload of each retained topic in a [`Latest`] buffer
//!   (`latest`): one slot per topic, so however fast the state moves and
//!   however long the broker is away, the link holds a handful of values,
//!   and a consent round never waits on the network.
//! - The link task (`link`) owns the MQTT connection: it publishes what the
//!   buffer marks dirty, reconnects with capped exponential backoff and
//!   republishes everything on each CONNACK; its last will sets `status` to
//!   `lost`.
//! - Broker commands (`commands`) run one at a time through an ordinary
//!   `ControlSession` over an in-process pipe, with the configured role, so
//!   they are decoded, checked and dispatched exactly as socket requests.
//! - The optional gate (`gate`) is the built-in `fleet` notifier that
//!   defers `gate_state` until the broker has accepted the device.
//! - How the device is named and authenticated, and how the broker is
//!   verified, is in `identity`.

mod commands;
mod gate;
mod identity;
mod latest;
mod link;
mod service;

use std::time::Duration;

pub use commands::{CommandRole, MAX_PENDING_COMMANDS};
pub use gate::FleetGate;
pub use latest::Latest;
pub use service::FleetService;

use lwsys_messages::state::SystemState;

/// The name of the built-in gate notifier.
pub const GATE_NOTIFIER: &str = "fleet";

/// A broker address as `[fleet] broker` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `mqtts` (TLS) rather than `mqtt`.
    pub tls: bool,
    /// Host name or address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Broker {
    /// Parses `mqtts://host:port` or `mqtt://host:port` (the port defaults
    /// to 8883 and 1883); anything else is refused with a message for the
    /// config error.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("expected mqtts://host:port or mqtt://host:port, got {url:?}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) =
                v6.split_once(']').ok_or_else(|| format!("unclosed '[' in {url:?}"))?;
            (h, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        // A ':' in a host is an IPv6 address, which must be bracketed.
        let bracketed = rest.starts_with('[');
        let host_ok = !host.is_empty()
            && (bracketed || !host.contains(':'))
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !host_ok {
            return Err(format!("expected a host name or address in {url:?}"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("expected a port from 1 to 65535 in {url:?}")),
            },
        };
        Ok(Self { tls, host: host.to_owned(), port })
    }
}

/// The fleet link's settings, from `[fleet]` (and `[ota] variant`). The
/// broker is verified by the system's own trust store (see
/// [`Services::trust_verifier`](crate::services::Services::trust_verifier))
/// and/or `ca_file`.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Where the broker is.
    pub broker: Broker,
    /// Topic prefix.
    pub prefix: String,
    /// The configured device id; `None` derives it from the blobs.
    pub device_id: Option<String>,
    /// What broker commands may do.
    pub commands: CommandRole,
    /// The state the `fleet` notifier gates, if any.
    pub gate_state: Option<SystemState>,
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// Longest wait between reconnect attempts.
    pub backoff_max: Duration,
    /// How long one command may run.
    pub command_timeout: Duration,
    /// Extra CA certificates (PEM) for an `mqtts` broker.
    pub ca_file: Option<std::path::PathBuf>,
    /// `[ota] variant`, published in `info`.
    pub variant: String,
}

/// Capped exponential backoff: 1 s, 2 s, 4 s ... up to the cap; reset on
/// a successful connect.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The first wait of a fresh backoff.
    pub const FIRST: Duration = Duration::from_secs(1);

    /// A backoff capped at `max`.
    pub fn new(max: Duration) -> Self {
        Self { next: Self::FIRST.min(max), max }
    }

    /// The wait before the next attempt; doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        w
    }

    /// Back to the first wait.
    pub fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let b = Broker::parse("mqtts://broker.example").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (true, "broker.example", 8883));
        let b = Broker::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "127.0.0.1", 1884));
        let b = Broker::parse("mqtt://[::1]:7").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 7));
        assert_eq!(Broker::parse("mqtt://h").unwrap().port, 1883);
        for bad in [
            "",
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:65536",
            "mqtt://h:x",
            "mqtt://a b:1",
            "mqtt://[::1:1",
        ] {
            assert!(Broker::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(60));
        let waits: Vec<u64> = (0..8).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }

    #[test]
    fn config_maps_to_settings_and_roles() {
        let text = "[fleet]\nbroker = \"mqtt://127.0.0.1:1\"\ncommands = \"admin\"\ngate_state = \"REGISTERED\"\n";
        let cfg = Config::from_toml(text, std::path::Path::new("c")).unwrap();
        let s = cfg.fleet_settings().unwrap();
        assert_eq!(s.commands, CommandRole::Admin);
        assert_eq!(s.gate_state, Some(SystemState::Registered));
        assert_eq!(s.prefix, "lwsys");
        assert!(s.device_id.is_none());
        assert!(Config::default().fleet_settings().is_none());
    }
}
