//! A tiny HTTP/1.1 file server on 127.0.0.1 for the OTA tests, with Range
//! support and faults on demand (error status, dropped connection, Range
//! ignored).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
}

impl TestServer {
    /// Serves `root` on 127.0.0.1:0.
    pub fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (f, l) = (faults.clone(), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, f, l) = (root.clone(), f.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &f, &l);
                });
            }
        });
        Self { addr, faults, log }
    }

    /// The base URL (the repository).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(
    mut conn: TcpStream,
    root: &std::path::Path,
    faults: &Mutex<Faults>,
    log: &RequestLog,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
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
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (head, slice) = match from {
        Some(n) if !f.ignore_range && n < len => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\n",
                len - 1,
                len - n
            ),
            &body[n..],
        ),
        _ => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            &body[..],
        ),
    };
    conn.write_all(head.as_bytes())?;
    conn.write_all(b"Connection: close\r\n\r\n")?;
    let is_image = path.ends_with(".gz");
    let cut = if is_image { faults.lock().unwrap().drop_after.take() } else { None };
    match cut {
        Some(n) if n < slice.len() => {
            conn.write_all(&slice[..n])?;
            conn.flush()?;
            conn.shutdown(std::net::Shutdown::Both)?;
        }
        _ => conn.write_all(slice)?,
    }
    Ok(())
}
