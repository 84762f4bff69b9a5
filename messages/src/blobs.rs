//! The system blobs' data: the kinds and their slots, the blob error, and
//! the messages `BlobService` answers (DESIGN §4, §5 `blob.*`).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ErrorCode;

/// The largest blob accepted unless configured otherwise (`blobs.max_bytes`).
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// The kinds that survive a restart unless configured otherwise
/// (`blobs.durable`).
pub const DEFAULT_DURABLE: [BlobKind; 5] = [
    BlobKind::Auth,
    BlobKind::ClientCertDer,
    BlobKind::ClientKeyDer,
    BlobKind::DeviceSerial,
    BlobKind::DeviceType,
];

/// What `NTP_SERVER` reads whenever it is empty, as upstream.
pub const DEFAULT_NTP_SERVER: &str = "pool.ntp.org";

/// The kinds of system blob, in upstream `lws_system_blob_item_t` order.
/// The JSON form is the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobKind {
    /// Two slots: 0 the registration token, 1 the auth token. Secret.
    Auth,
    /// The client certificate, DER.
    ClientCertDer,
    /// The client certificate's private key, DER. Secret.
    ClientKeyDer,
    /// An arbitrary device serial number.
    DeviceSerial,
    /// An arbitrary firmware version.
    DeviceFwVersion,
    /// An arbitrary device type identifier.
    DeviceType,
    /// The NTP server's address; reads [`DEFAULT_NTP_SERVER`] when empty.
    NtpServer,
    /// The MQTT client id.
    MqttClientId,
    /// The MQTT user name.
    MqttUsername,
    /// The MQTT password. Secret.
    MqttPassword,
}

/// Every kind, in order.
pub const ALL_KINDS: [BlobKind; 10] = [
    BlobKind::Auth,
    BlobKind::ClientCertDer,
    BlobKind::ClientKeyDer,
    BlobKind::DeviceSerial,
    BlobKind::DeviceFwVersion,
    BlobKind::DeviceType,
    BlobKind::NtpServer,
    BlobKind::MqttClientId,
    BlobKind::MqttUsername,
    BlobKind::MqttPassword,
];

/// How many slots all kinds have together.
pub const TOTAL_SLOTS: usize = 11;

impl BlobKind {
    /// The protocol name, such as `"CLIENT_CERT_DER"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auth => "AUTH",
            Self::ClientCertDer => "CLIENT_CERT_DER",
            Self::ClientKeyDer => "CLIENT_KEY_DER",
            Self::DeviceSerial => "DEVICE_SERIAL",
            Self::DeviceFwVersion => "DEVICE_FW_VERSION",
            Self::DeviceType => "DEVICE_TYPE",
            Self::NtpServer => "NTP_SERVER",
            Self::MqttClientId => "MQTT_CLIENT_ID",
            Self::MqttUsername => "MQTT_USERNAME",
            Self::MqttPassword => "MQTT_PASSWORD",
        }
    }

    /// How many slots (valid `idx` values) this kind has: 2 for `AUTH`,
    /// else 1.
    pub const fn slots(self) -> usize {
        match self {
            Self::Auth => 2,
            _ => 1,
        }
    }

    /// Where this kind's slot 0 sits among all [`TOTAL_SLOTS`] slots.
    pub const fn first_slot(self) -> usize {
        match self {
            Self::Auth => 0,
            other => other as usize + 1,
        }
    }

    /// Whether the blob holds a secret: it never appears in logs, and the
    /// protocol refuses to read it to a client of another uid.
    pub const fn is_secret(self) -> bool {
        matches!(self, Self::Auth | Self::ClientKeyDer | Self::MqttPassword)
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A blob kind name that is not one of the 10.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown blob kind {0:?}")]
pub struct UnknownBlobKind(pub String);

impl FromStr for BlobKind {
    type Err = UnknownBlobKind;

    /// Accepts the protocol name in any case, with or without upstream's
    /// `LWS_SYSBLOB_TYPE_` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const PREFIX: &str = "LWS_SYSBLOB_TYPE_";
        let bare = match s.get(..PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(PREFIX) => s.get(PREFIX.len()..).unwrap_or(""),
            _ => s,
        };
        ALL_KINDS
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(bare))
            .ok_or_else(|| UnknownBlobKind(s.to_owned()))
    }
}

