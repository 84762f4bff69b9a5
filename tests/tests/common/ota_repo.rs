//! A signed OTA repository for the end-to-end tests: keys, releases made
//! by the publish tool, and a minimal HTTP server for them on 127.0.0.1.
//! Shared by the OTA test files through `#[path]`.
// Each test file uses its own part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lwsys_ctl::ota_tools as ctl_ota;
use lwsys_tests::{Options, TestDaemon};

pub const VARIANT: &str = "xyz-v1";

/// A minimal HTTP/1.1 file server for `root` on 127.0.0.1:0 (one thread
/// per connection, GET only, no Range: the fetcher copes with that).
pub fn serve(root: PathBuf) -> String {
    serve_paced(root, None)
}

/// As [`serve`], but image bodies go out in 64 KiB pieces with `pause`
/// between them, so a download spans real time (for cutting power in the
/// middle).
pub fn serve_paced(root: PathBuf, pause: Option<Duration>) -> String {
    let serving = Serving { piece: 64 << 10, pause, ranges: false };
    serve_with(root, serving, Arc::new(Served::default()))
}

/// How a test server sends bodies.
#[derive(Clone, Copy, Debug)]
pub struct Serving {
    /// Image bodies go out in pieces of this many bytes (other files at
    /// once)...
    pub piece: usize,
    /// ...with this pause before each.
    pub pause: Option<Duration>,
    /// Whether `Range: bytes=N-` is honoured (206); otherwise ignored (200).
    pub ranges: bool,
}

#[derive(Default)]
struct Counts {
    image_bytes: u64,
    block_at: Option<u64>,
    range_starts: Vec<u64>,
    /// Bumped by `release`: a connection held before it is dropped (its
    /// client is gone), so it sends nothing more.
    releases: u64,
    /// Every range answered (206), as (first, last) byte.
    ranges: Vec<(u64, u64)>,
}

/// What a test server has sent of image files (`*.gz`), shared with the
/// test, which can also hold the server at a byte count.
#[derive(Default)]
pub struct Served {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Served {
    /// A server that stops sending image bytes once it has sent `n` (over
    /// all connections), until [`Served::release`].
    pub fn blocking_at(n: u64) -> Arc<Self> {
        let s = Self::default();
        s.counts.lock().unwrap().block_at = Some(n);
        Arc::new(s)
    }

    /// Holds the server once it has sent `n` image bytes in all, until
    /// [`Served::release`].
    pub fn hold_at(&self, n: u64) {
        self.counts.lock().unwrap().block_at = Some(n);
    }

    /// Image body bytes written to sockets so far.
    pub fn image_bytes(&self) -> u64 {
        self.counts.lock().unwrap().image_bytes
    }

    /// The `N` of every `Range: bytes=N-` asked for an image.
    pub fn range_starts(&self) -> Vec<u64> {
        self.counts.lock().unwrap().range_starts.clone()
    }

    /// Every range answered with 206, as (first, last) byte.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.counts.lock().unwrap().ranges.clone()
    }

    /// Starts counting from zero (image bytes and ranges).
    pub fn reset(&self) {
        let mut c = self.counts.lock().unwrap();
        c.image_bytes = 0;
        c.ranges.clear();
        c.range_starts.clear();
    }

    /// Waits (bounded) until the server has sent `n` image bytes.
    pub fn wait_image_bytes(&self, n: u64) {
        let deadline = Instant::now() + lwsys_tests::WAIT;
        let mut c = self.counts.lock().unwrap();
        while c.image_bytes < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "server sent only {} of {n} image bytes", c.image_bytes);
            c = self.changed.wait_timeout(c, left).unwrap().0;
        }
    }

    /// Lets the server go on: connections held so far are closed without
    /// sending more (their client was killed), new ones are not held.
    pub fn release(&self) {
        let mut c = self.counts.lock().unwrap();
        c.block_at = None;
        c.releases += 1;
        drop(c);
        self.changed.notify_all();
    }

    /// Sends `piece` of an image body, counting it and holding at the
    /// block point.
    fn send(&self, conn: &mut TcpStream, mut piece: &[u8]) -> std::io::Result<()> {
        while !piece.is_empty() {
            let mut c = self.counts.lock().unwrap();
            let releases = c.releases;
            while c.block_at.is_some_and(|b| c.image_bytes >= b) {
                c = self.changed.wait(c).unwrap();
            }
            if c.releases != releases {
                return Err(std::io::Error::other("held connection dropped"));
            }
            let room = c.block_at.map_or(piece.len() as u64, |b| b - c.image_bytes);
            let n = piece.len().min(usize::try_from(room).unwrap());
            drop(c);
            let (now, rest) = piece.split_at(n);
            conn.write_all(now)?;
            self.counts.lock().unwrap().image_bytes += n as u64;
            self.changed.notify_all();
            piece = rest;
        }
        Ok(())
    }
}

