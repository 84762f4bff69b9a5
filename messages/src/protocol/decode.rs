//! The front of the control protocol: one framed line in, an [`Envelope`]
//! (the client's id and a typed [`Request`]) or a [`Rejected`] out. Pure:
//! the daemon, the fuzz target and tests drive it directly.
//!
//! A line is read once, by a JSON visitor that refuses an object repeating
//! a key at any depth: with a last-wins parser, `{"op":"state.get",
//! "op":"system.shutdown"}` would mean one thing to a client's or proxy's
//! checks and another to the daemon. The plainest lines, a bare op and a
//! number for id (what a polling client sends), are read by a small
//! reader instead, which takes only lines that cannot repeat a key and
//! leaves anything else to the visitor.

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
    // Most lines are a bare op with a number for id (`state.get` polled by
    // a client): those are read without building a map of the object.
    // Anything else, or anything the quick reader is unsure of, takes the
    // full path; both end in `named`, so they answer alike.
    if let Some((id, name)) = quick(line) {
        return named(id, name, Map::new());
    }
    full(line)
}

/// [`decode_request`] by the strict visitor, for any line.
#[allow(clippy::result_large_err)]
fn full(line: &[u8]) -> Result<Envelope, Rejected> {
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
    named(id, &name, params)
}

/// The end of both paths: the op `name` with the other members `params`.
#[allow(clippy::result_large_err)]
fn named(id: Value, name: &str, params: Map<String, Value>) -> Result<Envelope, Rejected> {
    let Some(op) = Op::from_name(name) else {
        return Err(Rejected { id, op: None, error: RequestError::unknown_op(name) });
    };
    match Request::from_params(op, params) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(Rejected { id, op: Some(op), error }),
    }
}

/// The id and op name of a line that is exactly an object of an `"op"`
/// string of plain name characters and at most one `"id"` that is a
/// non-negative integer (in either order, JSON whitespace anywhere), or
/// `None` for anything else, which the full path then reads. Such a line
/// cannot repeat a key, and its other members are none, so `named` gets
/// what the full path would give it.
fn quick(line: &[u8]) -> Option<(Value, &str)> {
    let mut r = Quick { s: line, i: 0 };
    let mut id = None;
    let mut op = None;
    r.byte(b'{')?;
    loop {
        match r.key()? {
            b"id" if id.is_none() => {
                r.byte(b':')?;
                id = Some(r.number()?);
            }
            b"op" if op.is_none() => {
                r.byte(b':')?;
                op = Some(r.name()?);
            }
            _ => return None,
        }
        match r.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    r.ws();
    if r.i != line.len() {
        return None;
    }
    Some((id.map_or(Value::Null, Value::from), op?))
}

/// A cursor over a line for [`quick`].
struct Quick<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Quick<'a> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace.
    fn next(&mut self) -> Option<u8> {
        self.ws();
        let b = *self.s.get(self.i)?;
        self.i += 1;
        Some(b)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string of name characters only (so no escapes to undo).
    fn plain(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let start = self.i;
        let len = self.s[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))?;
        // The closing quote right after: whitespace here would be the
        // string's own.
        if self.s.get(start + len) != Some(&b'"') {
            return None;
        }
        self.i = start + len + 1;
        Some(&self.s[start..start + len])
    }

    fn key(&mut self) -> Option<&'a [u8]> {
        self.plain()
    }

    fn name(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.plain()?).ok()
    }

    /// A non-negative integer as JSON writes it (no leading zero) that
    /// fits a u64, as serde_json reads it.
    fn number(&mut self) -> Option<u64> {
        self.ws();
        let digits = self.s[self.i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = &self.s[self.i..self.i + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        // A fraction or exponent makes it a float: the full path's.
        if matches!(self.s.get(self.i + digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i += digits;
        text.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a case the quick path gets wrong should fail loudly

    use proptest::prelude::*;

    use super::{full, quick};

    /// The quick path takes exactly these, and answers them as the full
    /// path does.
    #[test]
    fn the_quick_path_takes_plain_lines_and_answers_them_as_the_full_path_does() {
        for l in [
            r#"{"id":1,"op":"state.get"}"#,
            r#" { "op" : "hello" , "id" : 0 } "#,
            "{\t\"op\":\"state.get\"\r}",
            r#"{"op":"no.such.op","id":7}"#,
            r#"{"id":3,"op":"state.wait"}"#,
            r#"{"id":18446744073709551615,"op":"clock.get"}"#,
        ] {
            assert!(quick(l.as_bytes()).is_some(), "{l}");
            assert_eq!(super::decode_request(l.as_bytes()), full(l.as_bytes()), "{l}");
        }
        for l in [
            r#"{"id":1,"op":"state.get","x":1}"#,
            r#"{"id":1,"id":2,"op":"state.get"}"#,
            r#"{"op":"state.get","op":"system.shutdown"}"#,
            r#"{"id":01,"op":"state.get"}"#,
            r#"{"id":-1,"op":"state.get"}"#,
            r#"{"id":1.0,"op":"state.get"}"#,
            r#"{"id":1e3,"op":"state.get"}"#,
            r#"{"id":18446744073709551616,"op":"state.get"}"#,
            r#"{"id":"1","op":"state.get"}"#,
            r#"{"id":1,"op":"state.get "}"#,
            r#"{"id":1,"op":"state\u002eget"}"#,
            r#"{"id":1,"op":"state.get"}x"#,
            r#"{"id":1,"op":"state.get",}"#,
            r#"{"id":1}"#,
            r#"{}"#,
            r#"{"id":1,"op":"state.get""#,
        ] {
            assert!(quick(l.as_bytes()).is_none(), "{l}");
        }
    }

    proptest! {
        /// Lines made of the pieces plain requests are made of, and of
        /// the pieces that must send a line down the full path: whatever
        /// the quick path takes, it answers as the full path does.
        #[test]
        fn the_quick_path_never_disagrees_with_the_full_path(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "{", "}", ",", ":", " ", "\t", "\"id\"", "\"op\"", "\"x\"", "\"state.get\"",
                "\"hello\"", "\"state.wait\"", "\"nope\"", "0", "1", "07", "-2", "3.5",
                "1e2", "99999999999999999999", "\"", "\\", "state.get", "null",
            ]), 0..14)
        ) {
            let l = pieces.concat();
            if quick(l.as_bytes()).is_some() {
                prop_assert_eq!(super::decode_request(l.as_bytes()), full(l.as_bytes()), "{}", l);
            }
        }

        /// Objects of members the quick path may take, in any order and
        /// number, spaced any way.
        #[test]
        fn objects_of_plain_members_answer_alike_by_both_paths(
            members in proptest::collection::vec((
                proptest::sample::select(vec!["id", "op", "x", "ID"]),
                proptest::sample::select(vec![
                    "0", "42", "007", "18446744073709551615", "18446744073709551616", "1.5",
                    "\"state.get\"", "\"hello\"", "\"blob.get\"", "\"nope\"", "null",
                ]),
            ), 0..4),
            spaces in proptest::collection::vec(
                proptest::sample::select(vec!["", " ", "\t", "\r\n"]), 12),
        ) {
            let mut l = String::from(spaces[0]);
            l.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    l.push(',');
                }
                l.push_str(&format!("{}\"{k}\"{}:{}{v}{}", spaces[i * 2 % 12], spaces[(i * 2 + 1) % 12],
                    spaces[(i + 5) % 12], spaces[(i + 7) % 12]));
            }
            l.push('}');
            l.push_str(spaces[11]);
            prop_assert_eq!(super::decode_request(l.as_bytes()), full(l.as_bytes()), "{}", l);
        }
    }
}