impl Serialize for BlobKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for BlobKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One blob: a kind and a slot of it. Not checked on construction; the
/// service answers [`BlobError::IdxOutOfRange`] for a slot the kind lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobId {
    /// The kind.
    pub kind: BlobKind,
    /// The slot, 0 unless given (only `AUTH` has slot 1).
    #[serde(default)]
    pub idx: usize,
}

impl BlobId {
    /// Slot `idx` of `kind`.
    pub const fn new(kind: BlobKind, idx: usize) -> Self {
        Self { kind, idx }
    }

    /// Whether `idx` is one of the kind's own slots.
    pub const fn is_valid(self) -> bool {
        self.idx < self.kind.slots()
    }
}

impl From<BlobKind> for BlobId {
    fn from(kind: BlobKind) -> Self {
        Self { kind, idx: 0 }
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.idx)
    }
}

/// Why a blob operation failed. Messages name kinds, slots and sizes only,
/// never contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// No kind by that name.
    #[error(transparent)]
    UnknownKind(#[from] UnknownBlobKind),
    /// The kind has no such slot.
    #[error("{kind} has {slots} slot(s); idx {idx} is out of range")]
    IdxOutOfRange {
        /// The kind asked for.
        kind: BlobKind,
        /// The slot asked for.
        idx: usize,
        /// How many slots the kind has.
        slots: usize,
    },
    /// A read started at or past the end of a non-empty blob (or past 0 of
    /// an empty one).
    #[error("offset {offset} is at or past the end of {id} ({size} bytes)")]
    OffsetPastEnd {
        /// The blob.
        id: BlobId,
        /// The offset asked for.
        offset: usize,
        /// The blob's size.
        size: usize,
    },
    /// The blob would grow past the size limit; it is unchanged.
    #[error("{id} would be {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The blob.
        id: BlobId,
        /// The size it would have had.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A single view was asked of a blob held in several chunks.
    #[error("{id} is held in {chunks} chunks and has no single view; read it with get")]
    NotSingle {
        /// The blob.
        id: BlobId,
        /// How many chunks it has.
        chunks: usize,
    },
    /// The durable store failed; the blob is unchanged.
    #[error("blob store: {0}")]
    Store(String),
    /// The blob service is not running (its mailbox closed); whether the
    /// update happened is unknown.
    #[error("blob service unavailable")]
    Unavailable,
}

impl BlobError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownKind(_) => ErrorCode::NotFound,
            Self::IdxOutOfRange { .. } | Self::OffsetPastEnd { .. } => ErrorCode::OutOfRange,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::NotSingle { .. } => ErrorCode::BadRequest,
            Self::Store(_) => ErrorCode::Io,
            Self::Unavailable => ErrorCode::Internal,
        }
    }
}

/// The size of a blob after an operation, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSize {
    /// The whole blob's size.
    pub size: usize,
}

/// Bytes read from a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobBytes {
    /// The bytes read (a copy for [`GetBlob`], shared for [`ViewBlob`]).
    pub data: Bytes,
    /// The whole blob's size, which may exceed `data.len()`.
    pub size: usize,
}

/// Sent to `BlobService` by the protocol's `blob.set` or the library: make
/// the blob a heap blob holding a copy of `data` (upstream: heap empty then
/// append), as one update. Replies the new [`BlobSize`]; past the size limit
/// [`BlobError::TooLarge`] and the blob is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct SetBlob {
    /// The blob.
    pub id: BlobId,
    /// Its new contents.
    pub data: Bytes,
}

/// Sent to `BlobService` by the protocol's `blob.append` or the library:
/// copy `data` onto the end of the blob's chain (a direct blob becomes a
/// heap blob holding a copy of what it pointed at). Replies the new
/// [`BlobSize`]; past the size limit [`BlobError::TooLarge`] and the blob is
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct AppendBlob {
    /// The blob.
    pub id: BlobId,
    /// The chunk to add.
    pub data: Bytes,
}

/// Sent to `BlobService` by the protocol's `blob.empty` or the library:
/// remove the blob's contents. Replies the new [`BlobSize`] (0, or the
/// default's size for `NTP_SERVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct EmptyBlob {
    /// The blob.
    pub id: BlobId,
}

/// Sent to `BlobService` by the protocol's `blob.get` or the library: copy
/// at most `len` bytes from `offset` (upstream `lws_system_blob_get`).
/// Replies [`BlobBytes`] with the bytes read and the whole size. An offset
/// at or past the end is [`BlobError::OffsetPastEnd`], except offset 0 of
/// an empty blob, which reads nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobBytes, BlobError>")
)]
pub struct GetBlob {
    /// The blob.
    pub id: BlobId,
    /// Where to start reading.
    pub offset: usize,
    /// The most bytes to read; `None` reads to the end.
    pub len: Option<usize>,
}

