//! The `blob.*` commands: read and write system blobs by kind and slot.

use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Subcommand};
use lwsys_messages::blobs::BlobKind;
use serde_json::{Map, Value};

use super::format::text;
use super::{Call, CtlError};

/// `lwsysctl blob ...`
#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Print a blob: as text when it is UTF-8, else as base64 (blob.get).
    Get {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
        /// Start reading at this byte.
        #[arg(long, value_name = "N")]
        offset: Option<u64>,
        /// Read at most this many bytes.
        #[arg(long, value_name = "N")]
        len: Option<u64>,
    },
    /// Replace a blob's contents (blob.set).
    Set {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
        /// What to write.
        #[command(flatten)]
        data: BlobData,
    },
    /// Append to a blob (blob.append).
    Append {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
        /// What to write.
        #[command(flatten)]
        data: BlobData,
    },
    /// Empty a blob (blob.empty).
    Empty {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
    },
    /// Print a blob's size in bytes (blob.size).
    Size {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
    },
    /// Destroy a blob, durable copy included (blob.destroy).
    Destroy {
        /// Which blob.
        #[command(flatten)]
        at: BlobAt,
    },
}

/// Which blob.
#[derive(Debug, Args)]
pub struct BlobAt {
    /// The kind, such as DEVICE_SERIAL or AUTH.
    pub kind: BlobKind,
    /// The slot (only AUTH has two: 0 registration, 1 auth token).
    #[arg(long, value_name = "N")]
    pub idx: Option<u64>,
}

/// The bytes to write: exactly one of text, base64 or a file.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct BlobData {
    /// The data as text.
    pub data: Option<String>,
    /// The data as standard base64.
    #[arg(long, value_name = "B64")]
    pub b64: Option<String>,
    /// Read the data from this file.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

fn target(at: &BlobAt) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), Value::from(at.kind.name()));
    if let Some(idx) = at.idx {
        m.insert("idx".into(), Value::from(idx));
    }
    m
}

fn with_data(at: &BlobAt, data: BlobData) -> Result<Value, CtlError> {
    let mut m = target(at);
    if let Some(text) = data.data {
        m.insert("data".into(), Value::from(text));
    } else if let Some(b64) = data.b64 {
        m.insert("data_b64".into(), Value::from(b64));
    } else if let Some(path) = data.file {
        let bytes = std::fs::read(&path)
            .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        m.insert("data_b64".into(), Value::from(b64));
    }
    Ok(Value::Object(m))
}

/// The request for `c`.
pub(crate) fn call(c: BlobCommand) -> Result<Call, CtlError> {
    Ok(match c {
        BlobCommand::Get { at, offset, len } => {
            let mut m = target(&at);
            if let Some(o) = offset {
                m.insert("offset".into(), o.into());
            }
            if let Some(l) = len {
                m.insert("len".into(), l.into());
            }
            Call::new("blob.get", Value::Object(m), bytes_text)
        }
        BlobCommand::Set { at, data } => Call::new("blob.set", with_data(&at, data)?, size_text),
        BlobCommand::Append { at, data } => {
            Call::new("blob.append", with_data(&at, data)?, size_text)
        }
        BlobCommand::Empty { at } => Call::new("blob.empty", Value::Object(target(&at)), done),
        BlobCommand::Size { at } => {
            Call::new("blob.size", Value::Object(target(&at)), |r| text(r, "size"))
        }
        BlobCommand::Destroy { at } => Call::new("blob.destroy", Value::Object(target(&at)), done),
    })
}

fn done(_: &Value) -> String {
    String::new()
}

fn size_text(r: &Value) -> String {
    match r.get("size") {
        Some(_) => format!("{} bytes", text(r, "size")),
        None => String::new(),
    }
}

/// The bytes read: text when they are UTF-8 without control characters
/// other than whitespace, else the base64 the daemon sent.
pub(crate) fn bytes_text(r: &Value) -> String {
    let b64 = r.get("data_b64").and_then(Value::as_str).unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) if !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => s,
            _ => b64.to_owned(),
        },
        Err(_) => b64.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_blobs_read_as_text_and_binary_as_base64() {
        assert_eq!(bytes_text(&json!({"data_b64": "cG9vbC5udHAub3Jn"})), "pool.ntp.org");
        assert_eq!(bytes_text(&json!({"data_b64": "AAEC"})), "AAEC");
    }
}
