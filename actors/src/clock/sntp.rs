//! A minimal SNTPv4 client (RFC 4330): one request, one validated reply,
//! offset and round-trip delay. Written by hand because `sntpc` does not
//! report the kiss-of-death code or let the caller tell its checks apart.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// The NTP port used when the server name has none.
pub const DEFAULT_PORT: u16 = 123;

/// Seconds from the NTP era 0 epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Length of an SNTP packet without extensions.
pub const PACKET_LEN: usize = 48;

/// One successful exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How far the server is ahead of the local clock, in microseconds.
    pub offset_us: i64,
    /// The round-trip delay, in microseconds.
    pub delay_us: u64,
    /// The server's stratum.
    pub stratum: u8,
    /// The address that answered.
    pub addr: SocketAddr,
}

/// Why an exchange failed. The `Display` text is the `reason` of the
/// `failed` clock event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SntpError {
    /// The server name is empty or malformed.
    #[error("bad server name {0:?}")]
    BadServer(String),
    /// DNS resolution failed or gave no address.
    #[error("cannot resolve {name}: {reason}")]
    Resolve {
        /// The host looked up.
        name: String,
        /// What the resolver said.
        reason: String,
    },
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(String),
    /// No reply within the timeout.
    #[error("no reply within {0} ms")]
    Timeout(u64),
    /// The reply is shorter than an SNTP header.
    #[error("truncated reply: {0} bytes, need 48")]
    Truncated(usize),
    /// The reply is not in server mode (4).
    #[error("wrong mode {0}, expected 4 (server)")]
    WrongMode(u8),
    /// The reply's version is not 3 or 4.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// The reply's origin timestamp is not our transmit timestamp: a stale,
    /// spoofed or misdirected packet.
    #[error("origin timestamp does not match our request")]
    OriginMismatch,
    /// Stratum 0: the server sent a kiss-of-death with this code.
    #[error("kiss-of-death {0}")]
    KissOfDeath(String),
    /// Stratum 16 or more: the server is unsynchronised.
    #[error("unusable stratum {0}")]
    BadStratum(u8),
    /// Leap indicator 3: the server's clock is unsynchronised.
    #[error("server clock unsynchronised (leap indicator 3)")]
    Unsynchronised,
    /// The server's transmit timestamp is zero.
    #[error("zero transmit timestamp")]
    ZeroTransmit,
}

/// Splits `host`, `host:port`, `[v6]:port` or a bare IPv6 address into host
/// and port.
pub fn split_server(server: &str) -> Result<(String, u16), SntpError> {
    let s = server.trim();
    let bad = || SntpError::BadServer(server.to_owned());
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Ok((s.to_owned(), DEFAULT_PORT)),
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Err(bad()),
        None => Ok((s.to_owned(), DEFAULT_PORT)),
    }
}

/// Resolves a server name. The lookup runs on tokio's blocking pool
/// (`lookup_host`), never on the event loop; IP literals need no lookup.
pub async fn resolve(server: &str) -> Result<SocketAddr, SntpError> {
    let (host, port) = split_server(server)?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolve_err = |reason: String| SntpError::Resolve { name: host.clone(), reason };
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| resolve_err(e.to_string()))?;
    addrs.next().ok_or_else(|| resolve_err("no address".into()))
}

