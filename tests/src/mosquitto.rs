//! A real `mosquitto` broker for the fleet tests: on 127.0.0.1 at an
//! ephemeral port, plain ([`Mode::Plain`]) or TLS with a throwaway
//! [`TestCa`], either with client certificates required ([`Mode::Tls`]) or
//! with user names and passwords ([`Mode::TlsPassword`]), and then a
//! per-device ACL ([`acl_text`]); restartable on the same port; killed on
//! drop; its log readable line by line ([`Mosquitto::wait_log`]). Also the
//! tests' MQTT observer ([`Subscriber`], [`Mosquitto::publish`]), which
//! drives Debian's `mosquitto_sub` / `mosquitto_pub` so that the observer
//! is an MQTT implementation independent of the daemon's.
//!
//! Every wait is on an event (a log line, a process exiting, a line from
//! `mosquitto_sub`) and bounded by a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

/// Where Debian puts the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Where Debian puts the clients (package `mosquitto-clients`).
const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// How long the broker may take to listen, and any observer wait by default.
pub const BROKER_WAIT: Duration = Duration::from_secs(20);

/// The identity (certificate CN, hence MQTT username) of the fleet
/// operator the ACL lets read every device and write their `cmd` topics.
pub const OPERATOR: &str = "fleet-operator";

/// Whether the broker and its clients are installed; when not, prints why
/// (so the skip is visible) — `scripts/test` installs Debian's `mosquitto`
/// and `mosquitto-clients`.
pub fn installed() -> bool {
    let ok = [MOSQUITTO, MOSQUITTO_SUB, MOSQUITTO_PUB, MOSQUITTO_PASSWD]
        .iter()
        .all(|p| Path::new(p).exists());
    if !ok {
        println!(
            "skipped: mosquitto or mosquitto-clients not installed (scripts/test installs them)"
        );
    }
    ok
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A throwaway certificate authority, and the certificates it mints.
pub struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    dir: PathBuf,
    /// The CA certificate, PEM file.
    pub ca_pem: PathBuf,
    /// The CA certificate, DER file.
    pub ca_der: PathBuf,
}

