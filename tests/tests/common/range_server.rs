//! A file server on 127.0.0.1 for the chunked OTA figures: honours
//! `Range: bytes=A-B` and `bytes=A-`, streams from the file (never reads
//! a whole image per request), logs every response with the bytes it
//! actually sent, and can hold the chunk file at an offset (to kill the
//! daemon at a known point). Shared through `#[path]`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// One response: the path, the first file offset sent, and the body bytes
/// that reached the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Request path (`/xyz-v1/manifest.jws`).
    pub path: String,
    /// File offset of the first body byte.
    pub start: u64,
    /// Body bytes written.
    pub len: u64,
}

#[derive(Default)]
struct State {
    log: Vec<Sent>,
    /// Chunk-file bytes written so far, over all connections.
    chunk_bytes: u64,
    /// Stop sending `.chunks` bodies at this file offset until released.
    hold_at: Option<u64>,
    /// Bumped by `release`: held connections are then dropped.
    releases: u64,
    /// Responses being sent (not yet in `log`).
    active: u64,
}

/// What the server sent, shared with the test.
#[derive(Default)]
pub struct RangeServer {
    state: Mutex<State>,
    changed: Condvar,
}

impl RangeServer {
    /// Serves `root` on 127.0.0.1:0; returns the server and its base URL.
    pub fn start(root: PathBuf) -> (Arc<Self>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = Arc::new(Self::default());
        let server = me.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, server) = (root.clone(), server.clone());
                std::thread::spawn(move || {
                    let _ = server.answer(conn, &root);
                });
            }
        });
        (me, url)
    }

    /// Every response so far.
    pub fn log(&self) -> Vec<Sent> {
        self.state.lock().unwrap().log.clone()
    }

    /// Waits (bounded) until no response is being sent, so the log is
    /// complete.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + lwsys_tests::WAIT;
        let mut s = self.state.lock().unwrap();
        while s.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{} responses still being sent", s.active);
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Holds `.chunks` bodies once they reach file offset `at`.
    pub fn hold_at(&self, at: u64) {
        self.state.lock().unwrap().hold_at = Some(at);
    }

    /// Waits (bounded) until a `.chunks` body has been sent up to the
    /// hold point.
    pub fn wait_held(&self) {
        let deadline = Instant::now() + lwsys_tests::WAIT;
        let mut s = self.state.lock().unwrap();
        while s.hold_at.is_some_and(|h| s.chunk_bytes < h) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "server sent only {} chunk bytes", s.chunk_bytes);
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Drops held connections and serves freely from now on.
    pub fn release(&self) {
        let mut s = self.state.lock().unwrap();
        s.hold_at = None;
        s.releases += 1;
        drop(s);
        self.changed.notify_all();
    }

    fn answer(&self, conn: TcpStream, root: &Path) -> std::io::Result<()> {
        self.state.lock().unwrap().active += 1;
        let r = self.respond(conn, root);
        self.state.lock().unwrap().active -= 1;
        self.changed.notify_all();
        r
    }

    fn respond(&self, mut conn: TcpStream, root: &Path) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut range: Option<(u64, Option<u64>)> = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("range: bytes=") {
                range = v.trim().split_once('-').and_then(|(a, b)| {
                    Some((a.parse().ok()?, if b.is_empty() { None } else { b.parse().ok() }))
                });
            }
        }
        let Ok(mut file) = File::open(root.join(path.trim_start_matches('/'))) else {
            return write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        };
        let size = file.metadata()?.len();
        let (start, end) = match range {
            Some((a, _)) if a >= size => {
                return write!(
                    conn,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            Some((a, b)) => {
                let end = b.map_or(size, |b| (b + 1).min(size));
                write!(
                    conn,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{size}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    end - 1,
                    end - a
                )?;
                (a, end)
            }
            None => {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                )?;
                (0, size)
            }
        };
        file.seek(SeekFrom::Start(start))?;
        let chunks = path.ends_with(".chunks");
        let mut at = start;
        let mut buf = vec![0u8; 64 << 10];
        let result = (|| {
            while at < end {
                let mut want = (end - at).min(buf.len() as u64);
                if chunks {
                    want = self.room(at, want)?;
                }
                let n = usize::try_from(want).unwrap();
                file.read_exact(&mut buf[..n])?;
                conn.write_all(&buf[..n])?;
                at += want;
                if chunks {
                    self.state.lock().unwrap().chunk_bytes += want;
                    self.changed.notify_all();
                }
            }
            conn.flush()
        })();
        self.state.lock().unwrap().log.push(Sent { path, start, len: at - start });
        result
    }

    /// How much of `want` bytes at `at` may go now: waits at the hold
    /// point, and fails (dropping the connection) once released.
    fn room(&self, at: u64, want: u64) -> std::io::Result<u64> {
        let mut s = self.state.lock().unwrap();
        let releases = s.releases;
        while s.hold_at.is_some_and(|h| at >= h) {
            s = self.changed.wait(s).unwrap();
        }
        if s.releases != releases {
            return Err(std::io::Error::other("held connection dropped"));
        }
        Ok(s.hold_at.map_or(want, |h| want.min(h - at)))
    }
}
