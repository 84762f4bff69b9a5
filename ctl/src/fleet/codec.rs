//! The few MQTT 3.1.1 packets `lwsysctl fleet` speaks, encoded and decoded
//! by hand: CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH (QoS 0 and 1) with
//! PUBACK, PINGREQ/PINGRESP and DISCONNECT.
//!
//! Written here rather than taken from a crate: the codec crates without
//! tokio (`mqttbytes`, `mqttrs`) have had no release since 2021, and the
//! subset needed is small. Decoding works on a byte slice and never
//! panics: a packet still arriving is `Ok(None)`, a malformed one is an
//! error, and a declared length over the caller's bound is refused before
//! any of it is buffered.

/// The largest remaining length MQTT can express (four length bytes).
pub const MQTT_MAX_REMAINING: usize = 268_435_455;

/// Why bytes from the broker are not a packet we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The remaining-length field ran past four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The packet is larger than the bound the reader was given.
    #[error("packet of {len} bytes is over the {max}-byte bound")]
    TooLarge {
        /// The declared remaining length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The packet's body is shorter than its fields say, or has bytes left.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    /// A topic that is not UTF-8.
    #[error("topic is not UTF-8")]
    BadTopic,
    /// A packet type a client never receives, or flags MQTT forbids.
    #[error("unexpected packet type {0:#04x}")]
    Unexpected(u8),
}

/// One application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Where it is published.
    pub topic: String,
    /// The bytes.
    pub payload: Vec<u8>,
    /// 0 or 1 (QoS 2 is never asked for).
    pub qos: u8,
    /// The retain flag: on receipt, the broker's stored message.
    pub retain: bool,
    /// The packet id (QoS 1 only).
    pub pid: u16,
}

/// What a client sends or receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Open a session.
    Connect(Connect),
    /// The broker's answer to CONNECT: session present, return code.
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// 0 accepted; 1..=5 refusals (see [`connack_reason`]).
        code: u8,
    },
    /// An application message.
    Publish(Publish),
    /// QoS 1 acknowledgement of the packet id.
    PubAck(u16),
    /// Subscribe to topic filters, each with its maximum QoS.
    Subscribe {
        /// The packet id.
        pid: u16,
        /// (filter, QoS) pairs.
        filters: Vec<(String, u8)>,
    },
    /// The broker's answer: one granted QoS (or 0x80 failure) per filter.
    SubAck {
        /// The packet id of the SUBSCRIBE.
        pid: u16,
        /// One code per filter.
        codes: Vec<u8>,
    },
    /// Keepalive probe.
    PingReq,
    /// Keepalive answer.
    PingResp,
    /// Orderly close.
    Disconnect,
}

/// CONNECT's fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// The client id.
    pub client_id: String,
    /// Keepalive in seconds (0 = none).
    pub keepalive: u16,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password (never printed: see the Debug impl).
    pub password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of any debug output.
        f.debug_struct("Connect")
            .field("client_id", &self.client_id)
            .field("keepalive", &self.keepalive)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// CONNACK's return code in words.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorised",
        _ => "unknown return code",
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Callers bound strings to u16::MAX (see `encode`), so this fits.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

fn put_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is over MQTT's 65,535 bytes.
    #[error("{0} is longer than 65535 bytes")]
    StringTooLong(&'static str),
    /// The packet is over MQTT's 268,435,455-byte limit.
    #[error("packet is over MQTT's size limit")]
    TooLarge,
}

fn check_str(s: &[u8], what: &'static str) -> Result<(), EncodeError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(EncodeError::StringTooLong(what));
    }
    Ok(())
}

/// `p` as bytes on the wire.
pub fn encode(p: &Packet) -> Result<Vec<u8>, EncodeError> {
    let mut body = Vec::new();
    let first: u8 = match p {
        Packet::Connect(c) => {
            put_str(&mut body, b"MQTT");
            body.push(4); // protocol level 3.1.1
            let mut flags = 0x02; // clean session: the client keeps no state
            if c.username.is_some() {
                flags |= 0x80;
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            body.push(flags);
            body.extend_from_slice(&c.keepalive.to_be_bytes());
            check_str(c.client_id.as_bytes(), "client id")?;
            put_str(&mut body, c.client_id.as_bytes());
            if let Some(u) = &c.username {
                check_str(u.as_bytes(), "user name")?;
                put_str(&mut body, u.as_bytes());
            }
            if let Some(pw) = &c.password {
                check_str(pw, "password")?;
                put_str(&mut body, pw);
            }
            0x10
        }
        Packet::ConnAck { session_present, code } => {
            body.push(u8::from(*session_present));
            body.push(*code);
            0x20
        }
        Packet::Publish(m) => {
            check_str(m.topic.as_bytes(), "topic")?;
            put_str(&mut body, m.topic.as_bytes());
            if m.qos > 0 {
                body.extend_from_slice(&m.pid.to_be_bytes());
            }
            body.extend_from_slice(&m.payload);
            0x30 | ((m.qos & 0x03) << 1) | u8::from(m.retain)
        }
        Packet::PubAck(pid) => {
            body.extend_from_slice(&pid.to_be_bytes());
            0x40
        }
        Packet::Subscribe { pid, filters } => {
            body.extend_from_slice(&pid.to_be_bytes());
            for (f, q) in filters {
                check_str(f.as_bytes(), "topic filter")?;
                put_str(&mut body, f.as_bytes());
                body.push(*q);
            }
            0x82
        }
        Packet::SubAck { pid, codes } => {
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(codes);
            0x90
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect => 0xE0,
    };
    if body.len() > MQTT_MAX_REMAINING {
        return Err(EncodeError::TooLarge);
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The first packet in `buf`: `Ok(None)` while it is incomplete, else the
/// packet and how many bytes it took. A remaining length over `max` is
/// refused as soon as the length field is read.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet, usize)>, CodecError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else { return Ok(None) };
        len += usize::from(b & 0x7f) * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(CodecError::BadLength);
        }
        mult *= 128;
    }
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    let Some(body) = buf.get(i..i + len) else { return Ok(None) };
    Ok(Some((parse(first, body)?, i + len)))
}

/// A cursor over a packet body that fails instead of panicking.
struct Body<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Body<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.rest.split_first().ok_or(CodecError::Malformed(self.what))?;
        self.rest = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Malformed(self.what));
        }
        let (b, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = usize::from(self.u16()?);
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::BadTopic)
    }

    fn end(&self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed(self.what))
        }
    }
}

