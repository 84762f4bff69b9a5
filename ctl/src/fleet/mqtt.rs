//! A small blocking MQTT 3.1.1 client on std's `TcpStream`, optionally
//! wrapped in rustls's blocking `StreamOwned`: connect, subscribe, publish
//! (QoS 0 or 1) and receive with a deadline. No async runtime: `lwsysctl`
//! runs one command and exits.
//!
//! Every read has a deadline (the socket's read timeout is set from it),
//! incoming packets are bounded by [`MAX_PACKET`], and the receive buffer
//! never holds more than one packet past that bound.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{self, connack_reason, CodecError, Connect, EncodeError, Packet, Publish};

/// The largest packet accepted from the broker: a control-protocol reply
/// is at most one 1 MiB line, plus room for the topic.
pub const MAX_PACKET: usize = (1 << 20) + 4096;

/// How long connecting (TCP, TLS, CONNACK) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keepalive announced to the broker; a PINGREQ goes out after half of it
/// without sending anything.
const KEEPALIVE_SECS: u16 = 30;

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("bad broker URL {0:?}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")]
    BadUrl(String),
    /// A TLS option was given without what it needs, or a file is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// A socket or file error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The broker sent bytes that are not a packet we accept.
    #[error("broker sent a bad packet: {0}")]
    Codec(#[from] CodecError),
    /// A packet we were asked to send cannot be encoded.
    #[error("{0}")]
    Encode(#[from] EncodeError),
    /// The broker refused the connection.
    #[error("broker refused the connection: {0}")]
    Refused(&'static str),
    /// The broker refused a subscription.
    #[error("broker refused the subscription to {0:?}")]
    SubscribeRefused(String),
    /// The broker closed the connection.
    #[error("broker closed the connection")]
    Closed,
    /// No answer in time.
    #[error("no answer from the broker within {0:?} ({1})")]
    Timeout(Duration, &'static str),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MqttError {
    let what = what.into();
    move |source| MqttError::Io { what, source }
}

/// Where the broker is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (without brackets for IPv6).
    pub host: String,
    /// TCP port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl Broker {
    /// Parse `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(url: &str) -> Result<Self, MqttError> {
        let bad = || MqttError::BadUrl(url.to_owned());
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') {
            return Err(bad());
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| bad())?),
                None if after.is_empty() => (h, default_port),
                None => return Err(bad()),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self { host: host.to_owned(), port, tls })
    }
}

/// How to authenticate and verify.
#[derive(Clone, Default)]
pub struct Options {
    /// PEM file of the CA(s) that sign the broker's certificate (TLS).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (TLS client authentication).
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// MQTT user name.
    pub username: Option<String>,
    /// MQTT password (read from a file by the caller; never logged, and
    /// shown as `<redacted>` by Debug).
    pub password: Option<Vec<u8>>,
    /// Client id; empty picks `lwsysctl-<pid>-<nanos>`.
    pub client_id: String,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches debug output.
        f.debug_struct("Options")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Both transports behind one type.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One connection to the broker.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    /// Publishes that arrived while waiting for an acknowledgement.
    queued: VecDeque<Publish>,
    next_pid: u16,
    last_sent: Instant,
}