/// A file server for `root` on 127.0.0.1:0 that sends as `serving` says
/// and counts image bytes in `served`. Returns its base URL.
pub fn serve_with(root: PathBuf, serving: Serving, served: Arc<Served>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (root, served) = (root.clone(), served.clone());
            std::thread::spawn(move || {
                let _ = answer(conn, &root, serving, &served);
            });
        }
    });
    format!("http://{addr}")
}

fn answer(
    mut conn: TcpStream,
    root: &Path,
    serving: Serving,
    served: &Served,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range: Option<u64> = None;
    // The last byte of `bytes=N-M` (chunk fetches), if given.
    let mut range_last: Option<u64> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap_or((v.trim(), ""));
            range = a.parse().ok();
            range_last = b.parse().ok();
        }
    }
    // Image bodies: the `.img.gz` and a chunked release's `.chunks`.
    let image = path.ends_with(".gz") || path.ends_with(".chunks");
    let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
        return write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    if let (true, Some(n)) = (image, range) {
        served.counts.lock().unwrap().range_starts.push(n);
    }
    let body = match range.filter(|_| serving.ranges) {
        Some(n) if n as usize >= body.len() => {
            return write!(
                conn,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(n) => {
            let len = body.len();
            let last = range_last.map_or(len - 1, |l| (l as usize).min(len - 1));
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{last}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                last + 1 - n as usize
            )?;
            served.counts.lock().unwrap().ranges.push((n, last as u64));
            body[n as usize..=last].to_vec()
        }
        None => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            body
        }
    };
    if !image {
        return conn.write_all(&body);
    }
    for piece in body.chunks(serving.piece.max(1)) {
        if let Some(p) = serving.pause {
            std::thread::sleep(p);
        }
        served.send(&mut conn, piece)?;
    }
    Ok(())
}

/// Keys, a repository with one release, and its server.
pub struct Repo {
    /// Keys, sources and the served `repo/` directory.
    pub dir: tempfile::TempDir,
    /// The signing pair.
    pub keys: ctl_ota::KeyPair,
    /// The server's base URL.
    pub url: String,
    /// The first release's image.
    pub image: Vec<u8>,
}

impl Repo {
    /// A repository whose first release, at `unixtime`, is a 400 kB image.
    pub fn new(unixtime: u64) -> Self {
        let image: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
        Self::with_image(unixtime, image)
    }

    /// A repository whose first release, at `unixtime`, is `image`.
    pub fn with_image(unixtime: u64, image: Vec<u8>) -> Self {
        Self::paced(unixtime, image, None)
    }

    /// As [`Repo::with_image`], served by [`serve_paced`].
    pub fn paced(unixtime: u64, image: Vec<u8>, pause: Option<Duration>) -> Self {
        let serving = Serving { piece: 64 << 10, pause, ranges: false };
        Self::served(unixtime, image, serving, Arc::new(Served::default()))
    }

    /// As [`Repo::with_image`], served by [`serve_with`].
    pub fn served(unixtime: u64, image: Vec<u8>, serving: Serving, served: Arc<Served>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = ctl_ota::keygen(&dir.path().join("keys")).unwrap();
        let url = serve_with(dir.path().join("repo"), serving, served);
        let r = Self { dir, keys, url, image };
        r.publish(&r.image, unixtime);
        r
    }

    /// The served (gzip) image file of the release at `unixtime`.
    pub fn image_file(&self, unixtime: u64) -> PathBuf {
        self.dir.path().join("repo").join(VARIANT).join(format!("{VARIANT}-{unixtime}.img.gz"))
    }

