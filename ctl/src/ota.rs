//! The `ota` commands: update status, a forced check, reporting whether
//! the running firmware is good, `watch` (a progress bar fed by the `ota`
//! topic), and the issuer's offline tools `keygen` and `publish`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use lwsys_manifest::PublishOptions;
use lwsys_messages::ota::{CheckOutcome, OtaError, OtaEvent, OtaPhase};
use lwsys_messages::protocol::{Request, Topic};
use serde_json::{json, Value};

use super::client::Connection;
use super::format::{paint, table, text, Terminal, GREEN, RED};
use super::{show, typed, Call, CtlError, Outcome, EXIT_ERROR_REPLY};
use crate::ota_tools as ctl_ota;

/// `lwsysctl ota ...`
#[derive(Debug, Subcommand)]
pub enum OtaCommand {
    /// Phase, progress and the A/B slots (ota.status).
    Status,
    /// Check for an update now (ota.check).
    Check,
    /// Confirm the running firmware, or with --bad reject it and roll back
    /// (ota.report_current).
    ReportCurrent {
        /// The running firmware is bad.
        #[arg(long)]
        bad: bool,
    },
    /// Follow an update: a progress bar on a terminal, one line per `ota`
    /// event otherwise (JSON lines with --json). Ends when an update ends
    /// (done: exit 0, failed: exit 1) or the daemon closes the connection.
    Watch,
    /// Make a new P-521 signing key pair: DIR/ota-private.jwk (mode 0600,
    /// the issuer's secret) and DIR/ota-public.jwk (for devices' `[ota]
    /// public_jwk`). Never overwrites. Needs no daemon.
    Keygen {
        /// Where to write the keys (created if missing).
        dir: PathBuf,
    },
    /// Publish IMAGE for VARIANT: measure (size, SHA-512), gzip, chunk,
    /// sign (ES512), and write DIR/VARIANT/manifest.jws, the gzip image
    /// (VARIANT-SECS.img.gz, what upstream devices fetch), the chunk index
    /// (.idx) and the chunk file (.chunks, each chunk gzipped on its own,
    /// for chunked, resumable installs; see docs/ota.md), ready to serve
    /// as an `[ota] repository`. Needs no daemon.
    Publish {
        /// The private JWK made by `ota keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The firmware variant; devices accept only an exact match.
        #[arg(long, value_name = "V")]
        variant: String,
        /// The release time (Unix seconds; devices install only a newer
        /// one). Default: now.
        #[arg(long, value_name = "SECS")]
        unixtime: Option<u64>,
        /// Inflated bytes per chunk of the chunk index: a power of two
        /// from 4096 to 16777216.
        #[arg(long, value_name = "BYTES", default_value_t = lwsys_manifest::DEFAULT_CHUNK_SIZE, conflicts_with = "no_chunks")]
        chunk_size: u32,
        /// Write no chunk index: an upstream-identical release (the gzip
        /// image and a manifest with upstream's fields only).
        #[arg(long)]
        no_chunks: bool,
        /// Sign an expiry SECS seconds from now: devices whose clock is
        /// valid refuse the manifest after it (a replayed or frozen
        /// repository shows).
        #[arg(long, value_name = "SECS")]
        expires_in: Option<u64>,
        /// Sign an anti-rollback floor: devices never install a release
        /// older than N again (at most the release's own unixtime).
        #[arg(long, value_name = "N")]
        min_unixtime: Option<u64>,
        /// Announce the next issuer key (a public JWK, e.g. another `ota
        /// keygen`'s ota-public.jwk): devices add it to their trusted keys.
        #[arg(long, value_name = "PUBLIC_JWK_FILE")]
        next_key: Option<PathBuf>,
        /// Retire the issuer key with this kid: devices stop trusting it
        /// (never the key signing this manifest). Repeatable.
        #[arg(long, value_name = "KID")]
        retire: Vec<String>,
        /// The firmware image (not compressed).
        image: PathBuf,
        /// The repository directory.
        dir: PathBuf,
    },
    /// Check a published repository as a device would: DIR/VARIANT/
    /// manifest.jws signed by the public KEY, for exactly VARIANT, the
    /// gzip image it names inflating to its size and SHA-512, and with a
    /// chunk index: the index the manifest signs, every chunk inflating
    /// to its hash, the chunks adding up to the image. Needs no daemon.
    Verify {
        /// The public JWK made by `ota keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The device's firmware variant.
        #[arg(long, value_name = "V")]
        variant: String,
        /// The repository directory.
        dir: PathBuf,
    },
}

