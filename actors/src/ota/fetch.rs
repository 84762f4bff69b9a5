//! Blocking HTTP(S) fetches of the manifest and the image for the OTA
//! worker thread, with resume of an interrupted image by HTTP Range, and
//! an overall deadline per download so a server that trickles cannot hold
//! an install open.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The whole image download (all its requests and reads) must be done
    /// within this; past it the install fails with [`OtaError::Deadline`].
    pub download_timeout: Duration,
}

impl FetchConfig {
    /// A config with 10 s connect and 30 s read timeouts, 5 resumes and a
    /// 1800 s download deadline.
    pub fn new(repository: &str, variant: &str) -> Self {
        Self {
            repository: repository.to_owned(),
            variant: variant.to_owned(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            tls: None,
            max_resumes: 5,
            download_timeout: Duration::from_secs(1800),
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

    /// The download deadline's length.
    pub fn download_timeout(&self) -> Duration {
        self.cfg.download_timeout
    }

    fn get(
        &self,
        url: &str,
        from: u64,
        deadline: Option<Instant>,
    ) -> Result<ureq::Response, OtaError> {
        self.call(url, from, deadline).map_err(|e| self.error(url, *e, deadline))
    }

    /// A failed request as an [`OtaError`]: past the deadline, that.
    fn error(&self, url: &str, e: ureq::Error, deadline: Option<Instant>) -> OtaError {
        match e {
            ureq::Error::Transport(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                self.deadline_error()
            }
            e => http_error(url, e),
        }
    }

    /// As `get`, with ureq's own error (a 416's headers matter).
    fn call(
        &self,
        url: &str,
        from: u64,
        deadline: Option<Instant>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        // identity: ureq must not inflate behind our back.
        let mut req = self.agent.get(url).set("Accept-Encoding", "identity");
        if from > 0 {
            req = req.set("Range", &format!("bytes={from}-"));
        }
        if let Some(d) = deadline {
            // ureq caps every socket read at the time left, so a server
            // that trickles one byte per read timeout still stops here.
            // At least a millisecond: a zero timeout would mean none.
            let left = d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            req = req.timeout(left);
        }
        req.call().map_err(Box::new)
    }

    fn deadline_error(&self) -> OtaError {
        OtaError::Deadline { secs: self.cfg.download_timeout.as_secs() }
    }

    /// Fetches `file` whole, refusing more than `max` bytes: `Ok(Err(n))`
    /// when it is longer (`n` bytes seen so far).
    pub fn small_file_unless(
        &self,
        file: &str,
        max: u64,
        cancel: &AtomicBool,
    ) -> Result<Result<Vec<u8>, u64>, OtaError> {
        let url = self.url(file);
        // The same deadline as a download, so a trickled file cannot hold
        // a check open either.
        let deadline = Instant::now() + self.cfg.download_timeout;
        let resp = self.get(&url, 0, Some(deadline))?;
        let mut out = Vec::new();
        let body = Unless { inner: resp.into_reader(), cancel };
        body.take(max.saturating_add(1)).read_to_end(&mut out).map_err(|e| {
            if cancel.load(Ordering::Relaxed) {
                OtaError::Cancelled
            } else if Instant::now() >= deadline {
                self.deadline_error()
            } else {
                OtaError::Network(format!("{url}: {e}"))
            }
        })?;
        if out.len() as u64 > max {
            return Ok(Err(out.len() as u64));
        }
        Ok(Ok(out))
    }

    /// Asks for bytes `start..end` of `file` with a Range request and
    /// insists on exactly those: a 206 whose `Content-Range` is `bytes
    /// start-(end-1)/*`. Anything else is an error, since a caller of this
    /// never wants more than it asked for: a 200 (the server ignores
    /// Range) is `OtaError::Http { status: 200, .. }`, another range
    /// [`OtaError::Network`]. The body yields at most `end - start` bytes and fails
    /// with [`OtaError::Deadline`] (as an I/O error) past `deadline`.
    pub fn range(
        &self,
        file: &str,
        start: u64,
        end: u64,
        deadline: Instant,
    ) -> Result<RangeBody<'_>, OtaError> {
        let url = self.url(file);
        if end <= start {
            return Err(OtaError::Network(format!("{url}: empty range {start}..{end}")));
        }
        let last = end - 1;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let resp = self
            .agent
            .get(&url)
            .set("Accept-Encoding", "identity")
            .set("Range", &format!("bytes={start}-{last}"))
            .timeout(left)
            .call()
            .map_err(|e| self.error(&url, e, Some(deadline)))?;
        if resp.status() == 200 {
            // The server ignores Range: the caller may fetch the file whole
            // some other way.
            return Err(OtaError::Http { status: 200, url });
        }
        let want = format!("bytes {start}-{last}/");
        let range = resp.header("Content-Range").unwrap_or("").trim().to_owned();
        if resp.status() != 206 || !range.starts_with(&want) {
            return Err(OtaError::Network(format!(
                "{url}: asked for bytes {start}-{last}, got HTTP {} {:?} (the chunk file needs a server that honours Range)",
                resp.status(),
                range.chars().take(64).collect::<String>()
            )));
        }
        Ok(RangeBody {
            fetcher: self,
            reader: Box::new(resp.into_reader().take(end - start)),
            deadline,
        })
    }

    /// Fetches `manifest.jws`, refusing more than `max` bytes.
    pub fn manifest(&self, max: u64) -> Result<Vec<u8>, OtaError> {
        self.manifest_unless(max, &AtomicBool::new(false))
    }

    /// As [`Fetcher::manifest`], giving up with [`OtaError::Cancelled`] at
    /// the first read after `cancel` is set.
    pub fn manifest_unless(&self, max: u64, cancel: &AtomicBool) -> Result<Vec<u8>, OtaError> {
        self.small_file_unless("manifest.jws", max, cancel)?
            .map_err(|size| OtaError::ManifestTooLarge { size, max })
    }

    /// How many times a lost connection is taken up again per download.
    pub fn max_resumes(&self) -> u32 {
        self.cfg.max_resumes
    }

    /// Opens the (compressed) image `path` as a reader that resumes with
    /// Range requests when the connection fails, with no saved prefix and
    /// the configured deadline from now.
    pub fn image(&self, path: &str) -> Result<ResumingBody<'_>, OtaError> {
        self.image_from(path, 0, Instant::now() + self.cfg.download_timeout)
    }

    /// As [`Fetcher::image`], asking for the bytes from `from` on (a prefix
    /// saved by an earlier run) and failing with [`OtaError::Deadline`] at
    /// `deadline`. Whether the server continued at `from` (206 with the
    /// right `Content-Range`, or 416 with `bytes */from`: the prefix is the
    /// whole file and the body is empty) is [`ResumingBody::start`]: 0
    /// means it sent the whole file, and the caller must drop its prefix.
    pub fn image_from(
        &self,
        path: &str,
        from: u64,
        deadline: Instant,
    ) -> Result<ResumingBody<'_>, OtaError> {
        let url = self.url(path);
        let mut resp = match self.call(&url, from, Some(deadline)).map_err(|e| *e) {
            Err(ureq::Error::Status(416, r)) if from > 0 => {
                // Nothing at or past `from`: if the file is exactly `from`
                // bytes long (`Content-Range: bytes */from`), the saved
                // prefix is all of it.
                if r.header("Content-Range").map(str::trim) == Some(&format!("bytes */{from}")) {
                    return Ok(ResumingBody {
                        fetcher: self,
                        url,
                        reader: Box::new(io::empty()),
                        offset: from,
                        total: Some(from),
                        skip: 0,
                        resumes: 0,
                        start: from,
                        deadline,
                    });
                }
                return Err(OtaError::Http { status: 416, url });
            }
            r => r.map_err(|e| self.error(&url, e, Some(deadline)))?,
        };
        let mut start = 0;
        if from > 0 {
            let range = resp.header("Content-Range").unwrap_or("");
            if resp.status() == 206 && range.starts_with(&format!("bytes {from}-")) {
                start = from;
            } else if resp.status() == 206 {
                // A range we did not ask for: take the whole file instead.
                resp = self.get(&url, 0, Some(deadline))?;
            }
        }
        let len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
        Ok(ResumingBody {
            fetcher: self,
            url,
            reader: resp.into_reader(),
            offset: start,
            total: len.map(|l| l.saturating_add(start)),
            skip: 0,
            resumes: 0,
            start,
            deadline,
        })
    }
}

