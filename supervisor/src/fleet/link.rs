//! The link task: one MQTT connection to the broker, owned by a single
//! tokio task on the daemon's runtime. It publishes what [`Latest`] marks
//! dirty (retained, QoS 1), republishes everything on each CONNACK,
//! reconnects after a failure with capped backoff, and hands `cmd`
//! payloads to the command worker through a bounded queue, publishing the
//! replies it sends back. Nothing in the state machine waits on it: a dead
//! broker only means the buffer keeps the newest values until it is back.

use std::sync::Arc;
use std::time::Duration;

use lwsys_actors::logsafe::LogSafe;
use lwsys_messages::fleet::{self, LinkStatus, Topic};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use slog::{debug, info, warn, Logger};
use tokio::sync::mpsc;

use super::commands::{self, MAX_PENDING_COMMANDS, MAX_REPLY};
use super::{Backoff, FleetGate, FleetSettings, Latest};
use crate::control::SessionEnv;

/// Requests the link may have queued for the MQTT event loop; a publish
/// that finds it full stays dirty in [`Latest`] and is retried.
const REQUEST_CAP: usize = 16;

/// Largest MQTT packet accepted from the broker.
const MAX_INCOMING: usize = 1 << 20;

/// What the link needs besides its settings.
pub struct LinkParts {
    /// The daemon's logger.
    pub log: Logger,
    /// Newest payloads to publish.
    pub latest: Arc<Latest>,
    /// The gate to open on CONNACK, if configured.
    pub gate: Option<FleetGate>,
    /// The control sessions' environment, for commands.
    pub env: SessionEnv,
    /// The broker's verifier, for `mqtts`.
    pub verifier: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>>,
}

/// Start the link for `device`: spawns the link task and the command
/// worker on the current (actix) runtime.
pub fn spawn(s: FleetSettings, device: String, opts: MqttOptions, parts: LinkParts) {
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAP);
    let (cmd_tx, cmd_rx) = mpsc::channel::<Vec<u8>>(MAX_PENDING_COMMANDS);
    let (reply_tx, reply_rx) = mpsc::channel::<Vec<u8>>(1);
    let worker_log = parts.log.clone();
    let env = parts.env.clone();
    let role = s.commands;
    let timeout = s.command_timeout;
    actix::spawn(async move {
        let mut cmd_rx = cmd_rx;
        // One command at a time: the next waits in the bounded queue.
        while let Some(payload) = cmd_rx.recv().await {
            let reply = commands::run(&env, role, &payload, timeout).await;
            debug!(worker_log, "fleet command answered"; "bytes" => reply.len());
            if reply_tx.send(reply).await.is_err() {
                break;
            }
        }
    });
    actix::spawn(run(s, device, client, eventloop, parts, cmd_tx, reply_rx));
}

/// The MQTT options: client id = device id, last will `status` = `lost`
/// retained, keepalive, credentials and TLS as identified.
pub fn options(
    s: &FleetSettings,
    device: &str,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mut o = MqttOptions::new(device, s.broker.host.clone(), s.broker.port);
    o.set_keep_alive(s.keepalive);
    o.set_clean_session(true);
    // Incoming: commands over MAX_COMMAND are answered `too_large`, so
    // they must arrive; past this bound rumqttc drops the connection.
    o.set_max_packet_size(MAX_INCOMING, MAX_REPLY + 4096);
    o.set_last_will(LastWill::new(
        fleet::status_topic(&s.prefix, device),
        LinkStatus::Lost.as_str(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some((user, pass)) = credentials {
        o.set_credentials(user, pass);
    }
    if let Some(cfg) = tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(cfg)));
    }
    o
}

/// Hand every dirty topic to the client; one that does not fit now stays
/// dirty for the next turn.
fn flush(client: &AsyncClient, prefix: &str, device: &str, latest: &Latest) {
    for (topic, payload) in latest.take_dirty() {
        if client
            .try_publish(topic.of(prefix, device), QoS::AtLeastOnce, topic.retained(), payload)
            .is_err()
        {
            latest.unsent(topic);
        }
    }
}