/// What an `ota` command needs next.
pub(crate) enum Next {
    /// A one-shot request to the daemon.
    Send(Call),
    /// Handled here (offline tools, or `watch`'s stream).
    Done(Outcome),
}

/// Run `c`: offline tools and `watch` here, the rest as one request.
pub(crate) fn run(
    c: OtaCommand,
    socket: &Path,
    json: bool,
    term: Terminal,
    out: &mut dyn Write,
) -> Result<Next, CtlError> {
    Ok(Next::Send(match c {
        OtaCommand::Status => Call::new(&Request::OtaStatus {}, status),
        OtaCommand::Check => Call::new(&Request::OtaCheck {}, check_text),
        OtaCommand::ReportCurrent { bad } => Call::new(&Request::OtaReportCurrent { bad }, status),
        OtaCommand::Watch => {
            let mut conn = Connection::open(socket)?;
            return Ok(Next::Done(watch(&mut conn, json, term, out)?));
        }
        OtaCommand::Keygen { dir } => return Ok(Next::Done(keygen(&dir, json, out))),
        OtaCommand::Publish {
            key,
            variant,
            unixtime,
            chunk_size,
            no_chunks,
            expires_in,
            min_unixtime,
            next_key,
            retire,
            image,
            dir,
        } => {
            let mut opts = PublishOptions {
                chunk_size: (!no_chunks).then_some(chunk_size),
                ..PublishOptions::default()
            };
            let flags = ctl_ota::TrustFlags { expires_in, min_unixtime, next_key, retire };
            let made = flags.apply(&mut opts).and_then(|()| {
                ctl_ota::publish_with(&key, &variant, &image, &dir, unixtime, &opts)
            });
            return Ok(Next::Done(manifest_reply(made, &variant, &dir, json, publish_text, out)));
        }
        OtaCommand::Verify { key, variant, dir } => {
            let made = ctl_ota::verify(&key, &variant, &dir).map(|(m, _)| m);
            return Ok(Next::Done(manifest_reply(made, &variant, &dir, json, verify_text, out)));
        }
    }))
}

/// A local tool's result shaped like a protocol reply, so `--json` reads
/// the same whether the daemon or the client did the work.
fn local(
    result: Result<Value, OtaError>,
    json: bool,
    human: fn(&Value) -> String,
    out: &mut dyn Write,
) -> Outcome {
    let reply = match result {
        Ok(Value::Object(m)) => {
            let mut r = serde_json::Map::new();
            r.insert("ok".into(), Value::Bool(true));
            r.extend(m);
            Value::Object(r)
        }
        Ok(other) => json!({"ok": true, "result": other}),
        Err(e) => {
            let code = serde_json::to_value(e.code()).unwrap_or(Value::Null);
            let text = e.to_string();
            // The code is shown beside the message already.
            let prefix = format!("{}: ", code.as_str().unwrap_or(""));
            let message = text.strip_prefix(&prefix).unwrap_or(&text);
            json!({"ok": false, "error": {"code": code, "kind": e.kind(), "message": message}})
        }
    };
    show(&reply, json, human, out)
}

fn keygen(dir: &Path, json: bool, out: &mut dyn Write) -> Outcome {
    let made = ctl_ota::keygen(dir).map(|k| {
        json!({"private": k.private.display().to_string(), "public": k.public.display().to_string(), "kid": k.kid})
    });
    local(
        made,
        json,
        |r| {
            format!(
                "private key {} (keep it secret)\npublic key  {} (devices' [ota] public_jwk)\nkid         {}\n",
                text(r, "private"),
                text(r, "public"),
                text(r, "kid")
            )
        },
        out,
    )
}

