//! `lwsysctl fleet`: the fleet as an MQTT broker sees it, with no daemon
//! involved. `status` and `explain` read the retained `status`, `state`
//! and `info` messages every device keeps under `<prefix>/<device>/`;
//! `send` publishes a control-protocol request on a device's `cmd` topic
//! and waits for the answer with the same `id` on its `reply` topic.
//!
//! The MQTT client is blocking and runtime-free ([`mqtt`], on [`codec`]),
//! so `lwsysctl` still links none of the daemon's runtime.

pub mod codec;
pub mod mqtt;
pub mod view;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use lwsys_messages::fleet::{self, Topic};
use serde_json::{json, Value};

use self::mqtt::{Broker, Client, MqttError, Options};
use self::view::{clean, explain, explain_json, explain_text, status_table, Fleet};
use super::{CtlError, Outcome, EXIT_ERROR_REPLY, EXIT_USAGE};

/// `lwsysctl fleet ...`: where the broker is and how to log in.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The broker: mqtt://HOST or mqtt://HOST:PORT (default port 1883),
    /// mqtts://HOST or mqtts://HOST:PORT (TLS, default port 8883).
    #[arg(long, value_name = "URL", env = "LWSYS_BROKER")]
    pub broker: String,
    /// PEM file with the CA(s) that sign the broker's certificate (mqtts).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one (mqtts).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// MQTT user name.
    #[arg(long, value_name = "U")]
    pub username: Option<String>,
    /// File holding the MQTT password (one line; never on the command line).
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Topic prefix the devices publish under (`[fleet] prefix`).
    #[arg(long, value_name = "P", default_value = "lwsys")]
    pub prefix: String,
    /// Collecting retained messages ends once none arrived for this long.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub quiet_ms: u64,
    /// ...and in any case after this long.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub wait_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// The fleet commands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// A table of every device: status (online/lost), state, since, held
    /// by, reason, version. With --json, one JSON array.
    Status,
    /// Devices not OPERATIONAL, grouped by who holds them and why, with
    /// counts, largest group first; lost devices are a group of their own.
    Explain,
    /// Send a control-protocol request (JSON, an `id` is added if missing)
    /// to DEVICE, or with --all to every device not lost, and print each
    /// reply. Exit 1 on any error reply or missing reply.
    Send {
        /// Send to every known device that is not lost.
        #[arg(long)]
        all: bool,
        /// How long to wait for the replies.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        timeout_ms: u64,
        /// DEVICE REQUEST, or only REQUEST with --all.
        #[arg(value_name = "DEVICE|REQUEST", num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
}

/// The largest password file read (a password is a line, not a file).
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// How many topic filters go in one SUBSCRIBE.
const FILTERS_PER_SUBSCRIBE: usize = 100;

fn check_prefix(prefix: &str) -> Result<(), CtlError> {
    fleet::check_prefix(prefix)
        .map_err(|e| CtlError::Usage(format!("fleet: bad --prefix {:?}: {e}", clean(prefix))))
}

fn check_device(d: &str) -> Result<(), CtlError> {
    fleet::check_device_id(d)
        .map_err(|e| CtlError::Usage(format!("fleet: bad device id {:?}: {e}", clean(d))))
}

fn options(a: &FleetArgs) -> Result<Options, CtlError> {
    let password = match &a.password_file {
        None => None,
        Some(p) => {
            let meta = std::fs::metadata(p)
                .map_err(|e| CtlError::Usage(format!("fleet: {}: {e}", p.display())))?;
            if meta.len() > MAX_PASSWORD_FILE {
                return Err(CtlError::Usage(format!(
                    "fleet: {}: too large for a password file",
                    p.display()
                )));
            }
            let mut bytes = std::fs::read(p)
                .map_err(|e| CtlError::Usage(format!("fleet: {}: {e}", p.display())))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Some(bytes)
        }
    };
    Ok(Options {
        ca: a.ca.clone(),
        cert: a.cert.clone(),
        key: a.key.clone(),
        username: a.username.clone(),
        password,
        client_id: String::new(),
    })
}

/// Run one fleet command; `json` is the global `--json`.
pub(crate) fn run(a: FleetArgs, json: bool, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    check_prefix(&a.prefix)?;
    let broker = Broker::parse(&a.broker).map_err(|e| CtlError::Usage(format!("fleet: {e}")))?;
    let opts = options(&a)?;
    // Check the request before touching the network.
    let send = match &a.command {
        FleetCommand::Send { all, timeout_ms, args } => Some(send_plan(*all, *timeout_ms, args)?),
        _ => None,
    };
    let mut client = match Client::connect(&broker, &opts) {
        Ok(c) => c,
        Err(e @ (MqttError::BadUrl(_) | MqttError::Tls(_))) => {
            return Err(CtlError::Usage(format!("fleet: {e}")))
        }
        Err(e) => return Ok(broker_failed(&a.broker, &e)),
    };
    let outcome = match send {
        Some(plan) => send_run(&mut client, &a, plan, json, out),
        None => show(&mut client, &a, json, out),
    };
    client.disconnect();
    Ok(outcome.unwrap_or_else(|e| broker_failed(&a.broker, &e)))
}