/// Converts Unix microseconds to a 64-bit NTP timestamp (32.32 fixed point
/// seconds since 1900, wrapping at the era boundary in 2036).
pub fn ntp_from_unix_us(unix_us: u64) -> u64 {
    let secs = (unix_us / 1_000_000).wrapping_add(NTP_UNIX_OFFSET_S) & 0xffff_ffff;
    let frac = ((unix_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// `a - b` for two NTP timestamps, in microseconds. Computed on the
/// wrapping 64-bit difference so it is right across an era boundary as long
/// as the two are within 68 years of each other.
fn diff_us(a: u64, b: u64) -> i64 {
    let d = i128::from(a.wrapping_sub(b) as i64);
    // The shift keeps the value in range: |d| < 2^63, times 10^6, over 2^32.
    i64::try_from((d * 1_000_000) >> 32).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// A client request (mode 3, version 4) carrying `transmit` as its transmit
/// timestamp, which the server echoes as the origin timestamp.
pub fn request(transmit: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    p
}

fn be64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_be_bytes(b)
}

/// Validates a reply to the request whose transmit timestamp was `sent`
/// and, with `t4` the NTP time it arrived, computes offset and delay (RFC
/// 4330 section 5). `addr` is only recorded in the sample.
pub fn parse_reply(buf: &[u8], sent: u64, t4: u64, addr: SocketAddr) -> Result<Sample, SntpError> {
    if buf.len() < PACKET_LEN {
        return Err(SntpError::Truncated(buf.len()));
    }
    let head = buf.first().copied().unwrap_or(0);
    let (leap, version, mode) = (head >> 6, (head >> 3) & 7, head & 7);
    if mode != 4 {
        return Err(SntpError::WrongMode(mode));
    }
    if !(3..=4).contains(&version) {
        return Err(SntpError::BadVersion(version));
    }
    // Checked before anything the server says about itself: a reply that is
    // not to our request tells us nothing, kiss codes included.
    let origin = be64(buf, 24);
    if origin != sent {
        return Err(SntpError::OriginMismatch);
    }
    let stratum = buf.get(1).copied().unwrap_or(0);
    if stratum == 0 {
        let code: String = buf
            .get(12..16)
            .unwrap_or_default()
            .iter()
            .map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' })
            .collect();
        return Err(SntpError::KissOfDeath(code));
    }
    if stratum > 15 {
        return Err(SntpError::BadStratum(stratum));
    }
    if leap == 3 {
        return Err(SntpError::Unsynchronised);
    }
    let (t1, t2, t3) = (sent, be64(buf, 32), be64(buf, 40));
    if t3 == 0 {
        return Err(SntpError::ZeroTransmit);
    }
    let offset2 = i128::from(diff_us(t2, t1)) + i128::from(diff_us(t3, t4));
    let offset_us = i64::try_from(offset2 / 2).unwrap_or(0);
    let delay = diff_us(t4, t1).saturating_sub(diff_us(t3, t2));
    Ok(Sample { offset_us, delay_us: u64::try_from(delay).unwrap_or(0), stratum, addr })
}

/// One SNTP exchange with `addr`, reading local time from `now_us` (Unix
/// microseconds: the clock lwsys uses, so the offset corrects that clock).
/// Gives up after `timeout`.
pub async fn query(
    addr: SocketAddr,
    timeout: Duration,
    now_us: impl Fn() -> u64,
) -> Result<Sample, SntpError> {
    let io = |e: std::io::Error| SntpError::Io(e.to_string());
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    // Connected, so the kernel drops datagrams from anyone but the server.
    sock.connect(addr).await.map_err(io)?;
    // The low bits are below the clock's resolution; randomising them makes
    // the origin check a nonce (RFC 4330 section 3).
    let sent = ntp_from_unix_us(now_us()) ^ u64::from(rand::random::<u16>() & 0x0fff);
    sock.send(&request(sent)).await.map_err(io)?;
    let mut buf = [0u8; 128];
    let n = match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(r) => r.map_err(io)?,
        Err(_) => {
            return Err(SntpError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
        }
    };
    let t4 = ntp_from_unix_us(now_us());
    parse_reply(buf.get(..n).unwrap_or_default(), sent, t4, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    fn reply(
        leap: u8,
        version: u8,
        mode: u8,
        stratum: u8,
        origin: u64,
        t2: u64,
        t3: u64,
    ) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = (leap << 6) | (version << 3) | mode;
        p[1] = stratum;
        p[24..32].copy_from_slice(&origin.to_be_bytes());
        p[32..40].copy_from_slice(&t2.to_be_bytes());
        p[40..48].copy_from_slice(&t3.to_be_bytes());
        p
    }

    #[test]
    fn offset_and_delay_follow_rfc_4330() {
        let base = 1_700_000_000_000_000u64;
        let t1 = ntp_from_unix_us(base);
        // Server 1 s ahead; 10 ms each way; 2 ms in the server.
        let t2 = ntp_from_unix_us(base + 1_000_000 + 10_000);
        let t3 = ntp_from_unix_us(base + 1_000_000 + 12_000);
        let t4 = ntp_from_unix_us(base + 22_000);
        let s = parse_reply(&reply(0, 4, 4, 2, t1, t2, t3), t1, t4, ADDR).unwrap();
        assert!((s.offset_us - 1_000_000).abs() <= 1, "{s:?}");
        assert!(s.delay_us.abs_diff(20_000) <= 1, "{s:?}");
        assert_eq!(s.stratum, 2);
    }

    #[test]
    fn offset_is_right_across_the_2036_era_boundary() {
        let t1 = 0xffff_ffff_0000_0000u64; // just before era 1
        let t2 = 0x0000_0001_0000_0000u64; // 2 s later, in era 1
        let s = parse_reply(&reply(0, 4, 4, 1, t1, t2, t2), t1, t1, ADDR).unwrap();
        assert_eq!(s.offset_us, 2_000_000);
    }

    #[test]
    fn each_bad_reply_has_its_own_reason() {
        let t1 = ntp_from_unix_us(1_700_000_000_000_000);
        let ok = |p: Vec<u8>| parse_reply(&p, t1, t1, ADDR);
        assert_eq!(ok(vec![0; 47]), Err(SntpError::Truncated(47)));
        assert_eq!(ok(reply(0, 4, 3, 2, t1, t1, t1)), Err(SntpError::WrongMode(3)));
        assert_eq!(ok(reply(0, 2, 4, 2, t1, t1, t1)), Err(SntpError::BadVersion(2)));
        assert_eq!(ok(reply(0, 4, 4, 2, t1 ^ 1, t1, t1)), Err(SntpError::OriginMismatch));
        let mut kod = reply(3, 4, 4, 0, t1, 0, 0);
        kod[12..16].copy_from_slice(b"RATE");
        assert_eq!(ok(kod), Err(SntpError::KissOfDeath("RATE".into())));
        assert_eq!(ok(reply(0, 4, 4, 16, t1, t1, t1)), Err(SntpError::BadStratum(16)));
        assert_eq!(ok(reply(3, 4, 4, 2, t1, t1, t1)), Err(SntpError::Unsynchronised));
        assert_eq!(ok(reply(0, 4, 4, 2, t1, t1, 0)), Err(SntpError::ZeroTransmit));
        assert!(ok(reply(0, 3, 4, 15, t1, t1, t1)).is_ok());
    }

    #[test]
    fn server_names_split_into_host_and_port() {
        assert_eq!(split_server("pool.ntp.org").unwrap(), ("pool.ntp.org".into(), 123));
        assert_eq!(split_server(" 127.0.0.1:1234 ").unwrap(), ("127.0.0.1".into(), 1234));
        assert_eq!(split_server("[::1]:99").unwrap(), ("::1".into(), 99));
        assert_eq!(split_server("[::1]").unwrap(), ("::1".into(), 123));
        assert_eq!(split_server("fe80::1").unwrap(), ("fe80::1".into(), 123));
        for bad in ["", "  ", "host:", "host:x", ":123", "[::1", "[::1]x", "h:99999"] {
            assert!(split_server(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn names_resolve_off_the_event_loop_and_literals_directly() {
        let a = resolve("localhost:4123").await.unwrap();
        assert!(a.ip().is_loopback() && a.port() == 4123, "{a}");
        assert_eq!(resolve("127.0.0.1").await.unwrap(), "127.0.0.1:123".parse().unwrap());
        assert!(matches!(resolve("no-such-host.invalid").await, Err(SntpError::Resolve { .. })));
    }

    #[test]
    fn request_is_a_v4_client_packet_with_our_timestamp() {
        let p = request(0x0102_0304_0506_0708);
        assert_eq!(p[0], 0x23);
        assert_eq!(&p[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(p[1..40].iter().all(|&b| b == 0));
    }
}
