//! A signed OTA repository for the end-to-end tests: keys, releases made
//! by the publish tool, and a minimal HTTP server for them on 127.0.0.1.
//! Shared by the OTA test files through `#[path]`.
// Each test file uses its own part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use lwsys::ctl_ota;
use lwsys_tests::{Options, TestDaemon};

pub const VARIANT: &str = "xyz-v1";

/// A minimal HTTP/1.1 file server for `root` on 127.0.0.1:0 (one thread
/// per connection, GET only, no Range: the fetcher copes with that).
pub fn serve(root: PathBuf) -> String {
    serve_paced(root, None)
}

/// As [`serve`], but bodies go out in 64 KiB pieces with `pause` between
/// them, so a download spans real time (for cutting power in the middle).
pub fn serve_paced(root: PathBuf, pause: Option<std::time::Duration>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = answer(conn, &root, pause);
            });
        }
    });
    format!("http://{addr}")
}

fn answer(
    mut conn: TcpStream,
    root: &Path,
    pause: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    match std::fs::read(root.join(path.trim_start_matches('/'))) {
        Ok(body) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            match pause {
                None => conn.write_all(&body),
                Some(p) => body.chunks(64 << 10).try_for_each(|piece| {
                    std::thread::sleep(p);
                    conn.write_all(piece)
                }),
            }
        }
        Err(_) => {
            write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    }
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
    pub fn paced(unixtime: u64, image: Vec<u8>, pause: Option<std::time::Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = ctl_ota::keygen(&dir.path().join("keys")).unwrap();
        let url = serve_paced(dir.path().join("repo"), pause);
        let r = Self { dir, keys, url, image };
        r.publish(&r.image, unixtime);
        r
    }

    /// Publish `image` as the release at `unixtime`.
    pub fn publish(&self, image: &[u8], unixtime: u64) {
        let src = self.dir.path().join(format!("fw-{unixtime}.img"));
        std::fs::write(&src, image).unwrap();
        ctl_ota::publish_at(
            &self.keys.private,
            VARIANT,
            &src,
            &self.dir.path().join("repo"),
            unixtime,
        )
        .unwrap();
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
}