/// A certificate and its private key, as files (PEM and DER) and bytes.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The subject CN: a device id, [`OPERATOR`], or the server's name.
    pub name: String,
    /// Certificate, PEM file.
    pub cert_pem: PathBuf,
    /// Private key (PKCS#8), PEM file.
    pub key_pem: PathBuf,
    /// Certificate, DER bytes (what `CLIENT_CERT_DER` holds).
    pub cert_der: Vec<u8>,
    /// Private key, PKCS#8 DER bytes (what `CLIENT_KEY_DER` holds).
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `cn`, its files written in `dir` (created).
    pub fn new(dir: &Path, cn: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        let ca_der = dir.join("ca.der");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        std::fs::write(&ca_der, cert.der()).unwrap();
        Self { key, cert, dir: dir.to_owned(), ca_pem, ca_der }
    }

    /// The CA certificate's DER bytes.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// The broker's certificate: `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Identity {
        self.mint(
            "localhost",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose CN (the broker's username for it, with
    /// `use_identity_as_username`) is `name`: a device id or [`OPERATOR`].
    pub fn client(&self, name: &str) -> Identity {
        self.mint(name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn mint(&self, name: &str, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![eku];
        // The AKID lets a verifier find the CA by SKID (the trust service's
        // JIT lookup).
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        // Names are test-chosen, but keep them out of paths' way anyway.
        let stem: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let cert_pem = self.dir.join(format!("{stem}.crt.pem"));
        let key_pem = self.dir.join(format!("{stem}.key.pem"));
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        std::fs::write(self.dir.join(format!("{stem}.crt.der")), cert.der()).unwrap();
        std::fs::write(self.dir.join(format!("{stem}.key.der")), key.serialize_der()).unwrap();
        Identity {
            name: name.to_owned(),
            cert_pem,
            key_pem,
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// How to run the broker.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Plain TCP, anonymous clients, no ACL.
    Plain,
    /// TLS with a test CA; client certificates required and their CN used
    /// as the username; devices confined to `<prefix>/<cn>/#` (and may read
    /// `<prefix>/_all/cmd`), the
    /// [`OPERATOR`] may read `<prefix>/+/#` and write `<prefix>/+/cmd`.
    Tls {
        /// The topic prefix the ACL is written for (`[fleet] prefix`).
        prefix: String,
    },
    /// TLS with a test CA, no client certificate: clients log in with a
    /// user name and password from `users` (`password_file`); the same ACL
    /// as [`Mode::Tls`], by user name.
    TlsPassword {
        /// The topic prefix the ACL is written for (`[fleet] prefix`).
        prefix: String,
        /// `(user, password)` pairs the broker accepts.
        users: Vec<(String, String)>,
    },
}

/// How a test client logs in to the broker.
#[derive(Clone, Copy, Debug)]
pub enum Login<'a> {
    /// No certificate, no user name.
    Anonymous,
    /// A client certificate (TLS).
    Cert(&'a Identity),
    /// A user name and password.
    Password(&'a str, &'a str),
}

impl<'a> From<Option<&'a Identity>> for Login<'a> {
    fn from(who: Option<&'a Identity>) -> Self {
        who.map_or(Login::Anonymous, Login::Cert)
    }
}

/// A running mosquitto; killed (and waited for) on drop.
pub struct Mosquitto {
    child: Option<Child>,
    /// The TCP port it listens on (kept across [`Mosquitto::restart`]).
    pub port: u16,
    mode: Mode,
    ca: Option<TestCa>,
    log: Arc<Mutex<Vec<String>>>,
    /// The running broker's log lines not yet looked at by `wait_log`.
    lines: Option<Receiver<String>>,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// A plain-TCP broker; `None` when mosquitto is not installed.
    pub fn plain() -> Option<Self> {
        Self::start(Mode::Plain)
    }

    /// A TLS broker with client certs and the per-device ACL under
    /// `prefix`; `None` when mosquitto is not installed.
    pub fn tls(prefix: &str) -> Option<Self> {
        Self::start(Mode::Tls { prefix: prefix.to_owned() })
    }

    /// Starts a broker in `mode` on a free port and waits until it accepts
    /// TCP connections. `None` when mosquitto is not installed.
    pub fn start(mode: Mode) -> Option<Self> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = match mode {
            Mode::Plain => None,
            Mode::Tls { .. } | Mode::TlsPassword { .. } => {
                Some(TestCa::new(&dir.path().join("pki"), "lwsys fleet test CA"))
            }
        };
        let mut me = Self {
            child: None,
            port: 0,
            mode,
            ca,
            log: Arc::new(Mutex::new(Vec::new())),
            lines: None,
            conf: dir.path().join("mosquitto.conf"),
            dir,
        };
        // Another process may take the port between our probe and
        // mosquitto's bind: then take another one.
        for _ in 0..10 {
            me.port = free_tcp_port();
            me.write_conf();
            match me.spawn() {
                Ok(()) => return Some(me),
                Err(Started::PortTaken) => continue,
                Err(Started::Failed(why)) => panic!("mosquitto did not start: {why}"),
            }
        }
        panic!("mosquitto found no free port in 10 tries: {}", me.log());
    }

    fn write_conf(&self) {
        let d = self.dir.path();
        let mut conf = format!(
            "per_listener_settings false\npersistence false\nlog_dest stderr\n\
             log_type all\n\
             connection_messages true\n\
             # root keeps root: the files live in a 0700 tempdir.\nuser root\n\
             listener {} 127.0.0.1\n",
            self.port
        );
        match &self.mode {
            Mode::Plain => conf.push_str("allow_anonymous true\n"),
            Mode::Tls { prefix } => {
                let ca = self.ca.as_ref().unwrap();
                let server = ca.server();
                let acl = d.join("acl");
                std::fs::write(&acl, acl_text(prefix)).unwrap();
                conf.push_str(&format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                     use_identity_as_username true\nallow_anonymous false\nacl_file {}\n",
                    ca.ca_pem.display(),
                    server.cert_pem.display(),
                    server.key_pem.display(),
                    acl.display()
                ));
            }
            Mode::TlsPassword { prefix, users } => {
                let ca = self.ca.as_ref().unwrap();
                let server = ca.server();
                let acl = d.join("acl");
                std::fs::write(&acl, acl_text(prefix)).unwrap();
                let passwd = d.join("passwd");
                std::fs::write(&passwd, "").unwrap();
                for (user, password) in users {
                    // -b: the password from the command line (a test's).
                    let st = Command::new(MOSQUITTO_PASSWD)
                        .arg("-b")
                        .arg(&passwd)
                        .args([user, password])
                        .status()
                        .unwrap();
                    assert!(st.success(), "mosquitto_passwd failed for {user:?}: {st}");
                }
                conf.push_str(&format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate false\n\
                     allow_anonymous false\npassword_file {}\nacl_file {}\n",
                    ca.ca_pem.display(),
                    server.cert_pem.display(),
                    server.key_pem.display(),
                    passwd.display(),
                    acl.display()
                ));
            }
        }
        std::fs::write(&self.conf, conf).unwrap();
    }

    /// Spawns mosquitto on `self.port` and waits for "running" in its log.
    fn spawn(&mut self) -> Result<(), Started> {
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = collect_lines(child.stderr.take().unwrap(), self.log.clone());
        self.child = Some(child);
        let deadline = Instant::now() + BROKER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.contains("Address already in use") => {
                    self.stop();
                    return Err(Started::PortTaken);
                }
                Ok(l) if l.contains(" running") => break,
                Ok(_) => continue,
                // The log closed: mosquitto exited without saying why.
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return Err(Started::Failed(self.log()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.stop();
                    return Err(Started::Failed(format!("no 'running' line: {}", self.log())));
                }
            }
        }
        // "running" is logged after the listeners are open; a connect
        // confirms it is ours. The broker may log that probe (a TLS
        // listener as a failed handshake, "unexpected eof", in one of two
        // wordings): `wait_log` needles must be specific enough not to
        // match it.
        TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5))
            .map_err(|e| Started::Failed(format!("connect after 'running': {e}")))?;
        self.lines = Some(lines);
        Ok(())
    }

    /// Kills the broker and waits for it to go (the port stays ours to
    /// [`Mosquitto::restart`] on). A killed broker sends nothing: its
    /// clients only see their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker if it runs and starts it again on the same port
    /// with the same config; retained messages are gone (`persistence
    /// false`), as after a real broker's crash.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + BROKER_WAIT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // A client's socket in TIME_WAIT cannot hold a listening
                // port (SO_REUSEADDR), but another process might: retry
                // until the deadline, each try ending on mosquitto's exit.
                Err(Started::PortTaken) if Instant::now() < deadline => continue,
                Err(Started::PortTaken) => panic!("port {} stayed taken", self.port),
                Err(Started::Failed(why)) => panic!("mosquitto did not restart: {why}"),
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The `[fleet] broker` URL for it: `mqtts://127.0.0.1:PORT` for TLS,
    /// `mqtt://127.0.0.1:PORT` for plain.
    pub fn url(&self) -> String {
        match self.mode {
            Mode::Plain => format!("mqtt://127.0.0.1:{}", self.port),
            Mode::Tls { .. } | Mode::TlsPassword { .. } => {
                format!("mqtts://127.0.0.1:{}", self.port)
            }
        }
    }

    /// The test CA (TLS mode only).
    pub fn ca(&self) -> &TestCa {
        self.ca.as_ref().expect("a plain broker has no CA")
    }

    /// A directory holding only the CA certificate (PEM), for a daemon's
    /// `[trust] cert_dirs`.
    pub fn ca_dir(&self) -> PathBuf {
        let d = self.dir.path().join("ca-only");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&self.ca().ca_pem, d.join("fleet-test-ca.pem")).unwrap();
        d
    }

    /// Mints a client certificate for device `id` (TLS mode only).
    pub fn device(&self, id: &str) -> Identity {
        self.ca().client(id)
    }

    /// Mints the fleet operator's certificate (TLS mode only).
    pub fn operator(&self) -> Identity {
        self.ca().client(OPERATOR)
    }

    /// Waits (up to [`BROKER_WAIT`]) for a log line, logged since the last
    /// wait or the (re)start, that contains every one of `needles`; returns
    /// it. The log has every type (`log_type all`), so refusals show as
    /// e.g. `Denied PUBLISH from <client id> (..., '<topic>', ...)`.
    pub fn wait_log(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + BROKER_WAIT;
        let lines = self.lines.as_ref().expect("the broker is not running");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if needles.iter().all(|n| l.contains(n)) => return l,
                Ok(_) => continue,
                Err(_) => panic!("mosquitto never logged {needles:?}:\n{}", self.log()),
            }
        }
    }

    /// Everything mosquitto has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the broker process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The common client arguments: where, and as whom (`None` connects
    /// without a certificate, which a TLS broker refuses). `ca` overrides
    /// the CA the client verifies the broker with.
    fn client_args(&self, who: Login<'_>, ca: Option<&Path>) -> Vec<String> {
        let mut a = vec!["-h".into(), "127.0.0.1".into(), "-p".into(), self.port.to_string()];
        if let Mode::Tls { .. } | Mode::TlsPassword { .. } = self.mode {
            let ca = ca.unwrap_or(&self.ca().ca_pem);
            a.extend(["--cafile".into(), ca.display().to_string()]);
        }
        match who {
            Login::Anonymous => {}
            Login::Cert(who) => a.extend([
                "--cert".into(),
                who.cert_pem.display().to_string(),
                "--key".into(),
                who.key_pem.display().to_string(),
            ]),
            Login::Password(user, password) => {
                a.extend(["-u".into(), user.into(), "-P".into(), password.into()])
            }
        }
        a
    }

    /// Subscribes to `filter` as `who` and waits until the broker has
    /// acknowledged the subscription, so whatever is published after this
    /// returns is seen. `Err` with the client's output when the broker
    /// refuses the connection.
    pub fn subscribe<'a>(
        &self,
        who: impl Into<Login<'a>>,
        filter: &str,
    ) -> Result<Subscriber, String> {
        self.subscribe_with(who, None, filter)
    }

    /// [`Mosquitto::subscribe`], verifying the broker with `ca` (the
    /// client's own trust) instead of the test CA.
    pub fn subscribe_with<'a>(
        &self,
        who: impl Into<Login<'a>>,
        ca: Option<&Path>,
        filter: &str,
    ) -> Result<Subscriber, String> {
        self.subscribe_all(who, ca, &[filter])
    }

    /// [`Mosquitto::subscribe_with`] to several filters in one client (so
    /// one stream orders what it gets from all of them).
    pub fn subscribe_all<'a>(
        &self,
        who: impl Into<Login<'a>>,
        ca: Option<&Path>,
        filters: &[&str],
    ) -> Result<Subscriber, String> {
        let topics = filters.iter().flat_map(|f| ["-t", f]);
        // Its stdout is a pipe, so block-buffered: the SUBACK line would sit
        // in its buffer until a message came. stdbuf execs it line-buffered
        // (same pid, so killing the child kills it).
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(MOSQUITTO_SUB)
            .args(self.client_args(who.into(), ca))
            // -d: the SUBACK line is the "subscribed" event. Payloads are
            // hex, so any bytes fit one line.
            .args(["-d", "-q", "1", "-F", "MSG %r %t %x"])
            .args(topics)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let lines = collect_lines(child.stdout.take().unwrap(), out.clone());
        let _ = collect_lines(child.stderr.take().unwrap(), out.clone());
        let mut sub = Subscriber { child, lines, out, backlog: Vec::new() };
        let deadline = Instant::now() + BROKER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.lines.recv_timeout(left) {
                // One SUBSCRIBE carries every filter; its SUBACK lists the
                // granted QoS of each, 128 being a refusal.
                Ok(l) if l.starts_with("Subscribed (mid:") => {
                    if l.split(':').nth(2).is_some_and(|g| g.split(',').any(|q| q.trim() == "128"))
                    {
                        return Err(sub.output());
                    }
                    return Ok(sub);
                }
                Ok(_) => continue,
                Err(_) => {
                    sub.kill();
                    return Err(sub.output());
                }
            }
        }
    }

    /// Publishes `payload` on `topic` as `who` at QoS 1 (retained if
    /// `retain`) and waits for the broker's acknowledgement, so the message
    /// has been routed to subscribers when this returns. `Err` with the
    /// client's output when the broker refused the connection or publish.
    pub fn publish<'a>(
        &self,
        who: impl Into<Login<'a>>,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), String> {
        let mut cmd = Command::new(MOSQUITTO_PUB);
        cmd.args(self.client_args(who.into(), None)).args(["-q", "1", "-t", topic, "-s"]);
        if retain {
            cmd.arg("-r");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(payload).unwrap();
        // stdin is closed here: -s reads to EOF.
        let out = wait_output(child, BROKER_WAIT);
        match out {
            Some((true, _)) => Ok(()),
            Some((false, text)) => Err(text),
            None => Err("mosquitto_pub did not finish".into()),
        }
    }
}

