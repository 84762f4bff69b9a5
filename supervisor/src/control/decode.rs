//! The pure front of the control protocol: one framed line in, a
//! [`Request`] (id, op, params) or the error reply's id and error out. No
//! daemon, actor or I/O is involved, so the fuzz target and tests can drive
//! it directly.

use lwsys_messages::ErrorCode;
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
/// for JSON that is not an object with a string `op`.
// The Ok side (a `Request`) is about as large, so boxing the error would
// not make the result smaller; it is built and consumed once per line.
#[allow(clippy::result_large_err)]
pub fn decode_request(line: &[u8]) -> Result<Request, (Value, ProtoError)> {
    let text = std::str::from_utf8(line).map_err(|e| {
        (Value::Null, ProtoError::new(ErrorCode::ParseError, format!("line is not UTF-8: {e}")))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (Value::Null, ProtoError::new(ErrorCode::ParseError, format!("not JSON: {e}")))
    })?;
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
}
