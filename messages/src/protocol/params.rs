//! Checking a request's parameters: from the JSON object a client sent to
//! a typed [`Request`], with the messages clients have always been given
//! (`missing "target"`, `"timeout_ms" must be a non-negative integer`,
//! `unknown state "FOO"`). Serde's own messages name Rust types, so the
//! object is read as JSON first and each field checked here.

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::blobs::{BlobError, BlobKind};
use crate::state::{SystemState, Verdict};
use crate::supervisor::{is_valid_reason, preview, MAX_REASON};
use crate::ErrorCode;

use super::{Op, Request, Topic, TOPICS};

/// Why a request could not be decoded: the error code and message of the
/// reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The protocol error code (`bad_request` for most, `unknown_op`,
    /// `not_found` for an unknown blob kind, ...).
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
}

impl RequestError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A `bad_request` error.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The `unknown_op` error for `op`.
    pub fn unknown_op(op: &str) -> Self {
        Self::new(ErrorCode::UnknownOp, format!("unknown op {op:?}"))
    }
}

/// The bytes of `blob.set` and `blob.append`: on the wire exactly one of
/// `data` (UTF-8 text) or `data_b64` (standard base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobData {
    /// Sent as `data`.
    Text(String),
    /// Sent as `data_b64`.
    Bytes(Bytes),
}

impl BlobData {
    /// The bytes to write.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(s) => Bytes::from(s),
            Self::Bytes(b) => b,
        }
    }
}

impl Serialize for BlobData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Self::Text(t) => m.serialize_entry("data", t)?,
            Self::Bytes(b) => {
                m.serialize_entry("data_b64", &base64::engine::general_purpose::STANDARD.encode(b))?
            }
        }
        m.end()
    }
}

/// A request's members other than `op` and `id`.
struct Params(Map<String, Value>);

type Checked<T> = Result<T, RequestError>;

impl Params {
    /// A required string.
    fn str(&self, key: &str) -> Checked<&str> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(RequestError::bad(format!("\"{key}\" must be a string"))),
            None => Err(RequestError::bad(format!("missing \"{key}\""))),
        }
    }

    fn string(&self, key: &str) -> Checked<String> {
        self.str(key).map(str::to_owned)
    }

    /// An optional non-negative integer (`null` is absent).
    fn opt_u64(&self, key: &str) -> Checked<Option<u64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                RequestError::bad(format!("\"{key}\" must be a non-negative integer"))
            }),
        }
    }

    /// A required non-negative integer.
    fn u64(&self, key: &str) -> Checked<u64> {
        self.opt_u64(key)?.ok_or_else(|| RequestError::bad(format!("missing \"{key}\"")))
    }

    /// A required non-negative integer where `null` is a wrong type.
    fn strict_u64(&self, key: &str) -> Checked<u64> {
        match self.0.get(key) {
            Some(v) => v.as_u64().ok_or_else(|| {
                RequestError::bad(format!("\"{key}\" must be a non-negative integer"))
            }),
            None => Err(RequestError::bad(format!("missing \"{key}\""))),
        }
    }

    /// A required state, by name.
    fn state(&self, key: &str) -> Checked<SystemState> {
        self.str(key)?
            .parse()
            .map_err(|e: crate::state::UnknownState| RequestError::bad(e.to_string()))
    }

    /// `kind` by name; an unknown one is the model's error (`not_found`).
    fn kind(&self) -> Checked<BlobKind> {
        self.str("kind")?.parse::<BlobKind>().map_err(|e| {
            let e = BlobError::from(e);
            RequestError::new(e.code(), e.to_string())
        })
    }

    /// Exactly one of `data` and `data_b64` (`null` is absent).
    fn data(&self) -> Checked<BlobData> {
        let text = self.0.get("data").filter(|v| !v.is_null());
        let b64 = self.0.get("data_b64").filter(|v| !v.is_null());
        match (text, b64) {
            (Some(Value::String(s)), None) => Ok(BlobData::Text(s.clone())),
            (Some(_), None) => Err(RequestError::bad("\"data\" must be a string")),
            (None, Some(Value::String(s))) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(|b| BlobData::Bytes(b.into()))
                .map_err(|e| {
                    RequestError::bad(format!("\"data_b64\" is not standard base64: {e}"))
                }),
            (None, Some(_)) => Err(RequestError::bad("\"data_b64\" must be a string")),
            (None, None) => Err(RequestError::bad("missing \"data\" or \"data_b64\"")),
            (Some(_), Some(_)) => {
                Err(RequestError::bad("give one of \"data\" and \"data_b64\", not both"))
            }
        }
    }

    /// `ticket`, `reason` and `verdict` of `consent.reply`.
    fn verdict(&self) -> Checked<Verdict> {
        let reason = match self.0.get("reason") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if is_valid_reason(s) => s.clone(),
            Some(Value::String(_)) => {
                return Err(RequestError::bad(format!(
                    "\"reason\" must be at most {MAX_REASON} bytes without control characters"
                )))
            }
            Some(_) => return Err(RequestError::bad("\"reason\" must be a string")),
        };
        match self.str("verdict")? {
            "allow" => Ok(Verdict::Allow),
            "defer" => Ok(Verdict::Defer { reason }),
            "deny" => Ok(Verdict::Deny { reason }),
            other => Err(RequestError::bad(format!(
                "verdict {:?} is not allow, defer or deny",
                preview(other)
            ))),
        }
    }

    /// `events` of `subscribe`.
    fn topics(&self) -> Checked<Vec<Topic>> {
        let Some(Value::Array(list)) = self.0.get("events") else {
            return Err(RequestError::bad("\"events\" must be an array of topic names"));
        };
        list.iter()
            .map(|t| match t.as_str() {
                Some(name) => Topic::from_name(name).ok_or_else(|| {
                    RequestError::bad(format!("unknown topic {name:?}; topics are {TOPICS:?}"))
                }),
                None => Err(RequestError::bad("topics must be strings")),
            })
            .collect()
    }

    /// `ota.report_current`'s `bad`.
    fn bool(&self, key: &str) -> Checked<bool> {
        match self.0.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(RequestError::bad(format!("\"{key}\" must be a boolean"))),
            None => Err(RequestError::bad(format!("missing \"{key}\""))),
        }
    }

    /// The nested request of `attach`: an object with a string `op`; its
    /// own `id`, if any, is ignored (the reply carries the outer one).
    /// Taken out rather than copied: attaches nest as deep as the JSON
    /// reader allows, and a copy per level would make a 1 MiB line cost
    /// a hundred times that.
    fn nested(&mut self) -> Checked<Request> {
        let Some(Value::Object(mut nested)) = self.0.remove("request") else {
            return Err(RequestError::bad("\"request\" must be a request object"));
        };
        nested.remove("id");
        let op = match nested.remove("op") {
            Some(Value::String(op)) => op,
            _ => return Err(RequestError::bad("the nested request needs a string \"op\"")),
        };
        let op = Op::from_name(&op).ok_or_else(|| RequestError::unknown_op(&op))?;
        Request::from_params(op, nested)
    }
}