/// Sent to `BlobService` by the protocol's `blob.size` or the library.
/// Replies the blob's [`BlobSize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct GetBlobSize {
    /// The blob.
    pub id: BlobId,
}

/// Sent to `BlobService` by the protocol's `blob.destroy` or the library:
/// free the blob's heap chunks (or drop its direct pointer). Replies the new
/// [`BlobSize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct DestroyBlob {
    /// The blob.
    pub id: BlobId,
}

/// Sent to `BlobService` by the library (not the protocol): point the blob
/// at `data` without copying (upstream `lws_system_blob_direct_set`). A
/// direct blob is never persisted, even for a durable kind: it stands for
/// caller-owned memory, which does not outlive the process; a durable kind
/// set direct has its stored value removed, so a restart finds it empty
/// rather than stale. Replies the new [`BlobSize`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobSize, BlobError>")
)]
pub struct SetBlobDirect {
    /// The blob.
    pub id: BlobId,
    /// The bytes to point at, shared, not copied.
    pub data: Bytes,
}

/// Sent to `BlobService` by the library: the blob's bytes without copying
/// (upstream `lws_system_blob_get_single_ptr`). Replies [`BlobBytes`] when
/// the blob is direct or at most one chunk; [`BlobError::NotSingle`] when it
/// is several chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<BlobBytes, BlobError>")
)]
pub struct ViewBlob {
    /// The blob.
    pub id: BlobId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name_in_any_case_and_with_the_upstream_prefix() {
        for k in ALL_KINDS {
            assert_eq!(k.name().parse(), Ok(k));
            assert_eq!(k.name().to_lowercase().parse(), Ok(k));
            assert_eq!(format!("LWS_SYSBLOB_TYPE_{k}").parse(), Ok(k));
        }
        assert!("".parse::<BlobKind>().is_err());
        assert!("AUTH2".parse::<BlobKind>().is_err());
        assert!("LWS_SYSBLOB_TYPE_".parse::<BlobKind>().is_err());
        assert!("é".parse::<BlobKind>().is_err());
    }

    #[test]
    fn slots_cover_the_table_once() {
        let mut seen = [false; TOTAL_SLOTS];
        for k in ALL_KINDS {
            for i in 0..k.slots() {
                let s = k.first_slot() + i;
                assert!(!seen[s], "{k} slot {i} overlaps");
                seen[s] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(BlobKind::Auth.slots(), 2);
        assert_eq!(BlobKind::NtpServer.slots(), 1);
    }

    #[test]
    fn only_auth_client_key_and_mqtt_password_are_secret() {
        let secret: Vec<_> = ALL_KINDS.into_iter().filter(|k| k.is_secret()).collect();
        assert_eq!(secret, [BlobKind::Auth, BlobKind::ClientKeyDer, BlobKind::MqttPassword]);
    }

    #[test]
    fn blob_id_json_defaults_idx_to_zero() {
        let id: BlobId = serde_json::from_str(r#"{"kind":"device_serial"}"#).unwrap();
        assert_eq!(id, BlobId::new(BlobKind::DeviceSerial, 0));
        let id: BlobId = serde_json::from_str(r#"{"kind":"AUTH","idx":1}"#).unwrap();
        assert!(id.is_valid());
        assert_eq!(serde_json::to_value(id).unwrap()["kind"], "AUTH");
        assert!(!BlobId::new(BlobKind::NtpServer, 1).is_valid());
    }

    #[test]
    fn errors_map_to_protocol_codes() {
        let id = BlobId::new(BlobKind::Auth, 0);
        let cases = [
            (BlobError::from(UnknownBlobKind("X".into())), ErrorCode::NotFound),
            (
                BlobError::IdxOutOfRange { kind: BlobKind::Auth, idx: 2, slots: 2 },
                ErrorCode::OutOfRange,
            ),
            (BlobError::OffsetPastEnd { id, offset: 3, size: 3 }, ErrorCode::OutOfRange),
            (BlobError::TooLarge { id, size: 9, max: 8 }, ErrorCode::TooLarge),
            (BlobError::NotSingle { id, chunks: 2 }, ErrorCode::BadRequest),
            (BlobError::Store("disk full".into()), ErrorCode::Io),
            (BlobError::Unavailable, ErrorCode::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }
}