async fn run(
    s: FleetSettings,
    device: String,
    client: AsyncClient,
    mut eventloop: EventLoop,
    parts: LinkParts,
    cmd_tx: mpsc::Sender<Vec<u8>>,
    mut reply_rx: mpsc::Receiver<Vec<u8>>,
) {
    let LinkParts { log, latest, gate, env, verifier } = parts;
    let sys = env.sys.downgrade();
    drop(env);
    identify(&s, &device, &sys, verifier.as_ref(), &mut eventloop, &log).await;
    let prefix = s.prefix.as_str();
    let cmd_topic = fleet::cmd_topic(prefix, &device);
    let all_topic = fleet::fleet_cmd_topic(prefix);
    let reply_topic = fleet::reply_topic(prefix, &device);
    let mut backoff = Backoff::new(s.backoff_max);
    let mut connected = false;
    let mut ever = false;
    let mut warned = false;
    loop {
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(log, "fleet broker accepted the device";
                          "broker" => %LogSafe(&s.broker.host), "port" => s.broker.port,
                          "reconnect" => ever);
                    connected = true;
                    ever = true;
                    warned = false;
                    backoff.reset();
                    let _ = client.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce);
                    let _ = client.try_subscribe(all_topic.clone(), QoS::AtLeastOnce);
                    latest.put(Topic::Status, LinkStatus::Online.as_str().as_bytes().to_vec());
                    latest.mark_all();
                    flush(&client, prefix, &device, &latest);
                    if let Some(g) = &gate {
                        g.accepted();
                        // The walk the gate parked goes on now.
                        if let Some(sys) = sys.upgrade() {
                            actix::spawn(async move {
                                let _ = sys.resume(super::GATE_NOTIFIER).await;
                            });
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // A retained command would run again on every
                    // reconnect (a reboot loop, say): commands are live
                    // messages only.
                    let is_cmd = p.topic == cmd_topic || p.topic == all_topic;
                    if is_cmd && p.retain {
                        warn!(log, "retained fleet command ignored"; "topic" => %LogSafe(&p.topic));
                    } else if is_cmd {
                        let payload = p.payload.to_vec();
                        if let Err(mpsc::error::TrySendError::Full(payload)) = cmd_tx.try_send(payload) {
                            let _ = client.try_publish(reply_topic.clone(), QoS::AtLeastOnce, false, commands::busy_reply(&payload));
                        }
                    }
                    if connected { flush(&client, prefix, &device, &latest); }
                }
                Ok(_) => if connected { flush(&client, prefix, &device, &latest) },
                Err(e) => {
                    let wait = backoff.next_wait();
                    // One warning per outage; the retries are debug.
                    if !warned {
                        warned = true;
                        warn!(log, "fleet broker unreachable; retrying";
                              "broker" => %LogSafe(&s.broker.host), "port" => s.broker.port,
                              "error" => %LogSafe(&e.to_string()), "retry_in_ms" => ms(wait));
                    } else {
                        debug!(log, "fleet broker still unreachable";
                               "error" => %LogSafe(&e.to_string()), "retry_in_ms" => ms(wait));
                    }
                    connected = false;
                    if let Some(g) = gate.as_ref().filter(|g| g.unreachable()) {
                        // A walk the gate parked as "waiting for broker"
                        // asks again, so explain says why it waits now.
                        if g.holding() {
                            if let Some(sys) = sys.upgrade() {
                                actix::spawn(async move {
                                    let _ = sys.resume(super::GATE_NOTIFIER).await;
                                });
                            }
                        }
                    }
                    tokio::time::sleep(wait).await;
                    identify(&s, &device, &sys, verifier.as_ref(), &mut eventloop, &log).await;
                }
            },
            () = latest.changed(), if connected => flush(&client, prefix, &device, &latest),
            Some(reply) = reply_rx.recv() => {
                if connected {
                    if client.try_publish(reply_topic.clone(), QoS::AtLeastOnce, false, reply).is_err() {
                        warn!(log, "fleet reply dropped: the MQTT queue is full");
                    }
                } else {
                    debug!(log, "fleet reply dropped: broker gone");
                }
            }
        }
    }
}

/// Set the options of the next connection attempt from the blobs as they
/// are now: MQTT_USERNAME / MQTT_PASSWORD and, for `mqtts`, the client
/// certificate. A device provisioned after boot connects with what it was
/// given from its next attempt on. A TLS setup that fails (a bad key blob)
/// is logged and the attempt is made without a client certificate (never
/// without TLS).
async fn identify(
    s: &FleetSettings,
    device: &str,
    sys: &crate::handle::WeakSystemHandle,
    verifier: Option<&Arc<dyn rustls::client::danger::ServerCertVerifier>>,
    eventloop: &mut EventLoop,
    log: &Logger,
) {
    let Some(sys) = sys.upgrade() else { return };
    let creds = super::identity::credentials(&sys).await;
    let tls = match verifier {
        Some(v) => match super::identity::tls_config(&sys, v.clone()).await {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(log, "fleet client certificate unusable; connecting without one";
                      "error" => %LogSafe(&e));
                match super::identity::tls_anonymous(v.clone()) {
                    Ok(t) => Some(t),
                    // Unreachable short of a rustls bug; the previous
                    // (TLS) settings stay.
                    Err(_) => return,
                }
            }
        },
        None => None,
    };
    eventloop.mqtt_options = options(s, device, creds, tls);
}

/// A wait as milliseconds for a log field.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_client_id_is_the_device_and_the_last_will_marks_it_lost_retained() {
        let text =
            "[fleet]\nbroker = \"mqtt://127.0.0.1:1884\"\nprefix = \"a/b\"\nkeepalive_secs = 7\n";
        let cfg = crate::config::Config::from_toml(text, std::path::Path::new("c")).unwrap();
        let s = cfg.fleet_settings().unwrap();
        let o = options(&s, "dev-9", Some(("u".into(), "p".into())), None);
        assert_eq!(o.client_id(), "dev-9");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1884));
        assert_eq!(o.keep_alive(), Duration::from_secs(7));
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "a/b/dev-9/status");
        assert_eq!(&will.message[..], b"lost");
        assert!(will.retain);
        assert_eq!(o.credentials().map(|l| l.username), Some("u".to_owned()));
    }
}
