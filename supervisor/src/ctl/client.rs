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
    /// for the reply with that id. Events that arrive first are dropped:
    /// a one-shot command has not subscribed to any.
    pub fn call(&mut self, mut req: Map<String, Value>) -> Result<Value, ConnError> {
        let id = match req.get("id") {
            Some(id) => id.clone(),
            None => {
                self.next_id += 1;
                let id = Value::from(self.next_id);
                req.insert("id".into(), id.clone());
                id
            }
        };
        self.send(&Value::Object(req))?;
        loop {
            let v = self.next_line()?.ok_or(ConnError::Closed)?;
            // Replies have `ok`; events have `event` and no `ok`.
            if v.get("ok").is_some() && v.get("id") == Some(&id) {
                return Ok(v);
            }
            // A reply with a null id answers a line the daemon could not
            // read at all: that can only be ours.
            if v.get("ok").is_some() && v.get("id") == Some(&Value::Null) {
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