impl Request {
    /// The request for `op` with the other members of its object,
    /// `params` (`op` and `id` taken out). Members an op does not know are
    /// ignored, as they always were.
    pub fn from_params(op: Op, params: Map<String, Value>) -> Result<Request, RequestError> {
        let mut p = Params(params);
        Ok(match op {
            Op::Hello => Request::Hello {},
            Op::StateGet => Request::StateGet {},
            Op::StateSteps => Request::StateSteps { target: p.state("target")? },
            Op::StateJump => Request::StateJump { target: p.state("target")? },
            Op::StateWait => Request::StateWait {
                state: p.state("state")?,
                timeout_ms: p.opt_u64("timeout_ms")?,
            },
            Op::StateExplain => Request::StateExplain {},
            Op::StatePolicyInvalidate => Request::StatePolicyInvalidate {},
            Op::StateEnterModal => Request::StateEnterModal {},
            Op::StateLeaveModal => Request::StateLeaveModal {},
            Op::NotifierRegister => Request::NotifierRegister { name: p.string("name")? },
            Op::NotifierResume => Request::NotifierResume { name: p.string("name")? },
            Op::NotifierUnregister => Request::NotifierUnregister { name: p.string("name")? },
            Op::ConsentReply => {
                Request::ConsentReply { ticket: p.u64("ticket")?, verdict: p.verdict()? }
            }
            Op::Subscribe => Request::Subscribe { events: p.topics()? },
            Op::BlobSet => {
                Request::BlobSet { kind: p.kind()?, idx: p.opt_u64("idx")?, data: p.data()? }
            }
            Op::BlobAppend => {
                Request::BlobAppend { kind: p.kind()?, idx: p.opt_u64("idx")?, data: p.data()? }
            }
            Op::BlobEmpty => Request::BlobEmpty { kind: p.kind()?, idx: p.opt_u64("idx")? },
            Op::BlobGet => Request::BlobGet {
                kind: p.kind()?,
                idx: p.opt_u64("idx")?,
                offset: p.opt_u64("offset")?,
                len: p.opt_u64("len")?,
            },
            Op::BlobSize => Request::BlobSize { kind: p.kind()?, idx: p.opt_u64("idx")? },
            Op::BlobDestroy => Request::BlobDestroy { kind: p.kind()?, idx: p.opt_u64("idx")? },
            Op::Attach => {
                Request::Attach { state: p.state("state")?, request: Box::new(p.nested()?) }
            }
            Op::ClockGet => Request::ClockGet {},
            Op::ClockSet => Request::ClockSet { unix_us: p.strict_u64("unix_us")? },
            Op::TrustQuery => Request::TrustQuery { skid: p.string("skid")? },
            Op::OtaStatus => Request::OtaStatus {},
            Op::OtaCheck => Request::OtaCheck {},
            Op::OtaReportCurrent => Request::OtaReportCurrent { bad: p.bool("bad")? },
            Op::SystemInfo => Request::SystemInfo {},
            Op::SystemReboot => Request::SystemReboot {},
            Op::SystemShutdown => Request::SystemShutdown {},
            Op::DebugCrash => Request::DebugCrash { service: p.string("service")? },
        })
    }
}