enum Started {
    PortTaken,
    Failed(String),
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ACL for a fleet under `prefix`: each device (certificate CN) only
/// its own subtree, plus reading the fleet-wide `<prefix>/_all/cmd`; the
/// operator reads all devices and writes their `cmd` (and `_all/cmd`).
pub fn acl_text(prefix: &str) -> String {
    format!(
        "# The fleet operator (lwsysctl fleet): reads every device, sends commands.\n\
         user {OPERATOR}\n\
         topic read {prefix}/+/#\n\
         topic write {prefix}/+/cmd\n\
         \n\
         # Every device (its certificate's CN is its username): its own subtree only,\n\
         # and the fleet-wide command topic to read.\n\
         pattern readwrite {prefix}/%u/#\n\
         pattern read {prefix}/{all}/cmd\n",
        all = lwsys_messages::fleet::ALL_DEVICES
    )
}

/// A message a [`Subscriber`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether it came from the broker's retained store (sent on subscribe).
    pub retained: bool,
}

impl Message {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

/// A running `mosquitto_sub`; killed on drop.
pub struct Subscriber {
    child: Child,
    lines: Receiver<String>,
    out: Arc<Mutex<Vec<String>>>,
    /// Messages received that no wait has taken yet, oldest first.
    backlog: Vec<Message>,
}

impl Subscriber {
    /// The next message (the oldest one no wait has taken yet), or `None`
    /// if none arrives within `timeout` (or the client has gone).
    pub fn next(&mut self, timeout: Duration) -> Option<Message> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        self.receive(timeout)
    }

