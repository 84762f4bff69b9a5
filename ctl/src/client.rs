//! The blocking JSON-lines connection `lwsysctl` uses: one Unix stream,
//! requests out with fresh ids, replies matched by id, events handed to
//! whoever streams them. No actix here: the client is plain `std`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why talking to the daemon failed (as opposed to the daemon answering
/// with an error, which is a reply like any other).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket could not be opened.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed after connecting.
    #[error("connection to the daemon failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon closed the connection before answering.
    #[error("the daemon closed the connection before replying")]
    Closed,
    /// The daemon sent a line that is not a JSON object.
    #[error("the daemon sent something that is not a JSON object: {0}")]
    Garbled(String),
}

/// One connection to `lwsysd`.
pub struct Connection {
    w: UnixStream,
    r: BufReader<UnixStream>,
    next_id: u64,
}

impl Connection {
    /// Connect to the control socket at `path`.
    pub fn open(path: &Path) -> Result<Self, ConnError> {
        let w = UnixStream::connect(path)
            .map_err(|source| ConnError::Connect { path: path.to_owned(), source })?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Self { w, r, next_id: 0 })
    }

    /// Send `req` (an object; an `id` is added when it has none) and wait
    /// for its reply. Events that arrive first are skipped: a one-shot
    /// command has not subscribed to any.
    ///
    /// The reply is the first line with an `ok` member, whatever its `id`:
    /// a connection carries one request at a time, so nothing else can be
    /// answered, and a reply whose `id` the daemon got wrong (or a
    /// `parse_error` with `id: null`) still ends the wait instead of
    /// hanging it.
    pub fn call(&mut self, mut req: Map<String, Value>) -> Result<Value, ConnError> {
        if !req.contains_key("id") {
            self.next_id += 1;
            req.insert("id".into(), Value::from(self.next_id));
        }
        if let Err(e) = self.send(&Value::Object(req)) {
            // A daemon that refused the connection (a connection limit)
            // wrote why and closed before our request went out: its line
            // says more than "broken pipe".
            return match self.next_line() {
                Ok(Some(v)) if v.get("ok").is_some() => Ok(v),
                _ => Err(e),
            };
        }
        loop {
            let v = self.next_line()?.ok_or(ConnError::Closed)?;
            if v.get("ok").is_some() {
                return Ok(v);
            }
        }
    }

    /// Write one request line.
    pub fn send(&mut self, v: &Value) -> Result<(), ConnError> {
        let mut line = v.to_string();
        line.push('\n');
        self.w.write_all(line.as_bytes())?;
        self.w.flush()?;
        Ok(())
    }

    /// The next line from the daemon as a JSON object, or `None` when it
    /// closed the connection.
    pub fn next_line(&mut self) -> Result<Option<Value>, ConnError> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err(ConnError::Garbled(line.trim_end().chars().take(200).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A daemon stand-in that reads one line and answers with `lines`.
    fn fake(lines: &'static [&'static str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut req = String::new();
            r.read_line(&mut req).unwrap();
            let mut w = s;
            for l in lines {
                writeln!(w, "{l}").unwrap();
            }
        });
        (dir, path)
    }

    #[test]
    fn the_reply_is_the_first_line_with_ok_after_any_events() {
        let (_d, path) =
            fake(&[r#"{"event":"state","from":"A","to":"B"}"#, r#"{"id":9,"ok":true}"#]);
        let mut c = Connection::open(&path).unwrap();
        let v = c.call(Map::new()).unwrap();
        assert_eq!(v["ok"], true);
    }

    #[test]
    fn a_daemon_that_hangs_up_or_garbles_is_an_error_not_a_hang() {
        let (_d, path) = fake(&[]);
        let mut c = Connection::open(&path).unwrap();
        assert!(matches!(c.call(Map::new()), Err(ConnError::Closed)));
        let (_d, path) = fake(&["[1,2]"]);
        let mut c = Connection::open(&path).unwrap();
        assert!(matches!(c.call(Map::new()), Err(ConnError::Garbled(_))));
    }

    #[test]
    fn a_missing_socket_says_where_and_why() {
        let e = Connection::open(Path::new("/nonexistent/lwsys.sock")).err().unwrap();
        assert!(e.to_string().starts_with("cannot connect to /nonexistent/lwsys.sock: "), "{e}");
    }
}
