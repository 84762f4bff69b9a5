//! Test helper: a real `chronyd` serving the host clock on 127.0.0.1 at an
//! ephemeral port, never touching the machine's clock (`-x`), killed on
//! drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sntp;

/// A running chronyd.
pub struct Chronyd {
    child: Option<Child>,
    /// The UDP port it serves.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The chronyd binary, or `None` (and the reason printed) if absent.
pub fn binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/chronyd", "/usr/bin/chronyd", "/sbin/chronyd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!("skipped: chronyd not installed (scripts/test installs Debian's chrony)");
    }
    found
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

impl Chronyd {
    /// Starts chronyd on `port` (a free one if `None`) and waits until it
    /// answers SNTP with a usable reply.
    pub async fn start(port: Option<u16>) -> Option<Self> {
        let bin = binary()?;
        let port = port.unwrap_or_else(free_udp_port);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n\
             pidfile {d}/chronyd.pid\ndriftfile {d}/drift\ndumpdir {d}\n"
        );
        let conf_path = dir.path().join("chrony.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("chronyd.log")).unwrap();
        let child = Command::new(bin)
            // -x: never adjust the clock; -d: foreground, log to stderr;
            // -u root: no privilege drop, so it can use the tempdir.
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Self { child: Some(child), port, dir };
        me.wait_ready(Duration::from_secs(15)).await;
        Some(me)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Polls it with our own SNTP query until a reply validates, bounded.
    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("chronyd exited with {status}: {}", self.log());
            }
            match sntp::query(self.addr(), Duration::from_millis(200), crate::time::unix_us).await {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chronyd did not answer within {within:?}: {last:?}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chronyd.log")).unwrap_or_default()
    }

    /// Kills it and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        self.stop();
    }
}