    /// Publish `image` as the release at `unixtime`, as upstream's tools
    /// would: no chunk index (`lwsysctl ota publish --no-chunks`).
    pub fn publish(&self, image: &[u8], unixtime: u64) {
        self.publish_opts(image, unixtime, None);
    }

    /// Publish `image` as the release at `unixtime` with a chunk index of
    /// `chunk_size` (`lwsysctl ota publish`, the default 64 KiB).
    pub fn publish_chunked(&self, image: &[u8], unixtime: u64, chunk_size: u32) {
        self.publish_opts(image, unixtime, Some(chunk_size));
    }

    fn publish_opts(&self, image: &[u8], unixtime: u64, chunk_size: Option<u32>) {
        let src = self.dir.path().join(format!("fw-{unixtime}.img"));
        std::fs::write(&src, image).unwrap();
        ctl_ota::publish_with(
            &self.keys.private,
            VARIANT,
            &src,
            &self.dir.path().join("repo"),
            Some(unixtime),
            &lwsys_manifest::PublishOptions { chunk_size, ..Default::default() },
        )
        .unwrap();
    }

    /// A file of the release directory (`.idx`, `.chunks`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("repo").join(VARIANT).join(name)
    }

    /// The daemon config for this repository.
    pub fn config(&self, public_jwk: &Path, confirm: &str, reboot: &str) -> String {
        format!(
            "[ota]\nrepository = \"{}\"\nvariant = \"{VARIANT}\"\npublic_jwk = \"{}\"\nconfirm = \"{confirm}\"\n\n[system]\nreboot = \"{reboot}\"\n",
            self.url,
            public_jwk.display()
        )
    }

    /// A daemon whose reboot is a command that succeeds, after which it
    /// exits 0: the test then plays the bootloader and starts it again.
    pub fn daemon(&self, confirm: &str, state_dir: Option<PathBuf>) -> TestDaemon {
        self.daemon_rebooting(confirm, state_dir, "/bin/true")
    }

    /// A daemon whose reboot op is `reboot` (`"exec"` or a command).
    pub fn daemon_rebooting(
        &self,
        confirm: &str,
        state_dir: Option<PathBuf>,
        reboot: &str,
    ) -> TestDaemon {
        TestDaemon::with(Options {
            config: Some(self.config(&self.keys.public, confirm, reboot)),
            state_dir,
            ..Options::default()
        })
    }

    /// A daemon (confirm auto, reboot a command that succeeds) with more
    /// `[ota]` keys (`extra_ota`, lines) and environment.
    pub fn daemon_with(
        &self,
        extra_ota: &str,
        state_dir: Option<PathBuf>,
        env: Vec<(String, String)>,
    ) -> TestDaemon {
        self.daemon_full(extra_ota, state_dir, "/bin/true", env)
    }

    /// As [`Repo::daemon_with`], with the reboot op `reboot`. `extra_ota`
    /// may end with other sections (`[ota.policy]`).
    pub fn daemon_full(
        &self,
        extra_ota: &str,
        state_dir: Option<PathBuf>,
        reboot: &str,
        env: Vec<(String, String)>,
    ) -> TestDaemon {
        let config = self.config(&self.keys.public, "auto", reboot);
        let config = config.replacen("\n\n[system]", &format!("\n{extra_ota}\n\n[system]"), 1);
        TestDaemon::with(Options { config: Some(config), state_dir, env, ..Options::default() })
    }

    /// Signs the release at `unixtime` again with `edit` applied to its
    /// manifest (fields upstream has not, such as `urgency`).
    pub fn resign(&self, unixtime: u64, edit: impl FnOnce(&mut lwsys_manifest::Manifest)) {
        let src = self.dir.path().join(format!("fw-{unixtime}.img"));
        let mut m = ctl_ota::publish_at(
            &self.keys.private,
            VARIANT,
            &src,
            &self.dir.path().join("repo"),
            unixtime,
        )
        .unwrap();
        edit(&mut m);
        let jwk = std::fs::read_to_string(&self.keys.private).unwrap();
        let key = lwsys_manifest::parse_private_jwk(&jwk).unwrap();
        let jws = lwsys_manifest::jws::sign_manifest(&key, &m);
        std::fs::write(self.dir.path().join("repo").join(VARIANT).join("manifest.jws"), jws)
            .unwrap();
    }
}