fn broker_failed(url: &str, e: &MqttError) -> Outcome {
    Outcome::fail(EXIT_USAGE, format!("error: fleet: broker {}: {e}", clean(url)))
}

/// Subscribe to every device's retained topics and take what arrives
/// until the broker has been quiet for `quiet_ms` (or `wait_ms` passed).
/// Returns the fleet and whether the overall cap cut it short.
fn collect(c: &mut Client, a: &FleetArgs) -> Result<(Fleet, bool), MqttError> {
    let filters: Vec<String> = Fleet::TOPICS.iter().map(|t| t.every_device(&a.prefix)).collect();
    c.subscribe(&filters)?;
    let start = Instant::now();
    let cap = start + Duration::from_millis(a.wait_ms);
    let quiet = Duration::from_millis(a.quiet_ms);
    let mut last = start;
    let mut seen = Fleet::default();
    loop {
        let deadline = (last + quiet).min(cap);
        let Some(m) = c.recv(deadline)? else {
            return Ok((seen, Instant::now() >= cap && last + quiet > cap));
        };
        last = Instant::now();
        // Topics that are not ours, or name no valid device, are skipped.
        if let Some((device, t)) = fleet::parse_topic(&a.prefix, &m.topic) {
            seen.apply(device, t, &m.payload);
        }
    }
}

/// Notes for stderr about what `collect` could not take.
fn notes(f: &Fleet, capped: bool, wait_ms: u64) -> Option<String> {
    let mut n = Vec::new();
    if capped {
        n.push(format!(
            "messages still arriving after {wait_ms} ms; showing what came (--wait-ms)"
        ));
    }
    if f.malformed > 0 {
        n.push(format!("{} malformed payloads ignored", f.malformed));
    }
    if f.dropped > 0 {
        n.push(format!(
            "{} messages past the {}-device bound ignored",
            f.dropped,
            view::MAX_DEVICES
        ));
    }
    (!n.is_empty()).then(|| format!("note: fleet: {}", n.join("; ")))
}

fn show(
    c: &mut Client,
    a: &FleetArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, MqttError> {
    let (fleet, capped) = collect(c, a)?;
    let devices = fleet.devices();
    let text = match (&a.command, json) {
        (FleetCommand::Explain, false) => explain_text(devices.len(), &explain(&devices)),
        (FleetCommand::Explain, true) => {
            format!("{}\n", explain_json(devices.len(), &explain(&devices)))
        }
        (_, false) if devices.is_empty() => format!("no devices under {}/\n", clean(&a.prefix)),
        (_, false) => status_table(&devices),
        (_, true) => format!("{}\n", Value::Array(devices.iter().map(|d| d.to_json()).collect())),
    };
    let _ = out.write_all(text.as_bytes());
    Ok(match notes(&fleet, capped, a.wait_ms) {
        Some(line) => Outcome::fail(super::EXIT_OK, line),
        None => Outcome::ok(),
    })
}

/// A checked `send`: the target, the request with its id, the deadline.
#[derive(Debug)]
struct SendPlan {
    device: Option<String>,
    request: serde_json::Map<String, Value>,
    timeout: Duration,
}

fn send_plan(all: bool, timeout_ms: u64, args: &[String]) -> Result<SendPlan, CtlError> {
    let (device, request) = match (all, args) {
        (true, [r]) => (None, r),
        (false, [d, r]) => {
            check_device(d)?;
            (Some(d.clone()), r)
        }
        (true, _) => return Err(CtlError::Usage("fleet send --all takes only REQUEST".into())),
        (false, _) => {
            return Err(CtlError::Usage(
                "fleet send needs DEVICE REQUEST (or --all REQUEST)".into(),
            ))
        }
    };
    let mut request = match serde_json::from_str::<Value>(request) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(CtlError::Usage("fleet send: REQUEST must be a JSON object".into())),
        Err(e) => return Err(CtlError::Usage(format!("fleet send: REQUEST is not JSON: {e}"))),
    };
    if !request.contains_key("id") {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        request
            .insert("id".into(), Value::from(format!("lwsysctl-{}-{nanos}", std::process::id())));
    }
    Ok(SendPlan { device, request, timeout: Duration::from_millis(timeout_ms) })
}

