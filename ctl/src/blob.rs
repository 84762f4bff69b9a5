//! The `blob.*` commands: read and write system blobs by kind and slot.

use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Subcommand};
use lwsys_messages::blobs::BlobKind;
use lwsys_messages::protocol::{BlobData as Payload, BlobRead, BlobSized, Request};
use serde_json::Value;

use super::{typed, Call, CtlError};

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

/// The bytes to send, as the daemon will take them: text as `data`,
/// base64 and files as `data_b64` (base64 given is checked here, so a
/// typo is a usage error before anything is sent).
fn payload(data: BlobData) -> Result<Payload, CtlError> {
    if let Some(text) = data.data {
        Ok(Payload::Text(text))
    } else if let Some(b64) = data.b64 {
        base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map(|b| Payload::Bytes(b.into()))
            .map_err(|e| CtlError::Usage(format!("--b64 is not standard base64: {e}")))
    } else if let Some(path) = data.file {
        let bytes = std::fs::read(&path)
            .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))?;
        Ok(Payload::Bytes(bytes.into()))
    } else {
        Err(CtlError::Usage("give the data as text, --b64 or --file".into()))
    }
}

/// The request for `c`.
pub(crate) fn call(c: BlobCommand) -> Result<Call, CtlError> {
    Ok(match c {
        BlobCommand::Get { at, offset, len } => {
            let req = Request::BlobGet { kind: at.kind, idx: at.idx, offset, len };
            Call::new(&req, bytes_text)
        }
        BlobCommand::Set { at, data } => {
            let req = Request::BlobSet { kind: at.kind, idx: at.idx, data: payload(data)? };
            Call::new(&req, size_text)
        }
        BlobCommand::Append { at, data } => {
            let req = Request::BlobAppend { kind: at.kind, idx: at.idx, data: payload(data)? };
            Call::new(&req, size_text)
        }
        BlobCommand::Empty { at } => {
            Call::new(&Request::BlobEmpty { kind: at.kind, idx: at.idx }, done)
        }
        BlobCommand::Size { at } => {
            Call::new(&Request::BlobSize { kind: at.kind, idx: at.idx }, |r| {
                typed::<BlobSized>(r).map_or_else(String::new, |s| s.size.to_string())
            })
        }
        BlobCommand::Destroy { at } => {
            Call::new(&Request::BlobDestroy { kind: at.kind, idx: at.idx }, done)
        }
    })
}

fn done(_: &Value) -> String {
    String::new()
}

fn size_text(r: &Value) -> String {
    typed::<BlobSized>(r).map_or_else(String::new, |s| format!("{} bytes", s.size))
}

/// The bytes read: text when they are UTF-8 without control characters
/// other than whitespace, else the base64 the daemon sent.
pub(crate) fn bytes_text(r: &Value) -> String {
    let Some(read) = typed::<BlobRead>(r) else { return String::new() };
    match read.bytes().map(String::from_utf8) {
        Ok(Ok(s)) if !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => s,
        _ => read.data_b64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_blobs_read_as_text_and_binary_as_base64() {
        assert_eq!(
            bytes_text(&json!({"ok": true, "data_b64": "cG9vbC5udHAub3Jn", "size": 12})),
            "pool.ntp.org"
        );
        assert_eq!(bytes_text(&json!({"ok": true, "data_b64": "AAEC", "size": 3})), "AAEC");
    }
}
