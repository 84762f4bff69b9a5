//! A tiny HTTP/1.1 file server on 127.0.0.1 for the OTA tests, with Range
//! support and faults on demand (error status, dropped connection, Range
//! ignored), plain or over TLS (a generated CA and a `localhost` leaf).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The faults the server injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every request with this status and no body.
    pub status: Option<u16>,
    /// Close the next image response after this many body bytes (once).
    pub drop_after: Option<usize>,
    /// Answer Range requests with 200 and the whole file.
    pub ignore_range: bool,
    /// Flip the byte at this file offset of the next `.chunks` response
    /// that covers it (the first `n` times, `n` the second field).
    pub corrupt_at: Option<(usize, u32)>,
}

/// Requests seen, as (path, Range header).
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A running server; it lives as long as the test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The faults, changeable while it runs.
    pub faults: Arc<Mutex<Faults>>,
    /// Requests seen, as (path, range header).
    pub log: RequestLog,
    /// For TLS: the CA (PEM) that signed the server's `localhost` cert.
    pub ca_pem: Option<String>,
    /// Body bytes written per path (what the client was sent).
    pub sent: SentLog,
}

/// Body bytes written per request path.
pub type SentLog = Arc<Mutex<std::collections::HashMap<String, u64>>>;

impl TestServer {
    /// Serves `root` on 127.0.0.1:0.
    pub fn start(root: PathBuf) -> Self {
        Self::start_with(root, None)
    }

    /// Serves `root` over TLS on 127.0.0.1:0 as `localhost`.
    pub fn start_tls(root: PathBuf) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "lwsys ota test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        // The AKID lets the trust store's verifier find the CA by SKID.
        lp.use_authority_key_identifier_extension = true;
        let leaf = lp.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key.into())
            .unwrap();
        let mut s = Self::start_with(root, Some(Arc::new(cfg)));
        s.ca_pem = Some(ca.pem());
        s
    }

    fn start_with(root: PathBuf, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent: SentLog = Arc::default();
        let (f, l, b) = (faults.clone(), log.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, f, l, b) = (root.clone(), f.clone(), l.clone(), b.clone());
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = match tls {
                        Some(cfg) => {
                            let Ok(tls) = rustls::ServerConnection::new(cfg) else { return };
                            serve(rustls::StreamOwned::new(tls, conn), &root, &f, &l, &b)
                        }
                        None => serve(conn, &root, &f, &l, &b),
                    };
                });
            }
        });
        Self { addr, faults, log, ca_pem: None, sent }
    }

    /// The base URL (the repository).
    pub fn url(&self) -> String {
        match self.ca_pem {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }
}

fn serve(
    conn: impl Read + Write,
    root: &std::path::Path,
    faults: &Mutex<Faults>,
    log: &RequestLog,
    sent: &SentLog,
) -> std::io::Result<()> {
    // Requests have no body, so nothing the reader buffers is lost.
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_owned());
            }
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let conn = reader.get_mut();
    let f = faults.lock().unwrap().clone();
    if let Some(status) = f.status {
        write!(conn, "HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
        write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let len = body.len();
    // `bytes=N-` or `bytes=N-M` (M inclusive, clamped to the end).
    let asked = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| {
        let (a, b) = r.split_once('-')?;
        let from = a.parse::<usize>().ok()?;
        let to = if b.is_empty() { None } else { Some(b.parse::<usize>().ok()?) };
        Some((from, to))
    });
    let (head, start, slice) = match asked {
        Some((n, _)) if !f.ignore_range && n >= len => (
            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"),
            0,
            &body[..0],
        ),
        Some((n, to)) if !f.ignore_range && n < len => {
            let last = to.unwrap_or(len - 1).min(len - 1);
            (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{last}/{len}\r\nContent-Length: {}\r\n",
                    last + 1 - n
                ),
                n,
                &body[n..=last],
            )
        }
        _ => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            0,
            &body[..],
        ),
    };
    let mut slice = slice.to_vec();
    let is_chunks = path.ends_with(".chunks");
    if is_chunks {
        let mut fl = faults.lock().unwrap();
        if let Some((at, times)) = fl.corrupt_at {
            if times > 0 && at >= start && at < start + slice.len() {
                slice[at - start] ^= 0x5a;
                fl.corrupt_at = Some((at, times - 1));
            }
        }
    }
    conn.write_all(head.as_bytes())?;
    conn.write_all(b"Connection: close\r\n\r\n")?;
    let is_image = path.ends_with(".gz") || is_chunks;
    let cut = if is_image { faults.lock().unwrap().drop_after.take() } else { None };
    let n = match cut {
        Some(n) if n < slice.len() => n,
        _ => slice.len(),
    };
    // Dropping the connection after a short write closes it mid-body.
    conn.write_all(&slice[..n])?;
    *sent.lock().unwrap().entry(path.clone()).or_default() += n as u64;
    conn.flush()
}