fn parse(first: u8, body: &[u8]) -> Result<Packet, CodecError> {
    let flags = first & 0x0f;
    let mut b = Body { rest: body, what: "" };
    let p = match first >> 4 {
        2 if flags == 0 => {
            b.what = "CONNACK";
            let sp = b.u8()?;
            let code = b.u8()?;
            b.end()?;
            Packet::ConnAck { session_present: sp & 1 == 1, code }
        }
        3 => {
            b.what = "PUBLISH";
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(CodecError::Unexpected(first));
            }
            let topic = b.string()?;
            let pid = if qos > 0 { b.u16()? } else { 0 };
            let payload = b.rest.to_vec();
            Packet::Publish(Publish { topic, payload, qos, retain: flags & 1 == 1, pid })
        }
        4 if flags == 0 => {
            b.what = "PUBACK";
            let pid = b.u16()?;
            b.end()?;
            Packet::PubAck(pid)
        }
        9 if flags == 0 => {
            b.what = "SUBACK";
            let pid = b.u16()?;
            if b.rest.is_empty() {
                return Err(CodecError::Malformed("SUBACK"));
            }
            Packet::SubAck { pid, codes: b.rest.to_vec() }
        }
        13 if flags == 0 && body.is_empty() => Packet::PingResp,
        12 if flags == 0 && body.is_empty() => Packet::PingReq,
        // CONNECT, SUBSCRIBE, DISCONNECT, QoS 2 flow, UNSUBACK: a broker
        // never sends these to a client that did not ask for them.
        _ => return Err(CodecError::Unexpected(first)),
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn round_trip(p: Packet) {
        let bytes = encode(&p).expect("encodes");
        assert_eq!(decode(&bytes, MAX), Ok(Some((p, bytes.len()))));
    }

    #[test]
    fn packets_a_broker_sends_round_trip() {
        round_trip(Packet::ConnAck { session_present: false, code: 5 });
        round_trip(Packet::PubAck(7));
        round_trip(Packet::SubAck { pid: 1, codes: vec![0, 1, 0x80] });
        round_trip(Packet::PingResp);
        round_trip(Packet::Publish(Publish {
            topic: "lwsys/dev-1/state".into(),
            payload: br#"{"state":"OPERATIONAL"}"#.to_vec(),
            qos: 1,
            retain: true,
            pid: 9,
        }));
        // A 200-byte payload needs a two-byte remaining length.
        round_trip(Packet::Publish(Publish {
            topic: "t".into(),
            payload: vec![b'x'; 200],
            qos: 0,
            retain: false,
            pid: 0,
        }));
    }

    #[test]
    fn connect_is_laid_out_as_mqtt_3_1_1_says() {
        let c = Connect {
            client_id: "c".into(),
            keepalive: 30,
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
        };
        let bytes = encode(&Packet::Connect(c.clone())).expect("encodes");
        assert_eq!(
            bytes,
            [
                0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30, 0, 1, b'c', 0, 1, b'u', 0,
                1, b'p'
            ]
        );
        assert!(!format!("{c:?}").contains("\"p\""), "the password never shows in Debug");
    }

    #[test]
    fn a_truncated_packet_is_incomplete_at_every_cut() {
        let bytes = encode(&Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: vec![1; 300],
            qos: 1,
            retain: false,
            pid: 3,
        }))
        .expect("encodes");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        // 2 MiB declared, 1 MiB allowed, only the header present.
        let mut hdr = vec![0x30];
        put_len(&mut hdr, 2 << 20);
        assert_eq!(decode(&hdr, MAX), Err(CodecError::TooLarge { len: 2 << 20, max: MAX }));
        // A fifth length byte is malformed.
        assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], MAX), Err(CodecError::BadLength));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        // Topic length 10 in a 3-byte body.
        assert_eq!(decode(&[0x30, 3, 0, 10, b'a'], MAX), Err(CodecError::Malformed("PUBLISH")));
        // CONNACK with one byte; PUBACK with three.
        assert_eq!(decode(&[0x20, 1, 0], MAX), Err(CodecError::Malformed("CONNACK")));
        assert_eq!(decode(&[0x40, 3, 0, 1, 2], MAX), Err(CodecError::Malformed("PUBACK")));
        // QoS 3 and a packet a broker never sends.
        assert_eq!(decode(&[0x36, 0], MAX), Err(CodecError::Unexpected(0x36)));
        assert_eq!(decode(&[0x10, 0], MAX), Err(CodecError::Unexpected(0x10)));
        // Topic bytes that are not UTF-8.
        assert_eq!(decode(&[0x30, 3, 0, 1, 0xff], MAX), Err(CodecError::BadTopic));
        // Every short prefix of junk either waits or errors, never panics.
        let junk = [0x92u8, 0x81, 0x01, 0xff, 0x00, 0x07, 0x33];
        for n in 0..junk.len() {
            let _ = decode(&junk[..n], MAX);
        }
    }
}