/// A manifest made or checked here, shown by `human`.
fn manifest_reply(
    made: Result<lwsys_manifest::Manifest, OtaError>,
    variant: &str,
    dir: &Path,
    json: bool,
    human: fn(&Value) -> String,
    out: &mut dyn Write,
) -> Outcome {
    let at = dir.join(variant);
    let made = made.and_then(|m| {
        let manifest = serde_json::to_value(&m).map_err(|e| OtaError::Io(e.to_string()))?;
        let mut r = json!({
            "manifest": manifest,
            "manifest_path": at.join("manifest.jws").display().to_string(),
            "image_path": at.join(&m.path).display().to_string(),
        });
        if let Some(c) = &m.chunks {
            r["index_path"] = at.join(&c.index).display().to_string().into();
            r["chunks_path"] = at.join(&c.file).display().to_string().into();
            r["chunk_count"] = m.size.div_ceil(u64::from(c.chunk_size.max(1))).into();
        }
        Ok(r)
    });
    local(made, json, human, out)
}

/// The manifest's fields as a table.
fn manifest_table(r: &Value) -> String {
    let m = r.get("manifest").cloned().unwrap_or(Value::Null);
    let keys = ["variant", "unixtime", "size", "sha512"];
    let rows = vec![
        keys.iter().map(|k| k.to_uppercase()).collect(),
        keys.iter().map(|k| text(&m, k)).collect::<Vec<_>>(),
    ];
    table(&rows)
}

fn publish_text(r: &Value) -> String {
    let t = manifest_table(r);
    let m = r.get("manifest").cloned().unwrap_or(Value::Null);
    let mut s = t;
    for (field, what) in [("expires", "expires"), ("min_unixtime", "minimum release")] {
        if m.get(field).is_some() {
            s.push_str(&format!("{what}: {}\n", text(&m, field)));
        }
    }
    if let Some(next) = m.get("next_jwk") {
        let kid = next.get("kid").and_then(Value::as_str).unwrap_or("(its thumbprint)");
        s.push_str(&format!("announces key: {kid}\n"));
    }
    if let Some(kids) = m.get("retire_kids").and_then(Value::as_array) {
        for kid in kids {
            s.push_str(&format!("retires key: {}\n", kid.as_str().unwrap_or("")));
        }
    }
    s.push_str(&format!("wrote {}\nwrote {}\n", text(r, "manifest_path"), text(r, "image_path")));
    if r.get("index_path").is_some() {
        s.push_str(&format!(
            "wrote {} ({} chunks)\nwrote {}\n",
            text(r, "index_path"),
            text(r, "chunk_count"),
            text(r, "chunks_path")
        ));
    }
    s
}

fn verify_text(r: &Value) -> String {
    let t = manifest_table(r);
    let mut s = format!(
        "{t}signature good: {}\nimage good: {}\n",
        text(r, "manifest_path"),
        text(r, "image_path")
    );
    if r.get("index_path").is_some() {
        s.push_str(&format!(
            "chunk index good: {} ({} chunks)\nchunks good: {}\n",
            text(r, "index_path"),
            text(r, "chunk_count"),
            text(r, "chunks_path")
        ));
    }
    s
}

