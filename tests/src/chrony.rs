//! A real `chronyd` for SNTP tests: it serves the host clock on 127.0.0.1
//! at a given or ephemeral port, never touches the machine's clock (`-x`),
//! and is killed on drop. Used by the daemon's clock tests and by the clock
//! service's own unit tests.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// A running chronyd.
pub struct Chronyd {
    child: Option<Child>,
    /// The UDP port it serves.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The chronyd binary, or `None` (and the reason printed, so the skip is
/// visible) when it is not installed.
pub fn binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/chronyd", "/usr/bin/chronyd", "/sbin/chronyd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        println!("skipped: chronyd not installed (scripts/test installs Debian's chrony)");
    }
    found
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The current time as an NTP timestamp (what a client puts in transmit).
fn ntp_now() -> u64 {
    let us =
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let secs = (us / 1_000_000 + NTP_UNIX_OFFSET_S) & 0xffff_ffff;
    (secs << 32) | (((us % 1_000_000) << 32) / 1_000_000)
}

/// One SNTP request to `addr`; whether a synchronised server-mode reply to
/// it came back.
pub fn sntp_answers(addr: SocketAddr) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut req = [0u8; 48];
    req[0] = (4 << 3) | 3;
    let sent = ntp_now();
    req[40..48].copy_from_slice(&sent.to_be_bytes());
    if sock.send_to(&req, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 128];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => {
            n >= 48 && buf[0] & 7 == 4 && buf[1] != 0 && buf[24..32] == sent.to_be_bytes()
        }
        Err(_) => false,
    }
}

impl Chronyd {
    /// Starts chronyd on `port` (a free one if `None`) and waits, bounded,
    /// until it answers SNTP. `None` when chronyd is not installed.
    pub fn start(port: Option<u16>) -> Option<Self> {
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
        // -x: never adjust the clock; -d: foreground; -u root: no privilege
        // drop, so it can use the tempdir.
        let child = Command::new(bin)
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Self { child: Some(child), port, dir };
        // Each probe waits up to 200 ms for its reply: no extra sleep.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !sntp_answers(me.addr()) {
            if let Some(Ok(Some(st))) = me.child.as_mut().map(|c| c.try_wait()) {
                panic!("chronyd exited with {st}: {}", me.log());
            }
            assert!(Instant::now() < deadline, "chronyd never answered: {}", me.log());
        }
        Some(me)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
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