fn send_run(
    c: &mut Client,
    a: &FleetArgs,
    plan: SendPlan,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, MqttError> {
    let mut skipped = Vec::new();
    let targets: Vec<String> = match plan.device {
        Some(d) => vec![d],
        None => {
            let (fleet, _) = collect(c, a)?;
            let mut t = Vec::new();
            for d in fleet.devices() {
                if d.lost() {
                    skipped.push(d.id.clone());
                } else {
                    t.push(d.id.clone());
                }
            }
            t
        }
    };
    let reply_topics: Vec<String> = targets.iter().map(|d| Topic::Reply.of(&a.prefix, d)).collect();
    for chunk in reply_topics.chunks(FILTERS_PER_SUBSCRIBE) {
        c.subscribe(chunk)?;
    }
    let id = plan.request.get("id").cloned().unwrap_or(Value::Null);
    let payload = Value::Object(plan.request).to_string();
    let deadline = Instant::now() + plan.timeout;
    for d in &targets {
        c.publish(&Topic::Cmd.of(&a.prefix, d), payload.as_bytes(), 1, false)?;
    }
    let index: HashMap<&str, usize> =
        reply_topics.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut replies: Vec<Option<Value>> = vec![None; targets.len()];
    let mut missing = targets.len();
    while missing > 0 {
        let Some(m) = c.recv(deadline)? else { break };
        let Some(&i) = index.get(m.topic.as_str()) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
        if v.get("id") == Some(&id) && replies[i].is_none() {
            replies[i] = Some(v);
            missing -= 1;
        }
    }
    let mut failed = 0;
    let mut rows = Vec::new();
    for (d, r) in targets.iter().zip(&replies) {
        let ok = r.as_ref().is_some_and(|v| v.get("ok") == Some(&Value::Bool(true)));
        if !ok {
            failed += 1;
        }
        if json {
            let error = if r.is_none() { json!("timeout") } else { Value::Null };
            rows.push(json!({"device": d, "reply": r, "error": error}));
        } else {
            let line = match r {
                None => format!("timeout: no reply within {} ms", plan.timeout.as_millis()),
                Some(v) if ok => {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("id");
                        o.remove("ok");
                    }
                    format!("ok {}", clean(&v.to_string()))
                }
                Some(v) => {
                    let e = v.get("error").cloned().unwrap_or(Value::Null);
                    let field = |k| clean(e.get(k).and_then(Value::as_str).unwrap_or("-"));
                    format!("error: {}: {}", field("code"), field("message"))
                }
            };
            let _ = writeln!(out, "{}  {line}", clean(d));
        }
    }
    if json {
        let _ = writeln!(out, "{}", Value::Array(rows));
    }
    let mut note = Vec::new();
    if !skipped.is_empty() {
        note.push(format!("skipped {} lost devices", skipped.len()));
    }
    if targets.is_empty() {
        note.push("no device to send to".to_owned());
    }
    if failed > 0 {
        note.push(format!(
            "{failed} of {} devices answered with an error or not at all",
            targets.len()
        ));
    }
    let code = if failed > 0 || targets.is_empty() { EXIT_ERROR_REPLY } else { super::EXIT_OK };
    Ok(if note.is_empty() {
        Outcome::ok()
    } else {
        Outcome::fail(
            code,
            format!(
                "{}fleet send: {}",
                if code == 0 { "note: " } else { "error: " },
                note.join("; ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_adds_an_id_only_when_the_request_has_none() {
        let p = send_plan(false, 10, &["d1".into(), r#"{"op":"state.get"}"#.into()]).expect("plan");
        assert!(p.request["id"].as_str().is_some_and(|s| s.starts_with("lwsysctl-")));
        let p = send_plan(true, 10, &[r#"{"op":"state.get","id":7}"#.into()]).expect("plan");
        assert_eq!((p.device, &p.request["id"]), (None, &json!(7)));
    }

    #[test]
    fn send_refuses_wildcards_in_the_device_and_non_object_requests() {
        for d in ["+", "a/b", "#", "", "_all"] {
            assert!(send_plan(false, 10, &[d.into(), "{}".into()]).is_err(), "{d:?}");
        }
        assert!(send_plan(false, 10, &["d".into(), "[1]".into()]).is_err());
        assert!(send_plan(false, 10, &["d".into(), "{".into()]).is_err());
        assert!(send_plan(true, 10, &["d".into(), "{}".into()]).is_err());
    }

    #[test]
    fn broker_urls_parse_with_their_default_ports() {
        let b = Broker::parse("mqtt://127.0.0.1").expect("url");
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1883, false));
        let b = Broker::parse("mqtts://broker.example:8884/").expect("url");
        assert_eq!((b.host.as_str(), b.port, b.tls), ("broker.example", 8884, true));
        let b = Broker::parse("mqtt://[::1]:1999").expect("url");
        assert_eq!((b.host.as_str(), b.port), ("::1", 1999));
        for bad in ["http://x", "mqtt://", "mqtt://h:0", "mqtt://h:x", "mqtt://u@h", "mqtt://h/p"] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }
}