/// `ota watch`: subscribe to `ota`, then ask `ota.status` on the same
/// connection, so no event between the two is lost. The status comes
/// first (the reply line with --json, the bar otherwise), telling a reader
/// that the watch is live; then one line per event. The watch ends on a
/// `done` (exit 0) or `failed` (exit 1) event, or when a check it saw
/// start settles back to `idle` (no newer release, exit 0), or when the
/// daemon closes the connection. A finished update seen only in the
/// status is the past, not what is being watched.
fn watch(
    conn: &mut Connection,
    json: bool,
    term: Terminal,
    out: &mut dyn Write,
) -> Result<Outcome, CtlError> {
    let sub = Call::new(&Request::Subscribe { events: vec![Topic::Ota] }, |_| String::new());
    let reply = conn.call(sub.with_op())?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        return Ok(show(&reply, json, |_| String::new(), out));
    }
    let mut status = Call::new(&Request::OtaStatus {}, |_| String::new()).with_op();
    status.insert("id".into(), Value::from("ota-watch-status"));
    conn.send(&Value::Object(status))?;
    let mut drawn = false;
    let mut active = false;
    let end = loop {
        let Some(v) = conn.next_line()? else { break Outcome::ok() };
        let ev = if v.get("ok").is_some() {
            // The status reply: a snapshot, never an ending.
            if v.get("ok") != Some(&Value::Bool(true)) {
                return Ok(show(&v, json, |_| String::new(), out));
            }
            serde_json::from_value::<OtaEvent>(v.clone()).ok()
        } else {
            ctl_ota::parse_event(&v)
        };
        let Some(ev) = ev else { continue };
        let is_event = v.get("ok").is_none();
        let shown = if json {
            writeln!(out, "{v}").and_then(|()| out.flush()).is_ok()
        } else {
            drawn = draw(&ev, term, out);
            true
        };
        if !shown {
            break Outcome::ok(); // the reader went away (`| head`)
        }
        match ev.phase {
            OtaPhase::Done if is_event => break Outcome::ok(),
            OtaPhase::Failed if is_event => {
                let why = v.get("error").and_then(Value::as_str).unwrap_or("the update failed");
                break Outcome::fail(EXIT_ERROR_REPLY, format!("error: ota: {why}"));
            }
            OtaPhase::Idle if is_event && active => break Outcome::ok(),
            OtaPhase::Idle | OtaPhase::Done | OtaPhase::Failed => {}
            _ => active = true,
        }
    };
    end_line(drawn, out);
    Ok(end)
}

/// Draw one progress line: redrawn in place on a terminal, one line each
/// otherwise. Returns whether a line is left open (needs a newline).
fn draw(ev: &OtaEvent, term: Terminal, out: &mut dyn Write) -> bool {
    let line = ctl_ota::render_progress(ev);
    let colour = match ev.phase {
        OtaPhase::Done => Some(GREEN),
        OtaPhase::Failed => Some(RED),
        _ => None,
    };
    let line = colour.map_or_else(|| line.clone(), |c| paint(&line, c, term.colour_out));
    let _ = if term.out_tty {
        // \r and erase-line: the bar is redrawn where it stands.
        write!(out, "\r\x1b[K{line}")
    } else {
        writeln!(out, "{line}")
    };
    let _ = out.flush();
    term.out_tty
}

fn end_line(drawn: bool, out: &mut dyn Write) {
    if drawn {
        let _ = writeln!(out);
    }
}

/// A settled check (the reply comes once it is over).
fn check_text(r: &Value) -> String {
    let Some(o) = typed::<CheckOutcome>(r) else { return String::new() };
    let release = o.unixtime.map_or_else(|| "-".to_owned(), |t| t.to_string());
    if o.updated {
        let then = if o.reboot { ", rebooting" } else { "" };
        return format!("installed release {release} as a trial{then}");
    }
    match o.reason {
        Some(why) => format!("no update: {why}"),
        None => format!("no update (latest release {release})"),
    }
}

