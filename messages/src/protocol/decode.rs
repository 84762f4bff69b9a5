//! The front of the control protocol: one framed line in, an [`Envelope`]
//! (the client's id and a typed [`Request`]) or a [`Rejected`] out. Pure:
//! the daemon, the fuzz target and tests drive it directly.
//!
//! A line is read once, by a JSON visitor that refuses an object repeating
//! a key at any depth: with a last-wins parser, `{"op":"state.get",
//! "op":"system.shutdown"}` would mean one thing to a client's or proxy's
//! checks and another to the daemon.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Op, Request, RequestError};
use crate::ErrorCode;

/// A decoded request and the id to answer it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The client's `id`, echoed in the reply (`null` when absent).
    pub id: Value,
    /// What it asks for.
    pub request: Request,
}

/// A line that is not a valid request: what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The id to answer with (`null` when none could be read, or when
    /// `id` is repeated and so ambiguous).
    pub id: Value,
    /// The op named, when the line named a known one: the daemon checks
    /// the client may run it before it reports bad parameters, so a
    /// client learns nothing from an op it may not use.
    pub op: Option<Op>,
    /// The error.
    pub error: RequestError,
}

/// Decode one line (without its newline). Fails with `parse_error` for
/// bytes that are not UTF-8 JSON, `bad_request` for JSON that is not an
/// object with a string `op`, that repeats a key in any object, or whose
/// parameters are wrong, and `unknown_op` for an op not in the table.
// The error is about as large as the request; both are built and consumed
// once per line, so boxing would buy nothing.
#[allow(clippy::result_large_err)]
pub fn decode_request(line: &[u8]) -> Result<Envelope, Rejected> {
    let reject = |id: Value, op: Option<Op>, error: RequestError| Rejected { id, op, error };
    let text = std::str::from_utf8(line).map_err(|e| {
        reject(
            Value::Null,
            None,
            RequestError::new(ErrorCode::ParseError, format!("line is not UTF-8: {e}")),
        )
    })?;
    let value = match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => v,
        // Only the visitor raises data errors: the JSON is well formed but
        // repeats a key.
        Err(e) if e.is_data() => {
            return Err(reject(
                duplicate_id(text),
                None,
                RequestError::bad(format!("a request must not repeat a key: {e}")),
            ))
        }
        Err(e) => {
            return Err(reject(
                Value::Null,
                None,
                RequestError::new(ErrorCode::ParseError, format!("not JSON: {e}")),
            ))
        }
    };
    let Value::Object(mut params) = value else {
        return Err(reject(
            Value::Null,
            None,
            RequestError::bad("a request must be a JSON object"),
        ));
    };
    let id = params.remove("id").unwrap_or(Value::Null);
    let name = match params.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err(reject(id, None, RequestError::bad("\"op\" must be a string"))),
        None => return Err(reject(id, None, RequestError::bad("missing \"op\""))),
    };
    let Some(op) = Op::from_name(&name) else {
        return Err(reject(id, None, RequestError::unknown_op(&name)));
    };
    match Request::from_params(op, params) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(reject(id, Some(op), error)),
    }
}

/// The same checks as [`decode_request`], for a request that is part of
/// a larger document (an `id` member is ignored).
impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Strict(v) = Strict::deserialize(d)?;
        let Value::Object(mut params) = v else {
            return Err(de::Error::custom("a request must be a JSON object"));
        };
        params.remove("id");
        let name = match params.remove("op") {
            Some(Value::String(op)) => op,
            Some(_) => return Err(de::Error::custom("\"op\" must be a string")),
            None => return Err(de::Error::custom("missing \"op\"")),
        };
        let op = Op::from_name(&name)
            .ok_or_else(|| de::Error::custom(RequestError::unknown_op(&name)))?;
        Request::from_params(op, params).map_err(de::Error::custom)
    }
}

/// The id to answer a request that repeats a key with: the top-level
/// `id` when there is exactly one (`text` is well-formed JSON), else null.
fn duplicate_id(text: &str) -> Value {
    struct Ids;
    impl<'de> Visitor<'de> for Ids {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut ids = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                if k == "id" {
                    ids.push(map.next_value::<Value>()?);
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            // Two ids: which one the client meant to be echoed is unknown.
            Ok(if ids.len() == 1 { ids.remove(0) } else { Value::Null })
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    d.deserialize_map(Ids).unwrap_or(Value::Null)
}

/// A JSON value read by a visitor that refuses repeated keys (see the
/// module docs); otherwise the same as `serde_json::Value`.
pub(crate) struct Strict(pub(crate) Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON cannot carry NaN or infinities, so this never is null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if m.contains_key(&k) {
                return Err(de::Error::custom(format_args!("key {k:?} appears twice")));
            }
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}
