//! The pure front of the control protocol: one framed line in, a
//! [`Request`] (id, op, params) or the error reply's id and error out. No
//! daemon, actor or I/O is involved, so the fuzz target and tests can drive
//! it directly.
//!
//! A line is read once, by a JSON visitor that refuses an object repeating
//! a key at any depth: with a last-wins parser, `{"op":"state.get",
//! "op":"system.shutdown"}` would mean one thing to a client's or proxy's
//! checks and another to the daemon.

use std::fmt;

use lwsys_messages::ErrorCode;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ops::ProtoError;

/// A request as decoded from one line, before its op runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The client's `id`, echoed in the reply (`null` when absent).
    pub id: Value,
    /// The op name; not yet checked against the known ops.
    pub op: String,
    /// Every other field of the request object.
    pub params: Map<String, Value>,
}

/// Decode one line (without its newline) into a [`Request`]. On failure it
/// returns the id to answer with (`null` when none could be read) and the
/// error: `parse_error` for bytes that are not UTF-8 JSON, `bad_request`
/// for JSON that is not an object with a string `op` or that repeats a key
/// in any object.
// The Ok side (a `Request`) is about as large, so boxing the error would
// not make the result smaller; it is built and consumed once per line.
#[allow(clippy::result_large_err)]
pub fn decode_request(line: &[u8]) -> Result<Request, (Value, ProtoError)> {
    let text = std::str::from_utf8(line).map_err(|e| {
        (Value::Null, ProtoError::new(ErrorCode::ParseError, format!("line is not UTF-8: {e}")))
    })?;
    let value = match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => v,
        // Only the visitor raises data errors: the JSON is well formed but
        // repeats a key.
        Err(e) if e.is_data() => {
            return Err((
                duplicate_id(text),
                ProtoError::new(
                    ErrorCode::BadRequest,
                    format!("a request must not repeat a key: {e}"),
                ),
            ))
        }
        Err(e) => {
            return Err((
                Value::Null,
                ProtoError::new(ErrorCode::ParseError, format!("not JSON: {e}")),
            ))
        }
    };
    let Value::Object(mut params) = value else {
        return Err((
            Value::Null,
            ProtoError::new(ErrorCode::BadRequest, "a request must be a JSON object"),
        ));
    };
    let id = params.remove("id").unwrap_or(Value::Null);
    match params.remove("op") {
        Some(Value::String(op)) => Ok(Request { id, op, params }),
        Some(_) => Err((id, ProtoError::new(ErrorCode::BadRequest, "\"op\" must be a string"))),
        None => Err((id, ProtoError::new(ErrorCode::BadRequest, "missing \"op\""))),
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
struct Strict(Value);

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(line: &[u8]) -> (Value, ErrorCode) {
        let (id, e) = decode_request(line).unwrap_err();
        (id, e.code())
    }

    #[test]
    fn a_well_formed_request_keeps_its_id_op_and_params() {
        let r = decode_request(br#"{"id":7,"op":"blob.get","kind":"device"}"#).unwrap();
        assert_eq!(r.id, json!(7));
        assert_eq!(r.op, "blob.get");
        assert_eq!(Value::Object(r.params), json!({"kind": "device"}));
    }

    #[test]
    fn a_missing_id_is_null() {
        assert_eq!(decode_request(br#"{"op":"hello"}"#).unwrap().id, Value::Null);
    }

    #[test]
    fn a_float_id_is_echoed_as_the_same_number() {
        // Found by tests/tests/fuzz_lines.rs: without serde_json's
        // float_roundtrip this id came back one ulp off
        // (1.941026166419344e-134), so the client could not match it.
        let r = decode_request(br#"{"id":[1.9410261664193438e-134],"op":"hello"}"#).unwrap();
        assert_eq!(r.id.to_string(), "[1.9410261664193438e-134]");
    }

    #[test]
    fn bad_bytes_and_bad_shapes_get_their_codes() {
        assert_eq!(code(b"\xff{}"), (Value::Null, ErrorCode::ParseError));
        assert_eq!(code(b"{nope"), (Value::Null, ErrorCode::ParseError));
        assert_eq!(code(b"[1,2]"), (Value::Null, ErrorCode::BadRequest));
        assert_eq!(code(br#"{"id":"a","op":3}"#), (json!("a"), ErrorCode::BadRequest));
        assert_eq!(code(br#"{"id":[1]}"#), (json!([1]), ErrorCode::BadRequest));
    }

    #[test]
    fn a_repeated_key_at_any_depth_is_a_bad_request() {
        let two_ops = br#"{"id":4,"op":"state.get","op":"system.shutdown"}"#;
        assert_eq!(code(two_ops), (json!(4), ErrorCode::BadRequest));
        let nested =
            br#"{"id":5,"op":"attach","state":"OPERATIONAL","request":{"op":"a","op":"b"}}"#;
        assert_eq!(code(nested), (json!(5), ErrorCode::BadRequest));
        let in_array = br#"{"id":6,"op":"subscribe","events":[{"a":1,"a":2}]}"#;
        assert_eq!(code(in_array), (json!(6), ErrorCode::BadRequest));
        // Which id would be answered is ambiguous: none is.
        let two_ids = br#"{"id":1,"id":2,"op":"hello"}"#;
        assert_eq!(code(two_ids), (Value::Null, ErrorCode::BadRequest));
        let (_, e) = decode_request(two_ops).unwrap_err();
        let v = e.into_reply(Value::Null);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(r#"key "op" appears twice"#), "{msg}");
    }

    #[test]
    fn the_strict_reader_keeps_every_value_as_serde_json_reads_it() {
        let line = br#"{"op":"x","a":[1,-2,3.5,1e300,"s\u0000",null,true,{"b":{}}],"big":18446744073709551615}"#;
        let strict = decode_request(line).unwrap();
        let mut plain: Map<String, Value> = serde_json::from_slice(line).unwrap();
        plain.remove("op");
        assert_eq!(strict.params, plain);
    }

    #[test]
    fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
        let mut line = br#"{"op":"hello","x":"#.to_vec();
        line.extend(std::iter::repeat_n(b'[', 100_000));
        assert_eq!(code(&line).1, ErrorCode::ParseError);
    }
}