fn tls_config(opts: &Options) -> Result<rustls::ClientConfig, MqttError> {
    let tls = |m: String| MqttError::Tls(m);
    let ca = opts.ca.as_ref().ok_or_else(|| tls("mqtts:// needs --ca FILE".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| tls(format!("{}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(tls(format!("{}: no certificate in it", ca.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&opts.cert, &opts.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let pem = std::fs::read(key).map_err(io(format!("reading {}", key.display())))?;
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(io(format!("reading {}", key.display())))?
                .ok_or_else(|| tls(format!("{}: no private key in it", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls(format!("client certificate: {e}")))
        }
        _ => Err(tls("--cert and --key go together".into())),
    }
}

fn read_certs(
    path: &PathBuf,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, MqttError> {
    let pem = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(io(format!("reading {}", path.display())))?;
    if certs.is_empty() {
        return Err(MqttError::Tls(format!("{}: no certificate in it", path.display())));
    }
    Ok(certs)
}

impl Client {
    /// Connect to `broker` and open a clean session.
    pub fn connect(broker: &Broker, opts: &Options) -> Result<Self, MqttError> {
        // Settle TLS options before any traffic, so a usage error is not a
        // network error.
        let tls = if broker.tls { Some(tls_config(opts)?) } else { None };
        if !broker.tls && (opts.ca.is_some() || opts.cert.is_some()) {
            return Err(MqttError::Tls("--ca/--cert need an mqtts:// broker".into()));
        }
        let target = format!("{}:{}", broker.host, broker.port);
        let addrs: Vec<_> = (broker.host.as_str(), broker.port)
            .to_socket_addrs()
            .map_err(io(format!("resolving {target}")))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match tcp {
            Some(s) => s,
            None => {
                let e = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
                return Err(MqttError::Io { what: format!("connecting to {target}"), source: e });
            }
        };
        let _ = tcp.set_nodelay(true);
        tcp.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(io("socket"))?;
        // The TLS handshake reads inside the first write: bound it too.
        tcp.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(io("socket"))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(broker.host.clone())
                    .map_err(|e| MqttError::Tls(format!("server name: {e}")))?;
                let conn = rustls::ClientConnection::new(Arc::new(cfg), name)
                    .map_err(|e| MqttError::Tls(e.to_string()))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        let mut c = Self {
            stream,
            buf: Vec::new(),
            queued: VecDeque::new(),
            next_pid: 0,
            last_sent: Instant::now(),
        };
        let client_id = if opts.client_id.is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            format!("lwsysctl-{}-{nanos}", std::process::id())
        } else {
            opts.client_id.clone()
        };
        c.send(&Packet::Connect(Connect {
            client_id,
            keepalive: KEEPALIVE_SECS,
            username: opts.username.clone(),
            password: opts.password.clone(),
        }))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        match c.read_packet(deadline)? {
            Some(Packet::ConnAck { code: 0, .. }) => Ok(c),
            Some(Packet::ConnAck { code, .. }) => Err(MqttError::Refused(connack_reason(code))),
            Some(_) => Err(CodecError::Malformed("CONNACK").into()),
            None => Err(MqttError::Timeout(CONNECT_TIMEOUT, "CONNACK")),
        }
    }

    fn send(&mut self, p: &Packet) -> Result<(), MqttError> {
        let bytes = codec::encode(p)?;
        self.stream.write_all(&bytes).map_err(io("sending to the broker"))?;
        self.stream.flush().map_err(io("sending to the broker"))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn pid(&mut self) -> u16 {
        // Packet id 0 is not allowed.
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.next_pid
    }

    /// The next packet, or `None` once `deadline` passes. Keepalive pings
    /// go out while waiting; publishes with QoS 1 are acknowledged here.
    fn read_packet(&mut self, deadline: Instant) -> Result<Option<Packet>, MqttError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((p, used)) = codec::decode(&self.buf, MAX_PACKET)? {
                self.buf.drain(..used);
                if let Packet::Publish(m) = &p {
                    if m.qos == 1 {
                        self.send(&Packet::PubAck(m.pid))?;
                    }
                }
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let ping_at = self.last_sent + Duration::from_secs(u64::from(KEEPALIVE_SECS) / 2);
            if now >= ping_at {
                self.send(&Packet::PingReq)?;
                continue;
            }
            let wait = deadline.min(ping_at).saturating_duration_since(now);
            // A zero timeout means "block forever" to std: never pass it.
            let wait = wait.max(Duration::from_millis(1));
            self.stream.tcp().set_read_timeout(Some(wait)).map_err(io("socket"))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(MqttError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    return Err(MqttError::Io { what: "reading from the broker".into(), source: e })
                }
            }
        }
    }

    /// Subscribe to `filters` at QoS 0 and wait for the SUBACK. Publishes
    /// that arrive first are kept for [`Client::recv`].
    pub fn subscribe(&mut self, filters: &[String]) -> Result<(), MqttError> {
        let pid = self.pid();
        let list = filters.iter().map(|f| (f.clone(), 0)).collect();
        self.send(&Packet::Subscribe { pid, filters: list })?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match self.read_packet(deadline)? {
                Some(Packet::SubAck { pid: p, codes }) if p == pid => {
                    if let Some(i) = codes.iter().position(|c| *c == 0x80) {
                        let f = filters.get(i).cloned().unwrap_or_default();
                        return Err(MqttError::SubscribeRefused(f));
                    }
                    return Ok(());
                }
                Some(Packet::Publish(m)) => self.queue(m),
                Some(_) => {}
                None => return Err(MqttError::Timeout(CONNECT_TIMEOUT, "SUBACK")),
            }
        }
    }

    fn queue(&mut self, m: Publish) {
        // Bounded like everything else: past the bound the oldest goes.
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back(m);
    }

    /// Publish `payload` on `topic`: QoS 1 waits for the broker's PUBACK.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
    ) -> Result<(), MqttError> {
        let qos = qos.min(1);
        let pid = if qos == 1 { self.pid() } else { 0 };
        self.send(&Packet::Publish(Publish {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
            pid,
        }))?;
        if qos == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match self.read_packet(deadline)? {
                Some(Packet::PubAck(p)) if p == pid => return Ok(()),
                Some(Packet::Publish(m)) => self.queue(m),
                Some(_) => {}
                None => return Err(MqttError::Timeout(CONNECT_TIMEOUT, "PUBACK")),
            }
        }
    }

    /// The next application message, or `None` once `deadline` passes.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<Publish>, MqttError> {
        if let Some(m) = self.queued.pop_front() {
            return Ok(Some(m));
        }
        loop {
            match self.read_packet(deadline)? {
                Some(Packet::Publish(m)) => return Ok(Some(m)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Say goodbye (best effort: the socket closes either way).
    pub fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect);
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

/// How many publishes are held while waiting for an acknowledgement.
const MAX_QUEUED: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_show_the_password_in_debug() {
        let o = Options { password: Some(b"hunter2".to_vec()), ..Options::default() };
        let d = format!("{o:?}");
        assert!(d.contains("<redacted>") && !d.contains("hunter2") && !d.contains("104"), "{d}");
    }

    #[test]
    fn a_listener_that_never_answers_times_out_instead_of_hanging() {
        // Accepts TCP (the kernel's backlog) but never sends CONNACK.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut c = Client {
            stream: Stream::Plain(TcpStream::connect(("127.0.0.1", port)).expect("connect")),
            buf: Vec::new(),
            queued: VecDeque::new(),
            next_pid: 0,
            last_sent: Instant::now(),
        };
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(matches!(c.read_packet(deadline), Ok(None)), "a read past its deadline is None");
        assert!(Instant::now() >= deadline);
    }
}