/// The body of one [`Fetcher::range`] request: at most the bytes asked
/// for, failing past the download deadline.
pub struct RangeBody<'a> {
    fetcher: &'a Fetcher,
    reader: Box<dyn Read + Send + Sync + 'static>,
    deadline: Instant,
}

impl Read for RangeBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::other(self.fetcher.deadline_error()));
        }
        self.reader.read(buf)
    }
}

/// A reader that fails once `cancel` is set (checked before each read).
struct Unless<'c, R> {
    inner: R,
    cancel: &'c AtomicBool,
}

impl<R: Read> Read for Unless<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        self.inner.read(buf)
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
    start: u64,
    deadline: Instant,
}

impl ResumingBody<'_> {
    /// Times the download was resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// The offset in the file of the first byte this body yields: the
    /// `from` asked for if the server honoured the Range, else 0.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Whether the download deadline has passed.
    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The deadline as an I/O error the pipeline unwraps again.
    pub fn deadline_error(&self) -> io::Error {
        io::Error::other(self.fetcher.deadline_error())
    }

    fn reopen(&mut self, why: &str) -> io::Result<()> {
        let resp = loop {
            if self.past_deadline() {
                return Err(self.deadline_error());
            }
            if self.resumes >= self.fetcher.cfg.max_resumes {
                return Err(io::Error::other(OtaError::Network(format!(
                    "{}: {why} after {} resumes",
                    self.url, self.resumes
                ))));
            }
            self.resumes += 1;
            match self.fetcher.get(&self.url, self.offset, Some(self.deadline)) {
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
            if self.past_deadline() {
                return Err(self.deadline_error());
            }
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