fn status(r: &Value) -> String {
    if r.get("phase").is_none() {
        return String::new();
    }
    let mut s = format!(
        "phase {} {}% ({} bytes), next boot slot {}\n",
        text(r, "phase"),
        text(r, "percent"),
        text(r, "bytes"),
        text(r, "selected")
    );
    let slots = r.get("slots").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if !slots.is_empty() {
        let mut rows = vec![vec!["SLOT".to_owned(), "STATUS".to_owned(), "UNIXTIME".to_owned()]];
        rows.extend(
            slots.iter().map(|x| vec![text(x, "name"), text(x, "status"), text(x, "unixtime")]),
        );
        s.push_str(&table(&rows));
    }
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    if ["bytes_fetched", "bytes_reused", "bytes_resumed"].iter().any(|k| n(k) > 0) {
        s.push_str(&format!(
            "fetched {} bytes ({} chunks, {} refetched), reused {} bytes ({} chunks), resumed {} bytes\n",
            n("bytes_fetched"),
            n("chunks_fetched"),
            n("chunks_refetched"),
            n("bytes_reused"),
            n("chunks_reused"),
            n("bytes_resumed"),
        ));
    }
    for key in ["last_error", "last_rollback_reason"] {
        if let Some(v) = r.get(key).and_then(Value::as_str) {
            s.push_str(&format!("{key}: {v}\n"));
        }
    }
    if let Some(kids) = r.get("trusted_kids").and_then(Value::as_array) {
        let kids: Vec<String> = kids.iter().map(|k| k.as_str().unwrap_or("?").to_owned()).collect();
        s.push_str(&format!("trusted keys: {}\n", kids.join(", ")));
    }
    if r.get("min_unixtime").and_then(Value::as_u64).is_some_and(|m| m > 0) {
        s.push_str(&format!("minimum release: {}\n", text(r, "min_unixtime")));
    }
    if let Some(rb) = r.get("last_rollback").filter(|v| v.is_object()) {
        s.push_str(&format!(
            "last rollback: cause {}, release {}, at unix {}",
            text(rb, "cause"),
            text(rb, "release_unixtime"),
            text(rb, "at_unix")
        ));
        for key in ["check", "state"] {
            if let Some(v) = rb.get(key).and_then(Value::as_str) {
                s.push_str(&format!(", {key} {v}"));
            }
        }
        s.push('\n');
    }
    if let Some(w) = r.get("waiting").filter(|v| v.is_object()) {
        s.push_str(&format!("release {} waiting for {}", text(w, "release"), text(w, "for")));
        if let Some(until) = w.get("until_unix").and_then(Value::as_u64) {
            s.push_str(&format!(" until unix {until}"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_trusted_keys_and_the_signed_floor() {
        let r = json!({"phase": "idle", "percent": 0, "bytes": 0, "selected": "a",
                       "trusted_kids": ["k1", "k2"], "min_unixtime": 1500});
        let s = status(&r);
        assert!(
            s.contains("trusted keys: k1, k2\n") && s.contains("minimum release: 1500\n"),
            "{s}"
        );
        let r = json!({"phase": "idle", "percent": 0, "bytes": 0, "selected": "a"});
        assert!(!status(&r).contains("trusted") && !status(&r).contains("minimum"));
    }

    #[test]
    fn the_status_shows_the_rollback_record_and_what_waits() {
        let r = json!({"phase": "idle", "percent": 0, "bytes": 0, "selected": "a",
            "last_rollback_reason": "health check \"/bin/false\" failed",
            "last_rollback": {"cause": "health_check", "check": "/bin/false",
                              "release_unixtime": 1000, "at_unix": 7, "message": "m"},
            "waiting": {"for": "window", "until_unix": 99, "release": 1001}});
        let s = status(&r);
        assert!(
            s.contains(
                "last rollback: cause health_check, release 1000, at unix 7, check /bin/false"
            ),
            "{s}"
        );
        assert!(s.contains("release 1001 waiting for window until unix 99"), "{s}");
    }

    #[test]
    fn a_settled_check_says_what_it_found() {
        let r = json!({"ok": true, "updated": true, "unixtime": 1000, "reboot": true});
        assert_eq!(check_text(&r), "installed release 1000 as a trial, rebooting");
        let r = json!({"ok": true, "updated": false, "unixtime": 1000, "reason": "not newer"});
        assert_eq!(check_text(&r), "no update: not newer");
    }

    #[test]
    fn status_says_what_was_fetched_and_what_was_reused() {
        let r = json!({"ok": true, "phase": "done", "percent": 100, "bytes": 10, "selected": "b",
                       "bytes_fetched": 4096, "chunks_fetched": 1, "bytes_reused": 65536,
                       "chunks_reused": 16});
        let s = status(&r);
        assert!(
            s.contains("fetched 4096 bytes (1 chunks, 0 refetched), reused 65536 bytes (16 chunks), resumed 0 bytes"),
            "{s}"
        );
        let plain = json!({"ok": true, "phase": "idle", "percent": 0, "bytes": 0, "selected": "a"});
        assert!(!status(&plain).contains("fetched"));
    }

    #[test]
    fn a_local_failure_reads_like_an_error_reply() {
        let mut out = Vec::new();
        let o =
            local(Err(OtaError::Io("create x: exists".into())), true, |_| String::new(), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "io");
        assert_eq!(o.err.as_deref(), Some("error: io: create x: exists"));
    }
}