    fn receive(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(m) = parse_msg(&line) {
                return Some(m);
            }
        }
    }

    /// Waits (up to [`BROKER_WAIT`]) for a message `pred` accepts, among
    /// those no earlier wait took and then new ones, and takes it. Also
    /// returns the untaken messages that arrived before it, in order, so a
    /// test can assert what it must not have seen; they stay for later
    /// waits (a device publishes its topics in its own order). Panics with
    /// everything seen when none comes.
    pub fn wait_for(&mut self, mut pred: impl FnMut(&Message) -> bool) -> (Message, Vec<Message>) {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            let m = self.backlog.remove(i);
            return (m, self.backlog[..i].to_vec());
        }
        let deadline = Instant::now() + BROKER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left) {
                Some(m) if pred(&m) => return (m, self.backlog.clone()),
                Some(m) => self.backlog.push(m),
                None => panic!(
                    "no matching message within {BROKER_WAIT:?}; untaken {:?}; client: {}",
                    self.backlog,
                    self.output()
                ),
            }
        }
    }

    /// Takes every message received and not yet taken, oldest first (so
    /// later waits' `before` lists start from here).
    pub fn take_backlog(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.backlog)
    }

    /// Waits for a message on exactly `topic` whose JSON payload `pred`
    /// accepts; returns that payload.
    pub fn wait_json(
        &mut self,
        topic: &str,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let (m, _) = self.wait_for(|m| m.topic == topic && m.json().is_some_and(|v| pred(&v)));
        m.json().unwrap()
    }

    /// Waits for a message on exactly `topic` whose payload is `text`.
    pub fn wait_text(&mut self, topic: &str, text: &str) -> Message {
        self.wait_for(|m| m.topic == topic && m.payload == text.as_bytes()).0
    }

    /// Everything the client printed so far (its debug log included).
    pub fn output(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses a `MSG <retained> <topic> <hex>` line; topics have no spaces in
/// our tests, and the payload is the last field (empty for an empty one).
fn parse_msg(line: &str) -> Option<Message> {
    let rest = line.strip_prefix("MSG ")?;
    let (retained, rest) = rest.split_once(' ')?;
    let (topic, hex) = rest.rsplit_once(' ').unwrap_or((rest, ""));
    let payload = hex::decode(hex.trim_end()).ok()?;
    Some(Message { topic: topic.to_owned(), payload, retained: retained == "1" })
}

/// Reads `r` line by line on a thread: each line is kept in `keep` and sent
/// on the returned channel (which closes at EOF).
fn collect_lines(r: impl Read + Send + 'static, keep: Arc<Mutex<Vec<String>>>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            keep.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (bounded) for `child` to exit: whether it succeeded, and its
/// stdout and stderr. `None` (the child killed) when it overran.
fn wait_output(mut child: Child, limit: Duration) -> Option<(bool, String)> {
    let keep = Arc::new(Mutex::new(Vec::new()));
    let out = collect_lines(child.stdout.take().unwrap(), keep.clone());
    let err = collect_lines(child.stderr.take().unwrap(), keep.clone());
    // Both pipes close when the child exits: that is the event.
    let deadline = Instant::now() + limit;
    for rx in [out, err] {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
    let st = child.wait().unwrap();
    let text = format!("{st}: {}", keep.lock().unwrap().join("\n"));
    Some((st.success(), text))
}
