//! Blocking HTTP(S) fetches of the manifest and the image for the OTA
//! worker thread, with resume of an interrupted image by HTTP Range.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use lwsys_messages::OtaError;

/// Where and how to fetch updates.
#[derive(Clone)]
pub struct FetchConfig {
    /// Base URL; files are `<repository>/<variant>/<name>`.
    pub repository: String,
    /// The device's variant.
    pub variant: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read from the socket.
    pub read_timeout: Duration,
    /// TLS settings for `https:` (the trust store's verifier); `None` uses
    /// ureq's defaults.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How many times an interrupted image download is resumed.
    pub max_resumes: u32,
}

impl FetchConfig {
    /// A config with 10 s connect and 30 s read timeouts and 5 resumes.
    pub fn new(repository: &str, variant: &str) -> Self {
        Self {
            repository: repository.to_owned(),
            variant: variant.to_owned(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            tls: None,
            max_resumes: 5,
        }
    }
}

/// Fetches update files over HTTP(S) with ureq (blocking).
pub struct Fetcher {
    agent: ureq::Agent,
    cfg: FetchConfig,
}

fn http_error(url: &str, e: ureq::Error) -> OtaError {
    match e {
        ureq::Error::Status(status, _) => OtaError::Http { status, url: url.to_owned() },
        ureq::Error::Transport(t) => OtaError::Network(format!("{url}: {t}")),
    }
}

impl Fetcher {
    /// A fetcher for `cfg`.
    pub fn new(cfg: FetchConfig) -> Self {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(cfg.connect_timeout)
            .timeout_read(cfg.read_timeout);
        if let Some(tls) = &cfg.tls {
            b = b.tls_config(tls.clone());
        }
        Self { agent: b.build(), cfg }
    }

    /// The URL of `file` in our variant's directory.
    pub fn url(&self, file: &str) -> String {
        format!("{}/{}/{}", self.cfg.repository.trim_end_matches('/'), self.cfg.variant, file)
    }

    fn get(&self, url: &str, from: u64) -> Result<ureq::Response, OtaError> {
        // identity: ureq must not inflate behind our back.
        let mut req = self.agent.get(url).set("Accept-Encoding", "identity");
        if from > 0 {
            req = req.set("Range", &format!("bytes={from}-"));
        }
        req.call().map_err(|e| http_error(url, e))
    }

    /// Fetches `manifest.jws`, refusing more than `max` bytes.
    pub fn manifest(&self, max: u64) -> Result<Vec<u8>, OtaError> {
        let url = self.url("manifest.jws");
        let resp = self.get(&url, 0)?;
        let mut out = Vec::new();
        resp.into_reader()
            .take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| OtaError::Network(format!("{url}: {e}")))?;
        if out.len() as u64 > max {
            return Err(OtaError::ManifestTooLarge { size: out.len() as u64, max });
        }
        Ok(out)
    }

    /// Opens the (compressed) image `path` as a reader that resumes with
    /// Range requests when the connection fails.
    pub fn image(&self, path: &str) -> Result<ResumingBody<'_>, OtaError> {
        let url = self.url(path);
        let resp = self.get(&url, 0)?;
        let total = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
        Ok(ResumingBody {
            fetcher: self,
            url,
            reader: resp.into_reader(),
            offset: 0,
            total,
            skip: 0,
            resumes: 0,
        })
    }
}

/// The compressed image body; on a lost connection (an error or an early
/// end before `Content-Length`) it asks again with `Range: bytes=N-` and
/// carries on, so the gzip decoder above keeps its state. A server that
/// answers 200 instead of 206 sends the whole file again; its first N bytes
/// are skipped, so the stream seen above is the same either way.
pub struct ResumingBody<'a> {
    fetcher: &'a Fetcher,
    url: String,
    reader: Box<dyn Read + Send + Sync + 'static>,
    offset: u64,
    total: Option<u64>,
    skip: u64,
    resumes: u32,
}

impl ResumingBody<'_> {
    /// Times the download was resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    fn reopen(&mut self, why: &str) -> io::Result<()> {
        let resp = loop {
            if self.resumes >= self.fetcher.cfg.max_resumes {
                return Err(io::Error::other(OtaError::Network(format!(
                    "{}: {why} after {} resumes",
                    self.url, self.resumes
                ))));
            }
            self.resumes += 1;
            match self.fetcher.get(&self.url, self.offset) {
                Ok(resp) => break resp,
                // The network may still be down: back off a little, retry.
                Err(OtaError::Network(_)) => {
                    std::thread::sleep(Duration::from_millis(250 * u64::from(self.resumes)));
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        };
        match resp.status() {
            206 => {
                let range = resp.header("Content-Range").unwrap_or("");
                let want = format!("bytes {}-", self.offset);
                if !range.starts_with(&want) {
                    return Err(io::Error::other(OtaError::Network(format!(
                        "{}: asked for {want}, got {range:?}",
                        self.url
                    ))));
                }
                self.skip = 0;
            }
            // Range ignored: the whole file again; drop what we have.
            _ => self.skip = self.offset,
        }
        self.reader = resp.into_reader();
        Ok(())
    }
}

impl Read for ResumingBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.reader.read(buf) {
                Ok(0) => match self.total {
                    Some(t) if self.offset < t => self.reopen("connection closed early")?,
                    _ => return Ok(0),
                },
                Ok(n) => {
                    if self.skip == 0 {
                        self.offset += n as u64;
                        return Ok(n);
                    }
                    let drop = usize::try_from(self.skip).unwrap_or(usize::MAX).min(n);
                    self.skip -= drop as u64;
                    if drop < n {
                        buf.copy_within(drop..n, 0);
                        self.offset += (n - drop) as u64;
                        return Ok(n - drop);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.reopen(&e.to_string())?,
            }
        }
    }
}

/// TLS settings trusting only the CA certificates (PEM) in `path`, for
/// `[ota] ca_file`.
pub fn tls_from_ca_file(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, OtaError> {
    let bad = |e: String| OtaError::BadKey(format!("ca_file {}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut io::BufReader::new(f)) {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// TLS settings that verify servers with `verifier` (the trust store's
/// `JitVerifier`, which finds the issuing CA just in time).
pub fn tls_with_verifier(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, OtaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OtaError::Network(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
